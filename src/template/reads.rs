//! The reads of the render in progress: what a template may read (its
//! [`Scope`]), and what it did read ([`Deps`]).
//!
//! The render in progress is found through a thread-local set for the
//! duration of the render: minijinja calls our functions from inside its VM,
//! in included templates and macros alike, and the thread-local reaches all
//! of them without threading a hidden variable through the template context.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use minijinja::value::{Kwargs, Serde, Value};
use minijinja::{Error, ErrorKind};
use serde::Serialize;

use crate::source::catalog::{CatalogData, CatalogQuery};
use crate::source::{self, Source, Sources};

/// One thing a template read while rendering.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Dep {
    Env {
        name: String,
    },
    Key {
        source: String,
        key: String,
    },
    Prefix {
        source: String,
        prefix: String,
    },
    File {
        path: PathBuf,
    },
    /// A service-discovery read: `service()`, `services()`, `nodes()`,
    /// `node()`.
    Catalog {
        source: String,
        query: CatalogQuery,
    },
}

impl fmt::Display for Dep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dep::Env { name } => write!(f, "env     {name}"),
            Dep::Key { source, key } => write!(f, "key     {source}:{key}"),
            Dep::Prefix { source, prefix } => write!(f, "prefix  {source}:{prefix}/"),
            Dep::File { path } => write!(f, "file    {}", path.display()),
            Dep::Catalog { source, query } => write!(f, "catalog {source}:{query}"),
        }
    }
}

/// What a render read, and which of those reads found nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Deps {
    pub read: BTreeSet<Dep>,
    pub missing: BTreeSet<Dep>,
    /// Sources that failed to answer (unreachable, refused): the render may
    /// succeed once they are back.
    pub failed: BTreeSet<String>,
    /// Keys whose absence failed the render (not those a default covered).
    pub waiting_for: BTreeSet<Dep>,
}

impl Deps {
    /// Whether the render may succeed later without anyone editing the
    /// template: a key that may appear, a source that may come back. The
    /// environment is read once, so an unset variable never appears.
    pub(crate) fn may_appear(&self) -> bool {
        !self.failed.is_empty() || !self.waiting_for.is_empty()
    }
}

/// What a render may read: the sources and which one is the default.
#[derive(Debug, Clone)]
pub struct Scope {
    pub sources: Sources,
    pub default_source: Option<String>,
}

/// The render in progress.
pub(super) struct RenderState {
    scope: Scope,
    /// The template's directory, which `file()` paths are relative to.
    pub(super) dir: PathBuf,
    /// What the functions may build (`tree()`'s depth, a value's size).
    pub(super) limits: super::Limits,
    deps: Mutex<Recording>,
    /// The default source's typed document as a template value, converted
    /// at its first use in the render (most templates never use it).
    document: OnceLock<Result<Option<(String, Value)>, String>>,
}

/// What the render in progress has read so far.
#[derive(Default)]
struct Recording {
    deps: Deps,
    /// Which environment variables (by their place in the process
    /// environment) are already in `deps`: a template that reads one
    /// variable many times records it once without building a `Dep` and
    /// searching the set each time (5,000 `env.X` reads spent a sixth of
    /// their render there).
    env_seen: Vec<bool>,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<RenderState>>> = const { RefCell::new(None) };
}

/// The render in progress on this thread, for the template functions.
pub(super) fn current() -> Result<Arc<RenderState>, Error> {
    CURRENT.with(|c| c.borrow().clone()).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidOperation,
            "stencil function called outside a render",
        )
    })
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a set of reads
    // inconsistent in a way that matters; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One key read: its value, and which source answered (for messages).
pub(super) struct Lookup {
    pub(super) value: Option<String>,
    pub(super) name: String,
    pub(super) src: Arc<dyn Source>,
}

