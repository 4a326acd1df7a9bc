//! The one masking walk over a parsed record ([`RawJson`]), in two modes:
//! - **check**: decide whether masking would change anything, stopping at the first change and
//!   writing nothing (most records are clean, so this is the usual case and must be cheap);
//! - **write**: emit the masked record as JSON text (keys in input order), which the caller
//!   parses back into a record. Parsed records are arena DOMs that are read-only in practice, so
//!   rebuilding from text is the cheap way to change a few leaves.
//!
//! Both modes run the same decisions, so "check said clean" can never disagree with what writing
//! would have masked (a proptest compares them).

use std::borrow::Cow;

use perimeter_model::raw_prelude::*;
use perimeter_model::{write_json_str, RawJson};

use super::cache::Memory;
use super::patterns::{
    bit, is_aws_key_id, is_aws_secret_shape, is_block_indicator, is_credential_client,
    is_glued_password_client, is_masked, is_secret_source, is_status_word, names_a_reminder,
    names_a_seed_option, KindSet,
};

use super::{
    card_number_text, forced_action, is_pair_name_key, is_token_count, is_working_directory,
    pair_names_an_id, Action, FieldAction, KeyFacts, MaskCounts, PatternKind, SecretMasker,
};

pub(super) struct MaskWalk<'a> {
    masker: &'a SecretMasker,
    /// This thread's memory of clean texts and key verdicts, borrowed for the whole walk.
    mem: Option<&'a mut Memory>,
    /// `None`: check mode.
    out: Option<&'a mut Vec<u8>>,
    counts: &'a mut MaskCounts,
    changed: bool,
    /// Pattern scan sites (strings, scanned keys) visited so far, in walk order.
    site: u64,
    /// Check mode: the scan sites before the first change, all clean.
    clean_before_change: u64,
    /// Write mode: this many leading scan sites are known clean (from the check) and are
    /// copied without scanning them again.
    known_clean: u64,
    /// The value-like secret whose settings the object walked next holds
    /// ([`Self::force_key_value`]); taken by that object.
    settings_of: Option<String>,
    /// The object walked next is a changed setting's old or new value whose setting names a
    /// secret ([`Self::setting_names_secret`]); taken by that object.
    setting_value_secret: bool,
    /// Write mode: the values masked for their key name (clear, as written masked) that are
    /// long enough to be looked for elsewhere in the record ([`Self::run_write`]).
    key_secrets: Vec<(String, String)>,
}

