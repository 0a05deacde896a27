//! The pace of requests: the rate limit, and how it adapts to 429s. Pure:
//! the caller passes the time.
//!
//! The limit is GCRA (the generic cell rate algorithm, as governor and
//! most gateways use), applied when a request *books* its slot rather than
//! when it wakes up: a request books the next slot, sleeps until it, and
//! goes. A limiter that decides at wake-up time (governor's `until_ready`)
//! counts each wake-up's lateness (up to a timer tick) against every later
//! request, so a run fell 3% short of `--rate`; booked slots keep the exact
//! spacing whatever the wake-ups do. With `--burst 1` booked slots are
//! `--rate`'s interval apart, so no window of the rate's period holds more
//! than its N requests.
//!
//! The subscription's rate limit is shared by the whole run, so a 429
//! pauses every request until its `Retry-After` has passed and slows the
//! run down; the pace then creeps back towards `--rate` while the API
//! accepts it (AIMD, as TCP does).

use std::time::{Duration, Instant};

/// Lowest share of `--rate` the pace goes down to.
pub const MIN_FACTOR: f64 = 1.0 / 64.0;
/// Share of `--rate` regained at each step back up.
pub const RAISE_STEP: f64 = 0.1;
/// Longest pause taken from one 429 (the dispatcher stops the run rather
/// than wait longer).
pub const MAX_PAUSE: Duration = Duration::from_secs(3600);
/// Pause when a 429 says nothing of how long to wait.
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Pace {
    /// Interval between requests at the full `--rate`.
    base: Duration,
    /// Requests that may go back to back after an idle spell (`--burst`).
    burst: u32,
    /// Current share of `--rate`, in `[MIN_FACTOR, 1]`.
    factor: f64,
    paused_until: Option<Instant>,
    /// GCRA's theoretical arrival time of the next request.
    tat: Option<Instant>,
    /// Last change of `factor`.
    changed_at: Instant,
    /// Bumped by every 429: slots booked before it were booked at the old
    /// pace and are booked again.
    epoch: u64,
}

impl Pace {
    pub fn new(base: Duration, burst: u32, now: Instant) -> Pace {
        Pace {
            base,
            burst: burst.max(1),
            factor: 1.0,
            paused_until: None,
            tat: None,
            changed_at: now,
            epoch: 0,
        }
    }

    /// Changes with every 429 (see [`Pace::throttled`]).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Current share of `--rate`.
    pub fn factor(&self) -> f64 {
        self.factor
    }

    /// Current interval between requests.
    pub fn interval(&self) -> Duration {
        self.base.div_f64(self.factor)
    }

    /// A 429 answered at `now`. Several 429s for requests sent before the
    /// first one's pause began (the same burst) cut the pace only once.
    pub fn throttled(&mut self, now: Instant, retry_after: Option<Duration>) {
        let pause = retry_after
            .unwrap_or(DEFAULT_PAUSE)
            .clamp(Duration::from_millis(100), MAX_PAUSE);
        let until = now.checked_add(pause).unwrap_or(now);
        self.epoch += 1;
        let in_same_burst = self.paused_until.is_some_and(|u| now < u);
        if !in_same_burst {
            self.factor = (self.factor / 2.0).max(MIN_FACTOR);
            self.changed_at = until;
        }
        self.paused_until = Some(self.paused_until.map_or(until, |u| u.max(until)));
    }

    /// An answer that was not a 429: after a quiet spell the pace goes up.
    pub fn accepted(&mut self, now: Instant) {
        if self.factor >= 1.0 {
            return;
        }
        let quiet = Duration::from_secs(5).max(self.interval() * 20);
        if now >= self.changed_at + quiet {
            self.factor = (self.factor + RAISE_STEP).min(1.0);
            self.changed_at = now;
        }
    }

