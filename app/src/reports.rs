//! `/reports`: compliance exports for auditors and admins. Pick a period, a framework and
//! optional filters, preview the counts, then download CSV, JSON Lines, the PDF summary or the
//! signed evidence bundle. Everything is a plain GET form and plain links (it works without
//! WASM); the downloads stream from `/reports/export`.

#[cfg(feature = "ssr")]
use crate::service::service;
use crate::views::{ExportProgress, ReportPreview, ReportQuery};
use crate::AppError;
use enforcer::{AuditAction, Risk};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

/// The download link of one format.
pub fn export_href(query: &ReportQuery, format: &str) -> String {
    let mut href = format!("/reports/export?format={format}");
    for (name, value) in query.pairs() {
        href.push_str(&format!("&{name}={}", crate::encode_query(value)));
    }
    href
}

/// How far the signed-in person's download `token` has got.
#[server(endpoint = "export_progress")]
pub async fn download_progress(token: String) -> Result<Option<ExportProgress>, AppError> {
    service()?.export_progress(token).await
}

/// Count what an export would hold.
#[server(endpoint = "report_preview", input = leptos::server_fn::codec::Json)]
pub async fn preview_report(query: ReportQuery) -> Result<ReportPreview, AppError> {
    service()?.report_preview(query).await
}

