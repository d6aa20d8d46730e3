//! The object classes pgshift inventories and compares, in the order they are reported.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Database,
    Schemas,
    Tables,
    Columns,
    Views,
    MaterializedViews,
    Functions,
    Procedures,
    Aggregates,
    Triggers,
    Policies,
    RlsFlags,
    Indexes,
    PrimaryKeys,
    ForeignKeys,
    UniqueConstraints,
    CheckConstraints,
    ExclusionConstraints,
    Sequences,
    Types,
    Extensions,
    Roles,
    RolePasswords,
    Grants,
    DefaultPrivileges,
    Owners,
    Comments,
    Hypertables,
    Chunks,
    CompressionSettings,
    ContinuousAggregates,
    Jobs,
    VectorColumns,
    VectorIndexes,
}

impl Class {
    pub const ALL: [Class; 34] = [
        Class::Database,
        Class::Schemas,
        Class::Tables,
        Class::Columns,
        Class::Views,
        Class::MaterializedViews,
        Class::Functions,
        Class::Procedures,
        Class::Aggregates,
        Class::Triggers,
        Class::Policies,
        Class::RlsFlags,
        Class::Indexes,
        Class::PrimaryKeys,
        Class::ForeignKeys,
        Class::UniqueConstraints,
        Class::CheckConstraints,
        Class::ExclusionConstraints,
        Class::Sequences,
        Class::Types,
        Class::Extensions,
        Class::Roles,
        Class::RolePasswords,
        Class::Grants,
        Class::DefaultPrivileges,
        Class::Owners,
        Class::Comments,
        Class::Hypertables,
        Class::Chunks,
        Class::CompressionSettings,
        Class::ContinuousAggregates,
        Class::Jobs,
        Class::VectorColumns,
        Class::VectorIndexes,
    ];

    /// The name used in reports and allow files (`primary_keys`).
    pub fn key(self) -> &'static str {
        match self {
            Class::Database => "database",
            Class::Schemas => "schemas",
            Class::Tables => "tables",
            Class::Columns => "columns",
            Class::Views => "views",
            Class::MaterializedViews => "materialized_views",
            Class::Functions => "functions",
            Class::Procedures => "procedures",
            Class::Aggregates => "aggregates",
            Class::Triggers => "triggers",
            Class::Policies => "policies",
            Class::RlsFlags => "rls_flags",
            Class::Indexes => "indexes",
            Class::PrimaryKeys => "primary_keys",
            Class::ForeignKeys => "foreign_keys",
            Class::UniqueConstraints => "unique_constraints",
            Class::CheckConstraints => "check_constraints",
            Class::ExclusionConstraints => "exclusion_constraints",
            Class::Sequences => "sequences",
            Class::Types => "types",
            Class::Extensions => "extensions",
            Class::Roles => "roles",
            Class::RolePasswords => "role_passwords",
            Class::Grants => "grants",
            Class::DefaultPrivileges => "default_privileges",
            Class::Owners => "owners",
            Class::Comments => "comments",
            Class::Hypertables => "hypertables",
            Class::Chunks => "chunks",
            Class::CompressionSettings => "compression_settings",
            Class::ContinuousAggregates => "continuous_aggregates",
            Class::Jobs => "jobs",
            Class::VectorColumns => "vector_columns",
            Class::VectorIndexes => "vector_indexes",
        }
    }

    /// Human label for tables ("primary keys").
    pub fn label(self) -> String {
        self.key().replace('_', " ")
    }

    pub fn from_key(key: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.key() == key)
    }
}
