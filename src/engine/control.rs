//! The one owner of what a run's request tasks share: the pace, the circuit
//! breaker, the counters, the latency behind Little's law and the fatal
//! cause. It sits behind one lock, taken for a whole booking or a whole
//! answer and never across an await, so no task sees the pace
//! half-updated. When every task is done it judges an outage and hands
//! back the [`DispatchReport`].
//!
//! It was a task that the request tasks asked over a channel, a round trip
//! through the scheduler per booking and per answer. Every call here is
//! short and synchronous (no I/O: the writer's queue and the log only), so
//! a lock does the same with less machinery; at full speed the two
//! measured the same (BENCHMARKS.md, issue 15).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::dispatch::{DispatchReport, RequestTime};
use crate::config::DispatchSettings;
use crate::pace::{MIN_FACTOR, Pace, Throttle};
use crate::progress::PaceView;
use crate::retry::{Breaker, FailureKind, TransportFailure, Verdict};
use crate::store::{Outcome, Writer};
use crate::timeline::{AnswerKind, Seconds};

/// Answers before the latency is judged against `--rate`.
const LATENCY_SAMPLE: u64 = 50;

/// What a request task tells [`Control`] of one answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub sent_at: Instant,
    /// What it waited for before it left (its in-flight mark's commit,
    /// then its turn), and from the request out to its answer in.
    pub time: RequestTime,
    /// The row's first request of this run, and an earlier process died
    /// with it in flight.
    pub resent: bool,
    /// An HTTP answer came (not a transport failure).
    pub answered: bool,
    /// A 429, and the `Retry-After` it came with.
    pub throttled: bool,
    pub retry_after: Option<Duration>,
    /// The API worked: it created, refused the row, or answered something
    /// unreadable, which is not an outage either.
    pub worked: bool,
    /// A transient failure, and why, for the breaker and an outage's
    /// message.
    pub failure: Option<(FailureKind, String)>,
    /// The limit the gateway states in its headers, requests per second.
    pub stated_limit: Option<f64>,
    /// What it was, for the run's timeline.
    pub kind: AnswerKind,
}

impl Answer {
    /// What `verdict` says for the run, sent at `sent_at` and answered now.
    pub fn of(
        verdict: &Verdict,
        stated_limit: Option<f64>,
        sent_at: Instant,
        resent: bool,
        (marking, turn): (Duration, Duration),
    ) -> Answer {
        let (throttled, retry_after) = match verdict {
            Verdict::Retry {
                throttled,
                retry_after,
                ..
            } => (*throttled, *retry_after),
            _ => (false, None),
        };
        let reason = match verdict {
            Verdict::Retry { reason, .. } | Verdict::Unanswered { reason, .. } => reason.clone(),
            _ => String::new(),
        };
        Answer {
            sent_at,
            time: RequestTime {
                marking,
                turn,
                answer: sent_at.elapsed(),
            },
            resent,
            answered: !matches!(verdict, Verdict::Unanswered { .. }),
            throttled,
            retry_after,
            worked: matches!(
                verdict,
                Verdict::Created { .. } | Verdict::RowError { .. } | Verdict::BadResponse { .. }
            ),
            failure: crate::attempt::failure_kind(verdict).map(|kind| (kind, reason)),
            stated_limit,
            kind: match verdict {
                Verdict::Created { .. } => AnswerKind::Created,
                Verdict::RowError { .. } | Verdict::BadResponse { .. } => AnswerKind::Refused,
                Verdict::Retry {
                    throttled: true, ..
                } => AnswerKind::Throttled,
                // 5xx, transport failures, a refused token, a spent quota.
                _ => AnswerKind::Failed,
            },
        }
    }
}

/// A slot booked with the pace: when to send, and the pace's epoch then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Booking {
    pub at: Instant,
    epoch: u64,
}

/// A request task's handle on the one owner of what the tasks share.
#[derive(Clone)]
pub struct Control {
    owner: Arc<Mutex<Owner>>,
}

impl Control {
    /// The owner of a run's pace, breaker and counters; [`Control::finish`]
    /// hands back the run's report once every task is done.
    pub fn start(
        settings: &DispatchSettings,
        writer: Arc<Writer>,
        view: Arc<PaceView>,
        stop: CancellationToken,
    ) -> Control {
        let now = Instant::now();
        let owner = Owner {
            ceiling: settings.rate.per_second(),
            rate_shown: settings.rate.to_string(),
            concurrency: settings.concurrency,
            trip_after: settings.trip_after,
            writer,
            view,
            stop,
            pace: Pace::new(settings.rate.interval(), settings.burst, now),
            breaker: Breaker::new(settings.trip_after),
            report: DispatchReport::default(),
            answers: 0,
            latency: Duration::ZERO,
            told_concurrency: false,
            last_failure: String::new(),
            first_sent: None,
            seconds: Seconds::default(),
            clock: (now, SystemTime::now()),
        };
        Control {
            owner: Arc::new(Mutex::new(owner)),
        }
    }

