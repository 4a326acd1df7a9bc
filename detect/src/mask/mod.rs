//! Masking of secrets and PII, applied before anything is stored, indexed, exported, logged or
//! sent.
//!
//! [`SecretMasker`] implements [`perimeter_model::Masker`]:
//! - `mask` runs the masking walk ([`walk`]) over `event.raw` and masks every ECS string
//!   ([`perimeter_model::Ecs::strings_mut`]). The walk first only checks (most records hold
//!   nothing to mask and are left as parsed); a record that needs masking is written out masked
//!   and parsed back, keys in their input order;
//! - `mask_value` runs the same walk over any JSON value (alert evidence, matched fields);
//! - `mask_text` masks free text (dead-letter excerpts of lines that are not even JSON).
//!
//! Two detectors decide what is secret:
//! - **key names** ([`keys`]): the value of a sensitive key (`password`, `client_secret`,
//!   `Authorization`, ...) is masked whatever it looks like, down to every leaf of an object or
//!   array; so is the `value` of a `{"name": "<sensitive>", "value": ...}` pair (Google Workspace
//!   parameters, M365 `ModifiedProperties`);
//! - **value patterns** ([`patterns`]): tokens, keys, card numbers, SSNs (and emails if enabled)
//!   found inside any string are replaced in place, the rest of the string is kept.
//!
//! Per-field rules ([`FieldRule`]) force an action on a field, add patterns to it, or exempt it
//! from key-name masking. What was masked is counted ([`MaskCounts`], [`MaskStats`]), never logged.
//!
//! Guarantees: masking is idempotent (masked output such as `[REDACTED:jwt]` or `hmac:...` is
//! never masked again, so hashes stay stable); it never panics on any input; records that need no
//! change are not copied; a value whose masked form cannot be rebuilt (nesting deeper than the
//! JSON parser allows) is replaced whole by `[REDACTED:unserializable]` (fail closed).

mod cache;
mod config;
mod encoded;
mod keys;
mod patterns;
mod walk;

use std::borrow::Cow;

use hmac::{Hmac, Mac};
use perimeter_model::{
    raw_from_serde, Event, MaskStats, Masker, RawJson, ECS_FIELDS, MAX_JSON_NESTING,
};
use serde_json::Value;
use sha2::Sha256;

pub use config::{
    Action, FieldAction, FieldRule, KeyConfig, MaskConfig, PatternConfig, PatternKind,
    GENERATED_KEY_FILE,
};

use crate::DetectError;
use cache::{Memory, Recalled};
use keys::KeyMatcher;
use patterns::{bit, is_masked, Found, KindSet, Patterns};

/// The key `hash` uses when `hmac_key` is not configured. Public in this source code, so only fit
/// for demos and tests: production must set `mask.hmac_key`.
const BUILTIN_HMAC_KEY: &[u8] = b"perimeter built-in mask key v1: set mask.hmac_key in production";

/// Per-kind counts of what was masked (the audit trail: counted, never logged in clear).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaskCounts {
    /// Values masked because of their key name or a per-field rule (leaves, so an object under
    /// `credentials` with 3 strings counts 3).
    pub by_key: u64,
    by_kind: [u64; PatternKind::COUNT],
}

impl MaskCounts {
    /// Occurrences of `kind` replaced.
    pub fn by_kind(&self, kind: PatternKind) -> u64 {
        self.by_kind[kind.index()]
    }

    /// Non-zero per-kind counts, e.g. for `fields_masked_total{kind}` metrics.
    pub fn kinds(&self) -> impl Iterator<Item = (PatternKind, u64)> + '_ {
        PatternKind::ALL
            .into_iter()
            .map(|k| (k, self.by_kind(k)))
            .filter(|(_, n)| *n > 0)
    }

    /// The totals the `Masker` trait reports.
    pub fn stats(&self) -> MaskStats {
        MaskStats {
            by_key: self.by_key,
            by_pattern: self.by_kind.iter().sum(),
        }
    }

    /// Index of `by_key` in [`Self::counted`].
    const BY_KEY: u8 = u8::MAX;

    /// The non-zero counts, compactly (kind index, or [`Self::BY_KEY`]; count): what masking a
    /// text counted, kept with its masked form in the memory ([`cache`]).
    fn counted(&self) -> Box<[(u8, u32)]> {
        let by_key = (self.by_key > 0).then_some((Self::BY_KEY, self.by_key));
        let by_kind = self
            .by_kind
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (i as u8, *n));
        by_key
            .into_iter()
            .chain(by_kind)
            .map(|(i, n)| (i, u32::try_from(n).unwrap_or(u32::MAX)))
            .collect()
    }

    /// Add counts given as [`Self::counted`] gives them.
    fn add_counted(&mut self, counted: &[(u8, u32)]) {
        for &(i, n) in counted {
            match i {
                Self::BY_KEY => self.by_key += u64::from(n),
                _ => self.by_kind[usize::from(i)] += u64::from(n),
            }
        }
    }

    /// Add another count into this one (per-batch totals).
    pub fn add(&mut self, other: &MaskCounts) {
        self.by_key += other.by_key;
        for (a, b) in self.by_kind.iter_mut().zip(other.by_kind) {
            *a += b;
        }
    }
}

/// What a per-field rule does, compiled.
#[derive(Debug, Clone, Copy, Default)]
struct CompiledRule {
    action: FieldAction,
    extra: KindSet,
}

/// The error for a `hash` of guessable values with the public built-in key; `setting` names it.
fn guessable_hash_refused(setting: String) -> DetectError {
    DetectError::Config {
        path: std::path::PathBuf::from(config::INLINE),
        message: format!(
            "{setting} = \"hash\" needs hmac_key (env:NAME or file:/path): with the public \
             built-in key these hashes are reversed by hashing guesses; use \"redact\" or set hmac_key"
        ),
    }
}

