//! The verify mutation test: one damage per class applied to a copy of the rich fixture on the
//! target, each of which verify must name (class, object, change) and call not clean.

use pgshift::plan::allow::{AllowList, Change};
use pgshift::verify::diff::RowStatus;
use pgshift::verify::{verify, VerifyOptions};

/// (class, object name, change, SQL applied to the target)
const MUTATIONS: &[(&str, &str, Change, &str)] = &[
    ("policies", "energy.sites.tenant_isolation", Change::Missing, "DROP POLICY tenant_isolation ON energy.sites"),
    ("grants", "table energy.sites to pgshift_app", Change::Changed, "REVOKE INSERT ON energy.sites FROM pgshift_app"),
    ("owners", "table energy.devices", Change::Changed, "ALTER TABLE energy.devices OWNER TO pgshift_owner"),
    ("functions", "energy.kwh(watts double precision, hours double precision)", Change::Changed,
     "CREATE OR REPLACE FUNCTION energy.kwh(watts double precision, hours double precision) RETURNS double precision LANGUAGE sql IMMUTABLE AS $$ SELECT watts * hours / 1000.0 $$"),
    ("rows", "energy.sites", Change::Changed, "UPDATE energy.sites SET capacity_kw = capacity_kw + 1 WHERE name = 'Busan roof'"),
    ("rows", "energy.audit_log", Change::Changed, "UPDATE energy.audit_log SET op = 'UPDATE' WHERE id = 3"),
    ("rows", "energy.readings", Change::Changed, "DELETE FROM energy.readings WHERE time < '2026-01-01 00:30+00'"),
    ("triggers", "energy.devices.devices_audit", Change::Changed, "ALTER TABLE energy.devices DISABLE TRIGGER devices_audit"),
    ("rls_flags", "energy.sites", Change::Changed, "ALTER TABLE energy.sites NO FORCE ROW LEVEL SECURITY"),
    ("indexes", "energy.devices_site_idx", Change::Missing, "DROP INDEX energy.devices_site_idx"),
    ("views", "energy.meter_counts", Change::Changed,
     "CREATE OR REPLACE VIEW energy.meter_counts AS SELECT site, devices FROM energy.site_devices WHERE kind = 'inverter'"),
    ("materialized_views", "energy.daily_energy", Change::Missing, "DROP MATERIALIZED VIEW energy.daily_energy"),
    ("check_constraints", "energy.sites.sites_capacity_kw_check", Change::Missing, "ALTER TABLE energy.sites DROP CONSTRAINT sites_capacity_kw_check"),
    ("foreign_keys", "energy.devices.devices_site_id_fkey", Change::Missing, "ALTER TABLE energy.devices DROP CONSTRAINT devices_site_id_fkey"),
    ("unique_constraints", "energy.sites.sites_name_key", Change::Missing, "ALTER TABLE energy.sites DROP CONSTRAINT sites_name_key"),
    ("exclusion_constraints", "energy.maintenance.maintenance_device_id_during_excl", Change::Missing,
     "ALTER TABLE energy.maintenance DROP CONSTRAINT maintenance_device_id_during_excl"),
    ("primary_keys", "public.kb_documents.kb_documents_pkey", Change::Missing, "ALTER TABLE public.kb_documents DROP CONSTRAINT kb_documents_pkey"),
    ("sequences", "energy.device_serial", Change::Changed, "SELECT setval('energy.device_serial', 42)"),
    ("types", "energy.device_kind", Change::Changed, "ALTER TYPE energy.device_kind ADD VALUE 'heat_pump'"),
    ("columns", "energy.sites.capacity_kw", Change::Changed, "ALTER TABLE energy.sites ALTER COLUMN capacity_kw SET DEFAULT 1"),
    ("tables", "energy.audit_log", Change::Changed, "ALTER TABLE energy.audit_log SET UNLOGGED"),
    ("schemas", "scratch", Change::Extra, "CREATE SCHEMA scratch"),
    ("procedures", "energy.purge_audit(IN keep_days integer)", Change::Missing, "DROP PROCEDURE energy.purge_audit(integer)"),
    ("aggregates", "energy.max_kwh(double precision)", Change::Extra,
     "CREATE AGGREGATE energy.max_kwh(double precision) (SFUNC = float8larger, STYPE = double precision)"),
    ("extensions", "pgcrypto", Change::Missing, "DROP EXTENSION pgcrypto"),
    ("roles", "pgshift_only_on_target", Change::Extra,
     "DO $$ BEGIN CREATE ROLE pgshift_only_on_target; EXCEPTION WHEN duplicate_object THEN NULL; END $$; GRANT SELECT ON energy.devices TO pgshift_only_on_target"),
    ("default_privileges", "for role postgres in schema energy on tables to pgshift_readonly", Change::Missing,
     "ALTER DEFAULT PRIVILEGES IN SCHEMA energy REVOKE SELECT ON TABLES FROM pgshift_readonly"),
    ("comments", "table energy.sites", Change::Changed, "COMMENT ON TABLE energy.sites IS 'changed on the target'"),
    ("hypertables", "energy.readings", Change::Changed, "SELECT set_chunk_time_interval('energy.readings', interval '2 days')"),
    ("vector_columns", "public.kb_documents.summary_embedding", Change::Extra, "ALTER TABLE public.kb_documents ADD COLUMN summary_embedding vector(8)"),
    ("vector_indexes", "public.kb_documents_embedding_idx", Change::Missing, "DROP INDEX public.kb_documents_embedding_idx"),
    ("rules", "energy.site_notes.site_notes_keep", Change::Missing, "DROP RULE site_notes_keep ON energy.site_notes"),
    ("extended_statistics", "energy.devices_site_kind", Change::Changed, "ALTER STATISTICS energy.devices_site_kind SET STATISTICS 50"),
    ("event_triggers", "pgshift_note_schema_drop", Change::Changed, "ALTER EVENT TRIGGER pgshift_note_schema_drop DISABLE"),
    ("publications", "pgshift_sites", Change::Changed, "ALTER PUBLICATION pgshift_sites SET (publish = 'insert')"),
    ("publications", "pgshift_site_feed", Change::Changed,
     "ALTER PUBLICATION pgshift_site_feed SET TABLE energy.sites (id, name) WHERE (capacity_kw > 10)"),
    ("publications", "pgshift_energy_inserts", Change::Changed,
     "ALTER PUBLICATION pgshift_energy_inserts DROP TABLES IN SCHEMA energy"),
    ("foreign_data_wrappers", "pgshift_files", Change::Changed, "ALTER FOREIGN DATA WRAPPER pgshift_files OPTIONS (ADD format 'csv')"),
    ("foreign_servers", "pgshift_archive", Change::Changed, "ALTER SERVER pgshift_archive OPTIONS (SET region 'de')"),
    ("user_mappings", "for pgshift_app server pgshift_archive", Change::Changed,
     "ALTER USER MAPPING FOR pgshift_app SERVER pgshift_archive OPTIONS (DROP password)"),
    ("collations", "energy.names_ci", Change::Missing, "DROP COLLATION energy.names_ci"),
    ("casts", "energy.meter_id AS text", Change::Missing, "DROP CAST (energy.meter_id AS text)"),
    ("operators", "energy.~=(double precision, double precision)", Change::Missing,
     "DROP OPERATOR energy.~= (double precision, double precision)"),
    ("operator_classes", "energy.int4_rev_ops using btree", Change::Missing, "DROP OPERATOR CLASS energy.int4_rev_ops USING btree"),
    ("operator_families", "energy.int4_rev_fam using btree", Change::Changed,
     "ALTER OPERATOR FAMILY energy.int4_rev_fam USING btree DROP OPERATOR 3 (int, bigint)"),
    ("text_search_configurations", "energy.notes", Change::Changed, "ALTER TEXT SEARCH CONFIGURATION energy.notes DROP MAPPING FOR asciiword"),
    ("text_search_dictionaries", "energy.simple_strict", Change::Changed, "ALTER TEXT SEARCH DICTIONARY energy.simple_strict (ACCEPT = true)"),
    ("grants", "type energy.device_kind to pgshift_app", Change::Missing, "REVOKE USAGE ON TYPE energy.device_kind FROM pgshift_app"),
    ("grants", "domain energy.percent to PUBLIC", Change::Extra, "GRANT USAGE ON DOMAIN energy.percent TO PUBLIC"),
    ("columns", "energy.site_notes.note", Change::Changed, "ALTER TABLE energy.site_notes ALTER COLUMN note SET STATISTICS 100"),
    ("tables", "energy.site_notes", Change::Changed, "ALTER TABLE energy.site_notes REPLICA IDENTITY DEFAULT"),
    ("large_objects", "424242", Change::Changed, "REVOKE SELECT ON LARGE OBJECT 424242 FROM pgshift_app"),
    ("large_objects", "424243", Change::Changed, "ALTER LARGE OBJECT 424243 OWNER TO pgshift_owner"),
    ("large_objects", "424243", Change::Changed,
     "SET ROLE pgshift_readonly; REVOKE SELECT ON LARGE OBJECT 424243 FROM pgshift_tenant; RESET ROLE; GRANT SELECT ON LARGE OBJECT 424243 TO pgshift_tenant"),
    ("grants", "table energy.devices to pgshift_tenant", Change::Changed,
     "SET ROLE pgshift_app; REVOKE SELECT ON energy.devices FROM pgshift_tenant; RESET ROLE; GRANT SELECT ON energy.devices TO pgshift_tenant"),
    ("large_objects", "424244", Change::Missing, "SELECT lo_unlink(424244)"),
    ("large_object_contents", "424243", Change::Changed, "SELECT lo_put(424243, 2000000, '\\x00010203'::bytea)"),
    ("large_object_contents", "424245", Change::Changed, "SELECT lo_truncate(lo_open(424245, 131072), 100)"),
    ("comments", "large object 424242", Change::Changed, "COMMENT ON LARGE OBJECT 424242 IS 'changed on the target'"),
];

