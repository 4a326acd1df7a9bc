//! Per-thread memory of what masking already decided about a text.
//!
//! Audit records of one source repeat their keys in every record and many of their values
//! (event types, user agents, display messages, client names): in the recorded pages 99% of keys
//! and two thirds of string values (by bytes) are repeats. Scanning each again costs the pattern
//! prefilter per string, which dominated masking; a hash lookup replaces it.
//!
//! What is kept is the outcome of masking a text under one set of kinds (the masker's
//! defaults, or those of an id key, which looks for no card numbers):
//! - **clean**: the text itself is kept and compared on lookup, so a clean hit is never a near
//!   miss (a secret is never let through for looking like a clean text);
//! - **masked**: its masked form and what masking it counted (an AWS access key id in every
//!   CloudTrail record, a user's email when emails are masked: the regex and the HMAC ran once).
//!   The clear text is not kept: the entry is found by a 64-bit keyed hash of it and checked
//!   against a second, independently keyed one (128 bits together). Two texts sharing both
//!   (about 2^-128 a pair) would give the second the first's masked form: a wrong value, never
//!   the second's secret, which the first's masked form replaces whole.
//!
//! and, per key name, whether it is sensitive and the walk's other facts about it. Entries belong
//! to one masker instance (its configuration); the memory is bounded and simply emptied when
//! full.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

use super::patterns::KindSet;
use crate::identity_hash::BuildIdentity;

/// Entries kept per thread before the memory is emptied.
const MAX_ENTRIES: usize = 16_384;
/// Longer texts are not kept (rarely repeated, costly to hash and hold).
const MAX_TEXT_LEN: usize = 256;

type Build = foldhash::fast::RandomState;

/// A text and the kinds it was masked under, as a 64-bit keyed hash: where its outcome is kept.
/// A masked outcome also holds a second, independently keyed 64-bit hash of them, checked on
/// lookup (the two make the 128 bits that identify a masked text).
type TextKey = u64;

/// What masking made of a text under one set of kinds.
enum Outcome {
    /// Nothing to mask. The text, compared on lookup.
    Clean(Box<str>),
    /// Nothing to mask, for a text of at most 16 bytes: held in the entry as its length and two
    /// words ([`key_words`]), compared on lookup without a pointer to follow or a `memcmp` call
    /// (most remembered texts are this short: event types, outcomes, IP addresses).
    CleanShort(KeyWords),
    /// Its masked form and what masking it counted (see [`super::MaskCounts::counted`]).
    Masked {
        check: u64,
        masked: Box<str>,
        counted: Box<[(u8, u32)]>,
    },
}

/// Where a text's outcome is kept: the kinds and its [`TextKey`], or `None` for a text too long
/// to keep.
pub(super) struct Slot {
    enabled: KindSet,
    key: Option<TextKey>,
}

/// Slots of [`KeyFront`], a power of two: well above the distinct keys of a day's sources.
const KEY_FRONT_SLOTS: usize = 4096;

/// A key name as its length and two words of its bytes (see [`key_words`]).
#[derive(Clone, Copy, PartialEq, Eq)]
struct KeyWords {
    words: (u64, u64),
    len: u32,
}

/// A length no key has: an empty [`KeyFront`] slot.
const NO_KEY: u32 = u32::MAX;

/// Texts of up to this many bytes are held whole by their [`KeyWords`]; longer ones are compared
/// whole as well.
const HELD_BY_WORDS: usize = 16;

/// For a key (or any text) of at most 16 bytes, its length and two words that hold every byte
/// of it, so equal [`KeyWords`] mean equal texts; longer keys are compared whole as well.
fn key_words(key: &[u8]) -> KeyWords {
    let n = key.len();
    let word = |at: usize, width: usize| {
        let mut bytes = [0u8; 8];
        bytes[..width].copy_from_slice(&key[at..at + width]);
        u64::from_le_bytes(bytes)
    };
    let words = match n {
        8.. => (word(0, 8), word(n - 8, 8)),
        4..=7 => (word(0, 4), word(n - 4, 4)),
        1..=3 => (
            u64::from(key[0]) | (u64::from(key[n / 2]) << 8),
            u64::from(key[n - 1]),
        ),
        0 => (0, 0),
    };
    KeyWords {
        words,
        len: u32::try_from(n).unwrap_or(NO_KEY - 1),
    }
}

