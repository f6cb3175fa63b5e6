//! The portal's services: what the approvals pages' server functions call. Each request gets
//! one bound to the signed-in person (or to nobody, who sees and may do nothing).

use crate::services::approvals::{self, VoteError};
use crate::services::grants::RememberRequest;
use crate::store::{AuditAction, Job, JobSummary, Risk, Store, StoreError};
use crate::web::auth::SignedIn;
use crate::AppState;
use app::service::{BoxFuture, PortalService};
use app::views::{
    ApprovalView, ArgumentView, AuditList, AuditQuery, AuditRowDetail, AuditRowView, DashboardView,
    DeadLetterRow, DeliveryView, JobDetail, JobList, JobQuery, JobRow, PatternView,
    PendingApproval, RecentRow, RememberOffer, Segment, ShadowView, SimilarRow, TimelineEntry,
    VoteRow,
};
use app::views::{GrantList, GrantRow};
use app::AppError;
use chrono::Utc;
use enforcer::{Principal, Request, Verdict};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Requests the list shows at most.
const LIST_LIMIT: i64 = 500;

/// The approvals service for one request.
pub struct Portal {
    state: AppState,
    user: Option<SignedIn>,
}

impl Portal {
    pub fn for_request(state: AppState, user: Option<SignedIn>) -> Arc<dyn PortalService> {
        Arc::new(Portal { state, user })
    }
}

fn principal(user: &SignedIn) -> Principal {
    Principal {
        id: user.username.clone(),
        roles: user.roles.iter().cloned().collect(),
        capabilities: user.capabilities.iter().cloned().collect(),
    }
}

/// Approvers, auditors and admins see every job; others only their own.
fn may_see(user: &SignedIn, job: &Job, approver_role: &str) -> bool {
    approvals::may_see(job, &user.username, &user.roles, approver_role)
}

fn summary(job: &Job, approvals: u32) -> PendingApproval {
    let now = Utc::now();
    PendingApproval {
        job: JobSummary::from(job),
        age_secs: (now - job.created_at).num_seconds(),
        expires_in_secs: job.expires_at.map(|t| (t - now).num_seconds()),
        approvals,
    }
}

/// Split an argument's text at the spans where patterns matched.
fn segments(text: &str, hits: &[(std::ops::Range<usize>, String)]) -> Vec<Segment> {
    let mut hits: Vec<_> = hits
        .iter()
        .filter(|(span, _)| {
            span.start < span.end
                && span.end <= text.len()
                && text.is_char_boundary(span.start)
                && text.is_char_boundary(span.end)
        })
        .collect();
    hits.sort_by_key(|(span, _)| (span.start, std::cmp::Reverse(span.end)));
    let mut out = Vec::new();
    let mut at = 0;
    for (span, id) in hits {
        if span.start < at {
            continue; // overlapping: the earlier, longer match is already marked
        }
        if span.start > at {
            out.push(Segment {
                text: text[at..span.start].to_string(),
                pattern: None,
            });
        }
        out.push(Segment {
            text: text[span.clone()].to_string(),
            pattern: Some(id.clone()),
        });
        at = span.end;
    }
    if at < text.len() || out.is_empty() {
        out.push(Segment {
            text: text[at..].to_string(),
            pattern: None,
        });
    }
    out
}

