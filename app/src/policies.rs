//! The policies page: the active policy (tools, operations, risk, capabilities, executors,
//! approval rules, patterns) and its hash, and a simulator that decides a typed tool call in the
//! browser with the same enforcer crate, compiled to wasm, loaded from the very text the server
//! loaded (so the policy hash matches the server's).

use crate::components::{CodeText, CommandsList};
#[cfg(feature = "ssr")]
use crate::service::service;
use crate::views::{CommandView, GrantRow, PolicySource};
use crate::AppError;
use enforcer::{PolicySet, Principal, Request};
use leptos::prelude::*;
use leptos_meta::Title;

#[server(endpoint = "active_policy")]
pub async fn active_policy() -> Result<PolicySource, AppError> {
    service()?.policy().await
}

/// `/policies`.
#[component]
pub fn Policies() -> impl IntoView {
    let source = Resource::new(|| (), |_| active_policy());
    // The standing grants, for the simulator to say whether one would apply (empty for those
    // who may not read them).
    let grants = Resource::new(|| (), |_| crate::grants::standing_grants());
    view! {
        <Title text="Policies"/>
        <section class="page">
            <h1>"Policies"</h1>
            <p class="lead">"The active policy: tools, operations, risk and capabilities; and a simulator."</p>
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || source.get().map(|result| match result {
                    Err(error) => view! { <p class="error" role="alert">{error.to_string()}</p> }.into_any(),
                    Ok(src) => match PolicySet::load(&src.file, &src.source) {
                        Err(error) => view! { <p class="error" role="alert">{error.to_string()}</p> }.into_any(),
                        Ok(set) => {
                            let standing: Vec<GrantRow> = grants
                                .get()
                                .and_then(Result::ok)
                                .map(|list| list.rows.into_iter().filter(|g| g.state == "standing").collect())
                                .unwrap_or_default();
                            policy_view(set, standing).into_any()
                        }
                    },
                })}
            </Suspense>
        </section>
    }
}

fn policy_view(set: PolicySet, grants: Vec<GrantRow>) -> impl IntoView {
    let hash = set.hash().to_string();
    let tools = set
        .tools
        .iter()
        .flat_map(|(tool, t)| {
            t.operations.iter().map(move |(op, o)| {
                view! {
                    <tr>
                        <td>{tool.clone()}</td>
                        <td>{op.clone()}</td>
                        <td><span class=format!("badge risk-{}", o.risk.as_str().to_ascii_lowercase())>{o.risk.as_str()}</span></td>
                        <td>{o.requires.iter().cloned().collect::<Vec<_>>().join(", ")}</td>
                        <td>{if o.interactive_only { "always" } else { "" }}
                            {(o.mode == enforcer::Mode::Shadow && !o.interactive_only).then(|| view! {
                                <span class="badge shadow-mode" title="Decided, recorded, and allowed: calls that would need approval are let through and counted on the dashboard">"shadow"</span>
                            })}
                        </td>
                        <td>{o.executor.clone().unwrap_or_default()}</td>
                    </tr>
                }
            })
        })
        .collect_view();
    let rules = enforcer::Risk::ALL
        .iter()
        .map(|risk| {
            let r = set.approvals.for_risk(*risk);
            view! {
                <tr>
                    <td>{risk.as_str()}</td>
                    <td>{r.quorum}</td>
                    <td>{format!("{} min", r.request_ttl_secs / 60)}</td>
                    <td>{format!("{} min", r.approval_window_secs / 60)}</td>
                </tr>
            }
        })
        .collect_view();
    let patterns = set
        .patterns
        .iter()
        .map(|p| {
            view! {
                <tr>
                    <td><code>{p.id.clone()}</code></td>
                    <td>{p.category.as_str()}</td>
                    <td>{p.escalate.map(|r| r.as_str()).unwrap_or("")}</td>
                    <td>{p.description.clone()}</td>
                </tr>
            }
        })
        .collect_view();
    let executors = set
        .executors
        .values()
        .map(|e| {
            view! {
                <tr>
                    <td><code>{e.name.clone()}</code></td>
                    <td>{e.kind.as_str()}</td>
                    <td><code>{if e.argv.is_empty() { e.url.clone().unwrap_or_default() } else { e.argv.join(" ") }}</code></td>
                    <td>{format!("{} s", e.timeout_secs)}</td>
                </tr>
            }
        })
        .collect_view();
    let tool_names: Vec<String> = set.tools.keys().cloned().collect();
    let stored = StoredValue::new(set.clone());
    view! {
        <p>"Policy "<strong>{set.name.clone()}</strong>" — "{set.description.clone()}</p>
        <p>"Hash: "<code class="hash" data-testid="policy-hash">{hash}</code></p>
        <h2>"Simulator"</h2>
        <Simulator set=stored tools=tool_names grants=StoredValue::new(grants)/>
        <h2>"Tools and operations"</h2>
        <table class="dense" data-testid="policy-operations">
            <thead><tr><th>"Tool"</th><th>"Operation"</th><th>"Risk"</th><th>"Requires"</th><th>"Approval"</th><th>"Executor"</th></tr></thead>
            <tbody>{tools}</tbody>
        </table>
        <h2>"Approval rules"</h2>
        <table class="dense">
            <thead><tr><th>"Risk"</th><th>"Approvers"</th><th>"Request expires after"</th><th>"Approval valid for"</th></tr></thead>
            <tbody>{rules}</tbody>
        </table>
        <h2>"Executors"</h2>
        <table class="dense">
            <thead><tr><th>"Name"</th><th>"Kind"</th><th>"Runs"</th><th>"Timeout"</th></tr></thead>
            <tbody>{executors}</tbody>
        </table>
        <h2>"Dangerous patterns"</h2>
        <table class="dense">
            <thead><tr><th>"Id"</th><th>"Category"</th><th>"Raises risk to"</th><th>"What it catches"</th></tr></thead>
            <tbody>{patterns}</tbody>
        </table>
    }
}

