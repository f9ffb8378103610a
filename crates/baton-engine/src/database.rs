//! The database rotators' work on their target: setSecret, testSecret and retire for
//! `baton-postgres` and `baton-mysql`. createSecret is in `builtin.rs`; promotion is the
//! engine's label move.
//!
//! - Single user (no `masterarn`): setSecret changes the user's password in place, logged in
//!   with the current password (or the previous one, after an interrupted attempt). New
//!   connections with the old password fail from that moment: see the README.
//! - Alternating users (`masterarn` names the master secret): the new version names the other
//!   user. setSecret, as the master, creates `<user>_clone` with the original's privileges on
//!   the first rotation, and sets the other user's password. Retire waits while the old user
//!   has sessions (deferring, never failing), then revokes its password by setting one nobody
//!   knows. Past the gate's maximum wait it alerts, and ends the sessions only if the policy
//!   says to.

use baton_core::rotation::Rotation;
use baton_core::{AWSCURRENT, AWSPREVIOUS, SecretRecord, SecretValueKind, Timestamp};
use baton_crypto::{PasswordOptions, value_aad};
use baton_dbrotate::DbSecret;

use crate::Engine;

/// What a step of a built-in rotator came to.
#[derive(Debug)]
pub(crate) enum StepResult {
    Done,
    /// Not yet, for a reason that is not a failure.
    Deferred(String),
}

impl Engine {
    /// A version's value, parsed as a database secret.
    async fn db_secret(&self, secret: &SecretRecord, version_id: &str) -> Result<DbSecret, String> {
        let version = secret
            .version(version_id)
            .filter(|v| v.kind == SecretValueKind::String)
            .ok_or_else(|| format!("version {version_id} has no string value"))?;
        let data_key = crate::keywrap::data_key(&*self.store, &self.root_key, secret).await?;
        let plain = data_key
            .open(&version.sealed_value, &value_aad(&secret.id, version_id))
            .map_err(|e| e.to_string())?;
        DbSecret::parse(plain.expose()).map_err(|e| format!("version {version_id}: {e}"))
    }

    /// The master secret's current value.
    async fn master(&self, arn: &str) -> Result<DbSecret, String> {
        let master = self
            .store
            .find_secret_by_arn(arn)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the master secret {arn} does not exist"))?;
        let current = master
            .version_with_label(AWSCURRENT)
            .ok_or_else(|| format!("the master secret {arn} has no current version"))?
            .version_id
            .clone();
        self.db_secret(&master, &current)
            .await
            .map_err(|e| format!("the master secret: {e}"))
    }

    pub(crate) async fn database_step(
        &self,
        secret: &SecretRecord,
        rotation: &Rotation,
        step: baton_core::rotation::Step,
        now: Timestamp,
    ) -> Result<StepResult, String> {
        use baton_core::rotation::Step;
        let pending = self.db_secret(secret, &rotation.version_id).await?;
        match step {
            Step::Set => self.set_database(secret, rotation, &pending).await,
            Step::Test => {
                baton_dbrotate::check_login(&pending, &pending.username, &pending.password)
                    .await
                    .map(|()| StepResult::Done)
                    .map_err(|e| format!("the new credentials do not work: {e}"))
            }
            Step::Retire => self.retire_database(secret, rotation, &pending, now).await,
            Step::Create | Step::Promote => Ok(StepResult::Done),
        }
    }

    async fn set_database(
        &self,
        secret: &SecretRecord,
        rotation: &Rotation,
        pending: &DbSecret,
    ) -> Result<StepResult, String> {
        // Idempotent: an earlier attempt may have set the password already.
        if baton_dbrotate::check_login(pending, &pending.username, &pending.password)
            .await
            .is_ok()
        {
            return Ok(StepResult::Done);
        }
        let old = rotation
            .old_version_id
            .as_deref()
            .ok_or("the secret has no current version to rotate from")?;
        let current = self.db_secret(secret, old).await?;
        if let Some(arn) = &pending.masterarn {
            let master = self.master(arn).await?;
            let created = baton_dbrotate::ensure_clone(
                &master,
                &current.username,
                &pending.username,
                &pending.password,
            )
            .await
            .map_err(|e| e.to_string())?;
            if !created {
                baton_dbrotate::set_password(&master, &pending.username, &pending.password)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            return Ok(StepResult::Done);
        }
        // Single user: log in as the user itself, with the current password, or with the
        // previous one if an interrupted rotation left the database there.
        let mut candidates = vec![current];
        if let Some(previous) = secret
            .version_with_label(AWSPREVIOUS)
            .filter(|v| v.version_id != old && v.version_id != rotation.version_id)
        {
            candidates.push(self.db_secret(secret, &previous.version_id.clone()).await?);
        }
        let mut last_error = String::new();
        for admin in &candidates {
            match baton_dbrotate::set_password(admin, &pending.username, &pending.password).await {
                Ok(()) => return Ok(StepResult::Done),
                Err(e) => last_error = e.to_string(),
            }
        }
        Err(last_error)
    }

    async fn retire_database(
        &self,
        secret: &SecretRecord,
        rotation: &Rotation,
        pending: &DbSecret,
        now: Timestamp,
    ) -> Result<StepResult, String> {
        // Single user: the old password stopped working at setSecret.
        let Some(arn) = &pending.masterarn else {
            return Ok(StepResult::Done);
        };
        let Some(old) = rotation.old_version_id.as_deref() else {
            return Ok(StepResult::Done);
        };
        // The old version may be gone already if an earlier attempt finished the retire.
        let Ok(old) = self.db_secret(secret, old).await else {
            return Ok(StepResult::Done);
        };
        if old.username == pending.username {
            return Ok(StepResult::Done);
        }
        let master = self.master(arn).await?;
        let sessions = baton_dbrotate::active_sessions(&master, &old.username)
            .await
            .map_err(|e| e.to_string())?;
        if sessions > 0 {
            let waited = now - rotation.phase_started_at;
            let policy = &rotation.policy;
            if policy.kill_sessions_after_max_wait && waited >= policy.gate_wait_max_ms {
                let ended = baton_dbrotate::kill_sessions(&master, &old.username)
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::warn!(user = %old.username, ended, "ended the old user's sessions after the maximum wait");
            } else {
                return Ok(StepResult::Deferred(format!(
                    "the old user {:?} still has {sessions} open session(s)",
                    old.username
                )));
            }
        }
        // Revoke: a password nobody knows. The next rotation sets a known one again.
        let unknown = baton_crypto::random_password(&PasswordOptions {
            length: 48,
            exclude_characters: crate::builtin::DB_PASSWORD_EXCLUDED.to_owned(),
            ..PasswordOptions::default()
        })
        .map_err(|e| e.to_string())?;
        let unknown = std::str::from_utf8(unknown.expose()).map_err(|e| e.to_string())?;
        baton_dbrotate::set_password(&master, &old.username, unknown)
            .await
            .map_err(|e| format!("revoking the old user's password: {e}"))?;
        Ok(StepResult::Done)
    }
}
