//! Logging: human-readable by default, JSON lines with `COUNTERSIGN_LOG_FORMAT=json`.

use crate::config::{Config, LogFormat};
use tracing_subscriber::{fmt, EnvFilter};

/// Install the global subscriber. `RUST_LOG`, when set, overrides `log_level`.
pub fn init(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
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
