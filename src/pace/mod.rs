//! The pace of requests: a rate that finds what the gateway allows, never
//! above the ceiling `--rate`. Pure: the caller passes the time.
//!
//! **Booking.** The rate is applied with GCRA (the generic cell rate
//! algorithm, as governor and most gateways use) when a request *books* its
//! slot rather than when it wakes up: a request books the next slot, sleeps
//! until it, and goes. A limiter that decides at wake-up time (governor's
//! `until_ready`) counts each wake-up's lateness (up to a timer tick)
//! against every later request, so a run fell 3% short of `--rate`; booked
//! slots keep the exact spacing whatever the wake-ups do. A slot less than
//! a tick away is not slept to but yielded to (the dispatcher's `wait_for_slot`):
//! many fall within one tick at a fast pace, and a sleep would make each
//! up to a tick late, which at full speed cost 12% of the rate. With `--burst 1`
//! booked slots are one interval apart, so no window of the rate's period
//! holds more than its N requests.
//!
//! **Learning the limit.** SOGET does not publish a subscription's limit,
//! so `--rate` is a guess, often too high. The controller follows the AWS
//! SDKs' adaptive retry mode and TCP:
//! - A 429 for a request sent after the last decrease is a congestion
//!   event: the rate drops to [`BETA`] × the rate the gateway was really
//!   accepting (answers that were not 429, per second, over up to the last
//!   minute), which is remembered as the limit; every request pauses once,
//!   for that 429's `Retry-After`. 429s for requests sent before the
//!   decrease are the same event (one decrease per round trip, as TCP).
//! - The rate then climbs back, fast and concave, to [`HOLD`] × the limit
//!   in [`RECOVER`], holds there for [`PLATEAU`], and only then probes
//!   above it slowly ([`PROBE_STEP`] per [`PROBE_EVERY`]): at most one event
//!   per minute or so once the limit is known. The first event's limit is
//!   a guess (a burst read by the second, a sliding window of 0.95 s read
//!   as one of a second): it is probed after [`FIRST_PLATEAU`], faster and
//!   faster (convex, as CUBIC's probing), until an event on the way back up
//!   confirms a limit.
//! - A 429 while climbing back or holding under the learnt limit (not
//!   probing above it) says the limit was read high: what got through
//!   reads a token bucket high, as it refilled during the pause and let a
//!   burst through after. Such misses in a row lower the limit faster
//!   (to the pace refused, then 0.98 of it, then 0.98³ each time: TCP's
//!   backoff on repeated losses), so a bucket's rate is found in three
//!   or four events rather than one event per 2%; never below what got
//!   through since the last decrease, pause included (a bucket's rate),
//!   so a streak does not overshoot.
//! - If 429s do not become rarer when the pace falls, they are not about
//!   the pace (client-side adaptive throttling's rule): a judgement that
//!   finds a few cuts the rate once more and judges again; none then says
//!   the rate was just over the limit (a bucket a little above its rate
//!   refuses only the excess), about as many says noise: the decrease is
//!   undone, their share is taken as noise, and a 429 within it only makes
//!   its own row wait its `Retry-After`.
//! - A gateway that states its limit (`RateLimit-Policy`, see
//!   [`crate::ratelimit`]) is kept to from its first answer: the pace goes
//!   no faster than [`HOLD`] × what it states.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

mod accepted;
mod judge;

use accepted::Accepted;
use judge::Evaluation;

