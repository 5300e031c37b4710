//! Service discovery through Consul: catalog reads cached per snapshot
//! like keys, and one blocking query per distinct catalog query, watched
//! as KV is (`watch`): from the index the render read, an index that goes
//! backwards resets to 0, an unchanged index or an unchanged (sorted)
//! answer reports nothing, queries that bring no change are at least
//! `MIN_INTERVAL` apart.

use anyhow::Result;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use super::client::{CatalogReply, is_denied, refused};
use super::watch::{Health, MIN_INTERVAL, Streak, until_closed};
use super::{AclFiltered, ConsulSource, Read};
use crate::runtime;
use crate::source::SourceEvent;
use crate::source::catalog::{CatalogData, CatalogQuery};

impl ConsulSource {
    /// `service()` and friends: one request per distinct query and
    /// snapshot.
    pub(super) fn read_catalog(&self, query: &CatalogQuery) -> Result<CatalogData> {
        if let Some(read) = self.lock().catalog.get(query) {
            return Ok(read.value.clone());
        }
        let reply = runtime::block_on(self.client.catalog(query, None))?;
        self.check_filtered_catalog(query, &reply)?;
        self.lock().catalog.insert(
            query.clone(),
            Read {
                index: reply.index,
                value: reply.data.clone(),
            },
        );
        Ok(reply.data)
    }

    /// An answer the ACLs filtered (the token may not read some services
    /// or nodes: Consul leaves them out, never answers 403) is partial: an
    /// error, or with `acl_filtered = "warn"` a warning once per query, as
    /// for a KV prefix. An upstream list silently missing instances is
    /// what this guards against.
    fn check_filtered_catalog(&self, query: &CatalogQuery, reply: &CatalogReply) -> Result<()> {
        if !reply.filtered {
            return Ok(());
        }
        let what = format!(
            "consul source {:?}: the answer to {query} at {} was filtered by ACLs: the token \
             may not read some of the services or nodes",
            self.name,
            self.client.address()
        );
        match self.acl_filtered {
            AclFiltered::Error => Err(refused(format!(
                "{what}, so the list would be partial (give the token service:read and \
                 node:read on them, or set acl_filtered = \"warn\" on the source)"
            ))),
            AclFiltered::Warn => {
                let first = self
                    .warned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(query.to_string());
                if first {
                    tracing::warn!(source = %self.name, "{what}; using what it may read (acl_filtered = \"warn\")");
                }
                Ok(())
            }
        }
    }

    /// What the snapshot or an earlier watch knows of `query`, the newer.
    fn known_catalog(&self, query: &CatalogQuery) -> Option<Read<CatalogData>> {
        let rendered = self.lock().catalog.get(query).cloned();
        let watched = self
            .watched_catalog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(query)
            .cloned();
        match (rendered, watched) {
            (Some(r), Some(w)) if w.index > r.index => Some(w),
            (Some(r), _) => Some(r),
            (None, w) => w,
        }
    }

    /// One catalog query, blocking again and again until `tx` closes; a
    /// changed answer sends [`SourceEvent::CatalogChanged`]. After a
    /// failure the next read does not block, so the source is seen to be
    /// back at once.
    pub(super) async fn watch_catalog(
        &self,
        query: CatalogQuery,
        tx: &UnboundedSender<SourceEvent>,
        health: &Health<'_>,
    ) -> Result<()> {
        let known = self.known_catalog(&query);
        let mut index = known.as_ref().map_or(0, |k| k.index);
        let mut data = known.map(|k| k.value);
        let mut streak = Streak::default();
        let mut pace: Option<Instant> = None;
        loop {
            if let Some(started) = pace.take()
                && until_closed(tx, tokio::time::sleep_until(started + MIN_INTERVAL))
                    .await
                    .is_none()
            {
                return Ok(());
            }
            let started = Instant::now();
            let block = (!streak.failing).then_some((index, self.query_wait));
            let read = async {
                let reply = self.client.catalog(&query, block).await?;
                self.check_filtered_catalog(&query, &reply).map(|()| reply)
            };
            let Some(result) = until_closed(tx, read).await else {
                return Ok(());
            };
            let reply = match result {
                Ok(reply) => reply,
                Err(e) if is_denied(&e) => {
                    return Err(e.context(format!(
                        "the Consul watch of source {:?} stopped",
                        self.name
                    )));
                }
                Err(e) => {
                    let (delay, first) = streak.failed();
                    let error = format!("{e:#}");
                    tracing::warn!(source = %self.name, "consul watch of {query}: {error}; next attempt in {} ms, from index {index}", delay.as_millis());
                    health.failed(error, first);
                    if until_closed(tx, tokio::time::sleep(delay)).await.is_none() {
                        return Ok(());
                    }
                    continue;
                }
            };
            streak.answered(health);
            if !self.absorb_catalog(&query, reply, &mut index, &mut data) {
                pace = Some(started);
                continue;
            }
            tracing::debug!(source = %self.name, "consul: the answer to {query} changed");
            let event = SourceEvent::CatalogChanged {
                source: self.name.clone(),
                queries: vec![query.clone()],
            };
            if tx.send(event).is_err() {
                return Ok(());
            }
        }
    }

    /// Takes in an answer: the index for the next query (reset to 0 when
    /// it went backwards), and whether the sorted answer changed (then
    /// remembered, for a watch restarted later).
    fn absorb_catalog(
        &self,
        query: &CatalogQuery,
        reply: CatalogReply,
        index: &mut u64,
        data: &mut Option<CatalogData>,
    ) -> bool {
        let unchanged_index = reply.index == *index && data.is_some();
        *index = if reply.index < *index {
            tracing::info!(source = %self.name, "consul index of {query} went backwards ({index} -> {}); starting over from 0", reply.index);
            0
        } else {
            reply.index.max(1)
        };
        if unchanged_index || data.as_ref() == Some(&reply.data) {
            return false;
        }
        self.watched_catalog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                query.clone(),
                Read {
                    index: reply.index.max(1),
                    value: reply.data.clone(),
                },
            );
        *data = Some(reply.data);
        true
    }
}
