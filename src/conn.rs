//! Connection strings: libpq URLs and `key=value` strings, completed from the PG* environment
//! variables and the password file the way libpq does it; connecting with errors a DBA can act on.
//! A password is never part of what this module prints.

use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};

use crate::error::UserError;
use crate::pgpass;

/// A parsed, completed connection target plus a printable label without the password.
#[derive(Clone)]
pub struct ConnSpec {
    /// What this connection is called in messages ("source", "target", "database").
    pub role: &'static str,
    pub config: Config,
}

impl std::fmt::Debug for ConnSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnSpec({} {})", self.role, self.label())
    }
}

impl ConnSpec {
    /// Parses `text` (URL or key=value; empty means "all from the environment").
    pub fn parse(role: &'static str, text: &str) -> Result<Self, UserError> {
        let mut config = Config::from_str(text.trim()).map_err(|e| {
            UserError::new(
                format!("{role}: malformed connection string ({})", scrub(&e.to_string())),
                "write it as postgresql://USER@HOST:PORT/DBNAME or 'host=HOST port=PORT user=USER dbname=DBNAME'",
            )
        })?;
        let sslmode_given = text.contains("sslmode");
        complete_from_env(&mut config, sslmode_given)
            .map_err(|m| UserError::new(format!("{role}: {m}"), "fix or unset that environment variable"))?;
        Ok(Self { role, config })
    }

    /// `user@host:port/dbname`, never the password.
    pub fn label(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "?".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{}@{}:{}/{}",
            self.config.get_user().unwrap_or("?"),
            host,
            port,
            self.config.get_dbname().unwrap_or("?")
        )
    }

    pub fn dbname(&self) -> &str {
        self.config.get_dbname().unwrap_or("")
    }

    /// The same server, another database.
    pub fn with_dbname(&self, dbname: &str) -> Self {
        let mut c = self.clone();
        c.config.dbname(dbname);
        c
    }

    /// Connects, spawning the connection task; errors become one line with the fix.
    pub async fn connect(&self) -> Result<Client, UserError> {
        let (client, connection) = self.config.connect(NoTls).await.map_err(|e| self.explain(&e))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    fn explain(&self, e: &tokio_postgres::Error) -> UserError {
        let who = format!("{} {}", self.role, self.label());
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            return match code {
                "28P01" => UserError::new(
                    format!("{who}: password authentication failed"),
                    "check the password (PGPASSWORD, ~/.pgpass with mode 0600, or the connection string)",
                ),
                "28000" => UserError::new(
                    format!("{who}: access refused by the server ({})", db.message()),
                    "allow this user/host in pg_hba.conf, or connect as another user",
                ),
                "3D000" => UserError::new(
                    format!("{who}: database \"{}\" does not exist", self.dbname()),
                    "fix the database name in the connection string (psql -l lists them)",
                ),
                "53300" => UserError::new(
                    format!("{who}: too many connections"),
                    "raise max_connections or close idle sessions, then retry",
                ),
                "57P03" => UserError::new(
                    format!("{who}: the server is starting up or shutting down"),
                    "wait until it accepts connections (pg_isready), then retry",
                ),
                _ => UserError::new(
                    format!("{who}: {} ({code})", db.message()),
                    db.hint().unwrap_or("check the server log for details").to_string(),
                ),
            };
        }
        let text = scrub(&e.to_string());
        let source = std::error::Error::source(e).map(|s| s.to_string()).unwrap_or_default();
        let lower = format!("{text} {source}").to_lowercase();
        if lower.contains("refused") {
            UserError::new(
                format!("{who}: connection refused"),
                "check host and port, that the server runs, and its listen_addresses",
            )
        } else if lower.contains("timed out") || lower.contains("timeout") {
            UserError::new(
                format!("{who}: no answer before the connect timeout"),
                "check host, port and firewalls; raise connect_timeout if the network is slow",
            )
        } else if lower.contains("failed to lookup") || lower.contains("name or service") || lower.contains("resolve") {
            UserError::new(format!("{who}: host name not found"), "check the host name in the connection string")
        } else if lower.contains("password missing") {
            UserError::new(
                format!("{who}: the server asks for a password and none was given"),
                "set PGPASSWORD, add a line to ~/.pgpass (mode 0600), or put it in the connection string",
            )
        } else if lower.contains("no such file") {
            UserError::new(
                format!("{who}: no server socket there"),
                "check that the server runs, or give host=HOST port=PORT for a TCP connection",
            )
        } else if lower.contains("tls") || lower.contains("ssl") {
            UserError::new(
                format!("{who}: {text}"),
                "this build connects without TLS; use sslmode=prefer or disable for now",
            )
        } else {
            UserError::new(
                format!("{who}: cannot connect ({text} {source})"),
                "check the connection string and that the server runs",
            )
        }
    }
}

