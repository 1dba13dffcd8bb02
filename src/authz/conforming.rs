//! Entity shapes Cedar's schema check has accepted, per policy bundle.
//!
//! Cedar's check of one entity against the schema (`Entities::add_entities` with the schema)
//! costs about 15 µs even for a small entity: it builds a description of every entity type it
//! meets. What it reads is the entity's shape (its type, its parents' types, its attributes'
//! names and kinds, the types of the entities they name, and the ids of entities of enumerated
//! types), not the strings and numbers themselves. So a shape accepted once is accepted again:
//! a new caller whose claims have the same kinds and whose parents have the same types as an
//! earlier one's (the key counts parents and set members, so one role more is another shape),
//! or another resource a route places, skips the check. Only acceptances are remembered, and
//! only for entities without a directory entry. Bounded: past the limit, shapes not seen
//! lately make room.

/// How many accepted shapes a bundle remembers.
const REMEMBERED_SHAPES: usize = 1024;

pub struct ConformingShapes {
    accepted: quick_cache::sync::Cache<Vec<u8>, ()>,
}

impl Default for ConformingShapes {
    fn default() -> Self {
        ConformingShapes {
            accepted: quick_cache::sync::Cache::new(REMEMBERED_SHAPES),
        }
    }
}

impl std::fmt::Debug for ConformingShapes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConformingShapes")
            .field("remembered", &self.accepted.len())
            .finish()
    }
}

impl ConformingShapes {
    /// Whether an entity of this shape passed the schema check before.
    pub fn accepted(&self, shape: &[u8]) -> bool {
        self.accepted.get(shape).is_some()
    }

    pub fn remember(&self, shape: Vec<u8>) {
        self.accepted.insert(shape, ());
    }

    #[cfg(test)]
    pub fn accepted_count(&self) -> usize {
        self.accepted.len()
    }
}
