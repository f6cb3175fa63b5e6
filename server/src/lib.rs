//! The `countersign` server: axum wiring for the portal, health probes and (later) the decision
//! API. [`app`] builds the whole router so tests can drive it without a socket.

/// Declare an error that is one sentence for a person (what failed and why), with `From` for
/// the text that builds it, so `?` turns a message into it.
macro_rules! message_error {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
        #[error("{0}")]
        pub struct $name(pub String);

        impl From<String> for $name {
            fn from(message: String) -> $name {
                $name(message)
            }
        }

        impl From<&str> for $name {
            fn from(message: &str) -> $name {
                $name(message.to_string())
            }
        }
    };
}

/// mimalloc for every binary built on this crate (the server, its tests and benchmarks alike).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// Edges: the router (this file), the JSON API, the portal's service, the sign-in and security
// middleware, the command line, the agent and the executors.
pub mod agent;
pub mod api;
pub mod cli;
pub mod executors;
pub mod mcp;
pub mod portal;
pub mod web;
// Services: the domain rules, over the core.
pub mod services;
// Core: the store (every query), configuration, metrics and the process's plumbing.
pub mod config;
pub mod listener;
pub mod metrics;
pub mod store;
pub mod telemetry;
pub mod vocab;

use crate::store::{AuditAction, Risk};
use app::{shell, App};
use axum::{
    extract::{FromRef, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use enforcer::PolicySet;
use leptos::config::LeptosOptions;
use leptos_axum::{generate_route_list, LeptosRoutes};
use serde_json::json;
use std::{sync::Arc, time::Duration};
use tower_http::trace::TraceLayer;

pub use config::Config;
pub use services::Core;
pub use store::Database;

/// How long `/readyz` waits for the database before reporting it unreachable.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything a request handler may need, shared: every request and middleware layer takes a
/// copy of the state, so a copy is one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds: the services' [`Core`] (reached through `Deref`, so
/// `state.store` is the core's store) and what only the edges use.
pub struct Shared {
    pub core: Arc<Core>,
    pub leptos: LeptosOptions,
    pub throttle: web::auth::AddressThrottle,
    /// The identity provider (Keycloak), when one is configured.
    pub oidc: Option<Arc<services::identity::oidc::Oidc>>,
    /// Whether local accounts may sign in with a password.
    pub local_sign_in: bool,
    /// Per-caller token buckets for the API.
    pub rate_limiter: api::RateLimiter,
    /// API tokens verified in the last few seconds.
    pub token_cache: Arc<services::identity::api_tokens::TokenCache>,
    pub session_lifetime_secs: i64,
    /// How many refusals of unauthenticated requests are audited one by one.
    pub refusal_budget: Arc<web::security::RefusalBudget>,
    /// The MCP gateway's upstreams and timings.
    pub mcp: config::McpSettings,
    /// The connections to the MCP upstreams, shared by `/mcp` sessions and the `mcp` executor.
    pub upstreams: Arc<mcp::Upstreams>,
    session_idle_secs: i64,
    https: bool,
}

impl std::ops::Deref for Shared {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos.clone()
    }
}

impl AppState {
    /// Build the state and start its background work (audit writer, provider discovery).
    pub fn new(
        config: &Config,
        db: Database,
        policy: Arc<PolicySet>,
    ) -> Result<AppState, config::ConfigError> {
        let oidc =
            services::identity::oidc::Oidc::from_config(config, policy.capabilities.clone())?
                .map(Arc::new);
        if let Some(oidc) = &oidc {
            oidc.spawn_discovery();
        }
        let store = store::AnyStore::new(&db);
        let metrics = Arc::new(metrics::Metrics::default());
        let audit = store::AuditWriter::spawn_with_metrics(
            store.clone(),
            checkpoint_policy(config),
            Some(metrics.clone()),
        );
        let export_key = match &config.export_signing_key {
            Some(key) => Some(Arc::new(
                services::exports::signing_key(key.expose()).map_err(|e| {
                    config::ConfigError::Invalid {
                        setting: "export_signing_key",
                        message: e.to_string(),
                    }
                })?,
            )),
            None => None,
        };
        let core = Arc::new(Core {
            db,
            policy,
            store,
            audit,
            metrics,
            job_events: tokio::sync::broadcast::channel(1_024).0,
            lease_secs: i64::try_from(config.job_lease_secs).unwrap_or(60),
            export_key,
            export_progress: Arc::default(),
            admissions: services::decisions::AdmissionLocks::default(),
            max_pending_requests: i64::from(config.max_pending_requests),
            delegating_callers: Arc::new(config.delegating_callers()),
        });
        Ok(AppState(Arc::new(Shared {
            core,
            leptos: leptos_options(config),
            mcp: config.mcp_settings(),
            upstreams: Arc::new(mcp::Upstreams::new(&config.mcp_upstreams)),
            refusal_budget: Arc::new(web::security::RefusalBudget::per_minute(
                config.audit_refusals_per_minute,
            )),
            throttle: web::auth::AddressThrottle::new(config.trusted_proxies()?),
            oidc,
            local_sign_in: config.local_sign_in(),
            rate_limiter: api::RateLimiter::new(
                config.api_rate_limit_per_sec,
                config.api_rate_limit_burst,
            ),
            token_cache: Arc::new(services::identity::api_tokens::TokenCache::new(
                config.api_token_cache_secs,
            )),
            session_lifetime_secs: i64::try_from(
                config.session_lifetime_hours.saturating_mul(3_600),
            )
            .unwrap_or(i64::MAX),
            session_idle_secs: i64::try_from(config.session_idle_minutes.saturating_mul(60))
                .unwrap_or(i64::MAX),
            https: config.https(),
        })))
    }
}

/// When the audit writer takes keyed checkpoints (only with an audit key).
pub fn checkpoint_policy(config: &Config) -> Option<store::audit::CheckpointPolicy> {
    config
        .audit_key
        .as_ref()
        .map(|key| store::audit::CheckpointPolicy {
            key: key.expose().as_bytes().to_vec(),
            every_rows: config.audit_checkpoint_rows,
            every: Duration::from_secs(config.audit_checkpoint_secs),
        })
}

/// Leptos's options built from our configuration (no Cargo.toml needed at run time).
pub fn leptos_options(config: &Config) -> LeptosOptions {
    LeptosOptions::builder()
        .output_name("countersign")
        .site_root(config.site_root.to_string_lossy().as_ref())
        .site_pkg_dir("pkg")
        .site_addr(config.bind)
        .build()
}

/// The complete router: probes, the portal's pages and server functions, and static files.
pub fn app(state: AppState) -> Router {
    let routes = generate_route_list(App);
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route(
            "/auth/login",
            get(web::auth::login_page).post(web::auth::sign_in),
        )
        .route("/auth/callback", get(web::auth::callback))
        .route("/auth/logout", axum::routing::post(web::auth::sign_out))
        .route("/events", get(portal_events))
        .route("/reports/export", get(api::exports::portal_export))
        // RFC 9728: the metadata of the resource `/mcp` is at the well-known path with the
        // resource's path after it; the bare path is kept for clients that read only that.
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(mcp::protected_resource),
        )
        .route(
            "/.well-known/oauth-protected-resource",
            get(mcp::protected_resource),
        )
        .merge(mcp::routes(&state, &state.mcp))
        .merge(api::routes())
        .leptos_routes_with_context(&state, routes, provide_user(&state), {
            let options = state.leptos.clone();
            move || shell(options.clone())
        })
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            web::auth::gate,
        ));
    let router = match &state.db {
        Database::Sqlite(pool) => router.layer(session_layer(
            tower_sessions_sqlx_store::SqliteStore::new(pool.clone()),
            &state,
        )),
        Database::Postgres(pool) => router.layer(session_layer(
            tower_sessions_sqlx_store::PostgresStore::new(pool.clone()),
            &state,
        )),
    };
    router
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            web::security::same_origin,
        ))
        .layer(axum::middleware::from_fn(web::security::headers))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Server-side sessions in the database: HttpOnly, SameSite=Lax, Secure and `__Host-` prefixed
