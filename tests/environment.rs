//! `pgshift env` against the real Docker engine of this machine. It has no image registry, so the
//! test Dockerfile (tests/env/docker/) builds on the image tests/env/build-root.sh imports from the
//! Debian trixie root — through the same code path a user's Dockerfile.timescaledb takes.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pgshift::engine::{Event, StageStatus};

const BASE_IMAGE: &str = "pgshift-test/timescaledb-pgvector:17";

fn test_dockerfile() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/env/docker/Dockerfile")
}

/// Fails (never skips) when the engine or the base image is missing.
fn require_base_image() {
    let out = Command::new("docker").args(["image", "inspect", BASE_IMAGE]).output().expect("docker CLI");
    assert!(
        out.status.success(),
        "the Docker engine must answer and hold {BASE_IMAGE}: run `bash tests/env/build-root.sh` (it imports it)"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Removes the test's container, volume and image however the test ends.
struct Cleanup {
    name: String,
    image: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", "-v", &self.name]).output();
        let _ = Command::new("docker").args(["volume", "rm", "-f", &format!("{}-data", self.name)]).output();
        if let Some(image) = &self.image {
            let _ = Command::new("docker").args(["rmi", "-f", image]).output();
        }
    }
}

fn container_exists(name: &str) -> bool {
    Command::new("docker").args(["container", "inspect", name]).output().unwrap().status.success()
}

fn docker_inspect(name: &str, format: &str) -> String {
    let out = Command::new("docker").args(["inspect", "--format", format, name]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn pgshift_env(args: &[&str]) -> Output {
    common::pgshift().env_remove("PGPASSWORD").arg("env").args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn events(out: &Output) -> Vec<Event> {
    text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn assert_one_error_line(out: &Output, code: i32, needle: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}\nstdout: {}", text(&out.stdout));
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr: {stderr}");
    assert!(lines[0].starts_with("pgshift: ") && lines[0].contains(needle), "expected {needle:?}: {stderr}");
    assert!(lines[0].contains("(fix: "), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn build_create_start_wait_exec_connect_reuse_and_remove() {
    require_base_image();
    let name = "pgshift-test-env-life";
    let image = "pgshift-test/target:life";
    let _cleanup = Cleanup { name: name.into(), image: Some(image.into()) };
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("target.pgpass");
    let port = free_port().to_string();
    let dockerfile = test_dockerfile();
    let up_args = [
        "up",
        "--name",
        name,
        "--image",
        image,
        "--dockerfile",
        dockerfile.to_str().unwrap(),
        "--port",
        &port,
        "--password-file",
        pw_file.to_str().unwrap(),
        "--timeout",
        "120",
        "--json",
    ];
    let out = pgshift_env(&up_args);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stderr), text(&out.stdout));
    let ev = events(&out);
    assert!(
        ev.iter().any(|e| matches!(e, Event::Output { source, line, .. } if source == "docker build" && line.starts_with("Step 1/"))),
        "build output streamed line by line: {ev:#?}"
    );
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::Output { source, line, .. } if source == "health" && line.starts_with("healthy"))));
    assert!(
        ev.iter().any(|e| matches!(e, Event::Output { source, .. } if source == "container")),
        "the container's log is streamed while waiting"
    );
    // the test image carries the Timescale-licensed build, as the official image does
    assert!(
        !ev.iter().any(|e| matches!(e, Event::Warning { message, .. } if message.contains("Apache-only"))),
        "{ev:#?}"
    );
    match ev.last().unwrap() {
        Event::StageFinished { status, summary: Some(s), .. } => {
            assert_eq!(*status, StageStatus::Done);
            assert!(s.contains("TimescaleDB 2.19.3 (timescale license)") && s.contains("pgvector 0.8.0"), "{s}");
        }
        e => panic!("{e:?}"),
    }

    // the password: a 0600 file, in no output, not in the container's environment or command
    assert_eq!(std::fs::metadata(&pw_file).unwrap().permissions().mode() & 0o777, 0o600);
    let password = pgshift::plan::container::read_password(&pw_file).unwrap();
    assert!(password.len() >= 20);
    assert!(!text(&out.stdout).contains(&password) && !text(&out.stderr).contains(&password));
    let config = docker_inspect(name, "{{json .Config.Env}} {{json .Config.Cmd}} {{json .Args}}");
    assert!(!config.contains(&password) && config.contains("POSTGRES_PASSWORD_FILE"), "{config}");
    // published on loopback only, shared memory for parallel index builds, labelled as pgshift's
    assert_eq!(docker_inspect(name, "{{(index (index .HostConfig.PortBindings \"5432/tcp\") 0).HostIp}}"), "127.0.0.1");
    assert_eq!(docker_inspect(name, "{{.HostConfig.ShmSize}}"), (1u64 << 30).to_string());
    assert_eq!(docker_inspect(name, "{{index .Config.Labels \"org.pgshift.managed\"}}"), "true");

    // connect through the published port with the generated password: both extensions work
    let url = format!("postgresql://postgres@127.0.0.1:{port}/postgres");
    let mut config: tokio_postgres::Config = url.parse().unwrap();
    config.password(&password);
    let (client, conn) = config.connect(tokio_postgres::NoTls).await.expect("connect through the published port");
    tokio::spawn(conn);
    client
        .batch_execute(
            "CREATE EXTENSION timescaledb; CREATE EXTENSION vector; \
             CREATE TABLE m (t timestamptz NOT NULL, v vector(3)); \
             SELECT create_hypertable('m', 't'); INSERT INTO m VALUES (now(), '[1,2,3]')",
        )
        .await
        .unwrap();
    let license: String = client.query_one("SHOW timescaledb.license", &[]).await.unwrap().get(0);
    assert_eq!(license, "timescale");

    // psql inside the container: output streamed, exit code passed on
    let out = pgshift_env(&["psql", "--name", name, "-c", "SELECT extname FROM pg_extension ORDER BY 1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("timescaledb") && text(&out.stdout).contains("vector"));
    let out = pgshift_env(&["psql", "--name", name, "-c", "SELECT 1/0"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("division by zero"), "{}", text(&out.stderr));
    let sql = dir.path().join("q.sql");
    std::fs::write(&sql, "SELECT count(*) AS n FROM m;\nSELECT 'second statement' AS s;\n").unwrap();
    let out = pgshift_env(&["psql", "--name", name, "-f", sql.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("second statement"), "{}", text(&out.stdout));

    // status, logs
    let out = pgshift_env(&["status", "--name", name, "--password-file", pw_file.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["container"]["health"], "healthy");
    assert_eq!(status["server"]["timescaledb_license"], "timescale");
    let out = pgshift_env(&["logs", "--name", name, "--tail", "5"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(!text(&out.stdout).trim().is_empty());

    // a second `up` reuses the running container (same data: the table is still there)
    let out = pgshift_env(&up_args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(events(&out).iter().any(|e| matches!(e, Event::Output { line, .. } if line.contains("reusing it"))));
    assert_eq!(client.query_one("SELECT count(*) FROM m", &[]).await.unwrap().get::<_, i64>(0), 1);

    // a container that exists is reused only with the password file that created it, and a failed
    // reuse leaves it alone
    let other_pw = dir.path().join("other.pgpass");
    let mut wrong = up_args.to_vec();
    let pos = wrong.iter().position(|a| *a == "--password-file").unwrap();
    wrong[pos + 1] = other_pw.to_str().unwrap();
    let out = pgshift_env(&wrong);
    assert_one_error_line(&out, 3, "exists but its password file");
    assert!(container_exists(name) && !other_pw.exists());

    // removing needs --yes; then the container and, with --remove-data, its volume are gone
    let out = pgshift_env(&["down", "--name", name]);
    assert_one_error_line(&out, 2, "without confirmation");
    assert!(container_exists(name));
    let out = pgshift_env(&["down", "--name", name, "--yes", "--remove-data"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!container_exists(name));
    let volume = Command::new("docker").args(["volume", "inspect", &format!("{name}-data")]).output().unwrap();
    assert!(!volume.status.success(), "data volume removed");
}

#[test]
fn no_engine_is_one_clear_error() {
    let out = common::pgshift()
        .env("DOCKER_HOST", "tcp://127.0.0.1:1")
        .args(["env", "up", "--name", "pgshift-test-noengine", "--json"])
        .output()
        .unwrap();
    assert_one_error_line(&out, 2, "no Docker engine answers at tcp://127.0.0.1:1");
    let out = common::pgshift()
        .env("DOCKER_HOST", "tcp://127.0.0.1:1")
        .args(["env", "status", "--name", "pgshift-test-noengine"])
        .output()
        .unwrap();
    assert_one_error_line(&out, 2, "no Docker engine answers");
}

#[test]
fn a_failing_build_names_its_step_and_leaves_no_container() {
    require_base_image();
    let name = "pgshift-test-env-badbuild";
    let _cleanup = Cleanup { name: name.into(), image: Some("pgshift-test/target:badbuild".into()) };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), format!("FROM {BASE_IMAGE}\nRUN echo about to fail && false\n"))
        .unwrap();
    let dockerfile = dir.path().join("Dockerfile");
    let pw = dir.path().join("pw");
    let port = free_port().to_string();
    let out = pgshift_env(&[
        "up",
        "--name",
        name,
        "--image",
        "pgshift-test/target:badbuild",
        "--dockerfile",
        dockerfile.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
        "--port",
        &port,
        "--json",
    ]);
    assert_one_error_line(&out, 3, "image build failed at Step 2/2 : RUN echo about to fail && false");
    assert!(events(&out).iter().any(|e| matches!(e, Event::Output { line, .. } if line == "about to fail")));
    assert!(!container_exists(name));
}

#[test]
fn the_default_dockerfile_reports_an_unreachable_registry() {
    // Dockerfile.timescaledb starts FROM the official TimescaleDB image; this machine cannot pull it
    require_base_image();
    let name = "pgshift-test-env-default";
    let _cleanup = Cleanup { name: name.into(), image: Some("pgshift-test/never-built:1".into()) };
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    let port = free_port().to_string();
    let out = pgshift_env(&[
        "up",
        "--name",
        name,
        "--image",
        "pgshift-test/never-built:1",
        "--password-file",
        pw.to_str().unwrap(),
        "--port",
        &port,
        "--json",
    ]);
    assert_one_error_line(&out, 3, "image build failed");
    assert!(text(&out.stderr).contains("base image could not be pulled"), "{}", text(&out.stderr));
    assert!(!container_exists(name));
}

#[test]
fn a_port_in_use_is_refused_before_anything_is_built() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let name = "pgshift-test-env-port";
    let _cleanup = Cleanup { name: name.into(), image: None };
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    let out = pgshift_env(&["up", "--name", name, "--port", &port, "--password-file", pw.to_str().unwrap(), "--json"]);
    assert_one_error_line(&out, 2, &format!("port {port} is already in use"));
    assert!(!container_exists(name));
    assert!(!pw.exists(), "nothing written");
}

#[test]
fn a_container_that_never_becomes_healthy_times_out_and_is_removed() {
    require_base_image();
    let name = "pgshift-test-env-unhealthy";
    let image = "pgshift-test/target:unhealthy";
    let _cleanup = Cleanup { name: name.into(), image: Some(image.into()) };
    let dir = tempfile::tempdir().unwrap();
    // a server that never starts: the health check (pg_isready) can never pass
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {BASE_IMAGE}\nCMD [\"sh\", \"-c\", \"echo server not starting; sleep 600\"]\n"),
    )
    .unwrap();
    let dockerfile = dir.path().join("Dockerfile");
    let pw = dir.path().join("pw");
    let port = free_port().to_string();
    let out = pgshift_env(&[
        "up",
        "--name",
        name,
        "--image",
        image,
        "--dockerfile",
        dockerfile.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
        "--port",
        &port,
        "--timeout",
        "6",
        "--json",
    ]);
    assert_one_error_line(&out, 3, "did not become healthy within 6 s");
    assert!(text(&out.stderr).contains("server not starting"), "the last log lines are shown: {}", text(&out.stderr));
    assert!(!container_exists(name), "the failed container was removed");
}
