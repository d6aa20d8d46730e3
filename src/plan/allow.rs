//! The allow file: differences that are planned (a vector column added, a table converted to a
//! hypertable) and so do not fail `verify`. TOML:
//!
//! ```toml
//! [[allow]]
//! class = "vector_columns"        # a class key, "rows" for table data, or "*"
//! name = "public.kb_documents.*"  # glob over the object name
//! change = "extra"                # missing | extra | changed | any (default any)
//! reason = "embedding column added by the plan"
//! ```

use std::path::Path;

use globset::{Glob, GlobMatcher};
use serde::Deserialize;

use crate::catalog::Class;
use crate::error::UserError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Missing,
    Extra,
    Changed,
    Any,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowFile {
    #[serde(default)]
    allow: Vec<AllowRule>,
}

/// One `[[allow]]` entry as written (also part of the plan file).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    pub class: String,
    pub name: String,
    #[serde(default = "any")]
    pub change: Change,
    pub reason: Option<String>,
}

fn any() -> Change {
    Change::Any
}

#[derive(Debug, Clone)]
struct Rule {
    class: String,
    name: GlobMatcher,
    change: Change,
    reason: String,
}

/// The planned differences; empty when no file was given.
#[derive(Debug, Default, Clone)]
pub struct AllowList {
    rules: Vec<Rule>,
}

impl AllowList {
    pub fn load(path: &Path) -> Result<Self, UserError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            UserError::new(
                format!("cannot read allow file {}: {e}", path.display()),
                "check the path and that the file is readable",
            )
        })?;
        Self::parse(&text).map_err(|e| UserError::new(format!("allow file {}: {}", path.display(), e.message), e.fix))
    }

    pub fn parse(text: &str) -> Result<Self, UserError> {
        let file: AllowFile = toml::from_str(text).map_err(|e| {
            let place = crate::error::toml_place(text, &e);
            UserError::new(
                format!("{place}{}", e.message()),
                "write [[allow]] entries with class, name, optional change (missing|extra|changed|any) and reason",
            )
        })?;
        Self::from_rules(file.allow)
    }

    /// Checks and compiles written rules.
    pub fn from_rules(written: Vec<AllowRule>) -> Result<Self, UserError> {
        let mut rules = Vec::new();
        for r in written {
            if r.class != "*" && r.class != "rows" && Class::from_key(&r.class).is_none() {
                let known: Vec<&str> = Class::ALL.iter().map(|c| c.key()).collect();
                return Err(UserError::new(
                    format!("unknown class \"{}\"", r.class),
                    format!("use \"rows\", \"*\" or one of: {}", known.join(", ")),
                ));
            }
            let name = Glob::new(&r.name)
                .map_err(|e| {
                    UserError::new(
                        format!("bad name pattern \"{}\": {e}", r.name),
                        "use a glob such as public.* or energy.readings",
                    )
                })?
                .compile_matcher();
            rules.push(Rule {
                class: r.class,
                name,
                change: r.change,
                reason: r.reason.unwrap_or_else(|| "planned".into()),
            });
        }
        Ok(Self { rules })
    }

    /// This list with more rules (pgshift's own planned differences).
    pub fn with(mut self, more: Vec<AllowRule>) -> Result<Self, UserError> {
        self.rules.extend(Self::from_rules(more)?.rules);
        Ok(self)
    }

    /// The reason a difference is planned, if a rule covers it.
    pub fn reason(&self, class: &str, name: &str, change: Change) -> Option<&str> {
        self.rules
            .iter()
            .find(|r| {
                (r.class == "*" || r.class == class)
                    && (r.change == Change::Any || r.change == change)
                    && r.name.is_match(name)
            })
            .map(|r| r.reason.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_class_name_and_change() {
        let a = AllowList::parse(
            "[[allow]]\nclass = \"vector_columns\"\nname = \"public.kb_*\"\nchange = \"extra\"\nreason = \"plan\"\n",
        )
        .unwrap();
        assert_eq!(a.reason("vector_columns", "public.kb_documents.embedding", Change::Extra), Some("plan"));
        assert_eq!(a.reason("vector_columns", "public.kb_documents.embedding", Change::Missing), None);
        assert_eq!(a.reason("columns", "public.kb_documents.embedding", Change::Extra), None);
    }

    #[test]
    fn errors_name_the_line_and_fix() {
        let e = AllowList::parse("[[allow]]\nclass = \"tables\"\nnme = \"x\"\n").unwrap_err();
        assert!(e.message.contains("line 3"), "{e}");
        let e = AllowList::parse("[[allow]]\nclass = \"tabels\"\nname = \"x\"\n").unwrap_err();
        assert!(e.message.contains("unknown class"), "{e}");
    }
}
