//! The server settings an application relies on: a source server with a non-default time zone and
//! date style. The pre-flight names each difference before anything is written, verify lists them
//! beside the target's values, and a `[target.settings]` entry sets one on the target (and is then
//! no longer a difference). Alone in its test binary: it changes both servers' configuration, and
//! puts it back, also when it fails.

mod common;

use std::path::Path;

/// Resets what the test set with ALTER SYSTEM, on drop (so also when an assertion fails).
struct Reset(Vec<(String, &'static str)>);

impl Drop for Reset {
    fn drop(&mut self) {
        for (url, name) in &self.0 {
            common::psql(url, &format!("ALTER SYSTEM RESET {name};\nSELECT pg_reload_conf();\n"));
        }
    }
}

fn report(dir: &Path) -> (serde_json::Value, String) {
    let run = std::fs::read_dir(dir.join("backups")).unwrap().flatten().map(|e| e.path()).next().unwrap();
    let json = serde_json::from_str(&std::fs::read_to_string(run.join("verify.json")).unwrap()).unwrap();
    (json, std::fs::read_to_string(run.join("verify.md")).unwrap())
}

fn setting<'a>(report: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    report["settings"].as_array().and_then(|a| a.iter().find(|d| d["name"] == name))
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_that_change_results_are_named_before_the_run_and_set_by_the_plan() {
    let s = common::servers();
    let _reset =
        Reset(vec![(s.source.clone(), "timezone"), (s.source.clone(), "datestyle"), (s.target.clone(), "timezone")]);
    common::psql(
        &s.source,
        "ALTER SYSTEM SET timezone = 'Asia/Seoul';\nALTER SYSTEM SET datestyle = 'SQL, DMY';\nSELECT pg_reload_conf();\n",
    );
    let src = common::db_with(
        &s.source,
        "settings_src",
        "CREATE TABLE visits (id int PRIMARY KEY, at timestamptz NOT NULL);
         INSERT INTO visits SELECT i, '2026-03-01 09:00+09'::timestamptz + i * interval '1 hour' FROM generate_series(1, 50) i;",
    )
    .await;
    assert_eq!(common::strings(&src, "SHOW TimeZone").await, ["Asia/Seoul"]);
    let target_zone = common::strings(&s.target, "SHOW TimeZone").await[0].clone();
    assert_ne!(target_zone, "Asia/Seoul");

    // 1. named by the pre-flight, before the backup, and by verify
    common::drop_db(&s.target, "settings_target").await;
    let tgt = common::url_for(&s.target, "settings_target");
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = common::run_plan(&common::write_plan(dir.path(), &src, &tgt, ""));
    assert_eq!(code, 0, "{out}");
    for (name, value) in [("TimeZone", "Asia/Seoul"), ("DateStyle", "SQL, DMY")] {
        let line = format!("server setting {name} is '{value}' on the source");
        let at = out.find(&line).unwrap_or_else(|| panic!("{line}: {out}"));
        assert!(at < out.find("[backup] started").unwrap(), "before anything is written: {out}");
    }
    let (json, markdown) = report(dir.path());
    let zone = setting(&json, "TimeZone").unwrap_or_else(|| panic!("{json:#}"));
    assert_eq!(zone["source"], "Asia/Seoul");
    assert_eq!(zone["target"], target_zone.as_str());
    assert_eq!(zone["kind"], "behaviour");
    assert!(setting(&json, "DateStyle").is_some());
    assert_eq!(json["clean"], true, "the servers' settings are listed, not counted as lost objects");
    assert!(markdown.contains("## Server settings that differ") && markdown.contains("Asia/Seoul"), "{markdown}");

    // 2. the plan sets the time zone on the target: no longer warned about, nor different
    common::drop_db(&s.target, "settings_target").await;
    let dir = tempfile::tempdir().unwrap();
    let plan = common::write_plan(dir.path(), &src, &tgt, "[target.settings]\nTimeZone = \"Asia/Seoul\"\n");
    let (code, out) = common::run_plan(&plan);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("TimeZone = 'Asia/Seoul' set on the target"), "{out}");
    assert!(!out.contains("server setting TimeZone is"), "{out}");
    assert!(out.contains("server setting DateStyle is"), "the other one is still named: {out}");
    assert_eq!(common::strings(&tgt, "SHOW TimeZone").await, ["Asia/Seoul"]);
    let (json, _) = report(dir.path());
    assert!(setting(&json, "TimeZone").is_none(), "{json:#}");
    assert!(setting(&json, "DateStyle").is_some(), "{json:#}");

    // 3. a setting the target does not have: one clear line, nothing set
    let dir = tempfile::tempdir().unwrap();
    let plan = common::write_plan(dir.path(), &src, &tgt, "[target.settings]\nno_such_setting = \"1\"\n");
    let (code, out) = common::run_plan(&plan);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("no_such_setting"), "{out}");
    assert!(!out.contains("[backup] started"), "refused in the pre-flight: {out}");
    common::drop_db(&s.source, "settings_src").await;
    common::drop_db(&s.target, "settings_target").await;
}
