//! Replication to other regions: replicas are views of their primary in another region.

use super::*;

/// Replicas follow every write by construction (they are views of the primary), so each is
/// always in sync.
pub(crate) fn replication_status(secret: &SecretRecord) -> Option<Vec<p::ReplicationStatus>> {
    (!secret.replicas.is_empty()).then(|| {
        secret
            .replicas
            .iter()
            .map(|r| p::ReplicationStatus {
                region: Some(r.region.clone()),
                kms_key_id: r.kms_key_id.clone(),
                status: Some("InSync".to_owned()),
                status_message: Some("Replication succeeded".to_owned()),
                last_accessed_date: r.last_accessed_at.map(seconds),
            })
            .collect()
    })
}

pub(crate) fn name_taken_in_replica_region() -> ApiError {
    ApiError::ResourceExists(
        "A secret with this name already exists in a replica region. Delete it there, or pass \
         ForceOverwriteReplicaSecret to replace it with the replica."
            .to_owned(),
    )
}

pub(crate) fn refuse_if_replicated(secret: &SecretRecord) -> Result<(), ApiError> {
    if secret.replicas.is_empty() {
        return Ok(());
    }
    let regions: Vec<&str> = secret.replicas.iter().map(|r| r.region.as_str()).collect();
    Err(ApiError::InvalidParameter(format!(
        "You can't delete secret {} that still has replica regions [{}]",
        secret.arn,
        regions.join(", ")
    )))
}

impl Baton {
    /// Checks AddReplicaRegions: each region must be served by this deployment.
    pub(crate) fn replica_regions(
        &self,
        regions: &[p::ReplicaRegion],
    ) -> Result<Vec<(String, Option<String>)>, ApiError> {
        regions
            .iter()
            .map(|r| {
                let region = r
                    .region
                    .clone()
                    .ok_or_else(|| ApiError::missing("addReplicaRegions.member.region"))?;
                if !self.regions.contains(&region) {
                    return Err(ApiError::InvalidParameter(format!(
                        "Invalid replica region {region}: this Baton serves {}.",
                        self.regions.join(", ")
                    )));
                }
                Ok((region, r.kms_key_id.clone()))
            })
            .collect()
    }

    /// With ForceOverwriteReplicaSecret: deletes standalone secrets that hold `name` in the
    /// replica regions, so the replicas can take their place.
    pub(crate) async fn clear_replica_names(
        &self,
        caller: &Caller,
        name: &str,
        regions: &[(String, Option<String>)],
    ) -> Result<(), ApiError> {
        for (region, _) in regions {
            if let Some(mut existing) = self
                .store
                .find_secret_by_name(&caller.account_id, region, name)
                .await?
            {
                refuse_if_replicated(&existing)?;
                tracing::info!(secret = %existing.arn, "ForceOverwriteReplicaSecret: deleting to make room for a replica");
                existing
                    .outbox
                    .push(crate::events::api_event("DeleteSecret", &existing));
                self.store.delete_secret(&existing).await?;
            }
        }
        Ok(())
    }

    pub async fn replicate_secret_to_regions(
        &self,
        caller: &Caller,
        req: p::ReplicateSecretToRegionsRequest,
    ) -> Result<p::ReplicationResponse, ApiError> {
        let secret_id = required(&req.secret_id, "secretId")?;
        let regions = self.replica_regions(
            req.add_replica_regions
                .as_deref()
                .ok_or_else(|| ApiError::missing("addReplicaRegions"))?,
        )?;
        if regions.is_empty() {
            return Err(ApiError::InvalidParameter(
                "AddReplicaRegions must name at least one region.".to_owned(),
            ));
        }
        if req.force_overwrite_replica_secret.unwrap_or(false) {
            let name = self.find_primary(caller, secret_id).await?.name;
            self.clear_replica_names(caller, &name, &regions).await?;
        }
        let now = now_ms();
        let ((), secret) = self
            .update(caller, secret_id, |secret, _| {
                secret.add_replicas(&regions, now)?;
                Ok(Outcome::Changed(()))
            })
            .await?;
        Ok(p::ReplicationResponse {
            replication_status: replication_status(&secret).or(Some(Vec::new())),
            arn: Some(secret.arn),
        })
    }

