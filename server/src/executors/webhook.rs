//! The `webhook` executor: POST the approved job to the tool server that runs it.
//!
//! The body is JSON (the job, its arguments and who approved it). Two headers let the receiver
//! check that it came from Countersign and is fresh:
//!
//! - `X-Countersign-Timestamp`: seconds since the Unix epoch when it was sent;
//! - `X-Countersign-Signature`: `sha256=` + hex HMAC-SHA256 over `"{timestamp}.{body}"` with the
//!   secret held in the executor's `secret_env` environment variable.
//!
//! `X-Countersign-Delivery` is the job id (the same on every retry, so a receiver can
//! de-duplicate). Connection failures, timeouts, 408, 425, 429 and 5xx are retried with
//! exponential back-off (honouring `Retry-After`) up to the executor's `attempts`; other answers
//! are final. A 2xx answer may carry a run report (`status`, `output`, `exit_code`,
//! `side_effects`, `error`); otherwise it means success and its body is kept as the output.

use crate::services::execution::{cap_output, RunReport};
use crate::store::{Job, VoteRecord};
use enforcer::Executor;

use serde::Deserialize;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// First pause between attempts; it doubles each time, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub use crate::services::notifications::signature;

/// What a receiver may answer (every field optional; unknown ones are ignored).
#[derive(Debug, Default, Deserialize)]
struct Answer {
    status: Option<String>,
    output: Option<String>,
    exit_code: Option<i64>,
    #[serde(default)]
    side_effects: Vec<String>,
    error: Option<String>,
}

fn failure(started: Instant, error: String) -> RunReport {
    RunReport {
        status: "failure".into(),
        duration_ms: Some(elapsed_ms(started)),
        error: Some(error),
        ..RunReport::default()
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The JSON the receiver gets.
pub fn payload(job: &Job, votes: &[VoteRecord]) -> Value {
    json!({
        "job_id": job.job_id,
        "tool": job.tool_name,
        "operation": job.operation,
        "args": serde_json::from_str::<Value>(&job.params).unwrap_or(Value::Null),
        "target": job.target,
        "risk": job.risk,
        "requester": job.requester,
        "requester_reason": job.requester_reason,
        "call_hash": job.call_hash,
        "policy_hash": job.policy_hash,
        "approved_at": job.approved_at,
        "approvals": votes.iter().map(|v| json!({
            "approver": v.approver,
            "verdict": v.verdict,
            "reason": v.reason,
            "at": v.created_at,
        })).collect::<Vec<_>>(),
    })
}

/// Deliver a job and report how it went (never fails: problems are a `failure` with the reason).
/// `secret` is the value of the executor's `secret_env`; without one nothing is sent.
pub async fn deliver(
    client: &reqwest::Client,
    executor: &Executor,
    job: &Job,
    votes: &[VoteRecord],
    secret: Option<String>,
) -> RunReport {
    let started = Instant::now();
    let (Some(url), Some(secret_env)) = (&executor.url, &executor.secret_env) else {
        return failure(started, format!("executor `{}` has no url", executor.name));
    };
    let secret = match secret {
        Some(secret) if !secret.is_empty() => secret,
        _ => {
            return failure(
                started,
                format!(
                    "executor `{}` has no signing secret: set {secret_env}; nothing was sent",
                    executor.name
                ),
            )
        }
    };
    let body = payload(job, votes).to_string();
    let mut backoff = FIRST_BACKOFF;
    let mut last_error = String::new();
    for attempt in 1..=executor.attempts.max(1) {
        let timestamp = chrono::Utc::now().timestamp();
        let sent = client
            .post(url)
            .timeout(Duration::from_secs(executor.timeout_secs))
            .header("content-type", "application/json")
            .header("x-countersign-timestamp", timestamp.to_string())
            .header(
                "x-countersign-signature",
                signature(secret.as_bytes(), timestamp, body.as_bytes()),
            )
            .header("x-countersign-delivery", &job.job_id)
            .header("x-countersign-attempt", attempt.to_string())
            .body(body.clone())
            .send()
            .await;
        let mut wait = backoff;
        match sent {
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let text = response.text().await.unwrap_or_default();
                if status.is_success() {
                    let answer: Answer = serde_json::from_str(&text).unwrap_or_default();
                    let outcome = match answer.status.as_deref() {
                        Some(s @ ("success" | "failure" | "timeout")) => s.to_string(),
                        _ => "success".to_string(),
                    };
                    return RunReport {
                        status: outcome,
                        duration_ms: Some(elapsed_ms(started)),
                        exit_code: answer.exit_code,
                        output: Some(cap_output(answer.output.as_deref().unwrap_or(&text))),
                        output_digest: Some(enforcer::sha256_hex(
                            answer.output.as_deref().unwrap_or(&text).as_bytes(),
                        )),
                        output_bytes: None,
                        side_effects: answer
                            .side_effects
                            .into_iter()
                            .take(1_000)
                            .map(|s| cap_output(&s).chars().take(512).collect())
                            .collect(),
                        error: answer.error,
                    };
                }
                last_error = format!(
                    "{url} answered {status} on attempt {attempt}: {}",
                    cap_output(&text).chars().take(200).collect::<String>()
                );
                let retryable =
                    status.is_server_error() || matches!(status.as_u16(), 408 | 425 | 429);
                if !retryable {
                    return failure(started, last_error);
                }
                if let Some(secs) = retry_after {
                    wait = Duration::from_secs(secs.min(60));
                }
            }
            Err(error) => {
                last_error = if error.is_timeout() {
                    format!(
                        "{url} did not answer within {} s on attempt {attempt}",
                        executor.timeout_secs
                    )
                } else {
                    format!("{url} could not be reached on attempt {attempt}: {error}")
                };
            }
        }
        tracing::warn!(executor = %executor.name, job_id = %job.job_id, attempt, error = %last_error, "webhook delivery failed");
        if attempt < executor.attempts {
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
    failure(
        started,
        format!(
            "gave up after {} attempts; last: {last_error}",
            executor.attempts
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Computed independently: python3 -c "import hmac,hashlib;
        //   print(hmac.new(b'Jefe', b'1.{}', hashlib.sha256).hexdigest())"
        assert_eq!(
            signature(b"Jefe", 1, b"{}"),
            "sha256=dc7943cccf20f64327d263db5e2aca27c2b8175e8e6e7ea04f482091bf456b0f"
        );
        assert_ne!(signature(b"Jefe", 2, b"{}"), signature(b"Jefe", 1, b"{}"));
    }
}
