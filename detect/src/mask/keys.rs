//! Sensitive key names.
//!
//! A key is folded to lowercase letters and digits (`X-Api-Key`, `api_key`, `apiKey` and
//! `debug.apiKey` all become `...apikey`), then one Aho-Corasick automaton finds the sensitive
//! words in it. A word alone is not enough: audit logs are full of keys *about* secrets that are
//! the useful, non-secret part of the record (`token_type`, `tokenId`, `token_scopes`,
//! `secrets_passed` = names of secrets, `credentialType`, `passwordChanged`, `authorizationServer`).
//! English compounds put the head noun last, so the rule is: the key is sensitive when a
//! sensitive word is followed only by words that still denote the secret itself (`s`, `key`,
//! `value`, `hash`, `header`, ... as in `secretAccessKey`, `tokens`, `password_hash`) and is not
//! preceded by a qualifier that makes it a reference (`hashed_token`, `truncated_token`,
//! `next_page_token`, `nextToken` = pagination cursors).
//! Values of these keys are masked whatever they look like: strings, numbers, and every leaf of
//! objects/arrays. Booleans and nulls carry no secret and stay (`isServiceToken: false`).

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

use crate::DetectError;

/// Built-in sensitive words (folded form). Compounds from the usual lists (`client_secret`,
/// `access_token`, `refresh_token`, `session_token`, `set-cookie`, `private_key`) are covered by
/// their head word.
pub(crate) const SENSITIVE_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "passcode",
    "pwd",
    "secret",
    "token",
    "authorization",
    "cookie",
    "apikey",
    "privatekey",
    "credential",
    "sessionkey",
    "signingkey",
    "encryptionkey",
    "authkey",
    // `password` in the languages of the usual workforces (folded: `contraseña` loses its
    // `ñ`, `mot_de_passe` its underscores).
    "passwort",
    "kennwort",
    "contrasena",
    "contrasea",
    "motdepasse",
    "senha",
    "wachtwoord",
    "salasana",
    // PII by name: a social security number written any way (`123 45 6789`, `123456789`).
    "ssn",
    "socialsecuritynumber",
];

/// Short names of a password that are too common inside other words to look for anywhere in a
/// key (`compass`, `bypass`, `pwm`): sensitive as the key's last word only (`pass`, `db_pass`,
/// `smtpPass`, `pw`, `admin-PW`).
const SHORT_PASSWORD_WORDS: &[&str] = &["pass", "pw"];

/// Words that may follow a sensitive word while the key still names the secret itself.
const SECRET_SUFFIXES: &[&str] = &[
    "s",
    "es",
    "key",
    "value",
    "string",
    "str",
    "hash",
    "plain",
    "plaintext",
    "text",
    "data",
    "raw",
    "header",
    "code",
    "access",
    "b64",
    "base64",
    "pem",
    "der",
    "bytes",
    "encoded",
    "new",
    "old",
    "current",
    "confirmation",
    "confirm",
    "input",
    "entered",
    "1",
    "2",
    // A password of an environment or a temporary one is still the password.
    "temp",
    "tmp",
    "prod",
    "production",
    "dev",
    "staging",
];

/// Qualifiers right before a sensitive word that turn the key into a reference to a secret
/// (a digest, a 4-char stub, a pagination cursor) rather than the secret; `of` moves the head
/// noun in front (`httpRequestLocationOfToken` is a location).
const REFERENCE_PREFIXES: &[&str] = &[
    "hashed",
    "truncated",
    "masked",
    "redacted",
    "page",
    "next",
    "continuation",
    "pagination",
    "cursor",
    "sync",
    "of",
];

/// Decides whether a key name is sensitive.
#[derive(Debug, Clone)]
pub(crate) struct KeyMatcher {
    automaton: AhoCorasick,
    /// Bit per folded trigram that starts a sensitive word: most keys (`eventType`, `id`,
    /// `displayName`) contain none, and are rejected without running the automaton.
    word_starts: Box<[u64; TRIGRAM_WORDS]>,
    /// Folded exact names that are never sensitive.
    allow: Vec<String>,
    /// Whether configured words extend the built-in ones (the value patterns' anchors cover
    /// only the built-in words).
    has_extra_words: bool,
}

