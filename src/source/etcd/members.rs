//! The members of an etcd cluster as stencil sees them: which answered
//! lately, which it gave up on and why, and so in which order to try them.
//!
//! Reads and the watch share this state: a member the watch's probe gave
//! up on is tried last by the next read, and a member a read timed out on
//! is tried last by the next watch. A given-up member is probed again by
//! the watch and is back in the order once it answers.

use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};
use url::Url;

/// One etcd endpoint: as the user wrote it, for messages, and parsed, for
/// requests.
pub(super) struct Endpoint {
    pub(super) shown: String,
    url: Url,
}

impl Endpoint {
    pub(super) fn parse(written: &str) -> Result<Endpoint> {
        let written = written.trim_end_matches('/');
        // etcdctl takes `host:port` as plain http.
        let shown = if written.contains("://") {
            written.to_string()
        } else {
            format!("http://{written}")
        };
        let url = Url::parse(&shown)
            .with_context(|| format!("invalid etcd endpoint {:?}", without_password(written)))?;
        if url.password().is_some() || !url.username().is_empty() {
            // The endpoint is shown in logs and on /status: no credentials
            // in it.
            anyhow::bail!(
                "etcd endpoint {:?} has a user or password in it: use username and \
                 password_file (or ETCDCTL_USER) instead",
                without_password(written)
            );
        }
        Ok(Endpoint { shown, url })
    }

    /// The URL of a gateway call (`v3/kv/range`), below the endpoint's own
    /// path, so an etcd behind a proxy's path prefix is reached too.
    pub(super) fn at(&self, path: &str) -> Url {
        let mut url = self.url.clone();
        // Fails only for URLs without an authority, which `parse` never
        // makes (it requires `://`).
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(path.split('/'));
        }
        url
    }
}

/// `scheme://user:password@host` with the user information replaced, for
/// an error about it.
fn without_password(written: &str) -> String {
    match (written.split_once("://"), written.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***{}", &written[at..]),
        (None, Some(at)) => format!("***{}", &written[at..]),
        _ => written.to_string(),
    }
}

/// What stencil knows of one member's health.
#[derive(Debug, Clone, Default)]
struct Health {
    /// When it last answered.
    answered: Option<Instant>,
    /// Given up on: since when, and why.
    down: Option<(Instant, String)>,
}

/// A member given up on, for `/status` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GivenUp {
    pub member: String,
    pub error: String,
}

/// The members of one cluster and their health.
pub(super) struct Members {
    pub(super) endpoints: Vec<Endpoint>,
    health: Mutex<Vec<Health>>,
}

impl Members {
    pub(super) fn new(endpoints: Vec<Endpoint>) -> Members {
        let health = Mutex::new(vec![Health::default(); endpoints.len()]);
        Members { endpoints, health }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Health>> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub(super) fn shown(&self, i: usize) -> &str {
        &self.endpoints[i].shown
    }

    /// The order to try the members in: those not given up on, the one
    /// that answered last first (so reads stay on one member while it
    /// answers); then those given up on, the longest given up first.
    pub(super) fn order(&self) -> Vec<usize> {
        let health = self.lock();
        let mut up: Vec<usize> = (0..health.len())
            .filter(|&i| health[i].down.is_none())
            .collect();
        // Stable: members that never answered keep the order written.
        up.sort_by(|&a, &b| health[b].answered.cmp(&health[a].answered));
        let mut down: Vec<usize> = (0..health.len())
            .filter(|&i| health[i].down.is_some())
            .collect();
        down.sort_by_key(|&i| health[i].down.as_ref().map(|(since, _)| *since));
        up.extend(down);
        up
    }

    /// Member `i` answered: it is preferred from now on.
    pub(super) fn answered(&self, i: usize) {
        let mut health = self.lock();
        health[i].answered = Some(Instant::now());
        if health[i].down.take().is_some() {
            tracing::info!("etcd member {} answers again", self.endpoints[i].shown);
        }
    }

    /// Gives up on member `i` for `why`: it is tried last until it answers.
    /// True when it was not given up on already.
    pub(super) fn give_up(&self, i: usize, why: &str) -> bool {
        let mut health = self.lock();
        match &mut health[i].down {
            Some((_, error)) => {
                *error = why.to_string();
                false
            }
            down @ None => {
                *down = Some((Instant::now(), why.to_string()));
                true
            }
        }
    }

    /// The members given up on, in the order written.
    pub(super) fn given_up(&self) -> Vec<GivenUp> {
        let health = self.lock();
        health
            .iter()
            .zip(&self.endpoints)
            .filter_map(|(h, e)| {
                h.down.as_ref().map(|(_, error)| GivenUp {
                    member: e.shown.clone(),
                    error: error.clone(),
                })
            })
            .collect()
    }

    /// The indices of the members given up on.
    pub(super) fn down(&self) -> Vec<usize> {
        let health = self.lock();
        (0..health.len())
            .filter(|&i| health[i].down.is_some())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Members {
        Members::new(
            (0..n)
                .map(|i| Endpoint::parse(&format!("127.0.0.1:{}", 2379 + i)).unwrap())
                .collect(),
        )
    }

    #[test]
    fn order_prefers_the_last_answer_and_puts_given_up_members_last() {
        let m = members(3);
        assert_eq!(m.order(), vec![0, 1, 2]);
        m.answered(2);
        assert_eq!(m.order(), vec![2, 0, 1]);
        assert!(m.give_up(2, "probe timed out"));
        assert!(!m.give_up(2, "still"));
        assert!(m.give_up(0, "refused"));
        assert_eq!(m.order(), vec![1, 2, 0]);
        assert_eq!(
            m.given_up(),
            vec![
                GivenUp {
                    member: "http://127.0.0.1:2379".into(),
                    error: "refused".into()
                },
                GivenUp {
                    member: "http://127.0.0.1:2381".into(),
                    error: "still".into()
                },
            ]
        );
        m.answered(0);
        assert_eq!(m.order(), vec![0, 1, 2]);
        assert_eq!(m.down(), vec![2]);
    }

    #[test]
    fn gateway_paths_go_below_the_endpoint_path() {
        let at = |e: &str| Endpoint::parse(e).unwrap().at("v3/kv/range").to_string();
        assert_eq!(at("127.0.0.1:2379"), "http://127.0.0.1:2379/v3/kv/range");
        assert_eq!(at("https://h:2379/"), "https://h:2379/v3/kv/range");
        assert_eq!(at("http://proxy/etcd/"), "http://proxy/etcd/v3/kv/range");
        assert_eq!(Endpoint::parse("h:1/").unwrap().shown, "http://h:1");
    }

    #[test]
    fn credentials_in_an_endpoint_are_refused_without_showing_them() {
        for written in ["http://root:hunter2@h:2379", "root:hunter2@h:2379"] {
            let e = format!("{:#}", Endpoint::parse(written).err().unwrap());
            assert!(e.contains("has a user or password"), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
