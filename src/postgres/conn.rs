//! Connection strings: libpq URLs and `key=value` strings, completed from the PG* environment
//! variables and the password file the way libpq does it; connecting (with TLS as `sslmode` says, see
//! `tls.rs`) with errors a DBA can act on. A password is never part of what this module prints.

use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::{CancelToken, Client, Config, NoTls};

use crate::error::UserError;
use crate::postgres::pgpass;
use crate::postgres::tls::Tls;

/// A parsed, completed connection target plus a printable label without the password.
#[derive(Clone)]
pub struct ConnSpec {
    /// What this connection is called in messages ("source", "target", "database").
    pub role: &'static str,
    pub config: Config,
    /// sslmode and root certificates; `config`'s own ssl mode follows `tls.wire_mode()`.
    pub tls: Tls,
}

impl std::fmt::Debug for ConnSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnSpec({} {})", self.role, self.label())
    }
}

impl ConnSpec {
    /// Parses `text` (URL or key=value; empty means "all from the environment").
    pub fn parse(role: &'static str, text: &str) -> Result<Self, UserError> {
        // tokio-postgres knows neither verify-ca/verify-full nor sslrootcert: those are pgshift's
        let (rest, keys) = take_tls_keys(text.trim()).map_err(|key| {
            UserError::new(
                format!("{role}: client certificates ({key}) are not supported"),
                "remove sslcert/sslkey/sslpassword and authenticate with a password",
            )
        })?;
        let mut config = Config::from_str(&rest).map_err(|e| {
            UserError::new(
                format!("{role}: malformed connection string ({})", scrub(&e.to_string())),
                "write it as postgresql://USER@HOST:PORT/DBNAME or 'host=HOST port=PORT user=USER dbname=DBNAME'",
            )
        })?;
        complete_from_env(&mut config)
            .map_err(|m| UserError::new(format!("{role}: {m}"), "fix or unset that environment variable"))?;
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (mode_env, root_env) = (env("PGSSLMODE"), env("PGSSLROOTCERT"));
        let sslmode = match &keys.sslmode {
            Some(v) => Some(("sslmode", v.as_str())),
            None => mode_env.as_deref().map(|v| ("PGSSLMODE", v)),
        };
        let sslrootcert = match &keys.sslrootcert {
            Some(v) => Some(("sslrootcert", v.as_str())),
            None => root_env.as_deref().map(|v| ("PGSSLROOTCERT", v)),
        };
        let tls = Tls::resolve(role, sslmode, sslrootcert)?;
        config.ssl_mode(tls.wire_mode());
        Ok(Self { role, config, tls })
    }

