//! Sending the pending rows: concurrency, rate limit, retries, stop.
//!
//! One producer loop takes pending rows in id order, waits for a free slot
//! (semaphore), then spawns a task per row. A task marks its row in flight
//! (durably), books its turn with the pace ([`crate::pace`]: the rate limit
//! and the 429 back-off), sends at that moment, retries what is worth
//! retrying, and hands the final outcome to the state writer.
//! A fatal condition or a stop request ends the producer; tasks already
//! sending finish and are recorded; rows not sent stay pending.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, AuthError, Bearer};
use crate::attempt::{self, Attempts, Facts, Step};
use crate::config::DispatchSettings;
use crate::pace::{Pace, Throttle};
use crate::progress::PaceView;
use crate::retry::{self, Breaker, FailureKind, TransportFailure, Verdict};
use crate::store::{Outcome, PendingItem, Writer};

/// What dispatching did.
#[derive(Debug, Clone, PartialEq)]
pub struct DispatchReport {
    /// POST requests sent (every attempt counts).
    pub requests: u64,
    /// Rows sent again because an earlier process died with them in flight.
    pub resent_after_interruption: u64,
    /// Why dispatch stopped early, if a fatal condition stopped it.
    pub fatal: Option<String>,
    /// 429 answers met.
    pub throttled: u64,
    /// Lowest share of `--rate` the pace went down to after 429s.
    pub lowest_pace: f64,
    /// From the first request out to the last answer in: the time the
    /// achieved rate is measured over.
    pub sending: std::time::Duration,
}

impl Default for DispatchReport {
    fn default() -> DispatchReport {
        DispatchReport {
            requests: 0,
            resent_after_interruption: 0,
            fatal: None,
            throttled: 0,
            lowest_pace: 1.0,
            sending: std::time::Duration::ZERO,
        }
    }
}

struct Ctx {
    api: Arc<Api>,
    writer: Arc<Writer>,
    settings: DispatchSettings,
    stop: CancellationToken,
    requests: AtomicU64,
    resent: AtomicU64,
    throttled: AtomicU64,
    fatal: Mutex<Option<String>>,
    pace: Mutex<Pace>,
    /// What the progress display shows of the pace.
    view: Arc<PaceView>,
    /// Time of the HTTP answers (microseconds, summed) and their count,
    /// for Little's law: `--concurrency` / latency bounds the rate.
    latency_us: AtomicU64,
    answers: AtomicU64,
    /// The warning that `--concurrency` cannot reach `--rate` was given.
    told_concurrency: std::sync::atomic::AtomicBool,
    breaker: Mutex<Breaker>,
    /// The last transient failure's reason, for an outage's message.
    last_failure: Mutex<String>,
    /// When the first request went out.
    first_sent: std::sync::OnceLock<Instant>,
}

impl Ctx {
    /// Records the first fatal reason and stops dispatch.
    fn fatal(&self, message: String) {
        if let Ok(mut slot) = self.fatal.lock()
            && slot.is_none()
        {
            tracing::error!("{message}");
            *slot = Some(message);
        }
        self.stop.cancel();
    }

    fn record(&self, id: i64, outcome: Outcome) {
        if self.writer.record(id, outcome).is_err() {
            self.fatal("the state file writer stopped; see the error above".into());
        }
    }

    /// Waits for the right to send one request: books a slot with the pace
    /// (rate limit, pauses after 429s) and sleeps until it. `false` if
    /// dispatch stopped.
    async fn gate(&self) -> bool {
        loop {
            let (slot, epoch) = match self.pace.lock() {
                Ok(mut p) => {
                    let now = Instant::now();
                    let slot = p.reserve(now);
                    self.view.report(
                        p.rate(slot),
                        self.settings.rate.per_second(),
                        p.paused_until(now).map(|u| u - now),
                    );
                    (slot, p.epoch())
                }
                Err(_) => (Instant::now(), 0),
            };
            if slot > Instant::now() {
                tokio::select! {
                    biased;
                    _ = self.stop.cancelled() => return false,
                    _ = tokio::time::sleep_until(slot.into()) => {}
                }
            }
            // A 429 may have come in while this request waited: its slot
            // was booked at the old pace, so it books again.
            let current = self
                .pace
                .lock()
                .map(|p| (p.is_paused(Instant::now()), p.epoch()))
                .unwrap_or((false, epoch));
            if current == (false, epoch) {
                return !self.stop.is_cancelled();
            }
        }
    }

