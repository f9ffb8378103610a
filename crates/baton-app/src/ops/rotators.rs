//! Rotators: the webhook rotators stored in the database and the operator's command
//! rotators, and the checks on a webhook's URL.

use super::*;

/// The longest step a rotator may take, as a Lambda function's maximum timeout.
pub(crate) const ROTATOR_TIMEOUT_MAX_SECONDS: i64 = 900;

/// A webhook's step timeout when the request names none.
pub(crate) const WEBHOOK_TIMEOUT_DEFAULT_SECONDS: i64 = 30;

pub(crate) fn wire_rotator(r: baton_store::RotatorRecord) -> p::Rotator {
    let (command, webhook_url) = match r.target {
        baton_store::RotatorTarget::Command(command) => (Some(command), None),
        baton_store::RotatorTarget::Webhook { url, .. } => (None, Some(url)),
    };
    p::Rotator {
        name: Some(r.name),
        // A command registered through the API runs only once the operator confirms it.
        runnable: Some(command.is_none()),
        command,
        webhook_url,
        timeout_seconds: Some(r.timeout_ms / 1000),
        signing_secret: None,
        create_date: Some(seconds(r.created_at)),
        source: Some("api".to_owned()),
        policy_document: r.execution_policy,
    }
}

/// A webhook rotator receives temporary credentials, so its URL must be HTTPS, or plain HTTP
/// only to this machine's loopback, and must not carry credentials of its own.
pub(crate) fn check_webhook_url(url: &str) -> Result<(), ApiError> {
    let invalid = |why: &str| ApiError::InvalidParameter(format!("Invalid WebhookUrl: {why}."));
    if url.len() > 2048 {
        return Err(invalid("it is longer than 2048 characters"));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|_| invalid("it is not an absolute http(s) URL"))?;
    let host = uri
        .host()
        .ok_or_else(|| invalid("it is not an absolute http(s) URL"))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(invalid("it must not contain user information"));
    }
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") => {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = bare == "localhost"
                || bare
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(invalid(
                    "plain http is allowed only to a loopback address; use https, because the \
                     rotator is sent temporary credentials",
                ))
            }
        }
        _ => Err(invalid("it is not an absolute http(s) URL")),
    }
}

impl Baton {
    /// Registers a webhook rotator: a URL that receives AWS's rotation event in a signed POST.
    /// Commands are refused: they run with the server's privileges, so only the operator
    /// defines them, in the server's configuration.
    ///
    /// A `PolicyDocument` is the rotator's execution policy. Giving a rotator one needs
    /// `baton:PassRotatorPolicy` as well, as `iam:PassRole` guards a Lambda's role: whoever
    /// can point a secret's rotation at the rotator hands its steps that policy.
    pub async fn create_rotator(
        &self,
        caller: &Caller,
        req: p::Rotator,
    ) -> Result<p::Rotator, ApiError> {
        let name = required(&req.name, "name")?;
        baton_engine::commands::check_name(name).map_err(ApiError::InvalidParameter)?;
        if let Some(document) = &req.policy_document {
            crate::principals::checked_identity_policy(document)?;
            self.authorize(
                caller,
                crate::authz::Target::named("baton:PassRotatorPolicy", "*"),
            )?;
        }
        let timeout_seconds = req.timeout_seconds;
        if let Some(t) = timeout_seconds
            && !(1..=ROTATOR_TIMEOUT_MAX_SECONDS).contains(&t)
        {
            return Err(ApiError::InvalidParameter(format!(
                "TimeoutSeconds must be between 1 and {ROTATOR_TIMEOUT_MAX_SECONDS}; got {t}."
            )));
        }
        let url = match (&req.command, &req.webhook_url) {
            (None, Some(url)) => url,
            (Some(_), None) => {
                return Err(ApiError::InvalidParameter(
                    "Command rotators cannot be created through the API: a command runs with the \
                     server's privileges, so the operator defines it in the server's \
                     configuration ([[rotator]] in the config file, or a file in \
                     --rotators-dir). Webhook rotators can be created here."
                        .to_owned(),
                ));
            }
            _ => {
                return Err(ApiError::InvalidParameter(
                    "Give exactly one of Command and WebhookUrl.".to_owned(),
                ));
            }
        };
        if self.is_command_rotator(name)? {
            return Err(ApiError::ResourceExists(format!(
                "A rotator named {name} already exists (a command in the server's \
                 configuration)."
            )));
        }
        self.check_webhook_destination(url).await?;
        let secret = baton_crypto::webhook::new_signing_secret()?;
        let sealed = self
            .root_key
            .seal(secret.expose(), &baton_crypto::signing_secret_aad(name))?;
        let record = baton_store::RotatorRecord {
            name: name.to_owned(),
            target: baton_store::RotatorTarget::Webhook {
                url: url.clone(),
                sealed_signing_secret: sealed,
            },
            timeout_ms: timeout_seconds.unwrap_or(WEBHOOK_TIMEOUT_DEFAULT_SECONDS) * 1000,
            created_at: now_ms(),
            execution_policy: req.policy_document.clone(),
        };
        match self.store.insert_rotator(&record).await {
            Ok(()) => {}
            Err(StoreError::NameTaken) => {
                return Err(ApiError::ResourceExists(format!(
                    "A rotator named {name} already exists."
                )));
            }
            Err(e) => return Err(e.into()),
        }
        let mut wire = wire_rotator(record);
        wire.signing_secret = Some(String::from_utf8_lossy(secret.expose()).into_owned());
        Ok(wire)
    }

