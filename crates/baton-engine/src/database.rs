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
//!
//! What the master may be used for is narrow, because whoever can write the secret's value
//! chooses the user names and the master's ARN:
//! - reading the master is authorized, at every use, against the principal that configured the
//!   rotation (`RotationConfig::configured_by`), and audited;
//! - the clone is created only if no role of its name exists, and only from a user whose
//!   credentials in the secret log in; its name is recorded (`RotationConfig::database_clone`);
//! - the master changes the password of the recorded clone and of the user it was cloned
//!   from, and of no other role: a secret naming any other user is refused.

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

    /// The master secret's current value, if the principal that configured the rotation may
    /// read it.
    async fn master(&self, secret: &SecretRecord, arn: &str) -> Result<DbSecret, String> {
        let access = self.master_access.as_ref().ok_or_else(|| {
            "this engine has no authorizer for master secrets; the rotation cannot use one"
                .to_owned()
        })?;
        let configured_by = secret.rotation.configured_by.as_deref().ok_or_else(|| {
            format!(
                "nobody is recorded as having configured this rotation, so nobody's right to read \
                 the master secret {arn} can be checked: configure rotation again with RotateSecret"
            )
        })?;
        access
            .authorize_master_read(configured_by, &secret.arn, arn)
            .await?;
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
        secret: &mut SecretRecord,
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
        secret: &mut SecretRecord,
        rotation: &Rotation,
        pending: &DbSecret,
    ) -> Result<StepResult, String> {
        let old = rotation
            .old_version_id
            .as_deref()
            .ok_or("the secret has no current version to rotate from")?;
        let current = self.db_secret(secret, old).await?;
        // Idempotent: an earlier attempt may have set the password already. The password is
        // this rotation's own random one, so a login with it proves Baton set it.
        if baton_dbrotate::check_login(pending, &pending.username, &pending.password)
            .await
            .is_ok()
        {
            if pending.masterarn.is_some() && secret.rotation.database_clone.is_none() {
                secret.rotation.database_clone = Some(pending.username.clone());
            }
            return Ok(StepResult::Done);
        }
        if let Some(arn) = &pending.masterarn {
            match secret.rotation.database_clone.clone() {
                Some(clone) => {
                    check_alternating_user(&clone, &pending.username)?;
                    let master = self.master(secret, arn).await?;
                    baton_dbrotate::set_password(&master, &pending.username, &pending.password)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                None => {
                    // The first rotation creates the clone of the current user, and only of a
                    // user whose credentials in the secret work: the secret's writer must
                    // already hold that user, or it could clone anyone's privileges.
                    baton_dbrotate::check_login(&current, &current.username, &current.password)
                        .await
                        .map_err(|e| {
                            format!(
                                "the current credentials of {:?} do not log in ({e}); Baton clones \
                                 only a user whose credentials the secret holds",
                                current.username
                            )
                        })?;
                    let master = self.master(secret, arn).await?;
                    let created = baton_dbrotate::ensure_clone(
                        &master,
                        &current.username,
                        &pending.username,
                        &pending.password,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                    if !created {
                        return Err(format!(
                            "a role named {:?} exists already and Baton did not create it for this \
                             secret; Baton never changes the password of a role it did not create. \
                             Rename or drop that role, or name another user in the secret",
                            pending.username
                        ));
                    }
                    secret.rotation.database_clone = Some(pending.username.clone());
                }
            }
            return Ok(StepResult::Done);
        }
        if pending.username != current.username {
            return Err(format!(
                "without a master secret Baton changes only the password of the secret's own \
                 user, {:?}, and the new version names {:?}",
                current.username, pending.username
            ));
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
        // Each candidate logs in as the user itself: never as anyone else.
        candidates.retain(|c| c.username == pending.username);
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
        secret: &mut SecretRecord,
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
        let clone = secret.rotation.database_clone.clone().ok_or_else(|| {
            format!(
                "Baton has no record of cloning a user for this secret, so it will not revoke {:?}",
                old.username
            )
        })?;
        check_alternating_user(&clone, &old.username)?;
        let master = self.master(secret, arn).await?;
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

/// Refuses a user that is neither the recorded clone nor the user it was cloned from.
fn check_alternating_user(clone: &str, user: &str) -> Result<(), String> {
    let original = baton_dbrotate::alternate_username(clone);
    if user == clone || user == original {
        return Ok(());
    }
    Err(format!(
        "the secret names the user {user:?}, but this secret's users are {original:?} and its \
         clone {clone:?}; Baton changes no other role's password"
    ))
}

#[cfg(test)]
mod tests {
    use super::check_alternating_user;

    #[test]
    fn the_master_acts_only_on_the_recorded_clone_and_its_original() {
        assert!(check_alternating_user("app_clone", "app_clone").is_ok());
        assert!(check_alternating_user("app_clone", "app").is_ok());
        let refused = check_alternating_user("app_clone", "dba").unwrap_err();
        assert!(
            refused.contains("\"dba\"") && refused.contains("app_clone"),
            "{refused}"
        );
        assert!(check_alternating_user("app_clone", "app_clone_clone").is_err());
    }
}
