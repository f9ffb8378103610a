//! Versions and their staging labels: reading values (one, a batch, the keyring of every
//! valid value), writing a new version, and moving labels between versions.

use super::*;

impl Baton {
    /// Baton's keyring view: the version to sign or encrypt with (AWSCURRENT) and every version
    /// to verify or decrypt with (AWSPENDING, AWSCURRENT, AWSPREVIOUS), with their values.
    pub async fn get_secret_keyring(
        &self,
        caller: &Caller,
        req: p::GetSecretKeyringRequest,
    ) -> Result<p::GetSecretKeyringResponse, ApiError> {
        let (response, secret, view) = self
            .read_keyring(caller, required(&req.secret_id, "secretId")?)
            .await?;
        self.note_keyring_fetch(
            caller,
            &secret,
            req.consumer.as_ref(),
            req.lease_seconds,
            &view,
        )
        .await?;
        Ok(response)
    }

    /// A secret's keyring as `baton.GetSecretKeyring` answers it, authorized for `caller`,
    /// with the secret and the keyring's versions; nothing is recorded.
    pub(crate) async fn read_keyring(
        &self,
        caller: &Caller,
        secret_id: &str,
    ) -> Result<
        (
            p::GetSecretKeyringResponse,
            SecretRecord,
            baton_core::rotation::Keyring,
        ),
        ApiError,
    > {
        let located = self.locate(caller, secret_id).await?;
        self.authorize_key_use(caller, located.kms_key_id(), KMS_READ)?;
        let arn = located.arn();
        let secret = located.secret;
        secret.ensure_not_deleted()?;
        let view = baton_core::rotation::keyring(&secret);
        let data_key = self.stored_data_key(&secret).await?;
        let entry = |version_id: &str| -> Result<p::KeyringVersion, ApiError> {
            let (secret_string, secret_binary) = self.wire_value(&data_key, &secret, version_id)?;
            let version = secret
                .version(version_id)
                .ok_or_else(ApiError::secret_not_found)?;
            Ok(p::KeyringVersion {
                version_id: Some(version_id.to_owned()),
                secret_string,
                secret_binary,
                version_stages: Some(version.labels.iter().cloned().collect()),
                created_date: Some(seconds(version.created_at)),
            })
        };
        let response = p::GetSecretKeyringResponse {
            current: view.current.as_deref().map(entry).transpose()?,
            accepted: Some(
                view.accepted
                    .iter()
                    .map(|v| entry(v))
                    .collect::<Result<_, _>>()?,
            ),
            name: Some(secret.name.clone()),
            arn: Some(arn),
            revision: Some(secret.view_revision()),
        };
        Ok((response, secret, view))
    }

    /// Adds a version, or succeeds without change if the same token already holds the same
    /// value (a retried request). The same token with another value is refused.
    pub(crate) fn add_or_match_version(
        &self,
        secret: &mut SecretRecord,
        version_id: &str,
        (kind, value): &(SecretValueKind, SecretBytes),
        labels: Option<Vec<String>>,
        now: i64,
    ) -> Result<Outcome<()>, ApiError> {
        let data_key = self.data_key(secret)?;
        if secret
            .version(version_id)
            .is_some_and(|v| v.kind == SecretValueKind::Empty)
        {
            let sealed_value = data_key.seal(value.expose(), &value_aad(&secret.id, version_id))?;
            secret.fill_version(
                NewVersion {
                    version_id: version_id.to_owned(),
                    kind: *kind,
                    sealed_value,
                    labels,
                },
                now,
            )?;
            return Ok(Outcome::Changed(()));
        }
        if let Some(existing) = secret.version(version_id) {
            let existing_kind = existing.kind;
            let stored = self.open_value(&data_key, secret, version_id)?;
            if existing_kind == *kind && stored.ct_eq(value.expose()) {
                return Ok(Outcome::Unchanged(()));
            }
            return Err(ApiError::ResourceExists(format!(
                "You can't use ClientRequestToken {version_id} because that value is already \
                 in use for a version of secret {}.",
                secret.arn
            )));
        }
        let sealed_value = data_key.seal(value.expose(), &value_aad(&secret.id, version_id))?;
        secret.add_version(
            NewVersion {
                version_id: version_id.to_owned(),
                kind: *kind,
                sealed_value,
                labels,
            },
            now,
        )?;
        Ok(Outcome::Changed(()))
    }