/// `hash` of values that may be guessable (passwords under sensitive keys, and the kinds of
/// [`PatternKind::holds_guessable_values`]) is refused with the public built-in key: anyone
/// with this source can hash a word list and find them again (`hmac:...` of `Summer2024!`).
/// A field rule's `hash` stays allowed unless the field is named as a secret: it names a field,
/// mostly an identifier (`user.email`), as the documented examples do.
fn refuse_guessable_hashes(
    key_action: Action,
    kind_actions: &[Action; PatternKind::COUNT],
) -> Result<(), DetectError> {
    let err = guessable_hash_refused;
    if key_action == Action::Hash {
        return Err(err("keys.action".into()));
    }
    match PatternKind::ALL
        .iter()
        .find(|k| k.holds_guessable_values() && kind_actions[k.index()] == Action::Hash)
    {
        Some(kind) => Err(err(format!("patterns.{}.action", kind.as_str()))),
        None => Ok(()),
    }
}

/// What the masking walk asks about an object key, all pure functions of its text under one
/// masker: decided together and remembered per key (see [`cache`]), since a source's records
/// repeat their keys.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyFacts(u8);

impl KeyFacts {
    const NEEDS_SCAN: u8 = 1;
    const SENSITIVE: u8 = 2;
    const PAIR_VALUE: u8 = 4;
    const ID: u8 = 8;
    const MASKED: u8 = 16;

    /// The key is scanned for value patterns ([`key_needs_scan`]).
    fn needs_scan(self) -> bool {
        self.0 & Self::NEEDS_SCAN != 0
    }

    /// The key names a secret ([`SecretMasker::key_is_sensitive`]).
    fn sensitive(self) -> bool {
        self.0 & Self::SENSITIVE != 0
    }

    /// The value side of a name/value pair ([`is_pair_value_key`]).
    fn pair_value(self) -> bool {
        self.0 & Self::PAIR_VALUE != 0
    }

    /// The key names an identifier ([`is_id_key`]).
    fn id(self) -> bool {
        self.0 & Self::ID != 0
    }

    /// The key is masking's output ([`is_masked`]).
    fn masked(self) -> bool {
        self.0 & Self::MASKED != 0
    }
}

/// Raw JSON paths of the field rules, one segment per node. Arrays are transparent.
#[derive(Debug, Clone, Default)]
struct TrieNode {
    children: Vec<(Box<str>, usize)>,
    rule: Option<CompiledRule>,
}

/// Node 0 is the root for `event.raw`; node 1 the root for output documents (`mask_value`): the
/// same children plus `raw` -> node 0, so `raw.actor.alternateId` also works there.
const RAW_ROOT: usize = 0;
/// Object keys shorter than this are not scanned for value patterns (see `walk`).
const MIN_SCANNED_KEY_LEN: usize = 11;
const DOC_ROOT: usize = 1;
/// What a value becomes when its masked form cannot be rebuilt (nesting deeper than the JSON
/// parser's limit): fail closed, nothing of it is kept.
const UNSERIALIZABLE: &str = "[REDACTED:unserializable]";

/// Masks secrets and PII in events, JSON values and text. Build once, share across threads.
#[derive(Debug)]
pub struct SecretMasker {
    keys: KeyMatcher,
    patterns: Patterns,
    key_action: Action,
    kind_actions: [Action; PatternKind::COUNT],
    enabled: KindSet,
    mac: Hmac<Sha256>,
    builtin_key: bool,
    hash_hex_chars: usize,
    partial_keep_chars: usize,
    ecs_rules: Vec<(&'static str, CompiledRule)>,
    trie: Vec<TrieNode>,
    /// False when no raw path rule exists: the walk then skips path tracking entirely.
    has_path_rules: bool,
    /// Identifies this masker's configuration in the per-thread [`cache`].
    instance: u64,
}

/// Source of [`SecretMasker::instance`] values.
static NEXT_INSTANCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl SecretMasker {
    /// Validate the config, resolve the HMAC key reference and compile the detectors.
    pub fn new(config: &MaskConfig) -> Result<SecretMasker, DetectError> {
        config.validate()?;
        let keys = KeyMatcher::new(&config.keys.extra_names, &config.keys.allow_names)?;
        let mut kind_actions = [Action::Redact; PatternKind::COUNT];
        let mut enabled: KindSet = 0;
        for kind in PatternKind::ALL {
            let over = config.patterns.get(&kind);
            kind_actions[kind.index()] =
                over.and_then(|o| o.action).unwrap_or(kind.default_action());
            if over
                .and_then(|o| o.enabled)
                .unwrap_or(kind.enabled_by_default())
            {
                enabled |= bit(kind);
            }
        }
        let usable = config
            .fields
            .iter()
            .flat_map(|f| &f.patterns)
            .fold(enabled, |acc, k| acc | bit(*k));
        let patterns = Patterns::new(usable)?;
        let (key_bytes, builtin_key) = match &config.hmac_key {
            Some(reference) => (resolve_secret(reference)?, false),
            None => (BUILTIN_HMAC_KEY.to_vec(), true),
        };
        if builtin_key {
            refuse_guessable_hashes(config.keys.action, &kind_actions)?;
            // A field rule that hashes a field named as a secret (`path = "password"`, `ssn`)
            // is the same guessable hash.
            if let Some(rule) = config.fields.iter().find(|r| {
                r.action == FieldAction::Hash
                    && r.path
                        .rsplit('.')
                        .next()
                        .is_some_and(|name| keys.is_sensitive(name))
            }) {
                return Err(guessable_hash_refused(format!(
                    "[[mask.fields]] path = \"{}\": action",
                    rule.path
                )));
            }
        }
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&key_bytes)
            .map_err(|e| DetectError::Other(format!("hmac key: {e}")))?;

        let mut ecs_rules = Vec::new();
        let mut trie = vec![TrieNode::default(), TrieNode::default()];
        for rule in &config.fields {
            let compiled = CompiledRule {
                action: rule.action,
                extra: rule.patterns.iter().fold(0, |acc, k| acc | bit(*k)),
            };
            let (path, raw_only) = match rule.path.strip_prefix("raw.") {
                Some(p) => (p, true),
                None => (rule.path.as_str(), false),
            };
            if !raw_only {
                if let Some(name) = ECS_FIELDS.iter().find(|f| **f == path) {
                    ecs_rules.retain(|(n, _)| n != name);
                    ecs_rules.push((*name, compiled));
                }
            }
            let mut node = RAW_ROOT;
            for seg in path.split('.') {
                node = match trie[node].children.iter().find(|(s, _)| &**s == seg) {
                    Some((_, child)) => *child,
                    None => {
                        trie.push(TrieNode::default());
                        let child = trie.len() - 1;
                        trie[node].children.push((seg.into(), child));
                        child
                    }
                };
            }
            trie[node].rule = Some(compiled);
        }
        let has_path_rules = !trie[RAW_ROOT].children.is_empty();
        let mut doc_children = trie[RAW_ROOT].children.clone();
        doc_children.push(("raw".into(), RAW_ROOT));
        trie[DOC_ROOT].children = doc_children;

        Ok(SecretMasker {
            instance: NEXT_INSTANCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            keys,
            patterns,
            key_action: config.keys.action,
            kind_actions,
            enabled,
            mac,
            builtin_key,
            hash_hex_chars: config.hash_hex_chars,
            partial_keep_chars: config.partial_keep_chars,
            ecs_rules,
            trie,
            has_path_rules,
        })
    }

