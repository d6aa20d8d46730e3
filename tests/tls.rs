//! TLS against the real servers (both run with `ssl = on`, certificate for 127.0.0.1 and localhost
//! signed by the test CA in `PGSHIFT_TEST_CA`): every sslmode, seen from the server's side by a
//! login event trigger that records whether each session is encrypted; the refusals (wrong host
//! name, no or wrong root certificate, bogus sslmode, a server without TLS) as one line with exit
//! code 2; and pg_dump children that connect with TLS too.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The CA that signed the test servers' certificate.
fn ca() -> String {
    std::env::var("PGSHIFT_TEST_CA").expect(
        "PGSHIFT_TEST_CA is not set: start the test servers with `bash tests/env/up.sh && . /var/cache/pgshift-test/state/env.sh`",
    )
}

/// pgshift with no TLS settings from the caller's environment and a home without ~/.postgresql.
fn pgshift(home: &Path) -> assert_cmd::Command {
    let mut cmd = common::pgshift();
    cmd.env_remove("PGSSLMODE").env_remove("PGSSLROOTCERT").env("HOME", home);
    cmd
}

/// Records every session opened on the database: its application_name, whether it is encrypted,
/// and whether it carries the marker the test gives libpq children through PGOPTIONS.
const WATCH_SQL: &str = "
CREATE TABLE public.tls_seen (app text, ssl boolean, child boolean);
CREATE FUNCTION public.tls_seen_login() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.tls_seen
    SELECT current_setting('application_name'), s.ssl,
           coalesce(current_setting('pgshift_tls_test.child', true), '') = 'yes'
    FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid();
END $$;
CREATE EVENT TRIGGER tls_seen_login ON login EXECUTE FUNCTION public.tls_seen_login();
CREATE TABLE public.readings (id int PRIMARY KEY, v text);
INSERT INTO public.readings SELECT g, 'row ' || g FROM generate_series(1, 100) g;";

/// A fresh database on the source server that records its sessions.
async fn watched_db(db: &str) -> String {
    let url = common::fresh_db(&common::servers().source, db).await;
    common::connect(&url).await.batch_execute(WATCH_SQL).await.expect("login trigger created");
    url
}

/// What the server recorded for sessions named `app`: one `ssl` flag per session.
async fn seen(url: &str, app: &str) -> Vec<bool> {
    let rows = common::connect(url)
        .await
        .query("SELECT ssl FROM public.tls_seen WHERE app = $1", &[&app])
        .await
        .expect("tls_seen readable");
    rows.iter().map(|r| r.get(0)).collect()
}

fn with_query(url: &str, query: &str) -> String {
    format!("{url}?{query}")
}

fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "exactly one line: {stderr}");
    assert!(lines[0].starts_with("pgshift: ") && lines[0].contains("(fix: "), "{stderr}");
    assert!(lines[0].contains(needle), "expected {needle:?} in {stderr}");
    assert!(!stderr.contains(&common::servers().password), "no password in {stderr}");
}

fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_sslmode_is_what_the_server_sees() {
    let home = tempfile::tempdir().unwrap();
    let url = watched_db("tls_modes").await;
    let ca = ca();
    let cases = [
        ("disable", String::new(), false),
        ("prefer", String::new(), true),
        ("require", String::new(), true),
        ("verify-ca", format!("&sslrootcert={ca}"), true),
        ("verify-full", format!("&sslrootcert={ca}"), true),
    ];
    for (mode, extra, encrypted) in cases {
        let app = format!("tls_test_{mode}");
        let out = pgshift(home.path())
            .args([
                "inventory",
                "--no-rows",
                "--db",
                &with_query(&url, &format!("sslmode={mode}{extra}&application_name={app}")),
            ])
            .output()
            .unwrap();
        assert_ok(&out, mode);
        let sessions = seen(&url, &app).await;
        assert!(!sessions.is_empty(), "{mode}: the server saw no session named {app}");
        assert!(
            sessions.iter().all(|s| *s == encrypted),
            "{mode}: server saw ssl = {sessions:?}, expected {encrypted}"
        );
    }

    // the same from PGSSLMODE / PGSSLROOTCERT with a key=value string
    let port = url.rsplit_once(':').unwrap().1.split('/').next().unwrap().to_string();
    let out = pgshift(home.path())
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", &ca)
        .args([
            "inventory",
            "--no-rows",
            "--db",
            &format!("host=127.0.0.1 port={port} user=postgres dbname=tls_modes application_name=tls_test_env"),
        ])
        .output()
        .unwrap();
    assert_ok(&out, "PGSSLMODE=verify-full");
    let sessions = seen(&url, "tls_test_env").await;
    assert!(!sessions.is_empty() && sessions.iter().all(|s| *s), "env: {sessions:?}");

    // verify-ca checks the chain but not the name: a host name the certificate lacks is accepted
    let wrong_name = url.replace("127.0.0.1", "wrong-name.invalid");
    let out = pgshift(home.path())
        .args([
            "inventory",
            "--no-rows",
            "--db",
            &with_query(
                &wrong_name,
                &format!("hostaddr=127.0.0.1&sslmode=verify-ca&sslrootcert={ca}&application_name=tls_test_ca_name"),
            ),
        ])
        .output()
        .unwrap();
    assert_ok(&out, "verify-ca with another host name");
    assert_eq!(seen(&url, "tls_test_ca_name").await.first(), Some(&true));
    common::drop_db(&common::servers().source, "tls_modes").await;
}

