//! MySQL and MariaDB: statements are built by the server's `QUOTE()` on bound parameters, in a
//! session whose sql_mode is known to use backslash escapes, so no name or password is quoted
//! by hand. Errors of statements that carry a password report only the server's error code:
//! MySQL's messages may quote the statement.

use mysql_async::prelude::*;
use zeroize::Zeroizing;

use crate::{CONNECT_TIMEOUT, DbError, DbSecret, DbTls, SslMode, within};

async fn connect(
    secret: &DbSecret,
    user: &str,
    password: &str,
) -> Result<mysql_async::Conn, DbError> {
    let tls = secret.tls()?;
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(secret.host.clone())
        .tcp_port(secret.port()?)
        .user(Some(user))
        .pass(Some(password))
        .db_name(secret.dbname.clone())
        .prefer_socket(false);
    let attempt = |ssl: Option<mysql_async::SslOpts>| {
        let opts = opts.clone().ssl_opts(ssl);
        async move {
            tokio::time::timeout(CONNECT_TIMEOUT, mysql_async::Conn::new(opts))
                .await
                .map_err(|_| secret.connect_error(user, "timed out"))
        }
    };
    let failed = |e: mysql_async::Error| {
        let reason = baton_dbtls::error_chain(&e);
        secret.connect_error(user, format!("{reason} (sslmode={})", tls.mode.name()))
    };
    let mut conn = match ssl_opts(&tls)? {
        None => attempt(None).await?.map_err(failed)?,
        Some(ssl) => match attempt(Some(ssl)).await? {
            // prefer: a server without TLS is spoken to in the clear, as libpq does.
            Err(mysql_async::Error::Driver(
                mysql_async::DriverError::NoClientSslFlagFromServer,
            )) if tls.mode == SslMode::Prefer => attempt(None).await?.map_err(failed)?,
            other => other.map_err(failed)?,
        },
    };
    // QUOTE() escapes with backslashes; make sure the parser reads them that way.
    conn.query_drop("SET SESSION sql_mode = REPLACE(@@sql_mode, 'NO_BACKSLASH_ESCAPES', '')")
        .await
        .map_err(plain("setting sql_mode"))?;
    Ok(conn)
}

/// The driver's TLS options for a mode; `None` for `disable`.
///
/// A check of the chain without the host name (`verify-ca`, or `require` with `sslrootcert`) is
/// refused: mysql_async 0.37 recognises a wrong host name by rustls's old error text, so its
/// "skip domain validation" no longer skips anything and would fail every connection with a
/// misleading error. `verify-full` checks more and works.
fn ssl_opts(tls: &DbTls) -> Result<Option<mysql_async::SslOpts>, DbError> {
    if tls.mode == SslMode::Disable {
        return Ok(None);
    }
    let check = tls.check();
    if check == baton_dbtls::Check::Chain {
        return Err(DbError::Shape(format!(
            "sslmode={} with MySQL/MariaDB would check the CA without the host name, which the \
             MySQL driver cannot do: use verify-full (the certificate must name the host)",
            tls.mode.name()
        )));
    }
    let mut ssl = mysql_async::SslOpts::default()
        .with_danger_accept_invalid_certs(check == baton_dbtls::Check::Nothing);
    if let Some(root) = &tls.root_cert {
        // Only the given roots, as libpq trusts only sslrootcert when it is set.
        ssl = ssl
            .with_root_certs(vec![root.clone().into()])
            .with_disable_built_in_roots(true);
    }
    Ok(Some(ssl))
}

/// For statements without secrets: the server's message.
fn plain(what: &'static str) -> impl Fn(mysql_async::Error) -> DbError {
    move |e| DbError::Statement {
        what,
        reason: e.to_string(),
    }
}

/// For statements that carry a password: only the error code.
fn coded(what: &'static str) -> impl Fn(mysql_async::Error) -> DbError {
    move |e| DbError::Statement {
        what,
        reason: match e {
            mysql_async::Error::Server(s) => {
                format!("server error {} (SQLSTATE {})", s.code, s.state)
            }
            other => format!("{} error", error_kind(&other)),
        },
    }
}

fn error_kind(e: &mysql_async::Error) -> &'static str {
    match e {
        mysql_async::Error::Driver(_) => "driver",
        mysql_async::Error::Io(_) => "I/O",
        mysql_async::Error::Other(_) => "client",
        mysql_async::Error::Server(_) => "server",
        mysql_async::Error::Url(_) => "URL",
    }
}

/// Builds a statement with `QUOTE()` and runs it; the text is wiped afterwards.
async fn run_built(
    conn: &mut mysql_async::Conn,
    what: &'static str,
    builder: &str,
    args: Vec<mysql_async::Value>,
) -> Result<(), DbError> {
    let text: Option<String> = conn
        .exec_first(builder, mysql_async::Params::Positional(args))
        .await
        .map_err(coded(what))?;
    let text = Zeroizing::new(text.ok_or(DbError::Statement {
        what,
        reason: "the server built no statement".into(),
    })?);
    conn.query_drop(text.as_str()).await.map_err(coded(what))
}

async fn hosts_of(conn: &mut mysql_async::Conn, user: &str) -> Result<Vec<String>, DbError> {
    conn.exec("SELECT Host FROM mysql.user WHERE User = ?", (user,))
        .await
        .map_err(plain("looking up the user's hosts"))
}