    /// Keyed HMAC of a value, the same function `hash` uses (for stable pseudonymous entity keys):
    /// `hmac:` followed by `hash_hex_chars` hex characters.
    ///
    /// An email address is one mailbox whatever its case (`Dana.Kim@Acme.example` in one SaaS is
    /// `dana.kim@acme.example` in the next): its pseudonym is that of its lower-case form, so
    /// alert entities, masked fields and searches by address name one person. Other values (ids,
    /// tokens) keep their case: `00uAbC` and `00uabc` are different ids.
    pub fn pseudonymize(&self, value: &str) -> String {
        let folded;
        let value = if is_mixed_case_address(value) {
            folded = value.to_ascii_lowercase();
            &folded
        } else {
            value
        };
        let mut mac = self.mac.clone();
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut hex = hex::encode(&digest[..self.hash_hex_chars.div_ceil(2)]);
        hex.truncate(self.hash_hex_chars);
        format!("hmac:{hex}")
    }

    /// A 32-byte key for `purpose`: the full HMAC-SHA256 of `purpose` under the masking key
    /// (a pseudonym keeps only `hash_hex_chars` of it), as secret as that key and different per
    /// purpose.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// True when `hmac_key` was not configured and the public built-in key is in use (the binary
    /// should warn about it outside demos).
    pub fn uses_builtin_key(&self) -> bool {
        self.builtin_key
    }