/// Trigrams of 5-bit symbols: letters (either case) are 26 symbols, the ten digits share the
/// other 6 (a digit trigram may then look like another: the test stays a necessary condition).
const TRIGRAMS: usize = 1 << 15;
const TRIGRAM_WORDS: usize = TRIGRAMS / 64;

/// The 5-bit symbol of each byte folding keeps (`A-Z` as `a-z`), [`NOT_FOLDED`] for the bytes
/// folding drops.
const FOLDED_SYMBOL: [u8; 256] = {
    let mut t = [NOT_FOLDED; 256];
    let mut b = 0;
    while b < 256 {
        let c = (b as u8).to_ascii_lowercase();
        t[b] = match c {
            b'a'..=b'z' => c - b'a',
            b'0'..=b'9' => 26 + (c - b'0') % 6,
            b'[' => OPENS_MARKER,
            _ => NOT_FOLDED,
        };
        b += 1;
    }
    t
};
const NOT_FOLDED: u8 = u8::MAX;
/// `[`, which folding drops too, but which may open a masking marker (`[REDACTED:..]`): keys with
/// one are judged without their markers, so [`KeyMatcher::may_be_sensitive`] passes them on.
const OPENS_MARKER: u8 = u8::MAX - 1;

/// Whether a trigram in `word_starts` occurs in `bytes`, read as folding reads them (bytes it
/// drops are skipped, so `Api-Key` has the trigrams of `apikey`). One shift and one bit test per
/// byte: most keys are rejected here.
fn any_word_start(word_starts: &[u64; TRIGRAM_WORDS], bytes: &[u8]) -> bool {
    let (mut t, mut symbols) = (0usize, 0usize);
    for &b in bytes {
        let s = FOLDED_SYMBOL[usize::from(b)];
        if s >= OPENS_MARKER {
            if s == OPENS_MARKER {
                return true;
            }
            continue;
        }
        t = shift_in(t, s);
        symbols += 1;
        if symbols >= 3 && word_starts[t / 64] & (1 << (t % 64)) != 0 {
            return true;
        }
    }
    false
}

/// The trigram `t` followed by `symbol`: its last two symbols and `symbol`.
fn shift_in(t: usize, symbol: u8) -> usize {
    ((t << 5) | usize::from(symbol)) & (TRIGRAMS - 1)
}

/// Stack buffer for folding keys: no allocation for the usual short keys.
const FOLD_BUF: usize = 96;

impl KeyMatcher {
    pub(crate) fn new(extra: &[String], allow: &[String]) -> Result<KeyMatcher, DetectError> {
        let mut words: Vec<String> = SENSITIVE_WORDS.iter().map(|w| w.to_string()).collect();
        words.extend(extra.iter().map(|w| normalize_key(w)));
        let automaton = AhoCorasick::builder()
            .kind(Some(AhoCorasickKind::DFA))
            .match_kind(MatchKind::Standard)
            .build(&words)
            .map_err(|e| DetectError::Other(format!("building key-name automaton: {e}")))?;
        let mut word_starts = Box::new([0u64; TRIGRAM_WORDS]);
        for w in &words {
            // Validation guarantees extra words have >= 3 symbols; the built-in ones do.
            if let [a, b, c, ..] = w.as_bytes() {
                let t = [a, b, c]
                    .iter()
                    .fold(0, |t, x| shift_in(t, FOLDED_SYMBOL[usize::from(**x)]));
                word_starts[t / 64] |= 1 << (t % 64);
            }
        }
        Ok(KeyMatcher {
            automaton,
            word_starts,
            allow: allow.iter().map(|a| normalize_key(a)).collect(),
            has_extra_words: !extra.is_empty(),
        })
    }

    /// Whether values under `key` must be masked.
    /// Whether configured sensitive words were added to the built-in ones.
    pub(crate) fn has_extra_words(&self) -> bool {
        self.has_extra_words
    }

    pub(crate) fn is_sensitive(&self, key: &str) -> bool {
        let short_word = ends_with_short_password_word(key);
        let mut buf = [0u8; FOLD_BUF];
        if key.len() <= FOLD_BUF {
            let n = fold_into(key, &mut buf);
            self.is_sensitive_folded(&buf[..n], short_word)
        } else {
            self.is_sensitive_folded(normalize_key(key).as_bytes(), short_word)
        }
    }

