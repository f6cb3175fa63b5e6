//! The attack suite, on the real binary over loopback with the test OpenID provider: forged and
//! misdirected tokens, forged and replayed session cookies, cross-origin posts, votes that must
//! not count, and SQL / HTML injection in every field. Each is refused or neutralised with a
//! clear error, and the refusals are in the audit trail.

mod common;

use common::binary::{Env, Server};
use common::provider::{self, location, Issue, Provider};
use serde_json::{json, Value};
use server::store::{AnyStore, AuditRecord, EventKind, Store};
use server::{Config, Database};
use std::time::{Duration, Instant};

/// Test jobs that wait for people: `quick` (one approval, expires after 2 s), `single` (one
/// approval) and `double` (two approvals).
const POLICY: &str = r#"
name = "attack-test"
[approvals]
approver_role = "approver"
[approvals.risk.LOW]
quorum = 1
request_ttl = "2s"
approval_window = "1h"
[approvals.risk.MEDIUM]
quorum = 1
request_ttl = "1h"
approval_window = "1h"
[approvals.risk.HIGH]
quorum = 2
request_ttl = "1h"
approval_window = "1h"

[tools.deploy]
description = "jobs for the attack suite"
[tools.deploy.operations.quick]
risk = "LOW"
interactive_only = true
requires = ["local-shell"]
[tools.deploy.operations.single]
risk = "MEDIUM"
interactive_only = true
requires = ["local-shell"]
[tools.deploy.operations.double]
risk = "HIGH"
interactive_only = true
requires = ["local-shell"]
"#;

/// The answer is a refusal with this status and error code, and its message says `says`.
fn refused((status, body): &(u16, Value), (want_status, want_code): (u16, &str), says: &str) {
    assert_eq!(
        (*status, body["error"].as_str()),
        (want_status, Some(want_code)),
        "{body}"
    );
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "{says}: {body}");
}

struct Suite {
    env: Env,
    provider: Provider,
    server: Server,
    /// A client that does not follow redirects.
    web: reqwest::Client,
}

impl Suite {
    /// The server with the identity provider configured, on the default policy or `policy`.
    async fn start(policy: Option<&str>) -> Suite {
        let env = Env::new().await;
        let provider = Provider::start().await;
        let mut settings =
            provider.settings(&[("COUNTERSIGN_MAINTENANCE_INTERVAL_SECS", "1".to_string())]);
        if let Some(text) = policy {
            let file = env.dir.path().join("policy.toml");
            std::fs::write(&file, text).expect("policy");
            settings.push(("COUNTERSIGN_POLICY_FILE", file.display().to_string()));
        }
        let server = env.serve_with(&env.url, &settings).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.ready().await.1["checks"]["identity_provider"] != "ok" {
            assert!(Instant::now() < deadline, "the provider was not discovered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let web = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        Suite {
            env,
            provider,
            server,
            web,
        }
    }

    async fn get(&self, path: &str, cookie: &str) -> reqwest::Response {
        let mut request = self.web.get(self.server.url(path));
        if !cookie.is_empty() {
            request = request.header(reqwest::header::COOKIE, cookie);
        }
        request.send().await.expect("answer")
    }

    /// `GET /api/v1/whoami` with a bearer token: status and body.
    async fn whoami(&self, token: &str) -> (u16, Value) {
        let answer = self
            .web
            .get(self.server.url("/api/v1/whoami"))
            .bearer_auth(token)
            .send()
            .await
            .expect("whoami");
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or_default())
    }

    /// Ask for a decision as the suite's service token; the answer.
    async fn ask(&self, body: Value) -> Value {
        let (status, answer) = self
            .server
            .post(&self.env.token, "/api/v1/decisions", &body)
            .await;
        assert_eq!(status, 200, "{answer}");
        answer
    }

    /// A job waiting for approval: its id.
    async fn job(&self, operation: &str) -> String {
        let answer = self
            .ask(json!({ "tool": "deploy", "operation": operation, "args": { "n": 1 } }))
            .await;
        assert_eq!(answer["action"], "require_approval", "{answer}");
        answer["job_id"].as_str().expect("job id").to_string()
    }

    /// `who` votes over the API with their own access token: status and body.
    async fn vote(&self, token: &str, job: &str, body: Value) -> (u16, Value) {
        self.server
            .post(token, &format!("/api/v1/jobs/{job}/votes"), &body)
            .await
    }

