//! Database credential rotation: the operations the `baton-postgres` and `baton-mysql` rotators
//! perform on their target, for PostgreSQL and MySQL/MariaDB.
//!
//! The secret's value has the JSON shape AWS's rotation functions use: `engine`, `host`,
//! `port`, `username`, `password`, `dbname`, and for alternating users `masterarn`. Baton reads
//! two more optional keys: `sslmode` (libpq's `disable`, `prefer`, `require`, `verify-ca`,
//! `verify-full`; `verify-full` by default for every host but loopback, where it is `disable`)
//! and `sslrootcert`, a PEM file of roots on the Baton server (the system's roots otherwise).
//!
//! Safety against hostile names and passwords: nothing is quoted by string concatenation.
//! PostgreSQL quotes with its own `format('%I', …)` and `format('%L', …)` on bound parameters;
//! MySQL/MariaDB with `QUOTE()` on bound parameters, after the session is put in the default
//! backslash-escaping mode so the quoting matches the parser.

use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

mod mysql;
mod postgres;

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one operation (a statement or a few) may take.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a database operation failed. Messages name the host, user and statement kind, never a
/// password.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("the secret is not a database secret: {0}")]
    Shape(String),
    #[error("could not connect to {engine} at {host}:{port} as {user:?}: {reason}")]
    Connect {
        engine: &'static str,
        host: String,
        port: u16,
        user: String,
        reason: String,
    },
    #[error("{what} failed: {reason}")]
    Statement { what: &'static str, reason: String },
    #[error("{0} timed out")]
    Timeout(&'static str),
}

/// Which database server a secret is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mysql,
}

impl Engine {
    /// From the secret's `engine` field, as AWS names engines.
    pub fn from_field(engine: &str) -> Option<Self> {
        match engine {
            "postgres" | "postgresql" | "aurora-postgresql" => Some(Engine::Postgres),
            "mysql" | "mariadb" | "aurora-mysql" | "aurora" => Some(Engine::Mysql),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Engine::Postgres => 5432,
            Engine::Mysql => 3306,
        }
    }
}

pub use baton_dbtls::{DbTls, SslMode};

/// The fields of a database secret that rotation needs. Other fields are kept untouched by
/// the rotator, which edits the JSON object itself.
#[derive(Clone, Deserialize)]
pub struct DbSecret {
    pub engine: String,
    pub host: String,
    #[serde(default)]
    pub port: Option<serde_json::Value>,
    pub username: String,
    pub password: Zeroizing<String>,
    #[serde(default)]
    pub dbname: Option<String>,
    #[serde(default)]
    pub masterarn: Option<String>,
    #[serde(default)]
    pub sslmode: Option<String>,
    /// A PEM file of root certificates on the Baton server, for the verifying modes.
    #[serde(default)]
    pub sslrootcert: Option<String>,
}

impl std::fmt::Debug for DbSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbSecret")
            .field("engine", &self.engine)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("dbname", &self.dbname)
            .field("masterarn", &self.masterarn)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .finish()
    }
}

impl DbSecret {
    pub fn parse(json: &[u8]) -> Result<Self, DbError> {
        let secret: DbSecret = serde_json::from_slice(json).map_err(|e| {
            // serde_json's message names a field or a position, never the value.
            DbError::Shape(format!(
                "expected JSON with engine, host, username and password: {e}"
            ))
        })?;
        secret.engine_kind()?;
        secret.port()?;
        secret.tls()?;
        if secret.username.is_empty() {
            return Err(DbError::Shape("username is empty".into()));
        }
        Ok(secret)
    }

    pub fn engine_kind(&self) -> Result<Engine, DbError> {
        Engine::from_field(&self.engine).ok_or_else(|| {
            DbError::Shape(format!(
                "engine {:?} is not one Baton rotates: use postgres or mysql (mariadb)",
                self.engine
            ))
        })
    }

