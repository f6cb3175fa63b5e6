//! The page frame: brand, navigation, and the header's time-zone switch.

use leptos::prelude::*;
use leptos_router::components::A;

/// How timestamps are shown across the portal. Audit data is stored in UTC; people often
/// think in local time, so the header lets them switch. The switch needs the browser (it is
/// a hydrated control), which also makes it the portal's proof that hydration worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeDisplay {
    Utc,
    Local,
}

impl TimeDisplay {
    fn label(self) -> &'static str {
        match self {
            TimeDisplay::Utc => "UTC",
            TimeDisplay::Local => "local time",
        }
    }

    fn toggled(self) -> Self {
        match self {
            TimeDisplay::Utc => TimeDisplay::Local,
            TimeDisplay::Local => TimeDisplay::Utc,
        }
    }
}

pub(crate) fn provide_time_display() {
    provide_context(RwSignal::new(TimeDisplay::Utc));
}

/// The sections of the portal, in navigation order.
const SECTIONS: [(&str, &str); 6] = [
    ("/", "Dashboard"),
    ("/approvals", "Approvals"),
    ("/jobs", "Jobs"),
    ("/audit", "Audit"),
    ("/reports", "Reports"),
    ("/policies", "Policies"),
];

#[component]
pub fn Shell(children: Children) -> impl IntoView {
    // Effects run only in the browser, after hydration: tests and styles can rely on it.
    Effect::new(move |_| {
        if let Some(body) = document().body() {
            let _ = body.set_attribute("data-hydrated", "true");
        }
    });

    view! {
        <header class="topbar">
            <a class="brand" href="/">
                <span class="brand-mark" aria-hidden="true">"✓✓"</span>
                <span class="brand-name">{crate::PRODUCT}</span>
            </a>
            <nav class="nav" aria-label="Main">
                {SECTIONS
                    .iter()
                    .map(|(href, label)| view! { <A href=*href exact=true>{*label}</A> })
                    .collect_view()}
            </nav>
                        <TimeZoneSwitch/>
            <CurrentUser/>
        </header>
        <main class="content">{children()}</main>
        <footer class="footer">
            "Countersign " {env!("CARGO_PKG_VERSION")} " · every decision is recorded"
        </footer>
    }
}

/// The signed-in person and the sign-out button (a plain form: it works without WASM).
#[component]
fn CurrentUser() -> impl IntoView {
    let user = Resource::new(|| (), |_| crate::whoami());
    view! {
        <Suspense fallback=|| ()>
            {move || {
                user.get()
                    .and_then(Result::ok)
                    .flatten()
                    .map(|u| {
                        let roles = u.roles.join(", ");
                        view! {
                            <div class="user" data-testid="current-user">
                                <a class="user-name" href="/profile" data-testid="profile-link">{u.display_name}</a>
                                <span class="user-roles">{roles}</span>
                                <form method="post" action="/auth/logout">
                                    <button type="submit" class="link-button">"Sign out"</button>
                                </form>
                            </div>
                        }
                    })
            }}
        </Suspense>
    }
}

#[component]
fn TimeZoneSwitch() -> impl IntoView {
    let display =
        use_context::<RwSignal<TimeDisplay>>().unwrap_or_else(|| RwSignal::new(TimeDisplay::Utc));
    let label = move || format!("Times in {}", display.get().label());
    view! {
        <button
            type="button"
            class="tz-switch"
            data-testid="tz-switch"
            title="Switch between UTC and your local time"
            aria-pressed=move || (display.get() == TimeDisplay::Local).to_string()
            on:click=move |_| display.update(|d| *d = d.toggled())
        >
            {label}
        </button>
    }
}