    /// `GET /api/v1/audit/export` in `format` with one filter, as `token`: status and body.
    async fn export(&self, token: &str, format: &str, filter: &str, value: &str) -> (u16, String) {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("format", format)
            .append_pair(filter, value)
            .finish();
        let answer = self
            .web
            .get(self.server.url(&format!("/api/v1/audit/export?{query}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("export");
        let status = answer.status().as_u16();
        (status, answer.text().await.unwrap_or_default())
    }

    /// The whole audit trail.
    async fn trail(&self) -> Vec<AuditRecord> {
        trail_of(&self.env).await
    }

    fn verify(&self) {
        let (ok, report) = self.env.verify();
        assert!(ok, "{report}");
    }
}

/// The whole audit trail of the test's database.
async fn trail_of(env: &Env) -> Vec<AuditRecord> {
    let db = Database::connect(&Config {
        database_url: env.url.clone(),
        ..Config::default()
    })
    .await
    .expect("connect");
    let store = AnyStore::new(&db);
    let (mut rows, mut after) = (Vec::new(), 0);
    loop {
        let page = store.audit_page(after, 5_000).await.expect("audit");
        let Some(last) = page.last() else { break };
        after = last.seq;
        rows.extend(page);
    }
    db.close().await;
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_misdirected_tokens_are_refused_and_audited() {
    let suite = Suite::start(None).await;
    let issuer = suite.provider.issuer.clone();
    let now = provider::now();
    let claims = |changes: Value| {
        let mut claims = json!({
            "iss": issuer, "sub": "mallory", "aud": ["countersign"], "azp": provider::CLIENT,
            "exp": now + 300, "iat": now, "preferred_username": "mallory",
            "realm_access": { "roles": ["approver", "admin"] },
        });
        if let (Some(c), Some(changes)) = (claims.as_object_mut(), changes.as_object()) {
            c.extend(changes.clone());
        }
        claims
    };
    let good = provider::sign("k-one", &claims(json!({})));
    assert_eq!(
        suite.whoami(&good).await.0,
        200,
        "the well-formed token works"
    );
    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let payload = b64(&claims(json!({})));
    let (header, _, signature) = {
        let mut parts = good.split('.');
        (
            parts.next().unwrap_or_default().to_string(),
            parts.next().unwrap_or_default().to_string(),
            parts.next().unwrap_or_default().to_string(),
        )
    };
    let more_rights = b64(&claims(
        json!({ "realm_access": { "roles": ["admin", "root"] } }),
    ));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "alg none",
            format!(
                "{}.{payload}.",
                b64(&json!({ "alg": "none", "kid": "k-one" }))
            ),
            // `none` is no algorithm the JWT library knows: refused before any key is looked at.
            "not a well-formed JWT",
        ),
        (
            "HS256 with the public key as secret",
            format!(
                "{}.{payload}.{signature}",
                b64(&json!({ "alg": "HS256", "kid": "k-one" }))
            ),
            "algorithm is not accepted",
        ),
        (
            "payload swapped under a valid signature",
            format!("{header}.{more_rights}.{signature}"),
            "signature is invalid",
        ),
        (
            "expired",
            provider::sign("k-one", &claims(json!({ "exp": now - 600 }))),
            "has expired",
        ),
        (
            "not yet valid",
            provider::sign("k-one", &claims(json!({ "nbf": now + 600 }))),
            "not valid yet",
        ),
        (
            "another issuer",
            provider::sign(
                "k-one",
                &claims(json!({ "iss": "http://127.0.0.1:9/realms/evil" })),
            ),
            "another issuer",
        ),
        (
            // Neither `aud` nor Keycloak's `azp` (the client that obtained it) names Countersign.
            "another audience",
            provider::sign(
                "k-one",
                &claims(json!({ "aud": ["some-other-app"], "azp": "some-other-app" })),
            ),
            "not meant for Countersign",
        ),
        (
            "an unpublished key",
            provider::sign("k-rogue", &claims(json!({}))),
            "not signed by a known key",
        ),
        (
            "not a JWT",
            "<script>alert(1)</script>".to_string(),
            "not a well-formed JWT",
        ),
        (
            "an unknown API token",
            "cs_0000000000000000000000000000000000000000".to_string(),
            "invalid or revoked API token",
        ),
    ];
    for (what, token, says) in &cases {
        let (status, body) = suite.whoami(token).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthenticated")),
            "{what}: {body}"
        );
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{what}: {message}");
        assert!(
            !message.contains("mallory") && !message.contains("script"),
            "{what}: {message}"
        );
    }
    let refused = suite
        .trail()
        .await
        .into_iter()
        .filter(|r| {
            r.event.kind == EventKind::PortalAction
                && r.event.decision_action == "deny"
                && r.event.decision_reason.starts_with("API request refused")
        })
        .count();
    assert_eq!(refused, cases.len(), "every refusal is audited");
    suite.verify();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_replayed_session_cookies_and_cross_origin_posts_are_refused() {
    let suite = Suite::start(None).await;
    let session = provider::sign_in(&suite.web, &suite.server.base, &suite.provider, "alice").await;
    assert_eq!(suite.get("/approvals", &session).await.status(), 200);
    let to_sign_in = |answer: &reqwest::Response| {
        answer.status() == 303 && location(answer).starts_with("/sign-in")
    };

    // A forged session id is nobody's session.
    let (name, _) = session.split_once('=').expect("name=value");
    let forged = format!("{name}=AAAAAAAAAAAAAAAAAAAAAA");
    assert!(to_sign_in(&suite.get("/approvals", &forged).await));
    let api = suite
        .web
        .post(suite.server.url("/api/cast_vote"))
        .header(reqwest::header::COOKIE, &forged)
        .header("sec-fetch-site", "same-origin")
        .form(&[("job_id", "x"), ("verdict", "approve")])
        .send()
        .await
        .expect("server function");
    assert_ne!(api.status(), 200, "a forged session casts no vote");

    // A cross-origin POST with the real session is refused before it reaches anything.
    for (header, value) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let answer = suite
            .web
            .post(suite.server.url("/auth/logout"))
            .header(reqwest::header::COOKIE, &session)
            .header(header, value)
            .send()
            .await
            .expect("logout");
        assert_eq!(answer.status(), 403, "{header}: {value}");
        assert_eq!(
            answer.text().await.unwrap_or_default(),
            "cross-origin request refused"
        );
    }
    assert_eq!(
        suite.get("/approvals", &session).await.status(),
        200,
        "the refused logouts did nothing"
    );

    // After signing out, the old cookie replayed is nobody's session.
    let out = suite
        .web
        .post(suite.server.url("/auth/logout"))
        .header(reqwest::header::COOKIE, &session)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status(), 303);
    assert!(to_sign_in(&suite.get("/approvals", &session).await));

