//! A run's seconds: what each second of sending did (answers by kind, the
//! pace, the pauses a 429 started), counted by the dispatch control, kept in
//! the ledger's `seconds` table and drawn by `trackmass report`.
//!
//! Pure: the caller says which wall-clock second an answer came in; this
//! counts it and hands back each second once a later one begins.

use serde::Serialize;

/// What an answer was, for the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    /// 201: the document is tracked.
    Created,
    /// The API answered about the row (a 4xx but 429, or a 201 that could
    /// not be read): done, not tracked.
    Refused,
    /// 429.
    Throttled,
    /// Failed otherwise: a 5xx, a timeout, a reset, no connection, a
    /// refused token (renewed) or a spent quota.
    Failed,
}

/// One second of a run (`at`, Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Second {
    pub at: i64,
    pub created: u32,
    pub refused: u32,
    pub throttled: u32,
    pub failed: u32,
    /// What the pace allowed at that second's last answer, per second.
    pub pace: f64,
    /// `--rate`, per second.
    pub rate: f64,
    /// How long the pause that a 429 of this second started lasts, ms.
    pub paused_ms: u64,
}

impl Second {
    /// Answers that came in this second.
    pub fn answers(&self) -> u32 {
        self.created + self.refused + self.throttled + self.failed
    }
}

/// Counts answers into seconds.
#[derive(Debug, Default)]
pub struct Seconds {
    current: Option<Second>,
}

impl Seconds {
    /// Counts an answer of `kind` that came in second `at`, the pace then
    /// `pace` per second under a ceiling of `rate`. Returns the previous
    /// second when `at` begins a new one. An `at` earlier than the current
    /// second (the wall clock stepped back) counts in the current one.
    pub fn count(&mut self, at: i64, kind: AnswerKind, pace: f64, rate: f64) -> Option<Second> {
        let done = self.roll(at, rate);
        let second = self.current.get_or_insert(Second {
            at,
            rate,
            ..Second::default()
        });
        match kind {
            AnswerKind::Created => second.created += 1,
            AnswerKind::Refused => second.refused += 1,
            AnswerKind::Throttled => second.throttled += 1,
            AnswerKind::Failed => second.failed += 1,
        }
        second.pace = pace;
        done
    }

    /// A 429 in second `at` paused every request for `ms`; counted in the
    /// second where it began (the longest, if several did).
    pub fn paused(&mut self, at: i64, ms: u64, rate: f64) -> Option<Second> {
        let done = self.roll(at, rate);
        let second = self.current.get_or_insert(Second {
            at,
            rate,
            ..Second::default()
        });
        second.paused_ms = second.paused_ms.max(ms);
        done
    }

    /// The second being counted, at the end of the run.
    pub fn finish(&mut self) -> Option<Second> {
        self.current.take()
    }

    fn roll(&mut self, at: i64, rate: f64) -> Option<Second> {
        match self.current {
            Some(current) if at > current.at => self.current.replace(Second {
                at,
                rate,
                ..Second::default()
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AnswerKind::*;

    #[test]
    fn answers_are_counted_in_their_second_and_handed_back_when_it_ends() {
        // (second, kind, pace) -> the second handed back, as
        // (at, created, refused, throttled, failed, pace)
        type Done = Option<(i64, u32, u32, u32, u32, f64)>;
        let steps: [((i64, AnswerKind, f64), Done); 7] = [
            ((100, Created, 40.0), None),
            ((100, Throttled, 20.0), None),
            ((100, Created, 20.0), None),
            // A new second hands the last one back, with its last pace.
            ((101, Refused, 21.0), Some((100, 2, 0, 1, 0, 20.0))),
            // The clock stepped back: still second 101.
            ((99, Failed, 22.0), None),
            // Seconds without answers are simply absent.
            ((105, Created, 23.0), Some((101, 0, 1, 0, 1, 22.0))),
            ((105, Created, 23.0), None),
        ];
        let mut seconds = Seconds::default();
        for ((at, kind, pace), expected) in steps {
            let got = seconds
                .count(at, kind, pace, 50.0)
                .map(|s| (s.at, s.created, s.refused, s.throttled, s.failed, s.pace));
            assert_eq!(got, expected, "answer at {at}");
        }
        let last = seconds.finish().expect("the second being counted");
        assert_eq!(
            (last.at, last.created, last.answers(), last.rate),
            (105, 2, 2, 50.0)
        );
        assert_eq!(seconds.finish(), None);
    }

    #[test]
    fn a_pause_is_kept_in_the_second_it_began() {
        let mut seconds = Seconds::default();
        assert_eq!(seconds.count(10, Throttled, 30.0, 60.0), None);
        assert_eq!(seconds.paused(10, 1_000, 60.0), None);
        assert_eq!(seconds.paused(10, 400, 60.0), None, "the longer one stands");
        let done = seconds.paused(12, 2_000, 60.0).expect("second 10 ends");
        assert_eq!((done.at, done.paused_ms, done.throttled), (10, 1_000, 1));
        let last = seconds.finish().expect("second 12");
        assert_eq!((last.at, last.paused_ms, last.answers()), (12, 2_000, 0));
    }
}