fn arg_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Portal {
    async fn pending_list(
        state: AppState,
        user: SignedIn,
    ) -> Result<Vec<PendingApproval>, AppError> {
        let jobs = state
            .store
            .pending_jobs(LIST_LIMIT)
            .await
            .map_err(|e| unavailable(&e))?;
        let role = &state.policy.approvals.approver_role;
        let mut out = Vec::new();
        for job in jobs.iter().filter(|j| may_see(&user, j, role)) {
            let votes = state
                .store
                .votes(&job.job_id)
                .await
                .map_err(|e| unavailable(&e))?;
            let approvals = votes
                .iter()
                .filter(|v| v.verdict == Verdict::Approve)
                .count();
            out.push(summary(job, u32::try_from(approvals).unwrap_or(u32::MAX)));
        }
        Ok(out)
    }

    async fn detail_of(
        state: AppState,
        user: SignedIn,
        job_id: String,
    ) -> Result<Option<ApprovalView>, AppError> {
        let job = match state.store.job(&job_id).await {
            Ok(job) => job,
            Err(StoreError::NotFound) => return Ok(None),
            Err(error) => return Err(unavailable(&error)),
        };
        let role = state.policy.approvals.approver_role.clone();
        if !may_see(&user, &job, &role) {
            return Ok(None);
        }
        let votes = state
            .store
            .votes(&job_id)
            .await
            .map_err(|e| unavailable(&e))?;
        let args: Map<String, Value> = serde_json::from_str(&job.params).unwrap_or_default();
        // The enforcer explains the call again (same pure function, same policy unless it changed).
        let request = Request {
            tool: job.tool_name.clone(),
            operation: job.operation.clone(),
            args: args.clone(),
            target: job.target.clone(),
        };
        // Explaining the call's risk, not the requester's access (checked when it was asked).
        let requester = Principal {
            id: job.requester.clone(),
            roles: Default::default(),
            capabilities: state.policy.capabilities.clone(),
        };
        let decision = enforcer::evaluate(&request, &requester, &state.policy);
        let arguments = args
            .iter()
            .map(|(name, value)| {
                let hits: Vec<_> = decision
                    .matched_patterns
                    .iter()
                    .filter(|m| &m.argument == name)
                    .map(|m| (m.span.clone(), m.id.clone()))
                    .collect();
                ArgumentView {
                    name: name.clone(),
                    segments: segments(&arg_text(value), &hits),
                }
            })
            .collect();
        let approvals = votes
            .iter()
            .filter(|v| v.verdict == Verdict::Approve)
            .count();
        let eligibility =
            approvals::eligibility(&state, &principal(&user), &job, &votes, Utc::now());
        let similar = state
            .store
            .audit_search(
                &crate::store::AuditFilter {
                    tool: Some(job.tool_name.clone()),
                    operation: Some(job.operation.clone()),
                    kind: Some(crate::store::EventKind::Decision),
                    ..Default::default()
                },
                8,
            )
            .await
            .map_err(|e| unavailable(&e))?
            .into_iter()
            .filter(|r| job.decision_audit_id.as_deref() != Some(r.id.as_str()))
            .take(6)
            .map(|r| SimilarRow {
                action: shown_action(&r.event),
                seq: r.seq,
                at: instant(r.event.timestamp),
                caller: r.event.caller_id,
                risk: r.event.risk_level,
                reason: r.event.decision_reason,
            })
            .collect();
        let remember = crate::services::grants::offer(&state, &job, &user.username, &votes)
            .await?
            .map(|offer| RememberOffer {
                refusal: offer.refusal,
                choices: offer.choices,
                target: offer.target,
                requester: offer.requester,
                remembered: offer.remembered,
            });
        let queued = job.status == crate::store::JobStatus::Queued;
        let mut why_not = eligibility.reasons.clone();
        if !queued {
            why_not.insert(0, format!("the request is {}", job.status.as_str()));
        }
        Ok(Some(ApprovalView {
            remember,
            summary: summary(&job, u32::try_from(approvals).unwrap_or(u32::MAX)),
            status: job.status,
            arguments,
            patterns: decision
                .matched_patterns
                .iter()
                .map(|m| PatternView {
                    id: m.id.clone(),
                    category: m.category.as_str().to_string(),
                    description: m.description.clone(),
                    argument: m.argument.clone(),
                    text: m.text.clone(),
                })
                .collect(),
            commands: app::views::CommandView::of(&decision.commands, &args),
            reasons: decision.reasons.clone(),
            required_capabilities: job.requested_capabilities.clone(),
            viewer_capabilities: user.capabilities.clone(),
            votes: votes
                .iter()
                .map(|v| VoteRow {
                    approver: v.approver.clone(),
                    verdict: v.verdict,
                    reason: v.reason.clone(),
                    at: instant(v.created_at),
                })
                .collect(),
            may_vote: queued && eligibility.allowed,
            why_not,
            similar,
        }))
    }
}

impl Portal {
    /// The week's shadow-mode figures, when there is anything to say: operations in shadow mode,
    /// or calls that were let through.
    async fn shadow_of(state: &AppState, user: &SignedIn) -> Result<Option<ShadowView>, AppError> {
        let report = crate::services::shadow::report(state, &user.roles, 7).await?;
        if report.total == 0 && report.in_shadow.is_empty() {
            return Ok(None);
        }
        Ok(Some(ShadowView {
            days: report.days,
            total: report.total,
            by_operation: report
                .by_operation
                .into_iter()
                .map(|c| (c.tool, c.operation, c.risk, c.count))
                .collect(),
            by_pattern: report
                .by_pattern
                .into_iter()
                .map(|p| (p.pattern, p.category, p.count))
                .collect(),
            by_category: report
                .by_category
                .into_iter()
                .map(|c| (c.category, c.count))
                .collect(),
            without_pattern: report.without_pattern,
            rows_read: report.rows_read,
            in_shadow: shadow_scope(&report.in_shadow, &state.policy),
        }))
    }

