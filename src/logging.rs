//! Logs go to stderr, as text or one JSON object per line. Values, tokens
//! and passwords are never logged; key names and paths are.
//!
//! A text line is `TIMESTAMP LEVEL message fields`: an RFC 3339 timestamp
//! (UTC), then the level, with no padding before it. The timestamp is left
//! out when stderr is the systemd journal (`JOURNAL_STREAM` is set: the
//! journal stamps each line itself) or with `--log-timestamps=false`.

use std::fmt;
use std::sync::OnceLock;

use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber, span};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::registry::LookupSpan;

/// Whether text lines start with a timestamp: the flag when given, else
/// yes unless stderr is the journal.
pub fn timestamps(flag: Option<bool>, journal_stream: Option<&std::ffi::OsStr>) -> bool {
    flag.unwrap_or(journal_stream.is_none_or(|v| v.is_empty()))
}

/// Installs the logger. The formatting subscriber is built at the first
/// line logged: most one-shot renders log nothing, and building it (a span
/// registry, the formatters) was 4% of such a render's instructions.
pub fn init(level: tracing::Level, json: bool, timestamps: bool) {
    let lazy = Lazy {
        level: LevelFilter::from_level(level),
        json,
        timestamps,
        real: OnceLock::new(),
    };
    // A second call (tests running `run` twice) keeps the first.
    let _ = tracing::subscriber::set_global_default(lazy);
}

/// The subscriber stencil logs with, as configured.
fn build(level: tracing::Level, json: bool, timestamps: bool) -> Box<dyn Subscriber + Send + Sync> {
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false);
    if json {
        Box::new(builder.json().finish())
    } else {
        Box::new(
            builder
                .with_ansi(false)
                .event_format(Text { timestamps })
                .finish(),
        )
    }
}

/// Answers which levels are enabled itself, and hands everything else to
/// the real subscriber, built on first use.
struct Lazy {
    level: LevelFilter,
    json: bool,
    timestamps: bool,
    real: OnceLock<Box<dyn Subscriber + Send + Sync>>,
}

impl Lazy {
    fn real(&self) -> &(dyn Subscriber + Send + Sync) {
        self.real.get_or_init(|| {
            let level = self.level.into_level().unwrap_or(tracing::Level::ERROR);
            build(level, self.json, self.timestamps)
        })
    }
}

impl Subscriber for Lazy {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.enabled(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        meta.level() <= &self.level
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.level)
    }

    fn new_span(&self, span: &span::Attributes<'_>) -> span::Id {
        self.real().new_span(span)
    }

    fn record(&self, span: &span::Id, values: &span::Record<'_>) {
        self.real().record(span, values);
    }

    fn record_follows_from(&self, span: &span::Id, follows: &span::Id) {
        self.real().record_follows_from(span, follows);
    }

    fn event(&self, event: &Event<'_>) {
        self.real().event(event);
    }

    fn enter(&self, span: &span::Id) {
        self.real().enter(span);
    }

    fn exit(&self, span: &span::Id) {
        self.real().exit(span);
    }

    fn clone_span(&self, id: &span::Id) -> span::Id {
        self.real().clone_span(id)
    }

    fn try_close(&self, id: span::Id) -> bool {
        self.real().try_close(id)
    }
    // current_span keeps its default (unknown): stencil enters no spans.
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
