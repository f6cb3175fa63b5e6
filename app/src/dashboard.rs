//! The dashboard: pending approvals by priority, queue depth by status, the last 24 hours'
//! decisions by action × risk (a server-rendered SVG chart, there before any script runs), a
//! 7-day trend, the reference note's denied-operation alert, top tools and recent activity.
//! Once hydrated it listens to `/events` (server-sent events) and refreshes when jobs change.

use crate::components::{duration, live_refresh, RiskBadge};
#[cfg(feature = "ssr")]
use crate::service::service;
use crate::views::{DashboardView, DeliveryView, ShadowView};
use crate::AppError;
use enforcer::{Action, Risk};
use leptos::prelude::*;
use leptos_meta::Title;

#[server(endpoint = "retry_delivery")]
pub async fn retry_delivery(id: i64) -> Result<(), AppError> {
    let next = service()?.retry_delivery(id).await;
    leptos_axum::redirect(&next);
    Ok(())
}

/// The dashboard's figures.
#[server(endpoint = "dashboard")]
pub async fn dashboard() -> Result<DashboardView, AppError> {
    service()?.dashboard().await
}

/// The chart's bars, top to bottom.
const ACTIONS: [Action; 3] = [Action::Allow, Action::RequireApproval, Action::Deny];

/// The chart fill for a risk level (a class: the colours follow the light or dark theme).
fn risk_color(risk: Risk) -> &'static str {
    match risk {
        Risk::Low => "fill-low",
        Risk::Medium => "fill-medium",
        Risk::High => "fill-high",
        Risk::Critical => "fill-critical",
    }
}

/// Decisions of the last 24 h: one horizontal bar per action, split by risk.
fn action_risk_chart(data: &[(String, String, i64)]) -> impl IntoView {
    let count = |a: Action, r: Risk| {
        data.iter()
            .find(|(x, y, _)| x == a.as_str() && y == r.as_str())
            .map_or(0, |(_, _, n)| *n)
    };
    let widest = ACTIONS
        .into_iter()
        .map(|a| Risk::ALL.into_iter().map(|r| count(a, r)).sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let (label_w, bar_w, row_h) = (130.0, 340.0, 28.0);
    let bars = ACTIONS
        .into_iter()
        .enumerate()
        .map(|(i, action)| {
            let y = i as f64 * row_h + 4.0;
            let mut x = label_w;
            let total: i64 = Risk::ALL.into_iter().map(|r| count(action, r)).sum();
            let segments = Risk::ALL
                .into_iter()
                .filter(|r| count(action, *r) > 0)
                .map(|risk| {
                    let n = count(action, risk);
                    let w = bar_w * n as f64 / widest as f64;
                    let seg = view! {
                        <rect x=format!("{x:.1}") y=format!("{y:.1}") width=format!("{w:.1}") height="20"
                            class=risk_color(risk) data-action=action.to_string() data-risk=risk.to_string()>
                            <title>{format!("{action} · {risk}: {n}")}</title>
                        </rect>
                    };
                    x += w;
                    seg
                })
                .collect_view();
            view! {
                <g>
                    <text x="0" y=format!("{:.1}", y + 15.0) class="chart-label">{action.as_str().replace('_', " ")}</text>
                    {segments}
                    <text x=format!("{:.1}", x + 6.0) y=format!("{:.1}", y + 15.0) class="chart-value">{total}</text>
                </g>
            }
        })
        .collect_view();
    let legend = Risk::ALL
        .into_iter()
        .enumerate()
        .map(|(i, risk)| {
            let x = label_w + i as f64 * 90.0;
            view! {
                <g>
                    <rect x=format!("{x:.1}") y="92" width="12" height="12" class=risk_color(risk)></rect>
                    <text x=format!("{:.1}", x + 16.0) y="102" class="chart-label">{risk.to_string()}</text>
                </g>
            }
        })
        .collect_view();
    view! {
        <svg class="chart" viewBox="0 0 520 110" role="img" data-testid="decisions-chart"
            aria-label="Decisions in the last 24 hours by action and risk">
            {bars}
            {legend}
        </svg>
    }
}

/// The last 7 days: one column per day, split by action.
fn trend_chart(daily: &[(String, String, i64)]) -> impl IntoView {
    let mut days: Vec<&str> = daily.iter().map(|(d, _, _)| d.as_str()).collect();
    days.dedup();
    let total = |day: &str| {
        daily
            .iter()
            .filter(|(d, _, _)| d == day)
            .map(|(_, _, n)| n)
            .sum::<i64>()
    };
    let tallest = days.iter().map(|d| total(d)).max().unwrap_or(0).max(1);
    let columns = days
        .iter()
        .enumerate()
        .map(|(i, day)| {
            let x = 10.0 + i as f64 * 70.0;
            let mut top = 100.0;
            let parts = ACTIONS
                .into_iter()
                .map(|action| {
                    let n = daily
                        .iter()
                        .find(|(d, a, _)| d == day && a == action.as_str())
                        .map_or(0, |(_, _, n)| *n);
                    let h = 90.0 * n as f64 / tallest as f64;
                    top -= h;
                    let color = match action {
                        Action::Allow => "fill-low",
                        Action::Deny => "fill-critical",
                        Action::RequireApproval => "fill-medium",
                    };
                    view! {
                        <rect x=format!("{x:.1}") y=format!("{top:.1}") width="40" height=format!("{h:.1}") class=color>
                            <title>{format!("{day} {action}: {n}")}</title>
                        </rect>
                    }
                })
                .collect_view();
            view! {
                <g>
                    {parts}
                    <text x=format!("{x:.1}") y="114" class="chart-label">{day.get(5..).unwrap_or(day).to_string()}</text>
                </g>
            }
        })
        .collect_view();
    view! {
        <svg class="chart" viewBox="0 0 500 120" role="img" data-testid="trend-chart"
            aria-label="Decisions per day over the last 7 days">
            {columns}
        </svg>
    }
}

/// `/`.
#[component]
pub fn Dashboard() -> impl IntoView {
    let data = Resource::new(|| (), |_| dashboard());
    live_refresh(data);
    view! {
        <Title text="Dashboard"/>
        <section class="page">
            <h1>"Dashboard"</h1>
            <p class="lead">"Pending approvals, queue depth and the last day's decisions at a glance."</p>
            // Transition, not Suspense: a live refresh keeps the figures on screen until the new
            // ones arrive (Suspense would flash "Loading…" and move the page).
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || data.get().map(|result| match result {
                    Err(error) => view! { <p class="error" role="alert">{error.to_string()}</p> }.into_any(),
                    Ok(d) => dashboard_view(d).into_any(),
                })}
            </Transition>
        </section>
    }
}

