//! The gateway's rate limit and call quota, as pure state machines fed with
//! the time of each call (so they are tested without waiting).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// `N` calls per period, like APIM's `rate-limit-by-key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub calls: u32,
    pub period: Duration,
}

/// A call quota, like APIM's `quota-by-key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub calls: u64,
    pub period: Duration,
}

/// What is left of the rate limit after an admitted call, as a gateway's
/// rate-limit headers tell it: calls left, and when the next one frees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Left {
    pub calls: u32,
    pub reset: Duration,
}

/// A sliding window: at most `calls` in any window of the period, less a
/// 5% allowance for clock jitter between client and gateway (APIM's own
/// counting is approximate). A refused call does not count.
#[derive(Debug)]
pub struct Window {
    limit: RateLimit,
    span: Duration,
    admitted: VecDeque<Instant>,
}

impl Window {
    pub fn new(limit: RateLimit) -> Window {
        Window {
            limit,
            span: limit.period.mul_f64(0.95),
            admitted: VecDeque::with_capacity(limit.calls as usize),
        }
    }

    /// `Ok` if the call at `now` is admitted, else how long until it would be.
    pub fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        while let Some(&oldest) = self.admitted.front() {
            if now.saturating_duration_since(oldest) >= self.span {
                self.admitted.pop_front();
            } else {
                break;
            }
        }
        if self.admitted.len() < self.limit.calls as usize {
            self.admitted.push_back(now);
            return Ok(());
        }
        Err(self.frees_in(now))
    }

    /// Until the oldest call in the window leaves it.
    fn frees_in(&self, now: Instant) -> Duration {
        let oldest = self.admitted.front().copied().unwrap_or(now);
        self.span
            .saturating_sub(now.saturating_duration_since(oldest))
    }

    /// What is left right after a call admitted at `now`.
    pub fn left(&self, now: Instant) -> Left {
        Left {
            calls: (self.limit.calls as usize).saturating_sub(self.admitted.len()) as u32,
            reset: self.frees_in(now),
        }
    }
}

/// How the gateway counts calls against its rate limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LimitKind {
    /// A sliding window over the period (APIM's `rate-limit-by-key`).
    #[default]
    Window,
    /// A token bucket holding one period's calls, refilled evenly: a burst
    /// after an idle spell, then the rate.
    Bucket,
}

/// A token bucket of `calls` tokens refilled at `calls` per period. A
/// refused call takes no token.
#[derive(Debug)]
pub struct Bucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl Bucket {
    pub fn new(limit: RateLimit) -> Bucket {
        let capacity = f64::from(limit.calls.max(1));
        Bucket {
            capacity,
            per_second: capacity / limit.period.as_secs_f64().max(1e-3),
            tokens: capacity,
            last: None,
        }
    }

    /// `Ok` if the call at `now` is admitted, else how long until it would be.
    pub fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * self.per_second;
            self.tokens = (self.tokens + refill).min(self.capacity);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(self.next_token_in())
    }

    fn next_token_in(&self) -> Duration {
        Duration::from_secs_f64((1.0 - self.tokens.fract()) / self.per_second)
    }

    /// What is left right after a call admitted (the bucket last counted
    /// at that call).
    pub fn left(&self) -> Left {
        Left {
            calls: self.tokens.floor() as u32,
            reset: self.next_token_in(),
        }
    }
}

/// The rate limit, counted one way or the other.
#[derive(Debug)]
pub enum Limiter {
    Window(Window),
    Bucket(Bucket),
}

impl Limiter {
    pub fn new(limit: RateLimit, kind: LimitKind) -> Limiter {
        match kind {
            LimitKind::Window => Limiter::Window(Window::new(limit)),
            LimitKind::Bucket => Limiter::Bucket(Bucket::new(limit)),
        }
    }

    /// `Ok` with what is left if the call at `now` is admitted, else how
    /// long until it would be.
    pub fn admit(&mut self, now: Instant) -> Result<Left, Duration> {
        match self {
            Limiter::Window(w) => w.admit(now).map(|()| w.left(now)),
            Limiter::Bucket(b) => b.admit(now).map(|()| b.left()),
        }
    }
}

/// The IETF rate-limit fields (draft-ietf-httpapi-ratelimit-headers-08
/// and later) for a limit and what is left of it: `RateLimit-Policy` (the
/// quota `q` per window `w` seconds) and `RateLimit` (`r` calls left, `t`
/// seconds until the quota frees; at least 1 when nothing is left).
pub fn headers(limit: RateLimit, left: Left) -> [(&'static str, String); 2] {
    let reset = if left.calls == 0 {
        retry_after_secs(left.reset)
    } else {
        left.reset.as_secs() + u64::from(left.reset.subsec_nanos() > 0)
    };
    [
        (
            "ratelimit-policy",
            format!(
                "\"sandbox\";q={};w={}",
                limit.calls,
                retry_after_secs(limit.period)
            ),
        ),
        (
            "ratelimit",
            format!("\"sandbox\";r={};t={reset}", left.calls),
        ),
    ]
}

/// Calls left in the current quota period, which starts with the first call.
#[derive(Debug)]
pub struct QuotaCounter {
    quota: Quota,
    period_start: Option<Instant>,
    used: u64,
}

impl QuotaCounter {
    pub fn new(quota: Quota) -> QuotaCounter {
        QuotaCounter {
            quota,
            period_start: None,
            used: 0,
        }
    }

    /// `Ok` if the call is within quota, else the time until it replenishes.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let start = *self.period_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= self.quota.period {
            self.period_start = Some(now);
            self.used = 0;
        }
        if self.used < self.quota.calls {
            self.used += 1;
            return Ok(());
        }
        let start = self.period_start.unwrap_or(now);
        Err(self
            .quota
            .period
            .saturating_sub(now.saturating_duration_since(start)))
    }
}

