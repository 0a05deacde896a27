//! The vendor's contract for `POST /track-document`, as data.
//!
//! Everything here is transcribed from `spec/api-tracking-code-in-mass.yaml`
//! (a verbatim copy of the vendor's OpenAPI file) and is the single place
//! where the job and the sandbox learn the API's constraints. Pure: no I/O.

use std::sync::LazyLock;

use regex::{Regex, RegexBuilder};

/// Path of the operation, relative to the API's base URL.
pub const TRACK_PATH: &str = "/track-document";
/// Base path of the API on the gateway (the spec's server URL path).
pub const API_BASE_PATH: &str = "/api-tracking-code-in-mass/v1";
/// Token endpoint path on the gateway (the spec's Authentication topic).
pub const TOKEN_PATH: &str = "/soget-connect/v1/openid-connect/token";
/// The spec's server.
pub const DEFAULT_BASE_URL: &str =
    "https://soget-api-integration.azure-api.net/api-tracking-code-in-mass/v1";
/// The token URL named in the spec's Authentication topic.
pub const DEFAULT_TOKEN_URL: &str =
    "https://soget-api-integration.azure-api.net/soget-connect/v1/openid-connect/token";
/// Header carrying the Azure API Management subscription key.
pub const SUBSCRIPTION_KEY_HEADER: &str = "Ocp-Apim-Subscription-Key";

/// `CustomsIndicators`: the values `way` may take, spelled as the spec does.
pub const CUSTOMS_INDICATORS: [&str; 8] = [
    "Unknown",
    "Import",
    "Export",
    "Transit",
    "Transhipment",
    "DomesticIn",
    "DomesticOut",
    "DomesticTranshipment",
];

/// `TrackingBatchPost.place.maxLength`.
pub const PLACE_MAX_CHARS: usize = 20;
/// `TrackingBatchPost.agentCode.maxLength`.
pub const AGENT_CODE_MAX_CHARS: usize = 64;

/// `TrackingBatchPost.url.pattern`, exactly as the spec writes it.
pub const URL_PATTERN: &str = r"^(https?:\/\/)?([\da-z\.-]+)\.([a-z\.]{2,6})([\/\w \.-]*)*\/?$";

/// The request's optional fields, each once with every name it goes by:
/// in the JSON body, as a `run` flag, as an input column. The reader, the
/// flags' check and the header mapping all read this table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestField {
    Way,
    Place,
    AgentCode,
    Url,
}

impl RequestField {
    /// In the body's property order.
    pub const ALL: [RequestField; 4] = [
        RequestField::Way,
        RequestField::Place,
        RequestField::AgentCode,
        RequestField::Url,
    ];

    /// Its name in the request body (and in the result files' headers).
    pub fn json(self) -> &'static str {
        match self {
            RequestField::Way => "way",
            RequestField::Place => "place",
            RequestField::AgentCode => "agentCode",
            RequestField::Url => "url",
        }
    }

    /// The `run` flag that gives a default for it (without `--`).
    pub fn flag(self) -> &'static str {
        match self {
            RequestField::Way => "way",
            RequestField::Place => "place",
            RequestField::AgentCode => "agent-code",
            RequestField::Url => "webhook-url",
        }
    }

    /// The input column names it is read from, normalised (lowercase,
    /// without `_`, `-` and spaces).
    pub fn headers(self) -> &'static [&'static str] {
        match self {
            RequestField::Way => &["way"],
            RequestField::Place => &["place"],
            RequestField::AgentCode => &["agentcode"],
            RequestField::Url => &["url", "webhookurl"],
        }
    }

    /// The field of this body name, if it is one of these.
    pub fn from_json(name: &str) -> Option<RequestField> {
        RequestField::ALL.into_iter().find(|f| f.json() == name)
    }
}

/// The property names `TrackingBatchPost` allows (`additionalProperties: false`).
pub const BODY_PROPERTIES: [&str; 5] = ["documentReference", "way", "place", "agentCode", "url"];

static URL_REGEX: LazyLock<Regex> = LazyLock::new(|| {
    // The spec's patterns are ECMA-262 regexes: there `\d` and `\w` are ASCII
    // only, while Rust's are Unicode-aware. Turning Unicode off gives the
    // ECMA meaning (and the regex crate never backtracks, so the pattern's
    // nested `(...*)*` cannot blow up).
    RegexBuilder::new(URL_PATTERN)
        .unicode(false)
        .build()
        .expect("the spec's url pattern is a valid regex")
});

/// The spelling the spec uses for a customs indicator, matched without regard
/// to case (`import` → `Import`). `None` if it is not one of them.
pub fn canonical_way(value: &str) -> Option<&'static str> {
    CUSTOMS_INDICATORS
        .iter()
        .copied()
        .find(|w| w.eq_ignore_ascii_case(value))
}

/// Whether `url` satisfies the spec's `minLength: 1` and `pattern`.
pub fn url_matches(url: &str) -> bool {
    !url.is_empty() && URL_REGEX.is_match(url)
}

/// Length as JSON Schema's `maxLength` counts it: characters, not bytes.
pub fn char_len(value: &str) -> usize {
    value.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_optional_fields_are_the_bodys_properties_after_the_reference() {
        let names: Vec<&str> = std::iter::once("documentReference")
            .chain(RequestField::ALL.iter().map(|f| f.json()))
            .collect();
        assert_eq!(names, BODY_PROPERTIES);
        for field in RequestField::ALL {
            assert_eq!(RequestField::from_json(field.json()), Some(field));
            // A column named as in the body is read as that field.
            let normalised = field.json().to_lowercase();
            assert!(field.headers().contains(&normalised.as_str()), "{field:?}");
        }
        assert_eq!(RequestField::from_json("documentReference"), None);
    }

    #[test]
    fn url_pattern_accepts_what_the_spec_example_uses() {
        assert!(url_matches("https://my-webhook-endpoints.com"));
        assert!(url_matches("http://hooks.example.fr/soget/events"));
        assert!(url_matches("hooks.example.org"));
        assert!(url_matches("https://a.example.com/path_with_underscores/"));
    }

    #[test]
    fn url_pattern_refuses_what_the_spec_refuses() {
        for bad in [
            "",
            "https://Hooks.Example.com",       // uppercase host
            "https://hooks.example.com:8443",  // port
            "http://localhost/hook",           // no dot in host
            "https://hooks.example.com/a?b=c", // query string
            "ftp://hooks.example.com",
            "https://hooks.example.com/é", // ECMA \w is ASCII only
            "https://hooks.example.com/x\n",
        ] {
            assert!(!url_matches(bad), "{bad:?} should not match");
        }
    }

    #[test]
    fn ip_address_hosts_are_refused_by_the_tld_group() {
        // `[a-z\.]{2,6}` after the last dot: digits cannot end the host.
        assert!(!url_matches("http://127.0.0.1/hook"));
        assert!(!url_matches("http://10.0.0.12"));
    }

    #[test]
    fn way_matches_case_insensitively_and_returns_the_spec_spelling() {
        assert_eq!(canonical_way("import"), Some("Import"));
        assert_eq!(
            canonical_way("DOMESTICTRANSHIPMENT"),
            Some("DomesticTranshipment")
        );
        assert_eq!(canonical_way("Inport"), None);
        assert_eq!(canonical_way(""), None);
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        assert_eq!(char_len("Zürich-Hafen"), 12);
        assert_eq!(char_len("港"), 1);
    }
}