    /// The owner, for one whole update. A panic while it was held (a bug)
    /// has already made its task's end a fatal error of the run; what the
    /// counters say is still the best account there is.
    fn owner(&self) -> MutexGuard<'_, Owner> {
        self.owner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Books the next slot with the pace.
    pub fn book(&self) -> Booking {
        self.owner().book()
    }

    /// Whether a booked slot still holds: no pause in force, and no 429
    /// changed the pace since it was booked (at the old pace, it books
    /// again).
    pub fn holds(&self, booking: Booking) -> bool {
        let owner = self.owner();
        owner.pace.epoch() == booking.epoch && owner.pace.paused_until(Instant::now()).is_none()
    }

    /// Reports an answer; for a 429, what the pace made of it.
    pub fn answered(&self, answer: Answer) -> Option<Throttle> {
        self.owner().answered(answer)
    }

    /// A row ran out of attempts: `exhausted`, unless the breaker keeps it
    /// as a victim of an outage (a trip puts it back to pending).
    pub fn ran_out(&self, id: i64, maybe_sent: bool, exhausted: Outcome) {
        let mut owner = self.owner();
        if owner.breaker.ran_out(id, maybe_sent) {
            owner.record(id, exhausted);
        } else {
            owner.record(id, Outcome::Requeue { maybe_sent });
        }
    }

    /// Records the first fatal reason and stops dispatch.
    pub fn fatal(&self, message: String) {
        self.owner().fatal(message);
    }

    /// Once every task is done: judges an outage, keeps the last second of
    /// the timeline, and hands back the run's report.
    pub fn finish(&self) -> DispatchReport {
        let mut owner = self.owner();
        owner.check_outage();
        if let Some(last) = owner.seconds.finish() {
            let _ = owner.writer.second(last);
        }
        owner.report.lowest_pace = owner.pace.lowest_factor();
        owner.report.sending = owner.first_sent.map_or(Duration::ZERO, |t| t.elapsed());
        std::mem::take(&mut owner.report)
    }
}

/// What the request tasks share, behind [`Control`]'s one lock.
struct Owner {
    ceiling: f64,
    rate_shown: String,
    concurrency: usize,
    trip_after: u32,
    writer: Arc<Writer>,
    view: Arc<PaceView>,
    stop: CancellationToken,
    pace: Pace,
    breaker: Breaker,
    /// Requests, re-sends, 429s and the fatal cause so far.
    report: DispatchReport,
    /// HTTP answers and their summed time, for Little's law.
    answers: u64,
    latency: Duration,
    told_concurrency: bool,
    /// The last transient failure's reason, for an outage's message.
    last_failure: String,
    first_sent: Option<Instant>,
    /// The run's timeline, and the clock it is kept in: the instant the
    /// run started and the wall-clock time then.
    seconds: Seconds,
    clock: (Instant, SystemTime),
}

impl Owner {
    fn book(&mut self) -> Booking {
        let now = Instant::now();
        let at = self.pace.reserve(now);
        self.show(at, now);
        Booking {
            at,
            epoch: self.pace.epoch(),
        }
    }

    /// What the progress display shows of the pace at `at`.
    fn show(&self, at: Instant, now: Instant) {
        self.view.report(
            self.pace.rate(at),
            self.ceiling,
            self.pace.paused_until(now).map(|u| u - now),
        );
    }

    fn answered(&mut self, answer: Answer) -> Option<Throttle> {
        let judging = self.pace.judging();
        let reaction = self.react(&answer);
        if judging && !self.pace.judging() {
            self.judged();
        }
        reaction
    }

    /// A judgement of the last decrease ended (on an answer let through,
    /// or on a 429): what the slow-down came to. The warning at that 429
    /// could only say what got through until then.
    fn judged(&self) {
        let now = Instant::now();
        let rate = self.pace.rate(now);
        tracing::info!(
            "pace judged after the last 429: going at {rate:.1}/s ({:.0}% of --rate), \
             the gateway's limit put at {:.1}/s",
            rate / self.ceiling * 100.0,
            self.pace.learnt_limit().unwrap_or(rate)
        );
    }

