//! Remembered approvals (standing grants). An approver who approved a request may also remember
//! it: this exact call, or its shape with the arguments they choose to generalise, for the
//! requester or a group, on the call's target or a pattern, for up to 7 days and a number of
//! uses. A later call that the enforcer would hold, and that a standing grant covers, is
//! allowed without a new request; its decision names the grant. What the policy never remembers
//! (CRITICAL, interactive-only, `never_remember` effects) is refused when remembering and never
//! matched when deciding. A grant made from a job that needed two approvals stands only once
//! both approvers remembered it. Every creation, use (the decision row) and revocation is in the
//! audit trail, in the same transaction as the change.

use super::{Core, ServiceError};
use crate::store::{EventKind, GrantRecord, Job, JobStatus, NewAuditEvent, Store, StoreError};
use chrono::{DateTime, Utc};
use enforcer::grant::{self, Covers, GrantScope, GrantTerms, Subject};
use enforcer::{AuditAction, Decision, Principal, Request, Risk, Verdict};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What an approver asks to remember.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RememberRequest {
    /// `call` (this exact call, the default) or `shape` (calls like it: see `generalise`).
    #[serde(default)]
    pub scope: Option<String>,
    /// For a shape: the arguments any value may take (`service`), or the words of a shell
    /// argument any plain word may take (`command[2]`); never a command's name or a flag.
    #[serde(default)]
    pub generalise: Vec<String>,
    /// The target it holds for: the call's own by default, or a pattern with `*` covering it.
    #[serde(default)]
    pub target: Option<String>,
    /// A role: the grant is for everyone with it, not only the requester.
    #[serde(default)]
    pub group: Option<String>,
    /// How long it stands, in seconds: 24 hours by default, at most 7 days (refused beyond).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// How many calls it may allow; no limit when left out.
    #[serde(default)]
    pub max_uses: Option<u32>,
}

/// The call a job was made for, as the enforcer reads it.
fn request_of(job: &Job) -> Result<Request, ServiceError> {
    let args = match serde_json::from_str::<Value>(&job.params) {
        Ok(Value::Object(map)) => map,
        _ => {
            return Err(ServiceError::Conflict {
                code: "unreadable_job",
                message: "the request's arguments cannot be read, so it cannot be remembered"
                    .into(),
            })
        }
    };
    Ok(Request {
        tool: job.tool_name.clone(),
        operation: job.operation.clone(),
        args,
        target: job.target.clone(),
    })
}

/// The decision the enforcer makes for `request` now, for someone with every capability it
/// needs: what the call is, apart from who asks.
fn judged(core: &Core, request: &Request) -> Result<Decision, ServiceError> {
    let operation = core
        .policy
        .operation(&request.tool, &request.operation)
        .ok_or_else(|| ServiceError::Conflict {
            code: "not_in_policy",
            message: format!(
                "{}.{} is no longer in the policy",
                request.tool, request.operation
            ),
        })?;
    let principal = Principal {
        id: "grant".into(),
        roles: Default::default(),
        capabilities: operation.requires.clone(),
    };
    Ok(enforcer::evaluate(request, &principal, &core.policy))
}

fn invalid(code: &'static str, field: &str, message: impl Into<String>) -> ServiceError {
    ServiceError::invalid(code, field, message)
}

