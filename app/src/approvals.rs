//! The approvals pages: the pending list (urgent first, then oldest) and one request in full,
//! with each matched dangerous pattern highlighted in the argument text, the decision's reasons,
//! earlier votes, and the approve / deny forms. The forms are plain HTML forms posting to server
//! functions, so they work before (and without) WASM; the server refuses whoever may not vote.
//!
//! Server functions stay thin: the server provides a [`crate::service::PortalService`] in context.

use crate::components::{duration, live_refresh, CodeText, CommandsList, RiskBadge};
use crate::views::{ApprovalView, PendingApproval};
use crate::AppError;
use enforcer::{Risk, Verdict};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_params_map;

#[cfg(feature = "ssr")]
use crate::service::service;

/// Requests waiting for approval.
#[server(endpoint = "pending_approvals")]
pub async fn pending_approvals() -> Result<Vec<PendingApproval>, AppError> {
    service()?.pending().await
}

/// One request in full.
#[server(endpoint = "approval_detail")]
pub async fn approval_detail(job_id: String) -> Result<Option<ApprovalView>, AppError> {
    service()?.approval(job_id).await
}

/// Approve or deny, then come back to the request (with the refusal, if any, in the address).
#[server(endpoint = "cast_vote")]
pub async fn cast_vote(job_id: String, verdict: String, reason: String) -> Result<(), AppError> {
    let next = service()?.vote(job_id, verdict, reason).await;
    leptos_axum::redirect(&next);
    Ok(())
}

