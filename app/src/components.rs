//! Pieces more than one page draws: a risk badge, a duration, code in a sentence, what each
//! command of a call does, and the live refresh that follows `/events`.

use crate::views::CommandView;
use enforcer::Risk;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// A sentence with `backticked` parts shown as code (the enforcer's reasons quote commands,
/// roles and paths that way).
#[component]
pub fn CodeText(text: String) -> impl IntoView {
    text.split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                view! { <code>{part.to_string()}</code> }.into_any()
            } else {
                view! { <span>{part.to_string()}</span> }.into_any()
            }
        })
        .collect_view()
}

/// What each command of a call does: read-only, its effects, or unknown, and what decided.
#[component]
pub fn CommandsList(commands: Vec<CommandView>) -> impl IntoView {
    view! {
        <ul class="commands" data-testid="commands">
            {commands.into_iter().map(|c| {
                let class = if c.unknown {
                    "command unknown"
                } else if c.effects.is_empty() {
                    "command read-only"
                } else {
                    "command effect"
                };
                let no_effect = c.effects.is_empty() && !c.unknown;
                let read_only = no_effect && c.scratch.is_empty();
                let scratch_only = (no_effect && !c.scratch.is_empty())
                    .then(|| format!(" changes only scratch: {}", c.scratch.join(", ")));
                view! {
                    <li class=class>
                        <code class="command-text">{c.text}</code>
                        <span class="command-effects">
                            {read_only.then(|| view! { <span class="effect-tag read-only">"read-only"</span> })}
                            {scratch_only.map(|paths| view! {
                                <span class="command-effect">
                                    <span class="effect-tag read-only">"scratch"</span>
                                    {paths}
                                </span>
                            })}
                            {c.effects.into_iter().map(|e| {
                                let category = e.category.clone();
                                view! {
                                    <span class="command-effect">
                                        <span class="effect-tag" data-category=category>{e.category}</span>
                                        " "{e.why}
                                    </span>
                                }
                            }).collect_view()}
                            {c.unknown.then(|| view! {
                                <span class="command-effect">
                                    <span class="effect-tag unknown">"unknown"</span>
                                    " Countersign does not know what "<code>{c.command.clone()}</code>" does"
                                </span>
                            })}
                        </span>
                        <span class="muted decided-by">{c.decided_by}</span>
                    </li>
                }
            }).collect_view()}
        </ul>
    }
}

pub(crate) fn duration(secs: i64) -> String {
    let s = secs.unsigned_abs();
    let text = if s < 120 {
        format!("{s} s")
    } else if s < 7_200 {
        format!("{} min", s / 60)
    } else if s < 172_800 {
        format!("{} h", s / 3_600)
    } else {
        format!("{} d", s / 86_400)
    };
    if secs < 0 {
        format!("overdue by {text}")
    } else {
        text
    }
}

#[component]
pub(crate) fn RiskBadge(risk: Risk) -> impl IntoView {
    let class = format!("badge risk-{}", risk.as_str().to_ascii_lowercase());
    view! { <span class=class>{risk.as_str()}</span> }
}

/// `/approvals`: the pending list.
/// After hydration: refetch `data` whenever the server says something changed (`/events`).
#[allow(unused_variables)]
pub(crate) fn live_refresh<T>(data: Resource<T>)
where
    T: Send + Sync + Serialize + for<'de> Deserialize<'de> + 'static,
{
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        use wasm_bindgen::{closure::Closure, JsCast};
        let Ok(source) = web_sys::EventSource::new("/events") else {
            return;
        };
        use std::sync::atomic::{AtomicBool, Ordering};
        // When the page goes away (client-side navigation) the stream is closed at its next
        // message and the (disposed) resource is never touched again.
        let alive = std::sync::Arc::new(AtomicBool::new(true));
        {
            let alive = alive.clone();
            on_cleanup(move || alive.store(false, Ordering::Relaxed));
        }
        let stream = source.clone();
        let on_change = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |_| {
            if alive.load(Ordering::Relaxed) {
                data.refetch();
            } else {
                stream.close();
            }
        });
        source.set_onmessage(Some(on_change.as_ref().unchecked_ref()));
        // The handler lives as long as the stream (JavaScript owns both from here).
        on_change.forget();
        let _ = document_attr();
    });
}

#[cfg(feature = "hydrate")]
fn document_attr() -> Option<()> {
    let body = web_sys::window()?.document()?.body()?;
    body.set_attribute("data-live", "true").ok()
}
