//! Which fault, if any, a request meets: a pure, seeded decision.
//!
//! The draw depends only on the seed, the document reference and how many
//! times that reference was requested before, so the nth request for a
//! document meets the same fault in every rehearsal, whatever the order in
//! which concurrent requests arrive.

use std::time::Duration;

use super::catalogue::Stream;

/// Fault rates (each a probability in `[0, 1]`) and durations.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Added to every answer.
    pub latency: Duration,
    /// A further delay drawn uniformly in `[0, latency_spread]`.
    pub latency_spread: Duration,
    /// 429 "Rate limit is exceeded" with Retry-After: 1, whatever the pace
    /// (a gateway that throttles for reasons of its own).
    pub status_429: f64,
    pub status_500: f64,
    pub status_502: f64,
    pub status_503: f64,
    pub status_504: f64,
    /// Connection closed without an answer.
    pub drop: f64,
    /// No answer for `hang_for`, then a 500 as APIM gives on a backend
    /// timeout (the client's own timeout normally fires first).
    pub hang: f64,
    pub hang_for: Duration,
    /// A 201 whose body is not valid JSON.
    pub malformed: f64,
    /// A 201 whose body is cut short by a closed connection.
    pub truncate: f64,
}

impl Default for Faults {
    /// No fault, no latency.
    fn default() -> Faults {
        Faults {
            latency: Duration::ZERO,
            latency_spread: Duration::ZERO,
            status_429: 0.0,
            status_500: 0.0,
            status_502: 0.0,
            status_503: 0.0,
            status_504: 0.0,
            drop: 0.0,
            hang: 0.0,
            hang_for: Duration::from_secs(300),
            malformed: 0.0,
            truncate: 0.0,
        }
    }
}

impl Faults {
    /// The realistic mix of `--chaos`.
    pub fn chaos() -> Faults {
        Faults {
            latency: Duration::from_millis(20),
            latency_spread: Duration::from_millis(80),
            status_429: 0.0,
            status_500: 0.01,
            status_502: 0.01,
            status_503: 0.02,
            status_504: 0.01,
            drop: 0.01,
            hang: 0.005,
            hang_for: Duration::from_secs(300),
            malformed: 0.005,
            truncate: 0.005,
        }
    }

    fn total(&self) -> f64 {
        self.status_429
            + self.status_500
            + self.status_502
            + self.status_503
            + self.status_504
            + self.drop
            + self.hang
            + self.malformed
            + self.truncate
    }
}

/// A fault that replaces the normal answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Status(u16),
    Drop,
    Hang,
    Malformed,
    Truncate,
}

impl Fault {
    /// Name in the ledger.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Status(429) => "fault_429",
            Fault::Status(500) => "fault_500",
            Fault::Status(502) => "fault_502",
            Fault::Status(503) => "fault_503",
            Fault::Status(504) => "fault_504",
            Fault::Status(_) => "fault_status",
            Fault::Drop => "fault_drop",
            Fault::Hang => "fault_hang",
            Fault::Malformed => "fault_malformed",
            Fault::Truncate => "fault_truncate",
        }
    }
}

/// Whether the service had already created the tracking when the fault hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// In front of the service (a proxy, the gateway): nothing was created.
    BeforeService,
    /// After the service created the tracking: the client just cannot know.
    AfterService,
}

/// What one request meets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draw {
    pub delay: Duration,
    pub fault: Option<(Fault, Phase)>,
}

/// Salt separating fault draws from the catalogue's.
const SALT: u64 = 0x6661_756c_7473;

/// The draw for the `nth` (1-based) request about `key`.
pub fn draw(faults: &Faults, seed: u64, key: &str, nth: u64) -> Draw {
    let mut s = Stream::new(seed ^ SALT, &format!("{key}#{nth}"));
    let spread = faults.latency_spread.mul_f64(s.unit());
    let delay = faults.latency + spread;
    let u = s.unit();
    let half = s.unit() < 0.5;
    let mut edge = 0.0;
    let table = [
        (faults.status_429, Fault::Status(429)),
        (faults.status_500, Fault::Status(500)),
        (faults.status_502, Fault::Status(502)),
        (faults.status_503, Fault::Status(503)),
        (faults.status_504, Fault::Status(504)),
        (faults.drop, Fault::Drop),
        (faults.hang, Fault::Hang),
        (faults.malformed, Fault::Malformed),
        (faults.truncate, Fault::Truncate),
    ];
    let scale = faults.total().max(1.0);
    let mut fault = None;
    for (rate, kind) in table {
        edge += rate / scale;
        if u < edge {
            fault = Some(kind);
            break;
        }
    }
    let fault = fault.map(|f| {
        let phase = match f {
            Fault::Status(429) | Fault::Status(502) | Fault::Status(503) => Phase::BeforeService,
            Fault::Malformed | Fault::Truncate => Phase::AfterService,
            _ if half => Phase::BeforeService,
            _ => Phase::AfterService,
        };
        (f, phase)
    });
    Draw { delay, fault }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_faults_no_delay() {
        let d = draw(&Faults::default(), 1, "X", 1);
        assert_eq!(
            d,
            Draw {
                delay: Duration::ZERO,
                fault: None
            }
        );
    }

    #[test]
    fn a_rate_of_one_always_hits() {
        let f = Faults {
            drop: 1.0,
            ..Faults::default()
        };
        for n in 1..100 {
            assert!(matches!(
                draw(&f, 3, "doc", n).fault,
                Some((Fault::Drop, _))
            ));
        }
    }

    #[test]
    fn the_same_request_meets_the_same_fault() {
        let f = Faults::chaos();
        for n in 1..200 {
            let key = format!("DOC{n}");
            assert_eq!(draw(&f, 9, &key, 1), draw(&f, 9, &key, 1));
        }
    }

    #[test]
    fn rates_are_honoured_over_many_draws() {
        let f = Faults {
            status_503: 0.10,
            malformed: 0.05,
            ..Faults::default()
        };
        let draws: Vec<Draw> = (0..20_000)
            .map(|i| draw(&f, 0, &format!("R{i}"), 1))
            .collect();
        let count = |want: Fault| {
            draws
                .iter()
                .filter(|d| d.fault.map(|x| x.0) == Some(want))
                .count()
        };
        let (s503, malformed) = (count(Fault::Status(503)), count(Fault::Malformed));
        assert!((1800..2200).contains(&s503), "{s503}");
        assert!((850..1150).contains(&malformed), "{malformed}");
    }

    #[test]
    fn latency_stays_within_its_spread() {
        let f = Faults {
            latency: Duration::from_millis(10),
            latency_spread: Duration::from_millis(5),
            ..Faults::default()
        };
        for n in 0..500 {
            let d = draw(&f, 0, "x", n).delay;
            assert!(
                d >= Duration::from_millis(10) && d <= Duration::from_millis(15),
                "{d:?}"
            );
        }
    }

    #[test]
    fn proxies_fail_before_the_service_and_bodies_after_it() {
        let f = Faults {
            status_502: 0.5,
            truncate: 0.5,
            ..Faults::default()
        };
        for n in 0..200 {
            match draw(&f, 0, "k", n).fault {
                Some((Fault::Status(502), p)) => assert_eq!(p, Phase::BeforeService),
                Some((Fault::Truncate, p)) => assert_eq!(p, Phase::AfterService),
                other => panic!("{other:?}"),
            }
        }
    }
}
