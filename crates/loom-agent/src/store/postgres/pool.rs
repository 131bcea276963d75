//! A small pool of PostgreSQL connections, shared by the store and the audit log: up to a fixed
//! number of connections opened as needed on the current tokio runtime, a broken one dropped and
//! replaced on the next call. Each connection keeps the statements prepared on it, so a statement
//! costs one round trip (bind and execute) after its first use instead of two (parse, then bind).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls, Statement};

use crate::error::Error;

/// The most connections one pool opens at once.
const MAX_CONNECTIONS: usize = 8;

/// A connection pool for one database.
pub(crate) struct PgPool {
    config: Config,
    /// `host:port` list, for messages (never the password).
    host: String,
    /// The database name, for messages.
    dbname: String,
    idle: Mutex<Vec<(Client, Statements)>>,
    permits: Arc<Semaphore>,
}

/// The statements prepared on one connection, by their SQL text.
type Statements = HashMap<&'static str, Statement>;

/// A pooled connection; hand it back with [`PgPool::put`].
pub(crate) struct PooledConn {
    pub(crate) client: Client,
    statements: Statements,
    _permit: OwnedSemaphorePermit,
}

impl PooledConn {
    /// `sql` prepared on this connection: prepared on first use, then taken from the cache.
    pub(crate) async fn prepared(&mut self, sql: &'static str) -> Result<Statement, Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await.map_err(|e| pg("preparing a statement", e))?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }
}

impl PgPool {
    /// A pool for the database at `url`, without connecting. A URL that does not parse is an
    /// [`Error::Config`] that never repeats the password.
    pub(crate) fn new(url: &str) -> Result<Self, Error> {
        let config = Config::from_str(url.trim()).map_err(|e| {
            let mut msg = e.to_string();
            if let Some(cause) = std::error::Error::source(&e) {
                msg = format!("{msg}: {cause}");
            }
            Error::Config(scrub(url, format!("bad PostgreSQL URL: {msg}")))
        })?;
        let ports = config.get_ports();
        let host = config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let name = match h {
                    Host::Tcp(name) => name.clone(),
                    #[cfg(unix)]
                    Host::Unix(path) => path.display().to_string(),
                };
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                format!("{name}:{port}")
            })
            .collect::<Vec<_>>()
            .join(",");
        let dbname = config.get_dbname().or(config.get_user()).unwrap_or_default().to_string();
        Ok(PgPool {
            config,
            host,
            dbname,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        })
    }

    /// `host:port` list.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// The database name.
    pub(crate) fn dbname(&self) -> &str {
        &self.dbname
    }

    /// Takes an idle connection, or opens one.
    pub(crate) async fn get(&self) -> Result<PooledConn, Error> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::store("postgres: the connection pool is closed", e))?;
        let idle = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let mut found = None;
            while let Some(conn) = idle.pop() {
                if !conn.0.is_closed() {
                    found = Some(conn);
                    break;
                }
            }
            found
        };
        let (client, statements) = match idle {
            Some(conn) => conn,
            None => (self.open().await?, Statements::new()),
        };
        Ok(PooledConn { client, statements, _permit: permit })
    }

    /// Hands a connection back (a closed one is dropped).
    pub(crate) fn put(&self, conn: PooledConn) {
        if !conn.client.is_closed() {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).push((conn.client, conn.statements));
        }
    }

    async fn open(&self) -> Result<Client, Error> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::store(format!("postgres: connecting needs a tokio runtime: {e}"), e))?;
        let what = format!("connecting to {}/{}", self.host, self.dbname);
        let (client, connection) = self.config.connect(NoTls).await.map_err(|e| pg(&what, e))?;
        runtime.spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "postgres: a connection ended with an error");
            }
        });
        Ok(client)
    }
}

/// A database error, with its cause in the message (tokio-postgres prints only "db error"
/// without it) and kept as the source.
pub(crate) fn pg(what: &str, e: tokio_postgres::Error) -> Error {
    let mut msg = format!("postgres: {what}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        msg.push_str(": ");
        msg.push_str(&cause.to_string());
        source = cause.source();
    }
    Error::store(msg, e)
}

/// Removes the password of a `postgres://user:password@…` URL from `text`.
pub(crate) fn scrub(url: &str, text: String) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let Some((userinfo, _)) = authority.rsplit_once('@') else { return text };
    match userinfo.split_once(':') {
        Some((_, password)) if !password.is_empty() => text.replace(password, "***"),
        _ => text,
    }
}
