//! When templates are due: the quiescence period (`wait = { min, max }`)
//! of each, and retries.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::spec::Debounce;

/// Which templates are due when: each waits until its data has been quiet
/// for `wait.min`, but no longer than `wait.max` after the first change.
/// Without a wait a template is due at once.
#[derive(Debug, Default)]
pub(super) struct Debouncer {
    pending: BTreeMap<usize, (Instant, Instant, Option<Debounce>)>,
}

impl Debouncer {
    /// Records a change affecting template `index` at `now`.
    pub(super) fn touch(&mut self, index: usize, now: Instant, wait: Option<Debounce>) {
        self.pending
            .entry(index)
            .and_modify(|(_, last, w)| {
                *last = now;
                *w = wait;
            })
            .or_insert((now, now, wait));
    }

    /// Makes template `index` due at `at` (a retry), unless a change made
    /// it due sooner.
    pub(super) fn retry_at(&mut self, index: usize, at: Instant) {
        let entry = self.pending.entry(index).or_insert((at, at, None));
        if Self::deadline(entry) > at {
            *entry = (at, at, None);
        }
    }

    fn deadline((first, last, wait): &(Instant, Instant, Option<Debounce>)) -> Instant {
        match wait {
            None => *last,
            Some(w) => (*last + w.min).min(*first + w.max),
        }
    }

    /// When template `index` is due, if a change or a retry is waiting.
    pub(super) fn deadline_of(&self, index: usize) -> Option<Instant> {
        self.pending.get(&index).map(Self::deadline)
    }

    /// When the next template is due.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(Self::deadline).min()
    }

    /// Removes and returns the templates due at `now`, in order.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<usize> {
        let due: Vec<usize> = self
            .pending
            .iter()
            .filter(|(_, p)| Self::deadline(p) <= now)
            .map(|(i, _)| *i)
            .collect();
        for i in &due {
            self.pending.remove(i);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn wait(min: u64, max: u64) -> Option<Debounce> {
        Some(Debounce {
            min: Duration::from_millis(min),
            max: Duration::from_millis(max),
        })
    }

    #[test]
    fn without_a_wait_a_change_is_due_at_once() {
        let t0 = Instant::now();
        let mut d = Debouncer::default();
        d.touch(3, t0, None);
        assert_eq!(d.next_deadline(), Some(t0));
        assert_eq!(d.take_due(t0), vec![3]);
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn changes_in_quick_succession_wait_for_quiet_but_not_past_max() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Debouncer::default();
        d.touch(0, t0, wait(100, 250));
        assert_eq!(d.next_deadline(), Some(t0 + ms(100)));
        assert_eq!(d.deadline_of(0), Some(t0 + ms(100)));
        assert_eq!(d.deadline_of(1), None);
        // Another change at 80 ms pushes it to 180 ms...
        d.touch(0, t0 + ms(80), wait(100, 250));
        assert!(d.take_due(t0 + ms(100)).is_empty());
        assert_eq!(d.next_deadline(), Some(t0 + ms(180)));
        // ...and changes every 80 ms cannot push it past max (250 ms).
        d.touch(0, t0 + ms(160), wait(100, 250));
        d.touch(0, t0 + ms(240), wait(100, 250));
        assert_eq!(d.next_deadline(), Some(t0 + ms(250)));
        assert_eq!(d.take_due(t0 + ms(250)), vec![0]);
    }

    #[test]
    fn a_retry_waits_unless_a_change_comes_first() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Debouncer::default();
        d.retry_at(0, t0 + ms(250));
        assert!(d.take_due(t0 + ms(100)).is_empty());
        assert_eq!(d.take_due(t0 + ms(250)), vec![0]);
        d.touch(1, t0, None);
        d.retry_at(1, t0 + ms(250));
        assert_eq!(d.take_due(t0), vec![1], "the change is due at once");
    }

    #[test]
    fn only_due_templates_are_taken() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Debouncer::default();
        d.touch(0, t0, wait(100, 100));
        d.touch(1, t0, None);
        assert_eq!(d.take_due(t0), vec![1]);
        assert_eq!(d.take_due(t0 + ms(100)), vec![0]);
    }
}
