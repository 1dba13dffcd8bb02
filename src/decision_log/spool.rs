//! The on-disk spool of the HTTP sink: records are appended to a segment file; a segment is
//! sealed (renamed to `<sequence>.ndjson`) when it holds a batch's bytes or its first record
//! has waited a batch interval, and the shipper sends sealed segments in order and deletes each
//! once the collector took it. So a record is on disk before it is sent, survives a collector
//! outage and a restart, and is lost only when the spool's size limit refuses it (counted).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::HttpSink;

const SEALED: &str = "ndjson";
const OPEN: &str = "open";

/// What the writer and the shipper share: the bytes on disk.
#[derive(Debug, Default)]
pub struct SpoolBytes(AtomicU64);

impl SpoolBytes {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    pub fn release(&self, bytes: u64) {
        // Saturating: a segment deleted by hand must not wrap the count.
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                Some(b.saturating_sub(bytes))
            });
    }
}

struct Segment {
    file: BufWriter<File>,
    path: PathBuf,
    sequence: u64,
    bytes: u64,
    opened: Instant,
}

pub struct Spool {
    dir: PathBuf,
    bytes: Arc<SpoolBytes>,
    max_bytes: u64,
    batch_bytes: u64,
    batch_interval: Duration,
    current: Option<Segment>,
    next_sequence: u64,
}

impl Spool {
    /// Opens (creating) the spool directory. A segment a crash left open is sealed, so that
    /// it is sent; the bytes already there count against the limit.
    pub fn open(settings: &HttpSink) -> io::Result<(Self, Arc<SpoolBytes>)> {
        let dir = settings.spool_dir.clone();
        std::fs::create_dir_all(&dir)?;
        let mut total = 0;
        let mut next_sequence = 0;
        let mut left_open = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let Some(sequence) = sequence_of(&path) else {
                continue;
            };
            next_sequence = next_sequence.max(sequence + 1);
            total += std::fs::metadata(&path)?.len();
            if path.extension().is_some_and(|e| e == OPEN) {
                left_open.push((sequence, path));
            }
        }
        for (sequence, path) in left_open {
            std::fs::rename(&path, segment_path(&dir, sequence, SEALED))?;
        }
        let bytes = Arc::new(SpoolBytes(AtomicU64::new(total)));
        Ok((
            Spool {
                dir,
                bytes: bytes.clone(),
                max_bytes: settings.spool_max_bytes,
                batch_bytes: settings.batch_bytes,
                batch_interval: settings.batch_interval,
                current: None,
                next_sequence,
            },
            bytes,
        ))
    }

    /// Appends one record; `Ok(false)` when the spool is full and the record is dropped.
    pub fn append(&mut self, line: &str) -> io::Result<bool> {
        let size = line.len() as u64 + 1;
        if self.bytes.get() + size > self.max_bytes {
            return Ok(false);
        }
        if self.current.is_none() {
            let sequence = self.next_sequence;
            self.next_sequence += 1;
            let path = segment_path(&self.dir, sequence, OPEN);
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)?;
            self.current = Some(Segment {
                file: BufWriter::new(file),
                path,
                sequence,
                bytes: 0,
                opened: Instant::now(),
            });
        }
        if let Some(segment) = &mut self.current {
            segment.file.write_all(line.as_bytes())?;
            segment.file.write_all(b"\n")?;
            segment.bytes += size;
            self.bytes.0.fetch_add(size, Ordering::AcqRel);
            if segment.bytes >= self.batch_bytes {
                self.seal()?;
            }
        }
        Ok(true)
    }

    /// Writes out what is buffered, and seals the segment if its batch interval is over.
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(segment) = &mut self.current {
            segment.file.flush()?;
            if segment.opened.elapsed() >= self.batch_interval {
                self.seal()?;
            }
        }
        Ok(())
    }

    /// Seals the open segment (if any): the shipper may send it now.
    pub fn seal(&mut self) -> io::Result<()> {
        if let Some(mut segment) = self.current.take() {
            segment.file.flush()?;
            std::fs::rename(
                &segment.path,
                segment_path(&self.dir, segment.sequence, SEALED),
            )?;
        }
        Ok(())
    }

    /// How long until the open segment must be sealed; `None` when none is open.
    pub fn due_in(&self) -> Option<Duration> {
        self.current
            .as_ref()
            .map(|s| self.batch_interval.saturating_sub(s.opened.elapsed()))
    }
}

fn segment_path(dir: &Path, sequence: u64, extension: &str) -> PathBuf {
    dir.join(format!("{sequence:020}.{extension}"))
}

fn sequence_of(path: &Path) -> Option<u64> {
    let extension = path.extension()?;
    if extension != SEALED && extension != OPEN {
        return None;
    }
    path.file_stem()?.to_str()?.parse().ok()
}

/// The sealed segments, oldest first.
pub fn sealed_segments(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut sealed: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == SEALED))
        .filter_map(|path| sequence_of(&path).map(|s| (s, path)))
        .collect();
    sealed.sort();
    Ok(sealed.into_iter().map(|(_, path)| path).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision_log::ShipFormat;

    fn settings(dir: &Path, max: u64, batch: u64) -> HttpSink {
        HttpSink {
            url: "http://127.0.0.1:9/".parse().unwrap(),
            format: ShipFormat::Ndjson,
            token: None,
            spool_dir: dir.to_path_buf(),
            spool_max_bytes: max,
            batch_bytes: batch,
            batch_interval: Duration::from_millis(50),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn segments_seal_by_size_and_age_and_a_full_spool_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, bytes) = Spool::open(&settings(dir.path(), 40, 16)).unwrap();
        assert!(spool.append("0123456789").unwrap());
        assert_eq!(sealed_segments(dir.path()).unwrap().len(), 0);
        assert!(spool.append("0123456789").unwrap());
        // 22 bytes ≥ 16: sealed.
        assert_eq!(sealed_segments(dir.path()).unwrap().len(), 1);
        assert!(spool.append("abc").unwrap());
        spool.flush().unwrap();
        assert_eq!(sealed_segments(dir.path()).unwrap().len(), 1);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(spool.due_in(), Some(Duration::ZERO));
        spool.flush().unwrap();
        let sealed = sealed_segments(dir.path()).unwrap();
        assert_eq!(sealed.len(), 2);
        assert_eq!(std::fs::read_to_string(&sealed[1]).unwrap(), "abc\n");
        assert_eq!(bytes.get(), 26);
        // 26 + 15 > 40: refused, nothing written.
        assert!(!spool.append("0123456789abcd").unwrap());
        assert_eq!(bytes.get(), 26);
        bytes.release(22);
        assert!(spool.append("0123456789abcd").unwrap());
    }

    #[test]
    fn a_segment_left_open_by_a_crash_is_sealed_and_counted_at_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("00000000000000000003.open"), "a\nb\n").unwrap();
        std::fs::write(dir.path().join("00000000000000000002.ndjson"), "c\n").unwrap();
        std::fs::write(dir.path().join("unrelated.txt"), "x").unwrap();
        let (mut spool, bytes) = Spool::open(&settings(dir.path(), 1000, 100)).unwrap();
        assert_eq!(bytes.get(), 6);
        let sealed = sealed_segments(dir.path()).unwrap();
        assert_eq!(
            sealed
                .iter()
                .map(|p| p.file_name().unwrap().to_str().unwrap())
                .collect::<Vec<_>>(),
            ["00000000000000000002.ndjson", "00000000000000000003.ndjson"]
        );
        spool.append("d").unwrap();
        spool.seal().unwrap();
        assert!(dir.path().join("00000000000000000004.ndjson").exists());
    }
}
