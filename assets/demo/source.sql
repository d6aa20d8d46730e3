-- pgshift demo: an energy / IoT database of the kind pgshift is built to move.
-- Sites and devices per tenant, sensor readings as a time series, row-level security per tenant,
-- audit triggers, functions, views, a materialized view and a knowledge base to embed.
-- Plain PostgreSQL (no extension needed); `pgshift demo` loads it into a fresh database.

CREATE SCHEMA energy;
CREATE SCHEMA kb;
CREATE SCHEMA audit;

CREATE TABLE energy.tenants (
    tenant_id   int PRIMARY KEY,
    name        text NOT NULL UNIQUE
);

CREATE TABLE energy.sites (
    site_id     serial PRIMARY KEY,
    tenant_id   int NOT NULL REFERENCES energy.tenants,
    name        text NOT NULL,
    city        text NOT NULL,
    capacity_kw numeric(10,2) NOT NULL CHECK (capacity_kw > 0),
    UNIQUE (tenant_id, name)
);

CREATE TYPE energy.device_kind AS ENUM ('meter', 'inverter', 'battery', 'weather');

CREATE TABLE energy.devices (
    device_id   serial PRIMARY KEY,
    site_id     int NOT NULL REFERENCES energy.sites ON DELETE CASCADE,
    tenant_id   int NOT NULL REFERENCES energy.tenants,
    kind        energy.device_kind NOT NULL,
    serial_no   text NOT NULL UNIQUE,
    installed   date NOT NULL DEFAULT current_date,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_site_idx ON energy.devices (site_id);

-- the time series: one row per device per 15 minutes
CREATE TABLE energy.readings (
    ts          timestamptz NOT NULL,
    device_id   int NOT NULL REFERENCES energy.devices,
    tenant_id   int NOT NULL,
    power_kw    double precision NOT NULL,
    energy_kwh  double precision NOT NULL,
    voltage     real,
    PRIMARY KEY (device_id, ts)
);
CREATE INDEX readings_ts_idx ON energy.readings (ts DESC);

CREATE TABLE audit.log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    table_name  text NOT NULL,
    operation   text NOT NULL,
    row_data    jsonb NOT NULL
);

-- the knowledge base the operators search; pgshift's plan adds an embedding column on the target
CREATE TABLE kb.articles (
    article_id  serial PRIMARY KEY,
    tenant_id   int REFERENCES energy.tenants,
    title       text NOT NULL,
    body        text NOT NULL,
    tags        text[] NOT NULL DEFAULT '{}',
    published   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX articles_tags_idx ON kb.articles USING gin (tags);
COMMENT ON TABLE kb.articles IS 'Maintenance notes and manuals; embedded for semantic search on the new server';

-- functions and triggers
CREATE FUNCTION audit.record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit.log (table_name, operation, row_data)
    VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, TG_OP,
            to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END));
    RETURN NULL;
END $$;

CREATE FUNCTION energy.touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE TRIGGER devices_audit AFTER INSERT OR UPDATE OR DELETE ON energy.devices
    FOR EACH ROW EXECUTE FUNCTION audit.record();
CREATE TRIGGER sites_audit AFTER INSERT OR UPDATE OR DELETE ON energy.sites
    FOR EACH ROW EXECUTE FUNCTION audit.record();
CREATE TRIGGER devices_touch BEFORE UPDATE ON energy.devices
    FOR EACH ROW EXECUTE FUNCTION energy.touch();

CREATE FUNCTION energy.site_energy(p_site int, p_from timestamptz, p_to timestamptz)
RETURNS double precision LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(r.energy_kwh), 0)
    FROM energy.readings r JOIN energy.devices d USING (device_id)
    WHERE d.site_id = p_site AND r.ts >= p_from AND r.ts < p_to
$$;

CREATE FUNCTION energy.current_tenant() RETURNS int LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('app.tenant', true), '')::int
$$;

-- row-level security: each tenant sees its own rows
ALTER TABLE energy.sites ENABLE ROW LEVEL SECURITY;
ALTER TABLE energy.devices ENABLE ROW LEVEL SECURITY;
ALTER TABLE energy.readings ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_sites ON energy.sites USING (tenant_id = energy.current_tenant());
CREATE POLICY tenant_devices ON energy.devices USING (tenant_id = energy.current_tenant());
CREATE POLICY tenant_readings ON energy.readings USING (tenant_id = energy.current_tenant());

-- views
CREATE VIEW energy.site_overview AS
    SELECT s.site_id, s.name, s.city, t.name AS tenant, count(d.device_id) AS devices
    FROM energy.sites s JOIN energy.tenants t USING (tenant_id)
    LEFT JOIN energy.devices d USING (site_id)
    GROUP BY s.site_id, s.name, s.city, t.name;

CREATE MATERIALIZED VIEW energy.daily_energy AS
    SELECT date_trunc('day', ts) AS day, device_id, sum(energy_kwh) AS kwh, max(power_kw) AS peak_kw
    FROM energy.readings GROUP BY 1, 2;
CREATE UNIQUE INDEX daily_energy_key ON energy.daily_energy (day, device_id);

-- the data: 3 tenants, 12 sites, 60 devices, 30 days of 15-minute readings (172,800 rows)
INSERT INTO energy.tenants VALUES (1, 'Hanbit Solar'), (2, 'Nordwind Energie'), (3, 'Cascade Hydro');
INSERT INTO energy.sites (tenant_id, name, city, capacity_kw)
    SELECT 1 + (i % 3), 'site-' || i, (ARRAY['Seoul', 'Busan', 'Hamburg', 'Portland'])[1 + i % 4], 50 + i * 12.5
    FROM generate_series(1, 12) i;
INSERT INTO energy.devices (site_id, tenant_id, kind, serial_no, installed)
    SELECT s.site_id, s.tenant_id, (ARRAY['meter', 'inverter', 'battery', 'weather', 'meter'])[1 + k]::energy.device_kind,
           format('SN-%s-%s', s.site_id, k), date '2024-01-01' + s.site_id * 7 + k
    FROM energy.sites s, generate_series(0, 4) k;
INSERT INTO energy.readings (ts, device_id, tenant_id, power_kw, energy_kwh, voltage)
    SELECT t, d.device_id, d.tenant_id,
           round((10 + 8 * sin(extract(epoch FROM t) / 13750.0 + d.device_id))::numeric, 3),
           round((2.5 + 2 * sin(extract(epoch FROM t) / 13750.0 + d.device_id))::numeric, 4),
           (230 + (d.device_id % 7))::real
    FROM energy.devices d,
         generate_series(timestamptz '2026-10-01 00:00+00', timestamptz '2026-10-30 23:45+00', interval '15 minutes') t;
INSERT INTO kb.articles (tenant_id, title, body, tags)
    SELECT 1 + (i % 3), 'Maintenance note ' || i,
           'Inverter ' || i || ' shows a ' || (i % 5) || '% efficiency drop; check the DC isolators and the fan filter.',
           ARRAY['inverter', 'maintenance', (ARRAY['solar', 'wind', 'hydro'])[1 + i % 3]]
    FROM generate_series(1, 500) i;
UPDATE energy.devices SET installed = installed WHERE device_id % 10 = 0;  -- audit rows from the trigger
REFRESH MATERIALIZED VIEW energy.daily_energy;
ANALYZE;