    let trail = suite.trail().await;
    let stale = trail
        .iter()
        .filter(|r| {
            r.event.caller_id == "anonymous"
                && r.event.decision_action == "deny"
                && r.event
                    .decision_reason
                    .contains("session cookie is no session")
        })
        .count();
    assert_eq!(
        stale, 3,
        "the forged cookie (a page, a vote) and the replayed one are audited"
    );
    let csrf = trail
        .iter()
        .filter(|r| r.event.operation == "csrf.refused" && r.event.decision_action == "deny")
        .count();
    assert_eq!(csrf, 2, "both cross-origin posts are audited");
    assert!(trail
        .iter()
        .any(|r| r.event.kind == EventKind::SignOut && r.event.caller_id == "alice"));
    suite.verify();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn votes_that_must_not_count_are_refused_with_a_reason_and_audited() {
    let suite = Suite::start(Some(POLICY)).await;
    let person = |who: &str, roles: &[&str]| suite.provider.person_token(who, roles);
    let (alice, dave) = (
        person("alice", &["approver", "local-shell"]),
        person("dave", &["approver", "local-shell"]),
    );
    let approve = json!({ "verdict": "approve" });

    // The requester: alice asks for a job with her own token, then approves it.
    let (_, own) = suite
        .server
        .post(
            &alice,
            "/api/v1/decisions",
            &json!({ "tool": "deploy", "operation": "single", "args": {} }),
        )
        .await;
    let own = own["job_id"].as_str().expect("alice's job").to_string();
    refused(
        &suite.vote(&alice, &own, approve.clone()).await,
        (403, "not_eligible"),
        "own requests",
    );

    // A viewer, who may not even see the job.
    let single = suite.job("single").await;
    let carol = person("carol", &["viewer", "local-shell"]);
    refused(
        &suite.vote(&carol, &single, approve.clone()).await,
        (404, "not_found"),
        "no such job",
    );
    // An auditor, who sees it but is no approver.
    let bob = person("bob", &["auditor", "local-shell"]);
    refused(
        &suite.vote(&bob, &single, approve.clone()).await,
        (403, "not_eligible"),
        "`approver` role",
    );

    // Twice by one approver, where two approvals are needed.
    let double = suite.job("double").await;
    assert_eq!(suite.vote(&dave, &double, approve.clone()).await.0, 200);
    refused(
        &suite.vote(&dave, &double, approve.clone()).await,
        (403, "not_eligible"),
        "already",
    );

    // Replayed after use: dave's approval counted once; the same request again finds it decided.
    let (status, body) = suite.vote(&dave, &single, approve.clone()).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    refused(
        &suite.vote(&dave, &single, approve.clone()).await,
        (409, "conflict"),
        "the job is approved",
    );

    // After expiry (the `quick` job's request lives 2 s).
    let quick = suite.job("quick").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, body) = suite.vote(&alice, &quick, approve.clone()).await;
    assert!(status == 409 || status == 403, "{status} {body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("expired"),
        "{body}"
    );

