//! `/grants`: remembered approvals (standing grants), newest first: what each covers, for whom,
//! on which target, how often it was used and when last, until when, who made it, and whether
//! it stands; approvers and admins revoke one at once. The remember form on an approved
//! request's page makes them.

use crate::views::GrantList;
use crate::AppError;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

#[cfg(feature = "ssr")]
use crate::service::service;

/// Every grant.
#[server(endpoint = "standing_grants")]
pub async fn standing_grants() -> Result<GrantList, AppError> {
    service()?.grants().await
}

/// Remember the signed-in approver's approval (the approval page's form).
#[server(endpoint = "remember_approval")]
pub async fn remember_approval(
    job_id: String,
    generalise: String,
    target: String,
    group: String,
    ttl_secs: String,
    max_uses: String,
) -> Result<(), AppError> {
    let next = service()?
        .remember(crate::service::RememberForm {
            job_id,
            generalise,
            target,
            group,
            ttl_secs,
            max_uses,
        })
        .await;
    leptos_axum::redirect(&next);
    Ok(())
}

/// Revoke a grant (the Grants page's buttons).
#[server(endpoint = "revoke_grant")]
pub async fn revoke_grant(id: String) -> Result<(), AppError> {
    let next = service()?.revoke_grant(id).await;
    leptos_axum::redirect(&next);
    Ok(())
}

#[component]
pub fn Grants() -> impl IntoView {
    let grants = Resource::new(|| (), |_| standing_grants());
    let query = use_query_map();
    let notice = move || {
        query.with(|q| {
            q.get("revoke_error")
                .map(|e| view! { <p class="error" role="alert">{e}</p> }.into_any())
                .or_else(|| {
                    q.get("revoked").map(|id| {
                        view! { <p class="notice" role="status" data-testid="grant-revoked">{format!("Grant {id} is revoked: it allows nothing from now on.")}</p> }
                            .into_any()
                    })
                })
        })
    };
    view! {
        <Title text="Standing grants"/>
        <section class="page">
            <h1>"Grants"</h1>
            <p class="muted">"Approvals remembered for the next calls like them: each allows calls the policy would hold, for whom and where it says, until it ends, is spent or is revoked. CRITICAL operations and effects the policy never remembers are never covered."</p>
            {notice}
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || grants.get().map(|result| match result {
                    Err(error) => view! { <p class="error" role="alert">{error.to_string()}</p> }.into_any(),
                    Ok(list) if list.rows.is_empty() => view! {
                        <p class="muted" data-testid="no-grants">"No approval has been remembered. An approver can remember one from an approved request's page."</p>
                    }.into_any(),
                    Ok(list) => grants_table(list).into_any(),
                })}
            </Suspense>
        </section>
    }
}

fn grants_table(list: GrantList) -> impl IntoView {
    let may_revoke = list.may_revoke;
    view! {
        <table class="dense grants" data-testid="grants">
            <thead><tr><th>"State"</th><th>"Tool · operation"</th><th>"Covers"</th><th>"For"</th><th>"Target"</th><th>"Uses"</th><th>"Last used"</th><th>"Until"</th><th>"Remembered by"</th><th></th></tr></thead>
            <tbody>
                {list.rows.into_iter().map(|g| {
                    let standing = g.state == "standing";
                    let state_class = format!("badge grant-{}", g.state.split(' ').next().unwrap_or("other"));
                    view! {
                        <tr data-grant=g.id.clone()>
                            <td data-label="State"><span class=state_class>{g.state.clone()}</span></td>
                            <td data-label="Tool · operation">{format!("{} · {}", g.tool, g.operation)}</td>
                            <td data-label="Covers"><code>{g.covers}</code></td>
                            <td data-label="For">{g.subject}</td>
                            <td data-label="Target">{g.target.unwrap_or_else(|| "—".into())}</td>
                            <td data-label="Uses">{match g.max_uses { Some(max) => format!("{} of {max}", g.uses), None => g.uses.to_string() }}</td>
                            <td data-label="Last used">{match g.last_used_at { Some(at) => view! { <crate::layout::When at=at/> }.into_any(), None => view! { <span class="muted">"never"</span> }.into_any() }}</td>
                            <td data-label="Until"><crate::layout::When at=g.expires_at/></td>
                            <td data-label="Remembered by">{g.approvers.join(", ")}" · "<a href=format!("/approvals/{}", g.job_id)>"request"</a></td>
                            <td>{(may_revoke && (standing || g.state.starts_with("waiting"))).then(|| view! {
                                <form method="post" action="/api/revoke_grant">
                                    <input type="hidden" name="id" value=g.id.clone()/>
                                    <button type="submit" class="danger" data-testid="revoke-grant">"Revoke"</button>
                                </form>
                            })}{g.revoked_by.map(|by| view! { <span class="muted">{format!("revoked by {by}")}</span> })}</td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
    }
}
