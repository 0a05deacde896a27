//! Row validation against the spec: a record's cells, with defaults
//! applied, either become the exact JSON body to send or a [`Reject`]
//! naming every problem. Pure; runs on chunks in parallel with rayon.

use rayon::prelude::*;
use serde::Serialize;

use super::{Columns, OptionalFields, Problem, Record, Reject, Row, ValidRow};
use crate::spec;

/// The values applied to a row whose own cell is empty or whose column is
/// absent (`--way`, `--place`, `--agent-code`, the webhook URL): the same
/// shape as a row's fields as read.
pub type Defaults = OptionalFields;

impl OptionalFields {
    /// Checks these fields as defaults, so that a bad `--way` is a usage
    /// error rather than a reject on every row.
    pub fn validate(&self) -> Result<(), BadDefaults> {
        let probe = Fields {
            document_reference: "probe",
            way: self.way.as_deref(),
            place: self.place.as_deref(),
            agent_code: self.agent_code.as_deref(),
            url: self.url.as_deref(),
        };
        validate_fields(&probe).map(|_| ()).map_err(BadDefaults)
    }
}

/// Flag values (`--way`, `--place`, …) the spec refuses, each named as the
/// flag it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", as_flags(.0))]
pub struct BadDefaults(pub Vec<Problem>);

fn as_flags(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("--{}: {}", flag_name(p.field), p.message))
        .collect::<Vec<_>>()
        .join("; ")
}

fn flag_name(field: &str) -> &str {
    match spec::RequestField::from_json(field) {
        Some(request_field) => request_field.flag(),
        None => field,
    }
}

/// The request body, in the spec's property order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    document_reference: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    way: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    place: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
}

/// The field values of one row after defaults are applied and cells trimmed.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    pub document_reference: &'a str,
    pub way: Option<&'a str>,
    pub place: Option<&'a str>,
    pub agent_code: Option<&'a str>,
    pub url: Option<&'a str>,
}

/// Validates one row's fields against the spec and builds its JSON body.
///
/// Empty optional fields are omitted (never sent as `null`); `way` is
/// accepted in any case and sent with the spec's spelling.
pub fn validate_fields(fields: &Fields<'_>) -> Result<String, Vec<Problem>> {
    let mut problems = Vec::new();

    let reference = fields.document_reference;
    if reference.is_empty() {
        problems.push(problem("documentReference", "is empty".into()));
    } else if let Some(p) = control_character("documentReference", reference) {
        problems.push(p);
    } else if SCIENTIFIC.is_match(reference) {
        problems.push(problem(
            "documentReference",
            format!(
                "{} is a number in scientific notation, as Excel shows a long numeric \
                 reference: its last digits are lost; format the column as Text in the \
                 spreadsheet (or export it from the source system as text) and export again",
                quoted(reference)
            ),
        ));
    }

    let way = match non_empty(fields.way) {
        None => None,
        Some(w) => match spec::canonical_way(w) {
            Some(canonical) => Some(canonical),
            None => {
                problems.push(problem(
                    "way",
                    format!(
                        "{} is not a customs indicator (expected one of {})",
                        quoted(w),
                        spec::CUSTOMS_INDICATORS.join(", ")
                    ),
                ));
                None
            }
        },
    };

    let place = non_empty(fields.place);
    if let Some(p) = place {
        problems.extend(bounded_text("place", p, spec::PLACE_MAX_CHARS));
    }
    let agent_code = non_empty(fields.agent_code);
    if let Some(a) = agent_code {
        problems.extend(bounded_text("agentCode", a, spec::AGENT_CODE_MAX_CHARS));
    }

    let url = non_empty(fields.url);
    // A URL with the receiver's token placeholder (failures.csv written
    // from a run with --webhooks, as an input again) is checked as the URL
    // it stands for; the token goes in at sending.
    let placeholder = crate::webhooks::token::PLACEHOLDER;
    if let Some(u) = url
        && !spec::url_matches(&u.replace(placeholder, &"0".repeat(crate::webhooks::token::LEN)))
    {
        problems.push(problem(
            "url",
            format!(
                "{} does not match the API's webhook URL pattern \
                 (lowercase host with a dot, no port, no IP address, no query string)",
                quoted(u)
            ),
        ));
    }

    if !problems.is_empty() {
        return Err(problems);
    }
    let body = Body {
        document_reference: reference,
        way,
        place,
        agent_code,
        url,
    };
    serde_json::to_string(&body).map_err(|e| vec![problem("documentReference", e.to_string())])
}

/// A value quoted in a message, cut short when long: a 10 MB cell must
/// not become a 10 MB message.
fn quoted(value: &str) -> String {
    const SHOWN: usize = 40;
    if spec::char_len(value) <= SHOWN {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(SHOWN).collect();
    format!("{:?}…", head)
}

/// A number as Excel writes a long one it shows in scientific notation
/// (`3,71424E+09`, `3.71424E+09`, `4E+11`): one digit, maybe a decimal
/// part, `E`, a sign, two or more digits.
static SCIENTIFIC: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"^[0-9]([.,][0-9]+)?[eE][+-][0-9]{2,}$").expect("a valid regex")
});

