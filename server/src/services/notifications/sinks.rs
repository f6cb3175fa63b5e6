//! Where notifications go: a generic webhook (the notification as JSON, signed like the webhook
//! executor: `X-Countersign-Signature: sha256=HMAC(secret, "{timestamp}.{body}")`), a
//! Slack-compatible incoming webhook (a readable message) and e-mail over SMTP to the approvers
//! whose capabilities cover the job. Every message carries its idempotency key
//! (`X-Countersign-Delivery`, or the e-mail's Message-ID) so a receiver can drop a redelivery.

use super::message::{EventType, Notification};
use super::IntegrationError;
pub use crate::config::values::{parse_recipients, Recipient};
use crate::config::Secret;
use chrono::Utc;
use lettre::message::{header::ContentType, Mailbox};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Why a delivery did not happen; `permanent` ones are dead-lettered at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    pub permanent: bool,
}

impl Failure {
    pub fn temporary(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            permanent: false,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            permanent: true,
        }
    }
}

pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Recipient>,
}

pub enum Sink {
    Webhook { url: String, secret: Secret },
    Slack { url: Secret },
    Email(Box<Email>),
}

impl Sink {
    pub fn webhook(url: &str, secret: Secret) -> Sink {
        Sink::Webhook {
            url: url.to_string(),
            secret,
        }
    }

    pub fn slack(url: Secret) -> Sink {
        Sink::Slack { url }
    }

    /// E-mail through the SMTP server at `url` (`smtp://` with optional `?tls=required` for
    /// STARTTLS, or `smtps://`; user and password in the URL).
    pub fn email(
        url: &Secret,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Sink, IntegrationError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
            .map_err(|e| format!("notify_smtp_url is not a usable SMTP URL: {e}"))?
            .timeout(Some(std::time::Duration::from_secs(10)))
            .build();
        let from = from
            .ok_or("notify_email_from is required with notify_smtp_url")?
            .parse::<Mailbox>()
            .map_err(|e| format!("notify_email_from is not an e-mail address: {e}"))?;
        let to = parse_recipients(to.ok_or("notify_email_to is required with notify_smtp_url")?)
            .map_err(|e| IntegrationError(e.0))?;
        if to.is_empty() {
            return Err("notify_email_to names no address".into());
        }
        Ok(Sink::Email(Box::new(Email {
            transport,
            from,
            to,
        })))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Sink::Webhook { .. } => "webhook",
            Sink::Slack { .. } => "slack",
            Sink::Email(_) => "email",
        }
    }

    /// Whether this sink has anyone to tell (e-mail: an approver whose capabilities cover the job).
    pub fn wants(&self, notification: &Notification) -> bool {
        match self {
            Sink::Email(email) => !email.recipients(notification).is_empty(),
            _ => true,
        }
    }

    /// Deliver one notification; `key` is its idempotency key.
    pub async fn send(
        &self,
        http: &reqwest::Client,
        key: &str,
        notification: &Notification,
    ) -> Result<(), Failure> {
        match self {
            Sink::Webhook { url, secret } => {
                let body = serde_json::to_vec(notification)
                    .map_err(|e| Failure::permanent(e.to_string()))?;
                let timestamp = Utc::now().timestamp();
                let signature = super::signature(secret.expose().as_bytes(), timestamp, &body);
                let request = http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("x-countersign-event", notification.event.as_str())
                    .header("x-countersign-delivery", key)
                    .header("x-countersign-timestamp", timestamp.to_string())
                    .header("x-countersign-signature", signature)
                    .body(body);
                post(request).await
            }
            Sink::Slack { url } => {
                let body = serde_json::json!({ "text": slack_text(notification, Utc::now()) });
                let request = http
                    .post(url.expose())
                    .header("x-countersign-delivery", key)
                    .json(&body);
                post(request).await
            }
            Sink::Email(email) => email.send(key, notification).await,
        }
    }
}

/// Send an HTTP request: 2xx is delivered; 408, 425, 429, 5xx and network errors are retried;
/// other answers are a permanent refusal. Errors never show the URL (it may hold a token).
async fn post(request: reqwest::RequestBuilder) -> Result<(), Failure> {
    match request.send().await {
        Ok(answer) if answer.status().is_success() => Ok(()),
        Ok(answer) => {
            let status = answer.status();
            let message = format!("the receiver answered {status}");
            if status.is_server_error() || matches!(status.as_u16(), 408 | 425 | 429) {
                Err(Failure::temporary(message))
            } else {
                Err(Failure::permanent(message))
            }
        }
        Err(error) => Err(Failure::temporary(format!(
            "could not reach the receiver: {}",
            error.without_url()
        ))),
    }
}

