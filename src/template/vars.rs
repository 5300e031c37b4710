//! A data file's document as template variables, typed: `vars.server.port`,
//! and each top-level key as a variable of its own (`server.port`), as
//! j2cli, minijinja-cli and Ansible give them. Booleans stay booleans,
//! numbers numbers, an empty list an empty list: the string view of
//! `key()` and `tree()` turns `false` into `"false"`, which is true.
//!
//! This is the render's root context: minijinja looks a name up in the
//! template's own variables first, then here, then in the globals. Names
//! of globals (`env`, `key`, `range` …) are never answered here, so a data
//! key cannot hide one of stencil's functions; such a key is still
//! `vars.NAME`.

use std::collections::BTreeSet;
use std::sync::Arc;

use minijinja::value::{Enumerator, Object, Value, ValueKind};

use super::reads::{Dep, RenderState};

/// The name of the whole document.
pub(super) const VARS: &str = "vars";

/// The root context of one render.
pub(super) struct DataContext {
    pub(super) state: Arc<RenderState>,
    /// The environment's globals, which keep their meaning.
    pub(super) globals: Arc<BTreeSet<String>>,
}

impl std::fmt::Debug for DataContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataContext")
    }
}

impl Object for DataContext {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let name = key.as_str()?;
        if name == VARS {
            return Some(match self.state.document() {
                Ok(Some((source, doc))) => {
                    // `vars` hands out the whole document: every key of it
                    // may be read, so a change anywhere re-renders.
                    self.state.record(Dep::Prefix {
                        source,
                        prefix: String::new(),
                    });
                    doc
                }
                Ok(None) => Value::from(self.state.no_document()),
                Err(e) => Value::from(e),
            });
        }
        if self.globals.contains(name) {
            return None;
        }
        let (source, doc) = match self.state.document() {
            Ok(Some(found)) => found,
            Ok(None) => return None,
            // The name may be in the file once it reads again: say why
            // it cannot be read, wherever it is used.
            Err(e) => return Some(Value::from(e)),
        };
        if doc.kind() != ValueKind::Map {
            return None;
        }
        let value = doc.get_attr(name).ok().filter(|v| !v.is_undefined());
        let dep = match value.as_ref().map(Value::kind) {
            Some(ValueKind::Map | ValueKind::Seq) => Dep::Prefix {
                source,
                prefix: name.to_string(),
            },
            _ => Dep::Key {
                source,
                key: name.to_string(),
            },
        };
        // A name the document lacks is read too: the render changes when
        // the file gains it.
        if value.is_some() {
            self.state.record(dep);
        } else {
            self.state.record_missing(dep);
        }
        value
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::NonEnumerable
    }
}