    async fn dashboard_of(state: AppState, user: SignedIn) -> Result<DashboardView, AppError> {
        let now = Utc::now();
        let stats = state
            .store
            .dashboard_stats(
                now - chrono::Duration::hours(24),
                now - chrono::Duration::days(7),
                now - chrono::Duration::hours(1),
            )
            .await
            .map_err(|e| unavailable(&e))?;
        let queue = state
            .store
            .job_counts()
            .await
            .map_err(|e| unavailable(&e))?;
        // Deliveries and the newest audit rows are the trail's: auditors and admins only, as on
        // `/audit`.
        let reads_trail = auditor(&user).is_ok();
        let deliveries = if reads_trail {
            Some(Portal::deliveries(&state, &user).await?)
        } else {
            None
        };
        let shadow = if reads_trail {
            Portal::shadow_of(&state, &user).await?
        } else {
            None
        };
        let pending = Portal::pending_list(state.clone(), user).await?;
        let mut by_priority: Vec<(String, i64)> = Vec::new();
        for p in &pending {
            let priority = p.job.priority.as_str();
            match by_priority.iter_mut().find(|(name, _)| name == priority) {
                Some((_, n)) => *n += 1,
                None => by_priority.push((priority.to_string(), 1)),
            }
        }
        Ok(DashboardView {
            shadow,
            deliveries,
            pending_total: pending.len(),
            pending: pending.into_iter().take(5).collect(),
            pending_by_priority: by_priority,
            queue,
            by_action_risk: stats.by_action_risk,
            daily: stats.daily,
            alerts: stats.denial_alerts,
            top_tools: stats.top_tools,
            recent: reads_trail.then(|| {
                stats
                    .recent
                    .into_iter()
                    .map(|r| RecentRow {
                        action: shown_action(&r.event),
                        seq: r.seq,
                        at: instant(r.event.timestamp),
                        kind: r.event.kind.as_str().to_string(),
                        caller: r.event.caller_id,
                        tool: r.event.tool,
                        operation: r.event.operation,
                        risk: r.event.risk_level,
                    })
                    .collect()
            }),
        })
    }
}

impl Portal {
    /// Notification deliveries for the dashboard: counts per sink and status, newest dead letters.
    async fn deliveries(state: &AppState, user: &SignedIn) -> Result<DeliveryView, AppError> {
        use crate::services::notifications::notify;
        let failed = |error: StoreError| {
            tracing::error!(%error, "portal: the notification outbox could not be read");
            AppError::Unavailable(
                "notification deliveries cannot be read right now; try again".into(),
            )
        };
        let counts = notify::outbox_counts(&state.store).await.map_err(failed)?;
        let dead = notify::dead_letters(&state.store, 20)
            .await
            .map_err(failed)?
            .into_iter()
            .map(|row| DeadLetterRow {
                id: row.id,
                sink: row.sink,
                event: row.event_type,
                job_id: row.job_id,
                attempts: row.attempts,
                error: row.last_error.unwrap_or_default(),
                created_at: chrono::DateTime::from_timestamp_millis(row.created_ms)
                    .map(instant)
                    .unwrap_or_default(),
            })
            .collect();
        Ok(DeliveryView {
            counts,
            dead,
            may_retry: user.roles.iter().any(|r| r == "admin"),
        })
    }

    /// Put a dead letter back in the queue: admins only, audited before it happens.
    async fn retry_delivery_of(state: AppState, user: SignedIn, id: i64) -> Result<(), AppError> {
        use crate::store::{EventKind, NewAuditEvent};
        if !user.roles.iter().any(|r| r == "admin") {
            return Err(AppError::Forbidden {
                reason: "retrying a notification is for admins".into(),
            });
        }
        let mut event = NewAuditEvent::new(
            EventKind::PortalAction,
            &user.username,
            "countersign",
            "notification.retry",
            AuditAction::Allow,
            &format!("retry of dead-lettered notification {id} requested"),
            Risk::Low,
        );
        event.context = serde_json::json!({ "outbox_id": id }).to_string();
        state.audit.append(event).await.map_err(|error| {
            tracing::error!(%error, "portal: could not audit a notification retry");
            AppError::Unavailable(
                "the retry could not be recorded, so it was not done; try again".into(),
            )
        })?;
        match crate::services::notifications::notify::retry(&state.store, id).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(AppError::NotFound(format!("there is no dead letter {id}"))),
            Err(error) => {
                tracing::error!(%error, "portal: could not retry a notification");
                Err(AppError::Unavailable(
                    "the notification could not be queued again; try again".into(),
                ))
            }
        }
    }
}

/// Rows per page of the audit explorer.
const AUDIT_PAGE: i64 = 50;

/// The audit trail is for auditors and admins.
fn auditor(user: &SignedIn) -> Result<(), AppError> {
    if user.roles.iter().any(|r| r == "auditor" || r == "admin") {
        Ok(())
    } else {
        Err(AppError::Forbidden {
            reason: "the audit trail is for auditors and admins".into(),
        })
    }
}

/// `2026-11-25`, `2026-11-25T10:00`, `2026-11-25 10:00:00` or full RFC 3339; UTC unless given.
fn parse_when(field: &str, text: &str) -> Result<chrono::DateTime<Utc>, AppError> {
    let text = text.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    Err(AppError::invalid(
        field,
        "not a date or time (use 2026-11-25 or 2026-11-25T10:00)",
    ))
}

