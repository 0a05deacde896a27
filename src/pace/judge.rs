//! The pace's judgement of a 429: a congestion event's decrease, and the
//! later judgement of whether it worked, was too little, or was about
//! noise (see the rules in the module above).

use std::time::{Duration, Instant};

use super::*;

/// Counts of the answers to the requests sent a while after the last
/// decrease, once the gateway's count of the old pace has drained.
#[derive(Debug, Clone, Copy)]
pub(super) struct Evaluation {
    pub(super) answered: u32,
    pub(super) throttled: u32,
    /// The rate just before the decrease (restored if it did not help).
    pub(super) undo_to: f64,
    /// Requests sent from this moment on are judged.
    pub(super) from: Instant,
    /// An earlier round of this judgement found a few 429s: what got
    /// through then (per second) and their share. The rate was cut again;
    /// a round that finds about as many makes them noise, one that finds
    /// none says that round's rate was just over the limit (a token bucket
    /// a little above its rate refuses only the excess).
    pub(super) few_before: Option<Few>,
}

/// A round of judgement that found a few 429s.
#[derive(Debug, Clone, Copy)]
pub(super) struct Few {
    pub(super) through: f64,
    pub(super) share: f64,
}

impl Pace {
    /// A congestion event at `now`: the rate drops, every request pauses.
    pub(super) fn decrease(&mut self, now: Instant, wait: Duration) -> Throttle {
        let current = self.rate(now);
        // Refused below the learnt limit (climbing back to it or holding
        // under it, not probing above): that limit was read too high. An
        // event while probing ends the count.
        let below_limit =
            self.climb_at.is_some() && self.limit.is_some_and(|l| current <= l * HOLD);
        // Met again on the way back up: the limit is known, not guessed.
        self.confirmed |= self.climb_at.is_some();
        // What the gateway let through over its counting period (guessed
        // from how long it asks to wait: a per-minute window lets a minute's
        // average, not the pace of the moment) is the limit; never above
        // the rate where 429s began (CUBIC's W_max).
        self.period_hint = self.period_hint.max(wait);
        // Gateways count per second or per minute (APIM's renewal period is
        // in seconds, up to 300): a wait over a second says a long period.
        let long_period = self.period_hint > Duration::from_millis(1500);
        // Over a short period, only what got through since the rate last
        // settled counts: a stretch of pauses and waiting rows says less.
        let horizon = if long_period {
            HORIZON
        } else {
            // Up to a minute of it: a token bucket lets a pace above its
            // rate through until its burst is spent, and only the long
            // average is its rate.
            let steady = self.climb_at.map_or(Duration::from_secs(10), |at| {
                now.saturating_duration_since(at)
            });
            HORIZON.min(steady)
        };
        let through = self
            .accepted
            .rate(now, horizon, long_period)
            .unwrap_or(current)
            .min(current);
        // Close to the rate (a probe just went over) the pace of the
        // moment is the better figure: what got through is only the pace.
        let hit_at = if !long_period && through >= 0.9 * current {
            current
        } else {
            through
        };
        // Misses in a row shrink it faster (1, 0.98, then 0.94 each): what
        // got through reads a token bucket high (refilled during the
        // pause, it let a burst through), and one miss in a row is all a
        // fair estimate gets. Never below what got through since the last
        // decrease, pause included: a bucket empty at that 429 lets no
        // more than its rate through over that stretch, so that average
        // is its rate, and the shrink does not overshoot below it.
        self.misses = if below_limit { self.misses + 1 } else { 0 };
        let shrink = HOLD.powi((1 << self.misses.clamp(1, 3).saturating_sub(1)) - 1);
        let floor = if below_limit && !long_period {
            self.cut_at
                .map(|cut| now.saturating_duration_since(cut))
                .and_then(|since| self.accepted.rate(now, since, true))
                .map_or(0.0, |r| r.min(current))
        } else {
            0.0
        };
        let hit_at = (hit_at * shrink).max(floor.min(hit_at));
        self.limit = Some(hit_at.max(self.ceiling * MIN_FACTOR));
        let cut = (BETA * hit_at).clamp(self.ceiling * MIN_FACTOR, current);
        let until = now.checked_add(wait).unwrap_or(now);
        let until = self.paused_until.map_or(until, |u| u.max(until));
        self.evaluation = Some(Evaluation {
            answered: 0,
            throttled: 0,
            undo_to: current,
            from: until + SETTLE,
            few_before: None,
        });
        self.climb_from = cut;
        self.lowest = self.lowest.min(cut);
        self.paused_until = Some(until);
        self.climb_at = None;
        self.cut_at = Some(now);
        self.epoch += 1;
        Throttle::Paused { until }
    }