impl RenderState {
    pub(super) fn new(scope: Scope, dir: PathBuf, limits: super::Limits) -> Arc<RenderState> {
        Arc::new(RenderState {
            scope,
            dir,
            limits,
            deps: Mutex::new(Recording::default()),
            document: OnceLock::new(),
        })
    }

    /// Runs `render` with `state` as this thread's render in progress (an
    /// include renders inside its includer, so the previous one comes back
    /// after), and returns its result with the reads it made.
    pub(super) fn run<R>(state: Arc<RenderState>, render: impl FnOnce() -> R) -> (R, Deps) {
        let result = CURRENT.with(|current| {
            let previous = current.replace(Some(state.clone()));
            let result = render();
            current.replace(previous);
            result
        });
        let deps = std::mem::take(&mut *lock(&state.deps)).deps;
        (result, deps)
    }

    pub(super) fn record(&self, dep: Dep) {
        lock(&self.deps).deps.read.insert(dep);
    }

    /// A read of the set environment variable `name`, the `index`th of the
    /// process environment.
    pub(super) fn record_env(&self, index: usize, name: &str) {
        let mut recording = lock(&self.deps);
        if recording.env_seen.len() <= index {
            recording.env_seen.resize(index + 1, false);
        }
        if !std::mem::replace(&mut recording.env_seen[index], true) {
            recording.deps.read.insert(Dep::Env {
                name: name.to_string(),
            });
        }
    }

    pub(super) fn record_missing(&self, dep: Dep) {
        let deps = &mut lock(&self.deps).deps;
        deps.read.insert(dep.clone());
        deps.missing.insert(dep);
    }

    /// A key whose absence fails the render: watch mode waits for it.
    pub(super) fn record_waiting(&self, dep: Dep) {
        lock(&self.deps).deps.waiting_for.insert(dep);
    }

    /// The source a KV function reads: `source="name"`, else the template's
    /// default.
    fn source(&self, kwargs: &Kwargs) -> Result<(String, Arc<dyn Source>), Error> {
        let requested: Option<String> = kwargs.get("source")?;
        kwargs.assert_all_used()?;
        self.named_source(requested)
    }

