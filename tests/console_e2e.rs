//! The real binary in a pseudo-terminal (portable-pty), its screen read back through vt100: the
//! demo walked with keys against the real servers down to a clean verification view; Ctrl-C while a
//! stage runs; a panic. After each, the terminal must be back in cooked mode with the normal screen.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{drop_db, servers, url_for};
use portable_pty::{native_pty_system, CommandBuilder, PtySize};

struct Screen {
    parser: Arc<Mutex<vt100::Parser>>,
    raw: Arc<Mutex<Vec<u8>>>,
    writer: Box<dyn Write + Send>,
    child: Box<dyn portable_pty::Child + Send + Sync>,
    tty: PathBuf,
    _master: Box<dyn portable_pty::MasterPty + Send>,
}

impl Screen {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Screen {
        let pty = native_pty_system();
        let pair = pty.openpty(PtySize { rows: 48, cols: 120, pixel_width: 0, pixel_height: 0 }).expect("a pty");
        let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_pgshift"));
        cmd.args(args);
        cmd.env("PGPASSWORD", servers().password);
        cmd.env("TERM", "xterm-256color");
        cmd.env("LANG", "C.UTF-8");
        cmd.env_remove("LC_ALL");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = pair.slave.spawn_command(cmd).expect("pgshift starts in the pty");
        let tty = pair.master.tty_name().expect("the pty has a name");
        drop(pair.slave);
        let parser = Arc::new(Mutex::new(vt100::Parser::new(
            std::num::NonZeroU16::new(48).unwrap(),
            std::num::NonZeroU16::new(120).unwrap(),
            0,
        )));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let mut reader = pair.master.try_clone_reader().expect("pty reader");
        let (p, r) = (parser.clone(), raw.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                p.lock().unwrap().process(&buf[..n]);
                r.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let writer = pair.master.take_writer().expect("pty writer");
        Screen { parser, raw, writer, child, tty, _master: pair.master }
    }

    fn text(&self) -> String {
        self.parser.lock().unwrap().screen().contents()
    }

