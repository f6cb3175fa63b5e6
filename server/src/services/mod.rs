//! The services: every domain rule of the server, below the edges (the JSON API, the portal,
//! the command line, the agent and the executors) and above the core (the store, the enforcer
//! and the configuration). Services hold no axum or leptos types.

pub mod approvals;
pub mod decisions;
pub mod execution;
pub mod exports;
pub mod gateway;
pub mod grants;
pub mod idempotency;
pub mod identity;
pub mod maintenance;
pub mod notifications;
pub mod policy_versions;
pub mod shadow;

use crate::metrics::Metrics;
use crate::store::{AnyStore, AuditWriter, Database, Job, JobStatus};
use enforcer::PolicySet;
use std::sync::Arc;

/// Who calls a service from outside the portal: an API token Countersign issued
/// (`api-token`), or the identity provider's `service` account or `person`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Caller {
    pub id: String,
    pub kind: &'static str,
    pub roles: Vec<String>,
    pub capabilities: Vec<String>,
}

/// What every service works with: the store and its audit writer, the active policy, and this
/// replica's shared counters and channels. One per process, shared by reference count.
pub struct Core {
    pub db: Database,
    /// The active policy, loaded and validated at start-up.
    pub policy: Arc<PolicySet>,
    pub store: AnyStore,
    /// The one audit writer (group commit); nothing is acknowledged before it is durable.
    pub audit: AuditWriter,
    /// What `/metrics` reports.
    pub metrics: Arc<Metrics>,
    /// Job status changes on this replica (long-polls and the portal's events wait on it).
    pub job_events: tokio::sync::broadcast::Sender<(String, JobStatus)>,
    /// How long a claim on a job lasts without a heartbeat (`COUNTERSIGN_JOB_LEASE_SECS`).
    pub lease_secs: i64,
    /// Signs evidence bundles (from `COUNTERSIGN_EXPORT_SIGNING_KEY`).
    pub export_key: Option<Arc<ed25519_dalek::SigningKey>>,
    /// Exports under way on this replica (the Reports page shows their progress).
    pub export_progress: Arc<exports::ProgressBoard>,
    /// Calls needing approval being decided here (identical ones take turns).
    pub admissions: decisions::AdmissionLocks,
    /// Most requests a caller may have waiting for approval for one requester
    /// (`max_pending_requests`; 0: no limit).
    pub max_pending_requests: i64,
    /// Callers that may act for people (`api_delegating_callers`).
    pub delegating_callers: Arc<std::collections::BTreeSet<String>>,
}

impl Core {
    /// Tell long-polling clients on this replica that a job changed.
    pub fn notify_job(&self, job: &Job) {
        // No receiver is fine: nobody is waiting.
        let _ = self.job_events.send((job.job_id.clone(), job.status));
    }
}

/// What a service call can fail with, in words the edges pass on: the JSON API maps a kind to
/// its status code, the portal to an [`app::AppError`]. Internal details never travel in it:
/// [`ServiceError::unavailable`] logs them and keeps only the product's sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// No such thing, or none the caller may see.
    #[error("{message}")]
    NotFound { message: String },
    /// The caller may not do this; `reason` says why.
    #[error("{reason}")]
    Forbidden { code: &'static str, reason: String },
    /// The thing is not in a state that allows it (a lost race, a decided job).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// Bad input; `field` names it when one field is at fault.
    #[error("{message}")]
    Invalid {
        code: &'static str,
        field: Option<String>,
        message: String,
    },
    /// Over a limit the configuration sets (`code` names it); waiting may help.
    #[error("{message}")]
    Limit { code: &'static str, message: String },
    /// Something this needs is not configured (a signing key, an identity provider).
    #[error("{message}")]
    NotConfigured { message: String },
    /// The store could not be reached or refused a write; try again later.
    #[error("{what}")]
    Unavailable { what: String },
}

impl ServiceError {
    pub fn not_found(message: impl Into<String>) -> ServiceError {
        ServiceError::NotFound {
            message: message.into(),
        }
    }

    pub fn forbidden(code: &'static str, reason: impl Into<String>) -> ServiceError {
        ServiceError::Forbidden {
            code,
            reason: reason.into(),
        }
    }

    pub fn invalid(code: &'static str, field: &str, message: impl Into<String>) -> ServiceError {
        ServiceError::Invalid {
            code,
            field: Some(field.to_string()),
            message: message.into(),
        }
    }

    /// The store failed: log `detail`, keep only `what` (the product's words).
    pub fn unavailable(what: &str, detail: &dyn std::fmt::Display) -> ServiceError {
        tracing::error!(%detail, "{what}");
        ServiceError::Unavailable {
            what: what.to_string(),
        }
    }
}

impl From<crate::store::StoreError> for ServiceError {
    fn from(error: crate::store::StoreError) -> ServiceError {
        use crate::store::StoreError;
        match error {
            StoreError::NotFound => ServiceError::not_found("not found"),
            conflict @ StoreError::Conflict { .. } => ServiceError::Conflict {
                code: "conflict",
                message: conflict.to_string(),
            },
            StoreError::Invalid(message) => ServiceError::Invalid {
                code: "invalid",
                field: None,
                message,
            },
            duplicate @ StoreError::Duplicate(_) => ServiceError::Conflict {
                code: "exists",
                message: duplicate.to_string(),
            },
            other @ (StoreError::Database(_) | StoreError::WriterGone) => {
                ServiceError::unavailable("the store is unavailable", &other)
            }
        }
    }
}