    fn react(&mut self, answer: &Answer) -> Option<Throttle> {
        self.report.requests += 1;
        self.report.time += answer.time;
        if answer.resent {
            self.report.resent_after_interruption += 1;
        }
        self.first_sent = Some(
            self.first_sent
                .map_or(answer.sent_at, |t| t.min(answer.sent_at)),
        );
        if answer.answered {
            self.latency_sample(answer.time.answer);
        }
        if let Some(limit) = answer.stated_limit
            && self.pace.stated(limit)
        {
            let now = Instant::now();
            tracing::info!(
                "the gateway states a limit of {limit:.1}/s (RateLimit-Policy): going at {:.1}/s",
                self.pace.rate(now)
            );
            self.show(now, now);
        }
        if answer.answered && !answer.throttled {
            // The gateway let it through.
            let before = (self.pace.epoch(), self.pace.judging());
            let now = Instant::now();
            self.pace.accepted(answer.sent_at, now);
            if (self.pace.epoch(), self.pace.judging()) != before {
                tracing::debug!("pace after judging a decrease: {}", self.pace.state(now));
            }
        }
        if answer.worked {
            self.breaker.success();
        }
        let now = Instant::now();
        let done = self.seconds.count(
            self.wall_second(now),
            answer.kind,
            self.pace.rate(now),
            self.ceiling,
        );
        self.keep(done);
        // A 429 is the pace's to answer, not a sign that the API is down:
        // it counts towards the breaker only once the pace can slow down
        // no further.
        if let Some((kind, reason)) = &answer.failure
            && (!answer.throttled || self.at_floor())
        {
            self.failed(*kind, reason);
        }
        answer
            .throttled
            .then(|| self.throttled(answer.sent_at, answer.retry_after))
    }

    fn at_floor(&self) -> bool {
        self.pace.factor(Instant::now()) <= MIN_FACTOR * 1.01
    }

    /// A transient failure of `kind`; trips the breaker on a long streak:
    /// the rows it kept as victims go back to pending, and the run stops.
    fn failed(&mut self, kind: FailureKind, reason: &str) {
        reason.clone_into(&mut self.last_failure);
        if !self.breaker.failure(kind) {
            return;
        }
        for (id, maybe_sent) in self.breaker.take_victims() {
            // Queued after its `exhausted` outcome: this one stands.
            self.record(id, Outcome::Requeue { maybe_sent });
        }
        self.fatal(format!(
            "the API failed {} times in a row ({reason}); stopping: rows not sent \
             stay pending, rerun when the API is back",
            self.trip_after
        ));
    }

    /// A 429 for a request sent at `sent_at`: what the pace makes of it.
    fn throttled(&mut self, sent_at: Instant, retry_after: Option<Duration>) -> Throttle {
        self.report.throttled += 1;
        let now = Instant::now();
        let reaction = self.pace.throttled(sent_at, now, retry_after);
        let what = match reaction {
            Throttle::Paused { until } => format!(
                "a congestion event: every request pauses {}",
                humantime::format_duration(std::time::Duration::from_millis(
                    until.saturating_duration_since(now).as_millis() as u64
                ))
            ),
            Throttle::SameEvent => "part of the event already reacted to".to_string(),
            Throttle::RowWaits(wait) => format!(
                "not about the pace: only its row waits {}",
                humantime::format_duration(std::time::Duration::from_millis(
                    wait.as_millis() as u64
                ))
            ),
        };
        tracing::debug!("429: {what}; pace: {}", self.pace.state(now));
        self.show(now, now);
        if let Throttle::Paused { until } = reaction {
            let pause = until.saturating_duration_since(now).as_millis() as u64;
            let done = self
                .seconds
                .paused(self.wall_second(now), pause, self.ceiling);
            self.keep(done);
            let rate = self.pace.rate(until);
            tracing::warn!(
                "429 from the API: every request pauses {}, then goes at {rate:.1}/s ({:.0}% of --rate; \
                 the gateway was letting {:.1}/s through)",
                humantime::format_duration(Duration::from_millis(
                    until.saturating_duration_since(now).as_millis() as u64
                )),
                rate / self.ceiling * 100.0,
                self.pace.learnt_limit().unwrap_or(rate)
            );
        }
        reaction
    }

