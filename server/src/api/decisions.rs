//! `POST /api/v1/decisions`: a tool server asks whether a call may run. The enforcer decides;
//! the decision is in the audit trail (durable) before the answer leaves, and a call that needs
//! approval becomes a queued job. If the audit write fails, the answer is 503 and nothing is
//! allowed (fail closed).

use super::schema::DecisionAnswer;
use super::{rate_limit, ApiError, BODY_LIMIT};
use crate::api::caller::ApiCaller;
use crate::services::idempotency;
use crate::store::{EventKind, NewAuditEvent, NewJob};
use crate::AppState;
use axum::{
    body::Body,
    extract::State,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use enforcer::record::REASON_SEPARATOR;
use enforcer::wire::DecisionInput;
use enforcer::{Action, Principal, Risk};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Header carrying the person's own access token when a service acts for them.
pub const PERSON_TOKEN_HEADER: &str = "x-on-behalf-of-token";

/// Parse and check a request body (see [`enforcer::wire`]). Every refusal names its field.
pub fn parse(body: &[u8]) -> Result<DecisionInput, ApiError> {
    enforcer::wire::parse_decision(body).map_err(|e| match &e.field {
        Some(field) => ApiError::bad_request(e.code, field, e.message),
        None => ApiError::new(StatusCode::BAD_REQUEST, e.code, e.message),
    })
}

/// How urgent a queued job is, from its risk.
pub fn priority(risk: Risk) -> &'static str {
    match risk {
        Risk::Critical => "urgent",
        Risk::High => "high",
        Risk::Medium => "normal",
        Risk::Low => "low",
    }
}

/// Who the decision is for: the caller, or the person a delegating service names. Returns the
/// requester and the capabilities to check.
async fn requester(
    state: &AppState,
    caller: &ApiCaller,
    input: &DecisionInput,
    headers: &HeaderMap,
) -> Result<(String, BTreeSet<String>), ApiError> {
    let mut capabilities: BTreeSet<String> = caller.capabilities.iter().cloned().collect();
    let Some(person) = &input.on_behalf_of else {
        return Ok((caller.id.clone(), capabilities));
    };
    if !state.delegating_callers.contains(&caller.id) {
        return Err(ApiError {
            field: Some("on_behalf_of".into()),
            ..ApiError::new(
                StatusCode::FORBIDDEN,
                "delegation_not_allowed",
                "this caller may not act on behalf of people (setting api_delegating_callers)",
            )
        });
    }
    if let Some(token) = headers.get(PERSON_TOKEN_HEADER) {
        let Some(oidc) = &state.oidc else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "person_token_unsupported",
                "a person's token can only be checked with an identity provider configured",
            ));
        };
        let token = token.to_str().unwrap_or_default();
        let (_, identity) = oidc.verify_bearer(token).await.map_err(|_| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "person_token_invalid",
                "the person's token was refused",
            )
        })?;
        if identity.is_service || &identity.id != person {
            return Err(ApiError {
                field: Some("on_behalf_of".into()),
                ..ApiError::new(
                    StatusCode::FORBIDDEN,
                    "person_token_mismatch",
                    "the person's token names someone else",
                )
            });
        }
        // The service may only do what the person may do too.
        capabilities.retain(|c| identity.capabilities.contains(c));
    }
    Ok((person.clone(), capabilities))
}

