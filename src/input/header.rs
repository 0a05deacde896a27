//! The header mapping: which column holds which field, found by name
//! (aliases, case and spacing forgiven) or by `--column`.

use crate::spec::RequestField;

/// Where each field lives in a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    pub document_reference: usize,
    pub way: Option<usize>,
    pub place: Option<usize>,
    pub agent_code: Option<usize>,
    pub url: Option<usize>,
    /// Number of fields in the header: a row with another count is ragged.
    pub width: usize,
}

impl Columns {
    /// The column of an optional field, if the header has one.
    pub fn of(&self, field: RequestField) -> Option<usize> {
        match field {
            RequestField::Way => self.way,
            RequestField::Place => self.place,
            RequestField::AgentCode => self.agent_code,
            RequestField::Url => self.url,
        }
    }

    fn slot(&mut self, field: RequestField) -> &mut Option<usize> {
        match field {
            RequestField::Way => &mut self.way,
            RequestField::Place => &mut self.place,
            RequestField::AgentCode => &mut self.agent_code,
            RequestField::Url => &mut self.url,
        }
    }

    /// The columns read, by index, with the field each fills.
    pub fn used(&self) -> Vec<(usize, &'static str)> {
        let mut used = vec![(self.document_reference, "documentReference")];
        for field in RequestField::ALL {
            if let Some(i) = self.of(field) {
                used.push((i, field.json()));
            }
        }
        used.sort();
        used
    }

    /// Which header columns are read (and as what) and which ignored, for
    /// the start line and `validate`.
    pub fn describe(&self, header: &[String]) -> String {
        let used = self.used();
        let name = |i: usize| header.get(i).map_or("", String::as_str);
        let read: Vec<String> = used
            .iter()
            .map(|(i, field)| {
                if name(*i) == *field {
                    format!("{field} (column {})", i + 1)
                } else {
                    format!("{field} from {:?} (column {})", name(*i), i + 1)
                }
            })
            .collect();
        let ignored: Vec<String> = (0..header.len())
            .filter(|i| !used.iter().any(|(u, _)| u == i))
            .map(|i| format!("{:?}", name(i)))
            .collect();
        let mut text = format!("columns read: {}", read.join(", "));
        if !ignored.is_empty() {
            text.push_str(&format!("; ignored: {}", ignored.join(", ")));
        }
        text
    }
}

/// Header names compared loosely: case, `_`, `-` and spaces do not matter.
fn normalize_header(name: &str) -> String {
    name.trim()
        .chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// What is wrong with a header row (`found`: its names, quoted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error(
        "columns {first} and {second} are both named {name:?}; rename one or pick one with --column"
    )]
    TwoReferences {
        first: usize,
        second: usize,
        name: String,
    },
    #[error("no column named {column:?} in the header (found: {found})")]
    NoSuchColumn { column: String, found: String },
    #[error(
        "no documentReference column in the header (found: {found}); name the column with --column NAME"
    )]
    NoReference { found: String },
}

/// Finds the columns in a header row. `column` is `--column`.
pub fn map_columns(header: &[String], column: Option<&str>) -> Result<Columns, HeaderError> {
    let wanted_reference = column
        .map(normalize_header)
        .unwrap_or_else(|| "documentreference".to_string());
    let mut columns = Columns {
        document_reference: usize::MAX,
        way: None,
        place: None,
        agent_code: None,
        url: None,
        width: header.len(),
    };
    let mut found_reference = None;
    for (i, name) in header.iter().enumerate() {
        let key = normalize_header(name);
        let slot = if key == wanted_reference {
            if let Some(first) = found_reference {
                return Err(HeaderError::TwoReferences {
                    first: first + 1,
                    second: i + 1,
                    name: name.trim().to_string(),
                });
            }
            found_reference = Some(i);
            continue;
        } else {
            match RequestField::ALL
                .into_iter()
                .find(|f| f.headers().contains(&key.as_str()))
            {
                Some(field) => columns.slot(field),
                None => continue,
            }
        };
        if slot.is_none() {
            *slot = Some(i);
        }
    }
    match found_reference {
        Some(i) => {
            columns.document_reference = i;
            Ok(columns)
        }
        None => {
            let found = header
                .iter()
                .map(|h| format!("{:?}", h.trim()))
                .collect::<Vec<_>>()
                .join(", ");
            Err(match column {
                Some(c) => HeaderError::NoSuchColumn {
                    column: c.to_string(),
                    found,
                },
                None => HeaderError::NoReference { found },
            })
        }
    }
}