impl<'a> MaskWalk<'a> {
    /// Check mode: [`Self::run`] answers whether masking changes anything, writing nothing.
    pub(super) fn check(
        masker: &'a SecretMasker,
        mem: Option<&'a mut Memory>,
        counts: &'a mut MaskCounts,
    ) -> MaskWalk<'a> {
        MaskWalk {
            masker,
            mem,
            out: None,
            counts,
            changed: false,
            site: 0,
            clean_before_change: 0,
            known_clean: 0,
            settings_of: None,
            setting_value_secret: false,
            key_secrets: Vec::new(),
        }
    }

    /// Write mode. `known_clean`: leading scan sites a check of the same record found clean
    /// ([`Self::check_run`]); they are copied without scanning them again.
    pub(super) fn write(
        masker: &'a SecretMasker,
        mem: Option<&'a mut Memory>,
        out: &'a mut Vec<u8>,
        counts: &'a mut MaskCounts,
        known_clean: u64,
    ) -> MaskWalk<'a> {
        MaskWalk {
            masker,
            mem,
            out: Some(out),
            counts,
            changed: false,
            site: 0,
            clean_before_change: 0,
            known_clean,
            settings_of: None,
            setting_value_secret: false,
            key_secrets: Vec::new(),
        }
    }

    /// Write mode: walk `value` from path-trie node `node`; whether anything changed, and the
    /// values masked for their key name (see [`MIN_REPEATED_SECRET_LEN`]).
    pub(super) fn run_write(
        mut self,
        value: &RawJson,
        node: Option<usize>,
    ) -> (bool, Vec<(String, String)>) {
        self.value(value, node, 0);
        (self.changed, self.key_secrets)
    }

    /// Check mode: `None` when masking changes nothing, else how many leading scan sites are
    /// clean (for [`Self::write`]).
    pub(super) fn check_run(mut self, value: &RawJson, node: Option<usize>) -> Option<u64> {
        self.value(value, node, 0);
        self.changed.then_some(self.clean_before_change)
    }

    /// Record a change; `clean_sites`: scan sites before it, all clean.
    fn mark_changed(&mut self, clean_sites: u64) {
        if !self.changed {
            self.changed = true;
            self.clean_before_change = clean_sites;
        }
    }

    /// In check mode, nothing after the first change matters.
    fn done(&self) -> bool {
        self.changed && self.out.is_none()
    }

    fn raw(&mut self, bytes: &[u8]) {
        if let Some(out) = self.out.as_deref_mut() {
            out.extend_from_slice(bytes);
        }
    }

    fn json_str(&mut self, s: &str) {
        if let Some(out) = self.out.as_deref_mut() {
            write_json_str(out, s);
        }
    }

    fn leaf(&mut self, v: &RawJson) {
        if let Some(out) = self.out.as_deref_mut() {
            match v.as_ref() {
                ValueRef::Null => out.extend_from_slice(b"null"),
                ValueRef::Bool(true) => out.extend_from_slice(b"true"),
                ValueRef::Bool(false) => out.extend_from_slice(b"false"),
                ValueRef::String(s) => write_json_str(out, s),
                // Numbers are few; the serializer keeps their exact JSON form.
                _ => {
                    let _ = sonic_rs::to_writer(&mut *out, v);
                }
            }
        }
    }

    fn value(&mut self, value: &RawJson, node: Option<usize>, extra: KindSet) {
        self.value_of(value, node_view(value), node, extra)
    }

    /// [`Self::value`] with the value's type already read (`node_view(value)`): reading it is a
    /// dispatch per node of the DOM, and objects read each child's anyway.
    fn value_of(
        &mut self,
        value: &RawJson,
        view: ValueRef<'_>,
        node: Option<usize>,
        extra: KindSet,
    ) {
        let enabled = self.masker.enabled | extra;
        match view {
            ValueRef::String(s) => self.string(s, enabled),
            ValueRef::Number(n) => {
                let card = (enabled & bit(PatternKind::CreditCard) != 0)
                    .then(|| {
                        n.as_u64()
                            .or_else(|| whole_f64(&n))
                            .and_then(card_number_text)
                    })
                    .flatten();
                match card {
                    Some(text) => self.replace_leaf(PatternKind::CreditCard, "", &text),
                    None => self.leaf(value),
                }
            }
            ValueRef::Array(items) => {
                // An option naming a secret makes the item after it one: a command line held as
                // its arguments (`["--password", "x"]`). (Not any pair: `["password",
                // "refresh_token"]` is a list of OAuth grant types.)
                let mut named_secret = false;
                // `--seed 42` seeds a random generator (tests, model training): a number after
                // `--seed` is no wallet seed and stays.
                let mut named_seed = false;
                // A PEM private key held one line per item (a config file or a key stored as
                // its lines): the header item is masked by its pattern, the key material in
                // the items after it up to the footer is masked with it.
                let pem_enabled = enabled & bit(PatternKind::PemPrivateKey) != 0;
                let mut in_private_key = false;
                // A PuTTY key file held one line per item: the items after `Private-Lines: <n>`
                // are the private key's `n` lines (the `Private-MAC:` item is masked by its
                // pattern).
                let mut putty_private_lines = 0usize;
                // A YAML file held one line per item: after a block header naming a secret
                // (`password: >`), the items indented more than its name are the value (the
                // column of that name while in the block).
                let yaml_enabled = enabled & bit(PatternKind::SecretAssignment) != 0;
                let mut yaml_block_column: Option<usize> = None;
                // An AWS secret key held right after its key id (`["AKIA...", "wJalr..."]`).
                let aws_enabled = enabled & bit(PatternKind::AwsSecretAccessKey) != 0;
                let mut after_key_id = false;
                // A header held as a `[name, value]` pair (`[["Authorization", "Bearer x"],
                // ["Cookie", "sid=x"]]`): the value of a sensitive header is masked as under
                // that key.
                let header_secret = items.len() == 2 && self.is_secret_header_pair(items);
                let glued_enabled = enabled & bit(PatternKind::CliCredentials) != 0;
                // A command line held as its arguments after a program whose credentials the
                // text pattern reads (`["sshpass", "-p", "x"]`, `["net", "user", "bob", "x"]`):
                // the items that pattern finds secret in the joined command line.
                let argv_secrets = if glued_enabled {
                    command_line_secrets(self.masker, items)
                } else {
                    Vec::new()
                };
                // `["wallet", "--mnemonic", "abandon", "ability", ...]`: an unquoted seed phrase
                // after its option, a word per item.
                let seed_words = seed_phrase_items(items);
                // Google Workspace's setting changes: `{"name": "SETTING_NAME", "value": "SMTP
                // relay password"}`, then `OLD_VALUE` and `NEW_VALUE` pairs, items of the same
                // `parameters`. Asked once per array, out of the per-item path (which every
                // array's items take), and only for an array of name/value pairs.
                let secret_setting =
                    starts_with_named_pair(items) && self.setting_names_secret(items, enabled);
                let mut index = 0;
                self.array(items, |w, item| {
                    let i = index;
                    index += 1;
                    // The item's type is read once: each read is a dispatch on the DOM node.
                    let view = node_view(item);
                    let text = match view {
                        ValueRef::String(s) => Some(s),
                        _ => None,
                    };
                    let names_secret = std::mem::take(&mut named_secret)
                        && !(std::mem::take(&mut named_seed)
                            && text.is_some_and(is_decimal_integer));
                    if in_private_key {
                        if let Some(line) = text {
                            in_private_key = !ends_private_key(line);
                            w.pem_line(line);
                            return;
                        }
                        in_private_key = false;
                    }
                    if let Some(column) = yaml_block_column {
                        if let Some(line) = text {
                            let content = line.trim_start_matches([' ', '\t']);
                            if content.trim().is_empty() {
                                w.json_str(line);
                                return;
                            }
                            let indent = line.len() - content.len();
                            if indent > column {
                                w.yaml_block_line(&line[..indent], content);
                                return;
                            }
                        }
                        yaml_block_column = None;
                    }
                    if putty_private_lines > 0 {
                        if let Some(line) = text {
                            putty_private_lines -= 1;
                            w.pem_line(line);
                            return;
                        }
                        putty_private_lines = 0;
                    }
                    if std::mem::take(&mut after_key_id) && aws_enabled {
                        if let Some(secret) = text.filter(|s| is_aws_secret_shape(s)) {
                            w.replace_leaf(PatternKind::AwsSecretAccessKey, "", secret);
                            return;
                        }
                    }
                    if (names_secret || (header_secret && i == 1) || seed_words.contains(&i))
                        && text.is_some()
                    {
                        let m = w.masker;
                        w.force_leaves(item, m.key_action, "key");
                        return;
                    }
                    if let Some(&(_, at)) = argv_secrets.iter().find(|(j, _)| *j == i) {
                        if let Some(arg) = text {
                            w.replace_leaf(PatternKind::CliCredentials, &arg[..at], &arg[at..]);
                            return;
                        }
                    }
                    // `["mysql", "-uroot", "-pS3cret"]`: the password glued to mysql's `-p`,
                    // which the text pattern masks in `mysql -uroot -pS3cret`.
                    if glued_enabled {
                        if let Some(secret) = text.and_then(|s| glued_password(items, i, s)) {
                            w.replace_leaf(PatternKind::CliCredentials, "-p", secret);
                            return;
                        }
                    }
                    if secret_setting {
                        w.setting_value_secret =
                            matches!(&view, ValueRef::Object(map) if is_setting_value_pair(map));
                    }
                    w.value_of(item, view, node, extra);
                    in_private_key = pem_enabled && text.is_some_and(opens_private_key);
                    after_key_id = text.is_some_and(is_aws_key_id);
                    yaml_block_column = if yaml_enabled {
                        text.and_then(|t| w.yaml_block_header(t))
                    } else {
                        None
                    };
                    putty_private_lines = if pem_enabled {
                        text.map_or(0, putty_private_line_count)
                    } else {
                        0
                    };
                    named_secret =
                        text.is_some_and(|s| s.starts_with('-') && w.names_secret_argument(s));
                    named_seed = named_secret
                        && text.is_some_and(|s| {
                            s.trim_start_matches('-').eq_ignore_ascii_case("seed")
                        });
                });
            }
            ValueRef::Object(map) => {
                // Whether this object is a `{"name": <sensitive>, "value": ...}` pair: asked only
                // when a value-like key comes up (most objects have none), then kept.
                // An `OLD_VALUE`/`NEW_VALUE` pair of a setting that names a secret is known to be
                // one already: the per-key path below stays as it was (kept small, it is inlined).
                let mut pair_is_secret: Option<bool> =
                    std::mem::take(&mut self.setting_value_secret).then_some(true);
                // Settings of a value-like secret (`{"pin": {...}}`): what is not a known
                // setting there is taken for the secret (fail closed: `{"pin": {"value"}}`,
                // `{"masterKey": {"keyMaterial"}}`), objects and arrays under it too.
                let settings_of = self.settings_of.take();
                // Whether a string of this object is an AWS key id: a secret key shaped value
                // beside it is its secret (`{"id": "AKIA...", "value": "wJalr..."}`). Asked only
                // when such a value comes up, then kept.
                let aws_enabled = enabled & bit(PatternKind::AwsSecretAccessKey) != 0;
                let mut holds_key_id: Option<bool> = None;
                let mut names_an_id: Option<bool> = None;
                self.object(map, enabled, |w, key, facts, child| {
                    let view = node_view(child);
                    if matches!(view, ValueRef::Null | ValueRef::Bool(_)) {
                        w.leaf(child);
                        return;
                    }
                    let (text, is_number) = match view {
                        ValueRef::String(s) => (Some(s), false),
                        ValueRef::Number(_) => (None, true),
                        _ => (None, false),
                    };
                    let m = w.masker;
                    let child_node = node.and_then(|n| m.child_node(n, key));
                    let rule = child_node.and_then(|n| m.trie[n].rule).unwrap_or_default();
                    // A key masked just above held a secret value, it is no name for one.
                    let may_name_secret = rule.action != FieldAction::Keep && !facts.masked();
                    if let Some(action) = forced_action(rule.action) {
                        w.force_leaves(child, action, "field");
                    } else if may_name_secret
                        && settings_of
                            .as_deref()
                            .is_some_and(|of| !m.keys.is_secret_setting(of, key))
                    {
                        let of = settings_of.as_deref().unwrap_or_default();
                        let extra = extra | rule.extra;
                        w.force_key_value(child, view, of, child_node, extra);
                    } else if may_name_secret
                        && facts.sensitive()
                        && !is_working_directory(key, text)
                        && !(is_number && is_token_count(key))
                        // `{"password_reminder": 14}`: days before expiry, a setting.
                        && !(is_number && names_a_reminder(key))
                    {
                        let extra = extra | rule.extra;
                        w.force_key_value(child, view, key, child_node, extra);
                    } else if (may_name_secret
                        && facts.pair_value()
                        // `{"field": "Token", "from": "enabled", "to": "disabled"}`
                        && !text.is_some_and(is_status_word)
                        && *pair_is_secret.get_or_insert_with(|| w.pair_is_secret(map, enabled)))
                        || (rule.action != FieldAction::Keep
                            && (is_jwk_private_member(key)
                                || is_kubernetes_secret_data(key)
                                || key.eq_ignore_ascii_case("auth"))
                            && is_secret_member_of_record(map, key))
                    {
                        w.force_leaves(child, m.key_action, "key");
                    } else if aws_enabled
                        && rule.action != FieldAction::Keep
                        && text.is_some_and(is_aws_secret_shape)
                        && *holds_key_id.get_or_insert_with(|| {
                            map.iter()
                                .any(|(_, v)| v.as_str().is_some_and(is_aws_key_id))
                        })
                    {
                        let secret = text.unwrap_or_default();
                        w.replace_leaf(PatternKind::AwsSecretAccessKey, "", secret);
                    } else if rule.extra & bit(PatternKind::CreditCard) == 0
                        && (facts.id()
                            || (facts.pair_value()
                                && *names_an_id.get_or_insert_with(|| pair_names_an_id(map))))
                        && is_scalar_or_scalars(&view)
                    {
                        w.id_value(child, view, extra | rule.extra);
                    } else {
                        w.value_of(child, view, child_node, extra | rule.extra);
                    }
                });
            }
            _ => self.leaf(value),
        }
    }

    /// A value under an id key ([`is_id_key`]): an identifier may be a long run of digits that
    /// passes Luhn by chance (Google's `uniqueQualifier`, an order id), so no card number is
    /// looked for in it; every other kind is.
    fn id_value(&mut self, value: &RawJson, view: ValueRef<'_>, extra: KindSet) {
        let enabled = (self.masker.enabled | extra) & !bit(PatternKind::CreditCard);
        match view {
            ValueRef::String(s) => self.string(s, enabled),
            // A list of ids (`repository_ids`), of strings and numbers only.
            ValueRef::Array(items) => self.array(items, |w, item| match node_view(item) {
                ValueRef::String(s) => w.string(s, enabled),
                _ => w.leaf(item),
            }),
            _ => self.leaf(value),
        }
    }

    /// Whether `map` holds a name key (`name`, `key`) whose value names a secret. The name is
    /// judged as it is written out, masked (its own secrets are counted when it is walked as a
    /// value): masking the output again must reach the same decision. A wholly masked name names
    /// no secret value.
    fn pair_is_secret(&mut self, map: &sonic_rs::Object, enabled: KindSet) -> bool {
        map.iter().any(|(k, v)| {
            flags_a_secret_value(k, v)
                || is_pair_name_key(k)
                    && v.as_str()
                        .is_some_and(|n| self.names_secret_as_written(n, enabled))
        })
    }

    /// Whether `name` (a pair's or a setting's name) names a secret as it is written out,
    /// masked (its own secrets are counted when it is walked as a value): masking the output
    /// again must reach the same decision. A wholly masked name names no secret value.
    fn names_secret_as_written(&mut self, name: &str, enabled: KindSet) -> bool {
        let m = self.masker;
        let name = m.mask_str_in(
            self.mem.as_deref_mut(),
            name,
            enabled,
            &mut MaskCounts::default(),
        );
        !is_masked(&name) && m.key_is_sensitive(self.mem.as_deref_mut(), &name)
    }

    /// Whether `items` (a Google Workspace event's `parameters`) holds a `{"name":
    /// "SETTING_NAME", "value": ...}` pair whose value names a secret (`SMTP relay password`),
    /// judged as it is written out, masked, as [`Self::pair_is_secret`] judges a name.
    #[inline(never)]
    fn setting_names_secret(&mut self, items: &sonic_rs::Array, enabled: KindSet) -> bool {
        items.iter().any(|item| {
            let Some(map) = item.as_object() else {
                return false;
            };
            let mut entries = map.iter();
            let names_setting = entries.next().is_some_and(|(k, v)| {
                k == "name"
                    && v.as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case("SETTING_NAME"))
            });
            names_setting
                && entries.any(|(k, v)| {
                    k == "value"
                        && v.as_str()
                            .is_some_and(|n| self.names_secret_as_written(n, enabled))
                })
        })
    }

    /// Whether the array item `s`, a command-line option (`--password`, `--api-key`), names the
    /// secret that follows it: a sensitive key name, as written out, masked.
    fn names_secret_argument(&mut self, s: &str) -> bool {
        let name = s.trim_start_matches('-');
        let looks_like_name = !name.is_empty()
            && name.len() <= 80
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        looks_like_name
            && !is_masked(s)
            && self.masker.key_is_sensitive(self.mem.as_deref_mut(), name)
    }

    /// Whether the two-item array `items` is an HTTP header's name and value, the name one
    /// that holds a secret (`["Authorization", "Bearer x"]`, `["x-api-key", "k"]`). A name is
    /// header-shaped when it has a `-` between letters and digits, or is `Authorization` or
    /// `Cookie` in any case: a capital letter alone is no sign of a header (`["Password",
    /// "Okta Verify"]` lists sign-in methods), and neither is a lower-case word (`["password",
    /// "refresh_token"]` lists OAuth grant types).
    fn is_secret_header_pair(&mut self, items: &sonic_rs::Array) -> bool {
        let (Some(name), Some(value)) = (items.first(), items.get(1)) else {
            return false;
        };
        let Some(name) = name.as_str() else {
            return false;
        };
        let header_shaped = (name.contains('-')
            && !name.starts_with('-')
            && !name.ends_with('-')
            && name.len() <= 80
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            || name.eq_ignore_ascii_case("authorization")
            || name.eq_ignore_ascii_case("cookie");
        header_shaped
            && value.is_str()
            && self.masker.key_is_sensitive(self.mem.as_deref_mut(), name)
    }

    /// A leaf that is a secret of `kind` (`secret` is its text after `prefix`): masked whole,
    /// `prefix` kept, and counted.
    fn replace_leaf(&mut self, kind: PatternKind, prefix: &str, secret: &str) {
        self.mark_changed(self.site);
        self.counts.by_kind[kind.index()] += 1;
        if self.out.is_some() {
            let r = self.masker.replacement(
                self.masker.kind_actions[kind.index()],
                kind.as_str(),
                secret,
            );
            self.json_str(&format!("{prefix}{r}"));
        }
    }

    /// An array, each item through `each`.
    fn array(&mut self, items: &sonic_rs::Array, mut each: impl FnMut(&mut Self, &RawJson)) {
        self.raw(b"[");
        for (i, item) in items.iter().enumerate() {
            if self.done() {
                return;
            }
            if i > 0 {
                self.raw(b",");
            }
            each(self, item);
        }
        self.raw(b"]");
    }

    /// An object: each key written (masked when it carries a secret, see [`Self::scanned_object_key`]),
    /// then its value through `each`, which gets the key the value is filed under and its
    /// [`KeyFacts`].
    fn object(
        &mut self,
        map: &sonic_rs::Object,
        enabled: KindSet,
        mut each: impl FnMut(&mut Self, &str, KeyFacts, &RawJson),
    ) {
        self.raw(b"{");
        let mut renamed = Vec::new();
        for (i, (key, child)) in map.iter().enumerate() {
            if self.done() {
                return;
            }
            if i > 0 {
                self.raw(b",");
            }
            let facts = self.masker.key_facts(self.mem.as_deref_mut(), key);
            // Most keys are no scan site: written as they are, without the call (its frame cost
            // more than the rest of a key's handling).
            let key = if facts.needs_scan() {
                self.scanned_object_key(map, &mut renamed, key, enabled)
            } else {
                self.json_str(key);
                Cow::Borrowed(key)
            };
            // A key masked for a secret in it is judged as written.
            let facts = match &key {
                Cow::Owned(masked) => self.masker.key_facts(self.mem.as_deref_mut(), masked),
                Cow::Borrowed(_) => facts,
            };
            self.raw(b":");
            each(self, &key, facts, child);
        }
        self.raw(b"}");
    }

    /// A string scanned for value patterns.
    fn string(&mut self, s: &str, enabled: KindSet) {
        let site = self.site;
        self.site += 1;
        if site < self.known_clean {
            self.json_str(s);
            return;
        }
        // `mask_str` runs the prefilter first and borrows the text back when it finds nothing.
        match self
            .masker
            .mask_str_in(self.mem.as_deref_mut(), s, enabled, self.counts)
        {
            Cow::Borrowed(s) => self.json_str(s),
            Cow::Owned(masked) => {
                self.mark_changed(site);
                self.json_str(&masked);
            }
        }
    }

    /// Write an object key that is a scan site ([`KeyFacts::needs_scan`]), masked when it
    /// carries a secret itself (`{"ghp_...": 1}`, an email as a map key); returns the key the
    /// value is filed under. Two secrets can mask to the same text, so a masked key that
    /// collides with another key of the object gets `#2`, `#3`, ...
    fn scanned_object_key<'k>(
        &mut self,
        map: &sonic_rs::Object,
        renamed: &mut Vec<String>,
        key: &'k str,
        enabled: KindSet,
    ) -> Cow<'k, str> {
        let site = self.site;
        self.site += 1;
        let masked = if site < self.known_clean {
            Cow::Borrowed(key)
        } else {
            self.masker
                .mask_str_in(self.mem.as_deref_mut(), key, enabled, self.counts)
        };
        let key = match masked {
            Cow::Borrowed(_) => Cow::Borrowed(key),
            Cow::Owned(mut new) => {
                self.mark_changed(site);
                let base_len = new.len();
                let mut n = 2;
                while map.iter().any(|(k, _)| k == new) || renamed.contains(&new) {
                    new.truncate(base_len);
                    new.push_str(&format!("#{n}"));
                    n += 1;
                }
                renamed.push(new.clone());
                Cow::Owned(new)
            }
        };
        self.json_str(&key);
        key
    }

    /// The value of the sensitive `key`: every leaf masked, except objects under a word that
    /// names one value ([`super::keys::KeyMatcher::masks_objects`]: `{"pin": {"minLength":
    /// 6}}` is settings), which are walked as any other; the strings and numbers beside them,
    /// also in arrays, are still masked.
    fn force_key_value(
        &mut self,
        value: &RawJson,
        view: ValueRef<'_>,
        key: &str,
        node: Option<usize>,
        extra: KindSet,
    ) {
        let m = self.masker;
        let holds_object = match &view {
            ValueRef::Object(_) => true,
            ValueRef::Array(items) => items.iter().any(|item| item.is_object()),
            _ => false,
        };
        if !holds_object || m.keys.masks_objects(key) {
            // A session key is what ties a user's events together (Salesforce's `SESSION_KEY`,
            // in every Event Monitoring row): hashed, it still does, and stays hidden.
            let action = match m.key_action {
                Action::Redact if super::keys::names_a_session_key(key) => Action::Hash,
                action => action,
            };
            self.force_leaves(value, action, "key");
            return;
        }
        match view {
            ValueRef::Array(items) => self.array(items, |w, item| {
                w.force_key_value(item, item.as_ref(), key, node, extra)
            }),
            _ => {
                self.settings_of = Some(key.to_string());
                self.value_of(value, view, node, extra);
                self.settings_of = None;
            }
        }
    }

    /// Mask every string/number leaf under a sensitive key or a forced field rule.
    fn force_leaves(&mut self, value: &RawJson, action: Action, label: &str) {
        match value.as_ref() {
            ValueRef::String(s) if is_masked(s) => self.json_str(s),
            // Under a sensitive name, a value that is only a reference to the secret or a
            // placeholder for it (`{"password": "${DB_PASSWORD}"}`, `["--token", "$TOKEN"]`)
            // stays, as in text. A field rule forcing an action masks it anyway.
            ValueRef::String(s) if label == "key" && is_secret_source(s) => self.json_str(s),
            ValueRef::String(s) => self.forced(s, action, label),
            ValueRef::Number(n) => self.forced(&n.to_string(), action, label),
            ValueRef::Array(items) => {
                self.array(items, |w, item| w.force_leaves(item, action, label))
            }
            ValueRef::Object(map) => {
                let enabled = self.masker.enabled;
                self.object(map, enabled, |w, _, _, child| {
                    w.force_leaves(child, action, label)
                });
            }
            _ => self.leaf(value),
        }
    }

    /// The column of the name when the array item `line` is a YAML block scalar header
    /// naming a secret (`password: >`, `  "token": |-`, `- secret: >`), as written out, masked.
    fn yaml_block_header(&mut self, line: &str) -> Option<usize> {
        let (name, indicator) = line.split_once(':')?;
        if !is_block_indicator(indicator.trim()) {
            return None;
        }
        let bare = name.trim_start_matches([' ', '\t']);
        let bare = bare.strip_prefix("- ").unwrap_or(bare).trim_start();
        let column = name.len() - bare.len();
        let bare = bare.trim_end().trim_matches(['"', '\'']);
        let looks_like_name = !bare.is_empty()
            && bare.len() <= 80
            && bare
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        (looks_like_name && self.masker.key_is_sensitive(self.mem.as_deref_mut(), bare))
            .then_some(column)
    }

    /// A line of a YAML block scalar naming a secret, after its header item: its text masked,
    /// its indentation kept.
    fn yaml_block_line(&mut self, indentation: &str, content: &str) {
        if is_masked(content) {
            self.json_str(&format!("{indentation}{content}"));
        } else {
            self.replace_leaf(PatternKind::SecretAssignment, indentation, content);
        }
    }

    /// A line of a PEM private key after its header item: masked whole, as the header was.
    fn pem_line(&mut self, line: &str) {
        if is_masked(line) {
            self.json_str(line);
        } else {
            self.replace_leaf(PatternKind::PemPrivateKey, "", line);
        }
    }

    fn forced(&mut self, secret: &str, action: Action, label: &str) {
        self.mark_changed(self.site);
        self.counts.by_key += 1;
        if self.out.is_some() {
            let r = self.masker.replacement(action, label, secret);
            if label == "key" && may_repeat_elsewhere(secret) {
                self.key_secrets.push((secret.to_string(), r.clone()));
            }
            self.json_str(&r);
        }
    }
}

