//! Secrets as a whole: create, describe, update, list and search, tag, delete with a
//! recovery window, restore, and the purge of secrets past their window.

use super::*;

/// A ListSecrets filter, as AWS documents each key: values are OR-ed, and a leading `!` negates
/// a value.
/// - `name`, `tag-key`, `tag-value`: prefix of the attribute, case-sensitive;
/// - `description`: every word of the value is the start of a word of the description, in any
///   order, not case-sensitive ("My Description" matches "Description of my secret");
/// - `primary-region`: prefix of the primary's region, for replicated secrets only (primaries
///   with replicas, and their replicas): a secret that is not replicated has no primary region;
/// - `all`: the value and every attribute (name, description, tag keys and values) are split
///   into words (see [`words`]); any word of the value that starts a word of any attribute
///   matches, not case-sensitive.
pub(crate) struct Filter {
    key: String,
    values: Vec<String>,
}

/// The words of a text as Secrets Manager's search splits it: at every character that is not a
/// letter or digit, at a change from lower to upper case, and between letters and digits.
/// `credsDatabase#892` has the words `creds`, `Database` and `892`. Lower-cased.
pub(crate) fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut prev: Option<char> = None;
    for c in text.chars() {
        if !c.is_alphanumeric() {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            prev = None;
            continue;
        }
        if let Some(p) = prev {
            let case_change = p.is_lowercase() && c.is_uppercase();
            let kind_change = p.is_numeric() != c.is_numeric();
            if (case_change || kind_change) && !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
        }
        word.extend(c.to_lowercase());
        prev = Some(c);
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

pub(crate) fn parse_filters(filters: &[p::Filter]) -> Result<Vec<Filter>, ApiError> {
    const KEYS: [&str; 7] = [
        "description",
        "name",
        "tag-key",
        "tag-value",
        "primary-region",
        "owning-service",
        "all",
    ];
    filters
        .iter()
        .map(|f| {
            let key = f
                .key
                .clone()
                .ok_or_else(|| ApiError::missing("filters.member.key"))?;
            if !KEYS.contains(&key.as_str()) {
                return Err(ApiError::Validation(format!(
                    "1 validation error detected: Value '{key}' at 'filters.member.key' failed \
                     to satisfy constraint: Member must satisfy enum value set: [{}]",
                    KEYS.join(", ")
                )));
            }
            let values = f.values.clone().unwrap_or_default();
            if values.is_empty() || values.len() > 10 {
                return Err(ApiError::InvalidParameter(format!(
                    "Filter {key} must have between 1 and 10 values."
                )));
            }
            Ok(Filter { key, values })
        })
        .collect()
}

/// The words a listing's filters let the database search for: those of the first filter that
/// names text (name, description, tags, or `all`) with no negated value, if all are ASCII (SQLite
/// compares other letters case by case). Every match of that filter contains one of them.
fn search_terms(filters: &[Filter]) -> Option<Vec<String>> {
    filters.iter().find_map(|f| {
        let textual = matches!(
            f.key.as_str(),
            "all" | "name" | "description" | "tag-key" | "tag-value"
        );
        let positive = f.values.iter().all(|v| !v.starts_with('!'));
        let terms: Vec<String> = f
            .values
            .iter()
            .flat_map(|v| match f.key.as_str() {
                "all" | "description" => words(v),
                _ => vec![v.clone()],
            })
            .collect();
        let searchable = |t: &String| !t.is_empty() && t.is_ascii();
        (textual && positive && !terms.is_empty() && terms.iter().all(searchable)).then_some(terms)
    })
}

pub(crate) fn sort_secrets(
    secrets: &mut [Located],
    sort_by: Option<&str>,
    sort_order: Option<&str>,
) -> Result<(), ApiError> {
    match sort_by.unwrap_or("created-date") {
        "created-date" => secrets.sort_by(|a, b| {
            (a.secret.created_at, &a.secret.id).cmp(&(b.secret.created_at, &b.secret.id))
        }),
        "last-changed-date" => secrets.sort_by_key(|l| l.secret.last_changed_at),
        "last-accessed-date" => secrets.sort_by_key(|l| l.secret.last_accessed_at),
        "name" => secrets.sort_by(|a, b| a.secret.name.cmp(&b.secret.name)),
        other => {
            return Err(ApiError::Validation(format!(
                "1 validation error detected: Value '{other}' at 'sortBy' failed to satisfy \
                 constraint: Member must satisfy enum value set: [created-date, \
                 last-accessed-date, last-changed-date, name]"
            )));
        }
    }
    match sort_order.unwrap_or("asc") {
        "asc" => {}
        "desc" => secrets.reverse(),
        other => {
            return Err(ApiError::Validation(format!(
                "1 validation error detected: Value '{other}' at 'sortOrder' failed to satisfy \
                 constraint: Member must satisfy enum value set: [asc, desc]"
            )));
        }
    }
    Ok(())
}

pub(crate) fn encode_next_token(offset: usize) -> String {
    BASE64.encode(format!("baton-page-v1:{offset}"))
}

pub(crate) fn decode_next_token(token: &Option<String>) -> Result<usize, ApiError> {
    let Some(token) = token else {
        return Ok(0);
    };
    BASE64
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.strip_prefix("baton-page-v1:")
                .and_then(|n| n.parse().ok())
        })
        .ok_or_else(|| ApiError::InvalidNextToken("The NextToken value is invalid.".to_owned()))
}

