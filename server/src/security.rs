//! Browser-facing protections on every response and request: security headers, and a
//! same-origin rule for state-changing requests (CSRF). Refusals are audited.

use crate::store::{EventKind, NewAuditEvent};
use crate::AppState;
use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};

/// The policy for pages is set by the page itself, with the per-response nonce of its inline
/// hydration script (see `app::shell`); everything else (JSON, files, errors) gets this one.
pub const DEFAULT_CSP: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

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

/// Refuse cross-origin state-changing requests with 403, and audit the refusal.
pub async fn same_origin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(reason) = cross_origin(request.method(), request.headers()) else {
        return next.run(request).await;
    };
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
        "deny",
        &format!("{} {path} refused: {reason}", request.method()),
        "LOW",
    );
    event.context =
        serde_json::json!({ "path": path, "origin": origin, "method": request.method().as_str() })
            .to_string();
    if let Err(error) = state.audit.append(event).await {
        tracing::error!(%error, "could not audit a refused request");
    }
    (StatusCode::FORBIDDEN, "cross-origin request refused").into_response()
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