    /// [`Masker::mask`] with per-kind counts added into `counts`.
    ///
    /// The raw record is parsed input that masking usually leaves alone, so it is only rebuilt
    /// when something in it must change: the masking walk first runs in check mode (no output,
    /// stops at the first change), and only a record that needs it is written out masked and
    /// parsed back (see [`walk`]).
    ///
    /// The check reads `event.raw` as it is; only a record that must change is taken through
    /// [`Event::raw_mut`], which fixes the event id from the content as received first. A clean
    /// record's id is the same whenever it is derived, so masking leaves that to whoever needs it.
    pub fn mask_counted(&self, event: &mut Event, counts: &mut MaskCounts) {
        cache::with_memory(self.instance, |mut mem| {
            let root = self.has_path_rules.then_some(RAW_ROOT);
            if let Some(known_clean) = self.check(mem.as_deref_mut(), &event.raw, root) {
                let raw = event.raw_mut();
                self.rewrite_raw(mem.as_deref_mut(), raw, root, known_clean, counts);
            }
            for (name, value) in event.ecs.strings_mut() {
                let rule = self
                    .ecs_rules
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, r)| *r)
                    .unwrap_or_default();
                match forced_action(rule.action) {
                    Some(action) => self.force_string(value, action, "field", counts),
                    None => {
                        let enabled = self.enabled | rule.extra;
                        if let Cow::Owned(masked) =
                            self.mask_str_in(mem.as_deref_mut(), value, enabled, counts)
                        {
                            *value = masked;
                        }
                    }
                }
            }
        })
    }

    /// Mask a raw record that is not part of an event (a record its normalizer refused, on its
    /// way to the dead letters): the same walk as [`Masker::mask`] gives `event.raw`, so values
    /// are masked for their key names and pairs too, not only for their shapes as in text.
    pub fn mask_record(&self, raw: &mut RawJson) -> MaskStats {
        let mut counts = MaskCounts::default();
        self.mask_raw(raw, self.has_path_rules.then_some(RAW_ROOT), &mut counts);
        counts.stats()
    }

    /// Masked text of input that is no record (a dead letter's excerpt). When it starts with a
    /// whole JSON document followed by more (`{...}}`: a record with a stray byte after it),
    /// that document is masked as a record ([`Self::mask_record`]: values under secret key
    /// names, key/value pairs, encoded values), which text masking alone cannot do; the text
    /// after it, and text that starts with no document, are masked as text.
    pub fn mask_excerpt(&self, text: &str) -> String {
        let start = text.len() - text.trim_start().len();
        let leading_document = matches!(text.as_bytes().get(start), Some(b'{' | b'['))
            .then(|| {
                let mut documents = serde_json::Deserializer::from_str(&text[start..])
                    .into_iter::<serde::de::IgnoredAny>();
                documents.next()?.ok()?;
                Some(start + documents.byte_offset())
            })
            .flatten()
            .filter(|&end| end < text.len());
        let Some(end) = leading_document else {
            return self.without_pair_secrets(text, self.mask_text(text));
        };
        let Ok(mut record) = sonic_rs::from_str::<RawJson>(&text[start..end]) else {
            return self.without_pair_secrets(text, self.mask_text(text));
        };
        self.mask_record(&mut record);
        let document = sonic_rs::to_string(&record).unwrap_or_else(|_| UNSERIALIZABLE.into());
        format!(
            "{}{}{}",
            &text[..start],
            self.mask_text(&document),
            self.mask_text(&text[end..])
        )
    }

    /// `masked` (the masked form of `text`, broken JSON) with the values of `text`'s secret
    /// pairs (`"password": "..."`, by key name) masked where they are repeated: text masking
    /// masks the pair itself, not the same password elsewhere (`"note": "typed it twice"`), as
    /// the masking of a whole record does (see [`walk::mask_repeated_secrets`]).
    fn without_pair_secrets(&self, text: &str, mut masked: String) -> String {
        static PAIR: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
            regex::Regex::new(r#""((?:[^"\\]|\\.)+)"\s*:\s*"((?:[^"\\]|\\.)+)""#)
                .expect("a valid pattern")
        });
        for pair in PAIR.captures_iter(text) {
            let (key, value) = (&pair[1], &pair[2]);
            if walk::may_repeat_elsewhere(value)
                && !is_masked(value)
                && self.key_is_sensitive(None, key)
            {
                let replacement = self.replacement(self.key_action, "key", value);
                for form in walk::written_forms(value) {
                    masked = masked.replace(&form, &replacement);
                }
            }
        }
        masked
    }

    /// Whether masking `raw` would change it.
    pub fn raw_needs_masking(&self, raw: &RawJson) -> bool {
        let root = self.has_path_rules.then_some(RAW_ROOT);
        cache::with_memory(self.instance, |mem| self.check(mem, raw, root).is_some())
    }

    /// Mask a record in place, rebuilding it only when something changes.
    fn mask_raw(&self, raw: &mut RawJson, root: Option<usize>, counts: &mut MaskCounts) {
        cache::with_memory(self.instance, |mut mem| {
            if let Some(known_clean) = self.check(mem.as_deref_mut(), raw, root) {
                self.rewrite_raw(mem, raw, root, known_clean, counts);
            }
        })
    }

    /// The cheap check mode: `None` when masking `raw` changes nothing, else how many leading
    /// scan sites are clean (the write mode skips them).
    fn check(&self, mem: Option<&mut Memory>, raw: &RawJson, root: Option<usize>) -> Option<u64> {
        walk::MaskWalk::check(self, mem, &mut MaskCounts::default()).check_run(raw, root)
    }

    /// Rebuild a record that [`Self::check`] found needing masking.
    fn rewrite_raw(
        &self,
        mem: Option<&mut Memory>,
        raw: &mut RawJson,
        root: Option<usize>,
        known_clean: u64,
        counts: &mut MaskCounts,
    ) {
        if let Some(masked) = self.write(mem, raw, root, known_clean, counts, |text| {
            sonic_rs::from_slice::<RawJson>(text).ok()
        }) {
            // The walk writes valid JSON; should parsing it ever fail, nothing unmasked may remain.
            *raw = masked.unwrap_or_else(|| RawJson::from(UNSERIALIZABLE));
        }
    }

    /// `None` when masking `raw` changes nothing; otherwise `parse` applied to the masked text.
    /// The cheap check mode runs first; the write mode only for records that need it.
    fn masked_text<T>(
        &self,
        raw: &RawJson,
        root: Option<usize>,
        counts: &mut MaskCounts,
        parse: impl FnOnce(&[u8]) -> T,
    ) -> Option<T> {
        cache::with_memory(self.instance, |mut mem| {
            let known_clean = self.check(mem.as_deref_mut(), raw, root)?;
            self.write(mem, raw, root, known_clean, counts, parse)
        })
    }

    /// The write mode: `parse` applied to the masked text, `None` if nothing changed after all.
    fn write<T>(
        &self,
        mem: Option<&mut Memory>,
        raw: &RawJson,
        root: Option<usize>,
        known_clean: u64,
        counts: &mut MaskCounts,
        parse: impl FnOnce(&[u8]) -> T,
    ) -> Option<T> {
        walk::with_write_buffer(|text| {
            let mut written = MaskCounts::default();
            let (changed, key_secrets) =
                walk::MaskWalk::write(self, mem, text, &mut written, known_clean)
                    .run_write(raw, root);
            if !key_secrets.is_empty() {
                written.by_key += walk::mask_repeated_secrets(text, &key_secrets);
            }
            changed.then(|| {
                counts.add(&written);
                parse(text)
            })
        })
    }

    /// [`Masker::mask_value`] with per-kind counts added into `counts`.
    pub fn mask_value_counted(&self, value: &mut Value, counts: &mut MaskCounts) {
        let raw = raw_from_serde(value);
        let root = self.has_path_rules.then_some(DOC_ROOT);
        if let Some(masked) = self.masked_text(&raw, root, counts, |text| {
            serde_json::from_slice::<Value>(text).ok()
        }) {
            *value = masked.unwrap_or_else(|| Value::from(UNSERIALIZABLE));
        }
    }

    /// [`Masker::mask_text`] with per-kind counts added into `counts`.
    pub fn mask_text_counted(&self, text: &str, counts: &mut MaskCounts) -> String {
        match self.mask_str(text, self.enabled, counts) {
            Cow::Borrowed(s) => s.to_string(),
            Cow::Owned(s) => s,
        }
    }

    /// Follow a key (which may itself contain dots) from `node` in the path trie.
    fn child_node(&self, node: usize, key: &str) -> Option<usize> {
        let mut cur = node;
        for seg in key.split('.') {
            cur = self.trie[cur].children.iter().find(|(s, _)| &**s == seg)?.1;
        }
        Some(cur)
    }

    fn force_string(&self, s: &mut String, action: Action, label: &str, counts: &mut MaskCounts) {
        if is_masked(s) {
            return;
        }
        counts.by_key += 1;
        *s = self.replacement(action, label, s);
    }

    /// Replace every pattern match in `text`; borrowed back when nothing matched.
    fn mask_str<'a>(
        &self,
        text: &'a str,
        enabled: KindSet,
        counts: &mut MaskCounts,
    ) -> Cow<'a, str> {
        cache::with_memory(self.instance, |mem| {
            self.mask_str_in(mem, text, enabled, counts)
        })
    }

    /// [`Self::mask_str`] with this thread's memory (see [`cache`]) already borrowed: a text
    /// masked before under the same kinds is not scanned again; its outcome (clean, or its masked
    /// form and counts) is taken from the memory.
    fn mask_str_in<'a>(
        &self,
        mem: Option<&mut Memory>,
        text: &'a str,
        enabled: KindSet,
        counts: &mut MaskCounts,
    ) -> Cow<'a, str> {
        let Some(mem) = mem else {
            return self.scan_str(text, enabled, counts).0;
        };
        let slot = mem.slot(enabled, text);
        match mem.recall(&slot, text) {
            Some(Recalled::Clean) => return Cow::Borrowed(text),
            Some(Recalled::Masked { masked, counted }) => {
                counts.add_counted(counted);
                return Cow::Owned(masked.to_string());
            }
            None => {}
        }
        let mut found = MaskCounts::default();
        let (masked, scanned) = self.scan_str(text, enabled, &mut found);
        counts.add(&found);
        match &masked {
            Cow::Borrowed(_) if scanned => mem.remember_clean(&slot, text),
            Cow::Borrowed(_) => mem.remember_clean_if_seen(&slot, text),
            Cow::Owned(m) => mem.remember_masked(&slot, text, m, found.counted()),
        }
        masked
    }

    /// [`Self::mask_str`] without the memory; also whether the anchor automaton read the text.
    fn scan_str<'a>(
        &self,
        text: &'a str,
        enabled: KindSet,
        counts: &mut MaskCounts,
    ) -> (Cow<'a, str>, bool) {
        // Whether a decoded copy of `text` was scanned (then worth remembering as clean).
        let mut decoded = false;
        // JSON text may come with the line break (or spaces) it was logged with.
        let mut current = match text.trim_start().as_bytes().first() {
            Some(b'{' | b'[') => self.mask_json_text(text, counts),
            // Base64 of a JSON document, or padded base64 of other text (`cGFzc3dvcmQ9...`).
            // Ids and hashes are neither (most have no `=` at the end, the rest decode to bytes
            // that are no text), so this costs next to nothing on them.
            // Also base64 of a PEM block without padding (`LS0tLS1CRUdJTi` is `-----BEGIN`:
            // a kubeconfig's `client-key-data`).
            _ if is_base64_json(text)
                || is_padded_base64(text)
                || text.starts_with("LS0tLS1CRUdJTi") =>
            {
                match self.mask_base64(text, enabled, counts) {
                    (Some(masked), _) => return (Cow::Owned(masked), true),
                    (None, scanned) => {
                        decoded = scanned;
                        Cow::Borrowed(text)
                    }
                }
            }
            _ => Cow::Borrowed(text),
        };
        let seen = self
            .patterns
            .candidates_scanned(&current, enabled, &self.keys);
        // In text with escapes, an AWS key id is masked only after the decoded pass: a secret key
        // after it behind an escaped separator (`AKIA...%0AwJalr...`, `AKIA...\u0026s=wJalr...`)
        // is found there by the key id before it, which masking it first would hide.
        let deferred = if seen.escaped {
            seen.kinds & bit(PatternKind::AwsAccessKeyId)
        } else {
            0
        };
        if seen.kinds & !deferred != 0 {
            current = self.replace_found(current, seen.kinds & !deferred, counts);
        }
        if !seen.escaped {
            return (current, seen.scanned || decoded);
        }
        let (mut current, unescaped) = self.mask_encoded(current, enabled, counts);
        if deferred != 0 {
            current = self.replace_found(current, deferred, counts);
        }
        (current, seen.scanned || decoded || unescaped)
    }

    /// Replace what the patterns of `candidates` find in `text`, one kind after the other.
    fn replace_found<'a>(
        &self,
        mut current: Cow<'a, str>,
        candidates: KindSet,
        counts: &mut MaskCounts,
    ) -> Cow<'a, str> {
        let mut found: Vec<Found> = Vec::new();
        for kind in PatternKind::ALL {
            if candidates & bit(kind) == 0 {
                continue;
            }
            found.clear();
            self.patterns.find(kind, &current, &self.keys, &mut found);
            if found.is_empty() {
                continue;
            }
            counts.by_kind[kind.index()] += found.len() as u64;
            let action = self.kind_actions[kind.index()];
            let mut out = String::with_capacity(current.len());
            let mut last = 0;
            for f in &found {
                out.push_str(&current[last..f.start]);
                out.push_str(&self.replacement(action, kind.as_str(), &current[f.start..f.end]));
                last = f.end;
            }
            out.push_str(&current[last..]);
            current = Cow::Owned(out);
        }
        current
    }

    /// Secrets inside the percent-encoded or `\u00XX`-escaped parts of `text` ([`encoded`]):
    /// found in a decoded copy, replaced in the encoded text. Also whether `text` was decoded.
    fn mask_encoded<'a>(
        &self,
        text: Cow<'a, str>,
        enabled: KindSet,
        counts: &mut MaskCounts,
    ) -> (Cow<'a, str>, bool) {
        // (range in `text`, kind, the decoded secret) for every find at every level.
        let mut secrets: Vec<(std::ops::Range<usize>, PatternKind, String)> = Vec::new();
        let mut found: Vec<Found> = Vec::new();
        let levels = encoded::levels(&text);
        let decoded_any = !levels.is_empty();
        for decoded in levels {
            let candidates = self
                .patterns
                .candidates_scanned(&decoded.text, enabled, &self.keys)
                .kinds;
            found.clear();
            for kind in PatternKind::ALL {
                if candidates & bit(kind) != 0 {
                    self.patterns
                        .find(kind, &decoded.text, &self.keys, &mut found);
                }
            }
            secrets.extend(found.iter().map(|f| {
                let secret = decoded.text[f.start..f.end].to_string();
                (decoded.encoded_range(f.start, f.end), f.kind, secret)
            }));
        }
        if secrets.is_empty() {
            return (text, decoded_any);
        }
        // In text order, the longer of two finds starting together first; a find overlapping
        // one already replaced is inside it (or the same secret seen at another level).
        secrets.sort_by_key(|(r, _, _)| (r.start, std::cmp::Reverse(r.end)));
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for (range, kind, secret) in &secrets {
            if range.start < last {
                continue;
            }
            counts.by_kind[kind.index()] += 1;
            out.push_str(&text[last..range.start]);
            out.push_str(&self.replacement(self.kind_actions[kind.index()], kind.as_str(), secret));
            last = range.end;
        }
        out.push_str(&text[last..]);
        (Cow::Owned(out), true)
    }

    /// A string that is itself a JSON document (the `requestbody` of Azure activity logs, a
    /// command's arguments logged as text: `"[\"docker\",\"login\",\"-p\",\"...\"]"`) is
    /// walked like a record, so it is masked as the same value in a record is: the value patterns
    /// read it as text and see no structure there (no `{"name": "DB_PASSWORD", "value": "..."}`
    /// pair, no argument list). Walked before the patterns run over the text, whose replacements
    /// may leave it no longer JSON. Written back compact, and only when something in it was
    /// masked. A text that is no JSON fails the parse at its first bytes mostly (`{a=b}`,
    /// `[1] note`); a clean one is remembered as any clean text ([`Self::mask_str_in`]).
    fn mask_json_text<'a>(&self, text: &'a str, counts: &mut MaskCounts) -> Cow<'a, str> {
        let document = text.trim();
        let framed = matches!(
            (document.as_bytes().first(), document.as_bytes().last()),
            (Some(b'{'), Some(b'}')) | (Some(b'['), Some(b']'))
        );
        // The parser and the walk recurse once per level, and JSON text may hold JSON text in
        // its strings: past the input's nesting limit, or a few documents deep, the text is
        // masked as text (its patterns), not walked, so `[[[[...` in a field is no stack overflow.
        thread_local! {
            static DOCUMENTS_DEEP: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
        }
        const MAX_DOCUMENTS_DEEP: u8 = 4;
        let deep = DOCUMENTS_DEEP.with(|d| d.get());
        if !framed
            || deep >= MAX_DOCUMENTS_DEEP
            || perimeter_model::json_nesting_exceeds(document.as_bytes(), MAX_JSON_NESTING)
        {
            return Cow::Borrowed(text);
        }
        let Ok(raw) = sonic_rs::from_str::<RawJson>(document) else {
            return Cow::Borrowed(text);
        };
        DOCUMENTS_DEEP.with(|d| d.set(deep + 1));
        let masked = self.masked_text(&raw, None, counts, |t| String::from_utf8(t.to_vec()).ok());
        DOCUMENTS_DEEP.with(|d| d.set(deep));
        match masked {
            None => Cow::Borrowed(text),
            // The whitespace around the document stays: a JSON log line masked lost its line
            // end, and the next log line was glued to it (QA).
            Some(Some(masked)) if document.len() == text.len() => Cow::Owned(masked),
            Some(Some(masked)) => {
                let lead = text.len() - text.trim_start().len();
                let trail = text.trim_end().len();
                Cow::Owned(format!("{}{masked}{}", &text[..lead], &text[trail..]))
            }
            // The walk writes valid UTF-8; should it not, nothing unmasked may remain.
            Some(None) => Cow::Borrowed(UNSERIALIZABLE),
        }
    }

    /// A value that is a JSON document in base64 (`eyJwYXNzd29yZCI6...`: a message body, a
    /// webhook payload or a state parameter passed on as it came, see [`is_base64_json`]) or
    /// other text in padded base64 ([`is_padded_base64`]), masked decoded and written back in
    /// base64 of the same alphabet; `None` when it is no such value or nothing in it was
    /// masked. The value patterns cannot read base64. Also whether the decoded text was scanned.
    fn mask_base64(
        &self,
        text: &str,
        enabled: KindSet,
        counts: &mut MaskCounts,
    ) -> (Option<String>, bool) {
        use base64::engine::general_purpose::{
            STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
        };
        use base64::Engine as _;
        let engine = match (text.contains(['-', '_']), text.ends_with('=')) {
            (false, true) => &STANDARD,
            (false, false) => &STANDARD_NO_PAD,
            (true, true) => &URL_SAFE,
            (true, false) => &URL_SAFE_NO_PAD,
        };
        let Some(decoded) = engine
            .decode(text)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
        else {
            return (None, false);
        };
        // Text, not bytes that happen to be valid UTF-8.
        if decoded
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        {
            return (None, false);
        }
        let mut inner = MaskCounts::default();
        // Each level of base64 is shorter: a value in base64 of base64 ends too.
        let (masked, _) = self.scan_str(&decoded, enabled, &mut inner);
        if inner == MaskCounts::default() {
            return (None, true);
        }
        counts.add(&inner);
        (Some(engine.encode(masked.as_bytes())), true)
    }

    /// Whether `key` names a secret (remembered per thread, see [`cache`]).
    ///
    /// Masking's own markers are not read as words: `[REDACTED:github_token]` in a key or a
    /// pair's name says a secret was there, not that the value is one (and reading it so would
    /// make masking the output again change it).
    fn key_is_sensitive(&self, mem: Option<&mut Memory>, key: &str) -> bool {
        match mem {
            // Remembered with the key's other facts: a repeated name (a pair's `name`, a header)
            // costs a slot of the memory's front, less than the pre-check below reading its
            // bytes.
            Some(mem) => self.key_facts(Some(mem), key).sensitive(),
            // Most keys hold no start of a sensitive word at all: they are rejected on their
            // bytes. (A key with a marker in it is judged without the marker, whose removal can
            // join two halves of a word: the pre-check passes those on.)
            None => {
                self.keys.may_be_sensitive(key)
                    && self.keys.is_sensitive(&without_redaction_markers(key))
            }
        }
    }

    /// The [`KeyFacts`] of object key `key` (remembered per thread, see [`cache`]).
    #[inline(always)]
    fn key_facts(&self, mem: Option<&mut Memory>, key: &str) -> KeyFacts {
        let decide = || {
            let facts = [
                (key_needs_scan(key), KeyFacts::NEEDS_SCAN),
                (self.key_is_sensitive(None, key), KeyFacts::SENSITIVE),
                (is_pair_value_key(key), KeyFacts::PAIR_VALUE),
                (is_id_key(key), KeyFacts::ID),
                (is_masked(key), KeyFacts::MASKED),
            ];
            facts
                .into_iter()
                .filter(|(holds, _)| *holds)
                .fold(0, |bits, (_, bit)| bits | bit)
        };
        KeyFacts(match mem {
            Some(mem) => mem.key_facts(key, decide),
            None => decide(),
        })
    }

    fn replacement(&self, action: Action, label: &str, secret: &str) -> String {
        match action {
            Action::Redact => format!("[REDACTED:{label}]"),
            // An address with its `@` escaped for HTML is the same mailbox, with the same
            // pseudonym.
            Action::Hash if label == PatternKind::Email.as_str() && secret.contains("&#") => {
                self.pseudonymize(&unescape_at_sign(secret))
            }
            Action::Hash => self.pseudonymize(secret),
            Action::Partial => {
                let num_chars = secret.chars().count();
                let mut out = String::from("****");
                if num_chars > self.partial_keep_chars {
                    out.extend(secret.chars().skip(num_chars - self.partial_keep_chars));
                }
                out
            }
        }
    }
}