    /// `user@host:port/dbname`, never the password.
    pub fn label(&self) -> String {
        let host = self.host();
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{}@{}:{}/{}",
            self.config.get_user().unwrap_or("?"),
            host,
            port,
            self.config.get_dbname().unwrap_or("?")
        )
    }

    /// The first host (name, address or socket directory).
    fn host(&self) -> String {
        match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "?".into(),
        }
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

    /// Connects, spawning the connection task; errors become one line with the fix. TLS as the
    /// sslmode says; Unix sockets never use TLS (as with libpq).
    pub async fn connect(&self) -> Result<Client, UserError> {
        let client = match self.tls.connector().filter(|_| !self.unix_only()) {
            Some(tls) => {
                let (client, connection) = self.config.connect(tls).await.map_err(|e| self.explain(&e))?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                client
            }
            None => {
                let (client, connection) = self.config.connect(NoTls).await.map_err(|e| self.explain(&e))?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                client
            }
        };
        Ok(client)
    }

    /// This connection for a session of small catalog reads: the planner's estimates on a catalog
    /// never analyzed (TimescaleDB's, on a freshly loaded server) start parallel workers for
    /// queries of a few rows, 15-20 ms each. Set at connection start, after any `options` of the
    /// connection string.
    pub fn for_catalog_reads(&self) -> ConnSpec {
        let mut spec = self.clone();
        let given = self.config.get_options().unwrap_or_default();
        spec.config.options(format!("{given} -c max_parallel_workers_per_gather=0").trim_start());
        spec
    }

    /// Asks the server to cancel what `token`'s session runs, over the same kind of connection.
    pub async fn cancel(&self, token: &CancelToken) -> Result<(), tokio_postgres::Error> {
        match self.tls.connector().filter(|_| !self.unix_only()) {
            Some(tls) => token.cancel_query(tls).await,
            None => token.cancel_query(NoTls).await,
        }
    }

    fn unix_only(&self) -> bool {
        #[cfg(unix)]
        return self.config.get_hosts().iter().all(|h| matches!(h, Host::Unix(_)));
        #[cfg(not(unix))]
        false
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
                "28000" if db.message().contains("no encryption") => UserError::new(
                    format!("{who}: access refused by the server ({})", db.message()),
                    "the server takes only TLS connections from here: use sslmode=require or verify-full",
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
        let mode = self.tls.mode.as_str();
        if lower.contains("server does not support tls") {
            UserError::new(
                format!("{who}: the server does not accept TLS connections, and sslmode={mode} requires TLS"),
                "turn ssl on in the server's postgresql.conf, or use sslmode=prefer to allow an unencrypted connection",
            )
        } else if lower.contains("not valid for name") || lower.contains("notvalidforname") {
            let host = self.host();
            UserError::new(
                format!("{who}: the server's certificate is not valid for the host name {host} (sslmode={mode})"),
                "connect with a host name the certificate lists, or use sslmode=verify-ca to check only the CA",
            )
        } else if lower.contains("invalid peer certificate") {
            let why = source.rsplit_once("invalid peer certificate: ").map(|(_, w)| w).unwrap_or(&source);
            UserError::new(
                format!(
                    "{who}: certificate verify failed: the server's certificate {} (sslmode={mode})",
                    why_text(why)
                ),
                "give sslrootcert=FILE (or PGSSLROOTCERT) with the CA that signed the server's certificate, \
                 or use sslmode=require to encrypt without checking it",
            )
        } else if lower.contains("tls handshake") {
            UserError::new(
                format!("{who}: TLS handshake failed ({source}) (sslmode={mode})"),
                "check the server's ssl settings and certificate; sslmode=prefer allows an unencrypted connection",
            )
        } else if lower.contains("refused") {
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
        } else {
            UserError::new(
                format!("{who}: cannot connect ({text} {source})"),
                "check the connection string and that the server runs",
            )
        }
    }
}

/// rustls' reason for refusing a certificate, as a DBA reads it.
fn why_text(why: &str) -> String {
    let lower = why.to_lowercase();
    if lower.contains("unknownissuer") || lower.contains("unknown issuer") {
        "is signed by a CA that is not in the root certificates".into()
    } else if lower.contains("expired") {
        "has expired".into()
    } else if lower.contains("notvalidyet") || lower.contains("not valid yet") {
        "is not valid yet".into()
    } else if lower.contains("revoked") {
        "is revoked".into()
    } else {
        format!("was refused ({why})")
    }
}

