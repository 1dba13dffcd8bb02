//! Cache keys built from length-prefixed pieces, so that no two different sequences of pieces
//! write the same bytes: the decision cache's keys and the entity shapes Cedar's schema check
//! accepted.

#[derive(Debug, Default)]
pub struct CacheKey(Vec<u8>);

impl CacheKey {
    pub fn with_capacity(capacity: usize) -> Self {
        CacheKey(Vec::with_capacity(capacity))
    }

    pub fn piece(&mut self, bytes: &[u8]) {
        let length = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&length.to_le_bytes());
        self.0.extend_from_slice(bytes);
    }

    pub fn count(&mut self, count: usize) {
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&count.to_le_bytes());
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unambiguous() {
        let key = |pieces: &[&str]| {
            let mut key = CacheKey::default();
            pieces.iter().for_each(|p| key.piece(p.as_bytes()));
            key.into_bytes()
        };
        assert_ne!(key(&["ab", "c"]), key(&["a", "bc"]));
        assert_ne!(key(&["", "x"]), key(&["x", ""]));
        assert_eq!(key(&["a", "b"]), key(&["a", "b"]));
    }
}
