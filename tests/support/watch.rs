//! A source's watch driven from a test, as the coordinator starts it: the
//! events it sends, read with deadlines. Used by the Consul and the
//! snapshot tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stencil::{Source, SourceEvent, WatchSpec};
use tokio::sync::mpsc::UnboundedReceiver;

/// What a watch covers: these keys and these prefixes, no catalog query.
pub fn spec(keys: &[&str], prefixes: &[&str]) -> WatchSpec {
    WatchSpec {
        keys: keys.iter().map(|k| k.to_string()).collect(),
        prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        catalog: Default::default(),
    }
}

/// The source's watch running on the runtime, named "kv"; aborted on drop.
pub struct Watch {
    rx: UnboundedReceiver<SourceEvent>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Watch {
    pub fn start(source: Arc<dyn Source>, spec: WatchSpec) -> Watch {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let future = source
            .watch("kv".into(), spec, tx)
            .expect("a network source");
        Watch {
            rx,
            task: Some(stencil::async_runtime().spawn(future)),
        }
    }

    /// The next event, within a generous deadline.
    #[track_caller]
    pub fn next(&mut self) -> SourceEvent {
        loop {
            let event = stencil::block_on(async {
                tokio::time::timeout(Duration::from_secs(30), self.rx.recv()).await
            })
            .expect("no event arrived in time")
            .expect("the watch ended");
            // How many queries are parked is for /status (tested through
            // the binary), not a change.
            if !matches!(event, SourceEvent::Queries { .. }) {
                return event;
            }
        }
    }

    /// Waits for an event `want` accepts, skipping others.
    #[track_caller]
    pub fn until(&mut self, what: &str, want: impl Fn(&SourceEvent) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event =
                stencil::block_on(async { tokio::time::timeout(left, self.rx.recv()).await })
                    .unwrap_or_else(|_| panic!("no {what} in time"))
                    .expect("the watch ended");
            if want(&event) {
                return;
            }
        }
    }

    /// Waits for a change that includes `key`, skipping other events.
    #[track_caller]
    pub fn changed_key(&mut self, key: &str) {
        self.until(
            &format!("change of {key}"),
            |e| matches!(e, SourceEvent::Changed { keys, .. } if keys.iter().any(|k| k == key)),
        );
    }

    /// The next event, which must be a change; returns its keys.
    #[track_caller]
    pub fn changed(&mut self) -> Vec<String> {
        match self.next() {
            SourceEvent::Changed { source, keys } => {
                assert_eq!(source, "kv");
                keys
            }
            other => panic!("expected a change, got {other:?}"),
        }
    }

    /// Changed keys until every expected one was seen (a real Consul may
    /// split changes over several replies).
    #[track_caller]
    pub fn collect(&mut self, expected: &[&str]) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen: Vec<String> = Vec::new();
        while !expected.iter().all(|e| seen.iter().any(|s| s == e)) {
            assert!(Instant::now() < deadline, "saw only {seen:?}");
            seen.extend(self.changed());
        }
        seen.sort();
        seen.dedup();
        seen
    }

    /// Waits for the watch to end by itself, returning its result.
    pub fn result(mut self) -> anyhow::Result<()> {
        let task = self.task.take().unwrap();
        stencil::block_on(async { tokio::time::timeout(Duration::from_secs(30), task).await })
            .expect("the watch did not end")
            .expect("the watch panicked")
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