/// A row's action as people read it: a decision shadow mode let through (stored as `allow` with
/// `requires_approval`) says so.
fn shown_action(e: &crate::store::NewAuditEvent) -> String {
    if e.kind == crate::store::EventKind::Decision
        && e.requires_approval
        && e.decision_action == enforcer::Action::Allow.as_str()
    {
        format!("{} (shadow mode)", e.decision_action)
    } else {
        e.decision_action.clone()
    }
}

fn row_view(r: &crate::store::AuditRecord) -> AuditRowView {
    AuditRowView {
        seq: r.seq,
        id: r.id.clone(),
        at: instant_millis(r.event.timestamp),
        kind: r.event.kind.as_str().to_string(),
        caller: r.event.caller_id.clone(),
        tool: r.event.tool.clone(),
        operation: r.event.operation.clone(),
        action: shown_action(&r.event),
        risk: r.event.risk_level.clone(),
        status: r.event.execution_status.clone(),
        reason: r.event.decision_reason.clone(),
    }
}

impl Portal {
    async fn preview_of(
        state: AppState,
        q: app::views::ReportQuery,
    ) -> Result<app::views::ReportPreview, AppError> {
        use crate::services::exports::{rfc3339, ExportQuery, ExportSpec};
        let spec = ExportSpec::parse(
            ExportQuery {
                report: q,
                ..ExportQuery::default()
            },
            Utc::now(),
        )
        .map_err(|e| AppError::invalid(e.field, e.message))?;
        let preview = crate::services::exports::preview(&state.store, &spec)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "portal: the audit trail could not be counted");
                AppError::Unavailable(
                    "the audit trail cannot be counted right now; try again".into(),
                )
            })?;
        Ok(app::views::ReportPreview {
            from: rfc3339(spec.from),
            to: rfc3339(spec.to),
            framework: spec.framework.map(|f| f.title().to_string()),
            total: preview.total,
            by_kind: preview.by_kind,
            by_action: preview.by_action,
            bundles: state.export_key.is_some(),
        })
    }

    async fn audit_list(state: AppState, q: AuditQuery) -> Result<AuditList, AppError> {
        let filter = crate::store::AuditFilter {
            from: q
                .from
                .as_deref()
                .map(|t| parse_when("from", t))
                .transpose()?,
            to: q.to.as_deref().map(|t| parse_when("to", t)).transpose()?,
            caller_id: q.caller,
            tool: q.tool,
            operation: q.operation,
            action: match q.action.as_deref() {
                None => None,
                Some(a) => Some(AuditAction::parse(a).ok_or_else(|| {
                    AppError::invalid(
                        "action",
                        format!(
                            "unknown action `{a}` (one of: {})",
                            words(AuditAction::ALL.map(AuditAction::as_str))
                        ),
                    )
                })?),
            },
            risk: match q.risk.as_deref() {
                None => None,
                Some(r) => Some(Risk::parse(&r.to_ascii_uppercase()).ok_or_else(|| {
                    AppError::invalid(
                        "risk",
                        format!(
                            "unknown risk `{r}` (one of: {})",
                            words(Risk::ALL.map(Risk::as_str))
                        ),
                    )
                })?),
            },
            execution_status: q.status,
            kind: match q.kind.as_deref() {
                None => None,
                Some(k) => Some(crate::store::EventKind::parse(k).ok_or_else(|| {
                    AppError::invalid(
                        "kind",
                        format!(
                            "unknown event kind `{k}` (one of: {})",
                            words(
                                crate::store::EventKind::ALL.map(crate::store::EventKind::as_str)
                            )
                        ),
                    )
                })?),
            },
            before_seq: match q.before.as_deref() {
                None => None,
                Some(b) => Some(
                    b.parse::<i64>()
                        .map_err(|_| AppError::invalid("before", "the page cursor is not valid"))?,
                ),
            },
            after_seq: None,
        };
        let page = usize::try_from(AUDIT_PAGE).unwrap_or(50);
        let mut rows = state
            .store
            .audit_search(&filter, AUDIT_PAGE + 1)
            .await
            .map_err(|e| unavailable(&e))?;
        let more = rows.len() > page;
        rows.truncate(page);
        Ok(AuditList {
            next: if more {
                rows.last().map(|r| r.seq)
            } else {
                None
            },
            rows: rows.iter().map(row_view).collect(),
        })
    }

    async fn audit_detail(state: AppState, seq: i64) -> Result<Option<AuditRowDetail>, AppError> {
        if seq < 1 {
            return Ok(None);
        }
        let rows = state
            .store
            .audit_page(seq - 2, 3)
            .await
            .map_err(|e| unavailable(&e))?;
        let Some(this) = rows.iter().find(|r| r.seq == seq) else {
            return Ok(None);
        };
        let prev = rows.iter().find(|r| r.seq == seq - 1);
        let next = rows.iter().find(|r| r.seq == seq + 1);
        let e = &this.event;
        let hash_ok =
            crate::store::audit::row_hash(&this.id, this.seq, e, &this.prev_hash) == this.row_hash;
        let prev_ok = match prev {
            Some(p) => Some(p.row_hash == this.prev_hash),
            None if seq == 1 => Some(this.prev_hash == crate::store::GENESIS),
            None => None,
        };
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let fields = vec![
            ("id", this.id.clone()),
            ("timestamp", e.timestamp.to_rfc3339()),
            ("event_kind", e.kind.as_str().to_string()),
            ("caller_id", e.caller_id.clone()),
            ("tool", e.tool.clone()),
            ("operation", e.operation.clone()),
            ("decision_action", e.decision_action.clone()),
            ("decision_reason", e.decision_reason.clone()),
            ("risk_level", e.risk_level.clone()),
            ("requires_approval", e.requires_approval.to_string()),
            ("execution_status", opt(&e.execution_status)),
            (
                "execution_duration_ms",
                e.execution_duration_ms
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
            ),
            ("side_effects", opt(&e.side_effects)),
            ("error", opt(&e.error)),
            ("approver", opt(&e.approver)),
            (
                "approved_at",
                e.approved_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
            ),
            ("job_id", opt(&e.job_id)),
            ("call_hash", opt(&e.call_hash)),
            ("policy_hash", opt(&e.policy_hash)),
            ("context", e.context.clone()),
            ("decision", e.decision.clone()),
        ];
        // A decision row keeps only what its policy cannot give back: show the whole decision.
        let mut fields: Vec<(String, String)> = fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        if let Some(whole) = whole_decision(&state, e).await {
            fields.push(("decision (in full)".to_string(), whole));
        }
        // How the caller of a decision signed in (its context names it unless an API token).
        if e.kind == crate::store::EventKind::Decision {
            if let Ok(context) = serde_json::from_str::<serde_json::Value>(&e.context) {
                let kind = crate::services::decisions::caller_kind(&context).to_string();
                fields.push(("caller kind".to_string(), kind));
            }
        }
        Ok(Some(AuditRowDetail {
            row: row_view(this),
            fields,
            prev_hash: this.prev_hash.clone(),
            row_hash: this.row_hash.clone(),
            hash_ok,
            prev_ok,
            next_ok: next.map(|n| n.prev_hash == this.row_hash),
        }))
    }
}

