//! PostgreSQL: statements are built by the server's own `format()` with `%I` and `%L` on bound
//! parameters, so no name or password is ever quoted by hand.

use zeroize::Zeroizing;

use crate::{CONNECT_TIMEOUT, DbError, DbSecret, within};

async fn connect(
    secret: &DbSecret,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, DbError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&secret.host)
        .port(secret.port()?)
        .user(user)
        .password(password)
        .dbname(secret.dbname.as_deref().unwrap_or("postgres"))
        .application_name("baton-rotator")
        .connect_timeout(CONNECT_TIMEOUT);
    let tls = secret.tls()?;
    let mode = tls.mode;
    let pg = baton_dbtls::Postgres::with(config, tls).map_err(|e| secret.connect_error(user, e))?;
    let (client, connection) = pg.config.connect(pg.tls).await.map_err(|e| {
        let reason = baton_dbtls::error_chain(&e);
        secret.connect_error(user, format!("{reason} (sslmode={})", mode.name()))
    })?;
    tokio::spawn(connection);
    Ok(client)
}

fn statement(what: &'static str) -> impl Fn(tokio_postgres::Error) -> DbError {
    move |e| DbError::Statement {
        what,
        reason: e
            .as_db_error()
            .map_or_else(|| e.to_string(), |db| db.message().to_owned()),
    }
}

/// Builds a statement with the server's `format()` and runs it; the text, which may hold a
/// password, is wiped afterwards.
async fn run_formatted(
    client: &tokio_postgres::Client,
    what: &'static str,
    template: &str,
    args: &[&str],
) -> Result<(), DbError> {
    let casts: Vec<String> = (1..=args.len()).map(|i| format!("${i}::text")).collect();
    let query = format!("SELECT format('{template}', {})", casts.join(", "));
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = args
        .iter()
        .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let row = client
        .query_one(&query, &params)
        .await
        .map_err(statement(what))?;
    let text: Zeroizing<String> = Zeroizing::new(row.get(0));
    client.batch_execute(&text).await.map_err(statement(what))
}

pub(crate) async fn check_login(
    secret: &DbSecret,
    user: &str,
    password: &str,
) -> Result<(), DbError> {
    within("logging in", async {
        let client = connect(secret, user, password).await?;
        client
            .query_one("SELECT 1", &[])
            .await
            .map_err(statement("SELECT 1"))?;
        Ok(())
    })
    .await
}

pub(crate) async fn set_password(
    admin: &DbSecret,
    user: &str,
    password: &str,
) -> Result<(), DbError> {
    within("setting the password", async {
        let client = connect(admin, &admin.username, &admin.password).await?;
        run_formatted(
            &client,
            "ALTER ROLE",
            "ALTER ROLE %I WITH PASSWORD %L",
            &[user, password],
        )
        .await
    })
    .await
}

pub(crate) async fn ensure_clone(
    master: &DbSecret,
    original: &str,
    clone: &str,
    password: &str,
) -> Result<bool, DbError> {
    within("creating the clone user", async {
        let client = connect(master, &master.username, &master.password).await?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&clone])
            .await
            .map_err(statement("looking up the clone user"))?
            .is_some();
        if exists {
            return Ok(false);
        }
        run_formatted(
            &client,
            "CREATE ROLE",
            "CREATE ROLE %I WITH LOGIN PASSWORD %L",
            &[clone, password],
        )
        .await?;
        // The clone inherits every privilege of the original by membership, as AWS's
        // alternating-users function grants them.
        run_formatted(&client, "GRANT", "GRANT %I TO %I", &[original, clone]).await?;
        Ok(true)
    })
    .await
}

pub(crate) async fn active_sessions(master: &DbSecret, user: &str) -> Result<u64, DbError> {
    within("counting sessions", async {
        let client = connect(master, &master.username, &master.password).await?;
        let row = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()",
                &[&user],
            )
            .await
            .map_err(statement("counting sessions"))?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    })
    .await
}

pub(crate) async fn kill_sessions(master: &DbSecret, user: &str) -> Result<u64, DbError> {
    within("ending sessions", async {
        let client = connect(master, &master.username, &master.password).await?;
        let row = client
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE usename = $1 AND pid <> pg_backend_pid()",
                &[&user],
            )
            .await
            .map_err(statement("ending sessions"))?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    })
    .await
}