/// over https, ending after the idle timeout (the absolute lifetime is checked by `web::auth::gate`).
fn session_layer<S: tower_sessions::SessionStore + Clone>(
    store: S,
    state: &AppState,
) -> tower_sessions::SessionManagerLayer<S> {
    let name = if state.https {
        "__Host-countersign"
    } else {
        "countersign"
    };
    tower_sessions::SessionManagerLayer::new(store)
        .with_name(name)
        .with_http_only(true)
        .with_same_site(tower_sessions::cookie::SameSite::Lax)
        .with_secure(state.https)
        .with_path("/")
        .with_expiry(tower_sessions::Expiry::OnInactivity(
            time::Duration::seconds(state.session_idle_secs),
        ))
}

/// Hand the signed-in person (put in the request by `web::auth::gate`) and the ways to sign in to the
/// portal's components and server functions.
fn provide_user(state: &AppState) -> impl Fn() + Clone + Send + Sync + 'static {
    let options = app::AuthOptions {
        provider: state.oidc.as_ref().map(|o| o.provider_name().to_string()),
        provider_origin: state.oidc.as_ref().map(|o| o.origin()),
        local: state.local_sign_in,
    };
    let state = state.clone();
    move || provide_request_context(&state, options.clone())
}

fn provide_request_context(state: &AppState, options: app::AuthOptions) {
    use leptos::prelude::{provide_context, use_context};
    provide_context(options);
    let user = use_context::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<web::auth::SignedIn>().cloned());
    if let Some(user) = &user {
        provide_context(app::UserView {
            username: user.username.clone(),
            display_name: user.display_name.clone(),
            roles: user.roles.clone(),
            capabilities: user.capabilities.clone(),
        });
    }
    provide_context(portal::Portal::for_request(state.clone(), user));
}

