//! Logs go to stderr, as text or one JSON object per line. Values, tokens
//! and passwords are never logged; key names and paths are.
//!
//! A text line is `TIMESTAMP LEVEL message fields`: an RFC 3339 timestamp
//! (UTC), then the level, with no padding before it. The timestamp is left
//! out when stderr is the systemd journal (`JOURNAL_STREAM` is set: the
//! journal stamps each line itself) or with `--log-timestamps=false`.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::registry::LookupSpan;

/// Whether text lines start with a timestamp: the flag when given, else
/// yes unless stderr is the journal.
pub fn timestamps(flag: Option<bool>, journal_stream: Option<&std::ffi::OsStr>) -> bool {
    flag.unwrap_or(journal_stream.is_none_or(|v| v.is_empty()))
}

pub fn init(level: tracing::Level, json: bool, timestamps: bool) {
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false);
    // try_init: a second call (tests running `run` twice) keeps the first.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(false)
            .event_format(Text { timestamps })
            .try_init()
    };
}

/// The text line format.
struct Text {
    timestamps: bool,
}

impl<S, N> FormatEvent<S, N> for Text
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if self.timestamps {
            SystemTime.format_time(&mut writer)?;
            writer.write_str(" ")?;
        }
        write!(writer, "{} ", event.metadata().level())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::timestamps;
    use std::ffi::OsStr;

    #[test]
    fn journal_drops_timestamps_unless_asked() {
        assert!(timestamps(None, None));
        assert!(!timestamps(None, Some(OsStr::new("8:12345"))));
        assert!(timestamps(None, Some(OsStr::new(""))));
        assert!(timestamps(Some(true), Some(OsStr::new("8:12345"))));
        assert!(!timestamps(Some(false), None));
    }
}