/// The decrease at a congestion event: the rate goes to this share of the
/// rate the gateway accepted.
pub const BETA: f64 = 0.9;
/// After a decrease the rate climbs back to this share of the learnt limit.
pub const HOLD: f64 = 0.98;
/// How long the climb back takes.
pub const RECOVER: Duration = Duration::from_secs(5);
/// How long the rate holds below the learnt limit before probing above it.
pub const PLATEAU: Duration = Duration::from_secs(60);
/// The same after the first event: a limit learnt from one burst is a
/// guess (a window of 0.95 s read as one of a second), so it is probed soon.
pub const FIRST_PLATEAU: Duration = Duration::from_secs(10);
/// Probing above the learnt limit: this share of it more every...
pub const PROBE_STEP: f64 = 0.01;
/// ...this long; while the limit is a guess, faster and faster (+1% after
/// 5 s, +3% after 10 s, +10% after 20 s, +21% after 30 s).
pub const PROBE_EVERY: Duration = Duration::from_secs(10);
/// Lowest share of `--rate` the pace goes down to.
pub const MIN_FACTOR: f64 = 1.0 / 64.0;
/// Longest pause taken from one 429 (the dispatcher stops the run rather
/// than wait longer).
pub const MAX_PAUSE: Duration = Duration::from_secs(3600);
/// Pause when a 429 says nothing of how long to wait.
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(1);
/// After a decrease, requests sent in this first stretch are not judged:
/// a gateway's window still counts the old pace for a moment.
pub const SETTLE: Duration = Duration::from_secs(1);
/// Answers a decrease is judged on...
pub const EVALUATE_AFTER: u32 = 40;
/// ...over at least this long (a gateway's count over a shorter span says
/// little of its limit).
pub const EVALUATE_FOR: Duration = Duration::from_secs(1);
/// Answers the share of 429s is measured over.
const RECENT: usize = 50;
/// Horizon of the accepted rate.
const HORIZON: Duration = Duration::from_secs(60);
/// A share of 429s above this is a limit being hit, never noise.
pub const NOISE_MAX: f64 = 0.15;

/// What a 429 means for its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// A congestion event: the rate dropped and every request pauses until
    /// this moment; the row books a new slot.
    Paused { until: Instant },
    /// Part of an event already reacted to: the row books a new slot (the
    /// pause in force covers it).
    SameEvent,
    /// Not about the pace: only this row waits, this long, then books.
    RowWaits(Duration),
}

#[derive(Debug, Clone)]
pub struct Pace {
    /// `--rate`, requests per second: never exceeded.
    ceiling: f64,
    /// The limit the gateway states (`RateLimit-Policy`), if it does: not
    /// exceeded either.
    stated: Option<f64>,
    /// Requests that may go back to back after an idle spell (`--burst`).
    burst: u32,
    /// The rate when the current climb started, and when it started.
    climb_from: f64,
    climb_at: Option<Instant>,
    /// The limit learnt at the last event (requests per second).
    limit: Option<f64>,
    /// Last decrease.
    cut_at: Option<Instant>,
    /// The learnt limit was met again by a climb (an event while climbing,
    /// holding or probing): no longer a guess.
    confirmed: bool,
    evaluation: Option<Evaluation>,
    /// Share of 429s that is not about the pace.
    noise: f64,
    /// Recent answers, `true` for a 429.
    recent: VecDeque<bool>,
    accepted: Accepted,
    paused_until: Option<Instant>,
    /// GCRA's theoretical arrival time of the next request.
    tat: Option<Instant>,
    /// Bumped whenever the rate drops or a pause begins: slots booked
    /// before were booked at the old pace and are booked again.
    epoch: u64,
    /// Lowest rate so far.
    lowest: f64,
    /// Events in a row below the learnt limit (see [`Pace::decrease`]).
    misses: u32,
    /// The longest `Retry-After` of an event: a hint of the gateway's
    /// counting period (a second, a minute).
    period_hint: Duration,
}

impl Pace {
    /// A pace at `interval` (`--rate`'s) between requests at most.
    pub fn new(interval: Duration, burst: u32, now: Instant) -> Pace {
        let ceiling = 1.0 / interval.as_secs_f64().max(1e-9);
        Pace {
            ceiling,
            stated: None,
            burst: burst.max(1),
            climb_from: ceiling,
            climb_at: None,
            limit: None,
            cut_at: None,
            confirmed: false,
            evaluation: None,
            noise: 0.0,
            recent: VecDeque::with_capacity(RECENT),
            accepted: Accepted::new(now),
            paused_until: None,
            tat: None,
            epoch: 0,
            lowest: ceiling,
            period_hint: Duration::ZERO,
            misses: 0,
        }
    }

