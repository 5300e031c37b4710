//! Fuzzes `stencil convert`'s Go text/template parser and translator.
//!
//! For every input, with confd's and consul-template's functions:
//!
//! - nothing panics;
//! - an error's offset lies inside the input, on a character boundary (it
//!   becomes the file:line:column of the message);
//! - what translates is a template minijinja parses with the settings
//!   converted templates get (trim_blocks off): the converter never writes
//!   a template stencil then refuses.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stencil::{Template, Whitespace, go_to_jinja};

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    for consul_template in [false, true] {
        match go_to_jinja(src, consul_template) {
            Ok(converted) => {
                let ws = Whitespace {
                    trim_blocks: false,
                    lstrip_blocks: false,
                    keep_trailing_newline: true,
                };
                if let Err(e) = Template::with_whitespace(
                    std::path::Path::new("fuzz.j2"),
                    converted.jinja.clone(),
                    ws,
                ) {
                    panic!("{src:?} -> {:?} does not parse: {e:#}", converted.jinja);
                }
            }
            Err(e) => {
                assert!(e.offset <= src.len(), "{e:?}");
                assert!(src.is_char_boundary(e.offset), "{e:?}");
            }
        }
    }
});
