//! Backup files: a store snapshot, as stored (values sealed), in a versioned format with a
//! checksum over the whole file and a MAC keyed from the root key.
//!
//! ```text
//! "BATONBK1" | format u32 | header length u32 | header (JSON) | tables | HMAC-SHA-256 | SHA-256
//! ```
//!
//! - the header names the schema version, the time, the row count of each table, the audit
//!   log's newest entry (seq and hash) and where each audit chain ends (position and hash), so
//!   `audit verify` on the restored store can be compared with it;
//! - each table: name, column names, row count, then each cell as a tag (0 null, 1 integer,
//!   2 text, 3 bytes) and its value, lengths and integers big-endian;
//! - the MAC (keyed by `root_key.mac_key("backup-file-v1")`) covers everything before it, and
//!   the SHA-256 covers everything before it, MAC included: a flipped bit or a cut file fails
//!   the checksum and is reported as damage, so a MAC that fails means another root key (or a
//!   forgery), never a bad disk.
//!
//! Decoding checks the checksum, then the MAC, then parses strictly: a restore never starts on
//! a file that is not exactly what a Baton wrote with this root key.

use baton_crypto::RootKey;
use baton_store::snapshot::{Cell, Snapshot, TableRows};
use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"BATONBK1";
pub const FORMAT: u32 = 1;
const DIGEST: usize = 32;
const MAC_PURPOSE: &str = "backup-file-v1";

/// What a backup file says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub format: u32,
    pub schema_version: i64,
    /// Milliseconds since the epoch, when the snapshot was read.
    pub created_at: i64,
    pub tables: Vec<TableCount>,
    /// The last audit entry in the backup (by seq), if any.
    pub audit_head: Option<AuditHead>,
    /// Where each audit chain ends: the shared chain first, then the node chains by name.
    /// Absent from backups written before chains.
    #[serde(default)]
    pub audit_chains: Vec<ChainEnd>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainEnd {
    /// Empty for the shared chain.
    pub chain: String,
    /// The chain's last position.
    pub seq: i64,
    /// Hex of the entry's chained hash there.
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCount {
    pub name: String,
    pub rows: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub seq: i64,
    /// Hex of the entry's chained hash.
    pub hash: String,
}

impl BackupHeader {
    pub fn rows(&self, table: &str) -> u64 {
        self.tables
            .iter()
            .find(|t| t.name == table)
            .map_or(0, |t| t.rows)
    }
}

/// Why a backup file cannot be used. Each names the problem; none holds file content.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("the file is not a Baton backup (it does not start with BATONBK1)")]
    NotABackup,
    #[error("the backup is in format {0}; this Baton reads format {FORMAT}")]
    Format(u32),
    #[error("the backup is damaged or truncated: its checksum does not match ({0} bytes)")]
    Damaged(usize),
    #[error(
        "the root key given cannot verify this backup: it was taken by a server with another \
         root key (pass that server's key with --root-key-file)"
    )]
    WrongKey,
    #[error("the backup is malformed: {0}")]
    Malformed(String),
}

/// The audit chain's last entry in a snapshot.
fn audit_head(snapshot: &Snapshot) -> Option<AuditHead> {
    let table = snapshot.table("audit_log")?;
    let seq_at = table.columns.iter().position(|c| c == "seq")?;
    let hash_at = table.columns.iter().position(|c| c == "hash")?;
    table
        .rows
        .iter()
        .filter_map(|row| match (&row[seq_at], &row[hash_at]) {
            (Cell::Int(seq), Cell::Blob(hash)) => Some((*seq, hash)),
            _ => None,
        })
        .max_by_key(|(seq, _)| *seq)
        .map(|(seq, hash)| AuditHead {
            seq,
            hash: hex::encode(hash),
        })
}

