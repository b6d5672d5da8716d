//! Logging set-up shared by the daemons (`trove-guest-agent`, `docker-hostnic`): both must log
//! the same way for operators (journald or a log file, one format flag, `RUST_LOG` for the
//! level).
//!
//! Under systemd the daemons' stderr is the journal's stream, which records every line at
//! priority 6 (info) unless the line starts with a syslog priority prefix (`<3>` error, `<4>`
//! warning, ...; systemd's `SyslogLevelPrefix=`, on by default). So when stderr is that
//! stream, each line gets the prefix of its level and `journalctl -p warning` shows the
//! agent's warnings. The `tracing-journald` crate would write to the journal's socket
//! instead; one output path (stderr, prefixed only when it is the journal) keeps terminals,
//! log files and the journal alike.

use std::fmt;
use std::io::IsTerminal as _;

use clap::ValueEnum;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines look (`--log-format`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per event, for log shippers.
    Json,
}

/// Logs to stderr at `RUST_LOG`'s level (default `info`); colours only on a terminal, so
/// journald and log files get plain text; syslog priority prefixes only for the journal.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let journal = stderr_is_journal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!journal && std::io::stderr().is_terminal());
    let events = tracing_subscriber::fmt::format();
    match format {
        LogFormat::Human => builder
            .event_format(JournalPriority {
                inner: events,
                prefix: journal,
            })
            .init(),
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(JournalPriority {
                inner: events.json().flatten_event(true),
                prefix: journal,
            })
            .init(),
    }
}

/// Whether stderr is the journal's stream. systemd sets `JOURNAL_STREAM=<device>:<inode>` for
/// a service whose output goes to the journal; a child whose stderr was redirected inherits
/// the variable but not the stream, so the device and inode of stderr must match.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let stream = std::env::var("JOURNAL_STREAM").ok();
    std::fs::metadata("/proc/self/fd/2")
        .is_ok_and(|stderr| names_stream(stream.as_deref(), (stderr.dev(), stderr.ino())))
}

/// Whether `JOURNAL_STREAM` (if set) names the stream with this device and inode.
fn names_stream(journal_stream: Option<&str>, stderr: (u64, u64)) -> bool {
    journal_stream
        .and_then(parse_journal_stream)
        .is_some_and(|stream| stream == stderr)
}

/// `<device>:<inode>`, both decimal.
fn parse_journal_stream(value: &str) -> Option<(u64, u64)> {
    let (device, inode) = value.split_once(':')?;
    Some((device.parse().ok()?, inode.parse().ok()?))
}

/// The syslog priority journald gives a line starting with `<N>`.
fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// An event format that starts each line with its syslog priority when `prefix` is set.
struct JournalPriority<F> {
    inner: F,
    prefix: bool,
}

impl<S, N, F> FormatEvent<S, N> for JournalPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if self.prefix {
            write!(writer, "<{}>", syslog_priority(*event.metadata().level()))?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(syslog_priority(Level::ERROR), 3);
        assert_eq!(syslog_priority(Level::WARN), 4);
        assert_eq!(syslog_priority(Level::INFO), 6);
        assert_eq!(syslog_priority(Level::DEBUG), 7);
        assert_eq!(syslog_priority(Level::TRACE), 7);
    }

    #[test]
    fn journal_stream_is_device_colon_inode() {
        assert_eq!(parse_journal_stream("8:123456"), Some((8, 123_456)));
        assert_eq!(parse_journal_stream("8"), None);
        assert_eq!(parse_journal_stream("x:1"), None);
        assert_eq!(parse_journal_stream("1:"), None);
    }

    #[test]
    fn only_the_stream_journal_stream_names_is_the_journal() {
        assert!(names_stream(Some("8:1234"), (8, 1234)));
        assert!(
            !names_stream(Some("8:1234"), (8, 999)),
            "an inherited variable, stderr redirected"
        );
        assert!(!names_stream(Some("garbage"), (8, 1234)));
        assert!(!names_stream(None, (8, 1234)));
    }
}