fn clean(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

const FRAMEWORKS: [(&str, &str); 4] = [
    ("", "All three"),
    ("pci-dss", "PCI DSS v4.0 — requirement 10"),
    ("soc2", "SOC 2 — CC6.1, CC6.3, CC7.2"),
    ("iso27001", "ISO/IEC 27001:2022 — A.8.15, A.8.16, A.5.18"),
];
/// A select's choices: "Any" (empty), then each word of a vocabulary.
fn any_of(words: impl IntoIterator<Item = &'static str>) -> Vec<(&'static str, &'static str)> {
    std::iter::once(("", ""))
        .chain(words.into_iter().map(|w| (w, w)))
        .collect()
}

/// A `<select>` keeping the chosen value.
fn select(
    id: &'static str,
    label: &'static str,
    options: Vec<(&'static str, &'static str)>,
    chosen: Option<String>,
) -> impl IntoView {
    let chosen = chosen.unwrap_or_default();
    view! {
        <label for=id>{label}
            <select id=id name=id.trim_start_matches("report-")>
                {options.into_iter().map(|(value, text)| {
                    let selected = value == chosen;
                    view! { <option value=value selected=selected>{if text.is_empty() { "Any" } else { text }}</option> }
                }).collect_view()}
            </select>
        </label>
    }
}

/// `/reports`.
#[component]
pub fn Reports() -> impl IntoView {
    let query_map = use_query_map();
    let query = move || {
        query_map.with(|q| ReportQuery {
            from: clean(q.get("from")),
            to: clean(q.get("to")),
            framework: clean(q.get("framework")),
            tool: clean(q.get("tool")),
            caller: clean(q.get("caller")),
            risk: clean(q.get("risk")),
            action: clean(q.get("action")),
        })
    };
    let preview = Resource::new(query, preview_report);
    view! {
        <Title text="Reports"/>
        <section class="page">
            <h1>"Reports"</h1>
            <p class="lead">"Evidence for assessors: the audit trail of a period as CSV, JSON Lines, a PDF summary mapped to your framework's controls, or a signed bundle anyone can verify offline."</p>
            <form method="get" action="/reports" class="filters-form" data-testid="report-form">
                {move || {
                    let q = query();
                    view! {
                        <label for="report-from">"From (UTC date)"
                            <input id="report-from" name="from" type="date" value=q.from.clone().unwrap_or_default()/>
                        </label>
                        <label for="report-to">"To (UTC date, inclusive)"
                            <input id="report-to" name="to" type="date" value=q.to.clone().unwrap_or_default()/>
                        </label>
                        {select("report-framework", "Framework", FRAMEWORKS.to_vec(), q.framework.clone())}
                        <label for="report-tool">"Tool"
                            <input id="report-tool" name="tool" value=q.tool.clone().unwrap_or_default()/>
                        </label>
                        <label for="report-caller">"Caller"
                            <input id="report-caller" name="caller" value=q.caller.clone().unwrap_or_default()/>
                        </label>
                        {select("report-risk", "Risk", any_of(Risk::ALL.map(Risk::as_str)), q.risk.clone())}
                        {select("report-action", "Action", any_of(AuditAction::ALL.map(AuditAction::as_str)), q.action.clone())}
                    }
                }}
                <button type="submit">"Preview"</button>
                <a href="/reports">"Clear"</a>
            </form>
            <Suspense fallback=|| view! { <p class="muted">"Counting…"</p> }>
                {move || preview.get().map(|result| match result {
                    Err(error) => view! { <p class="error" role="alert" data-testid="report-error">{error.to_string()}</p> }.into_any(),
                    Ok(p) => preview_view(p, query()).into_any(),
                })}
            </Suspense>
        </section>
    }
}

fn preview_view(p: ReportPreview, q: ReportQuery) -> impl IntoView {
    let counts = |items: Vec<(String, i64)>| {
        items
            .into_iter()
            .map(|(k, n)| view! { <li><span>{k}</span>" "<strong>{n}</strong></li> })
            .collect_view()
    };
    // Once hydrated, each link carries a progress token; a click follows that download's
    // progress until it ends, then the links get a fresh token. (Without WASM: plain links.)
    let token = RwSignal::new(None::<String>);
    Effect::new(move |_| token.set(Some(new_token())));
    let status = RwSignal::new(None::<String>);
    let total = p.total;
    let link = move |format: &'static str, text: &'static str| {
        let base = export_href(&q, format);
        let href = move || match token.get() {
            Some(t) => format!("{base}&progress={t}"),
            None => base.clone(),
        };
        let follow = move |_| {
            if let Some(t) = token.get_untracked() {
                status.set(Some("Starting the download…".into()));
                poll(t, total, status, token, 0);
            }
        };
        view! {
            <li><a href=href download="" data-testid=format!("export-{format}") on:click=follow>{text}</a></li>
        }
    };
    view! {
        <h2>"Preview"</h2>
        <p data-testid="report-period">"From "<crate::layout::When at=p.from.clone()/>" to "<crate::layout::When at=p.to.clone()/>" (end exclusive)"</p>
        <p><strong data-testid="report-total">{p.total}</strong>" audit events match."</p>
        <div class="report-counts">
            <div><h3>"By event kind"</h3><ul class="counts" data-testid="report-by-kind">{counts(p.by_kind)}</ul></div>
            <div><h3>"By action"</h3><ul class="counts" data-testid="report-by-action">{counts(p.by_action)}</ul></div>
        </div>
        <h2>"Download"</h2>
        <p class="muted">"Each download is streamed and recorded in the audit trail with its filters."</p>
        <ul class="downloads">
            {link("csv", "CSV — one row per audit event")}
            {link("jsonl", "JSON Lines — complete rows with their hashes")}
            {link("pdf", "PDF summary — totals, approvals, denials, executions, controls")}
            {if p.bundles {
                link("bundle", "Evidence bundle — all of the above, signed (Ed25519)").into_any()
            } else {
                view! { <li class="muted">"Evidence bundles need a signing key (COUNTERSIGN_EXPORT_SIGNING_KEY)."</li> }.into_any()
            }}
        </ul>
        <p role="status" aria-live="polite" data-testid="export-progress">{move || status.get()}</p>
        <p class="muted">"Verify a bundle offline: "<code>"countersign audit verify-export BUNDLE.tar --public-key KEY"</code>" (the key is at "<a href="/api/v1/audit/public-key">"/api/v1/audit/public-key"</a>")."</p>
    }
}

/// A fresh progress token (browser only; the server-rendered links carry none).
fn new_token() -> String {
    #[cfg(feature = "hydrate")]
    {
        let part = || (js_sys::Math::random() * 9.0e15) as u64;
        format!("{:x}-{:x}", part(), part())
    }
    #[cfg(not(feature = "hydrate"))]
    {
        String::new()
    }
}

fn progress_text(rows: u64, total: i64) -> String {
    match u64::try_from(total) {
        Ok(total) if total > 0 && rows <= total => format!("Downloading: {rows} of {total} rows…"),
        _ => format!("Downloading: {rows} rows read…"),
    }
}

/// Ask how far download `token` has got every 400 ms until it ends.
fn poll(
    token: String,
    total: i64,
    status: RwSignal<Option<String>>,
    next: RwSignal<Option<String>>,
    misses: u32,
) {
    set_timeout(
        move || {
            leptos::task::spawn_local(async move {
                match download_progress(token.clone()).await {
                    Ok(Some(p)) if p.done => {
                        status.set(Some(format!("Done: {} rows read.", p.rows)));
                        next.set(Some(new_token()));
                    }
                    Ok(Some(p)) if p.failed => {
                        status.set(Some(
                            "The export stopped before its end: the file is incomplete. Try again."
                                .into(),
                        ));
                        next.set(Some(new_token()));
                    }
                    Ok(Some(p)) => {
                        status.set(Some(progress_text(p.rows, total)));
                        poll(token, total, status, next, 0);
                    }
                    // Not started yet (or served by another replica): wait a little, then stop.
                    Ok(None) if misses < 25 => poll(token, total, status, next, misses + 1),
                    _ => {
                        status.set(None);
                        next.set(Some(new_token()));
                    }
                }
            });
        },
        std::time::Duration::from_millis(400),
    );
}