#[test]
fn verify_full_refuses_a_host_name_the_certificate_lacks() {
    let home = tempfile::tempdir().unwrap();
    // the certificate names 127.0.0.1 and localhost; connect to 127.0.0.1 under another name
    let url = common::servers().source.replace("127.0.0.1", "wrong-name.invalid");
    let out = pgshift(home.path())
        .args([
            "inventory",
            "--db",
            &with_query(&url, &format!("hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={}", ca())),
        ])
        .output()
        .unwrap();
    assert_one_line_error(&out, "certificate is not valid for the host name wrong-name.invalid");
}

#[test]
fn missing_or_wrong_root_certificates_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let source = common::servers().source;
    let run =
        |query: &str| pgshift(home.path()).args(["inventory", "--db", &with_query(&source, query)]).output().unwrap();

    // verify-ca with no sslrootcert and no ~/.postgresql/root.crt
    assert_one_line_error(&run("sslmode=verify-ca"), "sslmode=verify-ca needs the CA's certificate");
    // a root certificate file that is not there, or not a certificate
    assert_one_line_error(
        &run("sslmode=verify-full&sslrootcert=/nonexistent/ca.crt"),
        "cannot read the root certificate file /nonexistent/ca.crt (no such file)",
    );
    let junk = home.path().join("junk.crt");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    assert_one_line_error(&run(&format!("sslmode=verify-ca&sslrootcert={}", junk.display())), "holds no certificate");

    // a CA that did not sign the server's certificate: verify-ca refuses, and so does require
    // (libpq: with a root certificate file, require checks the chain like verify-ca)
    let other = other_ca(home.path());
    for mode in ["verify-ca", "verify-full", "require"] {
        assert_one_line_error(
            &run(&format!("sslmode={mode}&sslrootcert={}", other.display())),
            "certificate verify failed: the server's certificate is signed by a CA that is not in the root certificates",
        );
    }
    // the default root file counts for require too
    std::fs::create_dir_all(home.path().join(".postgresql")).unwrap();
    std::fs::copy(&other, home.path().join(".postgresql/root.crt")).unwrap();
    assert_one_line_error(&run("sslmode=require"), "certificate verify failed");
    std::fs::copy(ca(), home.path().join(".postgresql/root.crt")).unwrap();
    assert_ok(&run("sslmode=verify-full"), "verify-full with ~/.postgresql/root.crt");
}

