//! The single writer: a thread owning a connection, committing whatever
//! has queued up since its last commit in one transaction. An answer counts
//! as done once committed; a row is marked in flight, durably, before its
//! request leaves.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, anyhow};
use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

use super::{Durability, RunId, Store, Unit, configure, now_rfc3339, sqlite_error};
use crate::ledger::Status;
use crate::timeline::Second;

/// The final word on one request, as the writer records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Tracked {
        tracking_id: String,
        units: Vec<Unit>,
    },
    /// Failed, exhausted or bad_response, with what the API said.
    Failed {
        status: Status,
        http_status: Option<u16>,
        code: String,
        message: String,
        details: String,
    },
    /// Not answered (dispatch stopped): back to pending. `maybe_sent` when
    /// the last request may have reached the service (a timeout, a dropped
    /// connection, a 500 or 504): sending it again is then counted as a
    /// re-send after interruption.
    Requeue { maybe_sent: bool },
    /// The request never left (dispatch stopped while it waited for its
    /// turn, or no token could be had): back to pending, the attempt not
    /// counted. `was_in_flight`: an earlier request for it may have reached
    /// the service (so the next one is a re-send).
    NotSent { was_in_flight: bool },
}

enum Op {
    /// Mark a row in flight (one more attempt) and acknowledge after commit.
    Dispatch {
        id: i64,
        ack: oneshot::Sender<()>,
    },
    Outcome {
        id: i64,
        outcome: Outcome,
    },
    Flush {
        ack: oneshot::Sender<()>,
    },
    /// One second of the run's timeline.
    Second(Second),
}

/// Counters of committed outcomes, read by the progress display.
#[derive(Debug, Default)]
pub struct Committed {
    pub tracked: AtomicU64,
    pub failed: AtomicU64,
    pub units: AtomicU64,
}

/// The single writer: a thread owning a connection, committing whatever has
/// queued up since its last commit in one transaction.
pub struct Writer {
    tx: mpsc::UnboundedSender<Op>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
    committed: Arc<Committed>,
}

/// The writer stopped (its error is returned by [`Writer::finish`]).
#[derive(Debug, thiserror::Error)]
#[error("the state file writer stopped")]
pub struct WriterGone;

/// Most operations applied in one transaction.
const MAX_GROUP: usize = 4096;

impl Writer {
    /// A writer on `store`'s file; `run` is recorded with each answer
    /// (`answered_run`).
    pub fn spawn(store: &Store, run: RunId, durability: Durability) -> Result<Writer> {
        let path = store.path();
        let conn = Connection::open(&store.real)
            .with_context(|| format!("{}: cannot open the state file", path.display()))?;
        configure(&conn, durability).map_err(|e| sqlite_error(path, e))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let committed = Arc::new(Committed::default());
        let counters = committed.clone();
        let path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || write_loop(conn, &path, run, rx, &counters))
            .context("cannot start the state writer thread")?;
        Ok(Writer {
            tx,
            thread: Some(thread),
            committed,
        })
    }

    pub fn committed(&self) -> Arc<Committed> {
        self.committed.clone()
    }

    /// Marks a row in flight; returns once that is durable, so a crash
    /// afterwards is known to have interrupted this request.
    pub async fn dispatched(&self, id: i64) -> Result<(), WriterGone> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Op::Dispatch { id, ack })
            .map_err(|_| WriterGone)?;
        done.await.map_err(|_| WriterGone)
    }

    /// Queues an outcome; it counts as done once committed.
    pub fn record(&self, id: i64, outcome: Outcome) -> Result<(), WriterGone> {
        self.tx
            .send(Op::Outcome { id, outcome })
            .map_err(|_| WriterGone)
    }

    /// Queues one second of the run's timeline (kept with the next commit).
    pub fn second(&self, second: Second) -> Result<(), WriterGone> {
        self.tx.send(Op::Second(second)).map_err(|_| WriterGone)
    }

    /// Waits until everything queued so far is committed.
    pub async fn flush(&self) -> Result<(), WriterGone> {
        let (ack, done) = oneshot::channel();
        self.tx.send(Op::Flush { ack }).map_err(|_| WriterGone)?;
        done.await.map_err(|_| WriterGone)
    }

    /// Commits what is queued and stops the thread.
    pub fn finish(mut self) -> Result<()> {
        let (tx, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.tx, tx));
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow!("the state writer thread panicked"))?,
            None => Ok(()),
        }
    }
}

fn write_loop(
    mut conn: Connection,
    path: &Path,
    run: RunId,
    mut rx: mpsc::UnboundedReceiver<Op>,
    committed: &Committed,
) -> Result<()> {
    let mut group = Vec::with_capacity(256);
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        let delta = apply(&mut conn, run, &group).map_err(|e| sqlite_error(path, e))?;
        committed
            .tracked
            .fetch_add(delta.tracked, Ordering::Relaxed);
        committed.failed.fetch_add(delta.failed, Ordering::Relaxed);
        committed.units.fetch_add(delta.units, Ordering::Relaxed);
        for op in group.drain(..) {
            match op {
                Op::Dispatch { ack, .. } | Op::Flush { ack } => {
                    let _ = ack.send(());
                }
                Op::Outcome { .. } | Op::Second(_) => {}
            }
        }
    }
    Ok(())
}

#[derive(Default)]
struct Delta {
    tracked: u64,
    failed: u64,
    units: u64,
}