/// A value masked for its key name is masked where the same record holds it again under another
/// name, whole or inside a longer text (`{"password": "Tr0ub4dor&3", "note": "typed
/// Tr0ub4dor&3 twice"}`), when it has at least this many characters: a short one (`admin`,
/// `true`) is as likely another field's own value or part of a word.
pub(super) const MIN_REPEATED_SECRET_LEN: usize = 6;

/// Whether a value masked for its key name is looked for elsewhere in its record: long enough
/// (see [`MIN_REPEATED_SECRET_LEN`]), with letters and digits or symbols. A word alone is as
/// likely a placeholder that other fields share (`REDACTED` in every credential setting a
/// vendor hides), and digits alone a time or count (`"expiration": 1700000000`).
pub(super) fn may_repeat_elsewhere(secret: &str) -> bool {
    secret.chars().count() >= MIN_REPEATED_SECRET_LEN
        && secret.chars().any(char::is_alphabetic)
        && secret
            .chars()
            .any(|c| c.is_ascii_digit() || c.is_ascii_punctuation())
}

/// `text` (a record as the write mode wrote it, compact JSON) with each of `secrets` in clear,
/// in any of its [`written_forms`], replaced by its masked form wherever a string value holds
/// it, whole or in part; keys stay.
/// How many were replaced.
pub(super) fn mask_repeated_secrets(text: &mut Vec<u8>, secrets: &[(String, String)]) -> u64 {
    // Both sides as they are written inside a JSON string (escaped, without the quotes): the
    // record's strings are searched in their written form.
    let escaped = |s: &str| {
        let mut quoted = Vec::with_capacity(s.len() + 2);
        write_json_str(&mut quoted, s);
        quoted[1..quoted.len() - 1].to_vec()
    };
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = secrets
        .iter()
        .flat_map(|(secret, masked)| {
            let masked = escaped(masked);
            written_forms(secret).map(move |form| (escaped(&form), masked.clone()))
        })
        .filter(|(needle, _)| memchr::memmem::find(text, needle).is_some())
        .collect();
    if pairs.is_empty() {
        return 0;
    }
    let mut out = Vec::with_capacity(text.len());
    let mut replaced = 0;
    let mut at = 0;
    while let Some(open) = memchr::memchr(b'"', &text[at..]).map(|i| at + i) {
        let body_start = open + 1;
        let body_end = string_end(text, body_start);
        out.extend_from_slice(&text[at..body_start]);
        let body = &text[body_start..body_end];
        // A key is followed by `:`; a value by `,`, `]` or `}`.
        if text.get(body_end + 1) == Some(&b':') {
            out.extend_from_slice(body);
        } else {
            replaced += replace_in_string(body, &pairs, &mut out);
        }
        at = body_end;
        if at < text.len() {
            out.push(b'"');
            at += 1;
        }
    }
    out.extend_from_slice(&text[at..]);
    *text = out;
    replaced
}

