//! `baton admin backup` (asks the running server for a consistent snapshot) and
//! `baton admin restore` (writes a backup into an empty store, with the server stopped).

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use baton_app::backup::{self, BackupHeader};
use baton_client::Client;
use baton_crypto::RootKey;
use baton_store::{PostgresStore, SqliteStore, Store};

use crate::output::human_duration;

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Where to write the backup (mode 0600). Written to a temporary file first and renamed
    /// when complete, so an interrupted backup never leaves a partial file under this name.
    #[arg(long)]
    output: PathBuf,
    /// How long the server may take to read the snapshot.
    #[arg(long, default_value_t = 600)]
    timeout_seconds: u64,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup file.
    #[arg(long)]
    input: PathBuf,
    /// Restore into the embedded store of this (new or empty) data directory. Stop any server
    /// on it first.
    #[arg(long, default_value = "./baton-data", conflicts_with = "database_url")]
    data_dir: PathBuf,
    /// Restore into this (empty) PostgreSQL database instead; `sslmode` and `sslrootcert` as
    /// for `baton serve`.
    #[arg(long, env = "BATON_DATABASE_URL")]
    database_url: Option<String>,
    /// The root key of the server that took the backup. Default: `<data-dir>/root.key`. With
    /// the embedded store it is copied there when that file does not exist yet.
    #[arg(long)]
    root_key_file: Option<PathBuf>,
}

pub async fn backup(client: Client, args: BackupArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    eprintln!("asking {} for a snapshot…", client.endpoint());
    let file = client
        .call_raw(
            "baton.CreateBackup",
            &serde_json::json!({}),
            Duration::from_secs(args.timeout_seconds),
        )
        .await
        .context("taking the backup")?;
    // The server's own file: check it decodes before calling it a backup. The MAC needs the
    // root key, which the client does not hold; the checksum and structure are checked here.
    let header = peek_header(&file)?;
    write_private(&args.output, &file)?;
    println!(
        "backup written to {}: {} ({} bytes) in {}",
        args.output.display(),
        describe(&header),
        file.len(),
        human_duration(started.elapsed()),
    );
    print_chain_ends(&header, "");
    Ok(())
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let file =
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let key_path = args
        .root_key_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join("root.key"));
    let root_key = RootKey::load(&key_path).with_context(|| {
        format!(
            "loading the root key {} (restore needs the key of the server that took the backup: \
             --root-key-file)",
            key_path.display()
        )
    })?;
    // Everything is checked before the target is touched.
    let (header, _) = backup::decode(&file, &root_key)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.input.display()))?;
    println!("verified {}: {}", args.input.display(), describe(&header));
    let (store, target): (Box<dyn Store>, String) = match &args.database_url {
        Some(url) => (
            Box::new(
                PostgresStore::connect(url)
                    .await
                    .context("connecting to PostgreSQL")?,
            ),
            "PostgreSQL".to_owned(),
        ),
        None => {
            prepare_data_dir(&args.data_dir, args.root_key_file.as_deref())?;
            let path = args.data_dir.join("baton.db");
            let store = SqliteStore::open(&path).with_context(|| {
                format!(
                    "opening {} (is a server still running on it?)",
                    path.display()
                )
            })?;
            (Box::new(store), path.display().to_string())
        }
    };
    let restored = backup::restore(&*store, &file, &root_key)
        .await
        .map_err(|e| anyhow::anyhow!("restoring into {target}: {e}"))?;
    println!(
        "restored {} rows into {target} in {}",
        restored.rows,
        human_duration(started.elapsed())
    );
    print_chain_ends(
        &restored.header,
        " (baton audit verify checks every chain up to its end)",
    );
    Ok(())
}

/// Where each audit chain ends in a backup, one line each, to compare with `audit verify`.
fn print_chain_ends(header: &BackupHeader, note: &str) {
    use crate::output::chain_end_line;
    for end in &header.audit_chains {
        println!("{}{note}", chain_end_line(&end.chain, end.seq, &end.hash));
    }
    // A backup written before chains names the newest entry only.
    if let (true, Some(head)) = (header.audit_chains.is_empty(), &header.audit_head) {
        println!("{}{note}", chain_end_line("", head.seq, &head.hash));
    }
}

/// The header of a backup whose checksum holds (the MAC is the restore's to check).
fn peek_header(file: &[u8]) -> anyhow::Result<BackupHeader> {
    let header_len = file
        .get(12..16)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
        .context("the server's answer is not a backup file")?;
    if !file.starts_with(backup::MAGIC) || file.len() < 16 + header_len + 64 {
        bail!("the server's answer is not a backup file");
    }
    let (summed, checksum) = file.split_at(file.len() - 32);
    if baton_crypto::sha256(summed) != checksum {
        bail!("the backup arrived damaged (checksum mismatch); nothing was written");
    }
    serde_json::from_slice(&file[16..16 + header_len]).context("reading the backup's header")
}

fn describe(header: &BackupHeader) -> String {
    let taken = jiff::Timestamp::from_millisecond(header.created_at)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| header.created_at.to_string());
    let keys = header.rows("secrets");
    format!(
        "taken {taken}, schema {}, {keys} secrets and keys, {} versions, {} principals, {} \
         audit entries, {} rows in all",
        header.schema_version,
        header.rows("secret_versions"),
        header.rows("principals"),
        header.rows("audit_log"),
        header.tables.iter().map(|t| t.rows).sum::<u64>(),
    )
}

/// Writes `bytes` to `path` with mode 0600, through a temporary file renamed into place.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("partial");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Creates the data directory (0700) and puts the backup's root key in it when it has none,
/// so `baton serve --data-dir DIR` opens the restored store. A different key already there
/// is refused: the store would not open with it.
fn prepare_data_dir(dir: &Path, key_file: Option<&Path>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", dir.display()))?;
    let Some(given) = key_file else {
        return Ok(());
    };
    let in_dir = dir.join("root.key");
    let given_text =
        std::fs::read(given).with_context(|| format!("reading {}", given.display()))?;
    match std::fs::read(&in_dir) {
        Ok(existing) if existing == given_text => Ok(()),
        Ok(_) => bail!(
            "{} holds another root key than {}: the restored store opens only with the backup's \
             key; restore into a new data directory",
            in_dir.display(),
            given.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&in_dir)
                .with_context(|| format!("creating {}", in_dir.display()))?;
            f.write_all(&given_text)
                .and_then(|()| f.sync_all())
                .with_context(|| format!("writing {}", in_dir.display()))?;
            println!("copied the root key to {}", in_dir.display());
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", in_dir.display())),
    }
}