    /// Reads one value. Records the access date at day granularity, as AWS does, which costs
    /// at most one write per secret per day.
    pub(crate) async fn read_value(
        &self,
        caller: &Caller,
        secret_id: &str,
        version_id: Option<&str>,
        version_stage: Option<&str>,
    ) -> Result<p::SecretValue, ApiError> {
        if let Some(v) = version_id {
            baton_core::validate_client_request_token(v).map_err(|e| match e {
                CoreError::Validation(m) => {
                    ApiError::Validation(m.replace("clientRequestToken", "versionId"))
                }
                other => other.into(),
            })?;
        }
        if let Some(s) = version_stage {
            baton_core::validate_version_stage(s)?;
        }
        let located = self.locate(caller, secret_id).await?;
        self.authorize_key_use(caller, located.kms_key_id(), KMS_READ)?;
        let arn = located.arn();
        let mut secret = located.secret;
        secret.ensure_not_deleted()?;
        // Asking for a stage that does not exist yet is how a cache looks for AWSPENDING: the
        // reader is there whether or not the answer is a value.
        self.note_plain_read(caller, &secret).await;
        let version = resolve_version(&secret, version_id, version_stage)?;
        let data_key = self.stored_data_key(&secret).await?;
        let (secret_string, secret_binary) =
            self.wire_value(&data_key, &secret, &version.version_id)?;
        let value = p::SecretValue {
            arn: Some(arn),
            name: Some(secret.name.clone()),
            version_id: Some(version.version_id.clone()),
            secret_binary,
            secret_string,
            version_stages: Some(version.labels.iter().cloned().collect()),
            created_date: Some(seconds(version.created_at)),
        };
        let today = now_ms() / DAY_MS * DAY_MS;
        let last_accessed = match &located.replica_region {
            None => &mut secret.last_accessed_at,
            Some(region) => match secret.replicas.iter_mut().find(|r| &r.region == region) {
                Some(replica) => &mut replica.last_accessed_at,
                None => return Ok(value),
            },
        };
        if *last_accessed != Some(today) {
            *last_accessed = Some(today);
            // Losing this race to a concurrent writer only delays the access date.
            match self.store.save_secret(&secret).await {
                Ok(_) | Err(StoreError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(value)
    }

    pub async fn get_secret_value(
        &self,
        caller: &Caller,
        req: p::GetSecretValueRequest,
    ) -> Result<p::SecretValue, ApiError> {
        self.read_value(
            caller,
            required(&req.secret_id, "secretId")?,
            req.version_id.as_deref(),
            req.version_stage.as_deref(),
        )
        .await
    }

    pub async fn batch_get_secret_value(
        &self,
        caller: &Caller,
        req: p::BatchGetSecretValueRequest,
    ) -> Result<p::BatchGetSecretValueResponse, ApiError> {
        let ids: Vec<String> = match (&req.secret_id_list, &req.filters) {
            (Some(_), Some(_)) => {
                return Err(ApiError::InvalidParameter(
                    "Either SecretIdList or Filters must be provided, but not both.".to_owned(),
                ));
            }
            (None, None) => {
                return Err(ApiError::InvalidParameter(
                    "Either SecretIdList or Filters must be provided.".to_owned(),
                ));
            }
            (Some(list), None) => {
                if req.max_results.is_some() {
                    return Err(ApiError::InvalidParameter(
                        "MaxResults can only be used with Filters.".to_owned(),
                    ));
                }
                if list.is_empty() || list.len() > BATCH_IDS_MAX {
                    return Err(ApiError::Validation(format!(
                        "1 validation error detected: Value at 'secretIdList' failed to satisfy \
                         constraint: Member must have length between 1 and {BATCH_IDS_MAX}"
                    )));
                }
                list.clone()
            }
            (None, Some(filters)) => {
                let lister = caller.acting_as("secretsmanager:ListSecrets");
                self.authorize(&lister, Target::global(&lister.action))?;
                let listed = self
                    .list_secrets(
                        &lister,
                        p::ListSecretsRequest {
                            filters: Some(filters.clone()),
                            max_results: Some(req.max_results.unwrap_or(BATCH_IDS_MAX as i64)),
                            next_token: req.next_token.clone(),
                            ..Default::default()
                        },
                    )
                    .await?;
                let ids = listed
                    .secret_list
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|s| s.arn)
                    .collect();
                let mut response = self.batch_read(caller, ids).await;
                response.next_token = listed.next_token;
                return Ok(response);
            }
        };
        Ok(self.batch_read(caller, ids).await)
    }

    pub(crate) async fn batch_read(
        &self,
        caller: &Caller,
        ids: Vec<String>,
    ) -> p::BatchGetSecretValueResponse {
        let mut values = Vec::new();
        let mut errors = Vec::new();
        // Each secret needs GetSecretValue of its own; a denial is that secret's error.
        let reader = caller.acting_as("secretsmanager:GetSecretValue");
        for id in ids {
            match self.read_value(&reader, &id, None, None).await {
                Ok(value) => values.push(value),
                Err(e) => errors.push(p::ApiErrorEntry {
                    secret_id: Some(id),
                    error_code: Some(e.error_type().to_owned()),
                    message: Some(e.to_string()),
                }),
            }
        }
        p::BatchGetSecretValueResponse {
            secret_values: Some(values),
            next_token: None,
            errors: Some(errors),
        }
    }

    pub async fn put_secret_value(
        &self,
        caller: &Caller,
        req: p::PutSecretValueRequest,
    ) -> Result<p::PutSecretValueResponse, ApiError> {
        let secret_id = required(&req.secret_id, "secretId")?;
        let value = value_input(&req.secret_string, &req.secret_binary)?.ok_or_else(|| {
            ApiError::InvalidRequest(
                "You must provide either SecretString or SecretBinary.".to_owned(),
            )
        })?;
        let version_id = token_or_new(&req.client_request_token)?;
        if let Some(stages) = &req.version_stages {
            if stages.is_empty() || stages.len() > 20 {
                return Err(ApiError::Validation(
                    "1 validation error detected: Value at 'versionStages' failed to satisfy \
                     constraint: Member must have length between 1 and 20"
                        .to_owned(),
                ));
            }
            for stage in stages {
                baton_core::validate_version_stage(stage)?;
            }
        }
        let now = now_ms();
        let ((), secret) = self
            .update(caller, secret_id, |secret, baton| {
                secret.ensure_not_deleted()?;
                baton.authorize_key_use(caller, secret.kms_key_id.as_deref(), KMS_WRITE)?;
                baton.add_or_match_version(
                    secret,
                    &version_id,
                    &value,
                    req.version_stages.clone(),
                    now,
                )
            })
            .await?;
        let stages = secret
            .version(&version_id)
            .map(|v| v.labels.iter().cloned().collect());
        Ok(p::PutSecretValueResponse {
            arn: Some(secret.arn),
            name: Some(secret.name),
            version_id: Some(version_id),
            version_stages: stages,
        })
    }

    pub async fn update_secret_version_stage(
        &self,
        caller: &Caller,
        req: p::UpdateSecretVersionStageRequest,
    ) -> Result<p::ArnNameResponse, ApiError> {
        let secret_id = required(&req.secret_id, "secretId")?;
        let change = LabelMove {
            label: required(&req.version_stage, "versionStage")?.to_owned(),
            remove_from_version_id: req.remove_from_version_id.clone(),
            move_to_version_id: req.move_to_version_id.clone(),
        };
        let now = now_ms();
        self.update_answering_arn_name(caller, secret_id, |secret, _| {
            baton_core::move_label(secret, &change, now)?;
            Ok(Outcome::Changed(()))
        })
        .await
    }

    /// Baton's extension: several label moves in one atomic write.
    pub async fn update_secret_version_stages(
        &self,
        caller: &Caller,
        req: p::UpdateSecretVersionStagesRequest,
    ) -> Result<p::UpdateSecretVersionStagesResponse, ApiError> {
        let secret_id = required(&req.secret_id, "secretId")?;
        let moves = req
            .moves
            .as_ref()
            .ok_or_else(|| ApiError::missing("moves"))?
            .iter()
            .map(|m| {
                Ok(LabelMove {
                    label: required(&m.version_stage, "moves.member.versionStage")?.to_owned(),
                    remove_from_version_id: m.remove_from_version_id.clone(),
                    move_to_version_id: m.move_to_version_id.clone(),
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let now = now_ms();
        let ((), secret) = self
            .update(caller, secret_id, |secret, _| {
                baton_core::apply_label_moves(secret, &moves, now)?;
                Ok(Outcome::Changed(()))
            })
            .await?;
        Ok(p::UpdateSecretVersionStagesResponse {
            version_ids_to_stages: Some(stages_map(&secret)),
            arn: Some(secret.arn),
            name: Some(secret.name),
        })
    }

    pub async fn list_secret_version_ids(
        &self,
        caller: &Caller,
        req: p::ListSecretVersionIdsRequest,
    ) -> Result<p::ListSecretVersionIdsResponse, ApiError> {
        let located = self
            .locate(caller, required(&req.secret_id, "secretId")?)
            .await?;
        self.note_plain_read(caller, &located.secret).await;
        let arn = located.arn();
        let secret = located.secret;
        let max_results = req.max_results.unwrap_or(LIST_RESULTS_MAX);
        if !(1..=LIST_RESULTS_MAX).contains(&max_results) {
            return Err(ApiError::Validation(format!(
                "1 validation error detected: Value '{max_results}' at 'maxResults' failed to \
                 satisfy constraint: Member must have value between 1 and {LIST_RESULTS_MAX}"
            )));
        }
        let offset = decode_next_token(&req.next_token)?;
        let include_deprecated = req.include_deprecated.unwrap_or(false);
        let mut versions: Vec<_> = secret
            .versions
            .iter()
            .filter(|v| include_deprecated || !v.labels.is_empty())
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(v.created_at));
        let total = versions.len();
        let page: Vec<p::SecretVersionsListEntry> = versions
            .into_iter()
            .skip(offset)
            .take(max_results as usize)
            .map(|v| p::SecretVersionsListEntry {
                version_id: Some(v.version_id.clone()),
                version_stages: Some(v.labels.iter().cloned().collect()),
                last_accessed_date: None,
                created_date: Some(seconds(v.created_at)),
                kms_key_ids: None,
            })
            .collect();
        let next = offset + page.len();
        Ok(p::ListSecretVersionIdsResponse {
            versions: Some(page),
            next_token: (next < total).then(|| encode_next_token(next)),
            arn: Some(arn),
            name: Some(secret.name),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_support::{baton, caller};

    #[tokio::test]
    async fn a_sealed_value_moved_to_another_version_fails_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let baton = baton(dir.path());
        let c = caller();
        baton
            .create_secret(
                &c,
                p::CreateSecretRequest {
                    name: Some("s".into()),
                    secret_string: Some("one".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        baton
            .put_secret_value(
                &c,
                p::PutSecretValueRequest {
                    secret_id: Some("s".into()),
                    secret_string: Some("two".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let mut secret = baton.find_primary(&c, "s").await.unwrap();
        // Swap the sealed values of the two versions, as an attacker with database access could.
        let first = secret.versions[0].sealed_value.clone();
        secret.versions[0].sealed_value = secret.versions[1].sealed_value.clone();
        secret.versions[1].sealed_value = first;
        let data_key = baton.data_key(&secret).unwrap();
        for version in &secret.versions {
            assert!(
                baton
                    .open_value(&data_key, &secret, &version.version_id)
                    .is_err()
            );
        }
    }
}
