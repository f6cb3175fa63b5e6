//! Deciding a tool call: the enforcer decides, the decision is in the audit trail (durable)
//! before anyone hears it, and a call that needs approval becomes a queued job in the same
//! transaction. If the audit write fails, the answer is an error and nothing is allowed (fail
//! closed).

use super::{Caller, Core, ServiceError};
use crate::store::{
    AuditReceipt, EventKind, Job, NewAuditEvent, NewJob, OpenCallScope, Priority, Store,
    MCP_GATEWAY_PREFIX,
};
use enforcer::record::REASON_SEPARATOR;
use enforcer::wire::DecisionInput;
use enforcer::{Action, Principal};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, PoisonError};

/// A recorded decision: what the enforcer said, its audit row, and the job it queued or, for a
/// call whose request was already open, the job it joined (`attached`).
#[derive(Debug)]
pub struct Decided {
    pub decision: enforcer::Decision,
    pub receipt: AuditReceipt,
    pub job: Option<Job>,
    pub attached: bool,
    /// The standing grant that allowed the call in place of people's approval.
    pub grant: Option<String>,
}

/// The calls needing approval being decided in this process, by caller, requester and call
/// hash: identical calls that arrive together are decided one after the other, so the second
/// finds the first's request and joins it instead of asking again.
#[derive(Default)]
pub struct AdmissionLocks(std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl AdmissionLocks {
    /// Wait for this call's turn; it lasts as long as the guard.
    async fn turn(&self, key: String) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            // Only calls being decided right now hold a lock: forget the others.
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            locks.entry(key).or_default().clone()
        };
        lock.lock_owned().await
    }
}

/// Who runs the job a `require_approval` decision queues, once it is approved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// The executor or agent the policy names for the operation (or any agent).
    Policy,
    /// The MCP gateway that asked: the call goes to `tool` of the upstream `upstream` with the
    /// assistant's own `arguments` (all kept in the decision's context), run by the gateway call
    /// that collects the approval or, for a call that came over HTTP (`unattended`) and that no
    /// call collects, by the server's `mcp` executor.
    McpGateway {
        upstream: &'a str,
        tool: &'a str,
        arguments: &'a serde_json::Map<String, Value>,
        unattended: bool,
    },
}

/// Check that `caller` may act for `person` (a delegating service, named in
/// `api_delegating_callers`): the decision is then the person's, with the caller's capabilities.
/// The name is taken exactly: one with spaces or control characters around or in it is refused
/// (it would not match the person's own name when they vote).
pub fn may_act_for(core: &Core, caller: &Caller, person: &str) -> Result<(), ServiceError> {
    if person.is_empty() || person.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ServiceError::Invalid {
            code: "invalid_on_behalf_of",
            field: Some("on_behalf_of".into()),
            message: "name the person the call is made for, without spaces".into(),
        });
    }
    if !core.delegating_callers.contains(&caller.id) {
        return Err(ServiceError::Forbidden {
            code: "delegation_not_allowed",
            reason: "this caller may not act on behalf of people (setting api_delegating_callers)"
                .into(),
        });
    }
    Ok(())
}