    /// Waits for this request's turn and the token it goes out with;
    /// `None` if dispatch stopped. A token is had (fetched if due) before
    /// the slot is booked, and every request leaves right at a slot: a
    /// fetch between the slot and the request would let the requests whose
    /// slots pass meanwhile leave together when it ends, more than the rate
    /// allows in that moment.
    async fn turn(&self) -> Result<Option<Bearer>, AuthError> {
        let Some(mut bearer) = self.bearer().await? else {
            return Ok(None);
        };
        let mut booked_again = false;
        loop {
            if !self.gate().await {
                return Ok(None);
            }
            if let Some(current) = self.api.auth().usable() {
                return Ok(Some(current));
            }
            if booked_again {
                // Tokens live shorter than the wait for a slot: go with the
                // one fetched for it (a 401 renews it).
                return Ok(Some(bearer));
            }
            // No token to go with (refused by a 401, or the fetch of the
            // next one outlasted the old one): one, then a new slot.
            tracing::debug!("no usable token at the rate slot; booking another");
            let Some(fresh) = self.bearer().await? else {
                return Ok(None);
            };
            bearer = fresh;
            booked_again = true;
        }
    }

    /// A token, unless dispatch stops first: a stop does not wait for a
    /// slow token endpoint (the fetch is dropped).
    async fn bearer(&self) -> Result<Option<Bearer>, AuthError> {
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => Ok(None),
            b = self.api.auth().bearer() => b.map(Some),
        }
    }

    /// The API answered something other than a transient failure, to a
    /// request sent with the token of `generation`.
    fn api_worked(&self, generation: u64) {
        self.api.auth().accepted(generation);
        if let Ok(mut b) = self.breaker.lock() {
            b.success();
        }
    }

    /// An HTTP answer other than a 429, to a request sent at `sent_at`:
    /// the gateway let it through.
    fn let_through(&self, sent_at: Instant) {
        if let Ok(mut p) = self.pace.lock() {
            let before = (p.epoch(), p.judging());
            let now = Instant::now();
            p.accepted(sent_at, now);
            if (p.epoch(), p.judging()) != before {
                tracing::debug!("pace after judging a decrease: {}", p.state(now));
            }
        }
    }

    /// A transient failure of `kind`; trips the breaker on a long streak.
    fn api_failed(&self, kind: FailureKind, reason: &str) {
        if let Ok(mut last) = self.last_failure.lock() {
            reason.clone_into(&mut last);
        }
        let (tripped, victims) = self
            .breaker
            .lock()
            .map(|mut b| (b.failure(kind), b.take_victims()))
            .unwrap_or((false, Vec::new()));
        if tripped {
            for (id, maybe_sent) in victims {
                // Queued after its `exhausted` outcome: this one stands.
                self.record(id, Outcome::Requeue { maybe_sent });
            }
            let streak = self.settings.trip_after;
            self.fatal(format!(
                "the API failed {streak} times in a row ({reason}); stopping: rows not sent \
                 stay pending, rerun when the API is back"
            ));
        }
    }

    /// Once every task is done: if every request of the run failed the
    /// same way without reaching the API, that is an outage, whatever the
    /// number of rows: the rows that ran out go back to pending and the run
    /// stops (exit 1) naming the cause.
    fn check_outage(&self) {
        let requests = self.requests.load(Ordering::Relaxed);
        let (failure, victims) = match self.breaker.lock() {
            Ok(mut b) => match b.outage(requests) {
                Some(failure) => (failure, b.take_victims()),
                None => return,
            },
            Err(_) => return,
        };
        for (id, maybe_sent) in victims {
            self.record(id, Outcome::Requeue { maybe_sent });
        }
        self.fatal(format!(
            "every request of this run ({requests}) failed the same way without reaching the \
             API ({}): {}; rows not sent stay pending, rerun when it is reachable",
            outage_cause(failure),
            self.last_reason()
        ));
    }

    /// An HTTP answer came `took` after its request left. Once enough
    /// have, says (once) if `--concurrency` cannot reach `--rate` at this
    /// latency (Little's law: requests in flight / time per request), and
    /// what would.
    fn answered_in(&self, took: Duration) {
        let n = self.answers.fetch_add(1, Ordering::Relaxed) + 1;
        let sum = self
            .latency_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed)
            + took.as_micros() as u64;
        let sending = self
            .first_sent
            .get()
            .map_or(Duration::ZERO, |t| t.elapsed());
        if n < 50
            || sending < Duration::from_secs(2)
            || self.told_concurrency.load(Ordering::Relaxed)
        {
            return;
        }
        self.told_concurrency.store(true, Ordering::Relaxed);
        let latency = sum as f64 / n as f64 / 1e6;
        let rate = self.settings.rate.per_second();
        let concurrency = self.settings.concurrency as f64;
        let reach = concurrency / latency.max(1e-6);
        if reach < 0.9 * rate {
            let needed = (rate * latency * 1.2).ceil().max(concurrency + 1.0);
            tracing::warn!(
                "--concurrency {} cannot reach --rate {}: requests take {:.0} ms, so {} in flight \
                 make at most {reach:.1}/s (Little's law); --concurrency {needed:.0} would, and the \
                 ETA of the progress lines follows the real pace",
                self.settings.concurrency,
                self.settings.rate,
                latency * 1000.0,
                self.settings.concurrency,
            );
        }
    }

    /// Takes in what an answer says for the run (latency, the pace, the
    /// breaker, the token), and gathers what the row's policy needs.
    fn observe(
        &self,
        verdict: &Verdict,
        sent_at: Instant,
        generation: u64,
        line: u64,
        row: &Attempts,
    ) -> Facts<'_> {
        let answered = !matches!(verdict, Verdict::Unanswered { .. });
        let (throttled, retry_after, reason) = match verdict {
            Verdict::Retry {
                throttled,
                retry_after,
                reason,
                ..
            } => (*throttled, *retry_after, reason.as_str()),
            Verdict::Unanswered { reason, .. } => (false, None, reason.as_str()),
            _ => (false, None, ""),
        };
        if answered {
            self.answered_in(sent_at.elapsed());
        }
        if answered && !throttled {
            self.let_through(sent_at);
        }
        match verdict {
            Verdict::BadResponse { reason, .. } => {
                tracing::warn!(line, "{reason}");
                self.api_worked(generation);
            }
            Verdict::Created { .. } | Verdict::RowError { .. } => self.api_worked(generation),
            _ => {}
        }
        // A 429 is the pace's to answer, not a sign that the API is down:
        // it counts towards the breaker only once the pace can slow down
        // no further.
        if let Some(kind) = attempt::failure_kind(verdict)
            && (!throttled || self.pace_at_floor())
        {
            self.api_failed(kind, reason);
        }
        let throttle = throttled.then(|| self.throttled(sent_at, retry_after));
        Facts {
            line,
            max_attempts: self.settings.max_attempts,
            longest_wait: longest_wait(&self.settings),
            can_refresh: self.api.auth().can_refresh(),
            token_accepted_since: self.api.auth().accepted_since(generation),
            throttle,
            backoff: retry::backoff(
                row.failures + 1,
                self.settings.backoff_base,
                self.settings.backoff_cap,
                fastrand::f64(),
            ),
            names: self.api.names(),
            endpoint: self.api.endpoint(),
        }
    }

    /// A row ran out of attempts: `exhausted`, or, if the breaker keeps it
    /// as a victim of an outage, left to a trip's requeue (recorded under
    /// the breaker's lock, so that the requeue comes after it); once the
    /// breaker has tripped, pending at once.
    fn ran_out(&self, id: i64, maybe_sent: bool, exhausted: Outcome) {
        let mut breaker = self.breaker.lock();
        match breaker.as_mut().map(|b| b.ran_out(id, maybe_sent)) {
            Ok(false) => {
                drop(breaker);
                self.record(id, Outcome::Requeue { maybe_sent });
            }
            _ => self.record(id, exhausted),
        }
    }

    /// Whether the pace is as slow as it goes.
    fn pace_at_floor(&self) -> bool {
        self.pace
            .lock()
            .map(|p| p.factor(Instant::now()) <= crate::pace::MIN_FACTOR * 1.01)
            .unwrap_or(true)
    }

    fn last_reason(&self) -> String {
        self.last_failure
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// A 429 for a request sent at `sent_at`: what the pace makes of it.
    fn throttled(&self, sent_at: Instant, retry_after: Option<std::time::Duration>) -> Throttle {
        self.throttled.fetch_add(1, Ordering::Relaxed);
        let Ok(mut p) = self.pace.lock() else {
            return Throttle::SameEvent;
        };
        let now = Instant::now();
        let reaction = p.throttled(sent_at, now, retry_after);
        tracing::debug!("429: {reaction:?}; pace: {}", p.state(now));
        self.view.report(
            p.rate(now),
            self.settings.rate.per_second(),
            p.paused_until(now).map(|u| u - now),
        );
        if let Throttle::Paused { until } = reaction {
            let rate = p.rate(until);
            tracing::warn!(
                "429 from the API: every request pauses {}, then goes at {rate:.1}/s ({:.0}% of --rate; \
                 the gateway was letting {:.1}/s through)",
                humantime::format_duration(Duration::from_millis(
                    until.saturating_duration_since(now).as_millis() as u64
                )),
                rate / self.settings.rate.per_second() * 100.0,
                p.learnt_limit().unwrap_or(rate)
            );
        }
        reaction
    }
}