/// A direct-mapped table in front of the key facts: the keys of a source repeat in every record
/// and are few, so nearly every lookup is one slot read and two word compares, against a keyed
/// hash, a probe and a byte compare in the map. Its index is an unkeyed hash: keys crafted to
/// share a slot only evict each other and fall through to the keyed map.
struct KeyFront {
    /// Each slot's key (`len` [`NO_KEY`] when empty) and its facts.
    slots: Box<[(KeyWords, u8)]>,
    /// A slot's key when it is longer than 16 bytes, whose words do not hold all of it; apart,
    /// so that the slots stay small.
    long_keys: Box<[Option<Box<str>>]>,
}

impl KeyFront {
    fn new() -> KeyFront {
        let empty = KeyWords {
            words: (0, 0),
            len: NO_KEY,
        };
        KeyFront {
            slots: vec![(empty, 0); KEY_FRONT_SLOTS].into_boxed_slice(),
            long_keys: (0..KEY_FRONT_SLOTS).map(|_| None).collect(),
        }
    }

    fn index(words: &KeyWords) -> usize {
        let (a, b) = words.words;
        let mixed =
            (a ^ b.rotate_left(29) ^ u64::from(words.len)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (mixed >> (64 - KEY_FRONT_SLOTS.trailing_zeros())) as usize
    }

    fn get(&self, key: &str, words: &KeyWords) -> Option<u8> {
        let at = Self::index(words);
        let (held, facts) = &self.slots[at];
        if held != words {
            return None;
        }
        if key.len() > HELD_BY_WORDS && self.long_keys[at].as_deref() != Some(key) {
            return None;
        }
        Some(*facts)
    }

    fn put(&mut self, key: &str, words: KeyWords, facts: u8) {
        let at = Self::index(&words);
        self.slots[at] = (words, facts);
        self.long_keys[at] = (key.len() > HELD_BY_WORDS).then(|| key.into());
    }

    fn clear(&mut self) {
        for (words, _) in self.slots.iter_mut() {
            words.len = NO_KEY;
        }
    }
}

/// Tags of cheap clean texts seen once ([`Memory::remember_clean_if_seen`]), a power of two.
const SEEN_ONCE_SLOTS: usize = 4096;

/// What [`Memory::recall`] found.
pub(super) enum Recalled<'m> {
    Clean,
    Masked {
        masked: &'m str,
        counted: &'m [(u8, u32)],
    },
}

