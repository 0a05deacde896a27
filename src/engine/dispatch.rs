//! Sending the pending rows: concurrency, the request tasks, stop.
//!
//! One producer loop takes pending rows in id order, waits for a free slot
//! (semaphore), then spawns a task per row. A task marks its row in flight
//! (durably), books its turn with the pace through the
//! [control](super::control) (which owns the pace, the breaker and
//! the counters), sends at that moment, lets [`attempt::next`] decide what
//! the answer means for the row, and hands the final outcome to the state
//! writer. A fatal condition or a stop request ends the producer; tasks
//! already sending finish and are recorded; rows not sent stay pending.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::control::{Answer, Control};
use crate::api::{Api, AuthError, Bearer};
use crate::attempt::{self, Attempts, Facts, Step};
use crate::config::DispatchSettings;
use crate::progress::PaceView;
use crate::retry::{self, Verdict};
use crate::store::{Outcome, PendingItem, Writer};
use crate::webhooks::token;

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
    pub sending: Duration,
    /// Where the requests' time went, summed over them all.
    pub time: RequestTime,
}

/// Where requests spend their time, summed: what bounds a run that reaches
/// neither `--rate` nor the gateway's limit (Little's law: in flight / time
/// per request).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RequestTime {
    /// Waiting for the row's in-flight mark to be committed (the disk).
    pub marking: Duration,
    /// Waiting for its turn: a token, then the pace's slot.
    pub turn: Duration,
    /// From the request out to its answer in.
    pub answer: Duration,
}

impl std::ops::AddAssign for RequestTime {
    fn add_assign(&mut self, other: RequestTime) {
        self.marking += other.marking;
        self.turn += other.turn;
        self.answer += other.answer;
    }
}

impl Default for DispatchReport {
    fn default() -> DispatchReport {
        DispatchReport {
            requests: 0,
            resent_after_interruption: 0,
            fatal: None,
            throttled: 0,
            lowest_pace: 1.0,
            sending: Duration::ZERO,
            time: RequestTime::default(),
        }
    }
}

/// What every request task holds: the API, the state writer, the settings,
/// the stop, and its handle on [control](super::control), which owns
/// everything the tasks share.
struct Ctx {
    api: Arc<Api>,
    writer: Arc<Writer>,
    settings: DispatchSettings,
    stop: CancellationToken,
    control: Control,
}

impl Ctx {
    fn record(&self, id: i64, outcome: Outcome) {
        if self.writer.record(id, outcome).is_err() {
            self.control
                .fatal("the state file writer stopped; see the error above".into());
        }
    }