/// Sends every item received on `items` until the channel ends, a fatal
/// condition occurs or `stop` is cancelled.
pub async fn dispatch(
    api: Arc<Api>,
    writer: Arc<Writer>,
    mut items: mpsc::Receiver<PendingItem>,
    settings: DispatchSettings,
    view: Arc<PaceView>,
    stop: CancellationToken,
) -> DispatchReport {
    let ctx = Arc::new(Ctx {
        api,
        writer,
        pace: Mutex::new(Pace::new(
            settings.rate.interval(),
            settings.burst,
            Instant::now(),
        )),
        view,
        latency_us: AtomicU64::new(0),
        answers: AtomicU64::new(0),
        told_concurrency: std::sync::atomic::AtomicBool::new(false),
        breaker: Mutex::new(Breaker::new(settings.trip_after)),
        last_failure: Mutex::new(String::new()),
        settings,
        stop: stop.clone(),
        requests: AtomicU64::new(0),
        resent: AtomicU64::new(0),
        throttled: AtomicU64::new(0),
        fatal: Mutex::new(None),
        first_sent: std::sync::OnceLock::new(),
    });
    let slots = Arc::new(Semaphore::new(ctx.settings.concurrency));
    let mut tasks = JoinSet::new();
    loop {
        let item = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            item = items.recv() => match item {
                Some(item) => item,
                None => break,
            },
        };
        let permit = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let task_ctx = ctx.clone();
        tasks.spawn(async move {
            let _slot = permit;
            send_one(item, &task_ctx).await;
        });
        while let Some(done) = tasks.try_join_next() {
            reap(done, &ctx);
        }
    }
    // Closing the channel stops the feeder.
    drop(items);
    while let Some(done) = tasks.join_next().await {
        reap(done, &ctx);
    }
    ctx.check_outage();
    let fatal = ctx.fatal.lock().ok().and_then(|f| f.clone());
    DispatchReport {
        requests: ctx.requests.load(Ordering::Relaxed),
        resent_after_interruption: ctx.resent.load(Ordering::Relaxed),
        fatal,
        throttled: ctx.throttled.load(Ordering::Relaxed),
        lowest_pace: ctx.pace.lock().map_or(1.0, |p| p.lowest_factor()),
        sending: ctx
            .first_sent
            .get()
            .map_or(std::time::Duration::ZERO, |t| t.elapsed()),
    }
}

