//! The usage ledger's writer on a SQLite file: one connection of its own, on a thread of its
//! own, that takes whole batches and writes each in one transaction.
//!
//! The pool's connections go through sqlx, whose SQLite driver runs every statement on its
//! worker thread and waits for the answer: a batch was a round trip per statement (begin, one
//! per chunk of rows, commit), each parameter wrapped in an argument list and copied again
//! when bound. At thousands of requests a second that was a tenth of the gateway's CPU. Here
//! a batch is one hand-off to this thread and one answer back; the inserts stay prepared on
//! its connection, and values are bound straight from the rows.

use std::path::Path;
use std::sync::mpsc;

use rusqlite::{Connection, OpenFlags, Statement};
use tokio::sync::oneshot;

use super::ledger::{insert_chunks, insert_sql, values, Value, INSERT_SIZES};
use super::{Backend, LedgerRow};
use crate::error::{Error, ErrorKind, Result};

/// The connection's settings beyond the file's own (WAL, set when the pool first opened it).
/// 512 KiB of page cache, not the 8 MiB of the pool's connections nor SQLite's default 2 MB:
/// an appending writer's cache fills with pages of rows it wrote and never reads back, and its
/// inserts touch only the right edge of one tree (ids begin with the time). The pages it does
/// read come through the same memory map as the pool's, not a system call each.
const PRAGMAS: &str = "PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL; \
    PRAGMA cache_size = -512; PRAGMA mmap_size = 1073741824;";

enum Job {
    Insert {
        rows: Vec<LedgerRow>,
        done: oneshot::Sender<Result<()>>,
    },
    /// Closes the connection and ends the thread.
    Close(oneshot::Sender<()>),
}

/// A handle to the writer thread; clones share it. The thread ends when every handle is
/// dropped or [`LedgerWriter::close`] is called.
#[derive(Clone)]
pub(crate) struct LedgerWriter {
    jobs: mpsc::Sender<Job>,
}

impl LedgerWriter {
    /// Opens `path` on a new thread; fails as the open does.
    pub(crate) async fn open(path: &Path) -> Result<LedgerWriter> {
        let path = path.to_owned();
        let (jobs, queue) = mpsc::channel();
        let (opened, open_result) = oneshot::channel();
        std::thread::Builder::new()
            .name("proxima-ledger".into())
            .spawn(move || match connect(&path) {
                Ok(connection) => {
                    let _ = opened.send(Ok(()));
                    let closing = serve(&connection, &queue);
                    drop(connection);
                    if let Some(closed) = closing {
                        let _ = closed.send(());
                    }
                }
                Err(e) => {
                    let _ = opened.send(Err(e));
                }
            })
            .map_err(|e| unavailable(format!("cannot start the ledger's writer: {e}")))?;
        open_result
            .await
            .map_err(|_| unavailable("the ledger's writer stopped while opening".into()))??;
        Ok(LedgerWriter { jobs })
    }

    /// Writes `rows` in one transaction; rows already there are skipped.
    pub(crate) async fn insert(&self, rows: &[LedgerRow]) -> Result<()> {
        let (done, result) = oneshot::channel();
        let job = Job::Insert {
            rows: rows.to_vec(),
            done,
        };
        self.jobs.send(job).map_err(|_| closed())?;
        result.await.map_err(|_| closed())?
    }

    /// Closes the connection once the batches handed over before are written.
    pub(crate) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.jobs.send(Job::Close(done)).is_ok() {
            let _ = closed.await;
        }
    }
}

fn connect(path: &Path) -> Result<Connection> {
    // NO_MUTEX: the connection never leaves its thread, so SQLite need not lock around calls.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags)
        .map_err(|e| unavailable(format!("cannot open the database: {e}")))?;
    connection.execute_batch(PRAGMAS).map_err(database_error)?;
    Ok(connection)
}

/// Runs jobs until the handles are gone or one asks to close: then the sender of its answer,
/// to be sent once the connection is closed.
fn serve(connection: &Connection, queue: &mpsc::Receiver<Job>) -> Option<oneshot::Sender<()>> {
    let mut statements = Statements::new(connection);
    for job in queue {
        match job {
            Job::Insert { rows, done } => {
                let _ = done.send(statements.write(&rows));
            }
            Job::Close(done) => return Some(done),
        }
    }
    None
}

/// The writer's statements, each prepared when first needed and kept: `BEGIN` and `COMMIT`
/// too, which rusqlite's transactions run through `execute_batch`, parsing them again for
/// every batch.
struct Statements<'c> {
    connection: &'c Connection,
    begin: Option<Statement<'c>>,
    commit: Option<Statement<'c>>,
    rollback: Option<Statement<'c>>,
    /// One insert per batch size.
    inserts: [Option<Statement<'c>>; INSERT_SIZES.len()],
}

impl<'c> Statements<'c> {
    fn new(connection: &'c Connection) -> Statements<'c> {
        Statements {
            connection,
            begin: None,
            commit: None,
            rollback: None,
            inserts: Default::default(),
        }
    }

    /// `rows` in one transaction: all in, or none when a statement fails.
    fn write(&mut self, rows: &[LedgerRow]) -> Result<()> {
        run(self.connection, &mut self.begin, "BEGIN")?;
        let written = self
            .insert(rows)
            .and_then(|()| run(self.connection, &mut self.commit, "COMMIT"));
        if written.is_err() && !self.connection.is_autocommit() {
            // Still open: a statement or the commit failed.
            let _ = run(self.connection, &mut self.rollback, "ROLLBACK");
        }
        written
    }

    fn insert(&mut self, rows: &[LedgerRow]) -> Result<()> {
        for (index, chunk) in insert_chunks(rows) {
            let insert = prepared(
                self.connection,
                &mut self.inserts[index],
                insert_sql(Backend::Sqlite, index),
            )?;
            for (n, value) in chunk.iter().flat_map(values).enumerate() {
                let bound = match value {
                    Value::Text(text) => insert.raw_bind_parameter(n + 1, text.map(|t| &**t)),
                    Value::Int(int) => insert.raw_bind_parameter(n + 1, int),
                };
                bound.map_err(database_error)?;
            }
            insert.raw_execute().map_err(database_error)?;
        }
        Ok(())
    }
}

/// The statement in `slot`, prepared from `sql` the first time.
fn prepared<'s, 'c>(
    connection: &'c Connection,
    slot: &'s mut Option<Statement<'c>>,
    sql: &str,
) -> Result<&'s mut Statement<'c>> {
    match slot {
        Some(statement) => Ok(statement),
        None => Ok(slot.insert(connection.prepare(sql).map_err(database_error)?)),
    }
}

/// Runs a statement without parameters or rows (`BEGIN`, `COMMIT`, `ROLLBACK`).
fn run<'c>(connection: &'c Connection, slot: &mut Option<Statement<'c>>, sql: &str) -> Result<()> {
    prepared(connection, slot, sql)?
        .raw_execute()
        .map(drop)
        .map_err(database_error)
}

fn database_error(e: rusqlite::Error) -> Error {
    unavailable(format!("database error: {e}"))
}

fn closed() -> Error {
    unavailable("database error: the ledger's connection is closed".into())
}

fn unavailable(message: String) -> Error {
    Error::new(ErrorKind::Unavailable, message)
}