/// The forms a value masked for its key name is looked for in elsewhere in its record: as it
/// is, percent-encoded (a query parameter or a form body: `Hunter2%21Hunter2`, when that differs)
/// and in standard base64 (a value or payload passed on encoded: the whole value alone,
/// padded). Upper-case hex, as RFC 3986 asks and encoders write.
pub(super) fn written_forms(secret: &str) -> impl Iterator<Item = String> {
    use base64::Engine as _;
    /// What a URL component escapes: all but the unreserved characters.
    const URL_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let encoded = percent_encoding::utf8_percent_encode(secret, URL_COMPONENT).to_string();
    let base64 = base64::engine::general_purpose::STANDARD.encode(secret);
    [
        Some(secret.to_string()),
        (encoded != secret).then_some(encoded),
        Some(base64),
    ]
    .into_iter()
    .flatten()
}

/// Where the JSON string whose body starts at `from` ends (its closing quote).
fn string_end(text: &[u8], from: usize) -> usize {
    let mut i = from;
    while i < text.len() {
        match text[i] {
            b'\\' => i += 2,
            b'"' => return i,
            _ => i += 1,
        }
    }
    text.len()
}

/// `body` (a written JSON string's inside) onto `out` with every needle of `pairs` replaced;
/// how many were. A match that starts inside an escape (`\n` then `n1x...`) is not one: the
/// needle is whole escapes, so a match at an escape's start also ends at one.
fn replace_in_string(body: &[u8], pairs: &[(Vec<u8>, Vec<u8>)], out: &mut Vec<u8>) -> u64 {
    let mut current = std::borrow::Cow::Borrowed(body);
    let mut replaced = 0;
    for (needle, with) in pairs {
        if memchr::memmem::find(&current, needle).is_none() {
            continue;
        }
        let mut next = Vec::with_capacity(current.len());
        let mut from = 0;
        let mut search = 0;
        while let Some(start) = memchr::memmem::find(&current[search..], needle).map(|i| search + i)
        {
            let backslashes = current[..start]
                .iter()
                .rev()
                .take_while(|&&b| b == b'\\')
                .count();
            if backslashes % 2 == 1 {
                search = start + 1;
                continue;
            }
            next.extend_from_slice(&current[from..start]);
            next.extend_from_slice(with);
            replaced += 1;
            from = start + needle.len();
            search = from;
        }
        next.extend_from_slice(&current[from..]);
        current = std::borrow::Cow::Owned(next);
    }
    out.extend_from_slice(&current);
    replaced
}

