//! A hasher for map keys that are already uniform 64-bit hashes (correlation keys, the mask
//! memory's text keys): hashing them again would only cost time.

use std::hash::{BuildHasherDefault, Hasher};

/// Passes a `u64` key through as its own hash.
#[derive(Default)]
pub(crate) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// [`std::collections::HashMap`]'s hasher parameter for such keys.
pub(crate) type BuildIdentity = BuildHasherDefault<IdentityHasher>;
