//! Event triggers on the target: held disabled from the moment post-data restores them until the
//! tuning stage, so a DBA's DDL guard or audit trigger does not fire on (or refuse) the DDL pgshift
//! itself runs in between (compression settings, vector columns and indexes); then each is given
//! the source's state (enabled, replica, always or disabled).

/// The user's own: an extension's event triggers (TimescaleDB's DDL handling) are never touched.
const USER_ONLY: &str = "NOT EXISTS (SELECT 1 FROM pg_depend xd WHERE xd.classid = 'pg_event_trigger'::regclass \
     AND xd.objid = e.oid AND xd.deptype = 'e')";

/// `ALTER EVENT TRIGGER ... DISABLE` for each user event trigger of the database not disabled.
pub fn hold_sql() -> String {
    format!(
        "SELECT format('ALTER EVENT TRIGGER %I DISABLE', evtname) FROM pg_event_trigger e \
         WHERE evtenabled <> 'D' AND {USER_ONLY} ORDER BY 1"
    )
}

/// Each user event trigger with its state, as `(name, pg_event_trigger.evtenabled)`.
pub fn states_sql() -> String {
    format!("SELECT evtname::text, evtenabled::text FROM pg_event_trigger e WHERE {USER_ONLY} ORDER BY 1")
}

/// The statement that gives the event trigger `name` the state `evtenabled`.
pub fn set_state_sql(name: &str, evtenabled: &str) -> String {
    let state = match evtenabled {
        "R" => "ENABLE REPLICA",
        "A" => "ENABLE ALWAYS",
        "D" => "DISABLE",
        _ => "ENABLE",
    };
    format!("ALTER EVENT TRIGGER {} {state}", crate::postgres::sql::quote_ident(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_has_its_statement() {
        assert_eq!(set_state_sql("guard", "O"), "ALTER EVENT TRIGGER guard ENABLE");
        assert_eq!(set_state_sql("Guard", "R"), "ALTER EVENT TRIGGER \"Guard\" ENABLE REPLICA");
        assert_eq!(set_state_sql("guard", "A"), "ALTER EVENT TRIGGER guard ENABLE ALWAYS");
        assert_eq!(set_state_sql("guard", "D"), "ALTER EVENT TRIGGER guard DISABLE");
    }
}