    /// False when `key` cannot be sensitive, even once masking markers are taken out of it: no
    /// sensitive word starts anywhere in it and it has no `[` (a necessary condition of
    /// [`Self::is_sensitive`] of the key without its markers, cheaper than it and than a lookup).
    pub(crate) fn may_be_sensitive(&self, key: &str) -> bool {
        any_word_start(&self.word_starts, key.as_bytes()) || ends_with_short_password_word(key)
    }

    /// `short_word`: the unfolded key ends with one of [`SHORT_PASSWORD_WORDS`] as a word of
    /// its own, which folding can no longer tell.
    fn is_sensitive_folded(&self, folded: &[u8], short_word: bool) -> bool {
        let hit = short_word
            || (any_word_start(&self.word_starts, folded)
                && self.automaton.find_iter(folded).any(|m| {
                    let before = &folded[..m.start()];
                    let after = &folded[m.end()..];
                    is_secret_suffix(after) && !is_reference(before, &folded[m.start()..m.end()])
                }));
        hit && !self.allow.iter().any(|a| a.as_bytes() == folded)
    }
}

/// Whether `before` ends with a qualifier that makes `word` a reference to a secret. A hashed
/// password is not one: passwords are few and guessable, so their hashes are cracked offline (a
/// bcrypt `hashed_password` is as good as the password), while a hashed token (random, long)
/// is only an id for it.
fn is_reference(before: &[u8], word: &[u8]) -> bool {
    REFERENCE_PREFIXES.iter().any(|p| {
        before.ends_with(p.as_bytes()) && !(*p == "hashed" && PASSWORD_WORDS.contains(&word))
    })
}

/// The sensitive words that name a password (what a person chose and can be guessed).
const PASSWORD_WORDS: &[&[u8]] = &[b"password", b"passwd", b"passphrase", b"passcode", b"pwd"];

/// Whether `word` is a password word ([`PASSWORD_WORDS`]), in any case.
pub(crate) fn is_password_word(word: &str) -> bool {
    PASSWORD_WORDS
        .iter()
        .any(|w| word.as_bytes().eq_ignore_ascii_case(w))
}

/// `after` is empty or made only of [`SECRET_SUFFIXES`] words.
fn is_secret_suffix(after: &[u8]) -> bool {
    after.is_empty()
        || SECRET_SUFFIXES
            .iter()
            .any(|w| after.starts_with(w.as_bytes()) && is_secret_suffix(&after[w.len()..]))
}

/// Whether the last word of `key` is one of [`SHORT_PASSWORD_WORDS`]: the whole key, or after a
/// separator or a lower-to-upper case change (`db_pass`, `smtpPass`, `ADMIN_PW`; not `bypass`).
fn ends_with_short_password_word(key: &str) -> bool {
    let bytes = key.as_bytes();
    SHORT_PASSWORD_WORDS.iter().any(|w| {
        let n = w.len();
        if bytes.len() < n || !bytes[bytes.len() - n..].eq_ignore_ascii_case(w.as_bytes()) {
            return false;
        }
        let word = &bytes[bytes.len() - n..];
        match bytes.len().checked_sub(n + 1).map(|i| bytes[i]) {
            None => true,
            Some(b) if !b.is_ascii_alphanumeric() => true,
            // `smtpPass`: a lower-case letter or digit, then the word capitalized.
            Some(b) => {
                (b.is_ascii_lowercase() || b.is_ascii_digit()) && word[0].is_ascii_uppercase()
            }
        }
    })
}

/// Lowercase ASCII letters and digits only (`X-Api-Key` -> `xapikey`).
pub(crate) fn normalize_key(key: &str) -> String {
    key.bytes()
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| b.to_ascii_lowercase() as char)
        .collect()
}

