//! The PostgreSQL adapter: connection strings and sessions (`conn`), TLS (`tls`), the password
//! file (`pgpass`), and SQL quoting (`sql`).
//! It imports only `error`; everything that talks to a server goes through it.

pub mod conn;
pub mod pgpass;
pub mod sql;
pub mod tls;
