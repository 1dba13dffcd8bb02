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

    /// Lower-case hex: the prefix's 16 digits, then the counter's, at least 8 (24 in all until
    /// the counter passes 2^32).
    pub fn next(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut id = String::with_capacity(24);
        let digits = |value: u64, count: u32| {
            (0..count)
                .rev()
                .map(move |i| char::from(HEX[((value >> (4 * i)) & 0xf) as usize]))
        };
        id.extend(digits(self.prefix, 16));
        id.extend(digits(n, (64 - n.leading_zeros()).div_ceil(4).max(8)));
        id
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
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        // The counter is the last eight digits.
        assert_eq!(&a[..16], &b[..16]);
        assert_eq!(&a[16..], "00000000");
        assert_eq!(&b[16..], "00000001");
    }
}