    let trail = suite.trail().await;
    let refusals: Vec<(String, String, String)> = trail
        .iter()
        .filter(|r| r.event.operation == "vote.refused" && r.event.decision_action == "deny")
        .map(|r| {
            (
                r.event.caller_id.clone(),
                r.event.job_id.clone().unwrap_or_default(),
                r.event.decision_reason.clone(),
            )
        })
        .collect();
    let expected = [
        ("alice", &own),
        ("carol", &single),
        ("bob", &single),
        ("dave", &double),
        ("dave", &single),
        ("alice", &quick),
    ];
    assert_eq!(
        refusals
            .iter()
            .map(|(who, job, _)| (who.as_str(), job))
            .collect::<Vec<_>>(),
        expected
            .iter()
            .map(|(who, job)| (*who, *job))
            .collect::<Vec<_>>(),
        "every refused vote is audited, in order: {refusals:?}"
    );
    suite.verify();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injection_in_every_field_is_stored_exactly_and_shown_escaped() {
    let suite = Suite::start(None).await;
    const SQL: &str = "x'); DROP TABLE audit_logs; --";
    const HTML: &str = "<script>alert(1)</script><img src=x onerror=alert(2)>";
    let command = format!("sudo ls /root/{SQL} {HTML}");
    let reason = format!("{HTML} ' OR '1'='1");
    let target = format!("web-01\"{HTML}");
    let answer = suite
        .ask(json!({
            "tool": "ssh-exec", "operation": "executeCommand",
            "args": { "command": command }, "target": target, "reason": reason,
            "session": SQL,
        }))
        .await;
    assert_eq!(answer["action"], "require_approval", "{answer}");
    let job = answer["job_id"].as_str().expect("job").to_string();
    // An injected tool or operation is simply unknown.
    let unknown = suite.ask(json!({ "tool": HTML, "operation": SQL })).await;
    assert_eq!(unknown["action"], "deny", "{unknown}");

    // Stored exactly.
    let trail = suite.trail().await;
    let row = trail
        .iter()
        .find(|r| {
            r.event.job_id.as_deref() == Some(job.as_str()) && r.event.kind == EventKind::Decision
        })
        .expect("the decision row");
    let context: Value = serde_json::from_str(&row.event.context).expect("context is JSON");
    assert_eq!(
        (
            &context["args"]["command"],
            &context["target"],
            &context["reason"],
            &context["session"]
        ),
        (&json!(command), &json!(target), &json!(reason), &json!(SQL))
    );
    assert!(trail
        .iter()
        .any(|r| r.event.tool == HTML && r.event.operation == SQL));

    // Shown escaped: the approval page and the audit explorer hold no live markup from it.
    let issue = Issue::with_roles("bob", &["approver", "auditor", "ssh-linux", "remote-exec"]);
    let session =
        provider::sign_in_as(&suite.web, &suite.server.base, &suite.provider, issue).await;
    let page = suite.get(&format!("/approvals/{job}"), &session).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("page");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "the command is shown, escaped"
    );
    assert!(
        !html.contains("<script>alert(1)") && !html.contains("<img src=x"),
        "no live markup"
    );
    // A denial's reason with markup: stored exactly (the assistant is told it as written) and
    // shown escaped next to the vote.
    let denial = format!("{HTML} {SQL}");
    let bob = suite
        .provider
        .person_token("bob", &["approver", "ssh-linux", "remote-exec"]);
    let (status, denied) = suite
        .vote(&bob, &job, json!({ "verdict": "deny", "reason": denial }))
        .await;
    assert_eq!(
        (
            status,
            denied["status"].as_str(),
            denied["denial_reason"].as_str()
        ),
        (200, Some("denied"), Some(denial.as_str())),
        "{denied}"
    );
    let html = suite
        .get(&format!("/approvals/{job}"), &session)
        .await
        .text()
        .await
        .expect("page");
    assert!(
        html.contains("&lt;img src=x onerror=alert(2)&gt;"),
        "the reason is shown, escaped"
    );
    assert!(
        !html.contains("<script>alert(1)") && !html.contains("<img src=x"),
        "no live markup"
    );
    // Injection in every filter of the explorer and the export: no error, no match, no markup.
    let filters = [
        "caller",
        "tool",
        "operation",
        "action",
        "risk",
        "status",
        "kind",
        "before",
    ];
    for filter in filters {
        for payload in [SQL, HTML] {
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair(filter, payload)
                .finish();
            let page = suite.get(&format!("/audit?{query}"), &session).await;
            assert!(
                page.status().is_success() || page.status() == 400,
                "{filter}: {}",
                page.status()
            );
            let html = page.text().await.expect("page");
            assert!(
                !html.contains("<script>alert(1)") && !html.contains("<img src=x"),
                "{filter}"
            );
        }
    }
    let auditor = suite.provider.person_token("bob", &["auditor"]);
    for filter in ["caller", "tool", "risk", "action"] {
        let (status, body) = suite.export(&auditor, "csv", filter, SQL).await;
        assert!(status == 200 || status == 400, "{filter}: {status} {body}");
        if status == 200 {
            assert_eq!(
                body.lines().count(),
                1,
                "{filter}: header only, nothing matches"
            );
        }
    }
    // The trail is intact: nothing was dropped or rewritten.
    assert!(suite.trail().await.len() > trail.len());
    suite.verify();
}