/// Remember job `job_id`'s approval, as `approver` (who approved it) asks.
pub async fn remember(
    core: &Core,
    approver: &Principal,
    job_id: &str,
    ask: &RememberRequest,
) -> Result<GrantRecord, ServiceError> {
    let unreadable = |e: StoreError| ServiceError::unavailable("the request could not be read", &e);
    let job = match core.store.job(job_id).await {
        Ok(job) => job,
        Err(StoreError::NotFound) => return Err(ServiceError::not_found("no such request")),
        Err(e) => return Err(unreadable(e)),
    };
    // Only someone who still holds the approver role remembers (roles change after a vote).
    let approver_role = &core.policy.approvals.approver_role;
    if !approver.roles.contains(approver_role) {
        return Err(ServiceError::forbidden(
            "not_approver",
            format!("only people with the `{approver_role}` role remember approvals"),
        ));
    }
    let votes = core.store.votes(job_id).await.map_err(unreadable)?;
    let approved_it = votes
        .iter()
        .any(|v| v.approver == approver.id && v.verdict == Verdict::Approve);
    if !approved_it {
        return Err(ServiceError::forbidden(
            "not_your_approval",
            "only an approver who approved this request can remember it",
        ));
    }
    if matches!(
        job.status,
        JobStatus::Queued | JobStatus::Denied | JobStatus::Expired | JobStatus::Cancelled
    ) {
        return Err(ServiceError::Conflict {
            code: "not_approved",
            message: format!(
                "the request is {}: only an approved request can be remembered",
                job.status.as_str()
            ),
        });
    }
    let request = request_of(&job)?;
    let decision = judged(core, &request)?;
    let refusal = if job.risk == Risk::Critical {
        Some("CRITICAL operations are never remembered: each one needs its approvals".to_string())
    } else {
        grant::why_not_remembered(&decision, &core.policy)
    };
    if let Some(why) = refusal {
        return Err(ServiceError::forbidden("not_rememberable", why));
    }
    let ttl = ask.ttl_secs.unwrap_or(grant::DEFAULT_TTL_SECS);
    if ttl == 0 || ttl > grant::MAX_TTL_SECS {
        return Err(invalid(
            "invalid_ttl",
            "ttl_secs",
            format!(
                "a grant lasts from 1 second to 7 days ({} seconds); {ttl} is refused, not shortened",
                grant::MAX_TTL_SECS
            ),
        ));
    }
    if ask.max_uses == Some(0) {
        return Err(invalid(
            "invalid_max_uses",
            "max_uses",
            "a grant allows at least one call; leave max_uses out for no limit",
        ));
    }
    let operation = core
        .policy
        .operation(&request.tool, &request.operation)
        .ok_or_else(|| invalid("not_in_policy", "job", "the operation is not in the policy"))?;
    let covers = match ask.scope.as_deref().unwrap_or("call") {
        "call" if ask.generalise.is_empty() => Covers::Call {
            call_hash: job.call_hash.clone(),
        },
        "call" => {
            return Err(invalid(
                "invalid_scope",
                "generalise",
                "only a shape generalises arguments: set scope to `shape`",
            ))
        }
        "shape" => {
            grant::shape_of(&request, operation, &core.policy, &ask.generalise).map_err(|e| {
                invalid(
                    "invalid_shape",
                    e.field.as_deref().unwrap_or("generalise"),
                    e.message,
                )
            })?
        }
        other => {
            return Err(invalid(
                "invalid_scope",
                "scope",
                format!("scope is `call` or `shape`, not `{other}`"),
            ))
        }
    };
    let target = match (&ask.target, &job.target) {
        (None, target) => target.clone(),
        (Some(pattern), Some(target)) => {
            let pattern = pattern.trim();
            // The pattern must cover the approved call's own target.
            if pattern.is_empty() || !grant::target_matches(pattern, target) {
                return Err(invalid(
                    "invalid_target",
                    "target",
                    format!(
                        "the pattern `{pattern}` does not cover the request's target `{target}`"
                    ),
                ));
            }
            Some(pattern.to_string())
        }
        (Some(_), None) => {
            return Err(invalid(
                "invalid_target",
                "target",
                "the request has no target, so the grant has none either",
            ))
        }
    };
    let subject = match ask.group.as_deref().map(str::trim) {
        None => Subject::Person(job.requester.clone()),
        Some(role) if !role.is_empty() && !role.chars().any(char::is_whitespace) => {
            Subject::Group(role.to_string())
        }
        Some(_) => {
            return Err(invalid(
                "invalid_group",
                "group",
                "name the role the grant is for, without spaces",
            ))
        }
    };
    let scope = GrantScope {
        tool: request.tool.clone(),
        operation: request.operation.clone(),
        covers,
        target,
        ceiling: Some(grant::Ceiling::of(&decision)),
    };
    let scope_text = serde_json::to_string(&scope)
        .map_err(|e| ServiceError::unavailable("the grant could not be written", &e))?;
    let (subject_kind, subject_name) = match &subject {
        Subject::Person(id) => ("person", id.clone()),
        Subject::Group(role) => ("group", role.clone()),
    };
    let now = Utc::now();
    let write_failed = |e: StoreError| match e {
        StoreError::Invalid(message) => ServiceError::Conflict {
            code: "grant_conflict",
            message,
        },
        StoreError::NotFound => ServiceError::not_found("no such grant"),
        other => ServiceError::unavailable("the grant could not be written", &other),
    };
    let expires_at = now + chrono::Duration::seconds(i64::try_from(ttl).unwrap_or(i64::MAX / 2));
    let max_uses = ask.max_uses.map(|n| i32::try_from(n).unwrap_or(i32::MAX));
    // A second approver of a job that needed two remembers the same grant (same scope, person
    // or role, and uses): it stands now, until the earlier of the two ends asked for.
    let open = core
        .store
        .grants_for(&request.tool, &request.operation, now)
        .await
        .map_err(unreadable)?
        .into_iter()
        .find(|g| {
            g.job_id == job.job_id
                && !g.active()
                && g.scope == scope_text
                && g.subject_kind == subject_kind
                && g.subject == subject_name
                && g.max_uses == max_uses
        });
    if let Some(open) = open {
        let expires_at = expires_at.min(open.expires_at);
        let event = grant_event(
            &GrantRecord {
                expires_at,
                ..open.clone()
            },
            &job,
            &approver.id,
            "grant.approve",
            now,
        );
        return core
            .store
            .add_grant_approver(&open.id, &approver.id, expires_at, &event)
            .await
            .map_err(write_failed);
    }
    let record = GrantRecord {
        id: uuid::Uuid::now_v7().to_string(),
        tool: request.tool.clone(),
        operation: request.operation.clone(),
        scope: scope_text,
        subject_kind: subject_kind.into(),
        subject: subject_name,
        job_id: job.job_id.clone(),
        approvals_needed: job.approvals_required.max(1),
        approvers: vec![approver.id.clone()],
        created_at: now,
        expires_at,
        max_uses,
        uses: 0,
        last_used_at: None,
        revoked_at: None,
        revoked_by: None,
    };
    let event = grant_event(&record, &job, &approver.id, "grant.create", now);
    core.store
        .create_grant(&record, &event)
        .await
        .map_err(write_failed)
}

