//! Large objects: planned in pieces of consecutive OIDs (up to `PIECE_BYTES` or `PIECE_OBJECTS`
//! each) that join the table pieces in the same queue, largest first. A piece, in one target
//! transaction, drops what an earlier try left of its objects, creates each with its source OID
//! (applications keep OIDs in their columns) and its contents read at the copy's snapshot — small
//! ones together, whole; larger ones streamed in `CHUNK_BYTES` reads (`loread` on the source,
//! `lowrite` on the target, the next read overlapping the last write), so memory stays at a few
//! MiB per worker whatever an object's size —, then sets their owners, grants and comments. Their metadata comes from the source's catalog, not the archive
//! (pg_dump places it in another section from one major to the next).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::errors::{srcerr, tgt};
use super::plan::{Piece, Route};
use super::progress::Progress;
use crate::catalog::{Session, TableInfo};
use crate::engine::{StageContext, Unit};
use crate::error::UserError;
use crate::postgres::sql::{quote_ident, quote_literal};

/// The name large objects go by in progress, messages and `data-progress.json`.
pub const NAME: &str = "large objects";
/// One read from the source and one write to the target.
const CHUNK_BYTES: i32 = 2 << 20;
/// A piece holds consecutive objects up to about this many bytes, or this many objects.
const PIECE_BYTES: i64 = 64 << 20;
const PIECE_OBJECTS: usize = 1000;
/// Objects up to this size are read and written whole, together, up to `SMALL_BATCH_BYTES` a trip.
const SMALL_BYTES: i64 = 2 << 20;
const SMALL_BATCH_BYTES: i64 = 4 << 20;
/// `INV_READ` / `INV_WRITE` of libpq's large-object API.
const INV_READ: i32 = 0x40000;
const INV_WRITE: i32 = 0x20000;