/// A duration as .NET's `TimeSpan` prints it: `d.hh:mm:ss`, or `hh:mm:ss`
/// under a day (the form APIM's quota message uses).
pub fn timespan(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, sec) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60, s % 60);
    if days > 0 {
        format!("{days}.{h:02}:{m:02}:{sec:02}")
    } else {
        format!("{h:02}:{m:02}:{sec:02}")
    }
}

/// Whole seconds for `Retry-After`, rounded up, at least 1.
pub fn retry_after_secs(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_over_the_limit_is_refused() {
        let t0 = Instant::now();
        let mut w = Window::new(RateLimit {
            calls: 3,
            period: Duration::from_secs(1),
        });
        assert!(w.admit(t0).is_ok());
        assert!(w.admit(t0 + ms(1)).is_ok());
        assert!(w.admit(t0 + ms(2)).is_ok());
        let wait = w.admit(t0 + ms(3)).unwrap_err();
        assert_eq!(wait, ms(947));
        // Refused calls do not count: after the span, room again.
        assert!(w.admit(t0 + ms(950)).is_ok());
    }

    #[test]
    fn an_evenly_spaced_client_at_the_limit_is_never_refused() {
        let t0 = Instant::now();
        let mut w = Window::new(RateLimit {
            calls: 50,
            period: Duration::from_secs(1),
        });
        // 20 ms apart, with up to 5 ms of jitter either way.
        for i in 0..1000u64 {
            let jitter = (i * 7919) % 11;
            let at = t0 + ms(i * 20 + jitter);
            assert!(w.admit(at).is_ok(), "call {i} refused");
        }
    }

    #[test]
    fn quota_runs_out_and_replenishes_after_its_period() {
        let t0 = Instant::now();
        let mut q = QuotaCounter::new(Quota {
            calls: 2,
            period: Duration::from_secs(60),
        });
        assert!(q.take(t0).is_ok());
        assert!(q.take(t0 + ms(10)).is_ok());
        assert_eq!(
            q.take(t0 + Duration::from_secs(20)).unwrap_err(),
            Duration::from_secs(40)
        );
        assert!(q.take(t0 + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn timespans_print_like_dotnet() {
        assert_eq!(
            timespan(Duration::from_secs(5 * 86_400 + 3 * 3600 + 23 * 60 + 11)),
            "5.03:23:11"
        );
        assert_eq!(timespan(Duration::from_secs(59)), "00:00:59");
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(ms(1)), 1);
        assert_eq!(retry_after_secs(ms(1000)), 1);
        assert_eq!(retry_after_secs(ms(1001)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn what_is_left_counts_down_to_nothing() {
        let t0 = Instant::now();
        let limit = RateLimit {
            calls: 3,
            period: Duration::from_secs(1),
        };
        let mut l = Limiter::new(limit, LimitKind::Window);
        let left: Vec<u32> = (0..3)
            .map(|i| l.admit(t0 + ms(i * 100)).map(|left| left.calls))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(left, [2, 1, 0]);
        // The first call leaves the 950 ms window 950 ms after it.
        assert_eq!(l.admit(t0 + ms(200)), Err(ms(750)));
        let mut b = Limiter::new(limit, LimitKind::Bucket);
        let left: Vec<u32> = (0..3)
            .map(|_| b.admit(t0).map(|left| left.calls))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(left, [2, 1, 0]);
    }

    #[test]
    fn rate_limit_headers_follow_the_ietf_fields() {
        let limit = RateLimit {
            calls: 40,
            period: Duration::from_secs(60),
        };
        let [policy, now] = headers(
            limit,
            Left {
                calls: 0,
                reset: ms(10),
            },
        );
        assert_eq!(policy, ("ratelimit-policy", "\"sandbox\";q=40;w=60".into()));
        // Nothing left: wait at least a second.
        assert_eq!(now, ("ratelimit", "\"sandbox\";r=0;t=1".into()));
        let [_, now] = headers(
            limit,
            Left {
                calls: 7,
                reset: ms(2500),
            },
        );
        assert_eq!(now.1, "\"sandbox\";r=7;t=3");
    }

    #[test]
    fn a_bucket_admits_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(RateLimit {
            calls: 10,
            period: Duration::from_secs(1),
        });
        for _ in 0..10 {
            assert!(b.admit(t0).is_ok());
        }
        let wait = b.admit(t0).unwrap_err();
        assert!(
            wait <= Duration::from_millis(100) && wait > Duration::ZERO,
            "{wait:?}"
        );
        // One token per 100 ms from then on.
        assert!(b.admit(t0 + Duration::from_millis(100)).is_ok());
        assert!(b.admit(t0 + Duration::from_millis(150)).is_err());
        assert!(b.admit(t0 + Duration::from_millis(200)).is_ok());
    }
}
