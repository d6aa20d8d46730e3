//! The stage watcher's view of the servers (src/engine/activity.rs), read on a real server while a
//! session of an application runs: an index build and a COPY with their progress and the
//! relation they work on, and a session held on a lock named with the one holding it.

mod common;

use std::time::{Duration, Instant};

use pgshift::engine::activity::{activity_sql, parse_progress};
use pgshift::engine::Unit;

/// Polls the activity query for `app` until `found` accepts a row (pid, statement, wait, blocker,
/// progress, label, is a COPY, seconds running) or `limit` passes.
async fn poll(
    watcher: &tokio_postgres::Client,
    app: &str,
    limit: Duration,
    found: impl Fn(&tokio_postgres::Row) -> bool,
) -> Option<tokio_postgres::Row> {
    let version: i32 =
        watcher.query_one("SELECT current_setting('server_version_num')::int", &[]).await.unwrap().get(0);
    let sql = activity_sql(version);
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        for row in watcher.query(sql.as_str(), &[&app]).await.expect("activity query") {
            if found(&row) {
                return Some(row);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn session(url: &str, app: &str) -> tokio_postgres::Client {
    let c = common::connect(url).await;
    c.batch_execute(&format!("SET application_name = '{app}'")).await.unwrap();
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn index_builds_copies_and_lock_waits_are_read_from_the_server() {
    let s = common::servers();
    let url = common::db_with(
        &s.target,
        "progress_watch",
        "CREATE FUNCTION slow_key(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN PERFORM pg_sleep(0.001); RETURN i; END $$;
         CREATE TABLE items (id int, note text);
         INSERT INTO items SELECT i, md5(i::text) FROM generate_series(1, 1500) i;",
    )
    .await;
    let watcher = common::connect(&url).await;

    // an index build: bytes or rows done of a total, on the table by name
    let app = "pgshift test-index";
    let builder = session(&url, app).await;
    let build =
        tokio::spawn(async move { builder.batch_execute("CREATE INDEX items_slow ON items (slow_key(id))").await });
    let row = poll(&watcher, app, Duration::from_secs(20), |r| r.get::<_, Option<String>>(5).is_some()).await;
    let row = row.expect("the index build seen with its progress");
    assert_eq!(row.get::<_, Option<String>>(5).as_deref(), Some("create index on items"));
    let (done, total, _) = parse_progress(&row.get::<_, String>(4)).expect("progress");
    assert!(total.is_some_and(|t| t > 0 && done <= t), "{done} of {total:?}");
    build.await.unwrap().unwrap();

    // a COPY of a query: rows so far, no total
    let app = "pgshift test-copy";
    let copier = session(&url, app).await;
    let copy = tokio::spawn(async move {
        let out = copier.copy_out("COPY (SELECT slow_key(id) FROM items) TO STDOUT").await.unwrap();
        futures_util::pin_mut!(out);
        let mut n = 0usize;
        while let Some(chunk) = futures_util::StreamExt::next(&mut out).await {
            n += chunk.unwrap().len();
        }
        n
    });
    let row = poll(&watcher, app, Duration::from_secs(20), |r| {
        r.get::<_, Option<String>>(4).and_then(|j| parse_progress(&j)).is_some_and(|(done, _, _)| done > 0)
    })
    .await
    .expect("the COPY seen with rows done");
    let (_, total, unit) = parse_progress(&row.get::<_, String>(4)).unwrap();
    assert_eq!((total, unit), (None, Unit::Rows));
    assert!(row.get::<_, String>(1).starts_with("COPY (SELECT slow_key(id)"), "the statement");
    assert!(row.get::<_, bool>(6), "told a COPY");
    assert!(copy.await.unwrap() > 0);

    // a COPY whose text names a password: the text hidden, still told a COPY (the data stage
    // meters its own and must not get a second gauge for it)
    let app = "pgshift test-copy-secret";
    let copier = session(&url, app).await;
    let copy = tokio::spawn(async move {
        let out = copier.copy_out("COPY (SELECT slow_key(id) AS password FROM items) TO STDOUT").await.unwrap();
        futures_util::pin_mut!(out);
        while let Some(chunk) = futures_util::StreamExt::next(&mut out).await {
            chunk.unwrap();
        }
    });
    let row = poll(&watcher, app, Duration::from_secs(20), |r| r.get::<_, Option<String>>(4).is_some())
        .await
        .expect("the COPY seen");
    assert!(row.get::<_, String>(1).contains("naming a password, not shown"), "{:?}", row.get::<_, String>(1));
    assert!(row.get::<_, bool>(6), "told a COPY although its text is hidden");
    copy.await.unwrap();

    // a statement no progress view covers: how long it has run, which the watcher shows once it
    // passes 2 s
    let app = "pgshift test-plain";
    let sleeper = session(&url, app).await;
    let sleep = tokio::spawn(async move { sleeper.batch_execute("SELECT pg_sleep(4)").await });
    let row = poll(&watcher, app, Duration::from_secs(20), |r| r.get::<_, Option<i64>>(7).is_some_and(|s| s >= 2))
        .await
        .expect("the statement seen running for 2 s");
    assert!(row.get::<_, Option<String>>(4).is_none(), "no progress view covers it");
    assert!(row.get::<_, String>(1).starts_with("SELECT pg_sleep(4)"), "{}", row.get::<_, String>(1));
    sleep.await.unwrap().unwrap();

    // a session held on a lock: the wait, and the session that holds it with its statement
    let holder = common::connect(&url).await;
    let holder_pid: i32 = holder.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    holder.batch_execute("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let app = "pgshift test-lock";
    let waiter = session(&url, app).await;
    let wait = tokio::spawn(async move { waiter.batch_execute("ANALYZE items").await });
    let row = poll(&watcher, app, Duration::from_secs(20), |r| r.get::<_, Option<String>>(2).is_some())
        .await
        .expect("the wait seen");
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("Lock relation"));
    let blocker: String = row.get::<_, Option<String>>(3).expect("the holder named");
    assert!(blocker.starts_with(&format!("pid {holder_pid} (")), "{blocker}");
    assert!(
        blocker.contains("idle in transaction") && blocker.contains("LOCK TABLE items IN ACCESS EXCLUSIVE MODE"),
        "{blocker}"
    );
    // a holder's statement that names a password is not shown (nor is any secret in it)
    holder.batch_execute("SELECT 'the password is hunter2'").await.unwrap();
    let row = poll(&watcher, app, Duration::from_secs(20), |r| {
        r.get::<_, Option<String>>(3).is_some_and(|b| b.contains("naming a password, not shown"))
    })
    .await
    .expect("the holder's new statement hidden");
    assert!(!row.get::<_, String>(3).contains("hunter2"));
    holder.batch_execute("ROLLBACK").await.unwrap();
    wait.await.unwrap().unwrap();
    common::drop_db(&s.target, "progress_watch").await;
}
