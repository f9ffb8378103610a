//! The engine's authorizer for master secrets (`baton_engine::MasterAccess`).
//!
//! A built-in database rotator acts as the master secret its secret's value names. Whoever can
//! write that value chooses the master, so the rotator reads it only as far as the principal
//! that configured the rotation may: the same evaluation as that principal's GetSecretValue,
//! at every use, recorded in the audit log like a request.

use std::sync::Arc;

use baton_store::AuditRecord;

use crate::ApiError;
use crate::authz::{Principal, PrincipalKind};
use crate::state::{Baton, Caller, now_ms};

/// Hands the engine the server's authorization and audit log.
#[derive(Debug)]
pub struct MasterReads<A>(pub Arc<A>);

#[async_trait::async_trait]
impl<A: AsRef<Baton> + Send + Sync + 'static> baton_engine::MasterAccess for MasterReads<A> {
    async fn authorize_master_read(
        &self,
        configured_by: &str,
        secret_arn: &str,
        master_arn: &str,
    ) -> Result<(), String> {
        (*self.0)
            .as_ref()
            .authorize_master_read(configured_by, secret_arn, master_arn)
            .await
    }
}

impl Baton {
    /// The caller `principal_arn` is when Baton acts for it outside a request.
    async fn acting_principal(
        &self,
        principal_arn: &str,
        region: &str,
        operation: &str,
    ) -> Result<Caller, ApiError> {
        let gone = || {
            ApiError::AccessDenied(format!(
                "The principal {principal_arn} no longer exists, so it authorizes nothing."
            ))
        };
        let iam_prefix = format!("arn:aws:iam::{}:", self.account_id);
        let resource = principal_arn.strip_prefix(&iam_prefix).ok_or_else(gone)?;
        let principal = match resource.split_once('/') {
            None if resource == "root" => Principal::admin(&self.account_id),
            Some((kind, name)) => {
                let wanted = match kind {
                    "user" => PrincipalKind::User,
                    "role" => PrincipalKind::Service,
                    _ => return Err(gone()),
                };
                let principal = self.principal_named(name).await?.ok_or_else(gone)?;
                if principal.kind != wanted {
                    return Err(gone());
                }
                principal
            }
            None => return Err(gone()),
        };
        let mut caller = Caller::admin(&self.account_id, region, operation);
        caller.access_key_id = String::new();
        caller.principal = Arc::new(principal);
        // Baton's own call, inside the server: no network was crossed.
        caller.secure_transport = true;
        Ok(caller)
    }

    pub(crate) async fn authorize_master_read(
        &self,
        configured_by: &str,
        secret_arn: &str,
        master_arn: &str,
    ) -> Result<(), String> {
        let region = master_arn.split(':').nth(3).unwrap_or_default();
        let region = if region.is_empty() {
            secret_arn.split(':').nth(3).unwrap_or_default()
        } else {
            region
        };
        let outcome = match self
            .acting_principal(configured_by, region, "GetSecretValue")
            .await
        {
            Ok(caller) => self.locate(&caller, master_arn).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Some(audit) = &self.audit {
            let (outcome_name, status) = match &outcome {
                Ok(()) => ("ok".to_owned(), 200),
                Err(e) => {
                    let (status, error_type, _) = e.wire();
                    (error_type.to_owned(), i64::from(status.as_u16()))
                }
            };
            let entry = AuditRecord {
                seq: 0,
                at: now_ms(),
                request_id: uuid::Uuid::new_v4().to_string(),
                principal: configured_by.to_owned(),
                access_key_id: String::new(),
                action: "secretsmanager:GetSecretValue".to_owned(),
                resource: master_arn.to_owned(),
                decision: if outcome.is_ok() { "allow" } else { "deny" }.to_owned(),
                outcome: outcome_name,
                status,
                source_ip: String::new(),
                reason: format!(
                    "the built-in database rotator of {secret_arn} reads its master secret with \
                     the rights of the principal that configured its rotation"
                ),
                prev_hash: Vec::new(),
                hash: Vec::new(),
                user_agent: "baton-engine".to_owned(),
                ..Default::default()
            };
            audit.record(entry, true).await.map_err(|e| {
                format!("the audit log could not record the read of the master secret: {e}")
            })?;
        }
        outcome.map_err(|e| {
            format!(
                "{configured_by}, who configured this rotation, may not read the master secret \
                 {master_arn}: {e}"
            )
        })
    }
}