/// What the approval page offers an approver who approved a request (see [`offer`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offer {
    /// Why it cannot be remembered, when it cannot.
    pub refusal: Option<String>,
    /// What may be generalised: (field, words for people).
    pub choices: Vec<(String, String)>,
    pub target: Option<String>,
    pub requester: String,
    /// The grant the viewer already made or joined from this request.
    pub remembered: Option<String>,
}

/// Remembering `job` for `viewer`, who approved it, once it is approved: what may be
/// generalised, or why it cannot be remembered. `None` when the viewer did not approve it or it
/// is not approved.
pub async fn offer(
    core: &Core,
    job: &Job,
    viewer: &str,
    votes: &[crate::store::VoteRecord],
) -> Result<Option<Offer>, ServiceError> {
    let approved_it = votes
        .iter()
        .any(|v| v.approver == viewer && v.verdict == Verdict::Approve);
    if !approved_it
        || matches!(
            job.status,
            JobStatus::Queued | JobStatus::Denied | JobStatus::Expired | JobStatus::Cancelled
        )
    {
        return Ok(None);
    }
    let mut offer = Offer {
        target: job.target.clone(),
        requester: job.requester.clone(),
        ..Offer::default()
    };
    let request = match request_of(job) {
        Ok(request) => request,
        Err(error) => {
            offer.refusal = Some(error.to_string());
            return Ok(Some(offer));
        }
    };
    let (decision, operation) = match (
        judged(core, &request),
        core.policy.operation(&job.tool_name, &job.operation),
    ) {
        (Ok(decision), Some(operation)) => (decision, operation),
        (Err(error), _) => {
            offer.refusal = Some(error.to_string());
            return Ok(Some(offer));
        }
        (_, None) => {
            offer.refusal = Some("the operation is no longer in the policy".into());
            return Ok(Some(offer));
        }
    };
    offer.refusal = if job.risk == Risk::Critical {
        Some("CRITICAL operations are never remembered: each one needs its approvals".into())
    } else {
        grant::why_not_remembered(&decision, &core.policy)
    };
    for (field, word) in grant::generalisable_words(&request, operation, &core.policy) {
        // The shape as it would read: the command with `*` in the generalised place.
        let (name, index) = field.split_once('[').unwrap_or((field.as_str(), ""));
        let index: usize = index.trim_end_matches(']').parse().unwrap_or(usize::MAX);
        let shape = request
            .args
            .get(name)
            .and_then(Value::as_str)
            .and_then(grant::plain_words)
            .map(|words| {
                words
                    .iter()
                    .enumerate()
                    .map(|(i, w)| if i == index { "*" } else { w.as_str() })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        offer
            .choices
            .push((field, format!("`{shape}`: any word for `{word}`")));
    }
    for (name, value) in &request.args {
        let never = operation.shell_args.contains(name)
            || operation.path_args.contains(name)
            || operation.flag_args.contains(name);
        if !never {
            let shown = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            offer
                .choices
                .push((name.clone(), format!("any `{name}` (this one: {shown})")));
        }
    }
    let now = Utc::now();
    offer.remembered = core
        .store
        .grants_for(&job.tool_name, &job.operation, now)
        .await
        .map_err(|e| ServiceError::unavailable("the standing grants could not be read", &e))?
        .into_iter()
        .find(|g| g.job_id == job.job_id && g.approvers.iter().any(|a| a == viewer))
        .map(|g| g.id);
    Ok(Some(offer))
}

/// The audit row of a grant's creation, second approver or revocation (`what`).
fn grant_event(
    grant: &GrantRecord,
    job: &Job,
    who: &str,
    what: &str,
    now: DateTime<Utc>,
) -> NewAuditEvent {
    let (action, reason) = match what {
        "grant.revoke" => (
            AuditAction::Cancel,
            format!("grant {} revoked by {who}", grant.id),
        ),
        _ => (
            AuditAction::Approve,
            format!(
                "approval remembered by {who} for {} {} until {}{}",
                grant.subject_kind,
                grant.subject,
                grant
                    .expires_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                grant
                    .max_uses
                    .map(|n| format!(", at most {n} use{}", if n == 1 { "" } else { "s" }))
                    .unwrap_or_default()
            ),
        ),
    };
    let mut event = NewAuditEvent::new(
        EventKind::PortalAction,
        who,
        &job.tool_name,
        &job.operation,
        action,
        &reason,
        job.risk,
    );
    event.timestamp = now;
    event.job_id = Some(job.job_id.clone());
    event.call_hash = Some(job.call_hash.clone());
    event.context = json!({
        "grant": grant.id,
        "event": what,
        "scope": serde_json::from_str::<Value>(&grant.scope).unwrap_or(Value::Null),
        "subject": { "kind": grant.subject_kind, "name": grant.subject },
        "expires_at": grant.expires_at.to_rfc3339(),
        "max_uses": grant.max_uses,
    })
    .to_string();
    event
}

/// The grant that allows a call the enforcer would hold, with its use spent, if one covers it:
/// for `principal` (the requester; with the caller's roles only when the caller is the
/// requester, so a service acting for someone never matches a group grant by its own roles),
/// the call's `request` and fresh `decision`. A grant never allows a call of one of its own
/// approvers. `None` when the decision may not be remembered or no standing grant allows it.
pub async fn grant_for(
    core: &Core,
    request: &Request,
    principal: &Principal,
    decision: &Decision,
) -> Result<Option<GrantRecord>, ServiceError> {
    if decision.action != enforcer::Action::RequireApproval
        || grant::why_not_remembered(decision, &core.policy).is_some()
    {
        return Ok(None);
    }
    let Some(operation) = core.policy.operation(&request.tool, &request.operation) else {
        return Ok(None);
    };
    let now = Utc::now();
    let unreadable =
        |e: StoreError| ServiceError::unavailable("the standing grants could not be read", &e);
    let candidates = core
        .store
        .grants_for(&request.tool, &request.operation, now)
        .await
        .map_err(unreadable)?;
    for candidate in candidates {
        let Ok(scope) = serde_json::from_str::<GrantScope>(&candidate.scope) else {
            tracing::warn!(grant = %candidate.id, "a grant's scope cannot be read; it is skipped");
            continue;
        };
        if candidate.approvers.contains(&principal.id)
            || !terms_of(&candidate).stands_for(principal, now.timestamp())
            || !grant::allows(&scope, request, decision, operation, &core.policy)
        {
            continue;
        }
        if core
            .store
            .spend_grant(&candidate.id, now)
            .await
            .map_err(unreadable)?
        {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

/// Where a grant stands at `now`, in words: `standing`, `spent`, `expired`, `revoked`, or
/// `waiting for a second approver`.
pub fn state_of(grant: &GrantRecord, now: DateTime<Utc>) -> &'static str {
    if grant.revoked_at.is_some() {
        "revoked"
    } else if grant.expires_at <= now {
        "expired"
    } else if !grant.active() {
        "waiting for a second approver"
    } else if grant.max_uses.is_some_and(|max| grant.uses >= max) {
        "spent"
    } else {
        "standing"
    }
}

/// A stored grant's terms, as the enforcer reads them.
pub fn terms_of(record: &GrantRecord) -> GrantTerms {
    GrantTerms {
        subject: if record.subject_kind == "group" {
            Subject::Group(record.subject.clone())
        } else {
            Subject::Person(record.subject.clone())
        },
        expires_at: record.expires_at.timestamp(),
        uses: u32::try_from(record.uses).unwrap_or(u32::MAX),
        max_uses: record.max_uses.map(|n| u32::try_from(n).unwrap_or(0)),
        revoked: record.revoked_at.is_some(),
        active: record.active(),
    }
}

/// Grants are the approvers', auditors' and admins' to read.
pub fn may_read(core: &Core, roles: &[String]) -> Result<(), ServiceError> {
    let approver = &core.policy.approvals.approver_role;
    if roles
        .iter()
        .any(|r| r == approver || r == "auditor" || r == "admin")
    {
        Ok(())
    } else {
        Err(ServiceError::forbidden(
            "not_approver",
            "standing grants are for approvers, auditors and admins",
        ))
    }
}

/// Every grant, newest first (at most 500).
pub async fn list(core: &Core, roles: &[String]) -> Result<Vec<GrantRecord>, ServiceError> {
    may_read(core, roles)?;
    core.store
        .grants_page(500)
        .await
        .map_err(|e| ServiceError::unavailable("the standing grants could not be read", &e))
}

/// Revoke grant `id` at once, as `who` (an approver or admin).
pub async fn revoke(core: &Core, who: &Principal, id: &str) -> Result<GrantRecord, ServiceError> {
    let approver = &core.policy.approvals.approver_role;
    if !who.roles.iter().any(|r| r == approver || r == "admin") {
        return Err(ServiceError::forbidden(
            "not_approver",
            "only approvers and admins revoke standing grants",
        ));
    }
    let unreadable = |e: StoreError| match e {
        StoreError::NotFound => ServiceError::not_found("no such grant"),
        other => ServiceError::unavailable("the grant could not be read", &other),
    };
    let grant = core.store.grant(id).await.map_err(unreadable)?;
    let job = core.store.job(&grant.job_id).await.map_err(unreadable)?;
    let now = Utc::now();
    let event = grant_event(&grant, &job, &who.id, "grant.revoke", now);
    core.store
        .revoke_grant(id, &who.id, now, &event)
        .await
        .map_err(|e| match e {
            StoreError::Invalid(message) => ServiceError::Conflict {
                code: "already_revoked",
                message,
            },
            other => unreadable(other),
        })
}
