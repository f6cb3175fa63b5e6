//! The OpenAPI 3 document, generated from the API's JSON shapes ([`super::schema`]) and the
//! handlers' `#[utoipa::path]` annotations: `GET /api/v1/openapi.json`, rendered for people at
//! `GET /api/v1/docs`.

use super::schema::{
    AuditReceiptView, CallerView, ClaimedJob, DecisionAnswer, DecisionRequest, ErrorBody, JobEnded,
    JobView, LeaseAnswer, VoteView,
};
use axum::{
    http::header,
    response::{Html, IntoResponse, Response},
};
use serde_json::Value;
use std::sync::OnceLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (`countersign token create`) or an access token from the \
                         identity provider (Keycloak).",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Countersign API",
        description = "Policy decisions for IT-MCP, the approval queue, and execution by agents. \
                       Every request carries `Authorization: Bearer <token>`; errors are \
                       `ErrorBody` with a stable code; 429 answers carry `Retry-After`."
    ),
    paths(
        crate::api::caller::api_whoami,
        super::decisions::decide,
        super::jobs::status,
        super::jobs::cancel,
        super::jobs::vote,
        super::execution::decision_result,
        super::execution::claim,
        super::execution::heartbeat,
        super::execution::job_result,
        super::exports::api_export,
        super::exports::public_key,
        super::shadow::report,
        super::grants::remember,
        super::grants::list,
        super::grants::revoke,
    ),
    components(schemas(
        ErrorBody,
        DecisionRequest,
        DecisionAnswer,
        JobView,
        VoteView,
        ClaimedJob,
        LeaseAnswer,
        JobEnded,
        AuditReceiptView,
        CallerView,
        super::jobs::VoteInput,
        crate::services::execution::RunReport,
        crate::services::shadow::ShadowReport,
        crate::services::shadow::ShadowCount,
        crate::services::shadow::PatternCount,
        crate::services::shadow::CategoryCount,
        crate::services::grants::RememberRequest,
        super::grants::GrantView,
    )),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "decisions", description = "Ask before acting; report how it went"),
        (name = "jobs", description = "Calls waiting for, or past, approval"),
        (name = "agents", description = "Execution agents lease, run and report approved jobs"),
        (name = "audit", description = "Compliance exports and the key that verifies evidence bundles"),
    )
)]
pub struct ApiDoc;

fn document() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| ApiDoc::openapi().to_pretty_json().unwrap_or_default())
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The name of a referenced schema (`#/components/schemas/JobView` → `JobView`).
fn schema_name(value: &Value) -> Option<String> {
    value
        .pointer("/content/application~1json/schema/$ref")
        .or_else(|| value.pointer("/content/application~1json/schema/items/$ref"))
        .and_then(Value::as_str)
        .and_then(|r| r.rsplit('/').next())
        .map(str::to_string)
}

/// `GET /api/v1/docs`: the OpenAPI document for people, rendered on the server (no scripts).
pub async fn docs_page() -> Html<String> {
    static PAGE: OnceLock<String> = OnceLock::new();
    Html(PAGE.get_or_init(render_docs).clone())
}

