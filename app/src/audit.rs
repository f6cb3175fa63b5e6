//! The audit explorer: filters (time range, caller, tool, operation, action, risk, execution
//! status, event kind) in a plain GET form, keyset pages by sequence number (constant cost
//! however deep), and a row's detail with its place in the chain and whether the chain verifies
//! there. For auditors and admins.

#[cfg(feature = "ssr")]
use crate::service::service;
use crate::views::{AuditList, AuditQuery, AuditRowDetail};
use crate::AppError;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_params_map, use_query_map};

/// The filter form's fields (as typed; the server checks them).
pub const FILTERS: [(&str, &str); 9] = [
    ("from", "From (UTC, e.g. 2026-11-25 or 2026-11-25T10:00)"),
    ("to", "To (UTC)"),
    ("caller", "Caller"),
    ("tool", "Tool"),
    ("operation", "Operation"),
    ("action", "Action"),
    ("risk", "Risk"),
    ("status", "Execution status"),
    ("kind", "Event kind"),
];

#[server(endpoint = "search_audit", input = leptos::server_fn::codec::Json)]
pub async fn search_audit(query: AuditQuery) -> Result<AuditList, AppError> {
    service()?.audit(query).await
}

/// One audit row and its place in the chain.
#[server(endpoint = "audit_row")]
pub async fn audit_row(seq: i64) -> Result<Option<AuditRowDetail>, AppError> {
    service()?.audit_row(seq).await
}

fn clean(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn href_with(query: &AuditQuery, before: i64) -> String {
    let mut parts: Vec<String> = FILTERS
        .iter()
        .filter_map(|(name, _)| {
            query
                .get(name)
                .map(|v| format!("{name}={}", crate::encode_query(v)))
        })
        .collect();
    parts.push(format!("before={before}"));
    format!("/audit?{}", parts.join("&"))
}

/// `/audit`.
#[component]
pub fn Audit() -> impl IntoView {
    let query_map = use_query_map();
    let query = move || {
        query_map.with(|q| AuditQuery {
            from: clean(q.get("from")),
            to: clean(q.get("to")),
            caller: clean(q.get("caller")),
            tool: clean(q.get("tool")),
            operation: clean(q.get("operation")),
            action: clean(q.get("action")),
            risk: clean(q.get("risk")),
            status: clean(q.get("status")),
            kind: clean(q.get("kind")),
            before: clean(q.get("before")),
        })
    };
    let list = Resource::new(query, search_audit);
    view! {
        <Title text="Audit"/>
        <section class="page">
            <h1>"Audit"</h1>
            <p class="lead">"The append-only, hash-chained record of every decision and action."</p>
            <form method="get" action="/audit" class="filters-form" data-testid="audit-filters">
                {move || {
                    let q = query();
                    FILTERS.iter().map(|(name, label)| {
                        let value = q.get(name).cloned().unwrap_or_default();
                        let (id, for_id) = (format!("audit-{name}"), format!("audit-{name}"));
                        view! {
                            <label for=for_id>{*label}
                                <input id=id name=*name value=value/>
                            </label>
                        }
                    }).collect_view()
                }}
                <button type="submit">"Filter"</button>
                <a href="/audit">"Clear"</a>
            </form>
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || list.get().map(|result| match result {
                    Err(error) => view! { <p class="error" role="alert">{error.to_string()}</p> }.into_any(),
                    Ok(list) => {
                        let q = query();
                        audit_table(list, &q).into_any()
                    }
                })}
            </Suspense>
        </section>
    }
}

fn audit_table(list: AuditList, query: &AuditQuery) -> impl IntoView {
    let older = list.next.map(|seq| {
        view! { <p><a href=href_with(query, seq) data-testid="older-rows">"Older rows →"</a></p> }
    });
    view! {
        {if list.rows.is_empty() {
            view! { <p class="muted" data-testid="no-rows">"No audit rows match."</p> }.into_any()
        } else {
            view! {
                <table class="dense" data-testid="audit-rows">
                    <thead><tr>
                        <th>"#"</th><th>"When"</th><th>"Event"</th><th>"Who"</th><th>"Tool"</th>
                        <th>"Operation"</th><th>"Action"</th><th>"Risk"</th><th>"Execution"</th><th>"Reason"</th>
                    </tr></thead>
                    <tbody>
                        {list.rows.into_iter().map(|r| view! {
                            <tr data-seq=r.seq>
                                <td><a href=format!("/audit/{}", r.seq)>{r.seq}</a></td>
                                <td><crate::layout::When at=r.at/></td><td>{r.kind}</td><td>{r.caller}</td><td>{r.tool}</td>
                                <td>{r.operation}</td><td>{r.action}</td><td>{r.risk}</td>
                                <td>{r.status.unwrap_or_default()}</td><td class="reason">{r.reason}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        }}
        {older}
    }
}

fn verdict(ok: Option<bool>, missing: &'static str) -> String {
    match ok {
        Some(true) => "verifies".into(),
        Some(false) => "DOES NOT VERIFY".into(),
        None => missing.into(),
    }
}

/// `/audit/:seq`.
#[component]
pub fn AuditRowPage() -> impl IntoView {
    let params = use_params_map();
    let seq = move || {
        params.with(|p| {
            p.get("seq")
                .and_then(|s| s.parse::<i64>().ok())
                .unwrap_or(0)
        })
    };
    let row = Resource::new(seq, audit_row);
    view! {
        <Title text="Audit row"/>
        <section class="page">
            <p><a href="/audit">"← The audit trail"</a></p>
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || row.get().map(|result| match result {
                    Err(error) => view! { <p class="error" role="alert">{error.to_string()}</p> }.into_any(),
                    Ok(None) => view! { <h1>"Not found"</h1><p>"There is no audit row with that number."</p> }.into_any(),
                    Ok(Some(d)) => {
                        let chain_ok = d.hash_ok && d.prev_ok != Some(false) && d.next_ok != Some(false);
                        view! {
                            <h1>{format!("Audit row {}", d.row.seq)}</h1>
                            <p class=if chain_ok { "notice" } else { "error" } data-testid="chain-status">
                                {if chain_ok { "The chain verifies at this row." } else { "The chain does NOT verify at this row." }}
                            </p>
                            <dl class="facts">
                                <dt>"Row hash"</dt><dd><code class="hash">{d.row_hash.clone()}</code>" — "{if d.hash_ok { "matches its content" } else { "DOES NOT match its content" }}</dd>
                                <dt>"Previous hash"</dt><dd><code class="hash">{d.prev_hash.clone()}</code>" — "{verdict(d.prev_ok, "the previous row was purged (anchored)")}</dd>
                                <dt>"Next row"</dt><dd>{verdict(d.next_ok, "this is the newest row")}</dd>
                                {d.fields.into_iter().map(|(name, value)| view! {
                                    <dt>{name}</dt><dd><code>{value}</code></dd>
                                }).collect_view()}
                            </dl>
                        }.into_any()
                    }
                })}
            </Suspense>
        </section>
    }
}