/// Applies a group of operations in one transaction.
///
/// Long for a reason: the statements are prepared once per transaction, at
/// its top, and each arm of the match below is one operation's UPDATE with
/// its parameters; split up, every part would take the same six statements.
fn apply(conn: &mut Connection, run: RunId, group: &[Op]) -> rusqlite::Result<Delta> {
    let mut delta = Delta::default();
    let tx = conn.transaction()?;
    {
        let now = now_rfc3339();
        let mut dispatch = tx.prepare_cached(
            "UPDATE items SET in_flight = 1, was_in_flight = 0, attempts = attempts + 1,
                 updated_at = ?2 WHERE id = ?1",
        )?;
        let mut tracked = tx.prepare_cached(
            "UPDATE items SET status = 'tracked', in_flight = 0, http_status = 201,
                 tracking_id = ?2, units = ?3, unit_count = ?4,
                 code = NULL, message = NULL, details = NULL, updated_at = ?5, answered_run = ?6
             WHERE id = ?1",
        )?;
        let mut failed = tx.prepare_cached(
            "UPDATE items SET status = ?2, in_flight = 0, http_status = ?3, code = ?4,
                 message = ?5, details = ?6, updated_at = ?7, answered_run = ?8
             WHERE id = ?1",
        )?;
        let mut requeue = tx.prepare_cached(
            "UPDATE items SET status = 'pending', in_flight = 0, was_in_flight = ?3,
                 updated_at = ?2 WHERE id = ?1",
        )?;
        let mut second = tx.prepare_cached(
            "INSERT INTO seconds
                 (run, at, created, refused, throttled, failed, pace, rate, paused_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (run, at) DO UPDATE SET
                 created = created + excluded.created,
                 refused = refused + excluded.refused,
                 throttled = throttled + excluded.throttled,
                 failed = failed + excluded.failed,
                 pace = excluded.pace,
                 paused_ms = max(paused_ms, excluded.paused_ms)",
        )?;
        let mut not_sent = tx.prepare_cached(
            "UPDATE items SET status = 'pending', in_flight = 0, was_in_flight = ?3,
                 attempts = max(attempts - 1, 0), updated_at = ?2 WHERE id = ?1",
        )?;
        for op in group {
            match op {
                Op::Dispatch { id, .. } => {
                    dispatch.execute(params![id, now])?;
                }
                Op::Outcome { id, outcome } => match outcome {
                    Outcome::Tracked { tracking_id, units } => {
                        let json = serde_json::to_string(units)
                            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
                        tracked.execute(params![
                            id,
                            tracking_id,
                            json,
                            units.len() as i64,
                            now,
                            run
                        ])?;
                        delta.tracked += 1;
                        delta.units += units.len() as u64;
                    }
                    Outcome::Failed {
                        status,
                        http_status,
                        code,
                        message,
                        details,
                    } => {
                        failed.execute(params![
                            id,
                            status.as_str(),
                            http_status,
                            code,
                            message,
                            details,
                            now,
                            run
                        ])?;
                        delta.failed += 1;
                    }
                    Outcome::Requeue { maybe_sent } => {
                        requeue.execute(params![id, now, maybe_sent])?;
                    }
                    Outcome::NotSent { was_in_flight } => {
                        not_sent.execute(params![id, now, was_in_flight])?;
                    }
                },
                Op::Second(s) => {
                    second.execute(params![
                        run,
                        s.at,
                        s.created,
                        s.refused,
                        s.throttled,
                        s.failed,
                        s.pace,
                        s.rate,
                        s.paused_ms as i64
                    ])?;
                }
                Op::Flush { .. } => {}
            }
        }
    }
    tx.commit()?;
    Ok(delta)
}

#[cfg(test)]
mod tests {
    use super::super::Scope;
    use super::super::test_support::{load, temp_store, valid};
    use super::*;

    #[test]
    fn writer_commits_outcomes_and_in_flight_marks() {
        let (_dir, mut store) = temp_store();
        let (run, _) = load(&mut store, "a.csv", &[valid(2, "A"), valid(3, "B")]);
        let page = store.pending_page(0, 10).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let writer = Writer::spawn(&store, run, Durability::Full).unwrap();
        rt.block_on(async {
            writer.dispatched(page[0].id).await.unwrap();
            writer.dispatched(page[1].id).await.unwrap();
            writer
                .record(
                    page[0].id,
                    Outcome::Tracked {
                        tracking_id: "TRK0000000001".into(),
                        units: vec![Unit {
                            spi: Some("CNI0000000001".into()),
                            reference: Some("CSQU3054383".into()),
                        }],
                    },
                )
                .unwrap();
            writer.flush().await.unwrap();
        });
        writer.finish().unwrap();
        // B was in flight when the "process" stopped: recovery flags it.
        assert_eq!(store.recover_in_flight().unwrap(), 1);
        let page = store.pending_page(0, 10).unwrap();
        assert_eq!(page.len(), 1);
        assert!(page[0].was_in_flight);
        let mut tracked = Vec::new();
        store
            .for_each_tracked(Scope::Batch(run), |r| {
                tracked.push(r);
                Ok(())
            })
            .unwrap();
        assert_eq!(tracked.len(), 1);
        assert_eq!(
            tracked[0].units[0].reference.as_deref(),
            Some("CSQU3054383")
        );
    }
}
