//! `backup-bench`: backup and restore of 100,000 secrets × 3 versions.
//!
//! 1. Restore rate: a backup file decoded, verified and written into an empty SQLite store (and
//!    into an empty PostgreSQL database when `BATON_TEST_POSTGRES_URL` is set), in rows and
//!    secrets per second.
//! 2. Backup: `Store::snapshot` plus the file encoding (checksum and MAC), what
//!    `baton.CreateBackup` does, against SQLite's own `VACUUM INTO` of the same database in the
//!    same run: five rounds each, median and spread.
//!
//! The store is filled by restoring a synthetic snapshot: one template secret (two tags, three
//! versions of 96-byte sealed values, labels) copied under new ids and names.
//!
//! Run: `cargo run --release -p baton-bench --bin backup-bench [-- --secrets 100000]`

use std::time::Instant;

use baton_bench::{flag, median_and_spread};
use baton_core::{NewVersion, SecretValueKind};
use baton_crypto::RootKey;
use baton_store::snapshot::{Cell, Snapshot};
use baton_store::{PostgresStore, SqliteStore, Store, conformance};

const ROUNDS: usize = 5;

fn main() -> anyhow::Result<()> {
    let secrets = flag("--secrets", 100_000)? as usize;
    let rt = baton_bench::runtime("backup-bench")?;
    rt.block_on(run(secrets))
}

/// A snapshot of `n` secrets, each a copy of one template with 3 versions.
async fn synthetic(n: usize) -> anyhow::Result<Snapshot> {
    let dir = tempfile::tempdir()?;
    let template_store = SqliteStore::open(&dir.path().join("template.db"))?;
    let mut secret = conformance::sample_secret("benchtemplate");
    secret.wrapped_data_key = vec![7; 60];
    for (i, id) in ["v2", "v3"].iter().enumerate() {
        secret.add_version(
            NewVersion {
                version_id: (*id).into(),
                kind: SecretValueKind::String,
                sealed_value: vec![i as u8; 96],
                labels: None,
            },
            2_000 + i as i64,
        )?;
    }
    template_store.insert_secret(&secret).await?;
    let template = template_store.snapshot().await?;
    let id = secret.id.clone();
    let mut out = template.clone();
    for table in &mut out.tables {
        let rows = std::mem::take(&mut table.rows);
        for i in 0..n {
            let (new_id, new_name) = (format!("sec-{i:08}"), format!("benchtemplate{i:07}"));
            for row in &rows {
                table.rows.push(
                    row.iter()
                        .map(|cell| match cell {
                            Cell::Text(t) => Cell::Text(
                                t.replace(&id, &new_id).replace("benchtemplate", &new_name),
                            ),
                            other => other.clone(),
                        })
                        .collect(),
                );
            }
        }
    }
    Ok(out)
}

async fn run(n: usize) -> anyhow::Result<()> {
    println!("backup-bench: {n} secrets × 3 versions");
    let snapshot = synthetic(n).await?;
    let rows = snapshot.row_count();
    let (root_key, _) = RootKey::generate()?;
    let file = baton_app::backup::encode(&snapshot, &root_key, 0);
    println!(
        "  {rows} rows; backup file {:.1} MB",
        file.len() as f64 / 1e6
    );

    let dir = tempfile::tempdir()?;
    let db = dir.path().join("baton.db");
    let store = SqliteStore::open(&db)?;
    let started = Instant::now();
    baton_app::backup::restore(&store, &file, &root_key).await?;
    let restore_s = started.elapsed().as_secs_f64();
    println!(
        "restore into SQLite: {restore_s:.2} s = {:.0} rows/s, {:.0} secrets/s",
        rows as f64 / restore_s,
        n as f64 / restore_s
    );
    let wal = dir.path().join("baton.db-wal");
    let db_size = std::fs::metadata(&db)?.len() + std::fs::metadata(&wal).map_or(0, |m| m.len());
    println!("  database with its WAL {:.1} MB", db_size as f64 / 1e6);

    let mut backup_s = Vec::new();
    let mut vacuum_s = Vec::new();
    for round in 0..ROUNDS {
        let started = Instant::now();
        let snap = store.snapshot().await?;
        let bytes = baton_app::backup::encode(&snap, &root_key, 0);
        backup_s.push(started.elapsed().as_secs_f64());
        anyhow::ensure!(snap.row_count() == rows, "the backup holds every row");
        drop(bytes);

        let copy = dir.path().join(format!("vacuum-{round}.db"));
        let conn = rusqlite::Connection::open(&db)?;
        let started = Instant::now();
        conn.execute("VACUUM INTO ?1", [copy.to_string_lossy()])?;
        vacuum_s.push(started.elapsed().as_secs_f64());
        std::fs::remove_file(&copy)?;
    }
    let (b, b_lo, b_hi) = median_and_spread(backup_s.clone());
    let (v, v_lo, v_hi) = median_and_spread(vacuum_s.clone());
    let ratios: Vec<f64> = backup_s.iter().zip(&vacuum_s).map(|(b, v)| b / v).collect();
    let (r, r_lo, r_hi) = median_and_spread(ratios);
    println!("backup (snapshot + encode): median {b:.2} s (spread {b_lo:.2}–{b_hi:.2})");
    println!("VACUUM INTO, same database:  median {v:.2} s (spread {v_lo:.2}–{v_hi:.2})");
    println!("ratio backup / VACUUM INTO: median {r:.2} (spread {r_lo:.2}–{r_hi:.2})");

    if let Ok(url) = std::env::var("BATON_TEST_POSTGRES_URL") {
        let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let name = format!("baton_backup_bench_{}", std::process::id());
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        let (base, _) = url.rsplit_once('/').unwrap_or((&url, ""));
        let pg = PostgresStore::connect(&format!("{base}/{name}")).await?;
        let started = Instant::now();
        baton_app::backup::restore(&pg, &file, &root_key).await?;
        let s = started.elapsed().as_secs_f64();
        println!(
            "restore into PostgreSQL: {s:.2} s = {:.0} rows/s, {:.0} secrets/s",
            rows as f64 / s,
            n as f64 / s
        );
        let started = Instant::now();
        let snap = pg.snapshot().await?;
        let _ = baton_app::backup::encode(&snap, &root_key, 0);
        println!(
            "backup from PostgreSQL: {:.2} s",
            started.elapsed().as_secs_f64()
        );
        drop(pg);
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
    } else {
        println!("restore into PostgreSQL: SKIPPED (BATON_TEST_POSTGRES_URL is not set)");
    }
    Ok(())
}
