//! `/metrics` in the Prometheus text format: decisions by action and risk, decision latency,
//! audit write latency and batch size, executions by status, and (read at scrape time) the
//! approval queue's depth by status. Counters are atomics; recording never blocks or fails.

use enforcer::{Action, Risk};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const ACTIONS: [Action; 3] = [Action::Allow, Action::Deny, Action::RequireApproval];
const EXECUTION_STATUSES: [&str; 6] = [
    "picked",
    "executing",
    "success",
    "failure",
    "timeout",
    "failed",
];

/// A histogram with fixed upper bounds (seconds, or a plain count for batch sizes).
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    /// Sum in millionths of the unit, to keep it an integer.
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            if value <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add((value.max(0.0) * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// How many values were observed, and their mean (0 when none).
    pub fn count_and_mean(&self) -> (u64, f64) {
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (count, if count == 0 { 0.0 } else { sum / count as f64 })
    }

    /// How many values were above `bound` (one of the histogram's bucket bounds; 0 otherwise).
    pub fn count_above(&self, bound: f64) -> u64 {
        let count = self.count.load(Ordering::Relaxed);
        self.bounds
            .iter()
            .zip(&self.buckets)
            .find(|(b, _)| **b == bound)
            .map_or(0, |(_, bucket)| {
                count.saturating_sub(bucket.load(Ordering::Relaxed))
            })
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

const LATENCY_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const BATCH_BOUNDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Everything `/metrics` reports that the process counts itself.
pub struct Metrics {
    decisions: Vec<AtomicU64>,
    pub decision_seconds: Histogram,
    pub audit_write_seconds: Histogram,
    pub audit_batch_rows: Histogram,
    executions: Vec<AtomicU64>,
    /// Notification attempts per sink: (delivered, failed).
    notifications: [(AtomicU64, AtomicU64); SINKS.len()],
    /// Audit rows written by each SIEM feed.
    siem_rows: [AtomicU64; SIEM_FEEDS.len()],
    /// Refusals counted in a summary row instead of a row each.
    refusals_suppressed: AtomicU64,
}

/// The notification sinks and SIEM feeds `/metrics` counts.
const SINKS: [&str; 3] = ["webhook", "slack", "email"];
const SIEM_FEEDS: [&str; 2] = ["jsonl", "syslog"];

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            decisions: (0..ACTIONS.len() * Risk::ALL.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            decision_seconds: Histogram::new(LATENCY_BOUNDS),
            audit_write_seconds: Histogram::new(LATENCY_BOUNDS),
            audit_batch_rows: Histogram::new(BATCH_BOUNDS),
            executions: EXECUTION_STATUSES
                .iter()
                .map(|_| AtomicU64::new(0))
                .collect(),
            notifications: Default::default(),
            siem_rows: Default::default(),
            refusals_suppressed: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// One decision answered (after its audit row was written), and how long it took.
    pub fn decision(&self, action: Action, risk: Risk, took: Duration) {
        if let (Some(a), Some(r)) = (
            ACTIONS.iter().position(|x| *x == action),
            Risk::ALL.iter().position(|x| *x == risk),
        ) {
            self.decisions[a * Risk::ALL.len() + r].fetch_add(1, Ordering::Relaxed);
        }
        self.decision_seconds.observe(took.as_secs_f64());
    }

    /// One audit batch committed.
    pub fn audit_batch(&self, rows: usize, took: Duration) {
        self.audit_write_seconds.observe(took.as_secs_f64());
        self.audit_batch_rows.observe(rows as f64);
    }

    /// One execution step (picked, executing) or outcome (success, failure, timeout, failed).
    pub fn execution(&self, status: &str) {
        if let Some(i) = EXECUTION_STATUSES.iter().position(|x| *x == status) {
            self.executions[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One attempt to deliver a notification to `sink`.
    pub fn notification_sent(&self, sink: &str, delivered: bool) {
        if let Some(i) = SINKS.iter().position(|x| *x == sink) {
            let (ok, failed) = &self.notifications[i];
            let counter = if delivered { ok } else { failed };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One refusal over the audit budget (counted, not written one by one).
    pub fn refusal_suppressed(&self) {
        self.refusals_suppressed.fetch_add(1, Ordering::Relaxed);
    }

    /// `rows` audit rows written by the SIEM feed `feed`.
    pub fn siem_written(&self, feed: &str, rows: usize) {
        if let Some(i) = SIEM_FEEDS.iter().position(|x| *x == feed) {
            self.siem_rows[i].fetch_add(rows as u64, Ordering::Relaxed);
        }
    }

    /// The text exposition, with the queue depth read by the caller.
    pub fn render(&self, queue: &[(String, i64)]) -> String {
        let mut out = String::with_capacity(4_096);
        out.push_str("# HELP countersign_decisions_total Decisions answered, by action and risk.\n# TYPE countersign_decisions_total counter\n");
        for (a, action) in ACTIONS.iter().enumerate() {
            for (r, risk) in Risk::ALL.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "countersign_decisions_total{{action=\"{action}\",risk=\"{risk}\"}} {}",
                    self.decisions[a * Risk::ALL.len() + r].load(Ordering::Relaxed)
                );
            }
        }
        self.decision_seconds.render(
            &mut out,
            "countersign_decision_duration_seconds",
            "Time from request to answer of POST /api/v1/decisions, audit write included.",
        );
        self.audit_write_seconds.render(
            &mut out,
            "countersign_audit_write_duration_seconds",
            "Time to commit one batch of audit rows.",
        );
        self.audit_batch_rows.render(
            &mut out,
            "countersign_audit_batch_rows",
            "Rows per committed audit batch.",
        );
        out.push_str("# HELP countersign_executions_total Execution steps and outcomes reported.\n# TYPE countersign_executions_total counter\n");
        for (i, status) in EXECUTION_STATUSES.iter().enumerate() {
            let _ = writeln!(
                out,
                "countersign_executions_total{{status=\"{status}\"}} {}",
                self.executions[i].load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP countersign_notifications_total Notification delivery attempts, by sink and result.\n# TYPE countersign_notifications_total counter\n");
        for (i, sink) in SINKS.iter().enumerate() {
            let (ok, failed) = &self.notifications[i];
            for (result, n) in [("delivered", ok), ("failed", failed)] {
                let _ = writeln!(
                    out,
                    "countersign_notifications_total{{sink=\"{sink}\",result=\"{result}\"}} {}",
                    n.load(Ordering::Relaxed)
                );
            }
        }
        out.push_str("# HELP countersign_siem_rows_total Audit rows written by each SIEM feed.\n# TYPE countersign_siem_rows_total counter\n");
        for (i, feed) in SIEM_FEEDS.iter().enumerate() {
            let _ = writeln!(
                out,
                "countersign_siem_rows_total{{feed=\"{feed}\"}} {}",
                self.siem_rows[i].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP countersign_audit_refusals_suppressed_total Refusals of unauthenticated requests over the audit budget (in summary rows).\n# TYPE countersign_audit_refusals_suppressed_total counter\ncountersign_audit_refusals_suppressed_total {}",
            self.refusals_suppressed.load(Ordering::Relaxed)
        );
        out.push_str("# HELP countersign_queue_jobs Jobs in the approval queue, by status.\n# TYPE countersign_queue_jobs gauge\n");
        for (status, count) in queue {
            let _ = writeln!(out, "countersign_queue_jobs{{status=\"{status}\"}} {count}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_buckets_render_in_the_text_format() {
        let m = Metrics::default();
        m.decision(Action::Allow, Risk::High, Duration::from_millis(3));
        m.decision(Action::Allow, Risk::High, Duration::from_millis(30));
        m.decision(Action::Deny, Risk::Low, Duration::from_millis(1));
        m.audit_batch(40, Duration::from_millis(2));
        m.execution("success");
        m.notification_sent("webhook", false);
        m.notification_sent("webhook", true);
        m.notification_sent("webhook", true);
        m.siem_written("syslog", 7);
        let text = m.render(&[("queued".into(), 3)]);
        assert!(text.contains("countersign_decisions_total{action=\"allow\",risk=\"HIGH\"} 2"));
        assert!(text.contains("countersign_decision_duration_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("countersign_decision_duration_seconds_bucket{le=\"0.05\"} 3"));
        assert!(text.contains("countersign_decision_duration_seconds_count 3"));
        assert!(text.contains("countersign_audit_batch_rows_bucket{le=\"64\"} 1"));
        assert!(text.contains("countersign_executions_total{status=\"success\"} 1"));
        assert!(text.contains("countersign_queue_jobs{status=\"queued\"} 3"));
        assert!(text
            .contains("countersign_notifications_total{sink=\"webhook\",result=\"delivered\"} 2"));
        assert!(
            text.contains("countersign_notifications_total{sink=\"webhook\",result=\"failed\"} 1")
        );
        assert!(text.contains("countersign_siem_rows_total{feed=\"syslog\"} 7"));
    }
}
