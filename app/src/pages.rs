//! The portal's sections. Each is a placeholder until its issue fills it; each says what it
//! will hold so that a visitor knows where things are going.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

#[component]
fn Section(title: &'static str, lead: &'static str, children: Children) -> impl IntoView {
    view! {
        <Title text=title/>
        <section class="page">
            <h1>{title}</h1>
            <p class="lead">{lead}</p>
            {children()}
        </section>
    }
}

/// `/profile`: who am I — name, roles and the capabilities the enforcer checks.
#[component]
pub fn Profile() -> impl IntoView {
    let user = Resource::new(|| (), |_| crate::whoami());
    view! {
        <Section title="Profile" lead="Who you are here: your roles and the capabilities the enforcer checks.">
            <Suspense fallback=|| ()>
                {move || user.get().map(|result| match result.ok().flatten() {
                    None => view! { <p class="muted">"You are not signed in."</p> }.into_any(),
                    Some(u) => {
                        let list = |items: Vec<String>| {
                            if items.is_empty() {
                                view! { <span class="muted">"none"</span> }.into_any()
                            } else {
                                view! { <ul>{items.into_iter().map(|i| view! { <li><code>{i}</code></li> }).collect_view()}</ul> }.into_any()
                            }
                        };
                        view! {
                            <dl class="facts" data-testid="profile">
                                <dt>"Name"</dt><dd>{u.display_name}</dd>
                                <dt>"User name"</dt><dd data-testid="profile-username">{u.username}</dd>
                                <dt>"Roles"</dt><dd data-testid="profile-roles">{list(u.roles)}</dd>
                                <dt>"Capabilities"</dt><dd data-testid="profile-capabilities">{list(u.capabilities)}</dd>
                            </dl>
                        }.into_any()
                    }
                })}
            </Suspense>
        </Section>
    }
}

#[component]
pub fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    {
        if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
            response.set_status(http::StatusCode::NOT_FOUND);
        }
    }
    view! {
        <Section title="Not found" lead="There is no page at this address.">
            <a href="/">"Back to the dashboard"</a>
        </Section>
    }
}

/// Sign-in: a link to the identity provider (Keycloak) when one is configured, and the
/// local-account form when local sign-in is on. Plain links and forms: they work before (and
/// without) WASM.
#[component]
pub fn SignIn() -> impl IntoView {
    let query = use_query_map();
    let options = Resource::new(|| (), |_| crate::sign_in_options());
    let message = move || {
        query.with(|q| {
            if q.get("signed_out").is_some() {
                return Some(("notice", "You have signed out."));
            }
            q.get("error").map(|e| match e.as_str() {
                "throttled" => (
                    "error",
                    "Too many failed sign-ins from your address. Wait a few minutes.",
                ),
                "locked" => (
                    "error",
                    "This account is locked for a while after repeated failures.",
                ),
                "unavailable" => (
                    "error",
                    "Sign-in is unavailable right now. Try again shortly.",
                ),
                "idp_unavailable" => (
                    "error",
                    "The identity provider cannot be reached right now. Try again shortly; \
                     if you are already signed in elsewhere, that session still works.",
                ),
                "oidc" => (
                    "error",
                    "Sign-in through the identity provider did not succeed. Start again.",
                ),
                "oidc_denied" => ("error", "The identity provider did not sign you in."),
                "local_disabled" => (
                    "error",
                    "Password sign-in is switched off here. Use your organization's sign-in.",
                ),
                _ => ("error", "Unknown user or wrong password."),
            })
        })
    };
    let next = move || query.with(|q| q.get("next").unwrap_or_else(|| "/".to_string()));
    view! {
        <Title text="Sign in"/>
        <section class="page sign-in">
            <h1>"Sign in"</h1>
            {move || message().map(|(kind, text)| view! { <p class=kind role="alert">{text}</p> })}
                        <Suspense fallback=|| ()>
                {move || {
                    options.get().and_then(Result::ok).map(|o| {
                        let provider = o.provider.clone().map(|name| {
                            let href = move || format!("/auth/login?next={}", crate::encode_query(&next()));
                            view! {
                                <a class="button primary" id="sign-in-provider" href=href rel="external">
                                    {format!("Sign in with {name}")}
                                </a>
                            }
                        });
                        let local = o.local.then(|| view! {
                            <form method="post" action="/auth/login" class="sign-in-form">
                                <label>"User name" <input name="username" id="username" autocomplete="username" required/></label>
                                <label>"Password" <input name="password" id="password" type="password" autocomplete="current-password" required/></label>
                                <input type="hidden" name="next" value=next/>
                                <button type="submit" id="sign-in">"Sign in"</button>
                            </form>
                        });
                        view! { {provider} {local} }
                    })
                }}
            </Suspense>
        </section>
    }
}