/// One thread's memory, borrowed for a whole record by [`with_memory`].
pub(super) struct Memory {
    owner: u64,
    /// Two independently seeded hashers: a text's [`TextKey`], and the check of a masked one.
    seeds: (Build, Build),
    /// See [`Memory::remember_clean_if_seen`].
    seen_once: Box<[u64]>,
    /// Keyed by [`TextKey`], already a keyed hash.
    texts: HashMap<TextKey, Outcome, BuildIdentity>,
    /// What is decided about a key name ([`super::KeyFacts`]), as its bits.
    key_facts: HashMap<Box<str>, u8, Build>,
    /// In front of `key_facts`, holding a subset of it.
    key_front: KeyFront,
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
        self.texts.clear();
        self.key_facts.clear();
        self.key_front.clear();
    }

    /// Room for one more entry: the memory is emptied when full.
    fn make_room(&mut self) {
        if self.texts.len() + self.key_facts.len() >= MAX_ENTRIES {
            self.clear();
        }
    }

    /// Where `text` masked under `enabled` is kept (hashed once for the lookup and the entry).
    ///
    /// Always inlined with its hashing, as [`Self::recall`] is (the hashing went out of line
    /// when unrelated code of the crate changed: ~10 instructions more per string).
    #[inline(always)]
    #[allow(clippy::manual_hash_one)] // spelt out so that the hashing is inlined here too
    pub(super) fn slot(&self, enabled: KindSet, text: &str) -> Slot {
        let key = (text.len() <= MAX_TEXT_LEN).then(|| {
            let mut hasher = self.seeds.0.build_hasher();
            (enabled, text).hash(&mut hasher);
            hasher.finish()
        });
        Slot { enabled, key }
    }

    /// The second hash of a masked text (see [`TextKey`]).
    fn check(&self, slot: &Slot, text: &str) -> u64 {
        self.seeds.1.hash_one((slot.enabled, text))
    }

    /// What masking `text` gave before in `slot`, if it is remembered.
    ///
    /// Always inlined: it runs once per string of every record, and the compiler's own choice
    /// flipped with unrelated changes elsewhere in the crate (out of line it cost ~40
    /// instructions more per string under callgrind).
    #[inline(always)]
    pub(super) fn recall(&self, slot: &Slot, text: &str) -> Option<Recalled<'_>> {
        match self.texts.get(&slot.key?)? {
            Outcome::Clean(clean) => (**clean == *text).then_some(Recalled::Clean),
            Outcome::CleanShort(words) => (text.len() <= HELD_BY_WORDS
                && *words == key_words(text.as_bytes()))
            .then_some(Recalled::Clean),
            Outcome::Masked {
                check,
                masked,
                counted,
            } => (*check == self.check(slot, text)).then_some(Recalled::Masked { masked, counted }),
        }
    }

    /// Remember that `text` is clean (in `slot`).
    pub(super) fn remember_clean(&mut self, slot: &Slot, text: &str) {
        if let Some(key) = slot.key {
            self.make_room();
            let outcome = if text.len() <= HELD_BY_WORDS {
                Outcome::CleanShort(key_words(text.as_bytes()))
            } else {
                Outcome::Clean(text.into())
            };
            self.texts.insert(key, outcome);
        }
    }

    /// Remember a clean text that was cheap to scan (short, or id-shaped: the anchor automaton
    /// did not read it) on its second sighting only: most such texts are unique (times, request
    /// ids) and would only churn the memory, while the repeated ones (a user's IP address, an
    /// account id, in the record and again in its ECS fields) are worth a lookup.
    pub(super) fn remember_clean_if_seen(&mut self, slot: &Slot, text: &str) {
        let Some(key) = slot.key else {
            return;
        };
        let at = (key as usize) & (SEEN_ONCE_SLOTS - 1);
        // The bits above the index; never 0, the empty slot.
        let tag = (key >> SEEN_ONCE_SLOTS.trailing_zeros()) | 1;
        if self.seen_once[at] == tag {
            self.remember_clean(slot, text);
        } else {
            self.seen_once[at] = tag;
        }
    }

    /// Remember that masking `text` (in `slot`) gives `masked`, counting `counted`.
    pub(super) fn remember_masked(
        &mut self,
        slot: &Slot,
        text: &str,
        masked: &str,
        counted: Box<[(u8, u32)]>,
    ) {
        if let Some(key) = slot.key {
            self.make_room();
            let check = self.check(slot, text);
            let masked = masked.into();
            let outcome = Outcome::Masked {
                check,
                masked,
                counted,
            };
            self.texts.insert(key, outcome);
        }
    }

    /// The facts about key name `key` ([`super::KeyFacts`]' bits), computed by `decide` once
    /// per key: records of a source repeat their keys, so one lookup replaces the several
    /// byte-level checks of each.
    ///
    /// Inlined into the walk up to the front's answer, which is nearly every key: the rest is out
    /// of line, as its frame (the map, the decision) cost more than a front hit itself.
    #[inline(always)]
    pub(super) fn key_facts(&mut self, key: &str, decide: impl FnOnce() -> u8) -> u8 {
        if key.len() <= MAX_TEXT_LEN {
            let words = key_words(key.as_bytes());
            if let Some(known) = self.key_front.get(key, &words) {
                return known;
            }
            return self.key_facts_behind_front(key, words, decide);
        }
        decide()
    }

    /// [`Self::key_facts`] for a key the front does not hold.
    #[inline(never)]
    fn key_facts_behind_front(
        &mut self,
        key: &str,
        words: KeyWords,
        decide: impl FnOnce() -> u8,
    ) -> u8 {
        let facts = match self.key_facts.get(key) {
            Some(known) => *known,
            None => {
                let facts = decide();
                self.make_room();
                self.key_facts.insert(key.into(), facts);
                facts
            }
        };
        self.key_front.put(key, words, facts);
        facts
    }
}

