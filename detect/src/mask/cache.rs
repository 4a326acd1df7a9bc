//! Per-thread memory of what masking already decided about a text.
//!
//! Audit records of one source repeat their keys in every record and many of their values
//! (event types, user agents, display messages, client names): in the recorded pages 99% of keys
//! and two thirds of string values (by bytes) are repeats. Scanning each again costs the pattern
//! prefilter per string, which dominated masking; a hash lookup replaces it.
//!
//! Only outcomes that hold for the exact text are kept: a text found clean under a masker's
//! configuration (the default kinds, not a field rule's extras) and whether a key name is
//! sensitive. Lookups compare whole texts, so a hit is never a near miss. Entries belong to one
//! masker instance (its configuration); the memory is bounded and simply emptied when full.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

/// Entries kept per thread before the memory is emptied.
const MAX_ENTRIES: usize = 16_384;
/// Longer texts are not kept (rarely repeated, costly to hash and hold).
const MAX_TEXT_LEN: usize = 256;

type Build = foldhash::fast::RandomState;

struct Memory {
    owner: u64,
    clean: HashSet<Box<str>, Build>,
    sensitive_keys: HashMap<Box<str>, bool, Build>,
}

impl Memory {
    /// The memory for masker `owner`, emptied when another masker used it last or it is full.
    fn for_owner(&mut self, owner: u64) -> &mut Memory {
        if self.owner != owner || self.clean.len() + self.sensitive_keys.len() >= MAX_ENTRIES {
            self.owner = owner;
            self.clean.clear();
            self.sensitive_keys.clear();
        }
        self
    }
}

thread_local! {
    // Randomly seeded: texts come from outside, and must not be craftable into collisions that
    // turn each lookup into a long probe.
    static MEMORY: RefCell<Memory> = RefCell::new(Memory {
        owner: 0,
        clean: HashSet::default(),
        sensitive_keys: HashMap::default(),
    });
}

/// Run `f` with this thread's set of texts masker `owner` found clean, to look `text` up and
/// remember it with one thread-local access. `None` when `text` is too long to keep or the memory
/// is in use further up the stack.
pub(super) fn with_clean_texts<R>(
    owner: u64,
    text: &str,
    f: impl FnOnce(Option<&mut HashSet<Box<str>, Build>>) -> R,
) -> R {
    if text.len() > MAX_TEXT_LEN {
        return f(None);
    }
    MEMORY.with(|m| match m.try_borrow_mut() {
        Ok(mut m) => f(Some(&mut m.for_owner(owner).clean)),
        Err(_) => f(None),
    })
}

/// Whether `key` is a sensitive key name for masker `owner`, computed by `decide` once per key.
pub(super) fn key_is_sensitive(owner: u64, key: &str, decide: impl FnOnce() -> bool) -> bool {
    if key.len() > MAX_TEXT_LEN {
        return decide();
    }
    MEMORY.with(|m| match m.try_borrow_mut() {
        Ok(mut m) => {
            let m = m.for_owner(owner);
            if let Some(known) = m.sensitive_keys.get(key) {
                return *known;
            }
            let sensitive = decide();
            m.sensitive_keys.insert(key.into(), sensitive);
            sensitive
        }
        Err(_) => decide(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_known_clean(owner: u64, text: &str) -> bool {
        with_clean_texts(owner, text, |c| c.is_some_and(|c| c.contains(text)))
    }

    fn remember_clean(owner: u64, text: &str) {
        with_clean_texts(owner, text, |c| c.map(|c| c.insert(text.into())));
    }

    #[test]
    fn memory_is_per_masker_and_bounded() {
        remember_clean(1, "user.session.start");
        assert!(is_known_clean(1, "user.session.start"));
        assert!(!is_known_clean(1, "user.session.end"));
        // Another masker (another configuration) starts from nothing.
        assert!(!is_known_clean(2, "user.session.start"));
        assert!(!is_known_clean(1, "user.session.start"));
        for i in 0..MAX_ENTRIES + 10 {
            remember_clean(3, &format!("value {i}"));
        }
        assert!(is_known_clean(3, &format!("value {}", MAX_ENTRIES + 9)));
        assert!(!is_known_clean(3, "value 0"), "emptied when full");
        let long = "x".repeat(MAX_TEXT_LEN + 1);
        remember_clean(3, &long);
        assert!(!is_known_clean(3, &long));
        let mut calls = 0;
        for _ in 0..3 {
            assert!(key_is_sensitive(4, "password", || {
                calls += 1;
                true
            }));
        }
        assert_eq!(calls, 1);
    }
}
