//! The decision log sink: one JSON line per decision, written off the request path.
//!
//! Requests hand their record to a bounded queue and never wait: when the writer falls behind
//! and the queue is full, the record is dropped, counted in
//! `portcullis_decision_log_records_total{outcome="dropped"}` and a warning is logged (at most
//! every 10 s). A file sink is reopened on SIGHUP (`reopen`) and when its path stops naming the
//! open file (logrotate's rename-and-create), so rotation loses nothing written after it. The
//! HTTP sink writes to an on-disk spool (`spool`) that a shipper (`shipper`) sends to the
//! collector.

mod settings;
mod shipper;
mod spool;

pub use settings::{DecisionSink, HttpSink, ShipFormat};

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{
    channel, sync_channel, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError,
};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::{IntCounter, IntGauge};

use shipper::ShipperMetrics;
use spool::Spool;

/// How often a file sink checks whether its path was rotated away.
const ROTATION_CHECK: Duration = Duration::from_secs(1);
/// Least time between two "records dropped" warnings.
const DROP_WARNING_EVERY_SECONDS: u64 = 10;

#[derive(Debug, thiserror::Error)]
#[error("cannot open the decision log {path}: {source}")]
pub struct OpenError {
    path: PathBuf,
    source: io::Error,
}

enum Message {
    Record(String),
    /// Write out everything queued before this, then answer.
    Flush(Sender<()>),
}

/// The request side of the decision log.
pub struct DecisionLog {
    queue: SyncSender<Message>,
    reopen: Arc<AtomicBool>,
    dropped: Arc<Dropped>,
}

/// The decision log's counters (`portcullis_decision_log_*`).
pub struct LogMetrics {
    pub written: IntCounter,
    pub dropped: IntCounter,
    /// HTTP sink: records the collector took.
    pub shipped: IntCounter,
    /// HTTP sink: POSTs that failed (and were retried).
    pub ship_failures: IntCounter,
    /// HTTP sink: bytes waiting in the spool.
    pub spool_bytes: IntGauge,
}

impl LogMetrics {
    /// Counters registered nowhere (the load test's bare pingora).
    // Constant names: building the counters cannot fail.
    #[allow(clippy::expect_used)]
    pub fn unregistered() -> Self {
        let counter = |name: &str| IntCounter::new(name, "decision records").expect("a valid name");
        LogMetrics {
            written: counter("written"),
            dropped: counter("dropped"),
            shipped: counter("shipped"),
            ship_failures: counter("ship_failures"),
            spool_bytes: IntGauge::new("spool_bytes", "bytes").expect("a valid name"),
        }
    }
}

/// Dropped records: counted, and a warning at most every 10 s.
struct Dropped {
    count: IntCounter,
    last_warning: AtomicU64,
}

impl Dropped {
    fn record(&self, why: &str) {
        self.count.inc();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_warning.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= DROP_WARNING_EVERY_SECONDS
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!(
                "{why}: {} records dropped so far \
                 (portcullis_decision_log_records_total{{outcome=\"dropped\"}})",
                self.count.get()
            );
        }
    }
}