/// The source's large objects with their sizes, at the session's snapshot, in pieces not yet
/// loaded. Sizes are read by seeking to each object's end (no superuser needed, only SELECT on it).
pub async fn pieces(session: &Session, progress: &Progress) -> Result<Vec<Piece>, UserError> {
    let rows = session
        .rows(
            "large objects",
            // each descriptor closed at once (they would live as long as the snapshot's transaction)
            "SELECT m.oid, s.size FROM pg_largeobject_metadata m,
                    LATERAL (SELECT lo_lseek64(fd, 0, 2) AS size, lo_close(fd) AS closed
                             FROM (SELECT lo_open(m.oid, 262144) AS fd OFFSET 0) o) s
              ORDER BY m.oid",
        )
        .await
        .map_err(|e| {
            UserError::new(
                e.message.clone(),
                "connect to the source as a superuser, or grant the connecting role SELECT on every large object",
            )
        })?;
    let objects: Vec<(u32, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    if objects.is_empty() {
        return Ok(Vec::new());
    }
    let total: i64 = objects.iter().map(|o| o.1).sum();
    let table = TableInfo::new(NAME, NAME, total, Vec::new());
    let mut out = Vec::new();
    let mut group: Vec<(u32, i64)> = Vec::new();
    let mut flush = |group: &mut Vec<(u32, i64)>| {
        if group.is_empty() {
            return;
        }
        let (first, last) = (group[0].0, group[group.len() - 1].0);
        let key = format!("{NAME}#{first}-{last}");
        if !progress.contains(&key) {
            out.push(Piece {
                key,
                table: table.clone(),
                into: String::new(),
                from: String::new(),
                clear: String::new(),
                columns: String::new(),
                binary: true,
                bytes: group.iter().map(|o| o.1).sum(),
                freeze: false,
                route: Route::LargeObjects { objects: group.clone() },
            });
        }
        group.clear();
    };
    let mut bytes = 0;
    for o in objects {
        if !group.is_empty() && (bytes + o.1 > PIECE_BYTES || group.len() >= PIECE_OBJECTS) {
            flush(&mut group);
            bytes = 0;
        }
        bytes += o.1;
        group.push(o);
    }
    flush(&mut group);
    Ok(out)
}

/// Recreates the piece's objects on the target with their contents, owners, grants, comments and
/// security labels;
/// inside the caller's target transaction. Small objects travel together (`lo_get` on the source,
/// `lo_from_bytea` on the target, up to `SMALL_BATCH_BYTES` a round trip); larger ones are
/// streamed. Returns (objects, bytes).
pub async fn copy(
    ctx: &StageContext,
    src: &Client,
    dst: &Client,
    piece: &Piece,
    objects: &[(u32, i64)],
    copied: &Mutex<HashMap<String, u64>>,
) -> Result<(u64, u64), UserError> {
    let oids: Vec<u32> = objects.iter().map(|o| o.0).collect();
    let meta = src
        .query(
            "SELECT m.oid, pg_get_userbyid(m.lomowner), m.lomacl IS NOT NULL,
                    -- in the ACL's order (a grant option before what was granted with it): the owner's
                    -- grants, then each other grantor's, made as that role (reset with the savepoint)
                    coalesce((SELECT string_agg(format('GRANT %s ON LARGE OBJECT %s TO %s%s;',
                                   a.privilege_type, m.oid,
                                   CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                                   CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END), ' ' ORDER BY a.ord)
                              FROM aclexplode(m.lomacl) WITH ORDINALITY a(grantor, grantee, privilege_type, is_grantable, ord)
                             WHERE a.grantor = m.lomowner), ''),
                    obj_description(m.oid, 'pg_largeobject'),
                    coalesce((SELECT string_agg(format('SECURITY LABEL FOR %I ON LARGE OBJECT %s IS %L;', l.provider, m.oid, l.label), ' ')
                              FROM pg_seclabel l WHERE l.classoid = 'pg_largeobject'::regclass AND l.objoid = m.oid), ''),
                    coalesce((SELECT array_agg(format('SET ROLE %I; GRANT %s ON LARGE OBJECT %s TO %s%s;',
                                   pg_get_userbyid(a.grantor), a.privilege_type, m.oid,
                                   CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                                   CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) ORDER BY a.ord)
                              FROM aclexplode(m.lomacl) WITH ORDINALITY a(grantor, grantee, privilege_type, is_grantable, ord)
                             WHERE a.grantor <> m.lomowner), '{}')
               FROM pg_largeobject_metadata m WHERE m.oid = ANY($1) ORDER BY m.oid",
            &[&oids],
        )
        .await
        .map_err(srcerr)?;
    // what an interrupted earlier try created is dropped and made again
    dst.execute("SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE oid = ANY($1)", &[&oids])
        .await
        .map_err(tgt)?;
    let mut meter = Meter {
        ctx,
        copied,
        total: Some(piece.table.bytes.max(0) as u64).filter(|b| *b > 0),
        bytes: 0,
        last: Instant::now(),
    };
    let mut small: Vec<u32> = Vec::new();
    let mut small_bytes = 0;
    for &(oid, size) in objects {
        if size > SMALL_BYTES {
            stream_one(src, dst, oid, &mut meter).await?;
            continue;
        }
        if small_bytes + size > SMALL_BATCH_BYTES && !small.is_empty() {
            copy_small(src, dst, &small, &mut meter).await?;
            small.clear();
            small_bytes = 0;
        }
        small.push(oid);
        small_bytes += size;
    }
    if !small.is_empty() {
        copy_small(src, dst, &small, &mut meter).await?;
    }
    // owners, grants, comments and security labels: one round trip for the piece
    let mut sql = String::new();
    for row in &meta {
        let oid: u32 = row.get(0);
        let owner = quote_ident(&row.get::<_, String>(1));
        sql.push_str(&format!("ALTER LARGE OBJECT {oid} OWNER TO {owner};"));
        if row.get::<_, bool>(2) {
            // the ACL as the source has it: the owner's implicit rights first taken away
            sql.push_str(&format!("REVOKE ALL ON LARGE OBJECT {oid} FROM {owner};"));
            sql.push_str(&row.get::<_, String>(3));
        }
        if let Some(c) = row.get::<_, Option<String>>(4) {
            sql.push_str(&format!("COMMENT ON LARGE OBJECT {oid} IS {};", quote_literal(&c)));
        }
        sql.push_str(&row.get::<_, String>(5));
    }
    dst.batch_execute(&sql).await.map_err(tgt)?;
    // a grant passed on by another role, made as that role: one that fails (the role cannot be
    // set here) is a warning naming it, and the piece goes on (verify shows the grantor)
    for row in &meta {
        for grant in row.get::<_, Vec<String>>(6) {
            let attempt = format!("SAVEPOINT pgshift_grant; {grant} RELEASE SAVEPOINT pgshift_grant; RESET ROLE;");
            if let Err(e) = dst.batch_execute(&attempt).await {
                dst.batch_execute("ROLLBACK TO SAVEPOINT pgshift_grant; RESET ROLE;").await.map_err(tgt)?;
                ctx.warning(format!(
                    "{grant}: {} (the grant is missing on the target)",
                    crate::catalog::db_message(&e)
                ))
                .await;
            }
        }
    }
    let so_far = {
        let mut c = copied.lock().expect("copied");
        let v = c.entry(NAME.to_string()).or_default();
        *v += meter.bytes;
        *v
    };
    ctx.progress(NAME, so_far, meter.total.map(|t| t.max(so_far)), Unit::Bytes).await;
    Ok((meta.len() as u64, meter.bytes))
}

/// Bytes copied in this piece, shown at most every 250 ms.
struct Meter<'a> {
    ctx: &'a StageContext,
    copied: &'a Mutex<HashMap<String, u64>>,
    total: Option<u64>,
    bytes: u64,
    last: Instant,
}

