//! The server's words for people and callers, shared by configuration, identity and the edges.

/// The roles a person can have.
pub const ROLES: [&str; 4] = ["viewer", "approver", "auditor", "admin"];
