//! Never trusting a silent stream: the member that carries the watch is
//! asked at an interval whether it still serves, and the members given up
//! on whether they are back; what changed is reported to the coordinator.
//!
//! A frozen member (a stopped process, a hung disk) keeps its TCP
//! connections open and sends nothing, and a member cut off from its peers
//! has nothing to send; etcd's require-leader metadata makes the latter
//! cancel the watch, and the probe catches both.

use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::mpsc::UnboundedSender;

use super::{EtcdSource, GivenUp, SourceEvent};

/// What was last reported: the member watched and those given up on.
pub(super) type Reported = Option<(Option<String>, Vec<GivenUp>)>;

impl EtcdSource {
    /// How long one probe may take: half the interval, so a frozen member
    /// is left within 1.5 intervals, and never more than the request
    /// timeout.
    fn probe_timeout(&self) -> Duration {
        (self.probe_interval / 2).min(self.client.timeout())
    }

    /// Probes `member` every interval until a probe fails, and returns
    /// why. Meanwhile the members given up on are probed too, so one that
    /// answers again is back in the order (and off `/status`).
    pub(super) async fn probe_until_failure(
        &self,
        member: usize,
        key: &[u8],
        tx: &UnboundedSender<SourceEvent>,
    ) -> String {
        let timeout = self.probe_timeout();
        loop {
            tokio::time::sleep(self.probe_interval).await;
            let down = self.client.members.down();
            let others = join_all(
                down.iter()
                    .filter(|&&i| i != member)
                    .map(|&i| self.client.probe(i, key, timeout)),
            );
            let (result, _) = tokio::join!(self.client.probe(member, key, timeout), others);
            self.report_members(tx, Some(member));
            if let Err(e) = result {
                return format!("{e:#}");
            }
        }
    }

    /// Sends which member the watch is on and those given up on, when that
    /// differs from what was sent last.
    pub(super) fn report_members(&self, tx: &UnboundedSender<SourceEvent>, member: Option<usize>) {
        let watching = member.map(|i| self.client.members.shown(i).to_string());
        let given_up = self.client.members.given_up();
        let now = Some((watching.clone(), given_up.clone()));
        {
            let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
            if *reported == now {
                return;
            }
            *reported = now;
        }
        let _ = tx.send(SourceEvent::Members {
            source: self.name.clone(),
            watching,
            given_up,
        });
    }
}
