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

/// `2026-12-01T18:35:12Z` (or with fractional seconds) as `2026-12-01 18:35:12 UTC`; any other
/// text is shown as it is.
fn utc_text(at: &str) -> String {
    match at.strip_suffix('Z') {
        Some(rest) if rest.len() >= 19 && rest.as_bytes().get(10) == Some(&b'T') => {
            format!("{} {} UTC", &rest[..10], &rest[11..])
        }
        _ => at.to_string(),
    }
}

/// The same instant in the browser's time zone, with its offset (`2026-12-01 19:35:12 +01:00`).
#[cfg(feature = "hydrate")]
fn local_text(at: &str) -> Option<String> {
    let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_str(at));
    let millis = date.get_time();
    if millis.is_nan() {
        return None;
    }
    // getTimezoneOffset is UTC minus local, in minutes.
    let offset = -(date.get_timezone_offset() as i64);
    let (sign, offset) = if offset < 0 {
        ('-', -offset)
    } else {
        ('+', offset)
    };
    let fraction = if at.contains('.') {
        format!(".{:03}", date.get_milliseconds())
    } else {
        String::new()
    };
    Some(format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}{fraction} {sign}{:02}:{:02}",
        date.get_full_year(),
        date.get_month() + 1,
        date.get_date(),
        date.get_hours(),
        date.get_minutes(),
        date.get_seconds(),
        offset / 60,
        offset % 60,
    ))
}

#[cfg(not(feature = "hydrate"))]
fn local_text(_at: &str) -> Option<String> {
    None
}

/// A timestamp (RFC 3339, UTC). Rendered in UTC on the server and before hydration; once the
/// page has hydrated, in the viewer's own time zone unless they switch the header to UTC. The
/// UTC time is always the tooltip, and the exact instant the `datetime` attribute.
#[component]
pub fn When(#[prop(into)] at: String) -> impl IntoView {
    let display = use_context::<RwSignal<TimeDisplay>>();
    let utc = utc_text(&at);
    let title = utc.clone();
    let iso = at.clone();
    // Both forms are drawn in a fixed-pitch face and the element reserves the longer one (a
    // `+hh:mm` offset is three characters longer than ` UTC`; the style sheet sizes both
    // shapes, since the CSP allows no inline styles), so showing the viewer's zone after
    // hydration moves nothing on the page.
    let class = if utc.contains('.') { "when ms" } else { "when" };
    let text = move || match display.map(|d| d.get()) {
        Some(TimeDisplay::Local) => local_text(&at).unwrap_or_else(|| utc.clone()),
        _ => utc.clone(),
    };
    view! { <time class=class datetime=iso title=title>{text}</time> }
}

/// The sections of the portal, in navigation order.
const SECTIONS: [(&str, &str); 7] = [
    ("/", "Dashboard"),
    ("/approvals", "Approvals"),
    ("/jobs", "Jobs"),
    ("/audit", "Audit"),
    ("/reports", "Reports"),
    ("/policies", "Policies"),
    ("/grants", "Grants"),
];

#[component]
pub fn Shell(children: Children) -> impl IntoView {
    // Effects run only in the browser, after hydration: tests and styles can rely on it.
    let display = use_context::<RwSignal<TimeDisplay>>();
    Effect::new(move |_| {
        if let Some(body) = document().body() {
            let _ = body.set_attribute("data-hydrated", "true");
        }
        // Now that the browser runs the page, times can be shown in the viewer's zone.
        if let Some(display) = display {
            display.set(TimeDisplay::Local);
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
            // The signed-in person comes before the time-zone switch: the page streams in order,
            // and the browser may paint the header before the person's block has arrived. With
            // the switch last, pinned to the right by the growing navigation, that block's
            // arrival moves nothing already painted; before it, the switch would be pushed left.
            <CurrentUser/>
            <TimeZoneSwitch/>
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

#[cfg(test)]
mod tests {
    use super::utc_text;

    #[test]
    fn utc_text_reads_rfc3339_utc_and_leaves_other_text_alone() {
        assert_eq!(utc_text("2026-12-01T18:35:12Z"), "2026-12-01 18:35:12 UTC");
        assert_eq!(
            utc_text("2026-12-01T18:35:12.042Z"),
            "2026-12-01 18:35:12.042 UTC"
        );
        assert_eq!(utc_text("yesterday"), "yesterday");
        assert_eq!(
            utc_text("2026-12-01T18:35:12+01:00"),
            "2026-12-01T18:35:12+01:00"
        );
        assert_eq!(utc_text("Z"), "Z");
    }
}