#[component]
pub fn Approvals() -> impl IntoView {
    let pending = Resource::new(|| (), |_| pending_approvals());
    // A new request appears (and decided ones leave) without a reload.
    live_refresh(pending);
    view! {
        <Title text="Approvals"/>
        <section class="page">
            <h1>"Approvals"</h1>
            <p class="lead">"Requests waiting for a person: urgent first, then oldest."</p>
            // Transition: a live refresh keeps the list on screen until the new one arrives.
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || pending.get().map(|result| match result {
                    Err(error) => view! { <p class="error" role="alert">{error.to_string()}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! {
                        <p class="muted" data-testid="no-approvals">"Nothing is waiting for approval."</p>
                    }.into_any(),
                    Ok(list) => view! {
                        <table class="dense" data-testid="approvals">
                            <thead><tr>
                                <th>"Risk"</th><th>"Tool"</th><th>"Operation"</th><th>"Target"</th>
                                <th>"Requester"</th><th>"Age"</th><th>"Expires in"</th><th>"Quorum"</th>
                            </tr></thead>
                            <tbody>
                                {list.into_iter().map(|p| {
                                    let href = format!("/approvals/{}", p.job.job_id);
                                    view! {
                                        <tr data-job=p.job.job_id.clone()>
                                            <td><RiskBadge risk=p.job.risk/></td>
                                            <td><a href=href>{p.job.tool.clone()}</a></td>
                                            <td>{p.job.operation.clone()}</td>
                                            <td>{p.job.target.clone().unwrap_or_default()}</td>
                                            <td>{p.job.requester.clone()}</td>
                                            <td>{duration(p.age_secs)}</td>
                                            <td>{p.expires_in_secs.map(duration).unwrap_or_default()}</td>
                                            <td>{format!("{}/{}", p.approvals, p.job.approvals_required)}</td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                })}
            </Transition>
        </section>
    }
}

/// `/approvals/:id`: one request in full, and the vote forms.
#[component]
pub fn ApprovalPage() -> impl IntoView {
    let params = use_params_map();
    let query = leptos_router::hooks::use_query_map();
    let job_id = move || params.with(|p| p.get("id").unwrap_or_default());
    let detail = Resource::new(job_id, approval_detail);
    let notice = move || {
        query.with(|q| {
            if let Some(error) = q.get("remember_error") {
                Some(
                    view! { <p class="error" role="alert" data-testid="remember-error">{error}</p> }
                        .into_any(),
                )
            } else if let Some(grant) = q.get("remembered") {
                Some(
                    view! {
                        <p class="notice" role="status" data-testid="remembered">
                            {format!("Remembered as grant {grant}. ")}
                            <a href="/grants">"See every grant"</a>
                        </p>
                    }
                    .into_any(),
                )
            } else if let Some(error) = q.get("error") {
                Some(
                    view! { <p class="error" role="alert" data-testid="vote-error">{error}</p> }
                        .into_any(),
                )
            } else {
                q.get("voted").map(|v| {
                    let text = if v == Verdict::Deny.as_str() {
                        "Denied."
                    } else {
                        "Approved."
                    };
                    view! { <p class="notice" role="status" data-testid="vote-done">{text}</p> }
                        .into_any()
                })
            }
        })
    };
    view! {
        <Title text="Approval"/>
        <section class="page">
            <p><a href="/approvals">"← All pending approvals"</a></p>
            {notice}
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || detail.get().map(|result| match result {
                    Err(error) => view! { <p class="error" role="alert">{error.to_string()}</p> }.into_any(),
                    Ok(None) => view! { <h1>"Not found"</h1><p>"There is no such request, or it is not yours to see."</p> }.into_any(),
                    Ok(Some(d)) => detail_view(d).into_any(),
                })}
            </Suspense>
        </section>
    }
}

/// Remembering an approval the viewer gave: the form, or why it cannot be remembered.
fn remember_view(job_id: String, offer: crate::views::RememberOffer) -> AnyView {
    if let Some(why) = offer.refusal {
        return view! {
            <p class="muted" data-testid="cannot-remember">"This approval cannot be remembered: "<CodeText text=why/></p>
        }
        .into_any();
    }
    if let Some(grant) = offer.remembered {
        return view! {
            <p class="muted" data-testid="already-remembered">{format!("You remembered this approval (grant {grant}). ")}<a href="/grants">"Grants"</a></p>
        }
        .into_any();
    }
    view! {
        <form method="post" action="/api/remember_approval" class="remember" data-testid="remember">
            <h2>"Remember this approval"</h2>
            <p class="muted">{format!("Allow the next calls like this one for {} without asking again, for a while. Every use is recorded and names the grant; it can be revoked at once.", offer.requester)}</p>
            <input type="hidden" name="job_id" value=job_id/>
            <label>"Which calls"
                <select name="generalise" data-testid="remember-generalise">
                    <option value="">"This exact call only"</option>
                    {offer.choices.into_iter().map(|(field, words)| view! { <option value=field>{words}</option> }).collect_view()}
                </select>
            </label>
            <label>"On target (* matches any run of characters)"
                <input name="target" value=offer.target.clone().unwrap_or_default() readonly=offer.target.is_none()/>
            </label>
            <label>"For (a role, or empty for the requester only)"
                <input name="group" placeholder=offer.requester.clone()/>
            </label>
            <label>"For how long"
                <select name="ttl_secs">
                    <option value="3600">"1 hour"</option>
                    <option value="28800">"8 hours"</option>
                    <option value="86400" selected=true>"24 hours"</option>
                    <option value="259200">"3 days"</option>
                    <option value="604800">"7 days (the longest)"</option>
                </select>
            </label>
            <label>"At most this many calls (empty: no limit)"
                <input name="max_uses" type="number" min="1" inputmode="numeric"/>
            </label>
            <button type="submit" data-testid="remember-submit">"Remember"</button>
        </form>
    }
    .into_any()
}

fn detail_view(d: ApprovalView) -> impl IntoView {
    let s = d.summary.clone();
    let critical = s.job.risk == Risk::Critical;
    let title = format!("{} · {}", s.job.tool, s.job.operation);
    view! {
        <h1 data-testid="approval-title">{title}" "<RiskBadge risk=s.job.risk/></h1>
        <dl class="facts">
            <dt>"Status"</dt><dd data-testid="approval-status">{d.status.as_str()}</dd>
            <dt>"Target"</dt><dd>{s.job.target.clone().unwrap_or_else(|| "—".into())}</dd>
            <dt>"Requester"</dt><dd>{s.job.requester.clone()}</dd>
            <dt>"Their reason"</dt><dd>{s.job.requester_reason.clone().unwrap_or_else(|| "—".into())}</dd>
            <dt>"Waiting"</dt><dd>{duration(s.age_secs)}</dd>
            <dt>"Expires in"</dt><dd>{s.expires_in_secs.map(duration).unwrap_or_default()}</dd>
            <dt>"Quorum"</dt><dd data-testid="quorum">{format!("{}/{}", s.approvals, s.job.approvals_required)}</dd>
            <dt>"Call hash"</dt><dd><code class="hash">{s.job.call_hash.clone()}</code></dd>
        </dl>
        <h2>"The call"</h2>
        <div class="arguments">
            {d.arguments.into_iter().map(|a| view! {
                <div class="argument">
                    <span class="arg-name">{a.name}</span>
                    <pre class="arg-value">{a.segments.into_iter().map(|seg| match seg.pattern {
                        Some(id) => view! { <mark title=id.clone() data-pattern=id>{seg.text}</mark> }.into_any(),
                        None => view! { <span>{seg.text}</span> }.into_any(),
                    }).collect_view()}</pre>
                </div>
            }).collect_view()}
        </div>
        {(!d.commands.is_empty()).then(|| view! {
            <h2>"What it does"</h2>
            <CommandsList commands=d.commands/>
        })}
        <h2>"Why it needs approval"</h2>
        <ul class="reasons">{d.reasons.into_iter().map(|r| view! { <li><CodeText text=r/></li> }).collect_view()}</ul>
        {(!d.patterns.is_empty()).then(|| view! {
            <h2>"Dangerous patterns"</h2>
            <ul class="patterns" data-testid="patterns">
                {d.patterns.into_iter().map(|p| view! {
                    <li><code>{p.id}</code>" ("{p.category}") in "<code>{p.argument}</code>": "<mark>{p.text}</mark>" — "{p.description}</li>
                }).collect_view()}
            </ul>
        })}
        <h2>"Capabilities"</h2>
        <p>"Required: "{d.required_capabilities.join(", ")}</p>
        <p>"Yours: "{d.viewer_capabilities.join(", ")}</p>
        <h2>"Similar recent requests"</h2>
        {if d.similar.is_empty() {
            view! { <p class="muted">"None recently."</p> }.into_any()
        } else {
            view! {
                <ul class="similar" data-testid="similar">{d.similar.into_iter().map(|s| view! {
                    <li><crate::layout::When at=s.at/>{format!(" — {} asked; {} ({}): {}", s.caller, s.action, s.risk, s.reason)}</li>
                }).collect_view()}</ul>
            }.into_any()
        }}
        <h2>"Votes"</h2>
        {if d.votes.is_empty() {
            view! { <p class="muted">"No votes yet."</p> }.into_any()
        } else {
            view! {
                <ul class="votes" data-testid="votes">{d.votes.into_iter().map(|v| view! {
                    <li>{v.approver}" — "<strong>{v.verdict.as_str()}</strong>{v.reason.map(|r| format!(": {r}")).unwrap_or_default()}" ("<crate::layout::When at=v.at/>")"</li>
                }).collect_view()}</ul>
            }.into_any()
        }}
        {d.remember.map(|offer| remember_view(s.job.job_id.clone(), offer))}
        {if d.may_vote {
            let job = s.job.job_id.clone();
            view! {
                <div class="vote-forms">
                    <form method="post" action="/api/cast_vote" class="vote approve">
                        <input type="hidden" name="job_id" value=job.clone()/>
                        <input type="hidden" name="verdict" value=Verdict::Approve.as_str()/>
                        <label>{if critical { "Comment (required for CRITICAL)" } else { "Comment" }}
                            <textarea name="reason" required=critical maxlength="2000"></textarea>
                        </label>
                        <button type="submit" data-testid="approve">"Approve"</button>
                    </form>
                    <form method="post" action="/api/cast_vote" class="vote deny">
                        <input type="hidden" name="job_id" value=job/>
                        <input type="hidden" name="verdict" value=Verdict::Deny.as_str()/>
                        <label>"Reason (the AI assistant is told it)"
                            <textarea name="reason" required=true maxlength="2000"></textarea>
                        </label>
                        <button type="submit" data-testid="deny">"Deny"</button>
                    </form>
                </div>
            }.into_any()
        } else {
            view! {
                <p class="muted" data-testid="cannot-vote">"You cannot vote on this request: "{d.why_not.join("; ")}</p>
            }.into_any()
        }}
    }
}