fn render_docs() -> String {
    let doc: Value = serde_json::from_str(document()).unwrap_or(Value::Null);
    let mut html = String::from(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Countersign API</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <link rel=\"stylesheet\" href=\"/pkg/countersign.css\"></head><body class=\"api-docs\"><main class=\"page\">",
    );
    html.push_str(&format!(
        "<h1>{}</h1><p>{}</p><p>Machine-readable: <a href=\"/api/v1/openapi.json\">/api/v1/openapi.json</a> (OpenAPI {}).</p>",
        escape(doc.pointer("/info/title").and_then(Value::as_str).unwrap_or("API")),
        escape(doc.pointer("/info/description").and_then(Value::as_str).unwrap_or("")),
        escape(doc["openapi"].as_str().unwrap_or("3")),
    ));
    if let Some(paths) = doc["paths"].as_object() {
        for (path, methods) in paths {
            let Some(methods) = methods.as_object() else {
                continue;
            };
            for (method, op) in methods {
                let summary = op["summary"].as_str().unwrap_or("");
                let description = op["description"].as_str().unwrap_or("");
                html.push_str(&format!(
                    "<section class=\"endpoint\" id=\"{}\"><h2><code>{} {}</code></h2><p><strong>{}</strong></p><p>{}</p>",
                    escape(op["operationId"].as_str().unwrap_or("")),
                    escape(&method.to_uppercase()),
                    escape(path),
                    escape(summary),
                    escape(description),
                ));
                if let Some(params) = op["parameters"].as_array() {
                    html.push_str("<h3>Parameters</h3><ul>");
                    for p in params {
                        html.push_str(&format!(
                            "<li><code>{}</code> ({}) {}</li>",
                            escape(p["name"].as_str().unwrap_or("")),
                            escape(p["in"].as_str().unwrap_or("")),
                            escape(p["description"].as_str().unwrap_or("")),
                        ));
                    }
                    html.push_str("</ul>");
                }
                if let Some(body) = schema_name(&op["requestBody"]) {
                    html.push_str(&format!(
                        "<h3>Body</h3><p><a href=\"#schema-{0}\"><code>{0}</code></a></p>",
                        escape(&body)
                    ));
                }
                if let Some(responses) = op["responses"].as_object() {
                    html.push_str("<h3>Responses</h3><ul>");
                    for (code, response) in responses {
                        let body = schema_name(response)
                            .map(|s| {
                                format!(
                                    " → <a href=\"#schema-{0}\"><code>{0}</code></a>",
                                    escape(&s)
                                )
                            })
                            .unwrap_or_default();
                        html.push_str(&format!(
                            "<li><code>{}</code> {}{}</li>",
                            escape(code),
                            escape(response["description"].as_str().unwrap_or("")),
                            body
                        ));
                    }
                    html.push_str("</ul>");
                }
                html.push_str("</section>");
            }
        }
    }
    html.push_str("<h2>Schemas</h2>");
    if let Some(schemas) = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
    {
        for (name, schema) in schemas {
            html.push_str(&format!(
                "<section class=\"schema\" id=\"schema-{0}\"><h3><code>{0}</code></h3><p>{1}</p><ul>",
                escape(name),
                escape(schema["description"].as_str().unwrap_or(""))
            ));
            let required: Vec<&str> = schema["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(properties) = schema["properties"].as_object() {
                for (field, spec) in properties {
                    let kind = spec["type"]
                        .as_str()
                        .map(str::to_string)
                        .or_else(|| {
                            spec["type"].as_array().map(|t| {
                                t.iter()
                                    .filter_map(Value::as_str)
                                    .collect::<Vec<_>>()
                                    .join(" | ")
                            })
                        })
                        .or_else(|| {
                            spec["$ref"]
                                .as_str()
                                .and_then(|r| r.rsplit('/').next())
                                .map(str::to_string)
                        })
                        .unwrap_or_else(|| "value".into());
                    html.push_str(&format!(
                        "<li><code>{}</code> <em>{}</em>{} {}</li>",
                        escape(field),
                        escape(&kind),
                        if required.contains(&field.as_str()) {
                            " (required)"
                        } else {
                            ""
                        },
                        escape(spec["description"].as_str().unwrap_or("")),
                    ));
                }
            }
            html.push_str("</ul></section>");
        }
    }
    html.push_str("</main></body></html>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_describes_every_route_and_the_decision_fields_the_parser_accepts() {
        let doc: Value = serde_json::from_str(document()).expect("json");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        for (path, method) in [
            ("/api/v1/whoami", "get"),
            ("/api/v1/decisions", "post"),
            ("/api/v1/jobs/{id}", "get"),
            ("/api/v1/jobs/{id}/cancel", "post"),
            ("/api/v1/jobs/{id}/votes", "post"),
            ("/api/v1/decisions/{audit_id}/result", "post"),
            ("/api/v1/agents/{agent_id}/claim", "post"),
            ("/api/v1/jobs/{id}/heartbeat", "post"),
            ("/api/v1/jobs/{id}/result", "post"),
        ] {
            assert!(doc["paths"][path][method].is_object(), "{method} {path}");
        }
        let documented: std::collections::BTreeSet<&str> = doc
            .pointer("/components/schemas/DecisionRequest/properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let accepted: std::collections::BTreeSet<&str> =
            enforcer::wire::FIELDS.iter().copied().collect();
        assert_eq!(documented, accepted);
        let page = render_docs();
        assert!(page.contains("POST /api/v1/decisions") && page.contains("schema-JobView"));
    }
}