    /// Waits until the screen shows `needle` (the console redraws on every event it gets).
    fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.text().contains(needle) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("pgshift exited ({status:?}) before showing {needle:?}; screen:\n{}", self.text());
            }
            assert!(start.elapsed() < timeout, "no {needle:?} after {timeout:?}; screen:\n{}", self.text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn keys(&mut self, keys: &str) {
        self.writer.write_all(keys.as_bytes()).unwrap();
        self.writer.flush().unwrap();
    }

    fn exit_code(&mut self, timeout: Duration) -> u32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.exit_code();
            }
            assert!(start.elapsed() < timeout, "pgshift did not exit; screen:\n{}", self.text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The terminal after pgshift left: cooked mode (icanon, echo) and the normal screen.
    fn assert_restored(&self) {
        let stty = std::process::Command::new("stty").arg("-F").arg(&self.tty).arg("-a").output().unwrap();
        let modes = String::from_utf8_lossy(&stty.stdout).to_string();
        let words: Vec<&str> = modes.split_whitespace().collect();
        assert!(words.contains(&"icanon") && words.contains(&"echo"), "raw mode left on: {modes}");
        let raw = self.raw.lock().unwrap();
        let text = String::from_utf8_lossy(&raw);
        let entered = text.rfind("\x1b[?1049h").expect("the console used the alternate screen");
        let left = text.rfind("\x1b[?1049l").expect("the console left the alternate screen");
        assert!(left > entered, "the alternate screen was left after it was entered");
        assert!(!self.parser.lock().unwrap().screen().alternate_screen(), "back on the normal screen");
    }
}

fn demo_args<'a>(dir: &'a str, db: &'a str, s: &'a common::Servers, bin: &'a str) -> Vec<&'a str> {
    vec![
        "demo",
        "--source",
        &s.source,
        "--target",
        &s.target,
        "--dir",
        dir,
        "--database",
        db,
        "--bin-dir",
        bin,
        "--lang",
        "en",
    ]
}

fn bin_dir() -> String {
    std::env::var("PGSHIFT_TEST_BIN_DIR").expect("PGSHIFT_TEST_BIN_DIR is not set: run `bash tests/env/up.sh`")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_walked_with_keys_ends_on_a_clean_verification_view() {
    let s = servers();
    let db = format!("demo_e2e_{}", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo").display().to_string();
    let bin = bin_dir();
    let mut screen = Screen::start(&demo_args(&dir, &db, &s, &bin), &[]);
    screen.wait_for("pre-flight checks passed", Duration::from_secs(120));
    assert!(screen.text().contains("Checklist"));
    screen.keys("a");
    screen.wait_for("Run every remaining stage?", Duration::from_secs(10));
    screen.keys("y");
    // the console switches to the verification view when the run's verify reports
    screen.wait_for("no differences beyond", Duration::from_secs(300));
    let view = screen.text();
    // 7 planned changes, and the chunks the converted table gets (planned with it)
    let planned: usize = view
        .split("CLEAN: no differences beyond ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a clean verification: {view}"));
    assert!(planned > 7, "{view}");
    assert!(view.contains("hypertables") && view.contains("vector columns"), "{view}");
    // drill down to the per-table rows and checksums: every table the same
    for _ in 0..40 {
        screen.keys("j");
    }
    screen.wait_for("Details · table rows", Duration::from_secs(5));
    let rows = screen.text();
    assert!(rows.contains("energy.readings") && rows.contains("same"), "{rows}");
    assert!(!rows.contains("count ") && !rows.contains("content"), "{rows}");
    screen.keys("1");
    screen.wait_for("Output:", Duration::from_secs(5));
    let checklist = screen.text();
    assert_eq!(checklist.matches('✔').count(), 9, "every stage done:\n{checklist}");
    screen.keys("q");
    assert_eq!(screen.exit_code(Duration::from_secs(30)), 0);
    screen.assert_restored();
    let raw = String::from_utf8_lossy(&screen.raw.lock().unwrap()).to_string();
    assert!(raw.contains("9 of 9 stages done"), "the farewell line is printed on the normal screen");
    assert!(!raw.contains(&s.password), "the password never reaches the terminal");
    drop_db(&s.source, &db).await;
    drop_db(&s.target, &db).await;
}

/// Processes that still work on `db` (pg_dump, psql and pg_restore carry it in their environment).
fn children_working_on(db: &str) -> Vec<String> {
    let needle = format!("PGDATABASE={db}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
        .filter_map(|e| {
            let env = std::fs::read(e.path().join("environ")).ok()?;
            let env = String::from_utf8_lossy(&env).to_string();
            env.split('\0').any(|v| v == needle).then(|| {
                String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).unwrap_or_default()).replace('\0', " ")
            })
        })
        .collect()
}

/// A tools directory like the test environment's, whose pg_dump first sleeps: a slow tool, so that
/// Ctrl-C surely lands while a child process of the backup runs.
fn slow_pg_dump_bin(dir: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let real = bin_dir();
    std::fs::create_dir_all(dir).unwrap();
    for e in std::fs::read_dir(&real).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let pause = if name == "pg_dump" { "case \"$1\" in --version) ;; *) sleep 60 ;; esac\n" } else { "" };
        let path = dir.join(&name);
        std::fs::write(&path, format!("#!/bin/sh\n{pause}exec {real}/{name} \"$@\"\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir.display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_while_a_stage_runs_stops_everything_and_restores_the_terminal() {
    let s = servers();
    let db = format!("demo_ctrlc_{}", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo").display().to_string();
    let bin = slow_pg_dump_bin(&tmp.path().join("slowbin"));
    let mut screen = Screen::start(&demo_args(&dir, &db, &s, &bin), &[]);
    screen.wait_for("pre-flight checks passed", Duration::from_secs(120));
    screen.keys("a");
    screen.wait_for("Run every remaining stage?", Duration::from_secs(10));
    screen.keys("y");
    // wait until the backup's pg_dump (its wrapper sleeping) runs
    let start = Instant::now();
    while !children_working_on(&db).iter().any(|c| c.contains("sleep 60")) {
        assert!(start.elapsed() < Duration::from_secs(60), "pg_dump never started; screen:\n{}", screen.text());
        std::thread::sleep(Duration::from_millis(50));
    }
    screen.keys("\x03"); // Ctrl-C in raw mode arrives as a key
    assert_eq!(screen.exit_code(Duration::from_secs(30)), 130);
    screen.assert_restored();
    assert_eq!(children_working_on(&db), Vec::<String>::new(), "no child process left");
    let holder = common::connect(&url_for(&s.source, "postgres")).await;
    let sessions: i64 =
        holder.query_one("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", &[&db]).await.unwrap().get(0);
    assert_eq!(sessions, 0, "no pgshift session left on the source database");
    let journals: Vec<_> = std::fs::read_dir(PathBuf::from(&dir).join("backups"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("journal.json"))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(journals.len(), 1);
    let journal = std::fs::read_to_string(&journals[0]).unwrap();
    assert!(journal.contains("\"cancelled\""), "{journal}");
    drop_db(&s.source, &db).await;
    drop_db(&s.target, &db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_restores_the_terminal_before_its_report() {
    let s = servers();
    let tmp = tempfile::tempdir().unwrap();
    let plan = common::write_plan(tmp.path(), &url_for(&s.source, "postgres"), &url_for(&s.target, "nothing_here"), "");
    let plan = plan.display().to_string();
    let mut screen = Screen::start(&["console", "--plan", &plan], &[("PGSHIFT_TEST_PANIC", "1")]);
    let code = screen.exit_code(Duration::from_secs(30));
    assert_eq!(code, 101, "a panic exits with Rust's panic code");
    screen.assert_restored();
    let raw = String::from_utf8_lossy(&screen.raw.lock().unwrap()).to_string();
    let left = raw.find("\x1b[?1049l").unwrap();
    let report = raw.find("PGSHIFT_TEST_PANIC: a panic requested").expect("the panic report is shown");
    assert!(report > left, "the report comes after the terminal was restored, so it is readable");
}