fn problem(field: &'static str, message: String) -> Problem {
    Problem { field, message }
}

/// A cell read back from a result file: the `'` that
/// [`crate::report::neutralise`] put before a cell that needed it is
/// removed.
pub fn unneutralise(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if crate::report::needs_guard(rest) => rest,
        _ => cell,
    }
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.is_empty())
}

fn control_character(field: &'static str, value: &str) -> Option<Problem> {
    value.chars().find(|c| c.is_control()).map(|c| {
        problem(
            field,
            format!("contains the control character U+{:04X}", c as u32),
        )
    })
}

fn bounded_text(field: &'static str, value: &str, max: usize) -> Option<Problem> {
    let len = spec::char_len(value);
    if len > max {
        return Some(problem(
            field,
            format!(
                "{} is {len} characters long, the API allows at most {max}",
                quoted(value)
            ),
        ));
    }
    control_character(field, value)
}

/// Validates one record; pure.
pub fn validate_record(record: &Record, columns: &Columns, defaults: &Defaults) -> Row {
    let line = record.line;
    let raw_reference = record
        .fields
        .get(columns.document_reference)
        .map(|b| unneutralise(String::from_utf8_lossy(b).trim()).to_string())
        .unwrap_or_default();
    let reject = |problems: Vec<Problem>| {
        Row::Rejected(Reject {
            line,
            document_reference: raw_reference.clone(),
            fields: fields_as_read(record, columns, defaults),
            problems,
        })
    };

    if record.fields.len() != columns.width {
        return reject(vec![problem(
            "row",
            format!(
                "has {} fields where the header has {}",
                record.fields.len(),
                columns.width
            ),
        )]);
    }

    let mut problems = Vec::new();
    let mut cell = |index: Option<usize>, field: &'static str| -> Option<&str> {
        let bytes = record.fields.get(index?)?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Some(unneutralise(text.trim())),
            Err(e) => {
                problems.push(problem(
                    field,
                    format!(
                        "is not valid UTF-8 (bad byte at offset {}); save the file as UTF-8, or pass --encoding windows-1252 if Excel saved it as \"CSV (semicolon)\"",
                        e.valid_up_to()
                    ),
                ));
                None
            }
        }
    };
    let document_reference = cell(Some(columns.document_reference), "documentReference");
    let way = cell(columns.way, "way");
    let place = cell(columns.place, "place");
    let agent_code = cell(columns.agent_code, "agentCode");
    let url = cell(columns.url, "url");
    if !problems.is_empty() {
        return reject(problems);
    }
    let or_default = |cell: Option<&str>, default: &Option<String>| -> Option<String> {
        match non_empty(cell) {
            Some(v) => Some(v.to_string()),
            None => default.clone(),
        }
    };
    let way = or_default(way, &defaults.way);
    let place = or_default(place, &defaults.place);
    let agent_code = or_default(agent_code, &defaults.agent_code);
    let url = or_default(url, &defaults.url);
    let fields = Fields {
        document_reference: document_reference.unwrap_or(""),
        way: way.as_deref(),
        place: place.as_deref(),
        agent_code: agent_code.as_deref(),
        url: url.as_deref(),
    };
    match validate_fields(&fields) {
        Ok(payload) => Row::Valid(ValidRow {
            line,
            document_reference: fields.document_reference.to_string(),
            agent_code: fields.agent_code.unwrap_or("").to_string(),
            payload,
        }),
        Err(problems) => reject(problems),
    }
}

/// A rejected record's optional fields, read leniently (bad UTF-8 replaced;
/// nothing from a ragged row, whose columns cannot be trusted).
fn fields_as_read(record: &Record, columns: &Columns, defaults: &Defaults) -> OptionalFields {
    let ragged = record.fields.len() != columns.width;
    let read = |index: Option<usize>, default: &Option<String>| -> Option<String> {
        let cell = index
            .filter(|_| !ragged)
            .and_then(|i| record.fields.get(i))
            .map(|b| unneutralise(String::from_utf8_lossy(b).trim()).to_string())
            .filter(|v| !v.is_empty());
        cell.or_else(|| default.clone())
    };
    OptionalFields {
        way: read(columns.way, &defaults.way),
        place: read(columns.place, &defaults.place),
        agent_code: read(columns.agent_code, &defaults.agent_code),
        url: read(columns.url, &defaults.url),
    }
}

/// Validates a chunk of records in parallel, keeping their order.
pub fn validate_chunk(records: &[Record], columns: &Columns, defaults: &Defaults) -> Vec<Row> {
    records
        .par_iter()
        .map(|r| validate_record(r, columns, defaults))
        .collect()
}