    /// Judges the last decrease once enough of the requests sent after it
    /// (past [`SETTLE`]) are answered:
    /// - no 429 among them: it worked, the rate climbs back under the limit;
    /// - still many (over [`NOISE_MAX`]): the rate is still above the limit,
    ///   and drops again, below what the gateway let through meanwhile;
    /// - a few: they are not about the pace (a limit leaves none below it
    ///   once its window drained); the decrease is undone and their share
    ///   is noise from now on.
    ///
    /// Long for a reason: the three outcomes above are the three branches
    /// below, each a handful of assignments to the same fields; apart, they
    /// would hide that they are one judgement.
    pub(super) fn evaluate(&mut self, now: Instant) {
        let Some(e) = self.evaluation else {
            return;
        };
        if e.answered < EVALUATE_AFTER || now.saturating_duration_since(e.from) < EVALUATE_FOR {
            return;
        }
        self.evaluation = None;
        let share = f64::from(e.throttled) / f64::from(e.answered);
        if share == 0.0 {
            // The limit is below where it was hit (or, after a round that
            // found a few, what got through then), and at least where it
            // was cut to: climb back under it.
            let below = e.few_before.map_or(f64::INFINITY, |f| f.through);
            self.limit = self.limit.map(|l| l.min(below).max(self.climb_from));
            self.climb_at = Some(now);
            return;
        }
        if share > NOISE_MAX {
            let span = now
                .saturating_duration_since(e.from)
                .as_secs_f64()
                .max(1e-3);
            // What was let through, per second, while the judged requests
            // went: the limit (a guess: rows waiting out their 429s hold
            // their slots, so fewer requests than the gateway would admit
            // may have been judged).
            let through = f64::from(e.answered - e.throttled) / span;
            let current = self.rate(now);
            let floor = self.ceiling * MIN_FACTOR;
            let limit = through.min(current).max(floor);
            self.limit = Some(limit);
            let cut = (BETA * limit).clamp(floor, current);
            self.evaluation = Some(Evaluation {
                answered: 0,
                throttled: 0,
                undo_to: current,
                from: now + SETTLE,
                few_before: None,
            });
            self.climb_from = cut;
            self.climb_at = None;
            self.lowest = self.lowest.min(cut);
            self.cut_at = Some(now);
            self.epoch += 1;
            return;
        }
        if e.few_before.is_none_or(|f| share < 0.5 * f.share) {
            // A few (or, in a later round, fewer by half): the rate may be
            // just over the limit (a token bucket refuses only the
            // excess), or they are not about the pace. Slower, and judged
            // once more: if they do not become rarer, they are noise
            // (client-side adaptive throttling's rule).
            let span = now
                .saturating_duration_since(e.from)
                .as_secs_f64()
                .max(1e-3);
            let through = f64::from(e.answered - e.throttled) / span;
            let current = self.rate(now);
            let cut = (BETA * current).max(self.ceiling * MIN_FACTOR);
            self.evaluation = Some(Evaluation {
                answered: 0,
                throttled: 0,
                from: now + SETTLE,
                few_before: Some(Few {
                    through: through.min(current),
                    share,
                }),
                ..e
            });
            self.climb_from = cut;
            self.lowest = self.lowest.min(cut);
            self.cut_at = Some(now);
            self.epoch += 1;
            return;
        }
        // 429s below the limit, once the window has drained: not the pace.
        // Back to the rate before the decrease, held there as if it were
        // below the limit, then probing on; that share is noise from now on.
        self.noise = share;
        self.climb_from = e.undo_to;
        self.limit = Some(e.undo_to / HOLD);
        self.climb_at = Some(now.checked_sub(RECOVER).unwrap_or(now));
    }
}