    /// Whether `name` is one of the operator's command rotators.
    pub(crate) fn is_command_rotator(&self, name: &str) -> Result<bool, ApiError> {
        Ok(self
            .command_rotators
            .find(name)
            .map_err(ApiError::Internal)?
            .is_some())
    }

    /// The operator's commands, then the webhooks (and commands awaiting the operator's
    /// confirmation) registered through the API.
    pub async fn list_rotators(&self) -> Result<p::ListRotatorsResponse, ApiError> {
        let mut rotators: Vec<p::Rotator> = self
            .command_rotators
            .list()
            .map_err(ApiError::Internal)?
            .into_iter()
            .map(|c| p::Rotator {
                timeout_seconds: Some(c.timeout_seconds() as i64),
                command: Some(c.command.join(" ")),
                name: Some(c.name),
                webhook_url: None,
                signing_secret: None,
                create_date: None,
                source: Some("configuration".to_owned()),
                runnable: Some(true),
                policy_document: c.policy,
            })
            .collect();
        rotators.extend(
            self.store
                .list_rotators()
                .await?
                .into_iter()
                .map(wire_rotator),
        );
        Ok(p::ListRotatorsResponse {
            rotators: Some(rotators),
        })
    }

    pub async fn delete_rotator(&self, req: p::RotatorNameRequest) -> Result<p::Empty, ApiError> {
        let name = required(&req.name, "name")?;
        if self.is_command_rotator(name)? {
            return Err(ApiError::InvalidRequest(format!(
                "The rotator {name} is a command in the server's configuration; the operator \
                 removes it there."
            )));
        }
        if !self.store.delete_rotator(name).await? {
            return Err(ApiError::ResourceNotFound(format!(
                "Baton has no rotator named {name}."
            )));
        }
        Ok(p::Empty {})
    }

    /// A webhook's URL is well formed and leads to an address this server may connect to.
    pub(crate) async fn check_webhook_destination(&self, url: &str) -> Result<(), ApiError> {
        check_webhook_url(url)?;
        baton_engine::outbound::check_url_resolves(url, self.allow_private_webhooks)
            .await
            .map_err(|why| ApiError::InvalidParameter(format!("Invalid WebhookUrl: {why}.")))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn webhook_urls_must_be_https_or_loopback_http() {
        for ok in [
            "https://rotator.example/rotate",
            "https://10.0.0.5:8443/x?y=1",
            "http://127.0.0.1:9000/rotate",
            "http://localhost/rotate",
            "http://[::1]:8080/",
        ] {
            assert!(super::check_webhook_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.5/rotate",
            "http://rotator.example/",
            "https://user:pw@rotator.example/",
            "ftp://rotator.example/",
            "/relative",
            "not a url",
        ] {
            assert!(super::check_webhook_url(bad).is_err(), "{bad}");
        }
    }
}