/// `GET /events`: server-sent events for the signed-in portal. A `change` event follows every
/// job change on this replica (a burst coalesced into one), and a `tick` every 15 s (for
/// decisions and other replicas' changes); the page refetches what it shows.
async fn portal_events(
    State(state): State<AppState>,
) -> axum::response::sse::Sse<
    impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let changes = state.job_events.subscribe();
    let mut ticks = tokio::time::interval(Duration::from_secs(15));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream =
        futures_util::stream::unfold((changes, ticks), |(mut changes, mut ticks)| async move {
            let name = tokio::select! {
                change = changes.recv() => match change {
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        // Coalesce a burst (a batch of votes, a busy executor) into one event.
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        while changes.try_recv().is_ok() {}
                        "change"
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = ticks.tick() => "tick",
            };
            Some((
                Ok(Event::default().event("message").data(name)),
                (changes, ticks),
            ))
        });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// `/metrics`: Prometheus text format. The queue depth is read from the database at scrape time
/// (shared by every replica); the rest is this process's own counts.
async fn metrics_text(State(state): State<AppState>) -> Response {
    use store::Store;
    let queue = state.store.job_counts().await.unwrap_or_else(|error| {
        tracing::warn!(%error, "metrics: queue depth unavailable");
        Vec::new()
    });
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&queue),
    )
        .into_response()
}

/// After a failed audit write nothing is allowed, and the replica is not ready until the trail
/// takes a write again: this commits a row that records the recovery (a failure leaves the
/// writer failing). Decisions resume on their own either way; this lets `/readyz` see it.
async fn audit_resumes(state: &AppState) -> bool {
    let event = store::NewAuditEvent::new(
        store::EventKind::PortalAction,
        services::maintenance::SYSTEM_CALLER,
        "countersign",
        "audit.resumed",
        AuditAction::Allow,
        "the audit trail accepts writes again after a failed write",
        Risk::Low,
    );
    matches!(
        tokio::time::timeout(READY_TIMEOUT, state.audit.append(event)).await,
        Ok(Ok(_))
    )
}

/// The process is alive and serving requests.
async fn healthz() -> &'static str {
    "ok"
}

/// The process can do its job: the database answers. The identity provider is reported too; while
/// it is unreachable the status is `degraded` but the answer stays 200, because sessions, API
/// tokens and bearer tokens (from cached keys) keep working and only new sign-ins wait.
async fn readyz(State(state): State<AppState>) -> Response {
    let provider = state.oidc.as_ref().map(|o| {
        if o.is_reachable() {
            "ok"
        } else {
            "unreachable"
        }
    });
    let database = match tokio::time::timeout(READY_TIMEOUT, state.db.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {READY_TIMEOUT:?}")),
    };
    if database.is_ok() && state.audit.is_failing() && !audit_resumes(&state).await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "checks": { "database": "ok", "audit": "failing" } })),
        )
            .into_response();
    }
    match database {
        Ok(()) => {
            let mut checks = json!({ "database": "ok" });
            if let Some(p) = provider {
                checks["identity_provider"] = json!(p);
            }
            let status = if provider == Some("unreachable") {
                "degraded"
            } else {
                "ready"
            };
            (
                StatusCode::OK,
                Json(json!({ "status": status, "checks": checks })),
            )
                .into_response()
        }
        Err(detail) => {
            tracing::warn!(%detail, "readiness check failed: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "checks": { "database": "unreachable" } })),
            )
                .into_response()
        }
    }
}
