//! The ledger writer: usage records go into an in-memory queue on the request path (a push
//! under a short lock) and a background task writes them to the database in batches.
//!
//! Nothing is lost: while the database is unreachable records wait in the queue; past
//! `max_buffered` the oldest go to a spill file (JSON lines), which is written to the database
//! once it answers again — also at the next start. At shutdown the queue is flushed, or
//! spilled if the database is away. Rows have unique ids and inserts skip ids already present,
//! so a batch whose fate was unknown can safely be written again.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::LedgerConfig;
use crate::store::{LedgerRow, Store};

/// Longest a batch insert may take before the database counts as unreachable.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait between attempts while the database is unreachable.
const RETRY_WAIT: Duration = Duration::from_secs(1);

pub struct Ledger {
    queue: Mutex<VecDeque<LedgerRow>>,
    wake: Notify,
    stopping: AtomicBool,
    stopped: Notify,
    healthy: AtomicBool,
    /// Records in the spill file, not yet in the database.
    spilled: AtomicUsize,
    config: LedgerConfig,
    spill_path: PathBuf,
}

/// What `/health/ready` says about the ledger.
pub struct LedgerStatus {
    pub database_reachable: bool,
    pub queued: usize,
    pub spilled: usize,
}

impl Ledger {
    /// Starts the writer task. Records spilled by an earlier run are written first.
    pub fn start(store: Store, config: &LedgerConfig, spill_path: PathBuf) -> Arc<Ledger> {
        let spilled = count_lines(&spill_path);
        if spilled > 0 {
            tracing::info!(records = spilled, file = %spill_path.display(), "usage records from an earlier run wait in the spill file");
        }
        let ledger = Arc::new(Ledger {
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            stopping: AtomicBool::new(false),
            stopped: Notify::new(),
            healthy: AtomicBool::new(true),
            spilled: AtomicUsize::new(spilled),
            config: config.clone(),
            spill_path,
        });
        tokio::spawn(write_loop(ledger.clone(), store));
        ledger
    }

    /// Queues one record. Never blocks on I/O.
    pub fn push(&self, row: LedgerRow) {
        let len = {
            let mut queue = self.lock();
            queue.push_back(row);
            queue.len()
        };
        if len >= self.config.batch_size {
            self.wake.notify_one();
        }
    }

    pub fn status(&self) -> LedgerStatus {
        LedgerStatus {
            database_reachable: self.healthy.load(Ordering::Relaxed),
            queued: self.lock().len(),
            spilled: self.spilled.load(Ordering::Relaxed),
        }
    }

    /// Writes out every queued record — to the database, or to the spill file when the
    /// database does not take them within `deadline` — and stops the writer.
    pub async fn shutdown(&self, deadline: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        let stopped = self.stopped.notified();
        self.wake.notify_one();
        if tokio::time::timeout(deadline + WRITE_TIMEOUT, stopped)
            .await
            .is_err()
        {
            // The writer is stuck: keep the records on disk rather than lose them.
            let rows: Vec<LedgerRow> = self.lock().drain(..).collect();
            if let Err(e) = append_spill(&self.spill_path, &rows) {
                tracing::error!(error = %e, lost = rows.len(), "cannot write the spill file at shutdown");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<LedgerRow>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_batch(&self) -> Vec<LedgerRow> {
        let mut queue = self.lock();
        let n = queue.len().min(self.config.batch_size);
        queue.drain(..n).collect()
    }

    /// Puts a batch that could not be written back at the front, and moves what exceeds
    /// `max_buffered` to the spill file.
    async fn requeue(&self, batch: Vec<LedgerRow>) {
        let overflow: Vec<LedgerRow> = {
            let mut queue = self.lock();
            for row in batch.into_iter().rev() {
                queue.push_front(row);
            }
            let excess = queue.len().saturating_sub(self.config.max_buffered);
            queue.drain(..excess).collect()
        };
        if !overflow.is_empty() {
            self.spill(overflow).await;
        }
    }

    async fn spill(&self, rows: Vec<LedgerRow>) {
        let path = self.spill_path.clone();
        let n = rows.len();
        let written =
            tokio::task::spawn_blocking(move || append_spill(&path, &rows).map_err(|e| (e, rows)))
                .await;
        match written {
            Ok(Ok(())) => {
                self.spilled.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(records = n, file = %self.spill_path.display(), "database unreachable: usage records spilled to disk");
            }
            Ok(Err((e, rows))) => {
                // The disk refused too: keep them in memory, over the bound, rather than lose them.
                tracing::error!(error = %e, "cannot write the spill file; keeping the records in memory");
                let mut queue = self.lock();
                for row in rows.into_iter().rev() {
                    queue.push_front(row);
                }
            }
            Err(e) => tracing::error!(error = %e, "spill task failed"),
        }
    }

    /// Writes the spill file to the database, then removes it.
    async fn replay_spill(&self, store: &Store) -> bool {
        if self.spilled.load(Ordering::Relaxed) == 0 && !self.spill_path.exists() {
            return true;
        }
        let path = self.spill_path.clone();
        let rows = match tokio::task::spawn_blocking(move || read_spill(&path)).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                tracing::error!(error = %e, file = %self.spill_path.display(), "cannot read the spill file");
                return false;
            }
            Err(_) => return false,
        };
        for chunk in rows.chunks(self.config.batch_size.max(1)) {
            match tokio::time::timeout(WRITE_TIMEOUT, store.insert_usage(chunk)).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
        if let Err(e) = std::fs::remove_file(&self.spill_path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::error!(error = %e, "cannot remove the replayed spill file");
                return false;
            }
        }
        if !rows.is_empty() {
            tracing::info!(
                records = rows.len(),
                "spilled usage records written to the database"
            );
        }
        self.spilled.store(0, Ordering::Relaxed);
        true
    }
}

async fn write_loop(ledger: Arc<Ledger>, store: Store) {
    let interval = ledger.config.flush_interval.0;
    loop {
        let stopping = ledger.stopping.load(Ordering::SeqCst);
        if !stopping {
            tokio::select! {
                () = ledger.wake.notified() => {}
                () = tokio::time::sleep(interval) => {}
            }
        }
        let stopping = ledger.stopping.load(Ordering::SeqCst);
        let ok = flush(&ledger, &store).await;
        ledger.healthy.store(ok, Ordering::Relaxed);
        if stopping {
            if !ok {
                let rows: Vec<LedgerRow> = ledger.lock().drain(..).collect();
                if !rows.is_empty() {
                    ledger.spill(rows).await;
                }
            }
            ledger.stopped.notify_one();
            return;
        }
        if !ok {
            tokio::select! {
                () = tokio::time::sleep(RETRY_WAIT) => {}
                () = ledger.wake.notified() => {}
            }
        }
    }
}

/// Writes every queued record, then the spill file. False when the database failed.
async fn flush(ledger: &Ledger, store: &Store) -> bool {
    loop {
        let batch = ledger.take_batch();
        if batch.is_empty() {
            return ledger.replay_spill(store).await;
        }
        match tokio::time::timeout(WRITE_TIMEOUT, store.insert_usage(&batch)).await {
            Ok(Ok(())) => {
                if !ledger.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!("the database is back: writing usage records again");
                }
            }
            outcome => {
                if ledger.healthy.swap(false, Ordering::Relaxed) {
                    let reason = match outcome {
                        Ok(Err(e)) => e.message,
                        _ => "no answer within 5s".into(),
                    };
                    tracing::error!(%reason, "cannot write usage records: keeping them until the database is back");
                }
                ledger.requeue(batch).await;
                return false;
            }
        }
    }
}

