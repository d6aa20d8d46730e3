//! Quoting names and text for SQL, as PostgreSQL's quote_ident and quote_literal do.

/// `"name"` when it needs quotes, as PostgreSQL's quote_ident does.
pub fn quote_ident(name: &str) -> String {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain && !is_keyword(name) {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

fn is_keyword(name: &str) -> bool {
    // the reserved words a role or database name could plausibly be
    ["user", "all", "default", "public", "select", "table", "group", "order", "current_user", "session_user"]
        .contains(&name)
}

pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_like_postgres_does() {
        assert_eq!(quote_ident("postgres"), "postgres");
        assert_eq!(quote_ident("EcoAnP"), "\"EcoAnP\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("user"), "\"user\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
