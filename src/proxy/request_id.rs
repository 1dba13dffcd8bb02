//! Request ids: unique per process run and cheap to make (a random prefix and a counter).

use std::sync::atomic::{AtomicU64, Ordering};

pub struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl RequestIds {
    pub fn new() -> Self {
        let mut bytes = [0u8; 8];
        // A failing system RNG leaves the prefix zero; ids stay unique within the process.
        let _ = aws_lc_rs::rand::fill(&mut bytes);
        RequestIds {
            prefix: u64::from_le_bytes(bytes),
            counter: AtomicU64::new(0),
        }
    }

    pub fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{:08x}", self.prefix, n)
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_distinct() {
        let ids = super::RequestIds::new();
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
    }
}
