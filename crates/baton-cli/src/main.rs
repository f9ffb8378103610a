//! `baton`: the server, and the command line for administrators and developers. Every command
//! except `serve` talks to a server over the signed API; none reaches into the database.

mod admin;
mod backup;
mod connect;
mod events;
mod import;
mod key;
mod migrate;
mod output;
mod root_key;
mod root_key_admin;
mod rotation;
mod secret;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "baton",
    version,
    about = "Baton: a secrets manager whose rotations never break a request"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct AgentArgs {
    /// Baton's URL (default: endpoint in the config file, then AWS_ENDPOINT_URL).
    #[arg(long)]
    endpoint: Option<String>,
    /// The loopback port to serve on (default 2773, as AWS's agent).
    #[arg(long)]
    port: Option<u16>,
    /// A TOML file with AWS agent settings and Baton's (sinks); unknown keys are errors.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<serve::ServeArgs>),
    /// Run the local agent: AWS's Secrets Manager Agent protocol on loopback, kept fresh by a
    /// watch, reporting what it holds. Credentials from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY; the SSRF token from AWS_TOKEN (or `file://PATH`).
    Agent(AgentArgs),
    /// Create, read and manage secrets.
    Secret {
        #[command(flatten)]
        connect: connect::ConnectArgs,
        #[command(subcommand)]
        command: secret::SecretCommand,
    },
    /// Start, follow and control rotations.
    Rotation {
        #[command(flatten)]
        connect: connect::ConnectArgs,
        #[command(subcommand)]
        command: rotation::RotationCommand,
    },
    /// Read the event log.
    Events {
        #[command(flatten)]
        connect: connect::ConnectArgs,
        #[command(subcommand)]
        command: events::EventsCommand,
    },
    /// Create and use KMS keys: encrypt, decrypt, sign, verify, rotate, aliases, JWKS.
    Key {
        #[command(flatten)]
        connect: connect::ConnectArgs,
        #[command(subcommand)]
        command: key::KeyCommand,
    },
    /// Register and manage external rotators.
    Rotator {
        #[command(flatten)]
        connect: connect::ConnectArgs,
        #[command(subcommand)]
        command: rotation::RotatorCommand,
    },
    /// Administer the server: principals, their policies and access keys; backup and restore.
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// Move command rotators registered through the API into the rotators directory, once,
    /// after the operator reviewed them (they do not run until then).
    MigrateCommandRotators(migrate::MigrateArgs),
    /// Read and verify the audit log.
    Audit {
        #[command(flatten)]
        connect: connect::ConnectArgs,
        #[command(subcommand)]
        command: admin::AuditCommand,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Agent(args) => {
                let config = baton_agent::AgentConfig::load(
                    args.config.as_deref(),
                    args.endpoint,
                    args.port,
                )?;
                baton_agent::run(config).await
            }
            Command::Secret { connect, command } => {
                secret::run_secret(connect.client()?, connect.output, command).await
            }
            Command::Rotation { connect, command } => {
                rotation::run(connect.client()?, connect.output, command).await
            }
            Command::Events { connect, command } => {
                events::run(connect.client()?, connect.output, command).await
            }
            Command::Key { connect, command } => {
                key::run(connect.client()?, connect.output, command).await
            }
            Command::Rotator { connect, command } => {
                rotation::run_rotator(connect.client()?, connect.output, command).await
            }
            Command::Admin { command } => admin::dispatch(command).await,
            Command::MigrateCommandRotators(args) => migrate::run(args).await,
            Command::Audit { connect, command } => {
                admin::run_audit(connect.client()?, connect.output, command).await
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
