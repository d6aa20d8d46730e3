//! Bad input gives one line with the fix and exit code 2 — never a panic or a stack trace.

mod common;

use std::process::Output;

fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "exactly one line: {stderr}");
    assert!(lines[0].starts_with("pgshift: "), "{stderr}");
    assert!(lines[0].contains(needle), "expected {needle:?} in {stderr}");
    assert!(lines[0].contains("(fix: "), "a fix is given: {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "{stderr}");
}

#[test]
fn unreachable_host() {
    let out =
        common::pgshift().args(["inventory", "--db", "postgresql://postgres@127.0.0.1:1/postgres"]).output().unwrap();
    assert_one_line_error(&out, "connection refused");
}

#[test]
fn wrong_password() {
    let s = common::servers();
    let out = common::pgshift()
        .env("PGPASSWORD", "not-the-password")
        .args(["inventory", "--db", &s.source])
        .output()
        .unwrap();
    assert_one_line_error(&out, "password authentication failed");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("not-the-password"));
}

#[test]
fn missing_database() {
    let s = common::servers();
    let url = common::url_for(&s.source, "no_such_database_here");
    let out = common::pgshift().args(["inventory", "--db", &url]).output().unwrap();
    assert_one_line_error(&out, "does not exist");
}

#[test]
fn malformed_connection_strings() {
    for bad in
        ["host=127.0.0.1 port=notaport", "postgresql://[::1", "host=h bogus_option=1", "postgresql://u:pw@h:99999/db"]
    {
        let out = common::pgshift().args(["inventory", "--db", bad]).output().unwrap();
        assert_one_line_error(&out, "malformed connection string");
        assert!(!String::from_utf8_lossy(&out.stderr).contains(":pw@"), "no password echoed");
    }
}

#[test]
fn unreadable_and_malformed_allow_files() {
    let s = common::servers();
    let args = |allow: &str| {
        vec![
            "verify".to_string(),
            "--source".into(),
            s.source.clone(),
            "--target".into(),
            s.target.clone(),
            "--allow".into(),
            allow.into(),
        ]
    };
    let out = common::pgshift().args(args("/nonexistent/allow.toml")).output().unwrap();
    assert_one_line_error(&out, "cannot read allow file");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("allow.toml");
    std::fs::write(&bad, "[[allow]]\nclass = \"tables\"\nname = \"x\"\nchange = \"sometimes\"\n").unwrap();
    let out = common::pgshift().args(args(bad.to_str().unwrap())).output().unwrap();
    assert_one_line_error(&out, "line 4");

    std::fs::write(&bad, "[[allow]]\nclass = \"tabels\"\nname = \"x\"\n").unwrap();
    let out = common::pgshift().args(args(bad.to_str().unwrap())).output().unwrap();
    assert_one_line_error(&out, "unknown class");
}

#[test]
fn password_from_pgpass_file() {
    // libpq's password file is honoured (and only when private).
    let s = common::servers();
    let dir = tempfile::tempdir().unwrap();
    let pgpass = dir.path().join("pgpass");
    std::fs::write(&pgpass, format!("127.0.0.1:*:*:postgres:{}\n", s.password)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let inventory_with_mode = |mode: u32| {
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(mode)).unwrap();
        common::pgshift()
            .env_remove("PGPASSWORD")
            .env("PGPASSFILE", &pgpass)
            .args(["inventory", "--no-rows", "--db", &s.source])
            .output()
            .unwrap()
    };
    let out = inventory_with_mode(0o600);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = inventory_with_mode(0o644);
    assert_one_line_error(&out, "password");
}

#[test]
fn unwritable_report_path_fails_before_any_work() {
    let s = common::servers();
    let out = common::pgshift()
        .args(["verify", "--source", &s.source, "--target", &s.target, "--json", "/nonexistent/dir/report.json"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "cannot write /nonexistent/dir/report.json");
}

#[test]
fn a_mistyped_argument_is_not_echoed_with_its_password() {
    let out = common::pgshift().args(["inventory", "postgresql://alice:s3cretpw@db.example/app"]).output().unwrap();
    assert_one_line_error(&out, "unexpected argument");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("s3cretpw"));
}

#[test]
fn invalid_environment_values() {
    let out = common::pgshift()
        .env("PGPORT", "fivefourthreetwo")
        .args(["inventory", "--db", "host=127.0.0.1"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "PGPORT=fivefourthreetwo is not a port number");
}