impl Baton {
    pub async fn create_secret(
        &self,
        caller: &Caller,
        req: p::CreateSecretRequest,
    ) -> Result<p::CreateSecretResponse, ApiError> {
        let name = required(&req.name, "name")?;
        baton_core::validate_secret_name(name)?;
        check_description(&req.description)?;
        let value = value_input(&req.secret_string, &req.secret_binary)?;
        let version_id = token_or_new(&req.client_request_token)?;
        let tags = convert_tags(req.tags.as_deref().unwrap_or_default())?;
        let replicas =
            self.replica_regions(req.add_replica_regions.as_deref().unwrap_or_default())?;
        let pending = self.pending_secret_arn(caller, name);
        self.authorize(
            caller,
            Target {
                action: &caller.action,
                arn: &pending,
                shown: name,
                resource_policy: None,
                tags: &[],
            },
        )?;
        if value.is_some() {
            self.authorize_key_use(caller, req.kms_key_id.as_deref(), KMS_WRITE)?;
        }
        let now = now_ms();
        let id = uuid::Uuid::new_v4().to_string();
        let data_key = DataKey::generate()?;
        let mut secret = SecretRecord {
            arn: format!(
                "arn:aws:secretsmanager:{}:{}:secret:{name}-{}",
                caller.region,
                caller.account_id,
                random_chars(baton_core::ARN_SUFFIX_LEN, ALPHABET_ARN_SUFFIX)?
            ),
            wrapped_data_key: self.root_key.wrap(&data_key, &id)?,
            replicas: Vec::new(),
            rotation_policy: None,
            rotation_state: None,
            id,
            account_id: caller.account_id.clone(),
            region: caller.region.clone(),
            name: name.to_owned(),
            description: req.description.clone(),
            kms_key_id: req.kms_key_id.clone(),
            tags: Vec::new(),
            tagged: false,
            resource_policy: None,
            rotation: RotationConfig::default(),
            created_at: now,
            last_changed_at: now,
            last_accessed_at: None,
            deletion: DeletionState::Active,
            versions: Vec::new(),
            revision: 0,
            key: None,
            outbox: vec![],
        };
        secret.tag(tags, now)?;
        secret.add_replicas(&replicas, now)?;
        if let Some(value) = &value {
            self.add_or_match_version(&mut secret, &version_id, value, None, now)?;
        }
        if req.force_overwrite_replica_secret.unwrap_or(false) {
            self.clear_replica_names(caller, name, &replicas).await?;
        }
        secret.wrapped_data_key = self.wrap_for(caller, &secret, &data_key).await?;
        secret
            .outbox
            .push(crate::events::api_event(&caller.operation, &secret));
        match self.store.insert_secret(&secret).await {
            Ok(()) => {}
            Err(StoreError::NameTaken) => {
                let existing = match self.locate(caller, name).await {
                    Ok(Located {
                        replica_region: None,
                        secret,
                    }) => secret,
                    Ok(Located { .. }) => {
                        return Err(ApiError::ResourceExists(format!(
                            "The operation failed because the secret {name} already exists: it \
                             is a replica of a secret in another region."
                        )));
                    }
                    Err(_) => return Err(name_taken_in_replica_region()),
                };
                if existing.is_scheduled_for_deletion() {
                    return Err(ApiError::InvalidRequest(format!(
                        "You can't create this secret because a secret with the name {name} is \
                         already scheduled for deletion. Restore it with RestoreSecret, or \
                         delete it now with DeleteSecret and ForceDeleteWithoutRecovery, then \
                         create it again."
                    )));
                }
                // A retried CreateSecret with the same token and value succeeds unchanged.
                let mut existing = existing;
                if let (Some(_), Some(value)) = (&req.client_request_token, &value)
                    && existing.version(&version_id).is_some()
                    && let Outcome::Unchanged(()) =
                        self.add_or_match_version(&mut existing, &version_id, value, None, now)?
                {
                    return Ok(p::CreateSecretResponse {
                        arn: Some(existing.arn),
                        name: Some(existing.name),
                        version_id: Some(version_id),
                        replication_status: None,
                    });
                }
                return Err(ApiError::ResourceExists(format!(
                    "The operation failed because the secret {name} already exists."
                )));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(p::CreateSecretResponse {
            replication_status: replication_status(&secret),
            arn: Some(secret.arn),
            name: Some(secret.name),
            version_id: value.map(|_| version_id),
        })
    }

    pub async fn describe_secret(
        &self,
        caller: &Caller,
        req: p::SecretIdRequest,
    ) -> Result<p::DescribeSecretResponse, ApiError> {
        let located = self
            .locate(caller, required(&req.secret_id, "secretId")?)
            .await?;
        // AWS's caches refresh through DescribeSecret: it is a read like any other, except a
        // person's look at the console.
        if !caller.viewer {
            self.note_plain_read(caller, &located.secret).await;
        }
        Ok(located.describe())
    }

    pub async fn update_secret(
        &self,
        caller: &Caller,
        req: p::UpdateSecretRequest,
    ) -> Result<p::ArnNameVersionResponse, ApiError> {
        let secret_id = required(&req.secret_id, "secretId")?;
        check_description(&req.description)?;
        let value = value_input(&req.secret_string, &req.secret_binary)?;
        let version_id = token_or_new(&req.client_request_token)?;
        let now = now_ms();
        let ((), secret) = self
            .update(caller, secret_id, |secret, baton| {
                secret.ensure_not_deleted()?;
                let mut changed = false;
                if let Some(d) = &req.description
                    && secret.description.as_ref() != Some(d)
                {
                    secret.description = Some(d.clone());
                    changed = true;
                }
                if let Some(k) = &req.kms_key_id
                    && secret.kms_key_id.as_ref() != Some(k)
                {
                    secret.kms_key_id = Some(k.clone());
                    changed = true;
                }
                if value.is_some() {
                    baton.authorize_key_use(caller, secret.kms_key_id.as_deref(), KMS_WRITE)?;
                }
                if let Some(value) = &value
                    && let Outcome::Changed(()) =
                        baton.add_or_match_version(secret, &version_id, value, None, now)?
                {
                    changed = true;
                }
                if changed {
                    secret.last_changed_at = now;
                    Ok(Outcome::Changed(()))
                } else {
                    Ok(Outcome::Unchanged(()))
                }
            })
            .await?;
        Ok(p::ArnNameVersionResponse {
            arn: Some(secret.arn),
            name: Some(secret.name),
            version_id: value.map(|_| version_id),
        })
    }

    pub async fn list_secrets(
        &self,
        caller: &Caller,
        req: p::ListSecretsRequest,
    ) -> Result<p::ListSecretsResponse, ApiError> {
        let max_results = req.max_results.unwrap_or(LIST_RESULTS_MAX);
        if !(1..=LIST_RESULTS_MAX).contains(&max_results) {
            return Err(ApiError::Validation(format!(
                "1 validation error detected: Value '{max_results}' at 'maxResults' failed to \
                 satisfy constraint: Member must have value between 1 and {LIST_RESULTS_MAX}"
            )));
        }
        let filters = parse_filters(req.filters.as_deref().unwrap_or_default())?;
        let offset = decode_next_token(&req.next_token)?;
        let include_deleted = req.include_planned_deletion.unwrap_or(false);
        let (account, region) = (caller.account_id.as_str(), caller.region.as_str());
        // Unfiltered, in creation order (the default), and with no replica to interleave: the
        // store reads one page through its index, and nothing else is read.
        let by_creation = matches!(req.sort_by.as_deref(), None | Some("created-date"));
        let newest_first = match req.sort_order.as_deref() {
            None | Some("asc") => Some(false),
            Some("desc") => Some(true),
            Some(_) => None,
        };
        let replicated = self.store.list_replicated_into(account, region).await?;
        let in_creation_order = newest_first.filter(|_| by_creation && replicated.is_empty());
        if let Some(newest_first) = in_creation_order
            && let Some([term]) = search_terms(&filters).as_deref()
        {
            // One word to search for: the database gives the secrets containing it in order,
            // and they are read and filtered exactly until the page (and one more) is found.
            // It is asked for a few pages' worth first, then for eight times more each time the
            // candidates run out before the page is full: a word most secrets contain costs
            // one sorted scan that stops early, not the whole namespace's ARNs.
            let wanted = offset + max_results as usize + 1;
            let mut limit = wanted.saturating_mul(4).min(u32::MAX as usize);
            let (mut examined, mut skipped, mut more) = (0, 0, false);
            let mut page = Vec::with_capacity(max_results as usize);
            'search: loop {
                let arns = self
                    .store
                    .search_secret_arns(account, region, term, newest_first, limit as u32)
                    .await?;
                for arn in arns.iter().skip(examined) {
                    let Some(secret) = self.store.find_secret_by_arn(arn).await? else {
                        continue;
                    };
                    let located = Located {
                        secret,
                        replica_region: None,
                    };
                    if (!include_deleted && located.secret.is_scheduled_for_deletion())
                        || !filters.iter().all(|f| f.matches(&located))
                    {
                        continue;
                    }
                    if skipped < offset {
                        skipped += 1;
                    } else if page.len() == max_results as usize {
                        more = true;
                        break 'search;
                    } else {
                        page.push(list_entry(located.describe()));
                    }
                }
                if arns.len() < limit || limit == u32::MAX as usize {
                    break;
                }
                examined = arns.len();
                limit = limit.saturating_mul(8).min(u32::MAX as usize);
            }
            return Ok(p::ListSecretsResponse {
                secret_list: Some(page),
                next_token: more.then(|| encode_next_token(offset + max_results as usize)),
            });
        }
        if let (true, Some(newest_first)) = (filters.is_empty(), in_creation_order) {
            let arns = self
                .store
                .list_secret_arns_page(
                    account,
                    region,
                    include_deleted,
                    newest_first,
                    offset as u64,
                    max_results as u32 + 1,
                )
                .await?;
            let more = arns.len() > max_results as usize;
            let mut page = Vec::with_capacity(max_results as usize);
            for arn in arns.iter().take(max_results as usize) {
                // A secret purged since the page was read is left out of it.
                if let Some(secret) = self.store.find_secret_by_arn(arn).await? {
                    let located = Located {
                        secret,
                        replica_region: None,
                    };
                    page.push(list_entry(located.describe()));
                }
            }
            return Ok(p::ListSecretsResponse {
                secret_list: Some(page),
                next_token: more.then(|| encode_next_token(offset + max_results as usize)),
            });
        }
        // Filter and sort heads (rows with tags and replicas), then read only the page whole:
        // a listing of 100,000 secrets reads three statements, not six per secret.
        let mut primaries = match self.search_candidates(account, region, &filters).await? {
            Some(found) => found,
            None => self.store.list_secret_heads(account, region).await?,
        };
        primaries.retain(|s| s.key.is_none());
        let mut secrets: Vec<Located> = primaries
            .into_iter()
            .map(|secret| Located {
                secret,
                replica_region: None,
            })
            .chain(replicated.into_iter().map(|secret| Located {
                secret,
                replica_region: Some(caller.region.clone()),
            }))
            .filter(|l| include_deleted || !l.secret.is_scheduled_for_deletion())
            .filter(|l| filters.iter().all(|f| f.matches(l)))
            .collect();
        sort_secrets(
            &mut secrets,
            req.sort_by.as_deref(),
            req.sort_order.as_deref(),
        )?;
        let total = secrets.len();
        let mut page = Vec::with_capacity(max_results as usize);
        for head in secrets.into_iter().skip(offset).take(max_results as usize) {
            let whole = match head.replica_region {
                // Replicas were read whole.
                Some(_) => Some(head),
                None => self
                    .store
                    .find_secret_by_arn(&head.secret.arn)
                    .await?
                    .map(|secret| Located {
                        secret,
                        replica_region: None,
                    }),
            };
            // A secret purged since the heads were read is left out of the page.
            if let Some(l) = whole {
                page.push(list_entry(l.describe()));
            }
        }
        let next = offset + (max_results as usize).min(total.saturating_sub(offset));
        Ok(p::ListSecretsResponse {
            secret_list: Some(page),
            next_token: (next < total).then(|| encode_next_token(next)),
        })
    }

    /// The secrets a listing's filters can match, found by the database when one filter names
    /// text (name, description, tags, or `all`) and none of its values is negated: every match
    /// contains one of its words, so the secrets containing one are a superset, which the exact
    /// filters then narrow. `None` when no filter allows it, or when more than
    /// `SEARCH_CANDIDATES_MAX` secrets contain the text: reading every head is then cheaper.
    async fn search_candidates(
        &self,
        account: &str,
        region: &str,
        filters: &[Filter],
    ) -> Result<Option<Vec<SecretRecord>>, ApiError> {
        const SEARCH_CANDIDATES_MAX: usize = 2_000;
        let Some(terms) = search_terms(filters) else {
            return Ok(None);
        };
        let mut arns = std::collections::BTreeSet::new();
        for term in &terms {
            let found = self
                .store
                .search_secret_arns(
                    account,
                    region,
                    term,
                    false,
                    SEARCH_CANDIDATES_MAX as u32 + 1,
                )
                .await?;
            arns.extend(found);
            if arns.len() > SEARCH_CANDIDATES_MAX {
                return Ok(None);
            }
        }
        let mut found = Vec::with_capacity(arns.len());
        for arn in arns {
            // A secret purged since the search is not a candidate any more.
            if let Some(secret) = self.store.find_secret_by_arn(&arn).await? {
                found.push(secret);
            }
        }
        Ok(Some(found))
    }

    pub async fn delete_secret(
        &self,
        caller: &Caller,
        req: p::DeleteSecretRequest,
    ) -> Result<p::DeleteSecretResponse, ApiError> {
        let secret_id = required(&req.secret_id, "secretId")?;
        let force = req.force_delete_without_recovery.unwrap_or(false);
        if force && req.recovery_window_in_days.is_some() {
            return Err(ApiError::InvalidParameter(
                "You can't use ForceDeleteWithoutRecovery in conjunction with \
                 RecoveryWindowInDays."
                    .to_owned(),
            ));
        }
        let window = req
            .recovery_window_in_days
            .unwrap_or(RECOVERY_WINDOW_DAYS_DEFAULT);
        if !(7..=30).contains(&window) {
            return Err(ApiError::InvalidParameter(
                "The RecoveryWindowInDays value must be between 7 and 30 days (inclusive)."
                    .to_owned(),
            ));
        }
        let now = now_ms();
        if force {
            let mut secret = match self.find_primary(caller, secret_id).await {
                Ok(secret) => secret,
                // AWS: a forced delete of a secret that does not exist (or is already gone)
                // succeeds, so a retried or repeated teardown does not fail.
                Err(ApiError::ResourceNotFound(_)) => {
                    let (arn, name) = match baton_core::parse_secret_arn(secret_id) {
                        // A full ARN ends in "-" and a 6-character suffix the name lacks.
                        Some(arn) => {
                            let resource = arn.resource;
                            let suffix = baton_core::ARN_SUFFIX_LEN + 1;
                            let name = match resource.len().checked_sub(suffix) {
                                Some(cut) if cut > 0 && resource.as_bytes()[cut] == b'-' => {
                                    &resource[..cut]
                                }
                                _ => resource,
                            };
                            (secret_id.to_owned(), name.to_owned())
                        }
                        None => (
                            format!(
                                "arn:aws:secretsmanager:{}:{}:secret:{secret_id}",
                                caller.region, caller.account_id
                            ),
                            secret_id.to_owned(),
                        ),
                    };
                    return Ok(p::DeleteSecretResponse {
                        arn: Some(arn),
                        name: Some(name),
                        deletion_date: Some(seconds(now)),
                    });
                }
                Err(e) => return Err(e),
            };
            refuse_if_replicated(&secret)?;
            secret
                .outbox
                .push(crate::events::api_event(&caller.operation, &secret));
            self.store.delete_secret(&secret).await?;
            return Ok(p::DeleteSecretResponse {
                arn: Some(secret.arn),
                name: Some(secret.name),
                deletion_date: Some(seconds(now)),
            });
        }
        let ((), secret) = self
            .update(caller, secret_id, |secret, _| {
                refuse_if_replicated(secret)?;
                secret.schedule_deletion(window, now)?;
                Ok(Outcome::Changed(()))
            })
            .await?;
        let DeletionState::Scheduled { purge_at, .. } = secret.deletion else {
            return Err(ApiError::Internal("deletion was not recorded".to_owned()));
        };
        Ok(p::DeleteSecretResponse {
            arn: Some(secret.arn),
            name: Some(secret.name),
            deletion_date: Some(seconds(purge_at)),
        })
    }

    pub async fn restore_secret(
        &self,
        caller: &Caller,
        req: p::SecretIdRequest,
    ) -> Result<p::ArnNameResponse, ApiError> {
        let now = now_ms();
        self.update_answering_arn_name(
            caller,
            required(&req.secret_id, "secretId")?,
            |secret, _| {
                if !secret.is_scheduled_for_deletion() {
                    return Ok(Outcome::Unchanged(()));
                }
                secret.restore(now)?;
                Ok(Outcome::Changed(()))
            },
        )
        .await
    }

    pub async fn tag_resource(
        &self,
        caller: &Caller,
        req: p::TagResourceRequest,
    ) -> Result<p::Empty, ApiError> {
        let tags = convert_tags(req.tags.as_ref().ok_or_else(|| ApiError::missing("tags"))?)?;
        let now = now_ms();
        self.update(
            caller,
            required(&req.secret_id, "secretId")?,
            |secret, _| {
                secret.ensure_not_deleted()?;
                secret.tag(tags.clone(), now)?;
                Ok(Outcome::Changed(()))
            },
        )
        .await?;
        Ok(p::Empty {})
    }

    pub async fn untag_resource(
        &self,
        caller: &Caller,
        req: p::UntagResourceRequest,
    ) -> Result<p::Empty, ApiError> {
        let keys = req
            .tag_keys
            .clone()
            .ok_or_else(|| ApiError::missing("tagKeys"))?;
        let now = now_ms();
        self.update(
            caller,
            required(&req.secret_id, "secretId")?,
            |secret, _| {
                secret.ensure_not_deleted()?;
                secret.untag(&keys, now);
                Ok(Outcome::Changed(()))
            },
        )
        .await?;
        Ok(p::Empty {})
    }

    pub fn get_random_password(
        &self,
        req: p::GetRandomPasswordRequest,
    ) -> Result<p::GetRandomPasswordResponse, ApiError> {
        let defaults = PasswordOptions::default();
        let length = req.password_length.unwrap_or(i64::from(defaults.length));
        if !(1..=4096).contains(&length) {
            return Err(ApiError::Validation(format!(
                "1 validation error detected: Value '{length}' at 'passwordLength' failed to \
                 satisfy constraint: Member must have value between 1 and 4096"
            )));
        }
        let options = PasswordOptions {
            length: length as u32,
            exclude_characters: req.exclude_characters.clone().unwrap_or_default(),
            exclude_numbers: req.exclude_numbers.unwrap_or(false),
            exclude_punctuation: req.exclude_punctuation.unwrap_or(false),
            exclude_uppercase: req.exclude_uppercase.unwrap_or(false),
            exclude_lowercase: req.exclude_lowercase.unwrap_or(false),
            include_space: req.include_space.unwrap_or(false),
            require_each_included_type: req.require_each_included_type.unwrap_or(true),
        };
        let password = baton_crypto::random_password(&options).map_err(|e| match e {
            baton_crypto::PasswordError::Crypto(c) => ApiError::from(c),
            other => ApiError::InvalidParameter(other.to_string()),
        })?;
        let text = String::from_utf8(password.expose().to_vec())
            .map_err(|_| ApiError::Internal("password is not UTF-8".to_owned()))?;
        Ok(p::GetRandomPasswordResponse {
            random_password: Some(text),
        })
    }

    /// Removes secrets whose recovery window has ended. Returns how many were purged.
    pub async fn purge_due(&self, now: i64) -> Result<usize, ApiError> {
        const PURGE_BATCH_MAX: u32 = 100;
        let arns = self
            .store
            .secrets_due_for_purge(now, PURGE_BATCH_MAX)
            .await?;
        for arn in &arns {
            let Some(mut secret) = self.store.find_secret_by_arn(arn).await? else {
                continue;
            };
            // AWS records the end of each version's deletion as a service event.
            let ends = crate::events::version_deletion_events(&secret);
            secret.outbox.extend(ends);
            self.store.delete_secret(&secret).await?;
        }
        let ids = arns;
        self.store
            .delete_events_before(now - self.events_retention.as_millis() as i64)
            .await?;
        // Housekeeping that shares the purge's rhythm.
        self.store
            .delete_consumers_expired(now - crate::consumers::EXPIRED_CONSUMERS_KEPT_MS)
            .await?;
        self.store.changes().sweep();
        Ok(ids.len())
    }
}

impl Filter {
    pub(crate) fn matches(&self, located: &Located) -> bool {
        let secret = &located.secret;
        self.values
            .iter()
            .any(|value| match value.strip_prefix('!') {
                Some(negated) => !self.matches_one(located, secret, negated),
                None => self.matches_one(located, secret, value),
            })
    }

