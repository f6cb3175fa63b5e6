//! Browser-facing protections on every response and request: security headers (with
//! `Strict-Transport-Security` when the portal is served over https), and a same-origin rule for
//! state-changing requests (CSRF). Refusals are audited, within a budget ([`RefusalBudget`]) so
//! that unauthenticated clients cannot flood the audit trail. [`TrustedProxies`] tells which
//! peers' `X-Forwarded-For` is believed when a client's address matters.

use crate::config::TrustedProxies;
use crate::store::{AuditAction, EventKind, NewAuditEvent, Risk};
use crate::AppState;
use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use std::net::{IpAddr, SocketAddr};

/// The policy for pages is set by the page itself, with the per-response nonce of its inline
/// hydration script (see `app::shell`); everything else (JSON, files, errors) gets this one.
pub const DEFAULT_CSP: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// `Strict-Transport-Security` on every response when the public URL is https: browsers then
/// refuse plain http to this host for a year (not its subdomains, which may not be on https).
pub const HSTS: &str = "max-age=31536000";

/// Add the headers every response carries, without replacing a page's own CSP.
pub async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(DEFAULT_CSP));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=(), usb=()"),
    );
    response
}

/// Why a state-changing request is refused, if it is.
pub fn cross_origin(method: &Method, headers: &HeaderMap) -> Option<&'static str> {
    if matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) {
        return None;
    }
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return match site {
            "same-origin" | "none" => None,
            _ => Some("the request came from another site (Sec-Fetch-Site)"),
        };
    }
    if let Some(origin) = text("origin") {
        let host = text("host").unwrap_or_default();
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|authority| !host.is_empty() && authority.eq_ignore_ascii_case(host));
        return if same {
            None
        } else {
            Some("the request came from another origin (Origin)")
        };
    }
    // No browser provenance at all: fine for token-authenticated API clients, not for a cookie.
    if headers.contains_key(header::COOKIE) {
        return Some(
            "a cookie-authenticated request must show its origin (Origin or Sec-Fetch-Site)",
        );
    }
    None
}

/// Refuse cross-origin state-changing requests with 403, and audit the refusal. This is the
/// outermost layer that knows the configuration, so it also stamps `Strict-Transport-Security`
/// on every response (refusals included) when the public URL is https.
pub async fn same_origin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = match cross_origin(request.method(), request.headers()) {
        None => next.run(request).await,
        Some(reason) => {
            let event = cross_origin_refusal(&request, reason);
            append_refusal(&state, event).await;
            (StatusCode::FORBIDDEN, "cross-origin request refused").into_response()
        }
    };
    if state.https {
        response.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    response
}

/// The audit row of a refused cross-origin request (logged too).
fn cross_origin_refusal(request: &Request, reason: &str) -> NewAuditEvent {
    let origin = request
        .headers()
        .get("origin")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let path = request.uri().path().to_string();
    tracing::warn!(%path, %origin, reason, "cross-origin request refused");
    let mut event = NewAuditEvent::new(
        EventKind::PortalAction,
        "anonymous",
        "countersign",
        "csrf.refused",
        AuditAction::Deny,
        &format!("{} {path} refused: {reason}", request.method()),
        Risk::Low,
    );
    event.context =
        serde_json::json!({ "path": path, "origin": origin, "method": request.method().as_str() })
            .to_string();
    event
}

impl TrustedProxies {
    /// The address a request comes from: its peer, unless the peer is a trusted proxy; then
    /// the right-most `X-Forwarded-For` address that is not itself a trusted proxy (each proxy
    /// appends the address it was reached from, so everything left of that is the client's to
    /// invent). Should the chain hold something that is no address before an untrusted hop, the
    /// last trusted hop read is the answer.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let hops: Vec<Option<IpAddr>> = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|value| match value.to_str() {
                Ok(text) => text.split(',').map(forwarded_hop).collect::<Vec<_>>(),
                Err(_) => vec![None],
            })
            .collect();
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            let Some(hop) = hop else {
                return client;
            };
            client = hop.to_canonical();
            if !self.contains(client) {
                return client;
            }
        }
        client
    }
}

/// One entry of `X-Forwarded-For`: an address, perhaps with a port (`192.0.2.7:4711`,
/// `[2001:db8::7]:4711`) or in brackets.
fn forwarded_hop(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            text.strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok())
        })
}

/// How many refusals of unauthenticated requests (bad tokens, forged cookies, cross-origin
/// posts, failed sign-ins) are audited one by one per window; the rest of a window are counted
/// and written as one summary row when it ends. Anyone can send such requests, so without a
/// bound they could fill the disk and slow every decision's audit write.
#[derive(Debug)]
pub struct RefusalBudget {
    per_window: u32,
    window: std::time::Duration,
    state: std::sync::Mutex<BudgetWindow>,
}

#[derive(Debug)]
struct BudgetWindow {
    started: std::time::Instant,
    recorded: u32,
    suppressed: u64,
}

