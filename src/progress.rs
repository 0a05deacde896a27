//! Showing how far a run is: a bar on a terminal, log lines otherwise.
//!
//! One task owns the display and reads the state writer's committed
//! counters, so what it shows is what is durably done. Rows finished by
//! earlier runs count as done; the speed and the ETA come only from what
//! this run does.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::store::Committed;

/// The bar currently drawn, shared with the log writer so that log lines
/// are printed above the bar instead of through it.
#[derive(Clone, Default)]
pub struct BarSlot(Arc<Mutex<Option<ProgressBar>>>);

impl BarSlot {
    /// Runs `f` with the bar (if any) cleared from the screen.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        let bar = self.0.lock().ok().and_then(|b| b.clone());
        match bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    fn set(&self, bar: Option<ProgressBar>) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = bar;
        }
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// An indicatif bar on stderr.
    Bar,
    /// A log line every `interval`.
    Lines {
        interval: Duration,
    },
    Off,
}

/// What the display counts against.
#[derive(Debug, Clone, Copy)]
pub struct Totals {
    /// Rows of the input that are to be answered (valid, not duplicates).
    pub total: u64,
    /// Of those, already answered before this run.
    pub done_before: u64,
    /// Of those answered before, how many failed.
    pub failed_before: u64,
}

/// What the pace is doing, as the dispatcher reports it at every booking
/// (atomics: the display reads them without getting in its way).
#[derive(Debug, Default)]
pub struct PaceView {
    /// Unix time in milliseconds until which every request is paused by a
    /// 429 (0: none).
    paused_until_ms: AtomicU64,
    /// The rate in force, in thousandths of a request per second.
    rate_milli: AtomicU64,
    /// `--rate`, the same way.
    ceiling_milli: AtomicU64,
}

/// A reading of [`PaceView`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaceShown {
    pub paused_until: Option<SystemTime>,
    pub rate: f64,
    pub ceiling: f64,
}

impl PaceView {
    /// Records the pace: its rate, `--rate`, and a pause ending `pause`
    /// from now, if any.
    pub fn report(&self, rate: f64, ceiling: f64, pause: Option<Duration>) {
        let milli = |r: f64| (r * 1000.0).clamp(0.0, 1e15) as u64;
        self.rate_milli.store(milli(rate), Ordering::Relaxed);
        self.ceiling_milli.store(milli(ceiling), Ordering::Relaxed);
        let until = pause
            .and_then(|p| SystemTime::now().checked_add(p))
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        self.paused_until_ms.store(until, Ordering::Relaxed);
    }

    /// What to show now: `None` before the first report.
    pub fn read(&self) -> Option<PaceShown> {
        let ceiling = self.ceiling_milli.load(Ordering::Relaxed) as f64 / 1000.0;
        if ceiling == 0.0 {
            return None;
        }
        let until_ms = self.paused_until_ms.load(Ordering::Relaxed);
        let paused_until = (until_ms > 0)
            .then(|| SystemTime::UNIX_EPOCH + Duration::from_millis(until_ms))
            .filter(|t| *t > SystemTime::now());
        Some(PaceShown {
            paused_until,
            rate: self.rate_milli.load(Ordering::Relaxed) as f64 / 1000.0,
            ceiling,
        })
    }
}

/// Throughput over a sliding window.
#[derive(Debug)]
pub struct Speed {
    window: Duration,
    samples: VecDeque<(Instant, u64)>,
}

impl Speed {
    pub fn new(window: Duration) -> Speed {
        Speed {
            window,
            samples: VecDeque::new(),
        }
    }

