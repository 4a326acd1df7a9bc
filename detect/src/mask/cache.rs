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

/// One thread's memory, borrowed for a whole record by [`with_memory`].
pub(super) struct Memory {
    owner: u64,
    clean: HashSet<Box<str>, Build>,
    sensitive_keys: HashMap<Box<str>, bool, Build>,
    /// What the walk asks about an object key ([`super::KeyFacts`]), as its bits.
    key_facts: HashMap<Box<str>, u8, Build>,
}

impl Memory {
    /// The memory for masker `owner`, emptied when another masker used it last.
    fn for_owner(&mut self, owner: u64) -> &mut Memory {
        if self.owner != owner {
            self.owner = owner;
            self.clear();
        }
        self
    }

    fn clear(&mut self) {
        self.clean.clear();
        self.sensitive_keys.clear();
        self.key_facts.clear();
    }

    /// Room for one more entry: the memory is emptied when full.
    fn make_room(&mut self) {
        if self.clean.len() + self.sensitive_keys.len() + self.key_facts.len() >= MAX_ENTRIES {
            self.clear();
        }
    }

    /// Whether `text` was found clean before (under the masker's default kinds).
    pub(super) fn is_clean(&self, text: &str) -> bool {
        text.len() <= MAX_TEXT_LEN && self.clean.contains(text)
    }

    /// Remember that `text` is clean under the masker's default kinds.
    pub(super) fn remember_clean(&mut self, text: &str) {
        if text.len() <= MAX_TEXT_LEN {
            self.make_room();
            self.clean.insert(text.into());
        }
    }

    /// Whether `key` is a sensitive key name, computed by `decide` once per key.
    pub(super) fn key_is_sensitive(&mut self, key: &str, decide: impl FnOnce() -> bool) -> bool {
        if key.len() > MAX_TEXT_LEN {
            return decide();
        }
        if let Some(known) = self.sensitive_keys.get(key) {
            return *known;
        }
        let sensitive = decide();
        self.make_room();
        self.sensitive_keys.insert(key.into(), sensitive);
        sensitive
    }

    /// The facts about object key `key` ([`super::KeyFacts`]' bits), computed by `decide` once
    /// per key: records of a source repeat their keys, so one lookup replaces the several
    /// byte-level checks of each.
    pub(super) fn key_facts(&mut self, key: &str, decide: impl FnOnce() -> u8) -> u8 {
        if key.len() > MAX_TEXT_LEN {
            return decide();
        }
        if let Some(known) = self.key_facts.get(key) {
            return *known;
        }
        let facts = decide();
        self.make_room();
        self.key_facts.insert(key.into(), facts);
        facts
    }
}

thread_local! {
    // Randomly seeded: texts come from outside, and must not be craftable into collisions that
    // turn each lookup into a long probe.
    static MEMORY: RefCell<Memory> = RefCell::new(Memory {
        owner: 0,
        clean: HashSet::default(),
        sensitive_keys: HashMap::default(),
        key_facts: HashMap::default(),
    });
}

/// Run `f` with this thread's memory for masker `owner`, borrowed once for all the texts of a
/// record (one thread-local access per record, not per text). `None` when the memory is in use
/// further up the stack.
pub(super) fn with_memory<R>(owner: u64, f: impl FnOnce(Option<&mut Memory>) -> R) -> R {
    MEMORY.with(|m| match m.try_borrow_mut() {
        Ok(mut m) => f(Some(m.for_owner(owner))),
        Err(_) => f(None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_known_clean(owner: u64, text: &str) -> bool {
        with_memory(owner, |m| m.is_some_and(|m| m.is_clean(text)))
    }

    fn remember_clean(owner: u64, text: &str) {
        with_memory(owner, |m| m.map(|m| m.remember_clean(text)));
    }

    fn key_is_sensitive(owner: u64, key: &str, decide: impl FnOnce() -> bool) -> bool {
        with_memory(owner, |m| m.map(|m| m.key_is_sensitive(key, decide))).expect("memory free")
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
        let mut facts_calls = 0;
        for _ in 0..3 {
            let facts = with_memory(5, |m| {
                m.map(|m| {
                    m.key_facts("userId", || {
                        facts_calls += 1;
                        8
                    })
                })
            });
            assert_eq!(facts, Some(8));
        }
        assert_eq!(facts_calls, 1, "a key's facts are decided once");
        // Key facts share the bound with the other entries.
        for i in 0..MAX_ENTRIES {
            remember_clean(5, &format!("value {i}"));
        }
        let decided_again = with_memory(5, |m| m.map(|m| m.key_facts("userId", || 9)));
        assert_eq!(decided_again, Some(9), "emptied when full");
    }
}