/// Each audit chain's last entry in a snapshot: the shared chain first, then by name. A
/// snapshot from before chains (no `chain` column) has the shared chain alone, by `seq`.
fn audit_chains(snapshot: &Snapshot) -> Vec<ChainEnd> {
    let Some(table) = snapshot.table("audit_log") else {
        return Vec::new();
    };
    let column = |name: &str| table.columns.iter().position(|c| c == name);
    let (Some(hash_at), Some(seq_at)) = (
        column("hash"),
        column("chain_seq").or_else(|| column("seq")),
    ) else {
        return Vec::new();
    };
    let chain_at = column("chain");
    let mut ends: std::collections::BTreeMap<&str, (i64, &[u8])> = Default::default();
    for row in &table.rows {
        let chain = match chain_at.map(|at| &row[at]) {
            Some(Cell::Text(chain)) => chain.as_str(),
            _ => "",
        };
        if let (Cell::Int(seq), Cell::Blob(hash)) = (&row[seq_at], &row[hash_at]) {
            let end = ends.entry(chain).or_insert((*seq, hash));
            if *seq > end.0 {
                *end = (*seq, hash);
            }
        }
    }
    ends.into_iter()
        .map(|(chain, (seq, hash))| ChainEnd {
            chain: chain.to_owned(),
            seq,
            hash: hex::encode(hash),
        })
        .collect()
}

/// Writes a snapshot as a backup file.
pub fn encode(snapshot: &Snapshot, root_key: &RootKey, created_at: i64) -> Vec<u8> {
    let header = BackupHeader {
        format: FORMAT,
        schema_version: snapshot.schema_version,
        created_at,
        tables: snapshot
            .tables
            .iter()
            .map(|t| TableCount {
                name: t.name.clone(),
                rows: t.rows.len() as u64,
            })
            .collect(),
        audit_head: audit_head(snapshot),
        audit_chains: audit_chains(snapshot),
    };
    let header = serde_json::to_vec(&header).expect("the header serializes");
    let mut out = Vec::with_capacity(1 << 16);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_be_bytes());
    out.extend_from_slice(&len32(header.len()).to_be_bytes());
    out.extend_from_slice(&header);
    for table in &snapshot.tables {
        put_short(&mut out, table.name.as_bytes());
        out.extend_from_slice(&(table.columns.len() as u16).to_be_bytes());
        for c in &table.columns {
            put_short(&mut out, c.as_bytes());
        }
        out.extend_from_slice(&(table.rows.len() as u64).to_be_bytes());
        for cell in table.rows.iter().flatten() {
            match cell {
                Cell::Null => out.push(0),
                Cell::Int(n) => {
                    out.push(1);
                    out.extend_from_slice(&n.to_be_bytes());
                }
                Cell::Text(t) => {
                    out.push(2);
                    put_long(&mut out, t.as_bytes());
                }
                Cell::Blob(b) => {
                    out.push(3);
                    put_long(&mut out, b);
                }
            }
        }
    }
    let mac = root_key.mac_key(MAC_PURPOSE).mac(&[&out]);
    out.extend_from_slice(&mac);
    let checksum = baton_crypto::sha256(&out);
    out.extend_from_slice(&checksum);
    out
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).expect("a backup field is under 4 GiB")
}