/// The notification deliveries panel: counts per sink, and the dead letters with a retry button.
fn deliveries_view(d: DeliveryView) -> impl IntoView {
    use leptos_router::hooks::use_query_map;
    let query = use_query_map();
    let message = move || {
        query.with(|q| {
            q.get("delivery_error")
                .map(|e| view! { <p class="error" role="alert">{e}</p> }.into_any())
                .or_else(|| {
                    q.get("retried").map(|id| {
                        view! { <p class="notice" role="status">{format!("Message {id} is queued again.")}</p> }
                            .into_any()
                    })
                })
        })
    };
    let count = |sink: &str, status: &str| {
        d.counts
            .iter()
            .find(|(s, st, _)| s == sink && st == status)
            .map_or(0, |(_, _, n)| *n)
    };
    let mut sinks: Vec<String> = d.counts.iter().map(|(s, _, _)| s.clone()).collect();
    sinks.dedup();
    let may_retry = d.may_retry;
    view! {
        <section class="panel" id="deliveries" data-testid="deliveries">
            <h2>"Notification deliveries"</h2>
            {message}
            {if sinks.is_empty() {
                view! { <p class="muted">"No notification has been queued."</p> }.into_any()
            } else {
                view! {
                    <p class="muted" data-testid="delivery-counts">
                        {sinks.iter().map(|s| format!(
                            "{s}: {} delivered, {} pending, {} dead",
                            count(s, "delivered"), count(s, "pending"), count(s, "dead")
                        )).collect::<Vec<_>>().join(" · ")}
                    </p>
                }.into_any()
            }}
            {if d.dead.is_empty() {
                view! { <p class="muted" data-testid="dead-letters">"No dead letters."</p> }.into_any()
            } else {
                view! {
                    <table class="dense" data-testid="dead-letters">
                        <thead><tr><th>"#"</th><th>"Queued"</th><th>"Sink"</th><th>"Event"</th><th>"Job"</th><th>"Attempts"</th><th>"Last error"</th><th></th></tr></thead>
                        <tbody>
                            {d.dead.into_iter().map(|row| view! {
                                <tr>
                                    <td>{row.id}</td>
                                    <td><crate::layout::When at=row.created_at/></td>
                                    <td>{row.sink}</td>
                                    <td>{row.event}</td>
                                    <td>{row.job_id.map(|j| view! { <a href=format!("/jobs/{j}")>{j.clone()}</a> })}</td>
                                    <td>{row.attempts}</td>
                                    <td>{row.error}</td>
                                    <td>{may_retry.then(|| view! {
                                        <form method="post" action="/api/retry_delivery">
                                            <input type="hidden" name="id" value=row.id.to_string()/>
                                            <button type="submit" data-testid="retry-delivery">"Retry"</button>
                                        </form>
                                    })}</td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any()
            }}
        </section>
    }
}

/// What shadow mode let through that enforcing would have held: by operation (with its risk),
/// by dangerous pattern and by the pattern's category, so an administrator can switch an
/// operation to enforce knowing how many requests people would have seen.
fn shadow_view(s: ShadowView) -> AnyView {
    let days = i64::from(s.days.max(1));
    let rate = move |n: i64| (n >= days).then(|| format!(" (≈ {} a day)", (n + days / 2) / days));
    let read_note = (s.rows_read < s.total).then(|| {
        format!(
            "Patterns and categories are counted over the newest {} of these calls.",
            s.rows_read
        )
    });
    let has_patterns = !s.by_pattern.is_empty();
    view! {
        <section class="panel shadow" id="shadow" data-testid="shadow">
            <h2>{format!("Shadow mode: what enforcing would have held ({} days)", s.days)}</h2>
            <p>
                <span class="figure" data-testid="shadow-total">{s.total}</span>
                {format!(
                    " call{} let through that would have waited for approval{}.",
                    if s.total == 1 { "" } else { "s" },
                    rate(s.total).unwrap_or_default()
                )}
            </p>
            {if s.in_shadow.is_empty() {
                view! { <p class="muted">"No operation is in shadow mode now: these calls were decided under an earlier policy."</p> }.into_any()
            } else {
                view! {
                    <p class="muted" data-testid="shadow-operations">
                        "In shadow mode now: "
                        {s.in_shadow.iter().map(|op| view! { <code>{op.clone()}</code>" " }).collect_view()}
                    </p>
                }.into_any()
            }}
            {(!s.by_operation.is_empty()).then(|| view! {
                <table class="dense" data-testid="shadow-by-operation">
                    <thead><tr><th>"Tool · operation"</th><th>"Risk"</th><th>"Let through"</th></tr></thead>
                    <tbody>
                        {s.by_operation.iter().map(|(tool, op, risk, n)| view! {
                            <tr>
                                <td>{format!("{tool} · {op}")}</td>
                                <td>{Risk::parse(risk).map(|risk| view! { <RiskBadge risk=risk/> })}</td>
                                <td>{*n}{rate(*n)}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            })}
            {(s.total > 0 && has_patterns).then(|| view! {
                <div class="shadow-why">
                    <div>
                        <h3>"By pattern"</h3>
                        <ol data-testid="shadow-by-pattern">
                            {s.by_pattern.iter().map(|(pattern, category, n)| view! {
                                <li><code>{pattern.clone()}</code>{format!(" ({category}): {n}")}</li>
                            }).collect_view()}
                        </ol>
                    </div>
                    <div>
                        <h3>"By category"</h3>
                        <ol data-testid="shadow-by-category">
                            {s.by_category.iter().map(|(category, n)| view! { <li>{format!("{category}: {n}")}</li> }).collect_view()}
                        </ol>
                    </div>
                </div>
            })}
            {(s.without_pattern > 0).then(|| view! {
                <p class="muted" data-testid="shadow-without-pattern">{format!(
                    "{} would have been held for no dangerous pattern: for the operation's risk, or for what the commands do.",
                    if s.without_pattern == 1 { "1 call".to_string() } else { format!("{} calls", s.without_pattern) },
                )}</p>
            })}
            {read_note.map(|note| view! { <p class="muted">{note}</p> })}
        </section>
    }
    .into_any()
}

fn dashboard_view(d: DashboardView) -> impl IntoView {
    let queue_total: i64 = d.queue.iter().map(|(_, n)| n).sum();
    let decisions_24h: i64 = d.by_action_risk.iter().map(|(_, _, n)| n).sum();
    view! {
        <ul class="cards">
            <li class="card">
                <h2>"Pending approvals"</h2>
                <p class="figure" data-testid="pending-count">{d.pending_total}</p>
                <p class="muted">{d.pending_by_priority.iter().map(|(p, n)| format!("{p}: {n}")).collect::<Vec<_>>().join(" · ")}</p>
            </li>
            <li class="card">
                <h2>"Decisions (24 h)"</h2>
                <p class="figure" data-testid="decisions-24h">{decisions_24h}</p>
            </li>
            <li class="card">
                <h2>"Queue"</h2>
                <p class="figure">{queue_total}</p>
                <p class="muted" data-testid="queue-depth">{d.queue.iter().map(|(s, n)| format!("{s}: {n}")).collect::<Vec<_>>().join(" · ")}</p>
            </li>
            <li class="card">
                <h2>"Denied-operation alerts"</h2>
                {if d.alerts.is_empty() {
                    view! { <p class="muted" data-testid="alerts">"None in the last hour."</p> }.into_any()
                } else {
                    view! {
                        <ul class="alerts" data-testid="alerts">
                            {d.alerts.iter().map(|(caller, tool, op, n)| view! {
                                <li class="error">{format!("{caller}: {n} denials of {tool} · {op} in the last hour")}</li>
                            }).collect_view()}
                        </ul>
                    }.into_any()
                }}
            </li>
        </ul>
        <div class="panels">
            <section class="panel">
                <h2>"Waiting for a person"</h2>
                {if d.pending.is_empty() {
                    view! { <p class="muted">"Nothing is waiting for approval."</p> }.into_any()
                } else {
                    view! {
                        <ul class="pending" data-testid="dashboard-pending">
                            {d.pending.iter().map(|p| view! {
                                <li>
                                    <RiskBadge risk=p.job.risk/>" "
                                    <a href=format!("/approvals/{}", p.job.job_id)>{format!("{} · {}", p.job.tool, p.job.operation)}</a>
                                    {format!(" by {}, {} ago", p.job.requester, duration(p.age_secs))}
                                </li>
                            }).collect_view()}
                        </ul>
                    }.into_any()
                }}
            </section>
            <section class="panel">
                <h2>"Decisions, last 24 h"</h2>
                {action_risk_chart(&d.by_action_risk)}
            </section>
            <section class="panel">
                <h2>"Last 7 days"</h2>
                {trend_chart(&d.daily)}
            </section>
            <section class="panel">
                <h2>"Top tools (24 h)"</h2>
                <ol data-testid="top-tools">
                    {d.top_tools.iter().map(|(tool, n)| view! { <li>{format!("{tool}: {n}")}</li> }).collect_view()}
                </ol>
            </section>
        </div>
        {d.shadow.map(shadow_view)}
        {d.deliveries.map(deliveries_view)}
        {d.recent.map(|recent| view! {
            <h2>"Recent activity"</h2>
            <table class="dense" data-testid="recent">
                <thead><tr><th>"#"</th><th>"When"</th><th>"Event"</th><th>"Who"</th><th>"Tool"</th><th>"Operation"</th><th>"Action"</th><th>"Risk"</th></tr></thead>
                <tbody>
                    {recent.into_iter().map(|r| view! {
                        <tr>
                            <td>{r.seq}</td><td><crate::layout::When at=r.at/></td><td>{r.kind}</td><td>{r.caller}</td>
                            <td>{r.tool}</td><td>{r.operation}</td><td>{r.action}</td><td>{r.risk}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        })}
    }
}
