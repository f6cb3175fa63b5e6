//! The services: every domain rule of the server, below the edges (the JSON API, the portal,
//! the command line, the agent and the executors) and above the core (the store, the enforcer
//! and the configuration). Services hold no axum or leptos types.

pub mod approvals;
pub mod exports;
pub mod identity;
pub mod import;
pub mod maintenance;
pub mod notifications;
pub mod policy_versions;