impl Email {
    fn recipients(&self, notification: &Notification) -> Vec<Mailbox> {
        self.to
            .iter()
            .filter(|r| r.covers(&notification.required_capabilities))
            .map(|r| r.mailbox.clone())
            .collect()
    }

    async fn send(&self, key: &str, notification: &Notification) -> Result<(), Failure> {
        let recipients = self.recipients(notification);
        if recipients.is_empty() {
            // The configuration changed since the message was queued: nobody to tell.
            return Ok(());
        }
        let now = Utc::now();
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(format!("[Countersign] {}", headline(notification, now)))
            .message_id(Some(format!("<{}@countersign>", message_id_part(key))));
        for mailbox in recipients {
            builder = builder.to(mailbox);
        }
        let message = builder
            .header(ContentType::TEXT_PLAIN)
            .body(plain_text(notification, now))
            .map_err(|e| Failure::permanent(format!("could not build the e-mail: {e}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(error) if error.is_permanent() => Err(Failure::permanent(format!(
                "the mail server refused the message: {error}"
            ))),
            Err(error) => Err(Failure::temporary(format!(
                "could not hand the message to the mail server: {error}"
            ))),
        }
    }
}

/// The idempotency key as Message-ID text (letters, digits, `.`, `-`).
fn message_id_part(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '.'
            }
        })
        .collect()
}

/// "14 min", "2 h 5 min", "40 s".
pub fn time_left(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3_600 => format!("{} min", s / 60),
        s => format!("{} h {} min", s / 3_600, (s % 3_600) / 60),
    }
}

/// One line saying what happened: `HIGH approval needed: ssh-exec executeCommand on web-01`.
pub fn headline(n: &Notification, now: chrono::DateTime<Utc>) -> String {
    let what = format!(
        "{} {}{}",
        n.job.tool,
        n.job.operation,
        n.job
            .target
            .as_deref()
            .map(|t| format!(" on {t}"))
            .unwrap_or_default()
    );
    match n.event {
        EventType::Queued => format!("{} approval needed: {what}", n.job.risk),
        EventType::Expiring => format!(
            "{} request expires in {}: {what}",
            n.job.risk,
            time_left(n.seconds_left(now).unwrap_or(0))
        ),
        EventType::Approved => format!("Approved: {what}"),
        EventType::Denied => format!("Denied: {what}"),
        EventType::Executed => format!("Executed: {what}"),
        EventType::Failed => format!("Failed ({}): {what}", n.status),
        EventType::Expired => format!("Expired without a decision: {what}"),
        EventType::Cancelled => format!("Cancelled by the requester: {what}"),
    }
}

/// The facts every readable message lists, as (label, value).
fn facts(n: &Notification, now: chrono::DateTime<Utc>) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("Risk", n.job.risk.to_string()),
        ("Tool", format!("{} · {}", n.job.tool, n.job.operation)),
        ("Requested by", n.job.requester.clone()),
    ];
    if let Some(reason) = &n.job.requester_reason {
        out.push(("Reason given", reason.clone()));
    }
    if let Some(target) = &n.job.target {
        out.push(("Target", target.clone()));
    }
    if n.event.asks_for_a_vote() {
        if let Some(left) = n.seconds_left(now) {
            out.push(("Time left", time_left(left)));
        }
    }
    for vote in &n.votes {
        let reason = vote
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        out.push((
            "Vote",
            format!("{} by {}{reason}", vote.verdict, vote.approver),
        ));
    }
    if let Some(error) = &n.error {
        out.push(("Error", error.clone()));
    }
    out.push((
        "Arguments",
        match &n.args {
            Some(args) => args.to_string(),
            None => "redacted (check them on the approval page)".to_string(),
        },
    ));
    out.push(("Call hash", n.job.call_hash.clone()));
    out.push(("Job", n.job.job_id.clone()));
    out
}

/// The e-mail body.
pub fn plain_text(n: &Notification, now: chrono::DateTime<Utc>) -> String {
    let mut out = format!("{}\n\n", headline(n, now));
    for (label, value) in facts(n, now) {
        out.push_str(&format!("{label}: {value}\n"));
    }
    match &n.url {
        Some(url) if n.event.asks_for_a_vote() => {
            out.push_str(&format!("\nReview and decide: {url}\n"))
        }
        Some(url) => out.push_str(&format!("\nDetails: {url}\n")),
        None => out.push_str("\nOpen Countersign to see the request.\n"),
    }
    out.push_str("\nThe approval page shows the same call hash: check it before you approve.\n");
    out
}