/// What to do with one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Write its row.
    pub record: bool,
    /// A window just ended with this many refusals counted but not written: write the summary.
    pub ended_with: Option<u64>,
}

impl RefusalBudget {
    /// `per_minute` rows a minute; 0 records every refusal.
    pub fn per_minute(per_minute: u32) -> RefusalBudget {
        RefusalBudget::new(per_minute, std::time::Duration::from_secs(60))
    }

    pub fn new(per_window: u32, window: std::time::Duration) -> RefusalBudget {
        RefusalBudget {
            per_window,
            window,
            state: std::sync::Mutex::new(BudgetWindow {
                started: std::time::Instant::now(),
                recorded: 0,
                suppressed: 0,
            }),
        }
    }

    pub fn window(&self) -> std::time::Duration {
        self.window
    }

    /// Close the window if it has ended: how many refusals it counted without writing them.
    pub fn roll(&self, now: std::time::Instant) -> Option<u64> {
        let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(w.started) < self.window {
            return None;
        }
        let suppressed = std::mem::take(&mut w.suppressed);
        w.started = now;
        w.recorded = 0;
        (suppressed > 0).then_some(suppressed)
    }

    /// One refusal at `now`.
    pub fn admit(&self, now: std::time::Instant) -> Admission {
        let ended_with = self.roll(now);
        if self.per_window == 0 {
            return Admission {
                record: true,
                ended_with,
            };
        }
        let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let record = w.recorded < self.per_window;
        if record {
            w.recorded += 1;
        } else {
            w.suppressed += 1;
        }
        Admission { record, ended_with }
    }

    /// The summary row of a window that counted `suppressed` refusals without writing them.
    pub fn summary(&self, suppressed: u64) -> NewAuditEvent {
        let mut event = NewAuditEvent::new(
            EventKind::PortalAction,
            "anonymous",
            "countersign",
            "refusals.suppressed",
            AuditAction::Deny,
            &format!(
                "{suppressed} more refused requests from unauthenticated clients in {} s were over \
                 the audit budget ({} a window): counted here, not recorded one by one",
                self.window.as_secs(),
                self.per_window
            ),
            Risk::Low,
        );
        event.context = serde_json::json!({
            "suppressed": suppressed,
            "budget": self.per_window,
            "window_secs": self.window.as_secs(),
        })
        .to_string();
        event
    }
}

/// Audit the refusal of an unauthenticated request, within the budget. The refusal stands
/// whether or not its row is written.
pub async fn append_refusal(state: &AppState, event: NewAuditEvent) {
    let admission = state.refusal_budget.admit(std::time::Instant::now());
    append_summary(state, admission.ended_with).await;
    if admission.record {
        if let Err(error) = state.audit.append(event).await {
            tracing::error!(%error, "could not audit a refused request");
        }
    } else {
        state.metrics.refusal_suppressed();
    }
}

/// Write the summary of a window that ended without a later refusal to carry it.
pub fn spawn_refusal_summaries(state: &AppState) {
    let state = state.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(state.refusal_budget.window());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let ended_with = state.refusal_budget.roll(std::time::Instant::now());
            append_summary(&state, ended_with).await;
        }
    });
}