/// Decide `input` for `requester` (the caller, or the person a delegating caller acts for)
/// with `capabilities`, and record it: the audit row, and for `require_approval` the queued
/// job (run as `route` says), in one transaction.
///
/// One request per call: a call that needs approval while the same caller's request for the
/// same requester and call hash is open joins that job instead of queuing another (its row
/// names the job and says `"attached": true`), so an assistant's retries and loops do not stack
/// requests. A new request is refused ([`ServiceError::Limit`]) when the caller already has
/// `max_pending_requests` of them waiting for this requester.
pub async fn decide(
    core: &Core,
    caller: &Caller,
    input: &DecisionInput,
    requester: &str,
    capabilities: BTreeSet<String>,
    route: Route<'_>,
) -> Result<Decided, ServiceError> {
    let request = input.request();
    let principal = Principal {
        id: requester.to_string(),
        roles: caller.roles.iter().cloned().collect(),
        capabilities,
    };
    let mut decision = enforcer::evaluate(&request, &principal, &core.policy);
    // A standing grant that covers the call stands in for people's approval (its use spent).
    // Group grants match the requester's roles: known only when the caller is the requester.
    let grantee = Principal {
        id: requester.to_string(),
        roles: if caller.id == requester {
            principal.roles.clone()
        } else {
            Default::default()
        },
        capabilities: Default::default(),
    };
    let grant = super::grants::grant_for(core, &request, &grantee, &decision).await?;
    if let Some(grant) = &grant {
        decision.action = Action::Allow;
        decision.approvals_required = 0;
        decision.reasons.insert(0, granted_because(grant));
    }
    let mut needs_job = decision.action == Action::RequireApproval;
    // Identical calls take turns from here until their rows are written.
    let mut _turn = None;
    let mut joined = None;
    if needs_job {
        _turn = Some(
            core.admissions
                .turn(format!(
                    "{}\n{requester}\n{}",
                    caller.id, decision.call_hash
                ))
                .await,
        );
        joined = match open_request(core, caller, requester, &decision.call_hash, route).await {
            Ok(joined) => joined,
            Err(refusal @ ServiceError::Limit { .. }) => {
                let refused = Refused {
                    caller,
                    input,
                    requester,
                    route,
                };
                return Err(refused.record(core, decision, refusal).await);
            }
            Err(other) => return Err(other),
        };
        needs_job = joined.is_none();
    }
    let now = chrono::Utc::now();
    // Time-ordered ids: new rows land at the right edge of the id indexes, so a batch of
    // decisions dirties a few index pages rather than one per row.
    let audit_id = uuid::Uuid::now_v7().to_string();
    let job_id = needs_job.then(|| uuid::Uuid::now_v7().to_string());

    let mut event = decision_event(caller, input, &request, requester, &decision, &core.policy);
    event.id = Some(audit_id.clone());
    event.timestamp = now;
    event.job_id = job_id.clone();
    if let Some(open) = &joined {
        event.job_id = Some(open.job_id.clone());
        event.context = with_attached(&event.context);
    }
    if let Some(grant) = &grant {
        event.context = with_grant(&event.context, &grant.id);
    }
    if let Route::McpGateway {
        upstream,
        tool,
        arguments,
        unattended,
    } = route
    {
        event.context = with_mcp_call(&event.context, upstream, tool, arguments, unattended);
    }
    // A decision that needs approval is recorded together with its job, in one transaction.
    let job = job_id.as_ref().map(|job_id| {
        let ttl = i64::try_from(decision.ttl_secs).unwrap_or(i64::MAX / 2);
        NewJob {
            job_id: Some(job_id.clone()),
            tool_name: input.tool.clone(),
            operation: input.operation.clone(),
            params: enforcer::canonical_json(&Value::Object(input.args.clone())),
            requested_capabilities: decision.required_capabilities.iter().cloned().collect(),
            target: input.target.clone(),
            target_agent_id: match route {
                Route::Policy => {
                    super::execution::assignment(&core.policy, &input.tool, &input.operation)
                }
                Route::McpGateway { .. } => Some(format!("{MCP_GATEWAY_PREFIX}{job_id}")),
            },
            priority: Priority::for_risk(decision.risk),
            requester: requester.to_string(),
            requester_reason: input.reason.clone(),
            risk: decision.risk,
            call_hash: decision.call_hash.clone(),
            policy_hash: Some(decision.policy_hash.clone()),
            approvals_required: i32::try_from(decision.approvals_required.max(1)).unwrap_or(1),
            created_at: now,
            expires_at: now + chrono::Duration::seconds(ttl),
            approval_window_secs: i64::try_from(decision.approval_window_secs).unwrap_or(3_600),
            // An MCP call may have taken effect even if its runner vanished: it is never
            // handed out again (at most once); other jobs may be retried twice.
            max_retries: if matches!(route, Route::McpGateway { .. }) {
                0
            } else {
                2
            },
            decision_audit_id: Some(audit_id.clone()),
            submitted_by: Some(caller.id.clone()),
        }
    });
    // Fail closed: no answer (so nothing allowed) unless the row (and job) is durable.
    let written = match job {
        Some(job) => core
            .audit
            .append_with_job(event, job)
            .await
            .map(|(receipt, job)| (receipt, Some(job))),
        None => core
            .audit
            .append(event)
            .await
            .map(|receipt| (receipt, None)),
    };
    let (receipt, stored) = written.map_err(|e| {
        ServiceError::unavailable(
            "the decision could not be recorded, so the call is denied",
            &e,
        )
    })?;
    if let Some(job) = &stored {
        core.notify_job(job);
    }
    let attached = joined.is_some();
    Ok(Decided {
        decision,
        receipt,
        job: stored.or(joined),
        attached,
        grant: grant.map(|g| g.id),
    })
}