    pub async fn remove_regions_from_replication(
        &self,
        caller: &Caller,
        req: p::RemoveRegionsFromReplicationRequest,
    ) -> Result<p::ReplicationResponse, ApiError> {
        let regions = req
            .remove_replica_regions
            .clone()
            .ok_or_else(|| ApiError::missing("removeReplicaRegions"))?;
        let now = now_ms();
        let ((), secret) = self
            .update(
                caller,
                required(&req.secret_id, "secretId")?,
                |secret, _| {
                    secret.remove_replicas(&regions, now)?;
                    Ok(Outcome::Changed(()))
                },
            )
            .await?;
        Ok(p::ReplicationResponse {
            replication_status: replication_status(&secret).or(Some(Vec::new())),
            arn: Some(secret.arn),
        })
    }

    /// Promotes the replica in the caller's region to a standalone secret: a new identity and
    /// data key, every version re-sealed for it, and the primary's replica removed, in one
    /// transaction.
    pub async fn stop_replication_to_replica(
        &self,
        caller: &Caller,
        req: p::SecretIdRequest,
    ) -> Result<p::StopReplicationToReplicaResponse, ApiError> {
        let secret_id = required(&req.secret_id, "secretId")?;
        for _ in 0..UPDATE_ATTEMPTS_MAX {
            let located = self.locate(caller, secret_id).await?;
            let Some(region) = located.replica_region.clone() else {
                return Err(ApiError::InvalidRequest(
                    "This secret is not a replica. Call StopReplicationToReplica in the region of \
                     the replica you want to promote."
                        .to_owned(),
                ));
            };
            let arn = located.arn();
            let primary = located.secret;
            let now = now_ms();
            let old_key = self.stored_data_key(&primary).await?;
            let new_key = DataKey::generate()?;
            let id = uuid::Uuid::new_v4().to_string();
            let mut versions = primary.versions.clone();
            for version in &mut versions {
                let plaintext = self.open_value(&old_key, &primary, &version.version_id)?;
                version.sealed_value =
                    new_key.seal(plaintext.expose(), &value_aad(&id, &version.version_id))?;
            }
            let replica = primary.replica(&region).cloned();
            let promoted = SecretRecord {
                wrapped_data_key: self.root_key.wrap(&new_key, &id)?,
                id,
                account_id: primary.account_id.clone(),
                region: region.clone(),
                name: primary.name.clone(),
                arn: arn.clone(),
                description: primary.description.clone(),
                kms_key_id: replica.as_ref().and_then(|r| r.kms_key_id.clone()),
                tags: primary.tags.clone(),
                tagged: primary.tagged,
                resource_policy: primary.resource_policy.clone(),
                rotation: RotationConfig::default(),
                created_at: now,
                last_changed_at: now,
                last_accessed_at: replica.and_then(|r| r.last_accessed_at),
                deletion: DeletionState::Active,
                versions,
                replicas: Vec::new(),
                rotation_policy: primary.rotation_policy.clone(),
                rotation_state: None,
                revision: 0,
                key: None,
                outbox: vec![],
            };
            let mut primary = primary;
            primary.remove_replicas(std::slice::from_ref(&region), now)?;
            primary
                .outbox
                .push(crate::events::api_event(&caller.operation, &primary));
            let mut promoted = promoted;
            promoted
                .outbox
                .push(crate::events::api_event(&caller.operation, &promoted));
            match self.store.promote_replica(&primary, &promoted).await {
                Ok(_) => {
                    return Ok(p::StopReplicationToReplicaResponse { arn: Some(arn) });
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::Internal(
            "The secret is being changed by many writers at once; retry the request.".to_owned(),
        ))
    }
}
