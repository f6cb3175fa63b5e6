//! Who may vote on a pending job, and how far it is from its quorum. Pure, like the rest.

use crate::decision::Principal;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Approve,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        }
    }

    pub fn parse(text: &str) -> Option<Verdict> {
        [Verdict::Approve, Verdict::Deny]
            .into_iter()
            .find(|v| v.as_str() == text)
    }
}

/// One vote already cast on a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub approver: String,
    pub verdict: Verdict,
    pub at: DateTime<Utc>,
}

/// What the approval rules need to know about a pending job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingJob {
    pub requester: String,
    pub required_capabilities: BTreeSet<String>,
    pub approvals_required: u32,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quorum {
    pub approvals: u32,
    pub required: u32,
}

impl Quorum {
    pub fn reached(&self) -> bool {
        self.approvals >= self.required
    }
}

/// Whether `approver` may vote now, why not if not, and the quorum so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eligibility {
    pub allowed: bool,
    pub reasons: Vec<String>,
    pub quorum: Quorum,
}

/// Refuses the requester, a second vote by the same person, someone without the approver role
/// or without every capability the operation requires, and an expired request.
pub fn can_approve(
    approver: &Principal,
    job: &PendingJob,
    votes: &[Vote],
    now: DateTime<Utc>,
    approver_role: &str,
) -> Eligibility {
    let approvals = votes
        .iter()
        .filter(|v| v.verdict == Verdict::Approve)
        .map(|v| v.approver.as_str())
        .collect::<BTreeSet<_>>()
        .len();
    let quorum = Quorum {
        approvals: u32::try_from(approvals).unwrap_or(u32::MAX),
        required: job.approvals_required,
    };
    let mut reasons = Vec::new();
    if approver.id.is_empty() {
        reasons.push("the approver has no identity".to_string());
    }
    if approver.id == job.requester {
        reasons.push("people cannot approve their own requests".to_string());
    }
    if votes.iter().any(|v| v.approver == approver.id) {
        reasons.push("you have already voted on this request".to_string());
    }
    if !approver.roles.contains(approver_role) {
        reasons.push(format!("approving needs the `{approver_role}` role"));
    }
    let missing: Vec<&str> = job
        .required_capabilities
        .difference(&approver.capabilities)
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        reasons.push(format!(
            "approving needs the operation's capabilities; missing: {}",
            missing.join(", ")
        ));
    }
    if now >= job.expires_at {
        reasons.push("the request has expired".to_string());
    }
    if quorum.reached() && job.approvals_required > 0 {
        reasons.push("the request already has the approvals it needs".to_string());
    }
    Eligibility {
        allowed: reasons.is_empty(),
        reasons,
        quorum,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn person(id: &str, roles: &[&str], caps: &[&str]) -> Principal {
        Principal {
            id: id.to_string(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            capabilities: caps.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn job(now: DateTime<Utc>) -> PendingJob {
        PendingJob {
            requester: "alice".into(),
            required_capabilities: ["ssh-linux".to_string()].into(),
            approvals_required: 2,
            expires_at: now + Duration::hours(1),
        }
    }

    #[test]
    fn a_qualified_second_person_may_approve() {
        let now = Utc::now();
        let bob = person("bob", &["approver"], &["ssh-linux"]);
        let e = can_approve(&bob, &job(now), &[], now, "approver");
        assert!(e.allowed, "{:?}", e.reasons);
        assert_eq!(
            e.quorum,
            Quorum {
                approvals: 0,
                required: 2
            }
        );
    }

    #[test]
    fn the_rules_refuse_with_reasons() {
        let now = Utc::now();
        let j = job(now);
        let alice = person("alice", &["approver"], &["ssh-linux"]);
        assert!(
            !can_approve(&alice, &j, &[], now, "approver").allowed,
            "requester"
        );
        let bob = person("bob", &["approver"], &["ssh-linux"]);
        let voted = [Vote {
            approver: "bob".into(),
            verdict: Verdict::Approve,
            at: now,
        }];
        let e = can_approve(&bob, &j, &voted, now, "approver");
        assert!(!e.allowed && e.reasons[0].contains("already voted"));
        assert_eq!(e.quorum.approvals, 1);
        let viewer = person("carol", &["viewer"], &["ssh-linux"]);
        assert!(
            !can_approve(&viewer, &j, &[], now, "approver").allowed,
            "role"
        );
        let weak = person("dave", &["approver"], &[]);
        assert!(can_approve(&weak, &j, &[], now, "approver").reasons[0].contains("ssh-linux"));
        assert!(
            !can_approve(&bob, &j, &[], now + Duration::hours(2), "approver").allowed,
            "expired"
        );
    }
}