    /// Changes whenever slots booked before must be booked again.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The rate in force at `now`, requests per second.
    pub fn rate(&self, now: Instant) -> f64 {
        let floor = self.ceiling * MIN_FACTOR;
        let top = self.top();
        let Some(limit) = self.limit else {
            return top;
        };
        // While a decrease is judged, the rate stays where it was cut to.
        let Some(at) = self.climb_at else {
            return self.climb_from.clamp(floor, top);
        };
        let t = now.saturating_duration_since(at);
        let hold = (limit * HOLD).max(floor);
        let plateau = if !self.confirmed {
            FIRST_PLATEAU
        } else {
            PLATEAU
        };
        let rate = if t < RECOVER {
            // Concave: most of the way back in the first second or two.
            let left = 1.0 - t.as_secs_f64() / RECOVER.as_secs_f64();
            self.climb_from + (hold - self.climb_from) * (1.0 - left.powi(3))
        } else if t < RECOVER + plateau {
            hold
        } else {
            let probing = (t - RECOVER - plateau).as_secs_f64() / PROBE_EVERY.as_secs_f64();
            // A guess is probed faster and faster (convex, as CUBIC's
            // probing), a limit found again steadily.
            let steps = if !self.confirmed {
                let quick = 2.0 * probing;
                quick * (1.0 + quick) / 2.0
            } else {
                probing
            };
            hold + limit * PROBE_STEP * steps
        };
        rate.clamp(floor, top)
    }

    /// The fastest the pace goes: `--rate`, or [`HOLD`] × the gateway's
    /// stated limit if lower (the margin absorbs the requests sent before
    /// the first answer stated it, and the gateway's clock).
    fn top(&self) -> f64 {
        self.stated
            .map_or(self.ceiling, |s| (HOLD * s).min(self.ceiling))
    }

    /// The gateway states its limit (`RateLimit-Policy`), requests per
    /// second: the pace goes no faster (the learning goes on below it, for
    /// 429s that other clients of the key cause). `true` if it is news.
    pub fn stated(&mut self, per_second: f64) -> bool {
        let per_second = per_second.max(self.ceiling * MIN_FACTOR);
        if self.stated == Some(per_second) {
            return false;
        }
        if self.stated.is_none_or(|s| per_second < s) {
            // Slots booked at the faster pace are booked again.
            self.epoch += 1;
        }
        self.stated = Some(per_second);
        true
    }

    /// Share of `--rate` in force at `now`.
    pub fn factor(&self, now: Instant) -> f64 {
        self.rate(now) / self.ceiling
    }

    /// Lowest share of `--rate` the pace went down to.
    pub fn lowest_factor(&self) -> f64 {
        self.lowest / self.ceiling
    }

    /// The limit learnt from the gateway, requests per second, if any.
    pub fn learnt_limit(&self) -> Option<f64> {
        self.limit
    }

    /// Whether a decrease is being judged.
    pub fn judging(&self) -> bool {
        self.evaluation.is_some()
    }

    /// The state, for a debug log line.
    pub fn state(&self, now: Instant) -> String {
        format!(
            "rate {:.1}/s, limit {:?}, noise {:.3}, judging {:?}, recent 429 share {:.2}",
            self.rate(now),
            self.limit.map(|l| (l * 10.0).round() / 10.0),
            self.noise,
            self.evaluation.map(|e| (e.answered, e.throttled)),
            self.recent_share()
        )
    }