/// A self-signed CA of our own that signed nothing the servers use.
fn other_ca(dir: &Path) -> PathBuf {
    let crt = dir.join("other-ca.crt");
    let out = Command::new("openssl")
        .args(["req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .arg("-keyout")
        .arg(dir.join("other-ca.key"))
        .arg("-out")
        .arg(&crt)
        .args(["-days", "2", "-subj", "/CN=not the pgshift test CA"])
        .output()
        .expect("openssl (tests/env/up.sh installs it)");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    crt
}

#[test]
fn bogus_sslmodes_are_one_clear_error() {
    let home = tempfile::tempdir().unwrap();
    let source = common::servers().source;
    let out = pgshift(home.path()).args(["inventory", "--db", &with_query(&source, "sslmode=bogus")]).output().unwrap();
    assert_one_line_error(&out, "sslmode=bogus is not an sslmode");
    let out =
        pgshift(home.path()).env("PGSSLMODE", "verify_full").args(["inventory", "--db", &source]).output().unwrap();
    assert_one_line_error(&out, "PGSSLMODE=verify_full is not an sslmode");
    let out = pgshift(home.path()).args(["inventory", "--db", "host=127.0.0.1 sslmode=allow"]).output().unwrap();
    assert_one_line_error(&out, "sslmode=allow is not supported");
    let out = pgshift(home.path())
        .args(["inventory", "--db", &with_query(&source, "sslmode=require&sslcert=/tmp/client.crt")])
        .output()
        .unwrap();
    assert_one_line_error(&out, "client certificates (sslcert) are not supported");
}

/// A throwaway PostgreSQL 17 cluster with `ssl = off` (trust auth, loopback only), made with the
/// test root's initdb in a temporary directory under /tmp (which the root shares); stopped on drop.
struct PlainServer {
    root: String,
    dir: tempfile::TempDir,
    port: u16,
}

impl PlainServer {
    fn start() -> Self {
        let root = std::env::var("PGSHIFT_TEST_ROOT")
            .expect("PGSHIFT_TEST_ROOT is not set: run `bash tests/env/up.sh` and source its env.sh");
        let dir = tempfile::Builder::new().prefix("pgshift-plain-").tempdir_in("/tmp").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let server = Self { root, dir, port };
        let data = server.data();
        std::fs::create_dir(&data).unwrap();
        server.chroot(&["chown", "postgres:postgres", &data]);
        server.as_postgres(&[
            "initdb",
            "-D",
            &data,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]);
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{data}'\nssl = off\nfsync = off\n"
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(Path::new(&data).join("postgresql.conf"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, conf.as_bytes()))
            .unwrap();
        server.as_postgres(&["pg_ctl", "-D", &data, "-l", &format!("{data}/server.log"), "-w", "-t", "60", "start"]);
        server
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn chroot(&self, args: &[&str]) {
        let out = Command::new("chroot").arg(&self.root).args(args).output().expect("chroot");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn as_postgres(&self, args: &[&str]) {
        let tool = format!("/usr/lib/postgresql/17/bin/{}", args[0]);
        let out = Command::new("chroot")
            .args(["--userspec=postgres:postgres", &self.root, "env", "LANG=C.UTF-8", &tool])
            .args(&args[1..])
            .output()
            .expect("chroot");
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PlainServer {
    fn drop(&mut self) {
        let tool = "/usr/lib/postgresql/17/bin/pg_ctl";
        let _ = Command::new("chroot")
            .args([
                "--userspec=postgres:postgres",
                &self.root,
                tool,
                "-D",
                &self.data(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn require_refuses_a_server_without_tls_and_prefer_falls_back_to_plain() {
    let home = tempfile::tempdir().unwrap();
    let server = PlainServer::start();
    let admin = server.url("postgres");
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.expect("plain server answers");
    tokio::spawn(conn);
    client.batch_execute("CREATE DATABASE watched").await.unwrap();
    let url = server.url("watched");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.batch_execute(WATCH_SQL).await.unwrap();

    for mode in ["require", "verify-ca", "verify-full"] {
        let out = pgshift(home.path())
            .args(["inventory", "--db", &with_query(&url, &format!("sslmode={mode}&sslrootcert={}", ca()))])
            .output()
            .unwrap();
        assert_one_line_error(
            &out,
            &format!("the server does not accept TLS connections, and sslmode={mode} requires TLS"),
        );
    }
    let out = pgshift(home.path())
        .args(["inventory", "--no-rows", "--db", &with_query(&url, "sslmode=prefer&application_name=tls_test_plain")])
        .output()
        .unwrap();
    assert_ok(&out, "prefer against a server without TLS");
    let rows = client.query("SELECT ssl FROM public.tls_seen WHERE app = 'tls_test_plain'", &[]).await.unwrap();
    let sessions: Vec<bool> = rows.iter().map(|r| r.get(0)).collect();
    assert!(!sessions.is_empty() && sessions.iter().all(|s| !s), "prefer on a plain server: {sessions:?}");
    // nothing else connected: the refused sessions never got past TLS
    let others: i64 = client
        .query_one("SELECT count(*) FROM public.tls_seen WHERE app <> 'tls_test_plain'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(others, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_children_connect_with_tls_too() {
    let home = tempfile::tempdir().unwrap();
    let url = watched_db("tls_backup").await;
    let dir = tempfile::tempdir().unwrap();
    let bin =
        std::env::var("PGSHIFT_TEST_BIN_DIR").expect("PGSHIFT_TEST_BIN_DIR is not set: run `bash tests/env/up.sh`");
    // verify-full: the children need PGSSLMODE and PGSSLROOTCERT both, or they fail
    let source = with_query(&url, &format!("sslmode=verify-full&sslrootcert={}", ca()));
    let out = pgshift(home.path())
        // libpq reads PGOPTIONS, pgshift does not: marks the children's sessions
        .env("PGOPTIONS", "-c pgshift_tls_test.child=yes")
        .args(["backup", "--source", &source, "--dir", dir.path().to_str().unwrap(), "--bin-dir", &bin])
        .output()
        .unwrap();
    assert_ok(&out, "backup with sslmode=verify-full");

    let c = common::connect(&url).await;
    let rows = c
        .query(
            "SELECT child, ssl, count(*) FROM public.tls_seen WHERE app LIKE 'pgshift%' GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap();
    let seen: Vec<(bool, bool, i64)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    let children: i64 = seen.iter().filter(|(child, ..)| *child).map(|(.., n)| n).sum();
    assert!(children >= 3, "pg_dump schema, data and full dump sessions expected: {seen:?}");
    assert!(seen.iter().all(|(_, ssl, _)| *ssl), "every session encrypted, pgshift's and its children's: {seen:?}");
    assert!(seen.iter().any(|(child, ..)| !child), "pgshift's own sessions recorded too: {seen:?}");
    common::drop_db(&common::servers().source, "tls_backup").await;
}