fn put_short(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put_long(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&len32(bytes.len()).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Reads a backup file, after its checksum and MAC verify.
pub fn decode(file: &[u8], root_key: &RootKey) -> Result<(BackupHeader, Snapshot), BackupError> {
    let content = verify(file, root_key)?;
    let mut r = Reader {
        bytes: content,
        at: MAGIC.len() + 4,
    };
    let header_len = r.u32()? as usize;
    let header: BackupHeader = serde_json::from_slice(r.take(header_len)?)
        .map_err(|e| BackupError::Malformed(format!("header: {e}")))?;
    let mut tables = Vec::with_capacity(header.tables.len());
    for expected in &header.tables {
        let name = r.short_text()?;
        if name != expected.name {
            return Err(BackupError::Malformed(format!(
                "table {name:?} where the header names {:?}",
                expected.name
            )));
        }
        let width = r.u16()? as usize;
        let columns = (0..width)
            .map(|_| r.short_text())
            .collect::<Result<Vec<_>, _>>()?;
        let count = r.u64()?;
        if count != expected.rows {
            return Err(BackupError::Malformed(format!(
                "table {name} holds {count} rows where the header says {}",
                expected.rows
            )));
        }
        let mut rows = Vec::with_capacity(count.min(1 << 20) as usize);
        for _ in 0..count {
            let row = (0..width)
                .map(|_| r.cell())
                .collect::<Result<Vec<_>, _>>()?;
            rows.push(row);
        }
        tables.push(TableRows {
            name,
            columns,
            rows,
        });
    }
    if r.at != r.bytes.len() {
        return Err(BackupError::Malformed(format!(
            "{} bytes follow the last table",
            r.bytes.len() - r.at
        )));
    }
    let snapshot = Snapshot {
        schema_version: header.schema_version,
        tables,
    };
    Ok((header, snapshot))
}

/// Checks the magic, the checksum, the format and the MAC; returns the content they cover
/// (everything before the MAC).
pub fn verify<'a>(file: &'a [u8], root_key: &RootKey) -> Result<&'a [u8], BackupError> {
    if file.len() < MAGIC.len() || &file[..MAGIC.len()] != MAGIC {
        return Err(BackupError::NotABackup);
    }
    if file.len() < MAGIC.len() + 8 + 2 * DIGEST {
        return Err(BackupError::Damaged(file.len()));
    }
    let (summed, checksum) = file.split_at(file.len() - DIGEST);
    if baton_crypto::sha256(summed) != checksum {
        return Err(BackupError::Damaged(file.len()));
    }
    let format = u32::from_be_bytes(file[8..12].try_into().expect("4 bytes"));
    if format != FORMAT {
        return Err(BackupError::Format(format));
    }
    let (content, mac) = summed.split_at(summed.len() - DIGEST);
    // Any key of the ring may have made it: the primary of the time the backup was taken.
    let made_by_a_key_of_the_ring = root_key
        .mac_keys(MAC_PURPOSE)
        .iter()
        .any(|(_, key)| baton_crypto::constant_time_eq(&key.mac(&[content]), mac));
    if !made_by_a_key_of_the_ring {
        return Err(BackupError::WrongKey);
    }
    Ok(content)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BackupError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| {
                BackupError::Malformed(format!("a field runs past the end at {}", self.at))
            })?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u16(&mut self) -> Result<u16, BackupError> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32, BackupError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, BackupError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn text(bytes: &[u8]) -> Result<String, BackupError> {
        String::from_utf8(bytes.to_vec())
            .map_err(|_| BackupError::Malformed("a text cell is not UTF-8".into()))
    }

    fn short_text(&mut self) -> Result<String, BackupError> {
        let n = self.u16()? as usize;
        Self::text(self.take(n)?)
    }

    fn cell(&mut self) -> Result<Cell, BackupError> {
        Ok(match self.take(1)?[0] {
            0 => Cell::Null,
            1 => Cell::Int(i64::from_be_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            )),
            2 => {
                let n = self.u32()? as usize;
                Cell::Text(Self::text(self.take(n)?)?)
            }
            3 => {
                let n = self.u32()? as usize;
                Cell::Blob(self.take(n)?.to_vec())
            }
            tag => return Err(BackupError::Malformed(format!("unknown cell tag {tag}"))),
        })
    }
}

/// What a restore wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub header: BackupHeader,
    pub rows: usize,
}

/// Why a restore wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Store(#[from] baton_store::StoreError),
}

/// Verifies a backup file and writes it into an empty store: all or nothing.
pub async fn restore(
    store: &dyn baton_store::Store,
    file: &[u8],
    root_key: &RootKey,
) -> Result<Restored, RestoreError> {
    let (header, snapshot) = decode(file, root_key)?;
    let rows = snapshot.row_count();
    store.restore_snapshot(snapshot).await?;
    Ok(Restored { header, rows })
}

