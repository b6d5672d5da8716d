//! Talking to the server over its unix socket (bound from the container to the VM), with
//! `mysql_async`: the readiness check, securing a new server, and creating databases and
//! users.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use netiso_config::Secret;
use tracing::{debug, info};

use super::models::{Schema, User};
use super::sql::{self, Statement};

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one statement may take.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why talking to the server failed. Messages never hold a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// No connection (no socket yet, refused, access denied, timeout).
    #[error("cannot log in as {user} through {}: {message}", socket.display())]
    Connect {
        /// The socket on the VM.
        socket: PathBuf,
        /// The user.
        user: String,
        /// What the client or server said.
        message: String,
    },
    /// The server that answers is the image's initialisation server (started with
    /// `skip_networking` while the data directory is set up), not the database yet.
    #[error("the server at {} is still initialising (networking is off)", socket.display())]
    Initialising {
        /// The socket on the VM.
        socket: PathBuf,
    },
    /// A statement failed.
    #[error("`{statement}` failed: {message}")]
    Statement {
        /// The statement, redacted.
        statement: String,
        /// What the server said, redacted.
        message: String,
    },
}

/// One session with the server.
pub struct Session {
    conn: Conn,
}

/// Logs in as `user` through the unix socket at `socket`.
pub async fn connect(socket: &Path, user: &str, password: &Secret) -> Result<Session, SqlError> {
    let failed = |message: String| SqlError::Connect {
        socket: socket.to_owned(),
        user: user.to_owned(),
        message: message.replace(password.expose(), "***"),
    };
    let opts = OptsBuilder::default()
        .socket(Some(socket.to_string_lossy()))
        .user(Some(user))
        .pass(Some(password.expose()))
        .prefer_socket(true)
        .stmt_cache_size(0);
    match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts)).await {
        Ok(Ok(conn)) => Ok(Session { conn }),
        Ok(Err(e)) => Err(failed(e.to_string())),
        Err(_) => Err(failed(format!("no answer within {CONNECT_TIMEOUT:?}"))),
    }
}

impl Session {
    /// Runs one statement.
    pub async fn execute(&mut self, statement: &Statement) -> Result<(), SqlError> {
        debug!(%statement, "SQL");
        let ran = tokio::time::timeout(STATEMENT_TIMEOUT, self.conn.query_drop(statement.text()));
        match ran.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(statement_error(statement, &e.to_string())),
            Err(_) => Err(statement_error(
                statement,
                &format!("no answer within {STATEMENT_TIMEOUT:?}"),
            )),
        }
    }

    /// Runs a query whose rows are pairs of strings.
    async fn pairs(&mut self, statement: &Statement) -> Result<Vec<(String, String)>, SqlError> {
        let ran = tokio::time::timeout(STATEMENT_TIMEOUT, self.conn.query(statement.text()));
        match ran.await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => Err(statement_error(statement, &e.to_string())),
            Err(_) => Err(statement_error(
                statement,
                &format!("no answer within {STATEMENT_TIMEOUT:?}"),
            )),
        }
    }

    /// `@@global.skip_networking`: on while the image's entrypoint initialises.
    async fn networking_off(&mut self) -> Result<bool, SqlError> {
        let query = "SELECT @@global.skip_networking";
        let ran = tokio::time::timeout(STATEMENT_TIMEOUT, self.conn.query_first::<u8, _>(query));
        match ran.await {
            Ok(Ok(value)) => Ok(value.unwrap_or(0) != 0),
            Ok(Err(e)) => Err(SqlError::Statement {
                statement: query.to_owned(),
                message: e.to_string(),
            }),
            Err(_) => Err(SqlError::Statement {
                statement: query.to_owned(),
                message: format!("no answer within {STATEMENT_TIMEOUT:?}"),
            }),
        }
    }

    /// Ends the session politely.
    pub async fn close(self) {
        if let Err(e) = self.conn.disconnect().await {
            debug!(error = %e, "closing the SQL session");
        }
    }
}

fn statement_error(statement: &Statement, message: &str) -> SqlError {
    SqlError::Statement {
        statement: statement.to_string(),
        message: statement.redact(message),
    }
}

/// The readiness check: `root` logs in through the socket and the server is the real one
/// (networking on), not the entrypoint's initialisation server. Trove's MySQL manager
/// reports `healthy` on the same kind of check (`SELECT 1` through the socket).
pub async fn ping(socket: &Path, root_password: &Secret) -> Result<(), SqlError> {
    let mut session = connect(socket, "root", root_password).await?;
    let off = session.networking_off().await;
    session.close().await;
    if off? {
        return Err(SqlError::Initialising {
            socket: socket.to_owned(),
        });
    }
    Ok(())
}

/// What `prepare` asks of a new server, validated.
#[derive(Debug, Clone, Default)]
pub struct Provisioning {
    /// Databases to create.
    pub databases: Vec<Schema>,
    /// Users to create and grant.
    pub users: Vec<User>,
    /// `root_password` of the request: keeps `root@'%'` with it (Trove's "enable root on
    /// prepare"); `None` removes remote root.
    pub remote_root: Option<Secret>,
}

/// Trove's `secure()`, `secure_root()`/`enable_root`, then `create_database` and
/// `create_user`, as `root` through the socket: `os_admin@localhost` with
/// `admin_password`, anonymous users (and remote root) removed, then each database, each
/// user and its grants.
pub async fn provision(
    socket: &Path,
    root_password: &Secret,
    admin_password: &Secret,
    plan: &Provisioning,
) -> Result<(), SqlError> {
    let mut session = connect(socket, "root", root_password).await?;
    let result = provision_in(&mut session, admin_password, plan).await;
    session.close().await;
    result
}

async fn provision_in(
    session: &mut Session,
    admin_password: &Secret,
    plan: &Provisioning,
) -> Result<(), SqlError> {
    for statement in sql::create_admin(admin_password) {
        session.execute(&statement).await?;
    }
    if let Some(password) = &plan.remote_root {
        for statement in sql::enable_remote_root(password) {
            session.execute(&statement).await?;
        }
    }
    let insecure = session
        .pairs(&sql::insecure_accounts_query(plan.remote_root.is_some()))
        .await?;
    for (user, host) in insecure {
        session.execute(&sql::drop_user(&user, &host)).await?;
    }
    for schema in &plan.databases {
        session.execute(&sql::create_database(schema)).await?;
    }
    for user in &plan.users {
        for statement in sql::create_user(user)
            .iter()
            .chain(&sql::grant_databases(user))
        {
            session.execute(statement).await?;
        }
    }
    info!(
        databases = plan.databases.len(),
        users = plan.users.len(),
        remote_root = plan.remote_root.is_some(),
        "server secured, databases and users created"
    );
    Ok(())
}