/// Ask whether a tool call may run.
///
/// The enforcer decides allow, deny or require_approval and says why; the audit row is durable
/// before the answer. `require_approval` queues a job: long-poll its `status_url`. An
/// `Idempotency-Key` header makes retries return the first answer.
#[utoipa::path(
    post,
    path = "/api/v1/decisions",
    tag = "decisions",
    request_body = super::schema::DecisionRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key and body get the same answer"),
        ("X-On-Behalf-Of-Token" = Option<String>, Header, description = "The person's own access token, narrowing a delegating service's capabilities to theirs"),
    ),
    responses(
        (status = 200, description = "The decision", body = super::schema::DecisionAnswer),
        (status = 400, description = "Bad input", body = super::schema::ErrorBody),
        (status = 401, description = "No valid bearer token", body = super::schema::ErrorBody),
        (status = 403, description = "Not allowed to act for that person", body = super::schema::ErrorBody),
        (status = 409, description = "The same Idempotency-Key is still in flight", body = super::schema::ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = super::schema::ErrorBody),
        (status = 415, description = "Not application/json", body = super::schema::ErrorBody),
        (status = 422, description = "Idempotency-Key reused with another body", body = super::schema::ErrorBody),
        (status = 429, description = "Over the caller's rate (see Retry-After)", body = super::schema::ErrorBody),
        (status = 503, description = "The store is unavailable; retry", body = super::schema::ErrorBody),
    )
)]
pub async fn decide(
    State(state): State<AppState>,
    caller: ApiCaller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match decide_inner(&state, &caller, &headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn decide_inner(
    state: &AppState,
    caller: &ApiCaller,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    rate_limit(state, caller)?;
    if let Some(kind) = headers.get(header::CONTENT_TYPE) {
        let kind = kind.to_str().unwrap_or_default().to_ascii_lowercase();
        if !kind.starts_with("application/json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the request as application/json",
            ));
        }
    }
    let bytes = axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body must be at most {} KiB", BODY_LIMIT / 1024),
        )
    })?;
    let input = parse(&bytes)?;
    let (requester, capabilities) = requester(state, caller, &input, headers).await?;

    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => {
            let key = value.to_str().unwrap_or_default();
            if !idempotency::valid_key(key) {
                return Err(ApiError::bad_request(
                    "invalid_idempotency_key",
                    "Idempotency-Key",
                    "Idempotency-Key must be 1 to 255 visible ASCII characters",
                ));
            }
            Some(key.to_string())
        }
    };
    if let Some(key) = &key {
        let claim = idempotency::claim(&state.store, &caller.id, key, &input.body_hash)
            .await
            .map_err(|e| ApiError::unavailable("the decision could not be recorded", &e))?;
        match claim {
            idempotency::Claim::Fresh => {}
            idempotency::Claim::Replay(stored) => {
                let mut response = json_response(stored);
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                return Ok(response);
            }
            idempotency::Claim::InFlight => {
                return Err(ApiError {
                    retry_after: Some(1),
                    ..ApiError::new(
                        StatusCode::CONFLICT,
                        "idempotency_in_progress",
                        "a request with this Idempotency-Key is being answered; retry shortly",
                    )
                })
            }
            idempotency::Claim::Mismatch => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used for a different request",
                ))
            }
        }
    }
    let answer = record(state, caller, &input, requester, capabilities, started).await;
    match (&key, answer) {
        (Some(key), Ok(body)) => {
            if let Err(error) = idempotency::complete(&state.store, &caller.id, key, &body).await {
                // The decision is recorded; only a replay of it is not. Say so in the log.
                tracing::error!(%error, "could not store the answer for an Idempotency-Key");
                idempotency::release(&state.store, &caller.id, key).await;
            }
            Ok(json_response(body))
        }
        (None, Ok(body)) => Ok(json_response(body)),
        (Some(key), Err(error)) => {
            idempotency::release(&state.store, &caller.id, key).await;
            Err(error)
        }
        (None, Err(error)) => Err(error),
    }
}

/// A JSON answer already serialized (stored for replays, or built once).
pub(super) fn json_response(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// The row's `context`: who asked, for whom, why and with what. Fields the call left out are
/// left out here too (no `null`s stored in every row); tool and operation have their columns,
/// and so does the caller when it is the requester (`caller_id`): `caller` is there only when
/// a service asked on someone's behalf. `caller_kind` is there only when the caller did not
/// use a token Countersign issued (`countersign token create`), i.e. for the identity
/// provider's `service` accounts and `person`s: [`caller_kind`] reads it back.
fn stored_context(caller: &ApiCaller, input: &DecisionInput, requester: &str) -> String {
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
    caller: &ApiCaller,
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
        decision.action.as_str(),
        &enforcer::record::joined_reasons(decision),
        decision.risk.as_str(),
    );
    event.context = stored_context(caller, input, requester);
    event.decision = enforcer::record::compact(decision, request, policy);
    event.policy_hash = Some(decision.policy_hash.clone());
    event.call_hash = Some(decision.call_hash.clone());
    event
}