thread_local! {
    static WRITE_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Reused text buffer for write mode (a record is masked on one thread at a time).
pub(super) fn with_write_buffer<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    with_buffer(&WRITE_BUF, f)
}

fn with_buffer<R>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<Vec<u8>>>,
    f: impl FnOnce(&mut Vec<u8>) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            let r = f(&mut buf);
            if buf.capacity() > 1 << 20 {
                *buf = Vec::new();
            }
            r
        }
        Err(_) => f(&mut Vec::new()),
    })
}

/// Whether `text` holds a PEM private key header with no footer after it: the key goes on in
/// the next array items.
fn opens_private_key(text: &str) -> bool {
    let Some(begin) = text.rfind("-----BEGIN") else {
        return false;
    };
    let header = &text[begin..];
    let line_end = header.find(['\n', '\r']).unwrap_or(header.len());
    header[..line_end].contains("PRIVATE KEY") && !header.contains("-----END")
}

/// The password in `arg`, the item at `index` of `items`, when it is glued to the `-p` of a
/// MySQL client named by an earlier item (`["mysql", "-h", "db", "-pS3cret"]`). A bare `-p`
/// prompts (the item after it is the database); `-p` before the program is another's option.
/// Only items starting `-p` look back, so most arrays pay one byte comparison per item. A
/// reference (`-p$MYSQL_PWD`) is no password, as in text.
fn glued_password<'s>(items: &sonic_rs::Array, index: usize, arg: &'s str) -> Option<&'s str> {
    let secret = arg
        .strip_prefix("-p")
        .filter(|s| !s.is_empty() && !is_masked(s) && !is_secret_source(s))?;
    items
        .iter()
        .take(index)
        .any(|earlier| earlier.as_str().is_some_and(is_glued_password_client))
        .then_some(secret)
}

