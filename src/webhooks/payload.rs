//! The webhook payload SOGET posts (the spec's "Webhook" topic, in
//! PascalCase unlike the REST API): one handling unit and its events. Pure:
//! a body in, the events it carries (each with the key it is de-duplicated
//! by) or why it is not the spec's shape.

use serde::Deserialize;

/// One event about one handling unit, as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub spi: String,
    pub reference: String,
    pub external_reference: String,
    pub freight_family: String,
    pub alert_date: String,
    pub alert_type: String,
    pub direction: String,
    pub location: String,
    pub state: String,
    pub kind: String,
}

impl Event {
    /// What makes two deliveries the same event: the unit and every field
    /// of the event (SOGET's payload carries no event ID). Fields are
    /// length-prefixed, so no two different events share a key.
    pub fn key(&self) -> String {
        let mut key = String::new();
        for field in [
            &self.spi,
            &self.reference,
            &self.alert_date,
            &self.alert_type,
            &self.direction,
            &self.location,
            &self.state,
            &self.kind,
        ] {
            key.push_str(&field.chars().count().to_string());
            key.push(':');
            key.push_str(field);
        }
        key
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Body {
    handling_unit: Unit,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Unit {
    #[serde(default)]
    events: Option<Vec<RawEvent>>,
    #[serde(default)]
    freight_family: Option<String>,
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    spi: Option<String>,
    #[serde(default)]
    external_reference: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawEvent {
    #[serde(default)]
    alert_date: Option<String>,
    #[serde(default)]
    alert_type: Option<String>,
    #[serde(default)]
    direction: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default, rename = "Type")]
    kind: Option<String>,
}

/// Why a body is not the spec's webhook payload (kept, with this reason, as
/// unreadable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    #[error("not the webhook payload: {0}")]
    NotThePayload(String),
    #[error("HandlingUnit names no unit (no Spi, no Reference)")]
    NoUnit,
    #[error("HandlingUnit.Events is empty")]
    NoEvents,
    #[error("HandlingUnit.Events[{0}] has no AlertType")]
    NoAlertType(usize),
}

/// The events a body carries, or why it is not the spec's shape: a JSON
/// object with a `HandlingUnit` naming its unit (`Spi` or `Reference`) and
/// at least one event with an `AlertType`.
pub fn events(body: &[u8]) -> Result<Vec<Event>, Unreadable> {
    let body: Body =
        serde_json::from_slice(body).map_err(|e| Unreadable::NotThePayload(e.to_string()))?;
    let unit = body.handling_unit;
    let spi = unit.spi.unwrap_or_default();
    let reference = unit.reference.unwrap_or_default();
    if spi.is_empty() && reference.is_empty() {
        return Err(Unreadable::NoUnit);
    }
    let raw = unit.events.unwrap_or_default();
    if raw.is_empty() {
        return Err(Unreadable::NoEvents);
    }
    raw.into_iter()
        .enumerate()
        .map(|(i, e)| {
            let alert_type = e.alert_type.unwrap_or_default();
            if alert_type.is_empty() {
                return Err(Unreadable::NoAlertType(i));
            }
            Ok(Event {
                spi: spi.clone(),
                reference: reference.clone(),
                external_reference: unit.external_reference.clone().unwrap_or_default(),
                freight_family: unit.freight_family.clone().unwrap_or_default(),
                alert_date: e.alert_date.unwrap_or_default(),
                alert_type,
                direction: e.direction.unwrap_or_default(),
                location: e.location.unwrap_or_default(),
                state: e.state.unwrap_or_default(),
                kind: e.kind.unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str = r#"{"HandlingUnit":{"Events":[{"AlertDate":"2025-08-15T23:32:00+00:00","AlertType":"Creation","Direction":"Import","Location":"MTDF","State":"Active","Type":"DIR"}],"FreightFamily":"Container","Reference":"REF_HU","Spi":"SPI_HU"}}"#;

    #[test]
    fn the_spec_example_reads_as_one_event() {
        let events = events(SPEC_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(
            events,
            [Event {
                spi: "SPI_HU".into(),
                reference: "REF_HU".into(),
                external_reference: String::new(),
                freight_family: "Container".into(),
                alert_date: "2025-08-15T23:32:00+00:00".into(),
                alert_type: "Creation".into(),
                direction: "Import".into(),
                location: "MTDF".into(),
                state: "Active".into(),
                kind: "DIR".into(),
            }]
        );
    }

    #[test]
    fn what_is_not_the_payload_says_why() {
        let cases = [
            ("", "not the webhook payload"),
            ("[]", "not the webhook payload"),
            ("{\"Spi\":\"X\"}", "not the webhook payload"),
            (
                r#"{"HandlingUnit":{"Events":[{"AlertType":"Creation"}]}}"#,
                "names no unit",
            ),
            (r#"{"HandlingUnit":{"Spi":"S","Events":[]}}"#, "is empty"),
            (r#"{"HandlingUnit":{"Spi":"S"}}"#, "is empty"),
            (
                r#"{"HandlingUnit":{"Spi":"S","Events":[{"AlertType":"A"},{"State":"x"}]}}"#,
                "Events[1] has no AlertType",
            ),
            (
                r#"{"HandlingUnit":{"Spi":7,"Events":[{"AlertType":"A"}]}}"#,
                "not the webhook payload",
            ),
        ];
        for (body, why) in cases {
            let err = events(body.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(why), "{body}: {err}");
        }
    }

    #[test]
    fn several_events_in_one_body_each_have_their_key() {
        let body = r#"{"HandlingUnit":{"Spi":"S","Reference":"R","Events":[
            {"AlertType":"Creation","AlertDate":"2026-01-01T00:00:00Z"},
            {"AlertType":"Discharge","AlertDate":"2026-01-02T00:00:00Z"},
            {"AlertType":"Creation","AlertDate":"2026-01-01T00:00:00Z"}]}}"#;
        let events = events(body.as_bytes()).unwrap();
        assert_eq!(events.len(), 3);
        assert_ne!(events[0].key(), events[1].key());
        // The same event twice has the same key.
        assert_eq!(events[0].key(), events[2].key());
    }

    #[test]
    fn keys_cannot_collide_by_shifting_text_between_fields() {
        let a = Event {
            spi: "AB".into(),
            reference: "C".into(),
            ..event()
        };
        let b = Event {
            spi: "A".into(),
            reference: "BC".into(),
            ..event()
        };
        assert_ne!(a.key(), b.key());
    }

    fn event() -> Event {
        events(SPEC_EXAMPLE.as_bytes()).unwrap().remove(0)
    }
}
