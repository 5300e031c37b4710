//! `--wait`: a batch whose templates lack data renders them again, with
//! backoff, until they have it or the time is up.

use std::time::Instant;

use anyhow::Result;

use super::{Options, Pipeline};
use crate::source::Sources;
use crate::template::Deps;

impl Pipeline {
    /// Renders the templates; while some lack data and `wait_for_data`
    /// allows, re-reads the sources with backoff and renders those again.
    pub(super) fn render_waiting(
        &mut self,
        which: &[usize],
        opts: &Options,
    ) -> Vec<(usize, Result<String>, Deps)> {
        let deadline = opts.wait_for_data.map(|d| Instant::now() + d);
        let mut backoff = crate::runtime::Backoff::default();
        loop {
            let results: Vec<_> = which
                .iter()
                .map(|&i| {
                    let (result, deps) = self.render_one(i);
                    (i, result, deps)
                })
                .collect();
            let waiting: Vec<_> = results
                .iter()
                .filter(|(_, r, deps)| r.is_err() && deps.may_appear())
                .collect();
            let Some(deadline) = deadline else {
                return results;
            };
            let now = Instant::now();
            if waiting.is_empty() || now >= deadline {
                return results;
            }
            for (i, _, deps) in &waiting {
                let mut waiting_for: Vec<String> =
                    deps.waiting_for.iter().map(|d| d.to_string()).collect();
                waiting_for.extend(
                    deps.failed
                        .iter()
                        .map(|s| format!("source {s:?} to answer")),
                );
                tracing::info!(
                    template = %self.units[*i].spec.source.display(),
                    "waiting for data: {}",
                    waiting_for.join(", ")
                );
            }
            std::thread::sleep(backoff.next_delay().min(deadline - now));
            match Sources::open(&self.config.sources) {
                Ok(s) => self.sources = s,
                Err(e) => tracing::warn!("cannot re-read the sources: {e:#}"),
            }
        }
    }
}