/// The whole decision of a decision row, as JSON, when the row is one and its policy is
/// known.
async fn whole_decision(state: &AppState, e: &crate::store::NewAuditEvent) -> Option<String> {
    if e.kind != crate::store::EventKind::Decision {
        return None;
    }
    let hash = e.policy_hash.as_deref()?;
    let policy = crate::services::policy_versions::find(&state.store, &state.policy, hash)
        .await
        .ok()
        .flatten()?;
    let decision = crate::services::decisions::full_decision(e, &policy)?;
    serde_json::to_string(&decision).ok()
}

/// Jobs per page of the job list.
const JOB_PAGE: i64 = 50;

fn job_row(job: &Job) -> JobRow {
    JobRow {
        job: JobSummary::from(job),
        status: job.status,
        age_secs: (Utc::now() - job.created_at).num_seconds(),
    }
}

/// A vocabulary listed for an error message: `a, b, c`.
fn words<const N: usize>(list: [&str; N]) -> String {
    list.join(", ")
}

/// `created_at|job_id` of the last row on a page: where the next page starts.
fn cursor(job: &Job) -> String {
    format!("{}|{}", job.created_at.to_rfc3339(), job.job_id)
}

fn parse_cursor(text: &str) -> Option<(chrono::DateTime<Utc>, String)> {
    let (at, id) = text.split_once('|')?;
    let at = chrono::DateTime::parse_from_rfc3339(at)
        .ok()?
        .with_timezone(&Utc);
    Some((at, id.to_string()))
}

impl Portal {
    async fn job_list(
        state: AppState,
        user: SignedIn,
        query: JobQuery,
    ) -> Result<JobList, AppError> {
        let role = &state.policy.approvals.approver_role;
        let sees_all = user
            .roles
            .iter()
            .any(|r| r == role || r == "auditor" || r == "admin");
        let status =
            match query.status.as_deref() {
                None => None,
                Some(text) => Some(crate::store::JobStatus::parse(text).ok_or_else(|| {
                    AppError::invalid("status", format!("unknown status `{text}`"))
                })?),
            };
        let before = match query.before.as_deref() {
            None => None,
            Some(text) => Some(
                parse_cursor(text)
                    .ok_or_else(|| AppError::invalid("before", "the page cursor is not valid"))?,
            ),
        };
        let filter = crate::store::JobFilter {
            status,
            requester: (!sees_all).then(|| user.username.clone()),
            before,
        };
        let page = usize::try_from(JOB_PAGE).unwrap_or(50);
        let mut jobs = state
            .store
            .jobs_page(&filter, JOB_PAGE + 1)
            .await
            .map_err(|e| unavailable(&e))?;
        let more = jobs.len() > page;
        jobs.truncate(page);
        let counts = if sees_all {
            state
                .store
                .job_counts()
                .await
                .map_err(|e| unavailable(&e))?
        } else {
            Vec::new()
        };
        Ok(JobList {
            next: if more { jobs.last().map(cursor) } else { None },
            rows: jobs.iter().map(job_row).collect(),
            counts,
        })
    }

