//! Deterministic identifiers.
//!
//! Event and incident ids are content hashes, so the same input gives the same ids
//! on replay, after a restart, and on every engine instance. Parts are length-prefixed
//! so that `("ab", "c")` and `("a", "bc")` never collide.

/// A 128-bit hex id over the given parts, with a short type prefix.
pub fn derive(prefix: &str, parts: &[&str]) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(prefix.as_bytes());
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    format!("{prefix}_{}", hex::encode(&digest.as_bytes()[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_boundary_safe() {
        assert_eq!(derive("evt", &["a", "b"]), derive("evt", &["a", "b"]));
        assert_ne!(derive("evt", &["ab", "c"]), derive("evt", &["a", "bc"]));
        assert!(derive("inc", &["x"]).starts_with("inc_"));
        assert_eq!(derive("inc", &["x"]).len(), 4 + 32);
    }
}