thread_local! {
    // Randomly seeded: texts come from outside, and must not be craftable into collisions that
    // turn each lookup into a long probe.
    static MEMORY: RefCell<Memory> = RefCell::new(Memory {
        owner: 0,
        seeds: (Build::default(), Build::default()),
        seen_once: vec![0; SEEN_ONCE_SLOTS].into_boxed_slice(),
        texts: HashMap::default(),
        key_facts: HashMap::default(),
        key_front: KeyFront::new(),
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

    /// The kinds the tests remember texts under.
    const KINDS: KindSet = 0b1011;

    fn is_known_clean(owner: u64, text: &str) -> bool {
        is_clean_in_slot_of(owner, text, text)
    }

    /// Whether `text`, looked up in the slot of `slot_of` (its own, or one it would share by a
    /// hash collision), is recalled as clean.
    fn is_clean_in_slot_of(owner: u64, slot_of: &str, text: &str) -> bool {
        with_memory(owner, |m| {
            let m = m.expect("memory free");
            let slot = m.slot(KINDS, slot_of);
            matches!(m.recall(&slot, text), Some(Recalled::Clean))
        })
    }

    /// A text of `len` bytes (`abc...`) and its variants with one byte changed, one per byte.
    fn with_one_byte_changed(len: usize) -> (String, Vec<String>) {
        let base: String = (0..len)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let variants = (0..len)
            .map(|at| {
                let mut bytes = base.clone().into_bytes();
                bytes[at] = b'Z';
                String::from_utf8(bytes).unwrap()
            })
            .collect();
        (base, variants)
    }

    fn remember_clean(owner: u64, text: &str) {
        with_memory(owner, |m| {
            m.map(|m| {
                let slot = m.slot(KINDS, text);
                m.remember_clean(&slot, text)
            })
        });
    }

    fn key_facts(owner: u64, key: &str, decide: impl FnOnce() -> u8) -> u8 {
        with_memory(owner, |m| m.map(|m| m.key_facts(key, decide))).expect("memory free")
    }

    #[test]
    fn a_cheap_clean_text_is_remembered_on_its_second_sighting() {
        let sight = |text: &str| {
            with_memory(6, |m| {
                m.map(|m| {
                    let slot = m.slot(KINDS, text);
                    m.remember_clean_if_seen(&slot, text)
                })
            })
        };
        sight("198.51.100.10");
        assert!(!is_known_clean(6, "198.51.100.10"), "not on the first");
        sight("198.51.100.10");
        assert!(is_known_clean(6, "198.51.100.10"), "on the second");
        // Another text sighted once in between is not remembered by the first's sightings.
        sight("203.0.113.66");
        assert!(!is_known_clean(6, "203.0.113.66"));
    }

    #[test]
    fn key_facts_are_told_apart_by_every_byte_of_the_key() {
        // Keys of every length up to past the two words, differing in one byte each; and two
        // long keys whose first and last 8 bytes and length agree (one front slot, told apart
        // by the whole key).
        let mut keys: Vec<String> = Vec::new();
        for len in 0..=20 {
            let (base, variants) = with_one_byte_changed(len);
            keys.push(base);
            keys.extend(variants);
        }
        keys.push("aaaaaaaaXbbbbbbbb".into());
        keys.push("aaaaaaaaYbbbbbbbb".into());
        let facts_of = |i: usize| (i % 251) as u8;
        for _ in 0..2 {
            for (i, key) in keys.iter().enumerate() {
                assert_eq!(key_facts(7, key, || facts_of(i)), facts_of(i), "{key:?}");
            }
        }
        // Remembered: a second decision would answer otherwise.
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(key_facts(7, key, || 255), facts_of(i), "{key:?}");
        }
    }

    #[test]
    fn a_clean_entry_vouches_only_for_its_own_text() {
        // Each text remembered clean, then recalled from its own slot with a text that differs
        // in one byte (as a text sharing its hash would be): never taken for clean. Short texts
        // are held as words, longer ones whole; lengths cover both and the boundary between.
        for len in 1..=24 {
            let (text, variants) = with_one_byte_changed(len);
            remember_clean(8, &text);
            assert!(is_known_clean(8, &text), "{text:?}");
            for other in variants.into_iter().chain([format!("{text}a")]) {
                assert!(
                    !is_clean_in_slot_of(8, &text, &other),
                    "{other:?} taken for {text:?}"
                );
            }
        }
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
            assert_eq!(
                key_facts(4, "password", || {
                    calls += 1;
                    2
                }),
                2
            );
        }
        assert_eq!(calls, 1);
        let mut facts_calls = 0;
        for _ in 0..3 {
            let facts = key_facts(5, "userId", || {
                facts_calls += 1;
                8
            });
            assert_eq!(facts, 8);
        }
        assert_eq!(facts_calls, 1, "a key's facts are decided once");
        // Key facts share the bound with the other entries.
        for i in 0..MAX_ENTRIES {
            remember_clean(5, &format!("value {i}"));
        }
        assert_eq!(key_facts(5, "userId", || 9), 9, "emptied when full");
    }
}