impl crate::Baton {
    /// `baton.CreateBackup`: the whole store, read in one transaction while requests go on,
    /// as a backup file. The answer's body is the file itself.
    pub async fn create_backup(&self) -> Result<Vec<u8>, crate::ApiError> {
        let started = std::time::Instant::now();
        let snapshot = self.store.snapshot().await?;
        let file = encode(&snapshot, &self.root_key, crate::state::now_ms());
        tracing::info!(
            rows = snapshot.row_count(),
            bytes = file.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "backup taken"
        );
        metrics::counter!("baton_backups_total").increment(1);
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            schema_version: 15,
            tables: vec![
                TableRows {
                    name: "secrets".into(),
                    columns: vec!["id".into(), "n".into(), "b".into(), "x".into()],
                    rows: vec![
                        vec![
                            Cell::Text("s1".into()),
                            Cell::Int(-5),
                            Cell::Blob(vec![0, 1, 255]),
                            Cell::Null,
                        ],
                        vec![
                            Cell::Text("ü".into()),
                            Cell::Int(i64::MAX),
                            Cell::Blob(vec![]),
                            Cell::Text(String::new()),
                        ],
                    ],
                },
                TableRows {
                    name: "audit_log".into(),
                    columns: vec!["seq".into(), "hash".into()],
                    rows: vec![
                        vec![Cell::Int(1), Cell::Blob(vec![1; 32])],
                        vec![Cell::Int(2), Cell::Blob(vec![2; 32])],
                    ],
                },
            ],
        }
    }

    fn key() -> RootKey {
        RootKey::generate().unwrap().0
    }

    #[test]
    fn a_backup_decodes_to_what_was_encoded_and_names_its_audit_head() {
        let k = key();
        let file = encode(&sample(), &k, 1_700_000_000_000);
        let (header, snapshot) = decode(&file, &k).unwrap();
        assert_eq!(snapshot, sample());
        assert_eq!(header.rows("secrets"), 2);
        assert_eq!(
            header.audit_head,
            Some(AuditHead {
                seq: 2,
                hash: hex::encode([2u8; 32])
            })
        );
    }

    #[test]
    fn a_backup_names_where_each_audit_chain_ends() {
        let k = key();
        let end = |chain: &str, seq: i64, byte: u8| ChainEnd {
            chain: chain.into(),
            seq,
            hash: hex::encode([byte; 32]),
        };
        // Before chains: the shared chain alone, by seq.
        let (header, _) = decode(&encode(&sample(), &k, 1), &k).unwrap();
        assert_eq!(header.audit_chains, [end("", 2, 2)]);
        // With chains: each chain's highest position, whatever the seq order of the rows.
        let mut chained = sample();
        let log = &mut chained.tables[1];
        log.columns = ["seq", "hash", "chain", "chain_seq"]
            .map(String::from)
            .into();
        let row = |seq: i64, byte: u8, chain: &str, at: i64| {
            vec![
                Cell::Int(seq),
                Cell::Blob(vec![byte; 32]),
                Cell::Text(chain.into()),
                Cell::Int(at),
            ]
        };
        log.rows = vec![
            row(1, 1, "", 1),
            row(2, 2, "node-b", 1),
            row(3, 3, "", 2),
            row(5, 5, "node-a", 1),
            row(4, 4, "node-b", 2),
        ];
        let (header, _) = decode(&encode(&chained, &k, 1), &k).unwrap();
        assert_eq!(
            header.audit_chains,
            [end("", 2, 3), end("node-a", 1, 5), end("node-b", 2, 4)]
        );
        assert_eq!(header.audit_head.map(|h| h.seq), Some(5));
        // A header written before the field existed still reads.
        let old =
            r#"{"format":1,"schema_version":15,"created_at":1,"tables":[],"audit_head":null}"#;
        let header: BackupHeader = serde_json::from_str(old).unwrap();
        assert!(header.audit_chains.is_empty());
    }

    #[test]
    fn every_flipped_byte_and_every_cut_is_refused_as_damage_and_another_key_as_such() {
        let k = key();
        let file = encode(&sample(), &k, 1);
        for at in MAGIC.len()..file.len() {
            let mut bad = file.clone();
            bad[at] ^= 0x01;
            let err = decode(&bad, &k).unwrap_err();
            assert!(matches!(err, BackupError::Damaged(_)), "byte {at}: {err}");
        }
        for len in [0, 5, MAGIC.len(), 40, file.len() / 2, file.len() - 1] {
            let err = decode(&file[..len], &k).unwrap_err();
            assert!(
                matches!(err, BackupError::Damaged(_) | BackupError::NotABackup),
                "cut at {len}: {err}"
            );
        }
        assert!(matches!(decode(&file, &key()), Err(BackupError::WrongKey)));
        assert!(matches!(
            decode(b"PK\x03\x04 not a backup", &k),
            Err(BackupError::NotABackup)
        ));
    }
}