    /// Waits for the right to send one request: books a slot with the pace
    /// (rate limit, pauses after 429s) and waits until it. `false` if
    /// dispatch stopped.
    async fn gate(&self) -> bool {
        loop {
            let booking = self.control.book();
            if !wait_for_slot(booking.at, &self.stop).await {
                return false;
            }
            // A 429 may have come in while this request waited: its slot
            // was booked at the old pace, so it books again.
            if self.control.holds(booking) {
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

    /// Takes in what an answer says for the run (the token; latency, the
    /// pace and the breaker, through control), and gathers what
    /// the row's policy needs.
    async fn observe(
        &self,
        verdict: &Verdict,
        answer: Answer,
        generation: u64,
        line: u64,
        row: &Attempts,
    ) -> Facts<'_> {
        match verdict {
            Verdict::BadResponse { reason, .. } => {
                tracing::warn!(line, "{reason}");
                self.api.auth().accepted(generation);
            }
            Verdict::Created { .. } | Verdict::RowError { .. } => {
                self.api.auth().accepted(generation);
            }
            _ => {}
        }
        let throttle = self.control.answered(answer);
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
    let control = Control::start(&settings, writer.clone(), view, stop.clone());
    let ctx = Arc::new(Ctx {
        api,
        writer,
        settings,
        stop: stop.clone(),
        control,
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
    ctx.control.finish()
}

fn reap(done: Result<(), tokio::task::JoinError>, ctx: &Ctx) {
    if let Err(e) = done {
        ctx.control
            .fatal(format!("internal error in a request task: {e}"));
    }
}

/// Sends one row until it has a final outcome (or dispatch stops): the
/// driver of [`attempt::next`], which decides each step.
///
/// Long for a reason: each arm of its loop carries out one step the pure
/// policy chose (wait, renew the token, record, requeue, stop); the
/// decisions are in `attempt`, table-tested.
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
        let marking = Instant::now();
        if ctx.writer.dispatched(item.id).await.is_err() {
            ctx.control
                .fatal("the state file writer stopped; see the error above".into());
            return;
        }
        let not_sent = Outcome::NotSent {
            was_in_flight: row.maybe_sent,
        };
        let turn = Instant::now();
        let bearer = match ctx.turn().await {
            Ok(Some(b)) => b,
            Ok(None) => {
                ctx.record(item.id, not_sent);
                return;
            }
            Err(auth) => {
                ctx.record(item.id, not_sent);
                ctx.control
                    .fatal(format!("{auth}; rerun the same command to continue"));
                return;
            }
        };
        let body = match token::unmask(&item.payload, ctx.settings.webhook_token.as_ref()) {
            Ok(body) => body,
            Err(why) => {
                ctx.record(item.id, not_sent);
                ctx.control.fatal(why);
                return;
            }
        };
        let sent_at = Instant::now();
        let (verdict, stated) = ctx.api.track(&bearer, &body).await;
        posts += 1;
        tracing::trace!(
            line = item.line,
            attempt = posts,
            ms = sent_at.elapsed().as_millis() as u64,
            "POST {}: {}",
            crate::spec::TRACK_PATH,
            verdict.brief()
        );
        let answer = Answer::of(
            &verdict,
            stated,
            sent_at,
            posts == 1 && item.was_in_flight,
            (turn - marking, sent_at - turn),
        );
        let facts = ctx
            .observe(&verdict, answer, bearer.generation, item.line, &row)
            .await;
        let requeue = |row: &Attempts| Outcome::Requeue {
            maybe_sent: row.maybe_sent,
        };
        match attempt::next(verdict, &mut row, &facts) {
            Step::Finish(outcome) => {
                ctx.record(item.id, outcome);
                return;
            }
            Step::RanOut(exhausted) => {
                ctx.control.ran_out(item.id, row.maybe_sent, exhausted);
                return;
            }
            Step::Renew => ctx.api.auth().invalidate(bearer.generation),
            Step::Again => {}
            Step::Wait(delay) => {
                tracing::debug!(
                    line = item.line,
                    "retrying in {}",
                    humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
                );
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
                ctx.control.fatal(message);
                return;
            }
        }
    }
}

/// Waits until `at`, never less; `false` if `stop` came first.
///
/// A slot less than a tick away is yielded to, not slept to: the timer
/// would wake it at its next tick, up to a tick late. At a fast pace many
/// slots fall within one tick (tasks released together by one commit book
/// them side by side), and that lateness was 12% of a run's wall time at
/// full speed (BENCHMARKS.md).
async fn wait_for_slot(at: Instant, stop: &CancellationToken) -> bool {
    if at.saturating_duration_since(Instant::now()) < TIMER_TICK {
        while Instant::now() < at {
            tokio::task::yield_now().await;
        }
        return true;
    }
    tokio::select! {
        biased;
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep_until(at.into()) => true,
    }
}

/// The tokio timer's resolution: a sleep ends at a tick of this length.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// The longest `Retry-After` waited for: 5 minutes (APIM's longest
/// rate-limit renewal period), or `--backoff-cap` if longer. A server that
/// asks for more is down for longer than a run should sit and wait.
fn longest_wait(settings: &DispatchSettings) -> Duration {
    settings.backoff_cap.max(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_never_left_for_early_and_a_stop_ends_a_long_wait() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let stop = CancellationToken::new();
            // Under a tick (yielded to), about a tick, and over (slept to).
            for micros in [0, 10, 250, 999, 1_000, 1_500, 3_000] {
                for _ in 0..20 {
                    let at = Instant::now() + Duration::from_micros(micros);
                    assert!(wait_for_slot(at, &stop).await, "{micros} µs: stopped");
                    let now = Instant::now();
                    assert!(now >= at, "{micros} µs: left {:?} early", at - now);
                }
            }
            // A slot in the past is now.
            assert!(wait_for_slot(Instant::now() - Duration::from_secs(1), &stop).await);
            stop.cancel();
            let far = Instant::now() + Duration::from_secs(3600);
            assert!(!wait_for_slot(far, &stop).await);
        });
    }
}