/// What the simulator shows for one call.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    action: String,
    risk: String,
    reasons: Vec<String>,
    patterns: Vec<String>,
    commands: Vec<CommandView>,
    call_hash: String,
    policy_hash: String,
    approvals: u32,
    would_block: bool,
    /// For a call that needs approval: the standing grant that would allow it instead, if any.
    grant: Option<String>,
}

/// Decide a call with the enforcer (in the browser once hydrated).
fn simulate(
    set: &PolicySet,
    tool: &str,
    operation: &str,
    args: &str,
    target: &str,
    capabilities: &str,
    grants: &[GrantRow],
) -> Result<Outcome, AppError> {
    let args = if args.trim().is_empty() {
        serde_json::Map::new()
    } else {
        match serde_json::from_str::<serde_json::Value>(args) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => {
                return Err(AppError::invalid(
                    "args",
                    "the arguments must be a JSON object",
                ))
            }
            Err(e) => {
                return Err(AppError::invalid(
                    "args",
                    format!("the arguments are not valid JSON: {e}"),
                ))
            }
        }
    };
    let request = Request {
        tool: tool.trim().to_string(),
        operation: operation.trim().to_string(),
        args,
        target: Some(target.trim().to_string()).filter(|t| !t.is_empty()),
    };
    let principal = Principal {
        id: "simulator".into(),
        roles: Default::default(),
        capabilities: capabilities
            .split([',', ' '])
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect(),
    };
    let d = enforcer::evaluate(&request, &principal, set);
    let grant = grant_that_applies(set, &request, &d, grants);
    Ok(Outcome {
        grant,
        action: d.action.as_str().to_string(),
        risk: d.risk.as_str().to_string(),
        reasons: d.reasons,
        patterns: d.matched_patterns.iter().map(|m| m.id.clone()).collect(),
        commands: CommandView::of(&d.commands, &request.args),
        call_hash: d.call_hash,
        policy_hash: d.policy_hash,
        approvals: d.approvals_required,
        would_block: d.would_block,
    })
}