/// The classes only pgvector has (not on the older source, whose major has no package of it).
pub const PGVECTOR_CLASSES: &[&str] = &["vector_columns", "vector_indexes"];

/// Applies each mutation (but those of `skip`'s classes) to a fresh database on `target_server`
/// built from `fixture`, verifies it against `src`, and returns what was not caught.
pub async fn uncaught(src: &str, target_server: &str, fixture: &str, prefix: &str, skip: &[&str]) -> Vec<String> {
    let options = VerifyOptions { checksums: true, workers: 2 };
    let mut failures = Vec::new();
    for (i, (class, name, change, sql)) in MUTATIONS.iter().enumerate() {
        if skip.contains(class) {
            continue;
        }
        let db = format!("{prefix}_{i}");
        let tgt = super::db_with(target_server, &db, fixture).await;
        super::connect(&tgt).await.batch_execute(sql).await.unwrap_or_else(|e| panic!("mutation {sql}: {e:?}"));
        let r = verify(&super::spec("source", src), &super::spec("target", &tgt), &AllowList::default(), options)
            .await
            .expect("verify runs");
        let found = r.differences.iter().any(|d| d.class == *class && d.name == *name && d.change == *change);
        if !found || r.clean {
            let seen: Vec<_> = r.differences.iter().map(|d| format!("{} {:?} {}", d.class, d.change, d.name)).collect();
            failures.push(format!("{sql}\n  expected {class} {change:?} {name}\n  seen {seen:#?}"));
        }
        if *class == "rows" && *name != "energy.readings" {
            let t = r.tables.iter().find(|t| t.name == *name).unwrap();
            assert_eq!(t.source_rows, t.target_rows, "{sql}: count stays equal");
            assert_eq!(t.status, RowStatus::ContentDiffers, "{sql}: the checksum catches it");
        }
        super::drop_db(target_server, &db).await;
    }
    failures
}