    /// Whether requests are paused at `now` (without booking anything).
    pub fn is_paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|until| now < until)
    }

    /// Books the next request: the time it may go (`now` if at once).
    pub fn reserve(&mut self, now: Instant) -> Instant {
        let mut earliest = now;
        if let Some(until) = self.paused_until {
            if now < until {
                earliest = until;
            } else {
                self.paused_until = None;
            }
        }
        let interval = self.interval();
        let tolerance = interval.saturating_mul(self.burst - 1);
        let tat = self.tat.unwrap_or(earliest);
        let slot = earliest.max(tat.checked_sub(tolerance).unwrap_or(earliest));
        self.tat = Some(tat.max(slot) + interval);
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn booked_slots_are_one_interval_apart_however_late_the_wakeups() {
        let t0 = Instant::now();
        let mut p = Pace::new(ms(5), 1, t0);
        let mut slots = Vec::new();
        // Each request books when the previous one woke, 1 ms late.
        let mut now = t0;
        for _ in 0..200 {
            let slot = p.reserve(now);
            slots.push(slot);
            now = slot.max(now) + ms(1);
        }
        for pair in slots.windows(2) {
            assert!(pair[1] - pair[0] >= ms(5), "{:?}", pair[1] - pair[0]);
        }
        // 200 requests in 199 intervals: no drift from the late wake-ups.
        assert_eq!(slots[199] - slots[0], ms(5 * 199));
    }

    #[test]
    fn after_an_idle_spell_the_burst_goes_at_once_then_the_interval() {
        let t0 = Instant::now();
        let mut p = Pace::new(ms(100), 3, t0);
        let slots: Vec<_> = (0..5).map(|_| p.reserve(t0) - t0).collect();
        assert_eq!(slots, [ms(0), ms(0), ms(0), ms(100), ms(200)]);
        // Idle long enough: the burst is back.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(p.reserve(later), later);
        assert_eq!(p.reserve(later), later);
        let mut one = Pace::new(ms(100), 1, t0);
        assert_eq!(one.reserve(t0), t0);
        assert_eq!(one.reserve(t0), t0 + ms(100));
    }

    #[test]
    fn a_429_pauses_everyone_and_halves_the_pace() {
        let t0 = Instant::now();
        let mut p = Pace::new(ms(100), 1, t0);
        p.throttled(t0, Some(Duration::from_secs(2)));
        assert_eq!(p.factor(), 0.5);
        assert_eq!(p.reserve(t0 + ms(10)), t0 + ms(2000));
        // Then one request per 200 ms.
        assert_eq!(p.reserve(t0 + ms(10)), t0 + ms(2200));
        assert_eq!(p.reserve(t0 + ms(2300)), t0 + ms(2400));
    }

    #[test]
    fn a_burst_of_429s_cuts_once() {
        let t0 = Instant::now();
        let mut p = Pace::new(ms(100), 1, t0);
        for i in 0..8 {
            p.throttled(t0 + ms(i), Some(Duration::from_secs(1)));
        }
        assert_eq!(p.factor(), 0.5);
        // A 429 after the pause is a new signal.
        p.throttled(t0 + ms(1500), None);
        assert_eq!(p.factor(), 0.25);
    }

    #[test]
    fn it_creeps_back_after_quiet_spells_and_never_above_full() {
        let t0 = Instant::now();
        let mut p = Pace::new(ms(10), 1, t0);
        p.throttled(t0, Some(ms(100)));
        assert_eq!(p.factor(), 0.5);
        p.accepted(t0 + ms(200));
        assert_eq!(p.factor(), 0.5, "too soon");
        let mut t = t0;
        for _ in 0..20 {
            t += Duration::from_secs(6);
            p.accepted(t);
        }
        assert_eq!(p.factor(), 1.0);
    }

    #[test]
    fn the_pace_has_a_floor() {
        let t0 = Instant::now();
        let mut p = Pace::new(ms(10), 1, t0);
        for i in 0..20u64 {
            p.throttled(t0 + Duration::from_secs(i * 10), Some(ms(1)));
        }
        assert_eq!(p.factor(), MIN_FACTOR);
    }
}