/// Fills what the string left out from PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD, PGSSLMODE,
/// PGCONNECT_TIMEOUT and the password file, with libpq's defaults after that.
fn complete_from_env(config: &mut Config, sslmode_given: bool) -> Result<(), String> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if config.get_hosts().is_empty() {
        match env("PGHOST") {
            Some(h) => {
                for part in h.split(',') {
                    config.host(part);
                }
            }
            None if std::path::Path::new("/var/run/postgresql").exists() => {
                config.host("/var/run/postgresql");
            }
            None => {
                config.host("localhost");
            }
        }
    }
    if config.get_ports().is_empty() {
        let port = match env("PGPORT") {
            Some(p) => p.parse().map_err(|_| format!("PGPORT={p} is not a port number"))?,
            None => 5432,
        };
        config.port(port);
    }
    if config.get_user().is_none() {
        let user = env("PGUSER").or_else(|| env("USER")).unwrap_or_else(|| "postgres".into());
        config.user(&user);
    }
    if config.get_dbname().is_none() {
        let db = env("PGDATABASE").unwrap_or_else(|| config.get_user().unwrap_or("postgres").to_string());
        config.dbname(&db);
    }
    if config.get_connect_timeout().is_none() {
        let secs = match env("PGCONNECT_TIMEOUT") {
            Some(s) => s.parse().map_err(|_| format!("PGCONNECT_TIMEOUT={s} is not a number of seconds"))?,
            None => 10,
        };
        config.connect_timeout(Duration::from_secs(secs));
    }
    if let Some(mode) = env("PGSSLMODE").filter(|_| !sslmode_given) {
        let c =
            Config::from_str(&format!("sslmode={mode}")).map_err(|_| format!("PGSSLMODE={mode} is not an sslmode"))?;
        config.ssl_mode(c.get_ssl_mode());
    }
    if config.get_application_name().is_none() {
        config.application_name("pgshift");
    }
    if config.get_password().is_none() {
        if let Some(pw) = env("PGPASSWORD").or_else(|| password_from_file(config)) {
            config.password(pw);
        }
    }
    Ok(())
}

fn password_from_file(config: &Config) -> Option<String> {
    let path = pgpass::default_path()?;
    let host = match config.get_hosts().first()? {
        Host::Tcp(h) => h.clone(),
        #[cfg(unix)]
        Host::Unix(p) => p.display().to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    pgpass::lookup(&path, &host, port, config.get_dbname()?, config.get_user()?)
}

/// Removes anything that looks like a password from an error text before it is shown.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_inclusive(char::is_whitespace) {
        let lower = word.to_lowercase();
        if lower.starts_with("password=") || lower.starts_with("`password=") {
            out.push_str("password=*** ");
        } else if let Some(at) = word.find('@').filter(|_| word.contains("://")) {
            let scheme_end = word.find("://").map(|i| i + 3).unwrap_or(0);
            let userinfo = &word[scheme_end..at];
            match userinfo.split_once(':') {
                Some((u, _)) => out.push_str(&format!("{}{}:***{}", &word[..scheme_end], u, &word[at..])),
                None => out.push_str(word),
            }
        } else {
            out.push_str(word);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_has_no_password() {
        let c = ConnSpec::parse("source", "postgresql://alice:s3cret@db.example:6543/app").unwrap();
        assert_eq!(c.label(), "alice@db.example:6543/app");
        let c = ConnSpec::parse("source", "host=h port=1 user=u password=s3cret dbname=d").unwrap();
        assert!(!format!("{c:?} {}", c.label()).contains("s3cret"));
    }

    #[test]
    fn malformed_string_is_one_clear_error() {
        let e = ConnSpec::parse("source", "host=h password=s3cret nonsense_key=1").unwrap_err();
        assert!(e.message.contains("malformed connection string"), "{e}");
        assert!(!e.to_string().contains("s3cret"));
    }

    #[test]
    fn scrub_hides_passwords() {
        assert_eq!(scrub("x postgresql://u:pw@h/db y"), "x postgresql://u:***@h/db y");
        assert!(!scrub("password=pw rest").contains("pw "));
    }
}