fn grantee(user: &str, host: &str) -> String {
    format!(
        "`{}`@`{}`",
        user.replace('`', "``"),
        host.replace('`', "``")
    )
}

pub(crate) async fn check_login(
    secret: &DbSecret,
    user: &str,
    password: &str,
) -> Result<(), DbError> {
    within("logging in", async {
        let mut conn = connect(secret, user, password).await?;
        let one: Option<i64> = conn
            .query_first("SELECT 1")
            .await
            .map_err(plain("SELECT 1"))?;
        let _ = conn.disconnect().await;
        match one {
            Some(1) => Ok(()),
            _ => Err(DbError::Statement {
                what: "SELECT 1",
                reason: "unexpected answer".into(),
            }),
        }
    })
    .await
}

pub(crate) async fn set_password(
    admin: &DbSecret,
    user: &str,
    password: &str,
) -> Result<(), DbError> {
    within("setting the password", async {
        let mut conn = connect(admin, &admin.username, &admin.password).await?;
        if admin.username == user {
            // Single user: SET PASSWORD on one's own account needs no privilege. MariaDB takes
            // PASSWORD(); MySQL 8 removed it and takes the plain string.
            let mariadb = run_built(
                &mut conn,
                "SET PASSWORD",
                "SELECT CONCAT('SET PASSWORD = PASSWORD(', QUOTE(?), ')')",
                vec![password.into()],
            )
            .await;
            if mariadb.is_err() {
                run_built(
                    &mut conn,
                    "SET PASSWORD",
                    "SELECT CONCAT('SET PASSWORD = ', QUOTE(?))",
                    vec![password.into()],
                )
                .await?;
            }
            let _ = conn.disconnect().await;
            return Ok(());
        }
        let hosts = hosts_of(&mut conn, user).await?;
        if hosts.is_empty() {
            return Err(DbError::Statement {
                what: "ALTER USER",
                reason: format!("no user named {user:?} exists"),
            });
        }
        for host in hosts {
            run_built(
                &mut conn,
                "ALTER USER",
                "SELECT CONCAT('ALTER USER ', QUOTE(?), '@', QUOTE(?), ' IDENTIFIED BY ', QUOTE(?))",
                vec![user.into(), host.into(), password.into()],
            )
            .await?;
        }
        let _ = conn.disconnect().await;
        Ok(())
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
        let mut conn = connect(master, &master.username, &master.password).await?;
        if !hosts_of(&mut conn, clone).await?.is_empty() {
            let _ = conn.disconnect().await;
            return Ok(false);
        }
        let hosts = hosts_of(&mut conn, original).await?;
        if hosts.is_empty() {
            return Err(DbError::Statement {
                what: "CREATE USER",
                reason: format!("the user to clone, {original:?}, does not exist"),
            });
        }
        for host in hosts {
            run_built(
                &mut conn,
                "CREATE USER",
                "SELECT CONCAT('CREATE USER ', QUOTE(?), '@', QUOTE(?), ' IDENTIFIED BY ', QUOTE(?))",
                vec![clone.into(), host.clone().into(), password.into()],
            )
            .await?;
            // Replay the original's grants with the clone as grantee, as AWS's
            // alternating-users function does. USAGE (and its password hash) is implicit.
            let show: Option<String> = conn
                .exec_first(
                    "SELECT CONCAT('SHOW GRANTS FOR ', QUOTE(?), '@', QUOTE(?))",
                    (original, host.as_str()),
                )
                .await
                .map_err(plain("reading the original's grants"))?;
            let grants: Vec<String> = conn
                .query(show.unwrap_or_default())
                .await
                .map_err(plain("reading the original's grants"))?;
            let from = format!(" TO {}", grantee(original, &host));
            let to = format!(" TO {}", grantee(clone, &host));
            for grant in grants {
                if grant.starts_with("GRANT USAGE ON *.* TO") {
                    continue;
                }
                let Some(at) = grant.rfind(&from) else {
                    continue;
                };
                let rewritten = format!("{}{}{}", &grant[..at], to, &grant[at + from.len()..]);
                conn.query_drop(rewritten)
                    .await
                    .map_err(plain("granting the original's privileges to the clone"))?;
            }
        }
        let _ = conn.disconnect().await;
        Ok(true)
    })
    .await
}

pub(crate) async fn active_sessions(master: &DbSecret, user: &str) -> Result<u64, DbError> {
    within("counting sessions", async {
        let mut conn = connect(master, &master.username, &master.password).await?;
        let n: Option<u64> = conn
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = ? AND ID <> CONNECTION_ID()",
                (user,),
            )
            .await
            .map_err(plain("counting sessions"))?;
        let _ = conn.disconnect().await;
        Ok(n.unwrap_or_default())
    })
    .await
}

pub(crate) async fn kill_sessions(master: &DbSecret, user: &str) -> Result<u64, DbError> {
    within("ending sessions", async {
        let mut conn = connect(master, &master.username, &master.password).await?;
        let ids: Vec<u64> = conn
            .exec(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ? AND ID <> CONNECTION_ID()",
                (user,),
            )
            .await
            .map_err(plain("listing sessions"))?;
        for id in &ids {
            // A session may end by itself meanwhile.
            let _ = conn.query_drop(format!("KILL CONNECTION {id}")).await;
        }
        let _ = conn.disconnect().await;
        Ok(ids.len() as u64)
    })
    .await
}