fn append_spill(path: &Path, rows: &[LedgerRow]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut text = Vec::new();
    for row in rows {
        serde_json::to_writer(&mut text, row)?;
        text.push(b'\n');
    }
    file.write_all(&text)?;
    file.sync_data()
}

fn read_spill(path: &Path) -> std::io::Result<Vec<LedgerRow>> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut rows = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        // A line cut short by a crash mid-write is skipped; every whole line is a record.
        if let Ok(row) = serde_json::from_str(&line) {
            rows.push(row);
        }
    }
    Ok(rows)
}

fn count_lines(path: &Path) -> usize {
    std::fs::File::open(path)
        .map(|f| std::io::BufReader::new(f).lines().count())
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::ConfigDuration;

    fn row(i: usize) -> LedgerRow {
        LedgerRow {
            id: format!("row-{i:05}").into(),
            request_id: format!("req-{i}").into(),
            at: 1_000 + i as i64,
            key_id: Some("k".into()),
            key_name: None,
            team: None,
            user: None,
            model: "m".into(),
            provider: None,
            upstream_model: None,
            input_tokens: 1,
            output_tokens: 1,
            cached_tokens: 0,
            cost_nanos: 7,
            latency_ms: 1,
            ttft_ms: None,
            status: 200,
            error_code: None,
            cache: None,
            saved_nanos: 0,
            attempts: 1,
            stream: false,
            metadata: None,
        }
    }

    fn config(max_buffered: usize) -> LedgerConfig {
        LedgerConfig {
            batch_size: 50,
            flush_interval: ConfigDuration(Duration::from_millis(20)),
            max_buffered,
            spill_file: None,
        }
    }

    #[tokio::test]
    async fn batches_reach_the_database_and_shutdown_flushes_the_rest() {
        let store = crate::store::testing::sqlite().await;
        let spill = std::env::temp_dir().join(format!("ledger-{:x}.spill", fastrand::u64(..)));
        let ledger = Ledger::start(store.clone(), &config(1000), spill.clone());
        for i in 0..1234 {
            ledger.push(row(i));
        }
        ledger.shutdown(Duration::from_secs(5)).await;
        assert_eq!(store.count_usage().await.unwrap(), 1234);
        assert!(!spill.exists());
    }

    #[tokio::test]
    async fn an_unreachable_database_spills_and_the_next_start_writes_it() {
        let good = crate::store::testing::sqlite().await;
        let broken = crate::store::testing::sqlite().await;
        // A store whose pool is closed fails every write, as an unreachable database does.
        broken.close().await;
        let spill = std::env::temp_dir().join(format!("ledger-{:x}.spill", fastrand::u64(..)));
        let ledger = Ledger::start(broken, &config(100), spill.clone());
        for i in 0..300 {
            ledger.push(row(i));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let status = ledger.status();
        assert!(!status.database_reachable);
        assert!(status.queued <= 100 + 50, "bounded: {}", status.queued);
        assert!(status.spilled >= 150, "spilled {}", status.spilled);
        ledger.shutdown(Duration::from_millis(200)).await;
        assert_eq!(count_lines(&spill), 300, "every record is on disk");

        // The next run, with the database back, writes them all exactly once.
        let ledger = Ledger::start(good.clone(), &config(100), spill.clone());
        ledger.push(row(300));
        ledger.shutdown(Duration::from_secs(5)).await;
        assert_eq!(good.count_usage().await.unwrap(), 301);
        assert!(!spill.exists());
    }
}