/// libpq's TLS keys taken out of a connection string, which is returned without them.
#[derive(Default, Debug, PartialEq, Eq)]
struct TlsKeys {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

/// Splits `sslmode` and `sslrootcert` off a URL's query or a key=value string. A string it cannot
/// tokenize is returned as it is, for tokio-postgres to report. `Err(key)` for a client certificate key.
fn take_tls_keys(text: &str) -> Result<(String, TlsKeys), String> {
    const CLIENT_CERT: [&str; 3] = ["sslcert", "sslkey", "sslpassword"];
    let mut keys = TlsKeys::default();
    let mut take = |key: &str, value: String| -> Result<bool, String> {
        match key {
            "sslmode" => keys.sslmode = Some(value),
            "sslrootcert" => keys.sslrootcert = Some(value),
            k if CLIENT_CERT.contains(&k) => return Err(k.to_string()),
            _ => return Ok(false),
        }
        Ok(true)
    };
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        let Some((head, query)) = text.split_once('?') else { return Ok((text.to_string(), keys)) };
        let mut kept = Vec::new();
        for part in query.split('&') {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            if !take(&percent_decode(k), percent_decode(v))? {
                kept.push(part);
            }
        }
        let rest = if kept.is_empty() { head.to_string() } else { format!("{head}?{}", kept.join("&")) };
        return Ok((rest, keys));
    }
    let Some(pairs) = key_value_pairs(text) else { return Ok((text.to_string(), keys)) };
    let mut kept = Vec::new();
    let mut taken = false;
    for (k, v) in pairs {
        if take(&k, v.clone())? {
            taken = true;
        } else {
            kept.push(format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")));
        }
    }
    Ok((if taken { kept.join(" ") } else { text.to_string() }, keys))
}

/// libpq's `key = value` pairs (values bare or single-quoted, `\` escaping); `None` if malformed.
fn key_value_pairs(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut it = text.chars().peekable();
    loop {
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        if it.peek().is_none() {
            return Some(out);
        }
        let mut key = String::new();
        while let Some(c) = it.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        it.next_if_eq(&'=')?;
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if it.next_if_eq(&'\'').is_some() {
            loop {
                match it.next()? {
                    '\'' => break,
                    '\\' => value.push(it.next()?),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = it.next_if(|c| !c.is_whitespace()) {
                value.push(if c == '\\' { it.next()? } else { c });
            }
        }
        out.push((key, value));
    }
}

/// `%XX` decoding of a URL query part (invalid sequences kept as they are).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Fills what the string left out from PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD,
/// PGCONNECT_TIMEOUT and the password file, with libpq's defaults after that (PGSSLMODE and
/// PGSSLROOTCERT: see `ConnSpec::parse`).
fn complete_from_env(config: &mut Config) -> Result<(), String> {
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
    fn catalog_reads_keep_the_users_options() {
        let c = ConnSpec::parse("source", "host=h dbname=d options='-c search_path=app'").unwrap();
        let r = c.for_catalog_reads();
        assert_eq!(r.config.get_options(), Some("-c search_path=app -c max_parallel_workers_per_gather=0"));
        assert_eq!(r.label(), c.label());
        let bare = ConnSpec::parse("source", "host=h dbname=d").unwrap().for_catalog_reads();
        assert_eq!(bare.config.get_options(), Some("-c max_parallel_workers_per_gather=0"));
    }

    #[test]
    fn malformed_string_is_one_clear_error() {
        let e = ConnSpec::parse("source", "host=h password=s3cret nonsense_key=1").unwrap_err();
        assert!(e.message.contains("malformed connection string"), "{e}");
        assert!(!e.to_string().contains("s3cret"));
    }

    #[test]
    fn tls_keys_are_taken_out_of_both_forms() {
        let (rest, k) = take_tls_keys(
            "postgresql://u:p%40w@h:1/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca%20x.crt",
        )
        .unwrap();
        assert_eq!(rest, "postgresql://u:p%40w@h:1/db?application_name=x");
        assert_eq!(k, TlsKeys { sslmode: Some("verify-full".into()), sslrootcert: Some("/tmp/ca x.crt".into()) });
        let (rest, k) = take_tls_keys("postgresql://h/db?sslmode=require").unwrap();
        assert_eq!((rest.as_str(), k.sslmode.as_deref()), ("postgresql://h/db", Some("require")));
        let (rest, k) =
            take_tls_keys(r"host=h password='it\'s a \\ b' sslmode = verify-ca sslrootcert='/a b/ca.crt'").unwrap();
        assert_eq!(k, TlsKeys { sslmode: Some("verify-ca".into()), sslrootcert: Some("/a b/ca.crt".into()) });
        assert_eq!(rest, r"host='h' password='it\'s a \\ b'");
        // untouched when there is nothing to take
        assert_eq!(take_tls_keys("host=h  port=1").unwrap().0, "host=h  port=1");
        assert_eq!(take_tls_keys("postgresql://u@h/d").unwrap().0, "postgresql://u@h/d");
        assert_eq!(take_tls_keys("host=h sslcert=/c.crt").unwrap_err(), "sslcert");
    }

    #[test]
    fn quoted_values_survive_the_rewrite() {
        let c = ConnSpec::parse("source", r"host=h user=u password='a b\'c\\d' sslmode=require dbname=x").unwrap();
        assert_eq!(c.config.get_password(), Some(&br"a b'c\d"[..]));
        assert_eq!(c.tls.mode, crate::postgres::tls::SslMode::Require);
        assert_eq!(c.config.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        let c = ConnSpec::parse("source", "postgresql://u@h/x?sslmode=disable").unwrap();
        assert_eq!(c.config.get_ssl_mode(), tokio_postgres::config::SslMode::Disable);
    }

    #[test]
    fn scrub_hides_passwords() {
        assert_eq!(scrub("x postgresql://u:pw@h/db y"), "x postgresql://u:***@h/db y");
        assert!(!scrub("password=pw rest").contains("pw "));
    }
}