fn fold_into(key: &str, buf: &mut [u8; FOLD_BUF]) -> usize {
    let mut n = 0;
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() {
            buf[n] = b.to_ascii_lowercase();
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher() -> KeyMatcher {
        KeyMatcher::new(&[], &[]).expect("builds")
    }

    #[test]
    fn sensitive_names_in_every_spelling() {
        let m = matcher();
        for k in [
            "password",
            "Password",
            "Passwort",
            "kennwort",
            "contraseña",
            "mot_de_passe",
            "senha",
            "wachtwoord",
            "PASSWD",
            "new_password",
            "passwordHash",
            "secret",
            "client_secret",
            "oauthClientSecret",
            "jwtHs256Secret",
            "awsSecretKey",
            "SecretAccessKey",
            "token",
            "access_token",
            "refresh_token",
            "session_token",
            "SessionToken",
            "id_token",
            "x-auth-token",
            "tokens",
            "Authorization",
            "proxy-authorization",
            "cookie",
            "Set-Cookie",
            "api_key",
            "apiKey",
            "X-Api-Key",
            "apikey",
            "private_key",
            "jwtPrivateKey",
            "mtlsClientPrivateKey",
            "credential",
            "credentials",
            "http.request.headers.authorization",
            "db.password",
            "passphrase",
            "hashed_password",
            "hashedPassword",
            "passwordInput",
            "user_password_input",
            "password_entered",
            "authorization_code",
            "pass",
            "Pass",
            "db_pass",
            "smtpPass",
            "pw",
            "ADMIN_PW",
            "admin-pw",
            "adminPasswordTemp",
            "password_prod",
            "auth_key",
            "authKey",
        ] {
            assert!(m.is_sensitive(k), "{k} should be sensitive");
        }
    }

    #[test]
    fn keys_about_secrets_are_not_secrets() {
        let m = matcher();
        for k in [
            "token_type",
            "tokenType",
            "token_id",
            "tokenId",
            "token_scopes",
            "token_expiration",
            "hashed_token",
            "truncated_token",
            "next_page_token",
            "nextPageToken",
            "NextToken",
            "httpRequestLocationOfToken",
            "secrets_passed",
            "secret_scanning_alert_number",
            "credentialType",
            "credentialProvider",
            "credentialId",
            "authenticationContext",
            "authorizationServer",
            "authorizationServerName",
            "passwordless",
            "password_changed",
            "passwordPolicy",
            "cookie_name",
            "tokenizer",
            "secretary",
            "eventType",
            "sessionId",
            "session_uuid",
            "accessKeyId",
            "pwdLastSet",
            "keyword",
            "id",
            "",
            "compass",
            "bypass",
            "passenger",
            "bypass_mfa",
            "pwm",
            "oauthKeyId",
            "password_test_result",
        ] {
            assert!(!m.is_sensitive(k), "{k} should not be sensitive");
        }
    }

    #[test]
    fn config_extends_and_allows() {
        let m = KeyMatcher::new(
            &["x-session-key".into(), "pin_code".into()],
            &["client_secret".into()],
        )
        .expect("builds");
        assert!(m.is_sensitive("xSessionKey"));
        assert!(m.is_sensitive("pincode"));
        assert!(!m.is_sensitive("Client-Secret"));
        assert!(m.is_sensitive("secret"));
    }

    #[test]
    fn very_long_keys_do_not_panic() {
        let m = matcher();
        let long = format!("{}password", "a_".repeat(200));
        assert!(m.is_sensitive(&long));
        assert!(!m.is_sensitive(&"é".repeat(300)));
    }

    proptest::proptest! {
        /// The byte-level pre-check reads a key as folding does (the same answer for the key and
        /// its folded form, apart from a short password word, which only the unfolded key's
        /// separators tell: `0-pW` is one, `0pw` not), and it never rejects a sensitive key.
        #[test]
        fn pre_check_agrees_with_the_folded_key(
            key in "[a-zA-Z0-9_.é -]{0,6}(password|Token|SECRET|api_Key|pWd|cookie|x)?[a-zA-Z0-9_.é -]{0,8}"
        ) {
            let m = matcher();
            let folded = normalize_key(&key);
            if !ends_with_short_password_word(&key) && !ends_with_short_password_word(&folded) {
                proptest::prop_assert_eq!(m.may_be_sensitive(&key), m.may_be_sensitive(&folded));
            }
            proptest::prop_assert!(m.may_be_sensitive(&key) || !m.is_sensitive(&key));
        }
    }

    #[test]
    fn pre_check_rejects_usual_keys() {
        let m = matcher();
        for k in [
            "eventType",
            "displayName",
            "uuid",
            "actor",
            "ipAddress",
            "published",
        ] {
            assert!(!m.may_be_sensitive(k), "{k}");
        }
        for k in [
            "client_secret",
            "X-Api-Key",
            "authorizationServer",
            "tokenType",
            // A marker may join the halves of a word once taken out: passed on.
            "pas[REDACTED:jwt]sword",
        ] {
            assert!(m.may_be_sensitive(k), "{k}");
        }
    }
}