/// A flood of requests with forged tokens and cross-origin posts: every one is refused, the
/// first ones of the minute are audited one by one up to the budget, and the rest are counted
/// (`/metrics`, then one summary row), so nobody can fill the trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_requests_is_audited_within_the_budget() {
    let env = Env::new().await;
    let server = env
        .serve_with(
            &env.url,
            &[("COUNTERSIGN_AUDIT_REFUSALS_PER_MINUTE", "20".to_string())],
        )
        .await;
    let mut refusals = 0;
    for n in 0..150 {
        let answer = server
            .http
            .get(server.url("/api/v1/whoami"))
            .bearer_auth(format!("cs_forged{n}.not-a-secret"))
            .send()
            .await
            .expect("request");
        assert_eq!(answer.status().as_u16(), 401);
        refusals += 1;
        let answer = server
            .http
            .post(server.url("/auth/logout"))
            .header("origin", "https://evil.example")
            .send()
            .await
            .expect("request");
        assert_eq!(answer.status().as_u16(), 403);
        refusals += 1;
    }
    let metrics = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(&format!(
            "countersign_audit_refusals_suppressed_total {}",
            refusals - 20
        )),
        "{metrics}"
    );
    drop(server);
    let db = Database::connect(&Config {
        database_url: env.url.clone(),
        ..Config::default()
    })
    .await
    .expect("connect");
    let rows = AnyStore::new(&db)
        .audit_page(0, 10_000)
        .await
        .expect("audit");
    let refused = rows
        .iter()
        .filter(|r| r.event.caller_id == "anonymous" && r.event.decision_action == "deny")
        .count();
    assert_eq!(refused, 20, "the budget's worth, one by one");
    db.close().await;
}

