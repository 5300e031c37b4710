//! notify on the files the templates depend on: the templates and their
//! includes, `file()` reads, data files and the config file.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use anyhow::{Context, Result};
use tokio::sync::mpsc::UnboundedSender;

use super::Event;
use crate::pipeline::Pipeline;
use crate::source::SourceSpec;
use crate::spec::Debounce;
use crate::template::{Dep, Deps};

/// How long a changed file must be quiet before it is read: an editor or a
/// deploy tool writing in place truncates first and writes after, and a
/// render in between would install an empty or half-written file.
pub(super) const FILE_SETTLE: Debounce = Debounce {
    min: std::time::Duration::from_millis(100),
    max: std::time::Duration::from_secs(1),
};

/// `path` as notify reports it: absolute, against the working directory.
/// Should the working directory be gone, the path as given: it then never
/// matches an event, and the file is not watched.
pub(super) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The files `deps` read (includes, `file()`), made absolute.
pub(super) fn read_by<'a>(deps: impl Iterator<Item = &'a Deps>) -> BTreeSet<PathBuf> {
    deps.flat_map(|d| &d.read)
        .filter_map(|dep| match dep {
            Dep::File { path } => Some(absolute(path)),
            _ => None,
        })
        .collect()
}

/// notify on the directories of the files templates depend on: editors and
/// stencil itself replace files by rename, which only a directory watch
/// sees.
pub(super) struct FileWatch {
    watcher: notify::RecommendedWatcher,
    dirs: BTreeSet<PathBuf>,
    /// The files whose events are sent on; shared with notify's thread.
    paths: Arc<RwLock<BTreeSet<PathBuf>>>,
    /// File sources by path.
    sources: HashMap<PathBuf, String>,
    config: Option<PathBuf>,
    tx: UnboundedSender<Event>,
}

impl FileWatch {
    /// Watches nothing yet; events for watched files go to `tx`.
    pub(super) fn new(tx: UnboundedSender<Event>) -> Result<FileWatch> {
        use notify::EventKind;
        let paths: Arc<RwLock<BTreeSet<PathBuf>>> = Arc::default();
        let watched = paths.clone();
        let events = tx.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            let watched = watched.read().unwrap_or_else(|e| e.into_inner());
            for path in event.paths {
                if watched.contains(&path) {
                    let _ = events.send(Event::File(path));
                }
            }
        })
        .context("cannot watch files")?;
        Ok(FileWatch {
            watcher,
            dirs: BTreeSet::new(),
            paths,
            sources: HashMap::new(),
            config: None,
            tx,
        })
    }

    /// Watches exactly `read` (the files the templates read: includes,
    /// `file()`) and `pipeline`'s templates, file sources and config.
    ///
    /// A file first read by the batch that started at `since` was not
    /// watched while it rendered: if it changed since then, that change is
    /// reported now rather than lost.
    pub(super) fn watch(
        &mut self,
        pipeline: &Pipeline,
        read: BTreeSet<PathBuf>,
        since: SystemTime,
    ) {
        let mut files = read;
        for unit in &pipeline.units {
            files.insert(absolute(&unit.spec.source));
        }
        let mut sources = HashMap::new();
        for (name, spec) in &pipeline.config.sources {
            if let SourceSpec::File { path, .. } = spec {
                sources.insert(absolute(path), name.clone());
            }
        }
        let config = pipeline.config.file.as_deref().map(absolute);
        for path in self.update(files, sources, config) {
            let modified = std::fs::metadata(&path).and_then(|m| m.modified());
            if modified.is_ok_and(|m| m >= since) {
                let _ = self.tx.send(Event::File(path));
            }
        }
    }

    /// Watches exactly `files` (plus the file sources and the config);
    /// returns the files that were not watched before.
    fn update(
        &mut self,
        mut files: BTreeSet<PathBuf>,
        sources: HashMap<PathBuf, String>,
        config: Option<PathBuf>,
    ) -> Vec<PathBuf> {
        use notify::Watcher;
        files.extend(sources.keys().cloned());
        files.extend(config.clone());
        let new: Vec<PathBuf> = {
            let old = self.paths.read().unwrap_or_else(|e| e.into_inner());
            files
                .iter()
                .filter(|f| !old.contains(*f))
                .cloned()
                .collect()
        };
        for file in &files {
            let Some(dir) = file.parent() else { continue };
            if self.dirs.insert(dir.to_path_buf()) {
                if let Err(e) = self.watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
                    tracing::warn!(path = %dir.display(), "cannot watch directory: {e}");
                }
            }
        }
        *self.paths.write().unwrap_or_else(|e| e.into_inner()) = files;
        self.sources = sources;
        self.config = config;
        new
    }

    /// Whether `path` is the config file.
    pub(super) fn is_config(&self, path: &Path) -> bool {
        self.config.as_deref() == Some(path)
    }

    /// The file source read from `path`, if one is.
    pub(super) fn source_at(&self, path: &Path) -> Option<&str> {
        self.sources.get(path).map(String::as_str)
    }
}