/// A call refused for the caller's limit of pending requests, before anyone was asked.
struct Refused<'a> {
    caller: &'a Caller,
    input: &'a DecisionInput,
    requester: &'a str,
    route: Route<'a>,
}

impl Refused<'_> {
    /// Record it: a decision row that says `deny` (the call is not made, and nobody is asked)
    /// with the limit's sentence first, then the enforcer's reasons. Gives back the refusal,
    /// or, should the row not be written, that the decision could not be recorded (either way
    /// nothing is allowed).
    async fn record(
        self,
        core: &Core,
        mut decision: enforcer::Decision,
        refusal: ServiceError,
    ) -> ServiceError {
        decision.action = Action::Deny;
        decision.approvals_required = 0;
        decision.reasons.insert(0, refusal.to_string());
        let request = self.input.request();
        let mut event = decision_event(
            self.caller,
            self.input,
            &request,
            self.requester,
            &decision,
            &core.policy,
        );
        event.context = with_refused_for(&event.context, "pending_limit");
        if let Route::McpGateway {
            upstream,
            tool,
            arguments,
            unattended,
        } = self.route
        {
            event.context = with_mcp_call(&event.context, upstream, tool, arguments, unattended);
        }
        match core.audit.append(event).await {
            Ok(_) => refusal,
            Err(e) => ServiceError::unavailable(
                "the decision could not be recorded, so the call is denied",
                &e,
            ),
        }
    }
}

/// A decision row's context for a call Countersign refused before asking anyone (`code`).
fn with_refused_for(context: &str, code: &str) -> String {
    let mut value: Value = serde_json::from_str(context).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut value {
        map.insert("refused".into(), json!(code));
    }
    value.to_string()
}

/// The open request a call needing approval joins (see [`decide`]), or `None` when it is a new
/// one; a new one over the caller's limit of pending requests for the requester is refused.
async fn open_request(
    core: &Core,
    caller: &Caller,
    requester: &str,
    call_hash: &str,
    route: Route<'_>,
) -> Result<Option<Job>, ServiceError> {
    let unreadable = |e: crate::store::StoreError| {
        ServiceError::unavailable("the approval queue could not be read", &e)
    };
    let scope = match route {
        Route::Policy => OpenCallScope::Pending,
        Route::McpGateway { .. } => OpenCallScope::Gateway,
    };
    let open = core
        .store
        .open_job_for_call(requester, &caller.id, call_hash, scope, chrono::Utc::now())
        .await
        .map_err(unreadable)?;
    if open.is_some() || core.max_pending_requests == 0 {
        return Ok(open);
    }
    let pending = core
        .store
        .pending_requests(&caller.id, requester, chrono::Utc::now())
        .await
        .map_err(unreadable)?;
    if pending >= core.max_pending_requests {
        tracing::warn!(caller = %caller.id, %requester, pending, "a request for approval was refused: too many pending");
        return Err(ServiceError::Limit {
            code: "pending_limit",
            message: format!(
                "{} already has {pending} requests waiting for approval for {requester}; the limit is {} \
                 (max_pending_requests). Wait for people to decide, or withdraw some, before asking again.",
                caller.id, core.max_pending_requests
            ),
        });
    }
    Ok(None)
}