    /// An HTTP answer came `took` after its request left. Once enough
    /// have, says (once) if `--concurrency` cannot reach `--rate` at this
    /// latency (Little's law: requests in flight / time per request), and
    /// what would.
    fn latency_sample(&mut self, took: Duration) {
        self.answers += 1;
        self.latency += took;
        let sending = self.first_sent.map_or(Duration::ZERO, |t| t.elapsed());
        if self.answers < LATENCY_SAMPLE
            || sending < Duration::from_secs(2)
            || self.told_concurrency
        {
            return;
        }
        self.told_concurrency = true;
        let latency = self.latency.as_secs_f64() / self.answers as f64;
        if let Some(needed) = concurrency_needed(self.concurrency, latency, self.ceiling) {
            tracing::warn!(
                "--concurrency {} cannot reach --rate {}: requests take {:.0} ms, so {} in flight \
                 make at most {:.1}/s (Little's law); --concurrency {needed} would, and the \
                 ETA of the progress lines follows the real pace",
                self.concurrency,
                self.rate_shown,
                latency * 1000.0,
                self.concurrency,
                self.concurrency as f64 / latency.max(1e-6),
            );
        }
    }

    /// Once every task is done: if every request of the run failed the
    /// same way without reaching the API, that is an outage, whatever the
    /// number of rows: the rows that ran out go back to pending and the run
    /// stops (exit 1) naming the cause.
    fn check_outage(&mut self) {
        let requests = self.report.requests;
        let Some(failure) = self.breaker.outage(requests) else {
            return;
        };
        for (id, maybe_sent) in self.breaker.take_victims() {
            self.record(id, Outcome::Requeue { maybe_sent });
        }
        self.fatal(format!(
            "every request of this run ({requests}) failed the same way without reaching the \
             API ({}): {}; rows not sent stay pending, rerun when it is reachable",
            outage_cause(failure),
            self.last_failure
        ));
    }

    /// The Unix second `now` falls in, on the run's own clock (monotonic:
    /// the wall clock read once at the start).
    fn wall_second(&self, now: Instant) -> i64 {
        let (start, wall) = self.clock;
        let at = wall + now.saturating_duration_since(start);
        at.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    }

    /// Hands a finished second of the timeline to the writer.
    fn keep(&mut self, second: Option<crate::timeline::Second>) {
        if let Some(second) = second
            && self.writer.second(second).is_err()
        {
            self.fatal("the state file writer stopped; see the error above".into());
        }
    }

    fn record(&mut self, id: i64, outcome: Outcome) {
        if self.writer.record(id, outcome).is_err() {
            self.fatal("the state file writer stopped; see the error above".into());
        }
    }

    fn fatal(&mut self, message: String) {
        if self.report.fatal.is_none() {
            tracing::error!("{message}");
            self.report.fatal = Some(message);
        }
        self.stop.cancel();
    }
}

/// The `--concurrency` that reaches `rate` (per second) when requests take
/// `latency` seconds, if `concurrency` cannot (within 10%): Little's law
/// with a fifth to spare.
pub fn concurrency_needed(concurrency: usize, latency: f64, rate: f64) -> Option<u64> {
    let reach = concurrency as f64 / latency.max(1e-6);
    (reach < 0.9 * rate).then(|| (rate * latency * 1.2).ceil().max(concurrency as f64 + 1.0) as u64)
}

/// What an outage of this kind means, for the message.
fn outage_cause(failure: TransportFailure) -> &'static str {
    match failure {
        TransportFailure::Refused => {
            "connection refused: nothing listens at its address, or a firewall rejects it"
        }
        TransportFailure::Dns => "its host name does not resolve",
        TransportFailure::Tls => "the TLS handshake failed",
        TransportFailure::Proxy => "the proxy could not be used",
        TransportFailure::TimedOut => "no answer within --timeout",
        _ => "no answer",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_needed_follows_littles_law() {
        // (in flight, latency s, rate/s) -> a --concurrency to suggest
        let cases = [
            // 8 in flight at 60 ms make 133/s: enough for 100/s.
            ((8, 0.060, 100.0), None),
            // ... not for 200/s: 200 × 0.06 × 1.2 = 14.4 → 15.
            ((8, 0.060, 200.0), Some(15)),
            // Within 10% is close enough.
            ((9, 0.050, 190.0), None),
            // Always more than now, even when the latency is tiny.
            ((64, 0.000_001, 1e9), Some(1_200)),
            ((1, 1.0, 2.0), Some(3)),
        ];
        for ((concurrency, latency, rate), expected) in cases {
            assert_eq!(
                concurrency_needed(concurrency, latency, rate),
                expected,
                "{concurrency} in flight, {latency} s, {rate}/s"
            );
        }
    }
}