/// The items of `items` that are the words of a wallet seed phrase after the option naming it
/// (`--mnemonic`, `--seed-phrase`, ...; 12 to 24 lower-case words of 3-8 letters, as
/// [`super::patterns`]' text form reads them). Decided from the items alone.
fn seed_phrase_items(items: &sonic_rs::Array) -> Vec<usize> {
    // Most arrays hold no option at all: no allocation for them (this runs for every array of
    // every record masked).
    if !items
        .iter()
        .any(|item| item.as_str().is_some_and(|t| t.starts_with('-')))
    {
        return Vec::new();
    }
    let texts: Vec<Option<&str>> = items.iter().map(|item| item.as_str()).collect();
    let is_word = |t: &&Option<&str>| {
        t.is_some_and(|w| (3..=8).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_lowercase()))
    };
    let mut out = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let Some(option) = text.and_then(|t| t.strip_prefix('-')) else {
            continue;
        };
        if !names_a_seed_option(option.trim_start_matches('-')) {
            continue;
        }
        let words = texts[i + 1..].iter().take_while(is_word).count();
        if words >= 12 {
            out.extend(i + 1..i + 1 + words.min(24));
        }
    }
    out
}

/// The string items of `items` that hold a command-line credential when one of them runs a
/// program of [`is_credential_client`]: the items joined by spaces are read by the
/// `CliCredentials` pattern, as the same command written as one string is, and each item a
/// secret it found covers is given with where the secret starts in it (`["curl", "-u",
/// "bob:x"]` keeps `bob:`). Decided from the items alone, so the check and the write agree.
fn command_line_secrets(masker: &SecretMasker, items: &sonic_rs::Array) -> Vec<(usize, usize)> {
    if !items
        .iter()
        .any(|item| item.as_str().is_some_and(is_credential_client))
    {
        return Vec::new();
    }
    let mut line = String::new();
    let mut spans = Vec::new();
    for (i, arg) in items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| item.as_str().map(|s| (i, s)))
    {
        if !line.is_empty() {
            line.push(' ');
        }
        spans.push((i, line.len()..line.len() + arg.len()));
        line.push_str(arg);
    }
    let mut found = Vec::new();
    masker
        .patterns
        .find(PatternKind::CliCredentials, &line, &masker.keys, &mut found);
    let mut secrets: Vec<(usize, usize)> = Vec::new();
    for f in &found {
        for (i, span) in &spans {
            if f.start < span.end && f.end > span.start {
                let at = f.start.saturating_sub(span.start);
                match secrets.iter_mut().find(|(j, _)| j == i) {
                    Some((_, earlier)) => *earlier = (*earlier).min(at),
                    None => secrets.push((*i, at)),
                }
            }
        }
    }
    secrets
}

