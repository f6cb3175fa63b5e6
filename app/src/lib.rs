//! The Countersign approval portal: the page shell, navigation and routes.
//!
//! Rendered on the server (feature `ssr`) and hydrated in the browser (feature `hydrate`).
//! Server functions stay thin: they fetch a service from context and call it.

pub mod approvals;
pub mod audit;
pub mod components;
pub mod dashboard;
pub mod error;
pub mod grants;
pub mod jobs;
mod layout;
mod pages;
pub mod policies;
pub mod reports;
pub mod service;
pub mod views;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, Link, Meta, MetaTags, Stylesheet, Title};
use leptos_router::{
    components::{Route, Router, Routes},
    path, SsrMode,
};

pub use error::AppError;

use serde::{Deserialize, Serialize};

/// The signed-in person, as the portal shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    pub username: String,
    pub display_name: String,
    pub roles: Vec<String>,
    /// The enforcer capabilities the person holds (what they may approve).
    pub capabilities: Vec<String>,
}

/// How people sign in here (the server puts it in context for each request).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthOptions {
    /// The identity provider's name (e.g. Keycloak) when one is configured.
    pub provider: Option<String>,
    /// Its origin: the sign-out form is redirected there (RP-initiated logout).
    pub provider_origin: Option<String>,
    /// Whether local accounts may sign in with a password.
    pub local: bool,
}

/// The ways to sign in, for the sign-in page.
#[server(endpoint = "sign_in_options")]
pub async fn sign_in_options() -> Result<AuthOptions, AppError> {
    Ok(use_context::<AuthOptions>().unwrap_or_default())
}

/// Who is signed in (the server puts them in context for each request).
#[server(endpoint = "whoami")]
pub async fn whoami() -> Result<Option<UserView>, AppError> {
    Ok(use_context::<UserView>())
}

/// Percent-encode a value for a URL query (a `next=` path, for instance). `/` stays as it is.
/// Shared by the sign-in page and the server's redirects.
pub fn encode_query(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The product name shown in titles and the header.
pub const PRODUCT: &str = "Countersign";

/// The HTML document the server renders around [`App`].
pub fn shell(options: LeptosOptions) -> impl IntoView {
    #[cfg(feature = "ssr")]
    set_page_csp();
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The page's Content-Security-Policy: scripts only from this origin plus the page's own inline
/// hydration script (by its per-response nonce), wasm compilation allowed, nothing framed.
#[cfg(feature = "ssr")]
fn set_page_csp() {
    use leptos::nonce::use_nonce;
    let Some(response) = use_context::<leptos_axum::ResponseOptions>() else {
        return;
    };
    let script_nonce = use_nonce()
        .map(|n| format!(" 'nonce-{n}'"))
        .unwrap_or_default();
    // Signing out redirects the sign-out form to the identity provider's end-session endpoint.
    let provider = use_context::<AuthOptions>()
        .and_then(|o| o.provider_origin)
        .filter(|o| o.starts_with("http") && !o.contains(|c: char| c.is_whitespace() || c == ';'))
        .map(|o| format!(" {o}"))
        .unwrap_or_default();
    let policy = format!(
        "default-src 'self'; script-src 'self'{script_nonce} 'wasm-unsafe-eval'; style-src 'self'; \
         img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; \
         form-action 'self'{provider}; frame-ancestors 'none'"
    );
    if let Ok(value) = http::HeaderValue::from_str(&policy) {
        response.insert_header(http::header::CONTENT_SECURITY_POLICY, value);
    }
}

/// The portal: header, navigation and one route per section.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    layout::provide_time_display();

    view! {
        <Stylesheet id="countersign" href="/pkg/countersign.css"/>
        <Link rel="icon" type_="image/svg+xml" href="/favicon.svg"/>
        <Meta name="description" content="Countersign: approvals and audit for AI-driven IT administration"/>
        <Title formatter=|page: String| {
            if page.is_empty() { PRODUCT.to_string() } else { format!("{page} · {PRODUCT}") }
        }/>
        <Router>
            <layout::Shell>
                <Routes fallback=pages::NotFound>
                    <Route path=path!("") view=dashboard::Dashboard ssr=SsrMode::InOrder/>
                    <Route path=path!("/approvals") view=approvals::Approvals ssr=SsrMode::InOrder/>
                    <Route path=path!("/approvals/:id") view=approvals::ApprovalPage ssr=SsrMode::InOrder/>
                    <Route path=path!("/jobs") view=jobs::Jobs ssr=SsrMode::InOrder/>
                    <Route path=path!("/jobs/:id") view=jobs::JobPage ssr=SsrMode::InOrder/>
                    <Route path=path!("/audit") view=audit::Audit ssr=SsrMode::InOrder/>
                    <Route path=path!("/audit/:seq") view=audit::AuditRowPage ssr=SsrMode::InOrder/>
                    <Route path=path!("/reports") view=reports::Reports ssr=SsrMode::InOrder/>
                    <Route path=path!("/policies") view=policies::Policies ssr=SsrMode::InOrder/>
                    <Route path=path!("/grants") view=grants::Grants ssr=SsrMode::InOrder/>
                    <Route path=path!("/sign-in") view=pages::SignIn ssr=SsrMode::InOrder/>
                    <Route path=path!("/profile") view=pages::Profile ssr=SsrMode::InOrder/>
                </Routes>
            </layout::Shell>
        </Router>
    }
}