    /// Records that `done` rows were finished by `at`.
    pub fn push(&mut self, at: Instant, done: u64) {
        self.samples.push_back((at, done));
        while let Some(&(t, _)) = self.samples.front() {
            if at.duration_since(t) > self.window && self.samples.len() > 2 {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    /// Rows per second over the window; `None` until there is a span.
    pub fn per_second(&self) -> Option<f64> {
        let (t0, d0) = *self.samples.front()?;
        let (t1, d1) = *self.samples.back()?;
        let span = t1.duration_since(t0).as_secs_f64();
        if span < 0.5 {
            return None;
        }
        Some(d1.saturating_sub(d0) as f64 / span)
    }
}

/// Time left for `remaining` rows at `per_second`.
pub fn eta(remaining: u64, per_second: Option<f64>) -> Option<Duration> {
    if remaining == 0 {
        return Some(Duration::ZERO);
    }
    let rate = per_second.filter(|r| *r > 0.0)?;
    Duration::try_from_secs_f64((remaining as f64 / rate).min(1e9)).ok()
}

/// `2h 05m`, `6m 24s`, `42s`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// One line describing where the run stands: during a pause, when it
/// ends (and the ETA from the pace after it); below `--rate`, the pace.
pub fn describe(
    totals: &Totals,
    tracked: u64,
    failed: u64,
    speed: Option<f64>,
    pace: Option<PaceShown>,
) -> String {
    let done = totals.done_before + tracked + failed;
    let remaining = totals.total.saturating_sub(done);
    let failed_all = totals.failed_before + failed;
    let head = format!("{done}/{} done, {failed_all} failed", totals.total);
    if let Some(p) = pace
        && let Some(until) = p.paused_until
    {
        let left = until
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let after = eta(remaining, Some(p.rate)).map(|e| e + left);
        return format!(
            "{head}, paused by 429 until {} UTC, then {:.1}/s of --rate {:.1}/s, ETA {}",
            clock(until),
            p.rate,
            p.ceiling,
            after.map_or("unknown".to_string(), format_duration)
        );
    }
    let speed_text = speed.map_or("-".to_string(), |s| format!("{s:.1}/s"));
    let pace_text = match pace {
        Some(p) if p.rate < 0.995 * p.ceiling => {
            format!(" (pace {:.1}/s of --rate {:.1}/s)", p.rate, p.ceiling)
        }
        _ => String::new(),
    };
    let eta_text = eta(remaining, speed).map_or("unknown".to_string(), format_duration);
    format!("{head}, {speed_text}{pace_text}, ETA {eta_text}")
}

/// `02:14:05` (UTC, as the log lines).
fn clock(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

/// The running display; [`Progress::finish`] stops it.
pub struct Progress {
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub fn start(
        display: Display,
        totals: Totals,
        committed: Arc<Committed>,
        pace: Arc<PaceView>,
        slot: BarSlot,
    ) -> Progress {
        let stop = CancellationToken::new();
        let watched = Watched {
            totals,
            committed,
            pace,
        };
        let task = match display {
            Display::Off => None,
            Display::Bar => Some(tokio::spawn(bar_loop(watched, slot, stop.clone()))),
            Display::Lines { interval } => {
                Some(tokio::spawn(line_loop(watched, interval, stop.clone())))
            }
        };
        Progress { stop, task }
    }

    pub async fn finish(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// What the display reads.
struct Watched {
    totals: Totals,
    committed: Arc<Committed>,
    pace: Arc<PaceView>,
}

impl Watched {
    fn counts(&self) -> (u64, u64) {
        (
            self.committed.tracked.load(Ordering::Relaxed),
            self.committed.failed.load(Ordering::Relaxed),
        )
    }

    fn describe(&self, speed: Option<f64>) -> String {
        let (tracked, failed) = self.counts();
        describe(&self.totals, tracked, failed, speed, self.pace.read())
    }
}

async fn bar_loop(watched: Watched, slot: BarSlot, stop: CancellationToken) {
    let totals = watched.totals;
    let target = ProgressDrawTarget::term_like_with_hz(Box::new(console::Term::stderr()), 10);
    let bar = ProgressBar::with_draw_target(Some(totals.total), target);
    let style = ProgressStyle::with_template("{bar:30.cyan/blue} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("█▉▊▋▌▍▎▏ ");
    bar.set_style(style);
    slot.set(Some(bar.clone()));
    let mut speed = Speed::new(Duration::from_secs(30));
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        let (tracked, failed) = watched.counts();
        speed.push(Instant::now(), tracked + failed);
        bar.set_position(totals.done_before + tracked + failed);
        bar.set_message(watched.describe(speed.per_second()));
        if stopping {
            break;
        }
    }
    slot.set(None);
    bar.finish_and_clear();
}

async fn line_loop(watched: Watched, interval: Duration, stop: CancellationToken) {
    let mut speed = Speed::new(Duration::from_secs(60).max(interval * 3));
    speed.push(Instant::now(), 0);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let (tracked, failed) = watched.counts();
        speed.push(Instant::now(), tracked + failed);
        let totals = &watched.totals;
        let done = totals.done_before + tracked + failed;
        let rate = speed.per_second();
        let eta_seconds = rate
            .and_then(|r| eta(totals.total.saturating_sub(done), Some(r)))
            .map(|d| d.as_secs());
        // The same figures as fields, for --log-format json.
        tracing::info!(
            done,
            total = totals.total,
            failed = totals.failed_before + failed,
            rate = rate.map(|r| (r * 10.0).round() / 10.0),
            eta_seconds,
            "progress: {}",
            watched.describe(rate)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_over_the_window() {
        let t0 = Instant::now();
        let mut s = Speed::new(Duration::from_secs(10));
        s.push(t0, 0);
        assert_eq!(s.per_second(), None);
        s.push(t0 + Duration::from_secs(2), 20);
        assert_eq!(s.per_second(), Some(10.0));
        // Old samples fall out of the window: only the recent pace counts.
        s.push(t0 + Duration::from_secs(20), 20);
        s.push(t0 + Duration::from_secs(30), 120);
        assert_eq!(s.per_second(), Some(10.0));
    }

    #[test]
    fn eta_from_what_remains() {
        assert_eq!(eta(100, Some(10.0)), Some(Duration::from_secs(10)));
        assert_eq!(eta(0, None), Some(Duration::ZERO));
        assert_eq!(eta(5, None), None);
        assert_eq!(eta(5, Some(0.0)), None);
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(format_duration(Duration::from_secs(42)), "42s");
        assert_eq!(format_duration(Duration::from_secs(384)), "6m 24s");
        assert_eq!(format_duration(Duration::from_secs(7500)), "2h 05m");
    }

    #[test]
    fn a_resumed_run_counts_earlier_rows_as_done() {
        let totals = Totals {
            total: 1000,
            done_before: 900,
            failed_before: 5,
        };
        let line = describe(&totals, 50, 0, Some(10.0), None);
        assert_eq!(line, "950/1000 done, 5 failed, 10.0/s, ETA 5s");
    }

    #[test]
    fn a_pause_and_a_slower_pace_are_shown() {
        let totals = Totals {
            total: 1000,
            done_before: 0,
            failed_before: 0,
        };
        let view = PaceView::default();
        view.report(20.0, 60.0, Some(Duration::from_secs(30)));
        let line = describe(&totals, 400, 0, Some(0.0), view.read());
        assert!(
            line.starts_with("400/1000 done, 0 failed, paused by 429 until "),
            "{line}"
        );
        // 600 left at 20/s after about 30 s of pause.
        assert!(
            line.contains("UTC, then 20.0/s of --rate 60.0/s, ETA 59s")
                || line.contains("ETA 1m 00s"),
            "{line}"
        );
        view.report(20.0, 60.0, None);
        let line = describe(&totals, 400, 0, Some(19.5), view.read());
        assert_eq!(
            line,
            "400/1000 done, 0 failed, 19.5/s (pace 20.0/s of --rate 60.0/s), ETA 30s"
        );
        view.report(60.0, 60.0, None);
        let line = describe(&totals, 400, 0, Some(59.0), view.read());
        assert_eq!(line, "400/1000 done, 0 failed, 59.0/s, ETA 10s");
    }
}