    async fn job_detail(
        state: AppState,
        user: SignedIn,
        job_id: String,
    ) -> Result<Option<JobDetail>, AppError> {
        let job = match state.store.job(&job_id).await {
            Ok(job) => job,
            Err(StoreError::NotFound) => return Ok(None),
            Err(error) => return Err(unavailable(&error)),
        };
        if !may_see(&user, &job, &state.policy.approvals.approver_role) {
            return Ok(None);
        }
        let rows = state
            .store
            .audit_for_job(&job_id)
            .await
            .map_err(|e| unavailable(&e))?;
        let timeline = rows
            .iter()
            .map(|r| TimelineEntry {
                at: instant_millis(r.event.timestamp),
                kind: r.event.execution_status.clone().map_or_else(
                    || r.event.kind.as_str().to_string(),
                    |s| format!("execution: {s}"),
                ),
                who: r.event.caller_id.clone(),
                what: r.event.decision_reason.clone(),
                seq: r.seq,
            })
            .collect();
        let result: Value = job
            .result
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null);
        let args: Value = serde_json::from_str(&job.params).unwrap_or(Value::Null);
        Ok(Some(JobDetail {
            row: job_row(&job),
            arguments: serde_json::to_string_pretty(&args).unwrap_or_else(|_| job.params.clone()),
            timeline,
            exit_code: result["exit_code"].as_i64(),
            duration_ms: result["duration_ms"].as_i64(),
            output: result["output"].as_str().map(str::to_string),
            output_digest: result["output_digest"].as_str().map(str::to_string),
            side_effects: result["side_effects"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            error: job.error.clone(),
        }))
    }
}

fn unavailable(error: &StoreError) -> AppError {
    tracing::error!(%error, "portal: the store could not be read");
    AppError::Unavailable("the approval queue cannot be read right now; try again".into())
}

