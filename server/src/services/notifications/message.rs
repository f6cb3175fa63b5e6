//! One notification as every sink receives it (the webhook's JSON body; the others render it),
//! and the events it can announce.

use crate::store::{JobStatus, JobSummary};
pub use crate::vocab::EventType;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

impl EventType {
    /// The event a job status change is.
    pub fn for_status(status: JobStatus) -> Option<EventType> {
        match status {
            JobStatus::Queued => Some(EventType::Queued),
            JobStatus::Approved => Some(EventType::Approved),
            JobStatus::Denied => Some(EventType::Denied),
            JobStatus::Completed => Some(EventType::Executed),
            JobStatus::Failed | JobStatus::Timeout => Some(EventType::Failed),
            JobStatus::Expired => Some(EventType::Expired),
            JobStatus::Cancelled => Some(EventType::Cancelled),
            JobStatus::Picked | JobStatus::Executing => None,
        }
    }

    /// Whether the approvers are asked to act (the message links to the approval page).
    pub fn asks_for_a_vote(self) -> bool {
        matches!(self, EventType::Queued | EventType::Expiring)
    }
}

/// A vote as notifications show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifiedVote {
    pub approver: String,
    pub verdict: String,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// One event, as every sink receives it (the webhook's JSON body; the others render it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Stable across redeliveries: `transition-N` or `expiring-JOB`.
    pub id: String,
    #[serde(rename = "type")]
    pub event: EventType,
    pub occurred_at: DateTime<Utc>,
    /// The job (its `call_hash`: the approval page shows the same one, so an approver can check
    /// that a message and the page are about the same call).
    #[serde(flatten)]
    pub job: JobSummary,
    /// The job's status this event is about (not necessarily its status now).
    pub status: String,
    pub required_capabilities: Vec<String>,
    pub policy_hash: Option<String>,
    /// The call's arguments, only with `notify_include_args` (otherwise null).
    pub args: Option<serde_json::Value>,
    pub args_redacted: bool,
    pub votes: Vec<NotifiedVote>,
    /// Why a failed job failed, only with `notify_include_args` (it may quote the output).
    pub error: Option<String>,
    /// The job's page in the portal (with `public_url`).
    pub url: Option<String>,
}

impl Notification {
    /// Seconds left before the request expires (queued jobs), at `now`.
    pub fn seconds_left(&self, now: DateTime<Utc>) -> Option<i64> {
        self.job
            .expires_at
            .map(|at| (at - now).num_seconds().max(0))
    }
}
