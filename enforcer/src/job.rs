//! The words of a queued job, shared by the server's store, its API, its notifications and the
//! portal's pages: its [`JobStatus`] and legal transitions, its [`Priority`], and the
//! [`JobSummary`] every view of a job starts from. IT-MCP's `command_queue` spells the status and
//! priority columns this way.

use crate::Risk;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What every view of a job shows about it (the API's job, a notification, the portal's lists):
/// the call, who asked and why, its risk, quorum and deadlines. The server maps its stored job to
/// this in one place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobSummary {
    pub job_id: String,
    pub tool: String,
    pub operation: String,
    pub target: Option<String>,
    pub risk: Risk,
    pub priority: Priority,
    pub requester: String,
    pub requester_reason: Option<String>,
    /// The SHA-256 of the call: an approval is bound to it.
    pub call_hash: String,
    pub approvals_required: i32,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The job states, in IT-MCP's words extended (see [`JobStatus::can_become`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Approved,
    Picked,
    Executing,
    Completed,
    Failed,
    Timeout,
    Denied,
    Expired,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 10] = [
        JobStatus::Queued,
        JobStatus::Approved,
        JobStatus::Picked,
        JobStatus::Executing,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Timeout,
        JobStatus::Denied,
        JobStatus::Expired,
        JobStatus::Cancelled,
    ];

    /// The spelling stored in `command_queue.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Approved => "approved",
            JobStatus::Picked => "picked",
            JobStatus::Executing => "executing",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Timeout => "timeout",
            JobStatus::Denied => "denied",
            JobStatus::Expired => "expired",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The legal transitions: queued → approved → picked → executing → completed | failed |
    /// timeout; queued → denied | expired | cancelled; approved → expired | cancelled; a lapsed
    /// lease returns picked or executing to approved (retry) or ends it failed or timeout.
    pub fn can_become(self, next: JobStatus) -> bool {
        use JobStatus::*;
        matches!(
            (self, next),
            (Queued, Approved | Denied | Expired | Cancelled)
                | (Approved, Picked | Expired | Cancelled)
                | (Picked, Executing | Approved | Failed | Timeout)
                | (Executing, Completed | Failed | Timeout | Approved)
        )
    }

    /// Whether the status can no longer change.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Completed
                | JobStatus::Failed
                | JobStatus::Timeout
                | JobStatus::Denied
                | JobStatus::Expired
                | JobStatus::Cancelled
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How urgent a queued job is: the order approvers' lists and agents' leases take jobs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    Normal,
    High,
    Urgent,
}

impl Priority {
    pub const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Urgent,
    ];

    /// The spelling stored in `command_queue.priority`.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }

    pub fn parse(text: &str) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.as_str() == text)
    }

    /// A queued job's priority follows its risk: CRITICAL is urgent, LOW is low.
    pub fn for_risk(risk: Risk) -> Priority {
        match risk {
            Risk::Critical => Priority::Urgent,
            Risk::High => Priority::High,
            Risk::Medium => Priority::Normal,
            Risk::Low => Priority::Low,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_priorities_read_back_what_they_write() {
        for status in JobStatus::ALL {
            assert_eq!(JobStatus::parse(status.as_str()), Some(status));
            let json = serde_json::to_string(&status).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
        for priority in Priority::ALL {
            assert_eq!(Priority::parse(priority.as_str()), Some(priority));
        }
        assert_eq!(JobStatus::parse("Queued"), None);
        assert_eq!(Priority::parse("critical"), None);
    }

    #[test]
    fn priority_follows_risk() {
        let by_risk: Vec<Priority> = Risk::ALL.into_iter().map(Priority::for_risk).collect();
        assert_eq!(
            by_risk,
            [
                Priority::Low,
                Priority::Normal,
                Priority::High,
                Priority::Urgent
            ]
        );
    }

    #[test]
    fn only_final_states_have_no_way_out() {
        for from in JobStatus::ALL {
            let exits = JobStatus::ALL
                .into_iter()
                .filter(|to| from.can_become(*to))
                .count();
            assert_eq!(from.is_final(), exits == 0, "{from}");
        }
    }
}
