//! The watch loop's heartbeat. The loop beats on every turn (and turns at
//! least every second while idle); `/healthz` fails once it has not beaten
//! for longer than `stall_timeout`, whatever stopped it: a deadlock, a
//! blocking read in the loop. The state is process-wide because there is
//! one loop per process, and atomics, so the endpoint never waits on a lock
//! the stuck loop might hold.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static START: OnceLock<Instant> = OnceLock::new();
/// Milliseconds since START at the last beat.
static LAST: AtomicU64 = AtomicU64::new(0);
/// The stall timeout in milliseconds; `u64::MAX` until the loop first beats.
static LIMIT: AtomicU64 = AtomicU64::new(u64::MAX);

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn now() -> u64 {
    millis(START.get_or_init(Instant::now).elapsed())
}

/// The loop turned; it may go `stall_timeout` without turning again.
pub fn beat(stall_timeout: Duration) {
    LAST.store(now(), Ordering::Relaxed);
    LIMIT.store(millis(stall_timeout), Ordering::Relaxed);
}

/// `/healthz`: 200 while the loop turns, 503 saying for how long it has
/// not once that is longer than the stall timeout.
pub async fn healthz() -> (axum::http::StatusCode, String) {
    let limit = LIMIT.load(Ordering::Relaxed);
    let since = now().saturating_sub(LAST.load(Ordering::Relaxed));
    if limit == u64::MAX || since <= limit {
        return (axum::http::StatusCode::OK, "ok\n".into());
    }
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "the watch loop has not turned for {}s, longer than stall_timeout ({}s)\n",
            since / 1000,
            limit / 1000
        ),
    )
}