    /// The source named `requested`, else the template's default.
    fn named_source(&self, requested: Option<String>) -> Result<(String, Arc<dyn Source>), Error> {
        let Some(name) = requested.or_else(|| self.scope.default_source.clone()) else {
            let names: Vec<&str> = self.scope.sources.names().collect();
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                if names.is_empty() {
                    "no data source is configured: add one with --data FILE or [sources.NAME] in the config".to_string()
                } else {
                    format!(
                        "several sources are configured ({}): pass source=\"name\" or set data = \"name\" on the template",
                        names.join(", ")
                    )
                },
            ));
        };
        match self.scope.sources.get(&name) {
            Some(src) => Ok((name, src.clone())),
            None => Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "no source named {name:?}; configured: {}",
                    self.scope.sources.names().collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    pub(super) fn get(&self, key: &str, kwargs: &Kwargs) -> Result<Lookup, Error> {
        let (name, src) = self.source(kwargs)?;
        let key = source::normalize_key(key).to_string();
        let dep = Dep::Key {
            source: name.clone(),
            key: key.clone(),
        };
        // Recorded before reading: a read that failed is still a
        // dependency, which watch mode must watch to see the source return.
        self.record(dep.clone());
        let value = src
            .get(&key)
            .map_err(|e| self.source_error(&name, &src, &e))?;
        if value.is_none() {
            self.record_missing(dep);
        }
        Ok(Lookup { value, name, src })
    }

    /// The normalized prefix, and every key under it with its value.
    pub(super) fn list(
        &self,
        prefix: &str,
        kwargs: &Kwargs,
    ) -> Result<(String, Vec<(String, String)>), Error> {
        let (name, src) = self.source(kwargs)?;
        let prefix = source::normalize_key(prefix).to_string();
        // Recorded before reading, so a failed read is still watched.
        self.record(Dep::Prefix {
            source: name.clone(),
            prefix: prefix.clone(),
        });
        let items = src
            .list(&prefix)
            .map_err(|e| self.source_error(&name, &src, &e))?;
        Ok((prefix, items))
    }

    /// A catalog read, recorded (before reading, so a failed read is
    /// watched too). The source is `source="name"`, else the template's
    /// default when it has a catalog, else the one source that has.
    pub(super) fn catalog(
        &self,
        query: CatalogQuery,
        kwargs: &Kwargs,
    ) -> Result<CatalogData, Error> {
        let (name, src) = self.catalog_source(kwargs)?;
        self.record(Dep::Catalog {
            source: name.clone(),
            query: query.clone(),
        });
        src.catalog(&query)
            .map_err(|e| self.source_error(&name, &src, &e))
    }

    fn catalog_source(&self, kwargs: &Kwargs) -> Result<(String, Arc<dyn Source>), Error> {
        let requested: Option<String> = kwargs.get("source")?;
        kwargs.assert_all_used()?;
        if requested.is_some() {
            return self.source(&kwargs_with_source(requested));
        }
        let default = self
            .scope
            .default_source
            .as_ref()
            .and_then(|n| Some((n.clone(), self.scope.sources.get(n)?.clone())))
            .filter(|(_, s)| s.has_catalog());
        if let Some(found) = default {
            return Ok(found);
        }
        let with: Vec<(&str, &Arc<dyn Source>)> = self
            .scope
            .sources
            .iter()
            .filter(|(_, s)| s.has_catalog())
            .collect();
        match with.as_slice() {
            [(name, src)] => Ok(((*name).to_string(), (*src).clone())),
            [] => Err(Error::new(
                ErrorKind::InvalidOperation,
                "service discovery reads a Consul source, and none is configured: add one with --source consul=ADDR or [sources.NAME] kind = \"consul\"",
            )),
            several => Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "several Consul sources are configured ({}): pass source=\"name\"",
                    several
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// The default source's typed document (`vars`): `None` when there is
    /// no default source or it has no document (a key/value store); an
    /// error when the file failed to read again.
    pub(super) fn document(&self) -> Result<Option<(String, Value)>, Error> {
        let cached = self.document.get_or_init(|| {
            let Some(name) = self.scope.default_source.clone() else {
                return Ok(None);
            };
            let Some(src) = self.scope.sources.get(&name) else {
                return Ok(None);
            };
            match src.document() {
                None => Ok(None),
                Some(Ok(doc)) => Ok(Some((name, Value::from(Serde(&*doc))))),
                Some(Err(e)) => Err(self.source_failed(&name, src, &e)),
            }
        });
        cached
            .clone()
            .map_err(|e| Error::new(ErrorKind::InvalidOperation, e))
    }

    /// Why `vars` is not there: no data file is the template's default
    /// source.
    pub(super) fn no_document(&self) -> Error {
        match self.named_source(None) {
            Err(e) => e,
            Ok((name, src)) => Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "vars is a data file's document, and source {name:?} ({}) is not a data file: read it with key() or tree()",
                    src.describe()
                ),
            ),
        }
    }

    fn source_error(&self, name: &str, src: &Arc<dyn Source>, err: &anyhow::Error) -> Error {
        Error::new(
            ErrorKind::InvalidOperation,
            self.source_failed(name, src, err),
        )
    }

    /// Records that `name` failed; the message for the error.
    fn source_failed(&self, name: &str, src: &Arc<dyn Source>, err: &anyhow::Error) -> String {
        lock(&self.deps).deps.failed.insert(name.to_string());
        format!("source {name:?} ({}) failed: {err:#}", src.describe())
    }
}

/// Keyword arguments holding only `source`, for [`RenderState::source`].
fn kwargs_with_source(name: Option<String>) -> Kwargs {
    Kwargs::from_iter(name.map(|n| ("source", minijinja::Value::from(n))))
}
