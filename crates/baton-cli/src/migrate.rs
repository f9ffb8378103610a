//! `baton migrate-command-rotators`: the one-time move of command rotators that were registered
//! through the API (before commands became the operator's) into the rotators directory.
//!
//! Until an operator confirms one, the engine refuses to run it. Confirming writes
//! `<rotators-dir>/<name>.toml` (mode 0600) with the same command run by `/bin/sh -c`, and
//! removes the API record, so the command is from then on part of the server's configuration.
//! It opens the database directly, so the embedded store must not be in use by a server.

use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use baton_store::{PostgresStore, RotatorTarget, SqliteStore, Store};

/// The PATH a migrated command gets, since commands no longer inherit the server's variables.
const MIGRATED_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The embedded store's data directory (stop the server first).
    #[arg(long, default_value = "./baton-data", conflicts_with = "database_url")]
    data_dir: PathBuf,
    /// The PostgreSQL store instead.
    #[arg(long, env = "BATON_DATABASE_URL")]
    database_url: Option<String>,
    /// The server's --rotators-dir, where confirmed commands are written.
    #[arg(long)]
    rotators_dir: PathBuf,
    /// A command rotator you reviewed and want to keep (repeatable). Without any, the command
    /// lists what there is to review.
    #[arg(long)]
    confirm: Vec<String>,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let store: Box<dyn Store> = match &args.database_url {
        Some(url) => Box::new(
            PostgresStore::connect(url)
                .await
                .context("connecting to PostgreSQL")?,
        ),
        None => {
            let path = args.data_dir.join("baton.db");
            if !path.exists() {
                bail!(
                    "{} does not exist: give --data-dir or --database-url",
                    path.display()
                );
            }
            Box::new(SqliteStore::open(&path).with_context(|| {
                format!(
                    "opening {} (is a server still running on it?)",
                    path.display()
                )
            })?)
        }
    };
    let legacy: Vec<(String, String, i64)> = store
        .list_rotators()
        .await?
        .into_iter()
        .filter_map(|r| match r.target {
            RotatorTarget::Command(command) => Some((r.name, command, r.timeout_ms / 1000)),
            RotatorTarget::Webhook { .. } => None,
        })
        .collect();
    for name in &args.confirm {
        if !legacy.iter().any(|(n, _, _)| n == name) {
            bail!("there is no command rotator named {name:?} registered through the API");
        }
    }
    if args.confirm.is_empty() {
        if legacy.is_empty() {
            println!("no command rotators registered through the API: nothing to migrate");
            return Ok(());
        }
        println!("command rotators registered through the API (they do not run until confirmed):");
        for (name, command, _) in &legacy {
            println!("  {name}: {command}");
        }
        println!(
            "review each command, then confirm it with --confirm NAME; anything you do not \
             confirm can be removed with `baton rotator delete NAME`"
        );
        return Ok(());
    }
    std::fs::create_dir_all(&args.rotators_dir)
        .with_context(|| format!("creating {}", args.rotators_dir.display()))?;
    std::fs::set_permissions(&args.rotators_dir, std::fs::Permissions::from_mode(0o700))?;
    for (name, command, timeout) in legacy.iter().filter(|(n, _, _)| args.confirm.contains(n)) {
        let definition = toml::to_string(&toml::Table::from_iter([
            ("name".to_owned(), toml::Value::from(name.as_str())),
            (
                "command".to_owned(),
                toml::Value::from(vec!["/bin/sh", "-c", command.as_str()]),
            ),
            ("timeout_seconds".to_owned(), toml::Value::from(*timeout)),
            (
                "env".to_owned(),
                toml::Value::from(toml::Table::from_iter([(
                    "PATH".to_owned(),
                    toml::Value::from(MIGRATED_PATH),
                )])),
            ),
        ]))?;
        let path = args.rotators_dir.join(format!("{name}.toml"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        std::io::Write::write_all(&mut file, definition.as_bytes())?;
        file.sync_all()?;
        store.delete_rotator(name).await?;
        println!("confirmed {name}: {}", path.display());
    }
    Ok(())
}
