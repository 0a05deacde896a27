//! Durations, rates and shares as a person writes them (`30s`, `6h`,
//! `600/min`, `2%`): the domain's units, read the same way from the command
//! line, the configuration file and a stored run's settings.

use std::str::FromStr;
use std::time::Duration;

/// A value that does not read as the unit it should be, and how to write
/// one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadValue(pub String);

/// A request rate: `count` requests per `period`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub count: f64,
    pub period: Duration,
}

impl Rate {
    /// Time between two requests at this rate, rounded up to the
    /// nanosecond (never faster than the rate).
    pub fn interval(&self) -> Duration {
        let nanos = (self.period.as_nanos() as f64 / self.count).ceil();
        Duration::from_nanos(nanos as u64)
    }

    /// Requests per second.
    pub fn per_second(&self) -> f64 {
        self.count / self.period.as_secs_f64()
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl FromStr for Rate {
    type Err = BadValue;

    fn from_str(s: &str) -> Result<Rate, BadValue> {
        let usage = || {
            BadValue(format!(
                "{s:?} is not a rate; write it like 10/s, 600/min or 20000/h"
            ))
        };
        let (count, unit) = s.trim().split_once('/').ok_or_else(usage)?;
        let count: f64 = count.trim().parse().map_err(|_| usage())?;
        if !count.is_finite() || count <= 0.0 {
            return Err(BadValue(format!("{s:?}: the rate must be above zero")));
        }
        let period = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(usage()),
        };
        let rate = Rate { count, period };
        if rate.interval() < Duration::from_micros(10) {
            return Err(BadValue(format!("{s:?}: at most 100000/s")));
        }
        if rate.interval() > Duration::from_secs(3600) {
            return Err(BadValue(format!("{s:?}: at least 1/h")));
        }
        Ok(rate)
    }
}

impl serde::Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A duration written as a person would: `30s`, `6h`, `1h30m`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, BadValue> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        BadValue(format!(
            "{s:?} is not a duration ({e}); write it like 30s, 5m or 6h"
        ))
    })
}

/// A share: `0.02` or `2%`, between 0 and 1.
pub fn parse_fraction(s: &str) -> Result<f64, BadValue> {
    let t = s.trim();
    let value = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| BadValue(format!("{s:?} is not a share; write it like 0.02 or 2%")))?;
    if !(0.0..=1.0).contains(&value) {
        return Err(BadValue(format!(
            "{s:?}: a share is between 0 and 1 (0% and 100%)"
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_like_a_person_writes_them() {
        let r: Rate = "50/s".parse().unwrap();
        assert_eq!(r.interval(), Duration::from_millis(20));
        let r: Rate = "600/min".parse().unwrap();
        assert_eq!(r.interval(), Duration::from_millis(100));
        assert_eq!(r.per_second(), 10.0);
        let r: Rate = "1800/h".parse().unwrap();
        assert_eq!(r.interval(), Duration::from_secs(2));
        let r: Rate = "0.5/s".parse().unwrap();
        assert_eq!(r.interval(), Duration::from_secs(2));
        assert_eq!("600/min".parse::<Rate>().unwrap().to_string(), "600/min");
    }

    #[test]
    fn bad_rates_say_how_to_write_one() {
        for bad in ["10", "10/day", "/s", "0/s", "-1/s", "abc/s", "1e9/s"] {
            let err = bad.parse::<Rate>().unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }
}