impl Meter<'_> {
    fn add(&mut self, n: u64) {
        self.bytes += n;
        if self.last.elapsed() >= Duration::from_millis(250) {
            self.last = Instant::now();
            let so_far = self.copied.lock().expect("copied").get(NAME).copied().unwrap_or(0) + self.bytes;
            self.ctx.try_progress(NAME, so_far, self.total.map(|t| t.max(so_far)), Unit::Bytes);
        }
    }
}

/// Small objects, whole, in one read and one write.
async fn copy_small(src: &Client, dst: &Client, oids: &[u32], meter: &mut Meter<'_>) -> Result<(), UserError> {
    let rows = src.query("SELECT o, lo_get(o) FROM unnest($1::oid[]) o", &[&oids]).await.map_err(srcerr)?;
    // borrowed from the rows: the batch is held once, not copied
    let (oids, data): (Vec<u32>, Vec<&[u8]>) = rows.iter().map(|r| (r.get::<_, u32>(0), r.get::<_, &[u8]>(1))).unzip();
    dst.execute("SELECT lo_from_bytea(o, d) FROM unnest($1::oid[], $2::bytea[]) u(o, d)", &[&oids, &data])
        .await
        .map_err(tgt)?;
    meter.add(data.iter().map(|d| d.len() as u64).sum());
    Ok(())
}

/// One object streamed a chunk at a time, the next read overlapping the last write.
async fn stream_one(src: &Client, dst: &Client, oid: u32, meter: &mut Meter<'_>) -> Result<(), UserError> {
    dst.execute("SELECT lo_create($1)", &[&oid]).await.map_err(tgt)?;
    let read = src.prepare("SELECT loread($1, $2)").await.map_err(srcerr)?;
    let write = dst.prepare("SELECT lowrite($1, $2)").await.map_err(tgt)?;
    let sfd: i32 = src.query_one("SELECT lo_open($1, $2)", &[&oid, &INV_READ]).await.map_err(srcerr)?.get(0);
    let dfd: i32 = dst.query_one("SELECT lo_open($1, $2)", &[&oid, &INV_WRITE]).await.map_err(tgt)?.get(0);
    let mut chunk: Vec<u8> = src.query_one(&read, &[&sfd, &CHUNK_BYTES]).await.map_err(srcerr)?.get(0);
    while !chunk.is_empty() {
        let n = chunk.len() as u64;
        // a short read is the end
        let more = n == CHUNK_BYTES as u64;
        let (next, written) = tokio::join!(
            async {
                if !more {
                    return Ok(Vec::new());
                }
                src.query_one(&read, &[&sfd, &CHUNK_BYTES]).await.map(|r| r.get::<_, Vec<u8>>(0))
            },
            async { dst.query_one(&write, &[&dfd, &chunk]).await }
        );
        written.map_err(tgt)?;
        chunk = next.map_err(srcerr)?;
        meter.add(n);
    }
    src.execute("SELECT lo_close($1)", &[&sfd]).await.map_err(srcerr)?;
    dst.execute("SELECT lo_close($1)", &[&dfd]).await.map_err(tgt)?;
    Ok(())
}
