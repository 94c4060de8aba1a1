//! Structured logging through `tracing`. JSON by default (one object per line, which CloudWatch
//! Logs Insights parses); `AWS_LAMBDA_LOG_FORMAT=Text` switches to plain text and
//! `AWS_LAMBDA_LOG_LEVEL` (or `RUST_LOG`) sets the level.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Resolve format and filter from the Lambda variables (falling back to `RUST_LOG`, then `info`).
pub fn log_settings(env: impl Fn(&str) -> Option<String>) -> (LogFormat, String) {
    let format = match env("AWS_LAMBDA_LOG_FORMAT").map(|v| v.to_ascii_lowercase()) {
        Some(v) if v == "text" => LogFormat::Text,
        _ => LogFormat::Json,
    };
    let level = env("AWS_LAMBDA_LOG_LEVEL")
        .map(|l| match l.to_ascii_lowercase().as_str() {
            // Lambda's level names; FATAL has no tracing equivalent.
            "fatal" => "error".to_string(),
            other => other.to_string(),
        })
        .or_else(|| env("RUST_LOG"))
        .unwrap_or_else(|| "info".to_string());
    (format, level)
}

/// Install the global subscriber writing to `writer`. Safe to call more than once (later calls
/// are ignored), so tests and binaries can both call it.
pub fn init_with_writer<W>(writer: W, env: impl Fn(&str) -> Option<String>)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let (format, level) = log_settings(env);
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}

/// Install the global subscriber on stderr (Lambda and the CLI).
pub fn init() {
    init_with_writer(std::io::stderr, |k| std::env::var(k).ok());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::env_map;

    #[test]
    fn lambda_variables_win() {
        let (f, l) = log_settings(env_map(&[("AWS_LAMBDA_LOG_FORMAT", "Text"), ("AWS_LAMBDA_LOG_LEVEL", "DEBUG")]));
        assert_eq!(f, LogFormat::Text);
        assert_eq!(l, "debug");
        let (f, l) = log_settings(env_map(&[("RUST_LOG", "warn")]));
        assert_eq!(f, LogFormat::Json);
        assert_eq!(l, "warn");
        let (_, l) = log_settings(env_map(&[("AWS_LAMBDA_LOG_LEVEL", "FATAL")]));
        assert_eq!(l, "error");
    }
}
