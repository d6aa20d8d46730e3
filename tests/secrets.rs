//! Secret hygiene of a whole migration: the password given through PGPASSWORD appears in no
//! process's argv while `pgshift run` works (pg_dump, pg_dumpall, pg_restore and psql children
//! included), and in nothing it prints or writes (events, errors, backup files, manifest,
//! inventory, journal, log, verify reports).

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

fn all_cmdlines() -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .collect()
}

fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_password_is_in_no_argv_output_or_file_of_a_whole_run() {
    let s = common::servers();
    assert!(s.password.len() >= 12, "a distinctive password to search for");
    let src = common::rich_db(&s.source, "secret_src").await;
    common::drop_db(&s.target, "secret_tgt").await;
    let tgt = common::url_for(&s.target, "secret_tgt");
    let dir = tempfile::tempdir().unwrap();
    let plan = common::write_plan(dir.path(), &src, &tgt, "");

    let mut child = Command::new(assert_cmd::cargo::cargo_bin("pgshift"))
        .args(["run", "--plan", plan.to_str().unwrap(), "--yes", "--json"])
        .env("PGPASSWORD", &s.password)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap());
    let err_reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());

    // watch every process's argv until the run ends
    let mut seen_tools = BTreeSet::new();
    let mut argv_hits = Vec::new();
    while child.try_wait().unwrap().is_none() {
        for cmd in all_cmdlines() {
            if cmd.contains(&s.password) {
                argv_hits.push(cmd.clone());
            }
            for tool in ["pg_dump ", "pg_dumpall ", "pg_restore ", "psql "] {
                if cmd.contains(&format!("/{tool}")) && cmd.contains("--no-password") {
                    seen_tools.insert(tool.trim().to_string());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = child.wait().unwrap();
    let (out, err) = (out_reader.join().unwrap(), err_reader.join().unwrap());
    assert!(status.success(), "{err}");
    assert!(argv_hits.is_empty(), "password in argv: {argv_hits:?}");
    assert!(seen_tools.contains("pg_dump"), "the watch saw pgshift's children: {seen_tools:?}");

    assert!(!out.contains(&s.password) && !err.contains(&s.password), "password in pgshift's output");
    let mut files = Vec::new();
    files_under(dir.path(), &mut files);
    assert!(files.len() >= 10, "the run wrote its files: {files:?}");
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(&s.password), "password in {}", f.display());
    }
    tokio::join!(common::drop_db(&s.source, "secret_src"), common::drop_db(&s.target, "secret_tgt"));
}