/// The first reason of a call a standing grant allowed.
fn granted_because(grant: &crate::store::GrantRecord) -> String {
    let left = grant
        .max_uses
        .map(|max| {
            let left = (max - grant.uses - 1).max(0);
            format!(", {left} use{} left", if left == 1 { "" } else { "s" })
        })
        .unwrap_or_default();
    format!(
        "allowed by standing grant {} (remembered by {} until {}{left})",
        grant.id,
        grant.approvers.join(" and "),
        grant
            .expires_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// A decision row's context for a call a standing grant allowed.
fn with_grant(context: &str, grant: &str) -> String {
    let mut value: Value = serde_json::from_str(context).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut value {
        map.insert("grant".into(), json!(grant));
    }
    value.to_string()
}

/// A decision row's context for a call that joined an open request.
fn with_attached(context: &str) -> String {
    let mut value: Value = serde_json::from_str(context).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut value {
        map.insert("attached".into(), json!(true));
    }
    value.to_string()
}

/// The row's `context`: who asked, for whom, why and with what. Fields the call left out are
/// left out here too (no `null`s stored in every row); tool and operation have their columns,
/// and so does the caller when it is the requester (`caller_id`): `caller` is there only when
/// a service asked on someone's behalf. `caller_kind` is there only when the caller did not
/// use a token Countersign issued (`countersign token create`), i.e. for the identity
/// provider's `service` accounts and `person`s: [`caller_kind`] reads it back.
fn stored_context(caller: &Caller, input: &DecisionInput, requester: &str) -> String {
    let mut context = input.to_json();
    if let Value::Object(map) = &mut context {
        map.remove("tool");
        map.remove("operation");
        if caller.id != requester {
            map.insert("caller".into(), json!(caller.id));
        }
        if caller.kind != DEFAULT_CALLER_KIND {
            map.insert("caller_kind".into(), json!(caller.kind));
        }
    }
    context.to_string()
}

/// A decision row's context with the MCP call it came from: `"mcp": {"upstream", "tool",
/// "arguments"}` (the assistant's arguments as sent, before the policy's renames) and
/// `"unattended": true` when the server may run it with no call waiting.
fn with_mcp_call(
    context: &str,
    upstream: &str,
    tool: &str,
    arguments: &serde_json::Map<String, Value>,
    unattended: bool,
) -> String {
    let mut value: Value = serde_json::from_str(context).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut value {
        let mut call = json!({ "upstream": upstream, "tool": tool, "arguments": arguments });
        if unattended {
            call["unattended"] = json!(true);
        }
        map.insert("mcp".into(), call);
    }
    value.to_string()
}

/// The MCP call a decision row's context names: upstream, tool, the assistant's arguments, and
/// whether the server may run it unattended (`None` for other decisions).
pub fn mcp_call_of(context: &Value) -> Option<(&str, &str, &serde_json::Map<String, Value>, bool)> {
    let call = &context["mcp"];
    Some((
        call["upstream"].as_str()?,
        call["tool"].as_str()?,
        call["arguments"].as_object()?,
        call["unattended"].as_bool().unwrap_or(false),
    ))
}

/// The kind of caller a decision row's context names when it names none.
const DEFAULT_CALLER_KIND: &str = "api-token";

/// How the caller of a decision row authenticated (`api-token`, `service` or `person`), from
/// the row's stored context.
pub fn caller_kind(context: &Value) -> &str {
    context["caller_kind"]
        .as_str()
        .unwrap_or(DEFAULT_CALLER_KIND)
}

/// The whole decision of a decision row, made under `policy` (the one whose hash the row
/// holds): the row keeps only what the policy, the call and its columns cannot give back (see
/// [`enforcer::record`]). Rows written before that kept more, and are read as they are. `None`
/// when the row is not one the decision API wrote or `policy` is not the row's.
pub fn full_decision(
    row: &NewAuditEvent,
    policy: &enforcer::PolicySet,
) -> Option<enforcer::Decision> {
    let context: Value = serde_json::from_str(&row.context).ok()?;
    let request = enforcer::Request {
        tool: row.tool.clone(),
        operation: row.operation.clone(),
        args: context["args"].as_object().cloned().unwrap_or_default(),
        target: context["target"].as_str().map(str::to_string),
    };
    let columns = enforcer::record::Columns {
        action: &row.decision_action,
        risk: &row.risk_level,
        reason: &row.decision_reason,
        policy_hash: row.policy_hash.as_deref()?,
        call_hash: row.call_hash.as_deref()?,
    };
    enforcer::record::expand(&row.decision, &request, &columns, policy)
        .or_else(|| earlier_decision(row))
}

/// A decision row as written from 2026-12-03 until the compact form: the decision less its
/// columns, every field but the reasons present.
fn earlier_decision(row: &NewAuditEvent) -> Option<enforcer::Decision> {
    let Value::Object(mut stored) = serde_json::from_str(&row.decision).ok()? else {
        return None;
    };
    stored.get("policy_name")?;
    let mut put = |field: &str, value: Value| {
        stored.entry(field.to_string()).or_insert(value);
    };
    put("action", json!(row.decision_action));
    put("risk", json!(row.risk_level));
    put("policy_hash", json!(row.policy_hash.as_ref()?));
    put("call_hash", json!(row.call_hash.as_ref()?));
    let reasons: Vec<&str> = if row.decision_reason.is_empty() {
        Vec::new()
    } else {
        row.decision_reason.split(REASON_SEPARATOR).collect()
    };
    put("reasons", json!(reasons));
    serde_json::from_value(Value::Object(stored)).ok()
}

/// The audit row of a decision, as the API writes it (the audit id, time and job id are the
/// caller's to set). Public so that benchmarks store exactly these rows.
pub fn decision_event(
    caller: &Caller,
    input: &DecisionInput,
    request: &enforcer::Request,
    requester: &str,
    decision: &enforcer::Decision,
    policy: &enforcer::PolicySet,
) -> NewAuditEvent {
    let mut event = NewAuditEvent::new(
        EventKind::Decision,
        requester,
        &input.tool,
        &input.operation,
        decision.action.into(),
        &enforcer::record::joined_reasons(decision),
        decision.risk,
    );
    // A call shadow mode allowed is `allow` with `requires_approval` set: what the caller got,
    // and that enforcing would have held it (the stored decision says `would_block` too).
    event.requires_approval = decision.action == Action::RequireApproval || decision.would_block;
    event.context = stored_context(caller, input, requester);
    event.decision = enforcer::record::compact(decision, request, policy);

    event.policy_hash = Some(decision.policy_hash.clone());
    event.call_hash = Some(decision.call_hash.clone());
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use enforcer::wire::parse_decision as parse;

    fn decide(body: &str, capabilities: &[&str]) -> (DecisionInput, enforcer::Decision) {
        let policy = policy();
        let input = parse(body.as_bytes()).expect("valid body");
        let principal = Principal {
            id: "alice".into(),
            roles: BTreeSet::new(),
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        };
        let decision = enforcer::evaluate(&input.request(), &principal, &policy);
        (input, decision)
    }

    fn policy() -> enforcer::PolicySet {
        enforcer::default_policy().expect("default policy")
    }

    /// The row the API writes for `decision`, asked by `caller` for `requester`.
    fn row_of(
        caller: &Caller,
        input: &DecisionInput,
        requester: &str,
        decision: &enforcer::Decision,
    ) -> NewAuditEvent {
        decision_event(
            caller,
            input,
            &input.request(),
            requester,
            decision,
            &policy(),
        )
    }

    fn caller(id: &str) -> Caller {
        Caller {
            id: id.into(),
            kind: "api-token",
            roles: Vec::new(),
            capabilities: Vec::new(),
        }
    }

    #[test]
    fn a_decision_row_gives_back_the_whole_decision() {
        let shell = ["ssh-linux", "remote-exec", "local-sudo", "local-shell"];
        let cases = [
            (
                r#"{"tool":"ssh-exec","operation":"executeCommand","args":{"command":"sudo rm -rf /var/tmp/x"},"target":"web-01"}"#,
                &shell[..],
                Action::RequireApproval,
            ),
            (
                r#"{"tool":"ssh-exec","operation":"executeCommand","args":{"command":"uptime"}}"#,
                &shell[..],
                Action::Allow,
            ),
            (
                r#"{"tool":"system-overview","operation":"getOverview"}"#,
                &shell[..],
                Action::Allow,
            ),
            (
                r#"{"tool":"ssh-exec","operation":"executeSudoCommand","args":{"command":"id"}}"#,
                &shell[..],
                Action::RequireApproval,
            ),
            (
                r#"{"tool":"ssh-exec","operation":"executeCommand","args":{"command":"uptime"}}"#,
                &["ssh-linux"][..],
                Action::Deny,
            ),
            (
                r#"{"tool":"ssh-exec","operation":"executeCommand","args":{"command":7}}"#,
                &shell[..],
                Action::Deny,
            ),
            (
                r#"{"tool":"no-such-tool","operation":"x"}"#,
                &shell[..],
                Action::Deny,
            ),
        ];
        for (body, capabilities, action) in cases {
            let (input, decision) = decide(body, capabilities);
            assert_eq!(decision.action, action, "{body}");
            let row = row_of(&caller("alice"), &input, "alice", &decision);
            assert_eq!(
                full_decision(&row, &policy()).as_ref(),
                Some(&decision),
                "{body}"
            );
            if action == Action::Allow {
                assert_eq!(row.decision, "{}", "{body}");
            }
            // What the columns hold is not stored again, and neither are defaults.
            let stored: Value = serde_json::from_str(&row.decision).expect("JSON");
            for repeated in ["action", "risk", "policy_hash", "call_hash", "reasons"] {
                assert!(stored.get(repeated).is_none(), "{repeated} in {stored}");
            }
            for (field, value) in stored.as_object().expect("an object") {
                assert!(
                    !matches!(value, Value::Null | Value::Bool(false))
                        && value != &json!(0)
                        && value != &json!([]),
                    "{field} is stored at its default in {stored}"
                );
            }
        }
    }

    #[test]
    fn reasons_that_the_reason_column_cannot_give_back_are_stored() {
        let (input, mut decision) = decide(
            r#"{"tool":"ssh-exec","operation":"executeCommand","args":{"command":"uptime"}}"#,
            &["ssh-linux", "remote-exec"],
        );
        for reasons in [
            vec!["one; two".to_string(), "three".into()],
            vec![String::new()],
        ] {
            decision.reasons = reasons;
            let row = row_of(&caller("alice"), &input, "alice", &decision);
            assert!(row.decision.contains("\"reasons\""), "{}", row.decision);
            assert_eq!(full_decision(&row, &policy()).as_ref(), Some(&decision));
        }
        // Not a decision row: no hashes, or text that is not a decision.
        let mut row = row_of(&caller("alice"), &input, "alice", &decision);
        row.decision = "[]".into();
        assert_eq!(full_decision(&row, &policy()), None);
        row.decision = "{}".into();
        row.call_hash = None;
        assert_eq!(full_decision(&row, &policy()), None);
    }

    #[test]
    fn rows_written_before_the_compact_form_read_back_whole() {
        let (input, decision) = decide(
            r#"{"tool":"ssh-exec","operation":"executeCommand","args":{"command":"sudo rm -rf /x"}}"#,
            &["ssh-linux", "remote-exec"],
        );
        let mut row = row_of(&caller("alice"), &input, "alice", &decision);
        // As written on 2026-12-03: everything but the columns' fields and the reasons.
        let mut earlier = serde_json::to_value(&decision).expect("JSON");
        for column in ["action", "risk", "policy_hash", "call_hash", "reasons"] {
            earlier.as_object_mut().expect("object").remove(column);
        }
        row.decision = earlier.to_string();
        assert_eq!(full_decision(&row, &policy()).as_ref(), Some(&decision));
        // Before that, the whole decision.
        row.decision = serde_json::to_string(&decision).expect("JSON");
        assert_eq!(full_decision(&row, &policy()).as_ref(), Some(&decision));
    }

    #[test]
    fn the_context_names_the_caller_only_when_it_is_not_the_requester() {
        let (input, decision) = decide(
            r#"{"tool":"ssh-exec","operation":"executeCommand","args":{"command":"uptime"},"reason":"load check"}"#,
            &["ssh-linux", "remote-exec"],
        );
        let own: Value =
            serde_json::from_str(&row_of(&caller("alice"), &input, "alice", &decision).context)
                .expect("JSON");
        assert_eq!(
            own,
            json!({"args": {"command": "uptime"}, "reason": "load check"})
        );
        assert_eq!(caller_kind(&own), "api-token");
        let delegated: Value =
            serde_json::from_str(&row_of(&caller("it-mcp"), &input, "alice", &decision).context)
                .expect("JSON");
        assert_eq!(delegated["caller"], "it-mcp");
        // A caller signed in through the identity provider is named as such.
        let service = Caller {
            kind: "service",
            ..caller("it-mcp")
        };
        let context: Value =
            serde_json::from_str(&row_of(&service, &input, "it-mcp", &decision).context)
                .expect("JSON");
        assert_eq!(
            (context["caller_kind"].as_str(), caller_kind(&context)),
            (Some("service"), "service")
        );
    }

    fn code(body: &str) -> (&'static str, Option<String>) {
        let error = parse(body.as_bytes()).expect_err("refused");
        (error.code, error.field)
    }

    #[test]
    fn a_good_body_parses() {
        let input = parse(
            br#"{"tool":"ssh-exec","operation":"executeCommand","args":{"command":"uptime"},"target":"web-1","reason":"check load"}"#,
        )
        .expect("valid");
        assert_eq!(input.tool, "ssh-exec");
        assert_eq!(input.args["command"], "uptime");
        assert_eq!(input.target.as_deref(), Some("web-1"));
        let same = parse(
            br#"{ "reason":"check load", "target":"web-1", "args":{"command":"uptime"}, "operation":"executeCommand", "tool":"ssh-exec" }"#,
        )
        .expect("valid");
        assert_eq!(
            input.body_hash, same.body_hash,
            "key order and spacing do not matter"
        );
    }

    #[test]
    fn every_bad_body_names_its_problem() {
        assert_eq!(code("{"), ("malformed_json", None));
        assert_eq!(code("[]"), ("invalid_body", None));
        assert_eq!(
            code(r#"{"tool":"t","operation":"o","argz":{}}"#),
            ("unknown_field", Some("argz".into()))
        );
        assert_eq!(
            code(r#"{"operation":"o"}"#),
            ("missing_field", Some("tool".into()))
        );
        assert_eq!(
            code(r#"{"tool":"t","operation":"o","args":[1]}"#),
            ("invalid_type", Some("args".into()))
        );
        assert_eq!(
            code(r#"{"tool":7,"operation":"o"}"#),
            ("invalid_type", Some("tool".into()))
        );
        assert_eq!(
            code(r#"{"tool":" ","operation":"o"}"#),
            ("invalid_value", Some("tool".into()))
        );
        let long = format!(
            r#"{{"tool":"t","operation":"o","reason":"{}"}}"#,
            "x".repeat(2_001)
        );
        assert_eq!(code(&long), ("invalid_value", Some("reason".into())));
    }
}