/// Open redirects after sign-in: a `next` that a browser would take off the site (a tab it
/// drops, so `/<TAB>/evil.example` is `//evil.example`; a second slash or a backslash, written or
/// percent-encoded; another scheme) or that cannot make a `Location` header (CR, LF) lands on
/// `/` instead, through the identity provider's callback and through the local sign-in form
/// alike, and the sign-in itself works (never a 500 after a sign-in recorded as successful).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_never_sends_anyone_off_the_site() {
    let env = Env::new().await;
    let provider = Provider::start().await;
    let settings = provider.settings(&[("COUNTERSIGN_LOCAL_SIGN_IN", "true".to_string())]);
    let server = env.serve_with(&env.url, &settings).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.ready().await.1["checks"]["identity_provider"] != "ok" {
        assert!(Instant::now() < deadline, "the provider was not discovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let web = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    // `next` as it appears in the query string or form body, and where sign-in must land.
    let cases = [
        // The probe's: `/<TAB>/evil.example/x` once decoded.
        ("/%09/evil.example/x", "/"),
        ("%2F%09%2Fevil.example%2Fx", "/"),
        // Decoded twice before a browser sees a tab.
        ("/%2509/evil.example/x", "/"),
        // Header injection: CR LF.
        ("/%0D%0ALocation:%20https://evil.example", "/"),
        ("/%0Aevil", "/"),
        ("//evil.example", "/"),
        ("/%5Cevil.example", "/"),
        ("/%255Cevil.example", "/"),
        ("/%252F/evil.example", "/"),
        ("https://evil.example", "/"),
        ("/approvals%3Fx%3D1", "/approvals?x=1"),
        ("/approvals/abc", "/approvals/abc"),
    ];
    for (next, to) in cases {
        // Through the OpenID provider.
        let started = web
            .get(server.url(&format!("/auth/login?next={next}")))
            .send()
            .await
            .expect("sign-in starts");
        assert_eq!(started.status(), 303, "{next}");
        let (code, state) = provider.authorize(&location(&started), Issue::person("alice"));
        let back = web
            .get(server.url(&format!("/auth/callback?code={code}&state={state}")))
            .header(reqwest::header::COOKIE, provider::cookies(&started))
            .send()
            .await
            .expect("callback");
        assert_eq!(
            (back.status().as_u16(), location(&back).as_str()),
            (303, to),
            "callback, next={next}"
        );
        let session = provider::cookies(&back);
        assert!(!session.is_empty(), "signed in, next={next}");
        assert_eq!(
            web.get(server.url("/approvals"))
                .header(reqwest::header::COOKIE, &session)
                .send()
                .await
                .expect("page")
                .status(),
            200,
            "the session works, next={next}"
        );

        // Through the local sign-in form (the server's first admin).
        let answer = web
            .post(server.url("/auth/login"))
            .header("sec-fetch-site", "same-origin")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "username=admin&password=fault+test+admin+password&next={next}"
            ))
            .send()
            .await
            .expect("form sign-in");
        assert_eq!(
            (answer.status().as_u16(), location(&answer).as_str()),
            (303, to),
            "form, next={next}"
        );
        assert!(
            !provider::cookies(&answer).is_empty(),
            "signed in, next={next}"
        );
    }
    // Every sign-in is in the trail, and nothing else failed.
    let trail = trail_of(&env).await;
    let sign_ins = trail
        .iter()
        .filter(|r| r.event.kind == EventKind::SignIn && r.event.decision_action == "allow")
        .count();
    assert_eq!(sign_ins, 2 * cases.len());
}

/// One failed local sign-in as `user` from loopback, perhaps with `X-Forwarded-For`: where it
/// redirects (`error=invalid`, or `error=throttled` once the client's budget is spent).
async fn failed_sign_in(server: &Server, user: &str, forwarded: Option<&str>) -> String {
    let web = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut request = web
        .post(server.url("/auth/login"))
        .header("sec-fetch-site", "same-origin")
        .form(&[
            ("username", user),
            ("password", "not the password"),
            ("next", "/"),
        ]);
    if let Some(forwarded) = forwarded {
        request = request.header("x-forwarded-for", forwarded);
    }
    let answer = request.send().await.expect("sign-in");
    assert_eq!(answer.status().as_u16(), 303);
    location(&answer)
}

