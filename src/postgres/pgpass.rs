//! Password lookup in a libpq password file (`~/.pgpass` or `PGPASSFILE`), with libpq's rules:
//! `hostname:port:database:username:password`, `*` matches anything, `\` escapes `:` and `\`,
//! and a file readable by group or others is ignored.

use std::path::{Path, PathBuf};

/// The password file libpq would read: `PGPASSFILE`, else `~/.pgpass`.
pub fn default_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PGPASSFILE") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass"))
}

/// Finds the password for the first matching line, if the file exists and is private.
pub fn lookup(path: &Path, host: &str, port: u16, database: &str, user: &str) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).ok()?;
        if meta.permissions().mode() & 0o077 != 0 {
            return None;
        }
    }
    let text = std::fs::read_to_string(path).ok()?;
    find(&text, host, port, database, user)
}

/// The matching logic, separated from the file for testing.
pub fn find(text: &str, host: &str, port: u16, database: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_fields(line);
        if fields.len() < 5 {
            continue;
        }
        let wanted = [host, port.as_str(), database, user];
        let host_matches = |f: &str, w: &str| f == "*" || f == w || (f == "localhost" && w.starts_with('/'));
        if host_matches(&fields[0], wanted[0]) && wanted[1..].iter().zip(&fields[1..4]).all(|(w, f)| f == "*" || f == w)
        {
            return Some(fields[4].clone());
        }
    }
    None
}

fn split_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().unwrap().push(n);
                }
            }
            ':' => fields.push(String::new()),
            _ => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_wildcards_and_escapes() {
        let text = "# comment\nother:5432:*:bob:nope\n127.0.0.1:*:app:bob:s\\:cret\\\\x\n*:*:*:*:fallback\n";
        assert_eq!(find(text, "127.0.0.1", 5433, "app", "bob").as_deref(), Some("s:cret\\x"));
        assert_eq!(find(text, "other", 5432, "db", "bob").as_deref(), Some("nope"));
        assert_eq!(find(text, "x", 1, "y", "z").as_deref(), Some("fallback"));
        // like libpq, an unescaped colon ends the password
        assert_eq!(find("h:1:d:u:pw:extra", "h", 1, "d", "u").as_deref(), Some("pw"));
    }

    #[test]
    fn no_match_without_wildcard() {
        assert_eq!(find("h:5432:db:u:pw", "h", 5433, "db", "u"), None);
    }
}