/// The standing grant that would allow a call the enforcer holds, in words: the same check the
/// server makes (the decision may be remembered, and the grant's scope covers the call), for
/// whomever the grant is for.
fn grant_that_applies(
    set: &PolicySet,
    request: &Request,
    decision: &enforcer::Decision,
    grants: &[GrantRow],
) -> Option<String> {
    use enforcer::grant;
    if decision.action != enforcer::Action::RequireApproval
        || grant::why_not_remembered(decision, set).is_some()
    {
        return None;
    }
    let operation = set.operation(&request.tool, &request.operation)?;
    grants.iter().find_map(|g| {
        let scope: grant::GrantScope = serde_json::from_str(&g.scope).ok()?;
        grant::covers(&scope, request, &decision.call_hash, operation).then(|| {
            format!(
                "grant {} would allow it for {} (covers {}; until {})",
                g.id, g.subject, g.covers, g.expires_at
            )
        })
    })
}

#[component]
fn Simulator(
    set: StoredValue<PolicySet>,
    tools: Vec<String>,
    grants: StoredValue<Vec<GrantRow>>,
) -> impl IntoView {
    let tool = RwSignal::new("ssh-exec".to_string());
    let operation = RwSignal::new("executeCommand".to_string());
    let args = RwSignal::new(r#"{"command": "rm -rf /var/tmp/x"}"#.to_string());
    let target = RwSignal::new(String::new());
    let caps = RwSignal::new("ssh-linux, remote-exec".to_string());
    let outcome = RwSignal::new(None::<Result<Outcome, AppError>>);
    let run = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let result = set.with_value(|s| {
            simulate(
                s,
                &tool.get_untracked(),
                &operation.get_untracked(),
                &args.get_untracked(),
                &target.get_untracked(),
                &caps.get_untracked(),
                &grants.read_value(),
            )
        });
        outcome.set(Some(result));
    };
    view! {
        <form class="simulator" on:submit=run data-testid="simulator">
            <label>"Tool"
                <input list="policy-tools" name="tool" bind:value=tool/>
            </label>
            <datalist id="policy-tools">
                {tools.into_iter().map(|t| view! { <option value=t></option> }).collect_view()}
            </datalist>
            <label>"Operation"<input name="operation" bind:value=operation/></label>
            <label>"Target"<input name="target" bind:value=target/></label>
            <label>"Caller's capabilities (comma-separated)"<input name="capabilities" bind:value=caps/></label>
            <label class="wide">"Arguments (JSON object)"<textarea name="args" bind:value=args rows="3"></textarea></label>
            <button type="submit" data-testid="simulate">"Decide in this browser"</button>
            <noscript><p class="muted">"The simulator runs the enforcer in your browser and needs JavaScript."</p></noscript>
        </form>
        {move || outcome.get().map(|result| match result {
            Err(error) => view! { <p class="error" role="alert" data-testid="sim-error">{error.to_string()}</p> }.into_any(),
            Ok(o) => view! {
                <dl class="facts" data-testid="sim-result">
                    <dt>"Decision"</dt><dd data-testid="sim-action">{o.action.clone()}</dd>
                    {(o.action == "require_approval").then(|| view! {
                        <dt>"Standing grant"</dt>
                        <dd data-testid="sim-grant">{o.grant.clone().unwrap_or_else(|| "none would apply".to_string())}</dd>
                    })}
                    {o.would_block.then(|| view! {
                        <dt>"Shadow mode"</dt><dd data-testid="sim-shadow">"Allowed now; enforcing would hold it for approval."</dd>
                    })}
                    <dt>"Risk"</dt><dd data-testid="sim-risk">{o.risk}</dd>
                    <dt>"Approvals needed"</dt><dd>{o.approvals}</dd>
                    <dt>"Patterns"</dt><dd data-testid="sim-patterns">{o.patterns.join(", ")}</dd>
                    <dt>"What it does"</dt><dd data-testid="sim-commands">{if o.commands.is_empty() {
                        view! { <span class="muted">"No shell command to read."</span> }.into_any()
                    } else {
                        view! { <CommandsList commands=o.commands/> }.into_any()
                    }}</dd>
                    <dt>"Reasons"</dt><dd><ul>{o.reasons.into_iter().map(|r| view! { <li><CodeText text=r/></li> }).collect_view()}</ul></dd>
                    <dt>"Call hash"</dt><dd><code class="hash" data-testid="sim-call-hash">{o.call_hash}</code></dd>
                    <dt>"Policy hash"</dt><dd><code class="hash" data-testid="sim-policy-hash">{o.policy_hash}</code></dd>
                </dl>
            }.into_any(),
        })}
    }
}
