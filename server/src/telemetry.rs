//! Logging: human-readable by default, JSON lines with `COUNTERSIGN_LOG_FORMAT=json`.

use crate::config::{Config, LogFormat};
use std::io::Write;
use tracing_subscriber::{fmt, EnvFilter};

/// Standard error that never fails: a log line that cannot be written (a full disk, a closed
/// pipe) is dropped. Logging must never stop the server; the audit trail, not the log, is the
/// record, and its own failures are answered with 503.
#[derive(Debug, Clone, Copy, Default)]
pub struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

impl<'a> fmt::MakeWriter<'a> for LossyStderr {
    type Writer = LossyStderr;

    fn make_writer(&'a self) -> Self::Writer {
        LossyStderr
    }
}

/// Install the global subscriber. `RUST_LOG`, when set, overrides `log_level`.
pub fn init(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // The subscriber's own error report would `eprintln!`, which panics when standard error
    // cannot be written: off, and the writer drops what it cannot write.
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(LossyStderr)
        .log_internal_errors(false);
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = match config.log_format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
