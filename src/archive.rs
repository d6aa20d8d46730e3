//! Reading a pg_dump custom archive back (as `pg_restore -f -` prints it) and keeping what the split
//! `--no-owner --no-privileges` dumps leave out: owners, privileges, default privileges and the
//! refresh of materialized views. The result is `after-data.sql`, run after `data.sql`.

/// Collects the statements of `after-data.sql` from pg_restore's text output, fed in any chunks.
#[derive(Default)]
pub struct AfterData {
    pending: Vec<u8>,
    /// Inside `COPY ... FROM stdin;` data, until `\.`.
    in_copy: bool,
    /// Inside a dollar-quoted body: its tag (`$$`, `$_$`).
    in_body: Option<String>,
    entry_type: String,
    pub entries: usize,
    pub owners: Vec<String>,
    pub privileges: Vec<String>,
    pub refreshes: Vec<String>,
    /// Statements on TimescaleDB chunks, left out: TimescaleDB gives chunks their hypertable's
    /// owner and privileges (and refuses `ALTER TABLE chunk OWNER TO`).
    pub chunk_statements: usize,
}

impl AfterData {
    pub fn feed(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(nl) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&self.pending[start..start + nl]).into_owned();
            self.line(&line);
            start += nl + 1;
        }
        self.pending.drain(..start);
    }

    pub fn finish(&mut self) {
        if !self.pending.is_empty() {
            let line = String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned();
            self.line(&line);
        }
    }

    fn line(&mut self, line: &str) {
        if self.in_copy {
            self.in_copy = line != "\\.";
            return;
        }
        if let Some(tag) = &self.in_body {
            if line.contains(tag.as_str()) {
                self.in_body = None;
            }
            return;
        }
        if let Some(header) = line.strip_prefix("-- Name: ").or_else(|| line.strip_prefix("-- Data for Name: ")) {
            self.entries += 1;
            self.entry_type = header
                .rsplit_once("; Type: ")
                .map(|(_, rest)| rest.split("; Schema: ").next().unwrap_or(rest).to_string())
                .unwrap_or_default();
            return;
        }
        if line.starts_with("--") || line.trim().is_empty() || line.starts_with('\\') {
            return;
        }
        if line.starts_with("COPY ") && line.ends_with("FROM stdin;") {
            self.in_copy = true;
            return;
        }
        let on_chunk = line.contains(" _timescaledb_internal.");
        match self.entry_type.as_str() {
            "ACL" | "DEFAULT ACL" | "MATERIALIZED VIEW DATA" if on_chunk => self.chunk_statements += 1,
            "ACL" | "DEFAULT ACL" => self.privileges.push(line.to_string()),
            "MATERIALIZED VIEW DATA" => self.refreshes.push(line.to_string()),
            _ => {
                if line.starts_with("ALTER ") && line.contains(" OWNER TO ") && line.ends_with(';') {
                    if on_chunk {
                        self.chunk_statements += 1;
                    } else {
                        self.owners.push(line.to_string());
                    }
                } else if let Some(tag) = opened_dollar_tag(line) {
                    self.in_body = Some(tag);
                }
            }
        }
    }

    /// The file's text: owners first, then privileges, then refreshes (pg_restore's own order).
    pub fn sql(&self) -> String {
        let mut out = String::from(
            "-- after-data.sql, written by pgshift from the full archive (full.dump).\n\
             -- Run it after schema.sql and data.sql: it restores what --no-owner --no-privileges\n\
             -- and split schema/data dumps leave out.\n\
             SELECT pg_catalog.set_config('search_path', '', false);\n",
        );
        if self.chunk_statements > 0 {
            out.push_str(&format!(
                "-- {} statements on TimescaleDB chunks left out: chunks take their hypertable's owner and privileges\n",
                self.chunk_statements
            ));
        }
        for (title, lines) in [
            ("owners", &self.owners),
            ("privileges and default privileges", &self.privileges),
            ("materialized views (split dumps never populate them)", &self.refreshes),
        ] {
            out.push_str(&format!("\n-- {title}: {}\n", lines.len()));
            for l in lines {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

/// The tag of a dollar-quoted body a line opens and does not close (`AS $$`, `AS $_$`).
fn opened_dollar_tag(line: &str) -> Option<String> {
    let mut open: Option<String> = None;
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let mut j = i + 1;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                j += 1;
            }
            let tagged =
                j < bytes.len() && bytes[j] == b'$' && !bytes[i + 1..j].first().is_some_and(u8::is_ascii_digit);
            if tagged {
                let tag = line[i..=j].to_string();
                open = match open {
                    Some(t) if t == tag => None,
                    Some(t) => Some(t),
                    None => Some(tag),
                };
                i = j + 1;
                continue;
            }
        }
        i += 1;
    }
    open
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\\restrict abc
SET statement_timeout = 0;
--
-- Name: f(); Type: FUNCTION; Schema: s; Owner: alice
--

CREATE FUNCTION s.f() RETURNS void
    LANGUAGE plpgsql
    AS $_$
BEGIN
ALTER TABLE s.t OWNER TO mallory;
END $_$;


ALTER FUNCTION s.f() OWNER TO alice;

--
-- Data for Name: t; Type: TABLE DATA; Schema: s; Owner: alice
--

COPY s.t (a) FROM stdin;
-- Name: x; Type: ACL; Schema: s; Owner: alice
GRANT ALL ON TABLE s.t TO mallory;
\\.


--
-- Name: TABLE t; Type: ACL; Schema: s; Owner: alice
--

GRANT SELECT ON TABLE s.t TO bob;
GRANT SELECT ON TABLE _timescaledb_internal._hyper_1_1_chunk TO bob;


--
-- Name: mv; Type: MATERIALIZED VIEW DATA; Schema: s; Owner: alice
--

REFRESH MATERIALIZED VIEW s.mv;
";

    #[test]
    fn keeps_owners_acls_and_refreshes_but_not_bodies_or_data() {
        let mut a = AfterData::default();
        for chunk in SAMPLE.as_bytes().chunks(7) {
            a.feed(chunk);
        }
        a.finish();
        assert_eq!(a.owners, vec!["ALTER FUNCTION s.f() OWNER TO alice;"]);
        assert_eq!(a.privileges, vec!["GRANT SELECT ON TABLE s.t TO bob;"]);
        assert_eq!(a.refreshes, vec!["REFRESH MATERIALIZED VIEW s.mv;"]);
        assert_eq!(a.entries, 4);
        assert_eq!(a.chunk_statements, 1);
        assert!(!a.sql().contains("mallory"));
    }

    #[test]
    fn dollar_tags() {
        assert_eq!(opened_dollar_tag("    AS $$"), Some("$$".into()));
        assert_eq!(opened_dollar_tag("AS $$ SELECT 1 $$;"), None);
        assert_eq!(opened_dollar_tag("SELECT $1, $2"), None);
    }
}
