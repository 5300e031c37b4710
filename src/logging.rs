//! Logs go to stderr, as text or one JSON object per line. Values, tokens
//! and passwords are never logged; key names and paths are.

pub fn init(level: tracing::Level, json: bool) {
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false);
    // try_init: a second call (tests running `run` twice) keeps the first.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.without_time().with_ansi(false).try_init()
    };
}