/// The operations in shadow mode, said briefly: a tool whose every operation is in shadow mode
/// once (`debian-admin (every operation)`), others as `tool.operation`.
fn shadow_scope(in_shadow: &[String], policy: &enforcer::PolicySet) -> Vec<String> {
    let mut said = Vec::new();
    for (name, tool) in &policy.tools {
        let listed: Vec<&String> = in_shadow
            .iter()
            .filter(|op| {
                op.strip_prefix(name.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
            })
            .collect();
        if listed.is_empty() {
            continue;
        }
        if listed.len() == tool.operations.len() && listed.len() > 1 {
            said.push(format!("{name} (every operation)"));
        } else {
            said.extend(listed.into_iter().cloned());
        }
    }
    said
}

/// A service's refusal in the portal's words (the service already logged anything internal).
impl From<crate::services::ServiceError> for AppError {
    fn from(error: crate::services::ServiceError) -> AppError {
        use crate::services::ServiceError;
        match error {
            ServiceError::NotFound { message } => AppError::NotFound(message),
            ServiceError::Forbidden { reason, .. } => AppError::Forbidden { reason },
            ServiceError::Conflict { message, .. } => AppError::Conflict(message),
            ServiceError::Invalid {
                field: Some(field),
                message,
                ..
            } => AppError::invalid(&field, message),
            ServiceError::Invalid {
                field: None,
                message,
                ..
            } => AppError::Conflict(message),
            ServiceError::Limit { message, .. } | ServiceError::NotConfigured { message } => {
                AppError::Unavailable(message)
            }
            ServiceError::Unavailable { what } => {
                AppError::Unavailable(format!("{what}; try again"))
            }
        }
    }
}

fn signed_out() -> AppError {
    AppError::Unauthenticated
}

impl Portal {
    /// Run `work` for the signed-in person; refused when nobody is signed in.
    fn signed_in<T, F>(
        &self,
        work: impl FnOnce(AppState, SignedIn) -> F + Send + 'static,
    ) -> BoxFuture<Result<T, AppError>>
    where
        F: std::future::Future<Output = Result<T, AppError>> + Send + 'static,
        T: 'static,
    {
        let (state, user) = (self.state.clone(), self.user.clone());
        Box::pin(async move { work(state, user.ok_or_else(signed_out)?).await })
    }
}

impl PortalService for Portal {
    fn policy(&self) -> BoxFuture<Result<app::views::PolicySource, AppError>> {
        self.signed_in(|state, _| async move {
            Ok(app::views::PolicySource {
                file: state.policy.file().to_string(),
                source: state.policy.source().to_string(),
                hash: state.policy.hash().to_string(),
            })
        })
    }

    fn audit(&self, query: AuditQuery) -> BoxFuture<Result<AuditList, AppError>> {
        self.signed_in(|state, user| async move {
            auditor(&user)?;
            Portal::audit_list(state, query).await
        })
    }

    fn audit_row(&self, seq: i64) -> BoxFuture<Result<Option<AuditRowDetail>, AppError>> {
        self.signed_in(move |state, user| async move {
            auditor(&user)?;
            Portal::audit_detail(state, seq).await
        })
    }

    fn report_preview(
        &self,
        query: app::views::ReportQuery,
    ) -> BoxFuture<Result<app::views::ReportPreview, AppError>> {
        self.signed_in(|state, user| async move {
            auditor(&user)?;
            Portal::preview_of(state, query).await
        })
    }

    fn export_progress(
        &self,
        token: String,
    ) -> BoxFuture<Result<Option<app::views::ExportProgress>, AppError>> {
        self.signed_in(move |state, user| async move {
            Ok(state.export_progress.get(&user.username, &token).map(|p| {
                app::views::ExportProgress {
                    rows: p.rows,
                    done: p.done,
                    failed: p.failed,
                }
            }))
        })
    }

    fn dashboard(&self) -> BoxFuture<Result<DashboardView, AppError>> {
        self.signed_in(Portal::dashboard_of)
    }

    fn retry_delivery(&self, id: i64) -> BoxFuture<String> {
        let done = self.signed_in(move |state, user| Portal::retry_delivery_of(state, user, id));
        Box::pin(async move {
            match done.await {
                Ok(()) => format!("/?retried={id}#deliveries"),
                Err(error) => format!(
                    "/?delivery_error={}#deliveries",
                    app::encode_query(&error.to_string())
                ),
            }
        })
    }

    fn jobs(&self, query: JobQuery) -> BoxFuture<Result<JobList, AppError>> {
        self.signed_in(|state, user| Portal::job_list(state, user, query))
    }

    fn job(&self, job_id: String) -> BoxFuture<Result<Option<JobDetail>, AppError>> {
        self.signed_in(|state, user| Portal::job_detail(state, user, job_id))
    }

    fn pending(&self) -> BoxFuture<Result<Vec<PendingApproval>, AppError>> {
        self.signed_in(Portal::pending_list)
    }

    fn approval(&self, job_id: String) -> BoxFuture<Result<Option<ApprovalView>, AppError>> {
        self.signed_in(|state, user| Portal::detail_of(state, user, job_id))
    }

    fn grants(&self) -> BoxFuture<Result<GrantList, AppError>> {
        self.signed_in(Portal::grant_rows)
    }

    fn remember(&self, form: app::service::RememberForm) -> BoxFuture<String> {
        let page = format!("/approvals/{}", app::encode_query(&form.job_id));
        let done = self.signed_in(move |state, user| async move {
            let ask = remember_request(&form)?;
            let grant =
                crate::services::grants::remember(&state, &principal(&user), &form.job_id, &ask)
                    .await?;
            Ok(grant.id)
        });
        Box::pin(async move {
            match done.await {
                Ok(id) => format!("{page}?remembered={}", app::encode_query(&id)),
                Err(error) => format!(
                    "{page}?remember_error={}",
                    app::encode_query(&error.to_string())
                ),
            }
        })
    }

    fn revoke_grant(&self, id: String) -> BoxFuture<String> {
        let done = self.signed_in(move |state, user| async move {
            crate::services::grants::revoke(&state, &principal(&user), &id).await?;
            Ok(id)
        });
        Box::pin(async move {
            match done.await {
                Ok(id) => format!("/grants?revoked={}", app::encode_query(&id)),
                Err(error) => format!(
                    "/grants?revoke_error={}",
                    app::encode_query(&error.to_string())
                ),
            }
        })
    }

    fn vote(&self, job_id: String, verdict: String, reason: String) -> BoxFuture<String> {
        let page = format!("/approvals/{}", app::encode_query(&job_id));
        let done = self.signed_in(move |state, user| async move {
            let verdict = Verdict::parse(&verdict)
                .ok_or_else(|| AppError::invalid("verdict", "the verdict is approve or deny"))?;
            match approvals::vote(&state, &principal(&user), &job_id, verdict, Some(&reason)).await
            {
                Ok(_) => Ok(verdict),
                Err(VoteError::Unavailable(error)) => {
                    tracing::error!(%error, "portal vote could not be recorded");
                    Err(AppError::Unavailable(
                        "the vote could not be recorded; nothing changed — try again".into(),
                    ))
                }
                Err(VoteError::NotFound) => Err(AppError::NotFound("no such request".into())),
                Err(conflict @ VoteError::NotQueued(_)) => {
                    Err(AppError::Conflict(conflict.to_string()))
                }
                Err(refused @ VoteError::NotEligible(_)) => Err(AppError::Forbidden {
                    reason: refused.to_string(),
                }),
                Err(invalid @ (VoteError::ReasonRequired(_) | VoteError::ReasonTooLong)) => {
                    Err(AppError::invalid("reason", invalid.to_string()))
                }
            }
        });
        Box::pin(async move {
            match done.await {
                Ok(verdict) => format!("{page}?voted={}", verdict.as_str()),
                Err(error) => format!("{page}?error={}", app::encode_query(&error.to_string())),
            }
        })
    }
}

impl Portal {
    async fn grant_rows(state: AppState, user: SignedIn) -> Result<GrantList, AppError> {
        let grants = crate::services::grants::list(&state, &user.roles).await?;
        let approver = &state.policy.approvals.approver_role;
        let now = Utc::now();
        Ok(GrantList {
            may_revoke: user.roles.iter().any(|r| r == approver || r == "admin"),
            rows: grants.into_iter().map(|g| grant_row(g, now)).collect(),
        })
    }
}

/// A grant as the Grants page shows it.
fn grant_row(g: crate::store::GrantRecord, now: chrono::DateTime<Utc>) -> GrantRow {
    let state = crate::services::grants::state_of(&g, now);
    let scope = serde_json::from_str::<enforcer::grant::GrantScope>(&g.scope).ok();
    GrantRow {
        covers: scope
            .as_ref()
            .map_or_else(|| "(unreadable)".to_string(), covers_in_words),
        target: scope.and_then(|s| s.target),
        subject: if g.subject_kind == "group" {
            format!("anyone with role {}", g.subject)
        } else {
            g.subject.clone()
        },
        state: state.to_string(),
        uses: g.uses,
        max_uses: g.max_uses,
        last_used_at: g.last_used_at.map(instant),
        created_at: instant(g.created_at),
        expires_at: instant(g.expires_at),
        approvers: g.approvers,
        job_id: g.job_id,
        revoked_by: g.revoked_by,
        scope: g.scope,
        id: g.id,
        tool: g.tool,
        operation: g.operation,
    }
}

/// What a grant covers, as people read it: "this exact call", or the shape with `*` for each
/// generalised word and `<any>` for each generalised argument.
fn covers_in_words(scope: &enforcer::grant::GrantScope) -> String {
    use enforcer::grant::{ArgShape, Covers};
    match &scope.covers {
        Covers::Call { .. } => "this exact call".to_string(),
        Covers::Shape { args } => args
            .iter()
            .map(|(name, shape)| match shape {
                ArgShape::Words { words } => words
                    .iter()
                    .map(|w| w.as_deref().unwrap_or("*"))
                    .collect::<Vec<_>>()
                    .join(" "),
                ArgShape::Any => format!("{name}: <any>"),
                ArgShape::Exact { value } => match value {
                    Value::String(text) => format!("{name}: {text}"),
                    other => format!("{name}: {other}"),
                },
            })
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// The approval page's "remember" form as the grants service takes it; bad input named.
fn remember_request(form: &app::service::RememberForm) -> Result<RememberRequest, AppError> {
    let generalise = form.generalise.trim();
    let number = |field: &str, text: &str| -> Result<Option<u64>, AppError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse::<u64>()
            .map(Some)
            .map_err(|_| AppError::invalid(field, "a whole number, please"))
    };
    Ok(RememberRequest {
        scope: Some(
            if generalise.is_empty() {
                "call"
            } else {
                "shape"
            }
            .to_string(),
        ),
        generalise: if generalise.is_empty() {
            Vec::new()
        } else {
            vec![generalise.to_string()]
        },
        target: Some(form.target.trim().to_string()).filter(|t| !t.is_empty()),
        group: Some(form.group.trim().to_string()).filter(|g| !g.is_empty()),
        ttl_secs: number("ttl_secs", &form.ttl_secs)?,
        max_uses: number("max_uses", &form.max_uses)?.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
    })
}

/// A time for the portal's `When` component: RFC 3339 in UTC, to the second.
fn instant(at: chrono::DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// As [`instant`], to the millisecond (audit rows and job timelines).
fn instant_millis(at: chrono::DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_mark_matches_and_keep_the_rest() {
        let text = "ls && rm -rf / && echo ok";
        let segs = segments(text, &[(6..14, "rm-rf".into())]);
        let joined: String = segs.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(joined, text);
        assert_eq!(segs[1].text, "rm -rf /");
        assert_eq!(segs[1].pattern.as_deref(), Some("rm-rf"));
        // Out-of-range or overlapping spans never break the text.
        let segs = segments(
            "abc",
            &[(1..9, "x".into()), (0..2, "y".into()), (1..2, "z".into())],
        );
        assert_eq!(
            segs.iter().map(|s| s.text.as_str()).collect::<String>(),
            "abc"
        );
    }
}