/// How many private key lines follow the array item `line` when it is a PuTTY key file's
/// `Private-Lines: <n>` header alone, the name in any case (0 otherwise).
fn putty_private_line_count(line: &str) -> usize {
    const NAME: &str = "private-lines:";
    let line = line.trim();
    line.get(..NAME.len())
        .filter(|name| name.eq_ignore_ascii_case(NAME))
        .and_then(|_| line[NAME.len()..].trim().parse().ok())
        .unwrap_or(0)
}

/// Whether the pair `k`: `v` of an object says the object's value is a secret, whatever its
/// name: the flag of a variable (Terraform Cloud's and Azure DevOps' `sensitive`, `isSecret`,
/// GitLab's `masked`) or a 1Password field's `CONCEALED` type. Masking leaves both as they are,
/// so the masked record is judged the same.
fn flags_a_secret_value(k: &str, v: &RawJson) -> bool {
    match k {
        "sensitive" | "isSensitive" | "is_sensitive" | "isSecret" | "is_secret" | "masked" => {
            v.as_bool() == Some(true)
        }
        "type" | "fieldType" => v.as_str().is_some_and(|s| s == "CONCEALED"),
        _ => false,
    }
}

/// Whether `items` starts with an object whose first key is `name` (Google Workspace's
/// `parameters`): the cheap test before [`MaskWalk::setting_names_secret`].
fn starts_with_named_pair(items: &sonic_rs::Array) -> bool {
    items
        .iter()
        .next()
        .and_then(|first| first.as_object())
        .and_then(|map| map.iter().next())
        .is_some_and(|(k, _)| k == "name")
}