/// The sign-in throttle behind a reverse proxy: from a peer that is not a trusted proxy,
/// X-Forwarded-For is ignored (a client cannot make up addresses to escape its budget); from a
/// trusted proxy, each forwarded client has a budget of its own. A bad proxy list stops the
/// server at start-up with an error that names the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sign_in_throttle_believes_only_trusted_proxies() {
    let env = Env::new().await;
    let local = [("COUNTERSIGN_LOCAL_SIGN_IN", "true".to_string())];

    // Loopback is no trusted proxy here: spoofed addresses all count against it.
    let server = env
        .serve_with(
            &env.url,
            &[
                local[0].clone(),
                ("COUNTERSIGN_TRUSTED_PROXIES", "10.0.0.0/8".to_string()),
            ],
        )
        .await;
    for n in 0..20 {
        let to = failed_sign_in(
            &server,
            &format!("ghost-{n}"),
            Some(&format!("203.0.113.{n}")),
        )
        .await;
        assert!(to.contains("error=invalid"), "{n}: {to}");
    }
    let to = failed_sign_in(&server, "ghost-x", Some("198.51.100.99")).await;
    assert!(to.contains("error=throttled"), "spoofing is ignored: {to}");
    drop(server);

    // Behind a trusted proxy (loopback here): one client spends its budget, another keeps its.
    let server = env
        .serve_with(
            &env.url,
            &[
                local[0].clone(),
                (
                    "COUNTERSIGN_TRUSTED_PROXIES",
                    "127.0.0.0/8, ::1".to_string(),
                ),
            ],
        )
        .await;
    for n in 0..20 {
        let to = failed_sign_in(&server, &format!("phantom-{n}"), Some("192.0.2.10")).await;
        assert!(to.contains("error=invalid"), "{n}: {to}");
    }
    let to = failed_sign_in(&server, "phantom-x", Some("192.0.2.10")).await;
    assert!(to.contains("error=throttled"), "{to}");
    let to = failed_sign_in(&server, "phantom-y", Some("192.0.2.11")).await;
    assert!(
        to.contains("error=invalid"),
        "another client behind the proxy: {to}"
    );
    // A client cannot pose as another by putting it first: the proxy appended the real one.
    let to = failed_sign_in(&server, "phantom-z", Some("192.0.2.11, 192.0.2.10")).await;
    assert!(to.contains("error=throttled"), "{to}");
    drop(server);
    let trail = trail_of(&env).await;
    let addresses: std::collections::BTreeSet<String> = trail
        .iter()
        .filter(|r| r.event.kind == EventKind::SignIn)
        .filter_map(|r| serde_json::from_str::<Value>(&r.event.context).ok())
        .filter_map(|c| c["address"].as_str().map(String::from))
        .collect();
    assert_eq!(
        addresses,
        ["127.0.0.1", "192.0.2.10", "192.0.2.11"]
            .into_iter()
            .map(String::from)
            .collect(),
        "the trail names the clients, never a made-up address"
    );

    // A list that is not one stops the server before it serves.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .arg("serve")
        .env_remove("COUNTERSIGN_CONFIG")
        .env("COUNTERSIGN_DATABASE_URL", &env.url)
        .env("COUNTERSIGN_SITE_ROOT", env.dir.path().join("site"))
        .env("COUNTERSIGN_BIND", "127.0.0.1:0")
        .env("COUNTERSIGN_TRUSTED_PROXIES", "10.0.0.0/8, proxy.internal")
        .output()
        .expect("countersign runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("trusted_proxies") && stderr.contains("proxy.internal"),
        "{stderr}"
    );
}

/// Agent identity is explicit: an API token without the `agent` role (a viewer's, named like the
/// agent it pretends to be) cannot lease an approved job, keep its lease or report a fabricated
/// run; each attempt is 403 and audited, and the real agent still gets the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_agent_token_claims_jobs_and_reports_runs() {
    let suite = Suite::start(Some(POLICY)).await;
    let db = Database::connect(&Config {
        database_url: suite.env.url.clone(),
        ..Config::default()
    })
    .await
    .expect("connect");
    let (_, viewer) = server::services::identity::api_tokens::create(
        &db.store(),
        "viewer-tok",
        &["viewer".into()],
        &[],
    )
    .await
    .expect("viewer token");
    let (_, agent) = server::services::identity::api_tokens::create(
        &db.store(),
        "agent-1",
        &["agent".into()],
        &[],
    )
    .await
    .expect("agent token");
    db.close().await;
    let job = suite.job("single").await;
    let dave = suite
        .provider
        .person_token("dave", &["approver", "local-shell"]);
    let (status, answer) = suite
        .vote(&dave, &job, json!({ "verdict": "approve" }))
        .await;
    assert_eq!(status, 200, "{answer}");

    for path in [
        "/api/v1/agents/viewer-tok/claim",
        "/api/v1/agents/agent-1/claim",
    ] {
        refused(
            &suite.server.post(&viewer, path, &json!({})).await,
            (403, "not_an_agent"),
            "agent",
        );
    }
    let (status, claimed) = suite
        .server
        .post(&agent, "/api/v1/agents/agent-1/claim", &json!({}))
        .await;
    assert_eq!(status, 200, "the real agent gets the job: {claimed}");
    assert_eq!(claimed["job_id"], job.as_str());
    let report = json!({ "status": "success", "duration_ms": 5 });
    for (path, body) in [
        (format!("/api/v1/jobs/{job}/heartbeat"), json!({})),
        (format!("/api/v1/jobs/{job}/result"), report.clone()),
    ] {
        refused(
            &suite.server.post(&viewer, &path, &body).await,
            (403, "not_an_agent"),
            "agent",
        );
    }
    let (status, done) = suite
        .server
        .post(&agent, &format!("/api/v1/jobs/{job}/result"), &report)
        .await;
    assert_eq!(
        (status, done["status"].as_str()),
        (200, Some("completed")),
        "{done}"
    );

    let trail = suite.trail().await;
    let refusals = trail
        .iter()
        .filter(|r| r.event.operation == "agent.refused" && r.event.caller_id == "viewer-tok")
        .count();
    assert_eq!(refusals, 4, "every attempt is audited");
    assert!(
        trail
            .iter()
            .filter(|r| r.event.execution_status.is_some())
            .all(|r| r.event.caller_id != "viewer-tok"),
        "no execution step is the viewer's"
    );
    suite.verify();
}

