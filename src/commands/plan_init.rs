//! `pgshift plan init`: a commented plan written from the source's inventory, with the plain
//! tables that look like time series offered as hypertable candidates.

use std::path::Path;

use crate::catalog::{self, Class};
use crate::error::UserError;
use crate::files;
use crate::plan::Plan;
use crate::postgres::conn::ConnSpec;

/// `pgshift plan init`: a commented plan from the source's inventory, with hypertable candidates.
pub async fn init(source_text: &str, out: &Path, overwrite: bool) -> Result<i32, UserError> {
    let source = ConnSpec::parse("source", source_text)?;
    if out.exists() && !overwrite {
        return Err(UserError::new(
            format!("{} exists", out.display()),
            "choose another --out, or add --overwrite to replace it",
        ));
    }
    let inv = catalog::collect(&source, None, 1).await?;
    let client = source.connect().await?;
    let candidates = client
        .query(
            &format!(
                "SELECT format('%I.%I', n.nspname, c.relname), quote_ident(a.attname), format_type(a.atttypid, a.atttypmod)
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                 WHERE c.relkind = 'r' AND NOT c.relispartition AND {} AND {}
                   AND a.attnotnull AND a.atttypid IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype)
                   AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indkey[0] = a.attnum)
                 ORDER BY 1, a.attnum",
                catalog::queries::user_ns("n"),
                catalog::queries::not_ext("pg_class", "c.oid"),
            ),
            &[],
        )
        .await
        .map_err(|e| UserError::new(format!("reading candidates: {}", catalog::db_message(&e)), "connect as a superuser"))?;
    let hypertables: Vec<&String> = inv.class(Class::Hypertables).keys().collect();
    // a table that is a hypertable already is recreated as one: not a conversion candidate
    let candidates: Vec<_> =
        candidates.into_iter().filter(|r| !hypertables.iter().any(|h| **h == r.get::<_, String>(0))).collect();
    let mut text = format!(
        "# pgshift migration plan, written by `pgshift plan init` from {source}.\n\
         # Run it with: pgshift run --plan {out} --yes\n\
         # Passwords never go here: PGPASSWORD or ~/.pgpass (mode 0600) give them.\n\n\
         [source]\nconnection = \"{conn}\"\n\n\
         [target]\n\
         # Either an existing server (and database) ...\n\
         # connection = \"postgresql://postgres@127.0.0.1:5432/{db}\"\n\
         # ... or a container pgshift builds and runs (Docker engine):\n\
         database = \"{db}\"\n\
         # force = true   # migrate into a database that already holds objects\n\
         # tablespaces = \"default\"   # the target lacks the source's tablespaces: use its default one\n\n\
         [target.container]\nname = \"pgshift-timescaledb\"\n# image = \"pgshift/timescaledb-pgvector:pg17\"\n\
         # dockerfile = \"Dockerfile.timescaledb\"\nport = 55432\n# data = \"./data/postgresql\"   # default: volume NAME-data\n\n\
         [backup]\ndir = \"backups\"\n# bin_dir = \"/usr/lib/postgresql/17/bin\"\n# role_passwords = false\n# data_sql = false\n# compression = \"auto\"\n\n\
         [data]\njobs = 2\n# compressed_chunks = \"as-is\"   # or \"recompress\": decompress on the way, compress again\n\n[verify]\nchecksums = true\n\n\
         [tuning]\n# maintenance_work_mem = \"512MB\"   # for index builds (vector indexes above all)\n\
         # parallel_workers = 2\n# vacuum = false\n# reindex = false\n# compress_chunks = true\n",
        source = source.label(),
        out = out.display(),
        conn = source_text.replace('"', "\\\""),
        db = source.dbname(),
    );
    if !hypertables.is_empty() {
        text.push_str("\n# Hypertables on the source are recreated on the target automatically:\n");
        for h in &hypertables {
            text.push_str(&format!("#   {h}\n"));
        }
    }
    text.push_str("\n# Plain tables that look like time series (a NOT NULL time column that leads an index).\n");
    text.push_str("# Uncomment to turn them into hypertables on the target:\n");
    if candidates.is_empty() {
        text.push_str("# (none found)\n");
    }
    for r in &candidates {
        let (table, column, ty): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        // quoted identifiers inside a TOML string
        let (table, column) = (table.replace('"', "\\\""), column.replace('"', "\\\""));
        text.push_str(&format!(
            "# [[hypertables]]\n# table = \"{table}\"\n# time_column = \"{column}\"   # {ty}\n\
             # chunk_interval = \"7 days\"   # default: suggested from the data\n\
             # compress = false   # needs a Timescale-licensed target\n\n"
        ));
    }
    text.push_str(
        "\n# Vector columns to add (pgvector), e.g.:\n# [[vectors]]\n# table = \"public.documents\"\n# column = \"embedding\"\n\
         # dimensions = 384\n# index = \"hnsw\"\n\n\
         # Differences the plan makes on purpose, allowed by the final verify, e.g.:\n\
         # [[allow]]\n# class = \"hypertables\"\n# name = \"energy.meter\"\n# reason = \"converted by the plan\"\n",
    );
    Plan::parse(&text)
        .map_err(|e| UserError::new(format!("the written plan does not read back: {}", e.message), e.fix))?;
    files::write_atomic(out, text.as_bytes()).map_err(|e| files::write_error(out, &e))?;
    println!("wrote {} ({} hypertable candidate(s))", out.display(), candidates.len());
    Ok(0)
}
