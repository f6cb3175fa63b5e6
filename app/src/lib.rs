//! The Countersign approval portal: the page shell, navigation and routes.
//!
//! Rendered on the server (feature `ssr`) and hydrated in the browser (feature `hydrate`).
//! Server functions stay thin: they fetch a service from context and call it.

pub mod error;
mod layout;
mod pages;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, Link, Meta, MetaTags, Stylesheet, Title};
use leptos_router::{
    components::{Route, Router, Routes},
    path,
};

pub use error::AppError;

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
    let policy = format!(
        "default-src 'self'; script-src 'self'{script_nonce} 'wasm-unsafe-eval'; style-src 'self'; \
         img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; \
         form-action 'self'; frame-ancestors 'none'"
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
                    <Route path=path!("") view=pages::Dashboard/>
                    <Route path=path!("/approvals") view=pages::Approvals/>
                    <Route path=path!("/jobs") view=pages::Jobs/>
                    <Route path=path!("/audit") view=pages::Audit/>
                    <Route path=path!("/reports") view=pages::Reports/>
                    <Route path=path!("/policies") view=pages::Policies/>
                </Routes>
            </layout::Shell>
        </Router>
    }
}