/// Slack's mrkdwn: `&`, `<` and `>` are control characters (links, mentions); text from
/// requesters must not become a link or a mention.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The Slack message: a bold headline, the facts, and a link to the approval page.
pub fn slack_text(n: &Notification, now: chrono::DateTime<Utc>) -> String {
    let mut out = format!("*{}*\n", slack_escape(&headline(n, now)));
    for (label, value) in facts(n, now) {
        out.push_str(&format!("{label}: {}\n", slack_escape(&value)));
    }
    if let Some(url) = &n.url {
        let label = if n.event.asks_for_a_vote() {
            "Review and decide"
        } else {
            "Open in Countersign"
        };
        out.push_str(&format!("<{}|{label}>", slack_escape(url)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::notifications::message::NotifiedVote;

    fn notification(event: EventType) -> Notification {
        let now = Utc::now();
        Notification {
            id: "transition-7".into(),
            event,
            occurred_at: now,
            job: crate::store::JobSummary {
                job_id: "job-1".into(),
                tool: "ssh-exec".into(),
                operation: "executeCommand".into(),
                target: Some("web-01".into()),
                risk: crate::store::Risk::High,
                priority: crate::store::Priority::Normal,
                requester: "assistant <@here> & co".into(),
                requester_reason: Some("disk <https://evil.example|full>".into()),
                call_hash: "ab".repeat(32),
                approvals_required: 1,
                created_at: now,
                expires_at: Some(now + chrono::Duration::seconds(14 * 60 + 30)),
            },
            status: "queued".into(),
            required_capabilities: vec!["ssh-linux".into()],
            policy_hash: None,
            args: None,
            args_redacted: true,
            votes: vec![NotifiedVote {
                approver: "dave".into(),
                verdict: "approve".into(),
                reason: Some("CHG-7".into()),
                at: now,
            }],
            error: None,
            url: Some("https://countersign.example/approvals/job-1".into()),
        }
    }

    #[test]
    fn slack_messages_are_readable_and_requester_text_cannot_link_or_mention() {
        let n = notification(EventType::Queued);
        let text = slack_text(&n, Utc::now());
        assert!(text.starts_with("*HIGH approval needed: ssh-exec executeCommand on web-01*"));
        assert!(text.contains("Time left: 14 min"), "{text}");
        assert!(
            text.contains("Requested by: assistant &lt;@here&gt; &amp; co"),
            "{text}"
        );
        assert!(
            text.contains("disk &lt;https://evil.example|full&gt;"),
            "{text}"
        );
        assert!(!text.contains("<@here>") && !text.contains("<https://evil"));
        assert!(text.contains(&format!("Call hash: {}", "ab".repeat(32))));
        assert!(text.contains("Arguments: redacted"));
        assert!(text.ends_with("<https://countersign.example/approvals/job-1|Review and decide>"));
    }

    #[test]
    fn e_mails_say_what_happened_and_link_the_job() {
        let mut n = notification(EventType::Failed);
        n.status = "timeout".into();
        n.url = Some("https://countersign.example/jobs/job-1".into());
        let text = plain_text(&n, Utc::now());
        assert!(text.starts_with("Failed (timeout): ssh-exec executeCommand on web-01"));
        assert!(
            !text.contains("Time left"),
            "no deadline once decided: {text}"
        );
        assert!(text.contains("Vote: approve by dave: CHG-7"));
        assert!(text.contains("Details: https://countersign.example/jobs/job-1"));
    }

    #[test]
    fn recipients_are_chosen_by_capability() {
        let to = parse_recipients("ops@example.com, net@example.com:firewall-admin+ssh-linux")
            .expect("parses");
        let email_for = |caps: &[&str]| {
            to.iter()
                .filter(|r| r.covers(&caps.iter().map(|c| c.to_string()).collect::<Vec<_>>()))
                .map(|r| r.mailbox.email.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            email_for(&["ssh-linux"]),
            ["ops@example.com", "net@example.com"]
        );
        assert_eq!(email_for(&["windows-admin"]), ["ops@example.com"]);
        assert!(parse_recipients("not an address").is_err());
        assert_eq!(time_left(59), "59 s");
        assert_eq!(time_left(7_500), "2 h 5 min");
        assert_eq!(message_id_part("transition-7/email"), "transition-7.email");
    }
}
