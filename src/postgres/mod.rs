//! The PostgreSQL adapter: connection strings and sessions (`conn`), TLS (`tls`), the password
//! file (`pgpass`), SQL quoting (`sql`) and errors worth a retry (`transient`).
//! It imports only `error`; everything that talks to a server goes through it.

pub mod conn;
pub mod pgpass;
pub mod sql;
pub mod tls;
pub mod transient;
