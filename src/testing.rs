//! What the tests reach of the library's internals, and nothing more: the
//! property tests (`tests/fuzz.rs`) and the conformance test drive the
//! reader, validation and the answer's classification directly; two tests
//! check a result file's cell and the state file's version. `input`,
//! `retry` and `store` are private to the crate otherwise: the binary
//! needs none of them.

/// The reader, the header mapping and validation.
pub mod input {
    pub use crate::input::{
        Columns, Defaults, Fields, InputReader, ReadOptions, Record, Row, map_columns,
        unneutralise, validate_chunk, validate_fields, validate_record,
    };
}

/// An answer's classification and the backoff.
pub mod retry {
    pub use crate::retry::{
        MAX_RETRY_AFTER, RAW_EXCERPT_CHARS, Verdict, backoff, classify, error_summary, excerpt,
        parse_retry_after,
    };
}

/// The ledger's units and schema version.
pub mod store {
    pub use crate::store::{SCHEMA_VERSION, Unit};
}