/// `address` with an `@` escaped for HTML (`&#64;`, `&#x40;`) written plain.
fn unescape_at_sign(address: &str) -> String {
    address
        .replace("&#64;", "@")
        .replace("&#x40;", "@")
        .replace("&#X40;", "@")
}

/// An email address (one `@`, a dotted domain, no spaces) with an upper-case ASCII letter.
fn is_mixed_case_address(value: &str) -> bool {
    let Some((local, domain)) = value.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.contains('@')
        && !value.bytes().any(|b| b.is_ascii_whitespace())
        && value.bytes().any(|b| b.is_ascii_uppercase())
}

/// Whether `text` opens like a JSON document in base64: `{"`, `{ "`, `[{"`, `[{ ` encoded (a
/// JWT's parts are base64 too, but joined by dots).
fn is_base64_json(text: &str) -> bool {
    text.len() >= 16
        // `{"`, `{ "`, `[{"`, `[{ `, `["` (an argument list), `[ "`.
        && ["eyJ", "eyAi", "W3si", "W3sg", "WyJ", "WyAi"]
            .iter()
            .any(|p| text.starts_with(p))
}

/// Whether `text` is whole padded base64 (standard or URL-safe alphabet) of 12 bytes or more.
fn is_padded_base64(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 16 && bytes.len().is_multiple_of(4) && bytes.ends_with(b"=") && {
        let body = bytes
            .strip_suffix(b"==")
            .unwrap_or(&bytes[..bytes.len() - 1]);
        body.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_'))
    }
}

