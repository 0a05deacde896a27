//! What the gateway let through: accepted answers per second, by answer
//! time, over the last minute, in ticks of 100 ms.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::HORIZON;

/// Accepted answers per second, by answer time, over the last minute.
#[derive(Debug, Clone)]
pub(super) struct Accepted {
    /// (tick since `origin`, count), oldest first.
    buckets: VecDeque<(u64, u32)>,
    origin: Instant,
    first: Option<Instant>,
}

/// The resolution of [`Accepted`]: a count over 1.7 s is not read as one
/// over 2 s.
const TICK: Duration = Duration::from_millis(100);

impl Accepted {
    pub(super) fn new(origin: Instant) -> Accepted {
        Accepted {
            buckets: VecDeque::new(),
            origin,
            first: None,
        }
    }

    pub(super) fn tick(&self, t: Instant) -> u64 {
        (t.saturating_duration_since(self.origin).as_millis() / TICK.as_millis()) as u64
    }

    pub(super) fn add(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        let t = self.tick(now);
        match self.buckets.back_mut() {
            Some((last, n)) if *last == t => *n += 1,
            _ => self.buckets.push_back((t, 1)),
        }
        let keep = (HORIZON.as_millis() / TICK.as_millis()) as u64;
        while self
            .buckets
            .front()
            .is_some_and(|(first, _)| t.saturating_sub(*first) >= keep)
        {
            self.buckets.pop_front();
        }
    }

    /// Accepted answers per second over `horizon` (at most a minute; or
    /// since the first one, if sooner, unless `whole`: then over the whole
    /// horizon, as a gateway's window counts them), `None` before a second
    /// of answers.
    pub(super) fn rate(&self, now: Instant, horizon: Duration, whole: bool) -> Option<f64> {
        let first = self.first?;
        if horizon < Duration::from_secs(1) {
            return None;
        }
        let horizon = horizon.min(HORIZON);
        let since_first = now.saturating_duration_since(first);
        let span = if whole {
            horizon
        } else {
            since_first.min(horizon)
        };
        if since_first.min(span) < Duration::from_secs(1) {
            return None;
        }
        // Whole ticks back from the current (partial) one, and the time
        // they cover, up to now.
        let ticks = (span.as_millis() / TICK.as_millis()) as u64;
        let from = self.tick(now).saturating_sub(ticks.saturating_sub(1));
        let covered = now
            .saturating_duration_since(self.origin + TICK * from as u32)
            .max(span.saturating_sub(TICK));
        let n: u32 = self
            .buckets
            .iter()
            .filter(|(b, _)| *b >= from)
            .map(|(_, n)| *n)
            .sum();
        Some(f64::from(n) / covered.as_secs_f64())
    }
}
