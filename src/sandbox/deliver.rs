//! The sandbox's webhook deliveries, made as a real sender makes them: the
//! spec's payload (PascalCase, one call per handling unit and event) a
//! little after a first creation, to the sandbox's target plus the path of
//! the URL the request registered (the target stands in for DNS: the
//! spec's url pattern refuses local addresses).
//!
//! Beyond the spec, all of it (SOGET documents neither its retries nor
//! any event but `Creation`):
//! - a delivery not answered 2xx in time is retried with doubling backoff,
//!   a bounded number of times, then given up;
//! - a share of deliveries is sent twice (at-least-once);
//! - each unit may get a sequence of events after `Creation` (`Loading`,
//!   `Departure`, `Arrival`, `Discharge`, `GateOut`), one every spacing.
//!
//! Its counts (in `GET /_sandbox/stats`) let a test prove that every event
//! acknowledged was stored exactly once.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::Webhooks;

/// The events after `Creation`, in order (the sandbox's invention).
pub const SEQUENCE: [&str; 6] = [
    "Creation",
    "Loading",
    "Departure",
    "Arrival",
    "Discharge",
    "GateOut",
];

/// What the deliveries did.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Counts {
    /// Events made (one per unit and alert type).
    pub events: u64,
    /// Events answered 2xx (each counted once, whatever its attempts).
    pub delivered: u64,
    /// Attempts after a failed one.
    pub retries: u64,
    /// Events sent a second time after a 2xx.
    pub duplicates: u64,
    /// Events given up after their last retry.
    pub failed: u64,
}

/// One tracking's units to deliver events for.
pub struct Tracking {
    /// The URL the request registered.
    pub url: String,
    pub document_reference: String,
    pub direction: String,
    pub location: String,
    /// (spi, reference) of each unit.
    pub units: Vec<(String, String)>,
}

/// Delivers webhooks for the sandbox: one per sandbox.
pub struct Deliverer {
    config: Webhooks,
    seed: u64,
    client: OnceLock<reqwest::Client>,
    counts: Mutex<Counts>,
}

impl Deliverer {
    pub fn new(config: Webhooks, seed: u64) -> Deliverer {
        Deliverer {
            config,
            seed,
            client: OnceLock::new(),
            counts: Mutex::new(Counts::default()),
        }
    }

    pub fn counts(&self) -> Counts {
        self.counts.lock().map(|c| *c).unwrap_or_default()
    }

    fn count(&self, f: impl FnOnce(&mut Counts)) {
        if let Ok(mut c) = self.counts.lock() {
            f(&mut c);
        }
    }

    /// Where a delivery for `registered` goes: the target plus its path.
    fn target_for(&self, registered: &str) -> String {
        let path = url::Url::parse(registered)
            .map(|u| u.path().to_string())
            .unwrap_or_default();
        let path = if path == "/" { "" } else { path.as_str() };
        format!("{}{path}", self.config.target.trim_end_matches('/'))
    }

    /// Starts the deliveries of a tracking's events (in the background).
    pub fn schedule(self: &Arc<Self>, tracking: Tracking) {
        let this = self.clone();
        let events = self.config.events.clamp(1, SEQUENCE.len() as u32) as usize;
        tokio::spawn(async move {
            tokio::time::sleep(this.config.delay).await;
            let target = this.target_for(&tracking.url);
            for (i, alert) in SEQUENCE.iter().take(events).enumerate() {
                if i > 0 {
                    tokio::time::sleep(this.config.spacing).await;
                }
                let date = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
                let sends = tracking.units.iter().map(|(spi, reference)| {
                    let body = json!({"HandlingUnit": {
                        "Events": [{
                            "AlertDate": date,
                            "AlertType": alert,
                            "Direction": tracking.direction,
                            "Location": tracking.location,
                            "State": "Active",
                            "Type": "DIR",
                        }],
                        "FreightFamily": "Container",
                        "Reference": reference,
                        "Spi": spi,
                        "ExternalReference": tracking.document_reference,
                    }});
                    this.deliver(&target, &tracking.url, body, format!("{spi}/{alert}"))
                });
                futures_util::future::join_all(sends).await;
            }
        });
    }

    /// One event: attempts until a 2xx or the last retry, then maybe a
    /// duplicate.
    async fn deliver(&self, target: &str, registered: &str, body: Value, key: String) {
        self.count(|c| c.events += 1);
        let client = self.client.get_or_init(|| {
            reqwest::Client::builder()
                .timeout(self.config.timeout)
                .no_proxy()
                .build()
                .unwrap_or_default()
        });
        let body = body.to_string();
        let post = || {
            client
                .post(target)
                .header("Content-Type", "application/json")
                .header("X-Sandbox-Registered-Url", registered)
                .body(body.clone())
                .send()
        };
        let mut backoff = self.config.backoff;
        for attempt in 0..=self.config.retries {
            if attempt > 0 {
                self.count(|c| c.retries += 1);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
            if matches!(post().await, Ok(r) if r.status().is_success()) {
                self.count(|c| c.delivered += 1);
                if self.draw(&key) < self.config.duplicates {
                    self.count(|c| c.duplicates += 1);
                    let _ = post().await;
                }
                return;
            }
        }
        self.count(|c| c.failed += 1);
    }

    /// A draw in [0, 1) fixed by the seed and the event.
    fn draw(&self, key: &str) -> f64 {
        let mut s = super::catalogue::Stream::new(self.seed, key);
        (s.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
