//! Showing how far a run is: a bar on a terminal, log lines otherwise.
//!
//! One task owns the display and reads the state writer's committed
//! counters, so what it shows is what is durably done. Rows finished by
//! earlier runs count as done; the speed and the ETA come only from what
//! this run does.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// One line describing where the run stands.
pub fn describe(totals: &Totals, tracked: u64, failed: u64, speed: Option<f64>) -> String {
    let done = totals.done_before + tracked + failed;
    let remaining = totals.total.saturating_sub(done);
    let failed_all = totals.failed_before + failed;
    let speed_text = speed.map_or("-".to_string(), |s| format!("{s:.1}/s"));
    let eta_text = eta(remaining, speed).map_or("unknown".to_string(), format_duration);
    format!(
        "{done}/{} done, {failed_all} failed, {speed_text}, ETA {eta_text}",
        totals.total
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
        slot: BarSlot,
    ) -> Progress {
        let stop = CancellationToken::new();
        let task = match display {
            Display::Off => None,
            Display::Bar => Some(tokio::spawn(bar_loop(
                totals,
                committed,
                slot,
                stop.clone(),
            ))),
            Display::Lines { interval } => Some(tokio::spawn(line_loop(
                totals,
                committed,
                interval,
                stop.clone(),
            ))),
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

fn counts(committed: &Committed) -> (u64, u64) {
    (
        committed.tracked.load(Ordering::Relaxed),
        committed.failed.load(Ordering::Relaxed),
    )
}

async fn bar_loop(
    totals: Totals,
    committed: Arc<Committed>,
    slot: BarSlot,
    stop: CancellationToken,
) {
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
        let (tracked, failed) = counts(&committed);
        speed.push(Instant::now(), tracked + failed);
        bar.set_position(totals.done_before + tracked + failed);
        bar.set_message(describe(&totals, tracked, failed, speed.per_second()));
        if stopping {
            break;
        }
    }
    slot.set(None);
    bar.finish_and_clear();
}

async fn line_loop(
    totals: Totals,
    committed: Arc<Committed>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut speed = Speed::new(Duration::from_secs(60).max(interval * 3));
    speed.push(Instant::now(), 0);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let (tracked, failed) = counts(&committed);
        speed.push(Instant::now(), tracked + failed);
        tracing::info!(
            "progress: {}",
            describe(&totals, tracked, failed, speed.per_second())
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
        let line = describe(&totals, 50, 0, Some(10.0));
        assert_eq!(line, "950/1000 done, 5 failed, 10.0/s, ETA 5s");
    }
}
