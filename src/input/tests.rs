//! The input module's tests: reading, header mapping and validation.

use super::reader::detect_delimiter;
use super::*;

fn fields(reference: &str) -> Fields<'_> {
    Fields {
        document_reference: reference,
        way: None,
        place: None,
        agent_code: None,
        url: None,
    }
}

#[test]
fn minimal_body_has_only_the_reference() {
    let body = validate_fields(&fields("3714238101")).unwrap();
    assert_eq!(body, r#"{"documentReference":"3714238101"}"#);
}

#[test]
fn full_body_follows_the_spec_order_and_spelling() {
    let f = Fields {
        way: Some("import"),
        place: Some("MTDF"),
        agent_code: Some("CCGM"),
        url: Some("https://my-webhook-endpoints.com"),
        ..fields("3714238101")
    };
    let body = validate_fields(&f).unwrap();
    assert_eq!(
        body,
        r#"{"documentReference":"3714238101","way":"Import","place":"MTDF","agentCode":"CCGM","url":"https://my-webhook-endpoints.com"}"#
    );
}

#[test]
fn empty_optional_fields_are_omitted_not_null() {
    let f = Fields {
        way: Some(""),
        place: Some(""),
        ..fields("X1")
    };
    let body = validate_fields(&f).unwrap();
    assert!(!body.contains("null"), "{body}");
    assert!(!body.contains("way"), "{body}");
}

#[test]
fn every_problem_is_reported_with_its_field() {
    let f = Fields {
        way: Some("Inport"),
        place: Some("TERMINAL DE FRANCE NORD"),
        agent_code: Some(&"A".repeat(65)),
        url: Some("http://localhost:8080/hook"),
        ..fields("")
    };
    let problems = validate_fields(&f).unwrap_err();
    let named: Vec<_> = problems.iter().map(|p| p.field).collect();
    assert_eq!(
        named,
        ["documentReference", "way", "place", "agentCode", "url"]
    );
    assert!(
        problems[2].message.contains("23 characters"),
        "{problems:?}"
    );
    assert!(problems[3].message.contains("at most 64"), "{problems:?}");
}

#[test]
fn place_limit_counts_characters() {
    // 20 characters, 22 bytes: allowed.
    let place = "ÉÉabcdefghijklmnopqr";
    assert_eq!(place.chars().count(), 20);
    assert!(
        validate_fields(&Fields {
            place: Some(place),
            ..fields("X")
        })
        .is_ok()
    );
    let too_long = format!("{place}s");
    assert!(
        validate_fields(&Fields {
            place: Some(&too_long),
            ..fields("X")
        })
        .is_err()
    );
}

#[test]
fn control_characters_in_a_reference_are_refused() {
    let problems = validate_fields(&fields("ABC\u{0}123")).unwrap_err();
    assert!(problems[0].message.contains("U+0000"), "{problems:?}");
}

#[test]
fn json_escaping_keeps_quotes_and_unicode_safe() {
    let body = validate_fields(&fields("BL \"7\" – Zürich")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(parsed["documentReference"], "BL \"7\" – Zürich");
}

#[test]
fn header_matching_is_loose_about_case_and_separators() {
    let header: Vec<String> = ["Agent_Code", "DOCUMENT_REFERENCE", "Way", "webhook-url"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let c = map_columns(&header, None).unwrap();
    assert_eq!(c.document_reference, 1);
    assert_eq!(c.agent_code, Some(0));
    assert_eq!(c.way, Some(2));
    assert_eq!(c.url, Some(3));
    assert_eq!(c.place, None);
}

#[test]
fn column_flag_picks_another_header() {
    let header = vec!["BL number".to_string(), "place".to_string()];
    let c = map_columns(&header, Some("bl number")).unwrap();
    assert_eq!(c.document_reference, 0);
    let err = map_columns(&header, None).unwrap_err().to_string();
    assert!(err.contains("--column"), "{err}");
    assert!(err.contains("\"BL number\""), "{err}");
}

#[test]
fn two_reference_columns_are_an_error() {
    let header = vec![
        "documentReference".to_string(),
        "document_reference".to_string(),
    ];
    let err = map_columns(&header, None).unwrap_err().to_string();
    assert!(err.contains("columns 1 and 2"), "{err}");
}

#[test]
fn delimiter_detection() {
    assert_eq!(detect_delimiter(b"documentReference;way\r\n1;Import"), b';');
    assert_eq!(detect_delimiter(b"documentReference\tway\n"), b'\t');
    assert_eq!(detect_delimiter(b"documentReference,way,place\n"), b',');
    assert_eq!(detect_delimiter(b"documentReference\n1\n"), b',');
    // Delimiters inside quotes do not count.
    assert_eq!(detect_delimiter(b"\"a;b;c\",documentReference\n"), b',');
    // Leading blank lines are skipped.
    assert_eq!(detect_delimiter(b"\n\n documentReference;way\n"), b';');
    // A quoted header is the header, not the line after it.
    assert_eq!(detect_delimiter(b"\"documentReference\"\nMSC;123\n"), b',');
    // A blank line's tabs are not the header's.
    assert_eq!(detect_delimiter(b" \t \ndocumentReference,way\n"), b',');
}

fn record(line: u64, fields: &[&str]) -> Record {
    Record {
        line,
        fields: csv::ByteRecord::from(fields.to_vec()),
    }
}

fn columns_of(header: &[&str]) -> Columns {
    let header: Vec<String> = header.iter().map(|s| s.to_string()).collect();
    map_columns(&header, None).unwrap()
}

#[test]
fn row_cells_override_defaults_and_empty_cells_take_them() {
    let columns = columns_of(&["documentReference", "way"]);
    let defaults = Defaults {
        way: Some("Export".into()),
        agent_code: Some("CCGM".into()),
        ..Defaults::default()
    };
    let Row::Valid(a) = validate_record(&record(2, &["A1", "Import"]), &columns, &defaults) else {
        panic!("row should be valid")
    };
    assert_eq!(
        a.payload,
        r#"{"documentReference":"A1","way":"Import","agentCode":"CCGM"}"#
    );
    let Row::Valid(b) = validate_record(&record(3, &[" B2 ", " "]), &columns, &defaults) else {
        panic!("row should be valid")
    };
    assert_eq!(
        b.payload,
        r#"{"documentReference":"B2","way":"Export","agentCode":"CCGM"}"#
    );
}

#[test]
fn ragged_rows_are_rejected_with_their_line() {
    let columns = columns_of(&["documentReference", "way"]);
    let row = validate_record(&record(7, &["A1"]), &columns, &Defaults::default());
    let Row::Rejected(r) = row else {
        panic!("ragged row accepted")
    };
    assert_eq!(r.line, 7);
    assert!(r.message().contains("has 1 fields where the header has 2"));
}

#[test]
fn invalid_utf8_is_a_row_reject_not_a_crash() {
    let columns = columns_of(&["documentReference"]);
    let rec = Record {
        line: 4,
        fields: csv::ByteRecord::from(vec![&b"AB\xFFCD"[..]]),
    };
    let Row::Rejected(r) = validate_record(&rec, &columns, &Defaults::default()) else {
        panic!("invalid UTF-8 accepted")
    };
    assert!(r.message().contains("not valid UTF-8"), "{}", r.message());
}

fn lines_of(text: &[u8]) -> Vec<(String, u64)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.csv");
    std::fs::write(&path, text).unwrap();
    let mut reader = InputReader::open(&path, &ReadOptions::default()).unwrap();
    let mut out = vec![(String::from("header"), reader.header_line())];
    loop {
        let chunk = reader.next_chunk(1000).unwrap();
        if chunk.is_empty() {
            return out;
        }
        for r in chunk {
            out.push((String::from_utf8_lossy(&r.fields[0]).into_owned(), r.line));
        }
    }
}

#[test]
fn line_numbers_are_the_editors_whatever_the_line_ends() {
    for text in [
        &b"documentReference\n\nA\nB\n\n\"C\nc\"\nD\n"[..],
        b"documentReference\r\n\r\nA\r\nB\r\n\r\n\"C\r\nc\"\r\nD\r\n",
        b"documentReference\r\rA\rB\r\r\"C\rc\"\rD\r",
        b"\xEF\xBB\xBFdocumentReference\n\nA\nB\n\n\"C\nc\"\nD",
    ] {
        let got: Vec<u64> = lines_of(text).iter().map(|(_, l)| *l).collect();
        assert_eq!(got, [1, 3, 4, 6, 8], "{:?}", String::from_utf8_lossy(text));
    }
}

#[test]
fn an_unclosed_quote_is_an_error_naming_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.csv");
    std::fs::write(&path, "documentReference\nA\n\"B\nC\nD\n").unwrap();
    let mut reader = InputReader::open(&path, &ReadOptions::default()).unwrap();
    let err = reader.next_chunk(100).unwrap_err().to_string();
    assert!(
        err.contains("line 3") && err.contains("never closed"),
        "{err}"
    );
    // A quoted field spanning lines that does close is fine, and so is
    // a lone quote inside an unquoted field.
    std::fs::write(
        &path,
        "documentReference,note\nA,\"x\ny\"\nB,5\" pipe\"\"\n",
    )
    .unwrap();
    let mut reader = InputReader::open(&path, &ReadOptions::default()).unwrap();
    assert_eq!(reader.next_chunk(100).unwrap().len(), 2);
}

#[test]
fn leading_blank_lines_move_the_header() {
    let got = lines_of(b"\n\n  \ndocumentReference\nA\n");
    assert_eq!(got, [("header".to_string(), 4), ("A".to_string(), 5)]);
}

#[test]
fn line_numbers_hold_past_the_read_buffer() {
    let mut text = String::from("documentReference\r\n");
    for i in 0..20_000 {
        text.push_str(&format!("REF{i}\r\n"));
        if i % 7 == 0 {
            text.push_str("\r\n");
        }
    }
    let got = lines_of(text.as_bytes());
    let (last_ref, last_line) = got.last().unwrap().clone();
    assert_eq!(last_ref, "REF19999");
    // 20,000 rows, 2,858 blank lines (i = 0, 7, …, 19999), and the header.
    assert_eq!(last_line, 1 + 20_000 + 2_857);
}

#[test]
fn invalid_defaults_are_reported_with_their_flag() {
    let d = Defaults {
        way: Some("Sideways".into()),
        url: Some("http://127.0.0.1:9/x".into()),
        ..Defaults::default()
    };
    let err = d.validate().unwrap_err().to_string();
    assert!(err.contains("--way"), "{err}");
    assert!(err.contains("--webhook-url"), "{err}");
}

#[test]
fn defaults_stored_by_earlier_versions_read_as_the_one_shape() {
    // Run settings stored before the defaults shared this shape wrote
    // snake_case with nulls; they read the same, and are written again
    // keyed as in the request body, without the empty ones.
    let stored = r#"{"way":"Import","place":null,"agent_code":"CCGM","url":null}"#;
    let read: Defaults = serde_json::from_str(stored).unwrap();
    assert_eq!(
        read,
        OptionalFields {
            way: Some("Import".into()),
            agent_code: Some("CCGM".into()),
            ..OptionalFields::default()
        }
    );
    assert_eq!(
        serde_json::to_string(&read).unwrap(),
        r#"{"way":"Import","agentCode":"CCGM"}"#
    );
}