/// `text` without the `[REDACTED:<kind>]` markers masking writes.
fn without_redaction_markers(text: &str) -> Cow<'_, str> {
    const OPEN: &str = "[REDACTED:";
    if !text.contains(OPEN) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(OPEN) {
        out.push_str(&rest[..i]);
        let after = &rest[i + OPEN.len()..];
        let label_len = after
            .bytes()
            .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
            .count();
        if after.as_bytes().get(label_len) == Some(&b']') {
            rest = &after[label_len + 1..];
        } else {
            out.push_str(OPEN);
            rest = after;
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

impl Default for SecretMasker {
    /// The masker for [`MaskConfig::default`] (built-in HMAC key: not for production).
    fn default() -> Self {
        SecretMasker::new(&MaskConfig::default()).expect("the default mask config is valid")
    }
}

impl Masker for SecretMasker {
    fn mask(&self, event: &mut Event) -> MaskStats {
        let mut counts = MaskCounts::default();
        self.mask_counted(event, &mut counts);
        counts.stats()
    }

    fn mask_text(&self, text: &str) -> String {
        self.mask_text_counted(text, &mut MaskCounts::default())
    }

    fn mask_value(&self, value: &mut Value) -> MaskStats {
        let mut counts = MaskCounts::default();
        self.mask_value_counted(value, &mut counts);
        counts.stats()
    }
}

/// A JSON number's digits when they form a card number (13-19 digits, a card network's leading
/// digit, Luhn-valid).
fn card_number_text(v: u64) -> Option<String> {
    if !(1_000_000_000_000..=9_999_999_999_999_999_999).contains(&v) {
        return None;
    }
    let mut lead = v;
    while lead >= 10 {
        lead /= 10;
    }
    if !(2..=6).contains(&lead) {
        return None;
    }
    let text = v.to_string();
    patterns::is_card_number(&text).then_some(text)
}

/// Whether an object key is scanned for value patterns: keys can carry secrets too
/// (`{"ghp_...": 1}`, an email as a map key). Every pattern needs 11+ characters except short
/// emails and `k=v` pairs, and every token shape has a digit, `_`, `-`, `.` or an upper-case run,
/// so the usual short or camelCase keys skip the scan.
fn key_needs_scan(key: &str) -> bool {
    key.len() >= MIN_SCANNED_KEY_LEN && !is_plain_identifier(key)
}

fn forced_action(action: FieldAction) -> Option<Action> {
    match action {
        FieldAction::Redact => Some(Action::Redact),
        FieldAction::Hash => Some(Action::Hash),
        FieldAction::Partial => Some(Action::Partial),
        FieldAction::Scan | FieldAction::Keep => None,
    }
}

/// A camelCase / PascalCase name: letters only, never four upper-case letters in a row
/// (`authenticationContext`, `geographicalContext`).
fn is_plain_identifier(key: &str) -> bool {
    let mut upper_run = 0;
    for b in key.bytes() {
        if !b.is_ascii_alphabetic() {
            return false;
        }
        upper_run = if b.is_ascii_uppercase() {
            upper_run + 1
        } else {
            0
        };
        if upper_run >= 4 {
            return false;
        }
    }
    true
}

/// `PWD` holding a path is the shell's working directory (sudo's log line, a process's
/// environment), not a password.
pub(crate) fn is_working_directory(key: &str, value: Option<&str>) -> bool {
    key.eq_ignore_ascii_case("pwd") && value.is_some_and(|v| v.starts_with(['/', '~']))
}

/// A number under `input_tokens`, `max_tokens`, `totalTokens`: a count of language-model
/// tokens (AI services' usage records), not a credential.
pub(crate) fn is_token_count(key: &str) -> bool {
    let k = key.as_bytes();
    k.len() > "tokens".len() && k[k.len() - 6..].eq_ignore_ascii_case(b"tokens")
}

/// A key naming an identifier, or a list of them: `id`, `userId`, `user_id`, `ID`,
/// `repository_ids`, `instanceIds`, Google Workspace's `uniqueQualifier`, a device's `imei`
/// (Luhn-checked by design, so it would pass for a card number).
pub(crate) fn is_id_key(key: &str) -> bool {
    key.eq_ignore_ascii_case("id")
        || key.ends_with("Id")
        || key.ends_with("ID")
        || key.ends_with("_id")
        || key.ends_with("Ids")
        || key.ends_with("IDs")
        || key.ends_with("_ids")
        || key.eq_ignore_ascii_case("uniqueQualifier")
        || key.eq_ignore_ascii_case("imei")
}

/// Whether the name/value pair object `map` names an identifier (`{"name": "order_id",
/// "value": ...}`): its value is one, as under that key.
pub(crate) fn pair_names_an_id(map: &sonic_rs::Object) -> bool {
    use sonic_rs::JsonValueTrait;
    map.iter()
        .any(|(k, v)| is_pair_name_key(k) && v.as_str().is_some_and(is_id_key))
}

/// `name` of a name/value pair object (`{"name": "password", "value": "..."}`).
fn is_pair_name_key(key: &str) -> bool {
    // `ParameterKey` / `ParameterValue`: CloudFormation stack parameters in CloudTrail;
    // `fieldName` / `changedFrom` / `changedTo`: Atlassian's audit records of a changed field;
    // `field`/`attribute` with `from`/`to` or `new_value`: other vendors' change records.
    matches!(
        key,
        "name"
            | "Name"
            | "key"
            | "Key"
            | "parameterKey"
            | "ParameterKey"
            | "fieldName"
            | "FieldName"
            | "field"
            | "Field"
            | "attribute"
            | "Attribute"
            | "attributeName"
            | "param"
            | "parameter"
            | "Parameter"
            | "parameterName"
            | "property"
            | "propertyName"
            | "setting"
            | "settingName"
            // Elastic Beanstalk's option settings in CloudTrail, headers and variables held as
            // objects, a 1Password item's fields.
            | "optionName"
            | "OptionName"
            | "headerName"
            | "HeaderName"
            | "variable"
            | "Variable"
            | "variableName"
            | "label"
    )
}

/// The value side of a name/value pair object.
fn is_pair_value_key(key: &str) -> bool {
    matches!(
        key,
        "value"
            | "Value"
            | "values"
            | "Values"
            | "newValue"
            | "NewValue"
            | "oldValue"
            | "OldValue"
            | "multiValue"
            | "intValue"
            | "multiIntValue"
            | "multiMessageValue"
            | "messageValue"
            | "parameterValue"
            | "ParameterValue"
            | "changedFrom"
            | "changedTo"
            | "new_value"
            | "old_value"
            | "newValues"
            | "oldValues"
            | "previousValue"
            | "currentValue"
            | "from"
            | "to"
            | "val"
            | "before"
            | "after"
            // PagerDuty's audit records (`{"name": "secret", "before_value": ...}`: a deleted
            // or rotated secret, often still valid), Slack's `previous_value`.
            | "before_value"
            | "beforeValue"
            | "after_value"
            | "afterValue"
            | "previous_value"
            | "current_value"
            | "headerValue"
            | "HeaderValue"
            // Jira's changelog items (`{"field": "password", "fromString": ...}`).
            | "fromString"
            | "toString"
            // A variable's default (`{"name": "db_password", "default": ...}`).
            | "default"
            | "defaultValue"
            | "DefaultValue"
    )
}

/// Resolve the `env:NAME` / `file:/path` reference of `hmac_key`.
fn resolve_secret(reference: &str) -> Result<Vec<u8>, DetectError> {
    use perimeter_model::SecretError;
    let config_err = |message: String| DetectError::Config {
        path: config::INLINE.into(),
        message,
    };
    perimeter_model::resolve_secret(reference).map_err(|e| match e {
        SecretError::EnvUnset(name) => config_err(format!(
            // Not `hmac_key: environment ...`: the binary masks what it prints, and that reads
            // as a key and its value.
            "the environment variable `{name}` that hmac_key names is not set (or not UTF-8)"
        )),
        SecretError::File { path, cause } => DetectError::Io { path, cause },
        SecretError::NotAReference => {
            config_err("hmac_key must be a secret reference `env:NAME` or `file:/path`".into())
        }
        SecretError::Empty(_) => {
            config_err(format!("hmac_key `{reference}` resolves to an empty key"))
        }
    })
}

#[cfg(test)]
mod tests;