    pub(crate) fn matches_one(
        &self,
        located: &Located,
        secret: &SecretRecord,
        value: &str,
    ) -> bool {
        match self.key.as_str() {
            "name" => secret.name.starts_with(value),
            "tag-key" => secret.tags.iter().any(|t| t.key.starts_with(value)),
            "tag-value" => secret.tags.iter().any(|t| t.value.starts_with(value)),
            "primary-region" => {
                let replicated = located.replica_region.is_some() || !secret.replicas.is_empty();
                replicated && secret.region.starts_with(value)
            }
            "owning-service" => false,
            "description" => {
                let have = words(secret.description.as_deref().unwrap_or_default());
                let want = words(value);
                !want.is_empty() && want.iter().all(|w| have.iter().any(|h| h.starts_with(w)))
            }
            _ => {
                let mut have = words(&secret.name);
                have.extend(words(secret.description.as_deref().unwrap_or_default()));
                for t in &secret.tags {
                    have.extend(words(&t.key));
                    have.extend(words(&t.value));
                }
                words(value)
                    .iter()
                    .any(|w| have.iter().any(|h| h.starts_with(w)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_support::{baton, caller};

    async fn listed(baton: &Baton, req: p::ListSecretsRequest) -> Vec<String> {
        let mut names = Vec::new();
        let mut req = req;
        loop {
            let page = baton.list_secrets(&caller(), req.clone()).await.unwrap();
            names.extend(
                page.secret_list
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| e.name.unwrap_or_default()),
            );
            match page.next_token {
                Some(t) => req.next_token = Some(t),
                None => return names,
            }
        }
    }

    #[tokio::test]
    async fn the_page_and_search_paths_answer_as_the_full_scan_does() {
        let dir = tempfile::tempdir().unwrap();
        let baton = baton(dir.path());
        for (name, description) in [
            ("app/alpha", "BlueTeam database"),
            ("app/beta", "red"),
            ("app/gamma", "the blue one"),
            ("app/delta", ""),
            ("app/epsilon", "orange"),
            ("app/zeta", "blueprint"),
            ("app/eta", "gone"),
        ] {
            baton
                .create_secret(
                    &caller(),
                    p::CreateSecretRequest {
                        name: Some(name.into()),
                        description: Some(description.into()).filter(|d: &String| !d.is_empty()),
                        secret_string: Some("v".into()),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
        }
        baton
            .delete_secret(
                &caller(),
                p::DeleteSecretRequest {
                    secret_id: Some("app/eta".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        // A negated filter that matches everything sends a listing down the full scan.
        let everything = p::Filter {
            key: Some("name".into()),
            values: Some(vec!["!no-such-prefix".into()]),
        };
        for (order, deleted) in [
            ("asc", false),
            ("desc", false),
            ("asc", true),
            ("desc", true),
        ] {
            let req = p::ListSecretsRequest {
                max_results: Some(3),
                sort_order: Some(order.into()),
                include_planned_deletion: Some(deleted),
                ..Default::default()
            };
            let paged = listed(&baton, req.clone()).await;
            let scanned = listed(
                &baton,
                p::ListSecretsRequest {
                    filters: Some(vec![everything.clone()]),
                    ..req
                },
            )
            .await;
            assert_eq!(paged, scanned, "{order}, deleted {deleted}");
            assert_eq!(paged.len(), if deleted { 7 } else { 6 });
        }
        let search = |values: Vec<&str>| p::ListSecretsRequest {
            filters: Some(vec![p::Filter {
                key: Some("all".into()),
                values: Some(values.into_iter().map(Into::into).collect()),
            }]),
            ..Default::default()
        };
        // Word prefixes: "BlueTeam" is the words blue and team; "blueprint" starts with blue.
        assert_eq!(
            listed(&baton, search(vec!["blue"])).await,
            vec!["app/alpha", "app/gamma", "app/zeta"]
        );
        assert_eq!(
            listed(&baton, search(vec!["team"])).await,
            vec!["app/alpha"]
        );
        // One word is searched in order and paged: one secret a page, newest first.
        let one_a_page = p::ListSecretsRequest {
            max_results: Some(1),
            sort_order: Some("desc".into()),
            ..search(vec!["BLUE"])
        };
        assert_eq!(
            listed(&baton, one_a_page).await,
            vec!["app/zeta", "app/gamma", "app/alpha"]
        );
        // "lue" is inside blue but starts no word: found by the database, refused by the filter.
        assert!(listed(&baton, search(vec!["lue"])).await.is_empty());
        assert_eq!(
            listed(&baton, search(vec!["red", "orange"])).await,
            vec!["app/beta", "app/epsilon"]
        );
    }

    #[tokio::test]
    async fn a_search_asks_for_more_candidates_until_its_page_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let baton = baton(dir.path());
        // Ten secrets contain "xq" inside a word (candidates, not matches); the last one has
        // the word. A page of one asks for 8 candidates first, then for 64.
        let mut made: Vec<(String, &str)> =
            (0..10).map(|i| (format!("app/pad-{i}"), "zzxq")).collect();
        made.push(("app/last".into(), "xq marks the spot"));
        for (name, description) in &made {
            baton
                .create_secret(
                    &caller(),
                    p::CreateSecretRequest {
                        name: Some(name.clone()),
                        description: Some((*description).into()),
                        secret_string: Some("v".into()),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
        }
        let req = p::ListSecretsRequest {
            max_results: Some(1),
            filters: Some(vec![p::Filter {
                key: Some("all".into()),
                values: Some(vec!["xq".into()]),
            }]),
            ..Default::default()
        };
        assert_eq!(listed(&baton, req).await, vec!["app/last"]);
    }

    #[tokio::test]
    async fn purge_removes_secrets_only_after_their_recovery_window() {
        let dir = tempfile::tempdir().unwrap();
        let baton = baton(dir.path());
        for name in ["doomed", "kept"] {
            baton
                .create_secret(
                    &caller(),
                    p::CreateSecretRequest {
                        name: Some(name.into()),
                        secret_string: Some("v".into()),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
        }
        let deleted = baton
            .delete_secret(
                &caller(),
                p::DeleteSecretRequest {
                    secret_id: Some("doomed".into()),
                    recovery_window_in_days: Some(7),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let purge_at_ms = (deleted.deletion_date.unwrap() * 1000.0) as i64;
        assert_eq!(baton.purge_due(purge_at_ms - 1).await.unwrap(), 0);
        assert_eq!(baton.purge_due(purge_at_ms + 1).await.unwrap(), 1);
        assert!(matches!(
            baton.find_primary(&caller(), "doomed").await,
            Err(ApiError::ResourceNotFound(_))
        ));
        assert!(baton.find_primary(&caller(), "kept").await.is_ok());
        // The purge is in the event log: the end of each version's deletion.
        let events = baton.store.list_events(0, 1_000, None).await.unwrap();
        let purged: Vec<&str> = events
            .iter()
            .filter(|e| e.secret_name == "doomed")
            .map(|e| e.event_name.as_str())
            .collect();
        // (The test caller names its operations "Test".)
        assert_eq!(purged, ["Test", "Test", "EndSecretVersionDelete"]);
    }
}
