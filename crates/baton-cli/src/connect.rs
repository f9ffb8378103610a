//! Where the CLI connects and with which credentials: flags, then `BATON_ENDPOINT` and the
//! standard AWS environment variables, then the AWS shared credentials file.

use std::time::Duration;

use baton_client::{Client, ClientConfig, DEFAULT_ENDPOINT};
use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable tables and text.
    Table,
    /// JSON as the API returns it, for scripts.
    Json,
}

/// Where to connect and as whom, and how to print: what every client command takes.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

impl ConnectArgs {
    pub fn client(&self) -> anyhow::Result<Client> {
        self.server.client()
    }
}

/// Where to connect and as whom, for commands whose `--output` names a file.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Server URL.
    #[arg(long, global = true, env = "BATON_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Region (namespace) to act in.
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Profile in the AWS shared credentials file.
    #[arg(long, global = true)]
    pub profile: Option<String>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl ServerArgs {
    pub fn client(&self) -> anyhow::Result<Client> {
        let endpoint = self
            .endpoint
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let region = self
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_owned());
        signed_client(endpoint, region, self.profile.as_deref())
    }
}

/// A signing client for `endpoint` with the credentials of `profile` (or the environment).
pub fn signed_client(
    endpoint: String,
    region: String,
    profile: Option<&str>,
) -> anyhow::Result<Client> {
    let credentials = baton_client::credentials::resolve(profile).map_err(anyhow::Error::msg)?;
    let client = Client::new(ClientConfig {
        endpoint,
        region,
        access_key: credentials.access_key,
        timeout: Duration::from_secs(30),
    })?;
    // Temporary credentials (`baton admin session-token`) come with a session token.
    Ok(match credentials.session_token {
        Some(token) => client.with_session_token(token),
        None => client,
    })
}
