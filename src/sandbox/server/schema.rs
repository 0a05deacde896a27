//! The request body checked against the spec's schema, coded apart from
//! the job's own validation so that each checks the other.

use super::*;

pub(super) fn sub_error(field: &str, rejected: Option<&Value>, message: &str) -> Value {
    let rejected = match rejected {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(other) => Value::String(other.to_string()),
    };
    json!({
        "section": "TrackingBatchPost",
        "field": field,
        "rejectedValue": rejected,
        "message": message,
    })
}

/// Checks a request body against `TrackingBatchPost`, as the spec states
/// it: required `documentReference`, types, nullability, `maxLength` in
/// characters, the `way` enum, the `url` pattern and no other property.
/// Returns the document reference, or one sub-error per offending field.
pub fn validate_body(value: &Value) -> Result<String, Vec<Value>> {
    let Some(object) = value.as_object() else {
        return Err(vec![sub_error("", Some(value), "must be a JSON object")]);
    };
    let mut errors = Vec::new();
    for (key, v) in object {
        if !spec::BODY_PROPERTIES.contains(&key.as_str()) {
            errors.push(sub_error(key, Some(v), "is not a known property"));
        }
    }
    let reference = match object.get("documentReference") {
        None | Some(Value::Null) => {
            errors.push(sub_error("documentReference", None, "must not be null"));
            None
        }
        Some(Value::String(s)) if s.is_empty() => {
            errors.push(sub_error(
                "documentReference",
                Some(&Value::String(s.clone())),
                "size must be at least 1",
            ));
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            errors.push(sub_error(
                "documentReference",
                Some(other),
                "must be a string",
            ));
            None
        }
    };
    match object.get("way") {
        None => {}
        Some(Value::String(w)) if spec::CUSTOMS_INDICATORS.contains(&w.as_str()) => {}
        Some(other) => errors.push(sub_error(
            "way",
            Some(other),
            &format!("must be one of {}", spec::CUSTOMS_INDICATORS.join(", ")),
        )),
    }
    for (field, max) in [
        ("place", spec::PLACE_MAX_CHARS),
        ("agentCode", spec::AGENT_CODE_MAX_CHARS),
    ] {
        match object.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if spec::char_len(s) <= max => {}
            Some(Value::String(s)) => errors.push(sub_error(
                field,
                Some(&Value::String(s.clone())),
                &format!("size must be between 0 and {max}"),
            )),
            Some(other) => errors.push(sub_error(field, Some(other), "must be a string")),
        }
    }
    match object.get("url") {
        None => {}
        Some(Value::String(u)) if spec::url_matches(u) => {}
        Some(Value::String(u)) => errors.push(sub_error(
            "url",
            Some(&Value::String(u.clone())),
            &format!("must match \"{}\"", spec::URL_PATTERN),
        )),
        Some(other) => errors.push(sub_error("url", Some(other), "must be a string")),
    }
    match (reference, errors.is_empty()) {
        (Some(r), true) => Ok(r),
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_bodies_pass() {
        for body in [
            json!({"documentReference": "3714238101"}),
            json!({"documentReference": "3714238101", "way": "Import", "place": "MTDF", "agentCode": "CCGM", "url": "https://my-webhook-endpoints.com"}),
            json!({"documentReference": "X", "place": null, "agentCode": null}),
        ] {
            assert!(validate_body(&body).is_ok(), "{body}");
        }
    }

    #[test]
    fn each_offending_field_gets_its_sub_error() {
        let body = json!({
            "documentReference": "",
            "way": "import",
            "place": "x".repeat(21),
            "agentCode": 12,
            "url": null,
            "extra": true,
        });
        let errors = validate_body(&body).unwrap_err();
        let mut fields: Vec<&str> = errors
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "agentCode",
                "documentReference",
                "extra",
                "place",
                "url",
                "way"
            ]
        );
        for e in &errors {
            assert!(
                e["rejectedValue"].is_string() || e["rejectedValue"].is_null(),
                "{e}"
            );
        }
    }

    #[test]
    fn non_objects_and_missing_reference_are_refused() {
        assert!(validate_body(&json!([1, 2])).is_err());
        assert!(validate_body(&json!({"way": "Import"})).is_err());
        assert!(validate_body(&json!({"documentReference": null})).is_err());
    }
}