/// A client trickling its headers, or holding an idle keep-alive connection, is cut off after
/// `header_read_timeout_secs`; a normal request on the same server is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = Env::new().await;
    let server = env
        .serve_with(
            &env.url,
            &[("COUNTERSIGN_HEADER_READ_TIMEOUT_SECS", "2".to_string())],
        )
        .await;
    let address = server.base.trim_start_matches("http://").to_string();
    // Whether the server closes the connection within `limit` (it sends EOF, or a 408 and EOF).
    async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
    // Idle: connected, nothing sent.
    let mut idle = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let started = Instant::now();
    assert!(
        closed_within(&mut idle, Duration::from_secs(15)).await,
        "idle connection kept"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1_500),
        "closed before the timeout"
    );

    // Trickling: a header line every 300 ms, never the blank line that ends them.
    let mut slow = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let mut cut = false;
    for n in 0..50 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if slow
            .write_all(format!("X-Slow-{n}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            cut = true;
            break;
        }
        if closed_within(&mut slow, Duration::from_millis(10)).await {
            cut = true;
            break;
        }
    }
    assert!(
        cut,
        "a trickling client kept its connection for {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // A client that sends its request at once is served, and its keep-alive connection too.
    let (status, _) = server.ready().await;
    assert_eq!(status, 200);
}

/// CSV formula injection: a token holder puts spreadsheet formulas into the fields a decision
/// records as sent (an unknown tool and operation, the reason). The CSV export writes them
/// as text a spreadsheet does not run (a leading `'`), JSON Lines keeps them exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spreadsheet_formulas_in_a_decision_are_exported_as_text() {
    let suite = Suite::start(None).await;
    const TOOL: &str = "=HYPERLINK(\"http://evil.example/x\",\"open\")";
    const OPERATION: &str = "+cmd|' /C calc'!A0";
    let answer = suite
        .ask(json!({ "tool": TOOL, "operation": OPERATION, "reason": "@SUM(1+1)" }))
        .await;
    assert_eq!(answer["action"], "deny", "{answer}");
    let auditor = suite.provider.person_token("bob", &["auditor"]);
    let export = |format: &'static str| {
        let (suite, auditor) = (&suite, &auditor);
        async move {
            let (status, body) = suite.export(auditor, format, "tool", TOOL).await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    let csv = export("csv").await;
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert!(
        rows[1].contains("\"'=HYPERLINK(\"\"http://evil.example/x\"\",\"\"open\"\")\""),
        "{csv}"
    );
    assert!(rows[1].contains("'+cmd|"), "{csv}");
    for cell in rows[1].split(',') {
        let text = cell.trim_start_matches('"');
        assert!(
            !text.starts_with(['=', '+', '@']),
            "a cell a spreadsheet would run: {cell}"
        );
    }
    let jsonl = export("jsonl").await;
    let row: Value = serde_json::from_str(jsonl.lines().next().expect("a row")).expect("json");
    assert_eq!(
        (row["tool"].as_str(), row["operation"].as_str()),
        (Some(TOOL), Some(OPERATION))
    );
    suite.verify();
}
