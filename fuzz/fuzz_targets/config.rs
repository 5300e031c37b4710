//! The parsers stencil wrote around its config: the TOML config file (the
//! toml crate parses; stencil validates kinds, modes, durations, commands,
//! paths), `-t SRC[:DEST[:RELOAD]]`, `--source NAME=URL`, and data files
//! flattened into keys. None of them may panic on any input; each either
//! parses or says why not.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use stencil::{Config, Debounce, WaitTarget, parse_duration, parse_signal};
use stencil::{parse_source_flag, parse_template_flag};
use stencil::{DataFormat as Format, parse_data as parse};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::from_toml(Path::new("fuzz/stencil.toml"), text);
    let _ = parse_template_flag(text);
    let _ = parse_source_flag(text);
    let _ = parse_signal(text);
    let _ = WaitTarget::parse(text);
    // Whatever parses is within the bound, so adding it to a clock cannot
    // overflow.
    if let Ok(d) = parse_duration(text) {
        assert!(d <= stencil::MAX_DURATION);
    }
    if let Ok(d) = Debounce::parse(text) {
        assert!(d.min <= d.max && d.max <= stencil::MAX_DURATION * 4);
    }
    for format in [Format::Json, Format::Toml, Format::Yaml, Format::Dotenv] {
        if let Ok(keys) = parse(format, text) {
            // Flattened keys never carry the separators they were split on.
            for k in keys.keys() {
                assert!(!k.starts_with('/') && !k.ends_with('/') || k.is_empty() || k == "/", "{k:?}");
            }
        }
    }
});