    /// The port, as a number or a string of digits (both occur in AWS secrets).
    pub fn port(&self) -> Result<u16, DbError> {
        let default = self.engine_kind()?.default_port();
        match &self.port {
            None | Some(serde_json::Value::Null) => Ok(default),
            Some(serde_json::Value::Number(n)) => n
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| DbError::Shape(format!("port {n} is not a TCP port"))),
            Some(serde_json::Value::String(s)) => s
                .parse()
                .map_err(|_| DbError::Shape(format!("port {s:?} is not a TCP port"))),
            Some(other) => Err(DbError::Shape(format!("port {other} is not a TCP port"))),
        }
    }

    /// The TLS settings: `sslmode` (libpq's five modes) and `sslrootcert`. Without `sslmode`,
    /// `verify-full` for every host but loopback, where it is `disable`.
    pub fn tls(&self) -> Result<DbTls, DbError> {
        let mode = match self.sslmode.as_deref() {
            Some(name) => SslMode::parse(name).map_err(|e| DbError::Shape(e.to_string()))?,
            None if is_loopback(&self.host) => SslMode::Disable,
            None => SslMode::VerifyFull,
        };
        let root = self.sslrootcert.as_deref().map(std::path::PathBuf::from);
        if let Some(path) = &root {
            baton_dbtls::check_root_cert(path).map_err(|e| DbError::Shape(e.to_string()))?;
        }
        Ok(DbTls::new(mode, root))
    }

    pub fn ssl_mode(&self) -> Result<SslMode, DbError> {
        Ok(self.tls()?.mode)
    }

    fn connect_error(&self, user: &str, reason: impl std::fmt::Display) -> DbError {
        DbError::Connect {
            engine: self.engine_kind().map(Engine::name).unwrap_or("database"),
            host: self.host.clone(),
            port: self.port().unwrap_or_default(),
            user: user.to_owned(),
            reason: reason.to_string(),
        }
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The user that takes turns with `username`: `<user>_clone`, or back from it.
pub fn alternate_username(username: &str) -> String {
    match username.strip_suffix("_clone") {
        Some(base) if !base.is_empty() => base.to_owned(),
        _ => format!("{username}_clone"),
    }
}

/// Opens a connection with `secret`'s host and the given credentials, runs `SELECT 1`, and
/// closes it: the testSecret check, and how the single-user strategy finds which password works.
pub async fn check_login(secret: &DbSecret, user: &str, password: &str) -> Result<(), DbError> {
    match secret.engine_kind()? {
        Engine::Postgres => postgres::check_login(secret, user, password).await,
        Engine::Mysql => mysql::check_login(secret, user, password).await,
    }
}

/// As `admin` (the user itself for single-user rotation, the master for alternating users),
/// sets `user`'s password.
pub async fn set_password(admin: &DbSecret, user: &str, password: &str) -> Result<(), DbError> {
    match admin.engine_kind()? {
        Engine::Postgres => postgres::set_password(admin, user, password).await,
        Engine::Mysql => mysql::set_password(admin, user, password).await,
    }
}

/// As `master`, creates `clone` with `password` and the privileges of `original`, unless it
/// exists. Returns whether it was created.
pub async fn ensure_clone(
    master: &DbSecret,
    original: &str,
    clone: &str,
    password: &str,
) -> Result<bool, DbError> {
    match master.engine_kind()? {
        Engine::Postgres => postgres::ensure_clone(master, original, clone, password).await,
        Engine::Mysql => mysql::ensure_clone(master, original, clone, password).await,
    }
}

/// As `master`, how many sessions `user` has open.
pub async fn active_sessions(master: &DbSecret, user: &str) -> Result<u64, DbError> {
    match master.engine_kind()? {
        Engine::Postgres => postgres::active_sessions(master, user).await,
        Engine::Mysql => mysql::active_sessions(master, user).await,
    }
}

/// As `master`, ends every session of `user`; returns how many.
pub async fn kill_sessions(master: &DbSecret, user: &str) -> Result<u64, DbError> {
    match master.engine_kind()? {
        Engine::Postgres => postgres::kill_sessions(master, user).await,
        Engine::Mysql => mysql::kill_sessions(master, user).await,
    }
}

async fn within<T>(
    what: &'static str,
    f: impl std::future::Future<Output = Result<T, DbError>>,
) -> Result<T, DbError> {
    tokio::time::timeout(OPERATION_TIMEOUT, f)
        .await
        .map_err(|_| DbError::Timeout(what))?
}

/// A rustls configuration that checks the server's certificate against the system's roots.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_parse_in_aws_shape_with_safe_defaults() {
        let s = DbSecret::parse(
            br#"{"engine":"postgres","host":"db.internal","username":"app","password":"p","dbname":"shop","port":"6432"}"#,
        )
        .unwrap();
        assert_eq!(s.engine_kind().unwrap(), Engine::Postgres);
        assert_eq!(s.port().unwrap(), 6432);
        assert_eq!(
            s.ssl_mode().unwrap(),
            SslMode::VerifyFull,
            "TLS by default off loopback"
        );
        let s = DbSecret::parse(
            br#"{"engine":"mariadb","host":"127.0.0.1","username":"app","password":"p"}"#,
        )
        .unwrap();
        assert_eq!(
            (s.engine_kind().unwrap(), s.port().unwrap()),
            (Engine::Mysql, 3306)
        );
        assert_eq!(s.ssl_mode().unwrap(), SslMode::Disable);
        assert!(
            !format!("{s:?}").contains("\"p\""),
            "Debug hides the password"
        );
        for bad in [
            &br#"{"engine":"oracle","host":"h","username":"u","password":"p"}"#[..],
            br#"{"engine":"mysql","host":"h","username":"u"}"#,
            br#"{"engine":"mysql","host":"h","username":"u","password":"p","port":70000}"#,
            br#"{"engine":"mysql","host":"h","username":"u","password":"p","sslmode":"allow"}"#,
        ] {
            assert!(
                DbSecret::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn alternating_users_take_turns() {
        assert_eq!(alternate_username("app"), "app_clone");
        assert_eq!(alternate_username("app_clone"), "app");
        assert_eq!(alternate_username("_clone"), "_clone_clone");
    }
}