/// Whether `map` is the old or new value of a changed setting (`{"name": "OLD_VALUE", "value":
/// ...}`, Google Workspace's parameters, name first): only its first member is read, as this
/// is asked of every object in an array.
fn is_setting_value_pair(map: &sonic_rs::Object) -> bool {
    map.iter().next().is_some_and(|(k, v)| {
        k == "name"
            && v.as_str().is_some_and(|n| {
                n.eq_ignore_ascii_case("OLD_VALUE") || n.eq_ignore_ascii_case("NEW_VALUE")
            })
    })
}

/// Whether `view` is a string or a number, or an array of nothing else: what an id key holds.
fn is_scalar_or_scalars(view: &ValueRef<'_>) -> bool {
    match view {
        ValueRef::String(_) | ValueRef::Number(_) => true,
        ValueRef::Array(items) => items.iter().all(|item| {
            matches!(
                node_view(item),
                ValueRef::String(_) | ValueRef::Number(_) | ValueRef::Null
            )
        }),
        _ => false,
    }
}

/// Whether the member `key` of `map` is secret by what the object is, whatever its name: a
/// JSON Web Key's private parts (`d` of an EC or OKP key, `d`, `p`, `q`, `dp`, `dq`, `qi` of an
/// RSA key, `k` of a symmetric one; its public ones, `x`, `y`, `n`, `e`, `kid`, stay), or a
/// Kubernetes Secret's `data`/`stringData` (in an audit event's request or response body), or
/// a registry login's `auth`.
/// Out of line: the per-key closure of the walk is hot, and rare keys only call this.
#[inline(never)]
fn is_secret_member_of_record(map: &sonic_rs::Object, key: &str) -> bool {
    if key.eq_ignore_ascii_case("auth") {
        // A container registry login as Docker's `config.json` (`auths.<registry>.auth`) and
        // Podman's `auth.json` keep it: base64 of `user:password` (QA). Other `auth` members
        // name a method (`"auth": "saml"`) and stay.
        map.get(&key)
            .and_then(|v| v.as_str())
            .is_some_and(super::patterns::is_basic_credential)
    } else if is_kubernetes_secret_data(key) {
        map.get(&"kind").and_then(|k| k.as_str()) == Some("Secret")
    } else {
        map.get(&"kty").is_some()
    }
}

/// Whether `key` names the members of a Kubernetes Secret that hold its values.
fn is_kubernetes_secret_data(key: &str) -> bool {
    matches!(key, "data" | "stringData")
}

/// Whether `key` names a private member of a JSON Web Key (RFC 7518, section 6).
fn is_jwk_private_member(key: &str) -> bool {
    key.len() <= 2 && matches!(key, "d" | "p" | "q" | "dp" | "dq" | "qi" | "k")
}

/// Whether `s` is a decimal integer (`42`, `-1`).
fn is_decimal_integer(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.len() <= 20 && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Whether the array item `line` closes a PEM private key (its footer).
fn ends_private_key(line: &str) -> bool {
    line.find("-----END")
        .is_some_and(|i| line[i..].contains("PRIVATE KEY"))
}

/// A number written as a float (`4111111111111111.0`, `4.111111111111111e15`) whose value is
/// whole and in a card number's range: masked as the integer it equals.
fn whole_f64(n: &sonic_rs::Number) -> Option<u64> {
    let f = n.as_f64()?;
    (f.fract() == 0.0 && (1e12..1e19).contains(&f)).then_some(f as u64)
}

#[cfg(test)]
mod tests {
    use super::write_json_str;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn json_strings_round_trip(s in "\\PC*|[\\x00-\\x20\"\\\\]{0,8}") {
            let mut out = Vec::new();
            write_json_str(&mut out, &s);
            let back: String = serde_json::from_slice(&out).expect("valid JSON string");
            prop_assert_eq!(back, s);
        }
    }
}
