//! Blocking queries as Consul's blockingQuery runs them
//! (agent/consul/rpc.go), and the waits they take.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{DEFAULT_WAIT, MAX_WAIT, Shared, Store, lock};

/// Consul's blockingQuery (agent/consul/rpc.go, agent/blockingquery in
/// later releases): run `read`; without `min_index` return at once;
/// otherwise return when the read's index is above `min_index`, or with
/// the last read when the timeout (capped wait plus jitter) expires. A read
/// that says "not found" (the third value: KVS.Get of a missing key returns
/// errNotFound since Consul 1.12, agent/consul/kvs_endpoint.go) may return
/// on its first run when the index already moved past `min_index`; woken
/// later and still not found, it takes the new index as its floor, so a
/// query on a missing key waits for the key rather than returning on every
/// write elsewhere. None: the test cut the connection.
pub(super) async fn blocking<T>(
    srv: &Shared,
    min_index: u64,
    wait: Option<Duration>,
    mut read: impl FnMut(&Store) -> (u64, T, bool),
) -> Option<(u64, T)> {
    if min_index == 0 {
        let (idx, value, _) = read(&lock(&srv.store));
        return Some((idx, value));
    }
    let mut min_index = min_index;
    let mut not_found_before = false;
    let deadline = tokio::time::Instant::now() + query_timeout(wait);
    // Subscribed before the first read, so a change between the read and
    // the wait is not lost.
    let mut changes = srv.changes.subscribe();
    let mut kill = srv.kill_parked.subscribe();
    loop {
        let (idx, value, not_found) = read(&lock(&srv.store));
        if not_found {
            if not_found_before {
                min_index = idx;
            }
            not_found_before = true;
        }
        if idx.max(1) > min_index {
            return Some((idx, value));
        }
        let now = srv.parked.fetch_add(1, Ordering::SeqCst) + 1;
        srv.most_parked.fetch_max(now, Ordering::SeqCst);
        let _unpark = Unpark(&srv.parked);
        tokio::select! {
            _ = changes.changed() => continue,
            _ = kill.changed() => return None,
            _ = tokio::time::sleep_until(deadline) => return Some((idx, value)),
        }
    }
}

/// Decrements the parked count however the wait ends (the client may also
/// go away, dropping the handler's future).
struct Unpark<'a>(&'a AtomicUsize);

impl Drop for Unpark<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Go's time.ParseDuration: "5s", "1m30s", "1.5h", "250ms"; "0" alone
/// needs no unit. Negative durations read as zero (the default wait).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut nanos = 0f64;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..end];
        if number.is_empty() || number == "." {
            return None;
        }
        let v: f64 = number.parse().ok()?;
        rest = &rest[end..];
        let end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        nanos += v * unit;
        rest = &rest[end..];
    }
    // Go refuses what does not fit an int64 of nanoseconds.
    let d = Duration::try_from_secs_f64(nanos / 1e9)
        .ok()
        .filter(|d| *d <= Duration::from_nanos(i64::MAX.unsigned_abs()))?;
    Some(if neg { Duration::ZERO } else { d })
}

/// How long a blocking query with this `wait` is held at most: the wait
/// (default 5m, at most 10m) plus a random stagger of up to wait/16, as
/// Consul's blockingQuery does.
pub fn query_timeout(wait: Option<Duration>) -> Duration {
    use std::hash::BuildHasher;
    let base = match wait {
        Some(w) if w > MAX_WAIT => MAX_WAIT,
        Some(w) if !w.is_zero() => w,
        _ => DEFAULT_WAIT,
    };
    let span = u64::try_from((base / 16).as_nanos()).expect("at most MAX_WAIT / 16");
    // RandomState is seeded randomly: jitter without a dependency.
    let r = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    base + Duration::from_nanos(if span == 0 { 0 } else { r % span })
}