    /// Until when every request is paused, if it is at `now`.
    pub fn paused_until(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|until| now < *until)
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
        let interval = Duration::from_secs_f64(1.0 / self.rate(earliest));
        let tolerance = interval.saturating_mul(self.burst - 1);
        let tat = self.tat.unwrap_or(earliest);
        let slot = earliest.max(tat.checked_sub(tolerance).unwrap_or(earliest));
        self.tat = Some(tat.max(slot) + interval);
        slot
    }

    fn remember(&mut self, throttled: bool) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(throttled);
    }

    /// Share of 429s among recent answers.
    fn recent_share(&self) -> f64 {
        if self.recent.is_empty() {
            return 0.0;
        }
        self.recent.iter().filter(|t| **t).count() as f64 / self.recent.len() as f64
    }

    fn sent_after_cut(&self, sent_at: Instant) -> bool {
        self.cut_at.is_some_and(|cut| sent_at >= cut)
    }

    /// An answer that was not a 429, to a request sent at `sent_at`.
    pub fn accepted(&mut self, sent_at: Instant, now: Instant) {
        self.accepted.add(now);
        self.remember(false);
        if let Some(e) = &mut self.evaluation
            && sent_at >= e.from
        {
            e.answered += 1;
        }
        self.evaluate(now);
    }

    /// A 429 answered at `now` to a request sent at `sent_at`.
    pub fn throttled(
        &mut self,
        sent_at: Instant,
        now: Instant,
        retry_after: Option<Duration>,
    ) -> Throttle {
        self.remember(true);
        let wait = retry_after
            .unwrap_or(DEFAULT_PAUSE)
            .clamp(Duration::from_millis(100), MAX_PAUSE);
        let after_cut = self.sent_after_cut(sent_at);
        if let Some(e) = &mut self.evaluation {
            if sent_at >= e.from {
                e.answered += 1;
                e.throttled += 1;
            }
            self.evaluate(now);
        }
        if self.cut_at.is_some() && !after_cut {
            return Throttle::SameEvent;
        }
        if let Some(e) = self.evaluation {
            // The last decrease is still being judged. A request sent
            // while the gateway's count of the old pace drained only waits
            // its Retry-After; a judged one books again at the decreased
            // pace, which is what is judged (were it to wait holding its
            // slot, the slots would bound what is sent, and the judgement
            // would read the limit as what --concurrency rows a second get
            // through).
            return if sent_at < e.from {
                Throttle::RowWaits(wait)
            } else {
                Throttle::SameEvent
            };
        }
        // 429s no more frequent than the noise already seen: not the pace.
        if self.noise > 0.0 && self.recent_share() < 2.0 * self.noise + 0.05 {
            return Throttle::RowWaits(wait);
        }
        self.decrease(now, wait)
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
        let total = slots[199] - slots[0];
        assert!(
            total >= ms(5 * 199) && total <= ms(5 * 199 + 1),
            "{total:?}"
        );
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

    /// A pace at --rate 100/s whose gateway let 20/s through for 3 s, then
    /// answered 429 (`retry_after`) at `now`.
    fn hit(retry_after: Duration) -> (Pace, Instant, Throttle) {
        let t0 = Instant::now();
        let mut p = Pace::new(ms(10), 1, t0);
        for i in 0..60 {
            p.accepted(t0, t0 + ms(50 * i));
        }
        let now = t0 + ms(3000);
        let reaction = p.throttled(now, now, Some(retry_after));
        (p, now, reaction)
    }

    #[test]
    fn a_429_pauses_everyone_once_and_sets_the_rate_below_what_was_let_through() {
        let (mut p, now, reaction) = hit(ms(800));
        let until = now + ms(800);
        assert_eq!(reaction, Throttle::Paused { until });
        let limit = p.learnt_limit().unwrap();
        assert!((limit - 20.0).abs() < 1.5, "{limit}");
        assert!((p.rate(until) - BETA * limit).abs() < 0.01);
        assert!(p.reserve(now) >= until);
        // 429s for requests sent before the decrease: the same event, no
        // second pause or decrease.
        for i in 0..8 {
            assert_eq!(
                p.throttled(now - ms(10 + i), now + ms(i), Some(Duration::from_secs(2))),
                Throttle::SameEvent
            );
        }
        assert_eq!(p.paused_until(now), Some(until));
        assert!((p.rate(until) - BETA * limit).abs() < 0.01);
    }

    #[test]
    fn a_long_wait_says_the_gateway_counts_per_minute() {
        // 60 let through in 3 s, then "wait 50 s": a window of a minute
        // that admits 60 a minute, not 20 a second.
        let (p, _, _) = hit(Duration::from_secs(50));
        let limit = p.learnt_limit().unwrap();
        assert!((limit - 1.0).abs() < 0.6, "{limit}");
    }

    #[test]
    fn the_rate_climbs_back_holds_below_the_limit_then_probes_and_never_passes_the_ceiling() {
        let (mut p, now, reaction) = hit(ms(500));
        let Throttle::Paused { until } = reaction else {
            panic!("not an event: {reaction:?}")
        };
        let limit = p.learnt_limit().unwrap();
        // Judged first, at the decreased rate: it holds while no answer
        // says whether it helped.
        assert!((p.rate(until + Duration::from_secs(30)) - BETA * limit).abs() < 1e-9);
        // 40 answers of requests sent after it settled, none a 429.
        let judged = until + SETTLE;
        for i in 0..40 {
            p.accepted(judged + ms(60 * i), judged + ms(60 * i + 40));
        }
        let start = judged + ms(60 * 39 + 40);
        assert!(start > now);
        let at = |s: f64| p.rate(start + Duration::from_secs_f64(s)) / limit;
        assert!(at(0.0) < at(1.0) && at(1.0) < at(2.0), "climbs");
        assert!(
            at(1.0) > 0.93,
            "concave: most of the way in a second ({})",
            at(1.0)
        );
        assert!((at(5.0) - HOLD).abs() < 1e-9);
        // A first event's limit is a guess: probed after a short plateau,
        // slowly at first, then faster.
        assert!((at(15.0) - HOLD).abs() < 1e-9, "holds");
        let probe = |s: f64| at(5.0 + FIRST_PLATEAU.as_secs_f64() + s) - HOLD;
        assert!((probe(5.0) - PROBE_STEP).abs() < 1e-9, "{}", probe(5.0));
        assert!(
            (probe(10.0) - 3.0 * PROBE_STEP).abs() < 1e-9,
            "{}",
            probe(10.0)
        );
        // Far later the ceiling caps it.
        assert_eq!(p.rate(start + Duration::from_secs(100_000)), 100.0);
    }

    #[test]
    fn throttling_that_stays_below_the_limit_is_noise_and_the_decrease_is_undone() {
        let (mut p, now, reaction) = hit(ms(500));
        let Throttle::Paused { until } = reaction else {
            panic!("not an event")
        };
        // After it settled: 1 in 20 still answered 429, over two rounds
        // of judgement, the second at a slower pace.
        let judged = until + SETTLE;
        let mut t = judged;
        for i in 0..200 {
            t = judged + ms(25 * i);
            if i % 20 == 3 {
                p.throttled(t, t + ms(40), Some(ms(1000)));
            } else {
                p.accepted(t, t + ms(40));
            }
        }
        let later = t + ms(100);
        assert!(later > now);
        assert!(
            (p.rate(later) - 100.0).abs() < 1e-9,
            "back to --rate: {}",
            p.rate(later)
        );
        // From now on such a 429 only makes its row wait.
        assert_eq!(
            p.throttled(later, later + ms(40), Some(ms(1000))),
            Throttle::RowWaits(ms(1000))
        );
        assert!(p.paused_until(later + ms(40)).is_none());
    }

    #[test]
    fn a_few_429s_that_stop_when_the_pace_slows_are_the_limit_not_noise() {
        let (mut p, _, reaction) = hit(ms(500));
        let Throttle::Paused { until } = reaction else {
            panic!("not an event")
        };
        // A token bucket a little below the cut pace refuses only the
        // excess: 1 in 20 in the first round, none once slower.
        let judged = until + SETTLE;
        let mut t = judged;
        let mut refusing = true;
        for i in 0..200 {
            t = judged + ms(25 * i);
            if refusing && p.evaluation.is_some_and(|e| e.few_before.is_some()) {
                refusing = false;
            }
            if refusing && i % 20 == 3 {
                p.throttled(t, t + ms(40), Some(ms(1000)));
            } else {
                p.accepted(t, t + ms(40));
            }
        }
        assert!(!refusing, "no second round of judgement");
        assert!(!p.judging());
        assert_eq!(p.noise, 0.0);
        // The limit is at most what got through in the round that found
        // a few (19 in 20 of the answers, 40 a second), not the 20/s the
        // first event read nor the undo.
        let limit = p.learnt_limit().unwrap();
        assert!(limit <= 40.0 * 19.0 / 20.0 + 1e-9, "{limit}");
        // A later 429 is an event again, not a row that waits.
        let later = t + Duration::from_secs(1);
        assert!(matches!(
            p.throttled(later, later + ms(40), Some(ms(1000))),
            Throttle::Paused { .. }
        ));
    }

    /// Answers every request accepted, at the pace's rate, from `from`
    /// for `span`; returns the end.
    fn feed(p: &mut Pace, from: Instant, span: Duration) -> Instant {
        let mut t = from;
        while t < from + span {
            p.accepted(t, t);
            t += Duration::from_secs_f64(1.0 / p.rate(t));
        }
        t
    }

    #[test]
    fn events_in_a_row_below_the_learnt_limit_shrink_it_faster_and_faster() {
        let t0 = Instant::now();
        let mut p = Pace::new(ms(10), 1, t0);
        let mut t = feed(&mut p, t0, Duration::from_secs(3));
        let mut limits = Vec::new();
        let mut paces = Vec::new();
        for _ in 0..4 {
            // Refused while holding under the learnt limit (or, the first
            // time, at --rate).
            paces.push(p.rate(t));
            let Throttle::Paused { until } = p.throttled(t, t, Some(ms(500))) else {
                panic!("not an event at {:?}", t - t0)
            };
            limits.push(p.learnt_limit().unwrap());
            // Nothing refused after: the decrease is judged, the rate
            // climbs back and holds.
            t = feed(&mut p, until, SETTLE + RECOVER + Duration::from_secs(2));
            assert!(!p.judging());
            assert!((p.rate(t) - HOLD * limits.last().unwrap()).abs() < 1e-6);
        }
        // The first read what got through (all of the pace); each miss in
        // a row after it takes the pace it was refused at, shrunk by 1,
        // 0.98, then 0.98^3.
        let expected = [paces[0], paces[1], paces[2] * HOLD, paces[3] * HOLD.powi(3)];
        for (i, (got, want)) in limits.iter().zip(expected).enumerate() {
            assert!(
                (got - want).abs() < 0.005 * want,
                "event {i}: {limits:?} {paces:?}"
            );
        }
        // Refused while probing above it: the count starts again, the
        // limit is the pace of the moment.
        let later = feed(&mut p, t, PLATEAU + PROBE_EVERY);
        let at = p.rate(later);
        assert!(at > HOLD * limits[3]);
        p.throttled(later, later, Some(ms(500)));
        assert!((p.learnt_limit().unwrap() - at).abs() < 0.005 * at);
    }

    /// A simulated gateway fed with the pace's slots: requests go at their
    /// slots (enough rows and concurrency), each answered `latency` later;
    /// a 429's row books again (or waits, as the pace says). Returns the
    /// accepted rate over the run and the 429s after the first minute.
    fn simulate(
        rate: f64,
        seconds: u64,
        mut gateway: impl FnMut(Instant) -> Result<(), Duration>,
    ) -> (f64, u64, f64) {
        let (achieved, late, minutes, _) = simulate_stated(rate, seconds, None, &mut gateway);
        (achieved, late, minutes)
    }

    /// [`simulate`] with a gateway that may state its limit on every
    /// answer; also returns every 429.
    fn simulate_stated(
        rate: f64,
        seconds: u64,
        stated: Option<f64>,
        mut gateway: impl FnMut(Instant) -> Result<(), Duration>,
    ) -> (f64, u64, f64, u64) {
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs(seconds);
        let latency = ms(40);
        let mut p = Pace::new(Duration::from_secs_f64(1.0 / rate), 1, t0);
        // (answer time, sent at, outcome)
        let mut flight: VecDeque<(Instant, Instant, Result<(), Duration>)> = VecDeque::new();
        let mut next = p.reserve(t0);
        let mut epoch = p.epoch();
        let (mut ok, mut late_429, mut all_429) = (0u64, 0u64, 0u64);
        loop {
            let answer = flight.front().map(|f| f.0);
            if answer.is_some_and(|a| a <= next) {
                let (at, sent, outcome) = flight.pop_front().unwrap();
                if at >= end {
                    break;
                }
                if let Some(limit) = stated {
                    p.stated(limit);
                }
                match outcome {
                    Ok(()) => {
                        ok += 1;
                        p.accepted(sent, at);
                    }
                    Err(wait) => {
                        all_429 += 1;
                        if at >= t0 + Duration::from_secs(60) {
                            late_429 += 1;
                        }
                        // A row that waits alone is one of many in the
                        // backlog: the others go on.
                        let _ = p.throttled(sent, at, Some(wait));
                    }
                }
                if p.epoch() != epoch {
                    epoch = p.epoch();
                    next = p.reserve(at);
                }
                continue;
            }
            if next >= end {
                break;
            }
            let outcome = gateway(next);
            flight.push_back((next + latency, next, outcome));
            let sent = next;
            next = p.reserve(sent);
        }
        let minutes = (seconds as f64 - 60.0) / 60.0;
        (ok as f64 / seconds as f64, late_429, minutes, all_429)
    }

    #[test]
    fn a_gateway_that_states_its_limit_is_never_refused() {
        for multiple in [1.0, 2.0, 3.0, 10.0] {
            for period in [1, 60] {
                let calls = 20 * period as u32;
                let gateway = window(calls, Duration::from_secs(period));
                let (achieved, late, _, refused) =
                    simulate_stated(20.0 * multiple, 300, Some(20.0), gateway);
                assert!(
                    achieved >= HOLD * 0.99 * 20.0,
                    "{multiple}×, {calls} per {period} s: {achieved:.2}/s"
                );
                // Only the requests sent before the first answer stated
                // the limit go faster: a few refusals at the start.
                assert_eq!(late, 0, "{multiple}×, {calls} per {period} s");
                assert!(
                    refused <= 10,
                    "{multiple}×, {calls} per {period} s: {refused} 429s"
                );
            }
        }
    }

    #[test]
    fn a_stated_limit_caps_the_pace_below_the_ceiling() {
        let t0 = Instant::now();
        let mut p = Pace::new(ms(10), 1, t0);
        let epoch = p.epoch();
        assert!(p.stated(50.0));
        assert!(!p.stated(50.0));
        assert_eq!(p.rate(t0), 49.0);
        // Slots booked at the old pace are booked again.
        assert_ne!(p.epoch(), epoch);
        // Never above --rate, whatever the gateway states.
        p.stated(500.0);
        assert_eq!(p.rate(t0), 100.0);
        p.stated(50.0);
        let slots: Vec<_> = (0..3).map(|_| p.reserve(t0) - t0).collect();
        let interval = Duration::from_secs_f64(1.0 / 49.0);
        assert_eq!(slots, [ms(0), interval, interval * 2]);
        // A 429 still counts below it (other clients share the key).
        for i in 0..100 {
            p.accepted(t0 + ms(i * 25), t0 + ms(i * 25));
        }
        let now = t0 + ms(2500);
        assert!(matches!(
            p.throttled(now - ms(10), now, Some(ms(500))),
            Throttle::Paused { .. }
        ));
        assert!(p.rate(now + ms(500)) < 49.0);
    }

    /// The sandbox's sliding window (same model).
    fn window(limit: u32, period: Duration) -> impl FnMut(Instant) -> Result<(), Duration> {
        let mut admitted: VecDeque<Instant> = VecDeque::new();
        move |now| {
            while admitted
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= period)
            {
                admitted.pop_front();
            }
            if admitted.len() < limit as usize {
                admitted.push_back(now);
                Ok(())
            } else {
                let oldest = admitted[0];
                Err(period.saturating_sub(now.saturating_duration_since(oldest)))
            }
        }
    }

    fn token_bucket(rate: f64, capacity: f64) -> impl FnMut(Instant) -> Result<(), Duration> {
        let mut tokens = capacity;
        let mut last: Option<Instant> = None;
        move |now| {
            if let Some(l) = last {
                tokens =
                    (tokens + now.saturating_duration_since(l).as_secs_f64() * rate).min(capacity);
            }
            last = Some(now);
            if tokens >= 1.0 {
                tokens -= 1.0;
                Ok(())
            } else {
                Err(Duration::from_secs_f64((1.0 - tokens) / rate).max(ms(1000)))
            }
        }
    }

    #[test]
    fn it_finds_the_limit_of_every_gateway_and_keeps_the_429s_rare() {
        let per_second = || window(20, Duration::from_secs(1));
        let per_minute = || window(1200, Duration::from_secs(60));
        let bucket = || token_bucket(20.0, 40.0);
        // As the sandbox's: a window of 0.95 s, a bucket of one second.
        let jittered = || window(20, ms(950));
        let small_bucket = || token_bucket(20.0, 20.0);
        for multiple in [1.0, 2.0, 3.0, 10.0] {
            for (name, gateway) in [
                (
                    "per second",
                    Box::new(per_second()) as Box<dyn FnMut(Instant) -> Result<(), Duration>>,
                ),
                ("per minute", Box::new(per_minute())),
                ("token bucket", Box::new(bucket())),
                ("per 0.95 s", Box::new(jittered())),
                ("token bucket of a second", Box::new(small_bucket())),
            ] {
                let (achieved, late, minutes) = simulate(20.0 * multiple, 300, gateway);
                let share = achieved / 20.0;
                assert!(
                    share >= 0.95,
                    "{name} at {multiple}×: {share:.3} of the limit"
                );
                assert!(
                    late as f64 <= minutes.max(1.0) + 1.0,
                    "{name} at {multiple}×: {late} 429s after the first minute"
                );
            }
        }
    }

    #[test]
    fn random_429s_are_not_taken_for_the_limit() {
        // 5% of requests answered 429 whatever the pace, no limit.
        let mut draws = 0u64;
        let random = move |_now: Instant| {
            draws += 1;
            // A fixed pattern, one in twenty.
            if draws % 20 == 7 {
                Err(ms(1000))
            } else {
                Ok(())
            }
        };
        // The first such 429, among the first answers, looks like a limit
        // of a few per second (what got through in the first second); two
        // rounds of judgement at that pace (about 13 s) find it is noise,
        // and the pace is back at the ceiling for good.
        let (achieved, _, _) = simulate(100.0, 300, random);
        assert!(achieved >= 0.9 * 100.0 * 0.95, "{achieved:.1}/s of 100/s");
    }

    #[test]
    fn with_nothing_refused_it_keeps_the_ceiling() {
        let (achieved, late, _) = simulate(50.0, 120, |_| Ok(()));
        assert!(achieved >= 0.99 * 50.0, "{achieved}");
        assert_eq!(late, 0);
    }

    #[test]
    fn the_pace_has_a_floor() {
        let t0 = Instant::now();
        let mut p = Pace::new(ms(10), 1, t0);
        let mut now = t0;
        for _ in 0..50 {
            now += Duration::from_secs(120);
            p.throttled(now, now, Some(ms(1)));
        }
        assert!(p.factor(now) >= MIN_FACTOR);
        assert!(p.lowest_factor() >= MIN_FACTOR);
    }
}
