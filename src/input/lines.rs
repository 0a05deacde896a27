//! Line numbers as an editor shows them.
//!
//! The csv crate's own line count is off after CRLF line ends and skipped
//! blank lines, and it does not know lone CR line ends; so this wrapper
//! watches the bytes the parser reads and maps a record's starting byte
//! offset to the line its content starts on. It keeps only the lines read
//! ahead of the parser (a buffer's worth), so memory stays flat.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy)]
struct Line {
    start: u64,
    empty: bool,
}

#[derive(Debug)]
pub struct Index {
    /// Lines not yet passed by a query; the last one is still open.
    lines: VecDeque<Line>,
    /// Number of `lines.front()`.
    front_number: u64,
    offset: u64,
    pending_cr: bool,
    /// Number of `"` read so far: odd at the end means a quote that
    /// never closes.
    quotes: u64,
}

impl Index {
    pub fn new() -> Index {
        Index {
            lines: VecDeque::from([Line {
                start: 0,
                empty: true,
            }]),
            front_number: 1,
            offset: 0,
            pending_cr: false,
            quotes: 0,
        }
    }

    /// Whether an odd number of `"` was read.
    pub fn unbalanced_quotes(&self) -> bool {
        self.quotes % 2 == 1
    }

    pub fn observe(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'"' {
                self.quotes += 1;
            }
            let at = self.offset;
            self.offset += 1;
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    // CRLF: the new line starts after the LF.
                    if let Some(last) = self.lines.back_mut() {
                        last.start = at + 1;
                    }
                    continue;
                }
            }
            match b {
                b'\r' => {
                    self.pending_cr = true;
                    self.lines.push_back(Line {
                        start: at + 1,
                        empty: true,
                    });
                }
                b'\n' => self.lines.push_back(Line {
                    start: at + 1,
                    empty: true,
                }),
                _ => {
                    if let Some(last) = self.lines.back_mut() {
                        last.empty = false;
                    }
                }
            }
        }
    }

    /// Line of the first content at or after byte `offset` (offsets
    /// only grow from one call to the next).
    pub fn line_at(&mut self, offset: u64) -> u64 {
        while self.lines.len() > 1 && self.lines.front().is_some_and(|l| l.start < offset) {
            self.lines.pop_front();
            self.front_number += 1;
        }
        let skipped = self.lines.iter().take_while(|l| l.empty).count();
        let skipped = skipped.min(self.lines.len().saturating_sub(1));
        self.front_number + skipped as u64
    }
}

/// A reader that reports what it reads to an [`Index`].
pub struct Tracking<R> {
    inner: R,
    index: Arc<Mutex<Index>>,
}

impl<R: Read> Tracking<R> {
    pub fn new(inner: R) -> (Tracking<R>, Arc<Mutex<Index>>) {
        let index = Arc::new(Mutex::new(Index::new()));
        (
            Tracking {
                inner,
                index: index.clone(),
            },
            index,
        )
    }
}

impl<R: Read> Read for Tracking<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Ok(mut index) = self.index.lock() {
            index.observe(&buf[..n]);
        }
        Ok(n)
    }
}