/// Decide, write the audit row (and queue the job), and return the answer's JSON text.
async fn record(
    state: &AppState,
    caller: &ApiCaller,
    input: &DecisionInput,
    requester: String,
    capabilities: BTreeSet<String>,
    started: std::time::Instant,
) -> Result<String, ApiError> {
    let request = input.request();
    let principal = Principal {
        id: requester.clone(),
        roles: caller.roles.iter().cloned().collect(),
        capabilities,
    };
    let decision = enforcer::evaluate(&request, &principal, &state.policy);
    let needs_job = decision.action == Action::RequireApproval;
    let now = chrono::Utc::now();
    // Time-ordered ids: new rows land at the right edge of the id indexes, so a batch of
    // decisions dirties a few index pages rather than one per row.
    let audit_id = uuid::Uuid::now_v7().to_string();
    let job_id = needs_job.then(|| uuid::Uuid::now_v7().to_string());

    let mut event = decision_event(
        caller,
        input,
        &request,
        &requester,
        &decision,
        &state.policy,
    );
    event.id = Some(audit_id.clone());
    event.timestamp = now;
    event.job_id = job_id.clone();
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
            target_agent_id: crate::executors::assignment(
                &state.policy,
                &input.tool,
                &input.operation,
            ),
            priority: priority(decision.risk).to_string(),
            requester: requester.clone(),
            requester_reason: input.reason.clone(),
            risk: decision.risk.as_str().to_string(),
            call_hash: decision.call_hash.clone(),
            policy_hash: Some(decision.policy_hash.clone()),
            approvals_required: i32::try_from(decision.approvals_required.max(1)).unwrap_or(1),
            created_at: now,
            expires_at: now + chrono::Duration::seconds(ttl),
            approval_window_secs: i64::try_from(decision.approval_window_secs).unwrap_or(3_600),
            max_retries: 2,
            decision_audit_id: Some(audit_id.clone()),
            submitted_by: Some(caller.id.clone()),
        }
    });
    // Fail closed: no answer (so nothing allowed) unless the row (and job) is durable.
    let written = match job {
        Some(job) => state
            .audit
            .append_with_job(event, job)
            .await
            .map(|(receipt, job)| (receipt, Some(job))),
        None => state
            .audit
            .append(event)
            .await
            .map(|receipt| (receipt, None)),
    };
    let (receipt, stored) = written.map_err(|e| ApiError {
        action: Some("deny"),
        ..ApiError::unavailable(
            "the decision could not be recorded, so the call is denied",
            &e,
        )
    })?;

    let mut answer = DecisionAnswer {
        action: decision.action.as_str().to_string(),
        risk: decision.risk.as_str().to_string(),
        reasons: decision.reasons.clone(),
        decision: serde_json::to_value(&decision).unwrap_or(Value::Null),
        audit_id: receipt.id,
        audit_seq: receipt.seq,
        requester,
        caller: caller.id.clone(),
        job_id: None,
        status: None,
        status_url: None,
        expires_at: None,
        approvals_required: None,
    };
    if let Some(stored) = stored {
        state.notify_job(&stored);
        answer.status = Some(stored.status.as_str().to_string());
        answer.status_url = Some(format!("/api/v1/jobs/{}", stored.job_id));
        answer.expires_at = stored.expires_at;
        answer.approvals_required = Some(stored.approvals_required);
        answer.job_id = Some(stored.job_id);
    }
    state.metrics.decision(
        decision.action.as_str(),
        decision.risk.as_str(),
        started.elapsed(),
    );
    Ok(serde_json::to_string(&answer).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        caller: &ApiCaller,
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

    fn caller(id: &str) -> ApiCaller {
        ApiCaller {
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
        let service = ApiCaller {
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