/// Write the summary row of a window that ended with `suppressed` refusals counted, if any.
async fn append_summary(state: &AppState, suppressed: Option<u64>) {
    let Some(suppressed) = suppressed else {
        return;
    };
    if let Err(error) = state
        .audit
        .append(state.refusal_budget.summary(suppressed))
        .await
    {
        tracing::error!(%error, "could not audit the refusals over budget");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn the_refusal_budget_records_so_many_a_window_and_counts_the_rest() {
        let budget = RefusalBudget::new(3, std::time::Duration::from_secs(60));
        let start = std::time::Instant::now();
        let admitted: Vec<bool> = (0..5).map(|_| budget.admit(start).record).collect();
        assert_eq!(admitted, [true, true, true, false, false]);
        // The next window: the first refusal carries the count of the last one.
        let later = start + std::time::Duration::from_secs(61);
        assert_eq!(
            budget.admit(later),
            Admission {
                record: true,
                ended_with: Some(2)
            }
        );
        assert_eq!(budget.roll(later), None, "counted once");
        // A window that ends quietly is closed by the ticker.
        for _ in 0..4 {
            budget.admit(later);
        }
        assert_eq!(
            budget.roll(later + std::time::Duration::from_secs(61)),
            Some(2)
        );
        let summary = budget.summary(2);
        assert_eq!(summary.operation, "refusals.suppressed");
        assert!(summary
            .decision_reason
            .starts_with("2 more refused requests"));
        // No budget: everything is recorded.
        let open = RefusalBudget::new(0, std::time::Duration::from_secs(60));
        assert!((0..1_000).all(|_| open.admit(start).record));
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn forwarded(values: &[&'static str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append("x-forwarded-for", HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn trusted_proxies_are_addresses_and_cidr_ranges() {
        let proxies = TrustedProxies::parse(" 10.0.0.0/8, 192.168.1.7 ,fd00::/8, ::1,")
            .expect("a valid list");
        assert!(!proxies.is_empty());
        for yes in [
            "10.1.2.3",
            "10.255.255.255",
            "192.168.1.7",
            "fd12::1",
            "::1",
        ] {
            assert!(proxies.contains(ip(yes)), "{yes}");
        }
        for no in ["11.0.0.1", "192.168.1.8", "fe80::1", "::2", "127.0.0.1"] {
            assert!(!proxies.contains(ip(no)), "{no}");
        }
        // An IPv4-mapped IPv6 peer (a dual-stack listener) is its IPv4 address, either way.
        assert!(proxies.contains(ip("::ffff:10.9.8.7")));
        let mapped = TrustedProxies::parse("::ffff:172.16.0.0/108").expect("mapped range");
        assert!(mapped.contains(ip("172.16.5.5")) && !mapped.contains(ip("172.32.0.1")));
        // Host bits in a range are ignored; /0 is everything of its family.
        let all = TrustedProxies::parse("10.1.2.3/8, 0.0.0.0/0").expect("valid");
        assert!(all.contains(ip("203.0.113.9")) && !all.contains(ip("2001:db8::1")));
        assert!(TrustedProxies::parse("").expect("empty").is_empty());
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/x",
            "proxy.internal",
            "10.0.0",
            "10.0.0.1/",
            "1.2.3.4:80",
        ] {
            let error = TrustedProxies::parse(bad).expect_err(bad);
            assert!(error.0.contains(bad), "{bad}: {error}");
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").expect("valid");
        // An untrusted peer's claims are ignored: it is the client.
        let spoofed = forwarded(&["203.0.113.5"]);
        assert_eq!(
            proxies.client(ip("198.51.100.1"), &spoofed),
            ip("198.51.100.1")
        );
        assert_eq!(
            TrustedProxies::default().client(ip("10.0.0.1"), &spoofed),
            ip("10.0.0.1"),
            "nobody trusted: the header is ignored"
        );
        // A trusted proxy: the right-most address that is not a trusted proxy.
        assert_eq!(proxies.client(ip("10.0.0.1"), &spoofed), ip("203.0.113.5"));
        let chain = forwarded(&["1.1.1.1, 203.0.113.5, 10.0.0.9"]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &chain), ip("203.0.113.5"));
        // Several headers are one list, in order; ports and brackets are allowed.
        let split = forwarded(&["1.1.1.1", "203.0.113.6:4711, 10.2.2.2"]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &split), ip("203.0.113.6"));
        let v6 = forwarded(&["[2001:db8::7]:443"]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &v6), ip("2001:db8::7"));
        let bracketed = forwarded(&["[2001:db8::8]"]);
        assert_eq!(
            proxies.client(ip("10.0.0.1"), &bracketed),
            ip("2001:db8::8")
        );
        // No header, or only trusted hops: the left-most trusted hop.
        assert_eq!(
            proxies.client(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
        let internal = forwarded(&["10.3.3.3, 10.4.4.4"]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &internal), ip("10.3.3.3"));
        // Garbage before any untrusted hop: the last trusted hop read, never the garbage.
        let garbage = forwarded(&["203.0.113.5, unknown, 10.4.4.4"]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &garbage), ip("10.4.4.4"));
        let empty = forwarded(&[""]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &empty), ip("10.0.0.1"));
    }

    #[test]
    fn safe_methods_always_pass() {
        assert_eq!(
            cross_origin(&Method::GET, &headers(&[("sec-fetch-site", "cross-site")])),
            None
        );
    }

    #[test]
    fn posts_must_be_same_origin() {
        let post = Method::POST;
        assert_eq!(
            cross_origin(&post, &headers(&[("sec-fetch-site", "same-origin")])),
            None
        );
        assert!(cross_origin(&post, &headers(&[("sec-fetch-site", "cross-site")])).is_some());
        assert!(cross_origin(&post, &headers(&[("sec-fetch-site", "same-site")])).is_some());
        assert_eq!(
            cross_origin(
                &post,
                &headers(&[
                    ("origin", "http://127.0.0.1:3000"),
                    ("host", "127.0.0.1:3000")
                ])
            ),
            None
        );
        assert!(cross_origin(
            &post,
            &headers(&[
                ("origin", "http://evil.example"),
                ("host", "127.0.0.1:3000")
            ])
        )
        .is_some());
        assert!(cross_origin(
            &post,
            &headers(&[("origin", "null"), ("host", "127.0.0.1:3000")])
        )
        .is_some());
        assert!(cross_origin(&post, &headers(&[("cookie", "id=1")])).is_some());
        assert_eq!(
            cross_origin(&post, &headers(&[("authorization", "Bearer x")])),
            None
        );
        assert!(cross_origin(
            &Method::DELETE,
            &headers(&[("origin", "https://evil.example"), ("host", "x")])
        )
        .is_some());
    }
}