impl DecisionLog {
    /// Opens the sink and starts its writer thread (and the HTTP sink's shipper). `capacity`
    /// records may wait in the queue.
    pub fn start(
        sink: &DecisionSink,
        capacity: usize,
        metrics: LogMetrics,
    ) -> Result<Self, OpenError> {
        let dropped = Arc::new(Dropped {
            count: metrics.dropped,
            last_warning: AtomicU64::new(0),
        });
        let output = Output::open(
            sink,
            ShipperMetrics {
                shipped: metrics.shipped,
                failures: metrics.ship_failures,
                spool_bytes: metrics.spool_bytes,
            },
        )?;
        let (queue, records) = sync_channel(capacity);
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            output,
            written: metrics.written,
            dropped: dropped.clone(),
            reopen: reopen.clone(),
        };
        // A writer that cannot start leaves the queue without a reader: records are dropped
        // and counted, which is the documented behaviour of a sink that cannot keep up.
        if let Err(e) = std::thread::Builder::new()
            .name("portcullis-decisions".to_string())
            .spawn(move || writer.run(records))
        {
            log::error!("cannot start the decision log writer: {e}");
        }
        Ok(DecisionLog {
            queue,
            reopen,
            dropped,
        })
    }

    /// Queues one record; never blocks.
    pub fn record(&self, line: String) {
        match self.queue.try_send(Message::Record(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.record("the decision log cannot keep up");
            }
        }
    }

    /// Waits (at most `timeout`) until every record queued so far is written and flushed: at
    /// shutdown, so that the last decisions are not lost with the process.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (done, written) = channel();
        let deadline = Instant::now() + timeout;
        loop {
            match self.queue.try_send(Message::Flush(done.clone())) {
                Ok(()) => return written.recv_timeout(timeout).is_ok(),
                Err(TrySendError::Full(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
    }

    /// Asks a file sink to reopen its path (SIGHUP after rotation).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }
}

/// How long the writer lets records gather after writing a batch.
const BATCH_PAUSE: Duration = Duration::from_millis(5);

struct Writer {
    output: Output,
    written: IntCounter,
    dropped: Arc<Dropped>,
    reopen: Arc<AtomicBool>,
}

impl Writer {
    /// Writes records until every sender is gone, flushing whenever the queue runs dry. A
    /// spool's open batch is sealed when its interval is over, records or not.
    fn run(mut self, messages: Receiver<Message>) {
        loop {
            let first = match self.output.due_in() {
                None => match messages.recv() {
                    Ok(message) => message,
                    Err(_) => break,
                },
                Some(wait) => match messages.recv_timeout(wait) {
                    Ok(message) => message,
                    Err(RecvTimeoutError::Timeout) => {
                        if let Err(e) = self.output.flush() {
                            log::error!("decision log write failed: {e}");
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            let asked = self.reopen.swap(false, Ordering::AcqRel);
            self.output.reopen_if_rotated(asked);
            let mut flushed = Vec::new();
            let mut batch = 0;
            for message in
                std::iter::once(first).chain(std::iter::from_fn(|| messages.try_recv().ok()))
            {
                match message {
                    Message::Record(line) => match self.output.write_line(&line) {
                        Ok(true) => batch += 1,
                        Ok(false) => self
                            .dropped
                            .record("the decision log spool is full (spool_max_bytes)"),
                        Err(e) => log::error!("decision log write failed: {e}"),
                    },
                    Message::Flush(done) => flushed.push(done),
                }
            }
            let flushed_all = if flushed.is_empty() {
                self.output.flush()
            } else {
                // At shutdown: the open batch goes to the shipper now.
                self.output.flush().and_then(|()| self.output.seal())
            };
            if let Err(e) = flushed_all {
                log::error!("decision log write failed: {e}");
            }
            self.written.inc_by(batch);
            for done in flushed {
                // The waiter may have given up; nothing to do then.
                let _ = done.send(());
            }
            // Under load, records gather while the writer sleeps, and a request thread only has
            // to wake a blocked writer (a futex call) once a pause, not once a record.
            std::thread::sleep(BATCH_PAUSE);
        }
    }
}

enum Output {
    Stdout(io::Stdout),
    Spool(Spool),
    File {
        path: PathBuf,
        file: BufWriter<File>,
        /// (device, inode) of the open file.
        identity: (u64, u64),
        checked: Instant,
    },
}

impl Output {
    /// Opens the sink; for the HTTP sink, the spool, and starts its shipper.
    fn open(sink: &DecisionSink, shipper_metrics: ShipperMetrics) -> Result<Self, OpenError> {
        match sink {
            DecisionSink::Stdout => Ok(Output::Stdout(io::stdout())),
            DecisionSink::Http(settings) => {
                let error = |source| OpenError {
                    path: settings.spool_dir.clone(),
                    source,
                };
                let (spool, bytes) = Spool::open(settings).map_err(error)?;
                shipper::start(settings.clone(), bytes, shipper_metrics).map_err(error)?;
                Ok(Output::Spool(spool))
            }
            DecisionSink::File(path) => {
                let (file, identity) = open_append(path).map_err(|source| OpenError {
                    path: path.clone(),
                    source,
                })?;
                Ok(Output::File {
                    path: path.clone(),
                    file: BufWriter::new(file),
                    identity,
                    checked: Instant::now(),
                })
            }
        }
    }

    /// Writes one record; `Ok(false)` when a full spool refused it.
    fn write_line(&mut self, line: &str) -> io::Result<bool> {
        match self {
            Output::Stdout(out) => {
                let mut out = out.lock();
                out.write_all(line.as_bytes())?;
                out.write_all(b"\n")?;
            }
            Output::File { file, .. } => {
                file.write_all(line.as_bytes())?;
                file.write_all(b"\n")?;
            }
            Output::Spool(spool) => return spool.append(line),
        }
        Ok(true)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Stdout(out) => out.flush(),
            Output::File { file, .. } => file.flush(),
            Output::Spool(spool) => spool.flush(),
        }
    }

    fn seal(&mut self) -> io::Result<()> {
        match self {
            Output::Spool(spool) => spool.seal(),
            _ => Ok(()),
        }
    }

    /// When the writer must wake without a record: a spool's open batch falls due.
    fn due_in(&self) -> Option<Duration> {
        match self {
            Output::Spool(spool) => spool.due_in(),
            _ => None,
        }
    }

    /// Reopens the file when asked, or when its path names another file (or none) now.
    fn reopen_if_rotated(&mut self, asked: bool) {
        let Output::File {
            path,
            file,
            identity,
            checked,
        } = self
        else {
            return;
        };
        if !asked && checked.elapsed() < ROTATION_CHECK {
            return;
        }
        *checked = Instant::now();
        let current = std::fs::metadata(&*path).map(|m| (m.dev(), m.ino())).ok();
        if !asked && current == Some(*identity) {
            return;
        }
        match open_append(path) {
            Ok((reopened, reopened_identity)) => {
                log::info!("decision log reopened: {}", path.display());
                *file = BufWriter::new(reopened);
                *identity = reopened_identity;
            }
            Err(e) => log::error!(
                "cannot reopen the decision log {}: {e}; still writing to the old file",
                path.display()
            ),
        }
    }
}

fn open_append(path: &Path) -> io::Result<(File, (u64, u64))> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let metadata = file.metadata()?;
    Ok((file, (metadata.dev(), metadata.ino())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unregistered counters, and handles on the written and dropped ones.
    fn counters() -> (LogMetrics, IntCounter, IntCounter) {
        let metrics = LogMetrics::unregistered();
        let (written, dropped) = (metrics.written.clone(), metrics.dropped.clone());
        (metrics, written, dropped)
    }

    fn wait_for(condition: impl Fn() -> bool) {
        for _ in 0..500 {
            if condition() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("condition not reached in 5 s");
    }

    #[test]
    fn records_survive_rename_rotation_and_sighup_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.log");
        let (metrics, written, dropped) = counters();
        let log = DecisionLog::start(&DecisionSink::File(path.clone()), 64, metrics).unwrap();
        log.record("{\"n\":1}".into());
        assert!(log.flush(Duration::from_secs(5)));
        assert_eq!(written.get(), 1);
        // logrotate: rename, then the writer notices the path is gone and recreates it.
        let rotated = dir.path().join("decisions.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        std::thread::sleep(ROTATION_CHECK + Duration::from_millis(50));
        log.record("{\"n\":2}".into());
        wait_for(|| written.get() == 2);
        log.record("{\"n\":3}".into());
        wait_for(|| std::fs::read_to_string(&path).is_ok_and(|t| t.contains("\"n\":3")));
        // copytruncate-style rotation plus SIGHUP: reopen on demand.
        std::fs::rename(&path, dir.path().join("decisions.log.2")).unwrap();
        log.reopen();
        log.record("{\"n\":4}".into());
        log.record("{\"n\":5}".into());
        wait_for(|| std::fs::read_to_string(&path).is_ok_and(|t| t.contains("\"n\":5")));
        let all: String = ["decisions.log.1", "decisions.log.2", "decisions.log"]
            .iter()
            .map(|name| std::fs::read_to_string(dir.path().join(name)).unwrap())
            .collect();
        for n in 1..=5 {
            assert!(
                all.contains(&format!("{{\"n\":{n}}}")),
                "record {n} lost: {all}"
            );
        }
        assert_eq!(dropped.get(), 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (_, written, dropped) = counters();
        let (queue, _messages) = sync_channel(2);
        let log = DecisionLog {
            queue,
            reopen: Arc::new(AtomicBool::new(false)),
            dropped: Arc::new(Dropped {
                count: dropped.clone(),
                last_warning: AtomicU64::new(0),
            }),
        };
        for n in 0..5 {
            log.record(format!("{n}"));
        }
        assert_eq!(dropped.get(), 3);
        assert_eq!(written.get(), 0);
    }

    #[test]
    fn an_unopenable_file_is_an_error_naming_it() {
        let (metrics, _, _) = counters();
        let path = PathBuf::from("/nonexistent-dir/decisions.log");
        let error = DecisionLog::start(&DecisionSink::File(path), 4, metrics)
            .err()
            .unwrap();
        assert!(error.to_string().contains("/nonexistent-dir/decisions.log"));
    }
}
