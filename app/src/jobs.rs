//! The jobs pages: every job, newest first, filtered by status and paged by keyset; and one job
//! with its timeline (requested, votes, picked, executing, result), output, duration and side
//! effects. Plain links and server rendering: they work before (and without) WASM.

use crate::components::{duration, RiskBadge};
#[cfg(feature = "ssr")]
use crate::service::service;
use crate::views::{JobDetail, JobList, JobQuery, JobRow};
use crate::AppError;
use enforcer::JobStatus;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_params_map, use_query_map};

/// URL-encoded form server functions are called with.)
#[server(endpoint = "list_jobs")]
pub async fn list_jobs(
    status: Option<String>,
    before: Option<String>,
) -> Result<JobList, AppError> {
    service()?.jobs(JobQuery { status, before }).await
}

/// One job in full.
#[server(endpoint = "get_job")]
pub async fn get_job(job_id: String) -> Result<Option<JobDetail>, AppError> {
    service()?.job(job_id).await
}

fn jobs_href(status: Option<&str>, before: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(s) = status {
        parts.push(format!("status={}", crate::encode_query(s)));
    }
    if let Some(b) = before {
        parts.push(format!("before={}", crate::encode_query(b)));
    }
    if parts.is_empty() {
        "/jobs".into()
    } else {
        format!("/jobs?{}", parts.join("&"))
    }
}

/// `/jobs`.
#[component]
pub fn Jobs() -> impl IntoView {
    let query = use_query_map();
    let wanted = move || {
        query.with(|q| JobQuery {
            status: q.get("status").filter(|s| !s.is_empty()),
            before: q.get("before").filter(|s| !s.is_empty()),
        })
    };
    let list = Resource::new(wanted, |q| list_jobs(q.status, q.before));
    view! {
        <Title text="Jobs"/>
        <section class="page">
            <h1>"Jobs"</h1>
            <p class="lead">"Every job, from request to result."</p>
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || list.get().map(|result| match result {
                    Err(error) => view! { <p class="error" role="alert">{error.to_string()}</p> }.into_any(),
                    Ok(list) => {
                        let current = wanted().status;
                        job_list_view(list, current).into_any()
                    }
                })}
            </Suspense>
        </section>
    }
}

fn job_list_view(list: JobList, current: Option<String>) -> impl IntoView {
    let count = |status: &str| {
        list.counts
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, n)| *n)
    };
    let total: i64 = list.counts.iter().map(|(_, n)| n).sum();
    let filters = std::iter::once((None, format!("all ({total})")))
        .chain(
            JobStatus::ALL
                .iter()
                .map(|s| (Some(s.as_str()), format!("{s} ({})", count(s.as_str())))),
        )
        .map(|(status, label)| {
            let active = status.map(str::to_string) == current;
            view! {
                <a href=jobs_href(status, None) class:active=active aria-current=active.then_some("page")>{label}</a>
            }
        })
        .collect_view();
    let next = list
        .next
        .clone()
        .map(|cursor| view! { <p><a href=jobs_href(current.as_deref(), Some(&cursor)) data-testid="older-jobs">"Older jobs →"</a></p> });
    view! {
        <nav class="filters" aria-label="Filter by status" data-testid="job-filters">{filters}</nav>
        {if list.rows.is_empty() {
            view! { <p class="muted" data-testid="no-jobs">"No jobs here."</p> }.into_any()
        } else {
            view! {
                <table class="dense" data-testid="jobs">
                    <thead><tr>
                        <th>"Status"</th><th>"Risk"</th><th>"Tool"</th><th>"Operation"</th>
                        <th>"Target"</th><th>"Requester"</th><th>"Age"</th>
                    </tr></thead>
                    <tbody>
                        {list.rows.into_iter().map(|r| view! {
                            <tr data-job=r.job.job_id.clone()>
                                <td><span class=format!("status status-{}", r.status)>{r.status.as_str()}</span></td>
                                <td><RiskBadge risk=r.job.risk/></td>
                                <td><a href=format!("/jobs/{}", r.job.job_id)>{r.job.tool.clone()}</a></td>
                                <td>{r.job.operation.clone()}</td>
                                <td>{r.job.target.clone().unwrap_or_default()}</td>
                                <td>{r.job.requester.clone()}</td>
                                <td>{duration(r.age_secs)}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        }}
        {next}
    }
}

/// `/jobs/:id`.
#[component]
pub fn JobPage() -> impl IntoView {
    let params = use_params_map();
    let job_id = move || params.with(|p| p.get("id").unwrap_or_default());
    let detail = Resource::new(job_id, get_job);
    view! {
        <Title text="Job"/>
        <section class="page">
            <p><a href="/jobs">"← All jobs"</a></p>
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || detail.get().map(|result| match result {
                    Err(error) => view! { <p class="error" role="alert">{error.to_string()}</p> }.into_any(),
                    Ok(None) => view! { <h1>"Not found"</h1><p>"There is no such job, or it is not yours to see."</p> }.into_any(),
                    Ok(Some(d)) => job_view(d).into_any(),
                })}
            </Suspense>
        </section>
    }
}

fn job_view(d: JobDetail) -> impl IntoView {
    let JobRow { job: r, status, .. } = d.row;
    let approval_link = (status == JobStatus::Queued).then(|| {
        view! { <p><a href=format!("/approvals/{}", r.job_id)>"Review this request →"</a></p> }
    });
    view! {
        <h1>{format!("{} · {}", r.tool, r.operation)}" "<RiskBadge risk=r.risk/></h1>
        <dl class="facts">
            <dt>"Status"</dt><dd data-testid="job-status">{status.as_str()}</dd>
            <dt>"Target"</dt><dd>{r.target.clone().unwrap_or_else(|| "—".into())}</dd>
            <dt>"Requester"</dt><dd>{r.requester.clone()}</dd>
            <dt>"Duration"</dt><dd data-testid="job-duration">{d.duration_ms.map(|ms| format!("{ms} ms")).unwrap_or_else(|| "—".into())}</dd>
            <dt>"Exit code"</dt><dd>{d.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "—".into())}</dd>
            <dt>"Call hash"</dt><dd><code class="hash">{r.call_hash.clone()}</code></dd>
        </dl>
        {approval_link}
        <h2>"Arguments"</h2>
        <pre class="arg-value">{d.arguments.clone()}</pre>
        <h2>"Timeline"</h2>
        <ol class="timeline" data-testid="timeline">
            {d.timeline.into_iter().map(|t| {
                let kind = t.kind.clone();
                view! {
                    <li data-kind=kind>
                        <crate::layout::When at=t.at/>" "<strong>{t.kind}</strong>" — "{t.who}": "{t.what}
                        <span class="muted">" (audit row "{t.seq}")"</span>
                    </li>
                }
            }).collect_view()}
        </ol>
        {(!d.side_effects.is_empty()).then(|| view! {
            <h2>"Side effects"</h2>
            <ul data-testid="side-effects">{d.side_effects.into_iter().map(|s| view! { <li><code>{s}</code></li> }).collect_view()}</ul>
        })}
        {d.error.map(|e| view! { <h2>"Error"</h2><p class="error">{e}</p> })}
        {d.output.map(|o| view! {
            <h2>"Output"</h2>
            <pre class="arg-value" data-testid="job-output">{o}</pre>
            <p class="muted">"SHA-256 of the whole output: "<code class="hash">{d.output_digest.unwrap_or_default()}</code></p>
        })}
    }
}
