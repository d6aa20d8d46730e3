//! `pgshift demo` headless with the two targets the console tests do not use: a container built
//! through the real Docker engine, and local servers started with initdb/pg_ctl (run inside the test
//! root as its `postgres` user, since initdb refuses root and the root has TimescaleDB and pgvector).

mod common;

use std::path::Path;
use std::process::Command;

use common::{drop_db, pgshift, servers};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_migrates_into_a_container_it_builds_and_verifies_clean() {
    let s = servers();
    let bin = std::env::var("PGSHIFT_TEST_BIN_DIR").expect("PGSHIFT_TEST_BIN_DIR: run `bash tests/env/up.sh`");
    let image = std::env::var("PGSHIFT_TEST_IMAGE").expect("PGSHIFT_TEST_IMAGE: run `bash tests/env/up.sh`");
    assert!(
        Command::new("docker").args(["image", "inspect", &image]).output().unwrap().status.success(),
        "the test image {image} is missing: run `bash tests/env/up.sh` with a Docker engine"
    );
    let db = format!("demo_ctr_{}", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/env/docker/Dockerfile");
    let port = free_port().to_string();
    let out = pgshift()
        .args(["demo", "--headless", "--reset", "--source", &s.source, "--database", &db, "--bin-dir", &bin])
        .args(["--dockerfile", dockerfile.to_str().unwrap(), "--image", "pgshift-test/demo-target:17", "--port", &port])
        .arg("--dir")
        .arg(tmp.path().join("demo"))
        .timeout(std::time::Duration::from_secs(600))
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    let cleanup = || {
        pgshift().args(["env", "down", "--name", "pgshift-demo", "--yes", "--remove-data"]).output().unwrap();
    };
    if out.status.code() != Some(0) {
        cleanup();
        panic!("demo failed: {stdout}\n{stderr}");
    }
    assert!(stdout.contains("migration complete and verified clean"), "{stdout}");
    assert!(stderr.contains("[environment] started") && stderr.contains("healthy"), "{stderr}");
    let plan = std::fs::read_to_string(tmp.path().join("demo/demo.toml")).unwrap();
    assert!(plan.contains("[target.container]") && plan.contains("pgshift-demo"), "{plan}");
    assert!(!plan.contains(&s.password) && !stdout.contains(&s.password) && !stderr.contains(&s.password));
    cleanup();
    drop_db(&s.source, &db).await;
}

#[test]
fn the_demo_starts_local_servers_when_no_engine_answers_and_stops_them_after() {
    let root = std::env::var("PGSHIFT_TEST_ROOT").expect("PGSHIFT_TEST_ROOT: run `bash tests/env/up.sh`");
    // a directory under /tmp, which the test root shares, owned by the root's postgres user
    let tmp = tempfile::Builder::new().prefix("pgshift-demo-local").tempdir_in("/tmp").unwrap();
    let passwd = std::fs::read_to_string(Path::new(&root).join("etc/passwd")).unwrap();
    let ids: Vec<u32> = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .map(|l| l.split(':').skip(2).take(2).map(|n| n.parse().unwrap()).collect())
        .expect("the test root has a postgres user");
    let exe = tmp.path().join("pgshift");
    std::fs::copy(env!("CARGO_BIN_EXE_pgshift"), &exe).unwrap();
    nix::unistd::chown(tmp.path(), Some(ids[0].into()), Some(ids[1].into())).unwrap();
    let dir = tmp.path().join("demo");
    let out = Command::new("chroot")
        .args(["--userspec=postgres:postgres", &root, "env", "-i", "LANG=C.UTF-8", "PATH=/usr/bin:/bin"])
        .arg(format!("HOME={}", tmp.path().display()))
        .arg(&exe)
        .args(["demo", "--headless", "--bin-dir", "/usr/lib/postgresql/17/bin", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("migration complete and verified clean"), "{stdout}");
    let plan = std::fs::read_to_string(dir.join("demo.toml")).unwrap();
    assert!(plan.contains("source-cluster") && plan.contains("target-cluster"), "{plan}");
    for cluster in ["source-cluster", "target-cluster"] {
        assert!(dir.join(cluster).join("PG_VERSION").exists(), "{cluster} was created");
        assert!(!dir.join(cluster).join("postmaster.pid").exists(), "{cluster} was stopped at the end");
    }
    // the clusters listened only on their own socket
    let conf = std::fs::read_to_string(dir.join("target-cluster/postgresql.conf")).unwrap();
    assert!(conf.contains("listen_addresses = ''"));
    // as root, the local path refuses with one line
    let out = pgshift()
        .args(["demo", "--headless", "--dir"])
        .arg(tmp.path().join("as-root"))
        .env("DOCKER_HOST", "tcp://127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert_eq!(err.lines().filter(|l| l.starts_with("pgshift:")).count(), 1, "{err}");
    assert!(err.contains("cannot be started as root") && err.contains("fix:"), "{err}");
}

#[test]
fn a_password_in_the_demo_connections_is_refused_before_anything_is_made() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let out = pgshift()
        .args(["demo", "--headless", "--source", "postgresql://postgres:s3cret-pw@127.0.0.1:1/x", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("PGPASSWORD") && !err.contains("s3cret-pw"), "{err}");
    assert!(!dir.exists(), "nothing made");
}