fn reap(done: Result<(), tokio::task::JoinError>, ctx: &Ctx) {
    if let Err(e) = done {
        ctx.fatal(format!("internal error in a request task: {e}"));
    }
}

/// Sends one row until it has a final outcome (or dispatch stops): the
/// driver of [`attempt::next`], which decides each step.
async fn send_one(item: PendingItem, ctx: &Ctx) {
    let mut row = Attempts {
        maybe_sent: item.was_in_flight,
        ..Attempts::default()
    };
    let mut posts: u32 = 0;
    loop {
        // The row is durably in flight first, then waits for its turn, then
        // goes out at once: the time between the rate slot and the request
        // must not vary with the disk, or requests bunch up at the gateway
        // (a window would see more than the rate allows).
        if ctx.writer.dispatched(item.id).await.is_err() {
            ctx.fatal("the state file writer stopped; see the error above".into());
            return;
        }
        let not_sent = Outcome::NotSent {
            was_in_flight: row.maybe_sent,
        };
        let bearer = match ctx.turn().await {
            Ok(Some(b)) => b,
            Ok(None) => {
                ctx.record(item.id, not_sent);
                return;
            }
            Err(auth) => {
                ctx.record(item.id, not_sent);
                ctx.fatal(format!("{auth}; rerun the same command to continue"));
                return;
            }
        };
        let sent_at = Instant::now();
        ctx.first_sent.get_or_init(|| sent_at);
        let verdict = ctx.api.track(&bearer, &item.payload).await;
        posts += 1;
        ctx.requests.fetch_add(1, Ordering::Relaxed);
        if posts == 1 && item.was_in_flight {
            ctx.resent.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(line = item.line, post = posts, ?verdict, "answer");
        let facts = ctx.observe(&verdict, sent_at, bearer.generation, item.line, &row);
        let requeue = |row: &Attempts| Outcome::Requeue {
            maybe_sent: row.maybe_sent,
        };
        match attempt::next(verdict, &mut row, &facts) {
            Step::Finish(outcome) => {
                ctx.record(item.id, outcome);
                return;
            }
            Step::RanOut(exhausted) => {
                ctx.ran_out(item.id, row.maybe_sent, exhausted);
                return;
            }
            Step::Renew => ctx.api.auth().invalidate(bearer.generation),
            Step::Again => {}
            Step::Wait(delay) => {
                tracing::debug!(line = item.line, ?delay, "retrying");
                tokio::select! {
                    biased;
                    _ = ctx.stop.cancelled() => {
                        ctx.record(item.id, requeue(&row));
                        return;
                    }
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Step::Stop(message) => {
                ctx.record(item.id, requeue(&row));
                ctx.fatal(message);
                return;
            }
        }
    }
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

/// The longest `Retry-After` waited for: 5 minutes (APIM's longest
/// rate-limit renewal period), or `--backoff-cap` if longer. A server that
/// asks for more is down for longer than a run should sit and wait.
fn longest_wait(settings: &DispatchSettings) -> std::time::Duration {
    settings
        .backoff_cap
        .max(std::time::Duration::from_secs(300))
}
