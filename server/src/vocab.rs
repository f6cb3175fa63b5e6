//! The server's words for people and callers, shared by configuration, identity and the edges.

/// The roles a person can have.
pub const ROLES: [&str; 4] = ["viewer", "approver", "auditor", "admin"];

/// What happened to a job; the `type` of a notification.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum EventType {
    #[serde(rename = "job.queued")]
    Queued,
    #[serde(rename = "job.approved")]
    Approved,
    #[serde(rename = "job.denied")]
    Denied,
    #[serde(rename = "job.executed")]
    Executed,
    #[serde(rename = "job.failed")]
    Failed,
    #[serde(rename = "job.expiring")]
    Expiring,
    #[serde(rename = "job.expired")]
    Expired,
    #[serde(rename = "job.cancelled")]
    Cancelled,
}

impl EventType {
    pub const ALL: [EventType; 8] = [
        EventType::Queued,
        EventType::Approved,
        EventType::Denied,
        EventType::Executed,
        EventType::Failed,
        EventType::Expiring,
        EventType::Expired,
        EventType::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Queued => "job.queued",
            EventType::Approved => "job.approved",
            EventType::Denied => "job.denied",
            EventType::Executed => "job.executed",
            EventType::Failed => "job.failed",
            EventType::Expiring => "job.expiring",
            EventType::Expired => "job.expired",
            EventType::Cancelled => "job.cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|e| e.as_str() == text)
    }
}
