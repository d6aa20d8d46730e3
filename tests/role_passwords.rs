//! After cutover the application logs in: login roles with passwords (SCRAM and MD5, with VALID
//! UNTIL and a connection limit), as the plan carries them or says in advance it will not.
//! Without `role_passwords` the pre-flight names the roles, verify shows each missing password as a
//! planned difference, and the role cannot log in on the target; with it the role logs in with its
//! password, and its hash appears in no output or file but `roles.sql`.

mod common;

use std::path::Path;

const SCRAM_ROLE: &str = "pgshift_pw_app";
const MD5_ROLE: &str = "pgshift_pw_legacy";
const PASSWORD: &str = "app-secret-9c41";

fn run_dir(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir.join("backups")).unwrap().flatten().map(|e| e.path()).next().expect("a run directory")
}

/// Every file under `dir`, with its contents.
fn files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

async fn logs_in(target_db_url: &str, role: &str) -> Result<(), String> {
    let url = target_db_url.replacen("postgresql://postgres@", &format!("postgresql://{role}:{PASSWORD}@"), 1);
    match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            client.simple_query("SELECT 1").await.map(|_| ()).map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn login_roles_keep_their_passwords_or_the_run_says_in_advance_that_they_will_not() {
    let s = common::servers();
    // roles are the cluster's: start the target's from no password (an earlier run may have set one)
    let target_admin = common::connect(&s.target).await;
    for role in [SCRAM_ROLE, MD5_ROLE] {
        target_admin
            .batch_execute(&format!(
                "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN ALTER ROLE {role} PASSWORD NULL; END IF; END $$"
            ))
            .await
            .unwrap();
    }
    let src = common::db_with(
        &s.source,
        "pw_src",
        &format!(
            "DO $$ BEGIN CREATE ROLE {SCRAM_ROLE}; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             DO $$ BEGIN CREATE ROLE {MD5_ROLE}; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             SET password_encryption = 'scram-sha-256';
             ALTER ROLE {SCRAM_ROLE} LOGIN PASSWORD '{PASSWORD}' VALID UNTIL '2031-06-30 12:00:00+00' CONNECTION LIMIT 7;
             SET password_encryption = 'md5';
             ALTER ROLE {MD5_ROLE} LOGIN PASSWORD '{PASSWORD}';
             CREATE TABLE orders (id int PRIMARY KEY, total numeric);
             INSERT INTO orders SELECT i, i * 1.5 FROM generate_series(1, 100) i;
             GRANT SELECT ON orders TO {SCRAM_ROLE}, {MD5_ROLE};"
        ),
    )
    .await;
    let hashes = common::strings(
        &src,
        &format!("SELECT rolpassword FROM pg_authid WHERE rolname IN ('{SCRAM_ROLE}', '{MD5_ROLE}') ORDER BY 1"),
    )
    .await;
    assert!(hashes.iter().any(|h| h.starts_with("SCRAM-SHA-256$")) && hashes.iter().any(|h| h.starts_with("md5")));

    // 1. the plan does not carry passwords: said before anything is written, planned in verify
    common::drop_db(&s.target, "pw_plain_target").await;
    let tgt = common::url_for(&s.target, "pw_plain_target");
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = common::run_plan(&common::write_plan(dir.path(), &src, &tgt, ""));
    assert_eq!(code, 0, "{out}");
    let warning = out.lines().find(|l| l.contains("will not carry")).unwrap_or_else(|| panic!("{out}"));
    assert!(warning.contains(SCRAM_ROLE) && warning.contains(MD5_ROLE), "{warning}");
    assert!(warning.contains("role_passwords = true"), "the fix: {warning}");
    let before_backup = out.find("will not carry").unwrap() < out.find("[backup] started").unwrap();
    assert!(before_backup, "the pre-flight says it first: {out}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir(dir.path()).join("verify.json")).unwrap()).unwrap();
    let differences = report["differences"].as_array().unwrap();
    for role in [SCRAM_ROLE, MD5_ROLE] {
        let d = differences
            .iter()
            .find(|d| d["class"] == "role_passwords" && d["name"] == role)
            .unwrap_or_else(|| panic!("{role}: {differences:#?}"));
        assert!(d["allowed"].as_str().unwrap().contains("role_passwords = false"), "{d}");
        assert_eq!(d["target"], "none", "{d}");
    }
    assert_eq!(
        differences.iter().find(|d| d["class"] == "role_passwords" && d["name"] == SCRAM_ROLE).unwrap()["source"],
        "SCRAM-SHA-256"
    );
    assert!(!differences.iter().any(|d| d["class"] == "roles"), "attributes arrive: {differences:#?}");
    let attributes = common::strings(
        &tgt,
        &format!("SELECT format('%s %s', rolconnlimit, rolvaliduntil AT TIME ZONE 'UTC') FROM pg_roles WHERE rolname = '{SCRAM_ROLE}'"),
    )
    .await;
    assert_eq!(attributes, ["7 2031-06-30 12:00:00"]);
    assert!(logs_in(&tgt, SCRAM_ROLE).await.is_err(), "no password on the target: the run said so");

    // 2. the plan carries them: the application role logs in on the target with its password
    common::drop_db(&s.target, "pw_carried_target").await;
    let tgt = common::url_for(&s.target, "pw_carried_target");
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = common::run_plan(&common::write_plan(dir.path(), &src, &tgt, "role_passwords = true\n"));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("will not carry"), "{out}");
    let md5 = out.lines().find(|l| l.contains("MD5 password hash")).unwrap_or_else(|| panic!("{out}"));
    assert!(md5.contains(MD5_ROLE) && !md5.contains(SCRAM_ROLE), "{md5}");
    logs_in(&tgt, SCRAM_ROLE).await.expect("the application role logs in on the target with its password");
    let rows = common::strings(&tgt, "SELECT count(*)::text FROM orders").await;
    assert_eq!(rows, ["100"]);
    let report = std::fs::read_to_string(run_dir(dir.path()).join("verify.json")).unwrap();
    assert!(report.contains("\"clean\": true") || report.contains("\"clean\":true"), "{report}");
    // the hashes travel only inside roles.sql
    for hash in &hashes {
        assert!(!out.contains(hash.as_str()), "a hash in the output");
        for (path, bytes) in files(dir.path()) {
            let holds = String::from_utf8_lossy(&bytes).contains(hash.as_str());
            let roles_sql = path.file_name().is_some_and(|n| n == "roles.sql");
            assert!(!holds || roles_sql, "a password hash in {}", path.display());
            if roles_sql {
                assert!(holds, "roles.sql carries the hash");
            }
        }
    }
    tokio::join!(
        common::drop_db(&s.source, "pw_src"),
        common::drop_db(&s.target, "pw_plain_target"),
        common::drop_db(&s.target, "pw_carried_target")
    );
}
