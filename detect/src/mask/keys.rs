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
    "cookie",
    "privatekey",
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
    // PII by name: a social security number written any way (`123 45 6789`, `123456789`), a
    // passport number.
    "ssn",
    "socialsecuritynumber",
    "passportnumber",
    "passportno",
    // Card security codes (PCI data, never to be stored) and one-time codes.
    "cvv",
    "cvc",
    "securitycode",
    "mfacode",
    // What recovers or derives an account or a wallet: shown once, as good as the password.
    "recoverycode",
    "backupcode",
    "recoveryphrase",
    "mnemonic",
    // The answer to a security question resets the account (`securityAnswer`,
    // `recovery_question_answer`; `secret_answer` is `secret` with its `answer`).
    "securityanswer",
    "securityquestionanswer",
    "recoveryanswer",
    "recoveryquestionanswer",
    "secretquestionanswer",
    // Azure API Management's subscription key (`Ocp-Apim-Subscription-Key`).
    "subscriptionkey",
    // redis-cli's password variable (`REDISCLI_AUTH=...`), as `PGPASSWORD` is Postgres'.
    "rediscliauth",
    // Key material by other names: an `hmac_key` (as this tool's own `[mask]` setting), a
    // `sharedKey`, an `aes_key`, a KMS import's `keyMaterial`, a BitLocker `recoveryKey`, a
    // storage `accountKey`, a `license_key`. Their ids and settings stay (`accountKeyId`,
    // `wrappingKeySpec`, `tls_key_path`).
    "hmackey",
    "mackey",
    "sharedkey",
    "aeskey",
    "symmetrickey",
    "wrappingkey",
    "decryptionkey",
    "keymaterial",
    "recoverykey",
    "licensekey",
    "webhookkey",
    "tlskey",
    "accountkey",
    // An Azure storage account's key by its other name (`storageKey`, `STORAGE_KEY`).
    "storagekey",
    // Codes and assertions that sign a user or a client in: an emailed `verification_code`,
    // an `unlock_code`, an OAuth `auth_code` and its PKCE `code_verifier`, a
    // `client_assertion` (a signed JWT), a SAML `SAMLResponse` (a signed assertion).
    "verificationcode",
    "unlockcode",
    "authcode",
    "codeverifier",
    "clientassertion",
    "samlresponse",
    "samlassertion",
    // API keys by other names: Datadog's `DD_APPLICATION_KEY` / `DD_APP_KEY` (and Laravel's
    // `APP_KEY`), Azure Functions' `x-functions-key`, Algolia's admin key, a PagerDuty
    // integration key.
    "applicationkey",
    "appkey",
    "functionskey",
    "adminkey",
    "integrationkey",
    // `user:password` by the name of its scheme (`basic_auth`, `basicAuth`, `http_auth`,
    // `proxy_auth`).
    "basicauth",
    "httpauth",
    "proxyauth",
    // `password` in Norwegian and Swedish (`lösenord` folds to `lsenord`).
    "passord",
    "losenord",
    "lsenord",
    // Passwords by their tools' names: OpenLDAP's `BINDPW` (`ldap.conf`), a `PGPASS` line
    // (`host:port:db:user:password`), npm's `_auth` (`NPM_AUTH`: base64 of `user:password`).
    // Their files' paths stay (`PGPASSFILE`).
    "bindpw",
    "pgpass",
    "npmauth",
    // Key material by short names (`CIPHER_KEY`, `ENC_KEY`, `ENCRYPT_KEY`, an mTLS
    // `CLIENT_KEY`, kubeconfig's `client-key-data`); their ids stay (`client_key_id`).
    "cipherkey",
    "enckey",
    "encryptkey",
    "clientkey",
];

/// Sensitive words that name one value (a code, a key, a URL): their strings and numbers are
/// masked, also in arrays (`recovery_codes`), but an object under them holds settings about the
/// secret or its public parts (`{"pin": {"minLength": 6}}`, `{"jwt": {"alg": "RS256"}}`,
/// CloudTrail's `{"accessKey": {"accessKeyId": ..., "status": ...}}`) and is walked as any
/// other. The [`WHOLE_WORDS`] are of this kind too.
const SCALAR_SECRET_WORDS: &[&str] = &[
    // Secrets, tokens, API keys and authorizations: an object under one of these names is the
    // record of one (a vendor's token list: its id, name, scopes, dates, who made it), walked
    // as settings, its unknown members masked.
    "secret",
    "token",
    "authorization",
    "apikey",
    // Credentials: an object of them is walked so, for the ids and times beside the secrets
    // (CloudTrail's `AssumeRole` answer: `credentials.accessKeyId`, hashed by its pattern, is
    // the key later records are signed with, and `expiration`; the session token and secret
    // key are masked by their names, anything unknown there as a secret).
    "credential",
    // Keys and tokens by other names (`awsAccessKey`; `accessKeyId` is the key's public id).
    "masterkey",
    "accesskey",
    "privkey",
    "jwt",
    "bearer",
    // Connection strings hold the database password (`postgres://app:pw@db`, `...;Password=`).
    "connectionstring",
    "databaseurl",
    "databaseuri",
    "dburl",
    "dburi",
];

/// Sensitive words (folded form) that are also pieces of ordinary words (`pinned`, `spinner`,
/// `seedling`, `setting`, `syntaxId`, `international_id`): sensitive only as whole words of the
/// key, begun and ended by a separator, a case change or the key's ends (`pin`, `user_pin`,
/// `pinCode`, `TOTPSeed`, `National_ID`). The usual suffix rule then applies, so settings about
/// them stay (`pin_enabled`, `otpType`, `National_ID_Type`).
const WHOLE_WORDS: &[&str] = &[
    "pin",
    // One-time passwords, and the seeds they are made from (`mfa_seed`, `totp_seed`, a wallet's
    // `seed`).
    "otp",
    "totp",
    "hotp",
    "seed",
    // A data source name, with its password (`SENTRY_DSN`, an ODBC DSN).
    "dsn",
    // Key-encryption and data-encryption keys (`kek`, `wrapped_dek`).
    "kek",
    "dek",
    // A personal access token (`AZURE_DEVOPS_EXT_PAT`, `github_pat`); `clave`, a password in
    // Spanish.
    "pat",
    "clave",
    // Credentials, short (`creds: bob:pw`, `db_creds`).
    "creds",
    // PII by name: national and taxpayer ids (an SSN is one), whatever their form.
    "nationalid",
    "taxid",
    "tin",
    // A MAC key, or a MAC made with it, by the algorithm's name alone (`HMAC`; `hmac_key` is
    // in [`SENSITIVE_WORDS`]; `hmacAlgorithm` stays); a password hash's pepper, secret by
    // definition.
    "hmac",
    "pepper",
    // A pre-shared key (`psk`, `wpa_psk`, an IPsec tunnel's `psk`; QA).
    "psk",
];

/// PII by name (QA), whole words of the key as [`WHOLE_WORDS`] are: a bank account's IBAN, a
/// passport (`passport`, `passportNumber`; its `passportCountry` stays), a date of birth
/// (`dob`, `date_of_birth`, `birthDate`), a driver's licence, a taxpayer id. Their values hold
/// digits ([`names_numbered_pii`]).
const NUMBERED_PII_WORDS: &[&str] = &[
    "iban",
    "passport",
    "dob",
    "dateofbirth",
    "birthdate",
    "birthday",
    "driverslicense",
    "driverlicense",
    "driverslicence",
    "driverlicence",
    "taxpayerid",
];

/// Sensitive words (folded form) that name a secret only as the key's last word, after another
/// word that says what it is for (`COOKIE_SALT`, `SIGNING_SALT`, `signingSalt`): a salt alone is
/// stored beside its hash and no secret (`salt`, `salt_rounds`), and the word is inside others
/// (`salted`, `saltstack`, `basalt`).
const QUALIFIED_WORDS: &[&str] = &["salt"];

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
    "b32",
    "base32",
    "hex",
    "base64",
    "pem",
    "der",
    "bytes",
    "encoded",
    // Secrets Manager's `SecretBinary` beside its `SecretString`.
    "binary",
    "answer",
    "new",
    "old",
    "current",
    "confirmation",
    "confirm",
    "input",
    "entered",
    // Rails' `SECRET_KEY_BASE` (`base` alone would make `seed_database` a seed's data).
    // (Versions and years, `JWT_SECRET_V2`, `api_key_2024`, are read by `version_suffix_len`.)
    "keybase",
    // The number of an id (`national_id_number`, `ssnNo`), the words of a seed (`seed_phrase`).
    "number",
    "no",
    "phrase",
    // A hint or reminder of a password often gives it away (`password_hint: dog's name`).
    "hint",
    "reminder",
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
    // A public key's material (`publicKeyMaterial`, an imported SSH key that analysts look
    // for) is no secret (`is_reference` allows `public` before that word only).
    "public",
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
    /// Pattern ids of the [`WHOLE_WORDS`] in `automaton`.
    whole_words: std::ops::Range<usize>,
    /// Pattern ids of the [`QUALIFIED_WORDS`] in `automaton`.
    qualified_words: std::ops::Range<usize>,
    /// Pattern ids of the [`SCALAR_SECRET_WORDS`], [`WHOLE_WORDS`] and [`QUALIFIED_WORDS`] in
    /// `automaton`.
    scalar_words: std::ops::Range<usize>,
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
        let scalar_start = words.len();
        words.extend(SCALAR_SECRET_WORDS.iter().map(|w| w.to_string()));
        let whole_words = words.len()..words.len() + WHOLE_WORDS.len() + NUMBERED_PII_WORDS.len();
        words.extend(
            WHOLE_WORDS
                .iter()
                .chain(NUMBERED_PII_WORDS)
                .map(|w| w.to_string()),
        );
        let qualified_words = words.len()..words.len() + QUALIFIED_WORDS.len();
        words.extend(QUALIFIED_WORDS.iter().map(|w| w.to_string()));
        let scalar_words = scalar_start..qualified_words.end;
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
            whole_words,
            qualified_words,
            scalar_words,
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
        let short_word =
            ends_with_short_password_word(key) || names_a_password_in_another_script(key);
        let mut buf = [0u8; FOLD_BUF];
        if key.len() <= FOLD_BUF {
            let n = fold_into(key, &mut buf);
            self.is_sensitive_folded(key, &buf[..n], short_word)
        } else {
            self.is_sensitive_folded(key, normalize_key(key).as_bytes(), short_word)
        }
    }

    /// False when `key` cannot be sensitive, even once masking markers are taken out of it: no
    /// sensitive word starts anywhere in it and it has no `[` (a necessary condition of
    /// [`Self::is_sensitive`] of the key without its markers, cheaper than it and than a lookup).
    pub(crate) fn may_be_sensitive(&self, key: &str) -> bool {
        any_word_start(&self.word_starts, key.as_bytes())
            || ends_with_short_password_word(key)
            || names_a_password_in_another_script(key)
    }

    /// Whether an object under the sensitive `key` is masked whole (`credentials`, `secret`,
    /// `password`), rather than walked as settings about a value-like secret
    /// ([`SCALAR_SECRET_WORDS`]: `pin`, `jwt`, `accessKey`).
    pub(crate) fn masks_objects(&self, key: &str) -> bool {
        if ends_with_short_password_word(key) {
            return true;
        }
        let folded = normalize_key(key);
        let whole = self
            .sensitive_words(key, folded.as_bytes())
            .any(|pattern| !self.scalar_words.contains(&pattern));
        whole
    }

    /// Whether `key`, in the settings object of the value-like secret `of` (`{"pin": {...}}`,
    /// [`Self::masks_objects`]), names a setting an analyst needs, which stays: an id, a time,
    /// a state, a length, an algorithm, who and where (`minLength`, `status`, `alg`, a JWT's
    /// `claims`, an OTP's `channel`, CloudTrail's `accessKey.{accessKeyId, userName, status,
    /// createDate}`). Every other value there is taken for the secret or a part of it (fail
    /// closed: `value`, `keyMaterial`, `pkcs8`, `xprv`, a JWK's `d`), and so is a setting-like
    /// name that names the secret with `of` (`pin_current`, `seed_hex`) or the `id` of a
    /// national or tax id.
    pub(crate) fn is_secret_setting(&self, of: &str, key: &str) -> bool {
        const SETTINGS: &[&str] = &[
            "alg",
            "algorithm",
            "kid",
            "iss",
            "issuer",
            "aud",
            "audience",
            "sub",
            "scope",
            "scopes",
            "user",
            "owner",
            "state",
            "enabled",
            "disabled",
            "required",
            "kind",
            "digits",
            "period",
            "interval",
            "complexity",
            "policy",
            "format",
            "version",
            "counter",
            "region",
            "ttl",
            "lifetime",
            "label",
            "description",
            "provider",
            "method",
            "use",
            "kty",
            "crv",
            "email",
            "groups",
            "group",
            "roles",
            "role",
            "exp",
            "iat",
            "nbf",
            "amr",
            "acr",
            "azp",
            "claims",
            "validation",
            "result",
            "reason",
            "outcome",
            "ip",
            "country",
            "city",
            "location",
            "channel",
            "deliveredto",
            "attempts",
            "maxattempts",
            "tables",
            "rows",
            "database",
            "schema",
            "file",
            "duration",
            "environment",
            "job",
            "exitcode",
            "repository",
            "repo",
            "permission",
            "permissions",
            "app",
            "application",
            "client",
            "useragent",
            "path",
            "project",
            "bucket",
            "host",
            "hostname",
            "port",
            "server",
            "timeout",
            "purpose",
            "device",
            "remaining",
            "tenant",
            "organization",
            "account",
            "service",
            "action",
            "expiration",
            "expiry",
            "expires",
        ];
        const ENDINGS: &[&str] = &[
            "id", "ids", "at", "by", "date", "time", "type", "count", "length", "status", "name",
            "ms", "seconds", "minutes", "hours", "days",
        ];
        let folded = normalize_key(key);
        let setting =
            SETTINGS.contains(&folded.as_str()) || ENDINGS.iter().any(|e| folded.ends_with(e));
        let personal_id = folded == "id"
            && ["nationalid", "taxid", "tin"]
                .iter()
                .any(|w| normalize_key(of).ends_with(w));
        setting && !personal_id && !self.is_sensitive(&format!("{of}_{key}"))
    }

    /// `folded`: `key` folded. `short_word`: the key ends with one of [`SHORT_PASSWORD_WORDS`]
    /// as a word of its own, which folding can no longer tell (nor where [`WHOLE_WORDS`] begin
    /// and end: that is read from `key`).
    fn is_sensitive_folded(&self, key: &str, folded: &[u8], short_word: bool) -> bool {
        let hit = short_word
            || (any_word_start(&self.word_starts, folded)
                && self.sensitive_words(key, folded).next().is_some());
        hit && !self.allow.iter().any(|a| a.as_bytes() == folded)
    }

    /// The pattern ids of the sensitive words that make `key` (folded: `folded`) sensitive.
    fn sensitive_words<'a>(
        &'a self,
        key: &'a str,
        folded: &'a [u8],
    ) -> impl Iterator<Item = usize> + 'a {
        // Overlapping: `otp` ends where `totp` does, and either may be the one that counts.
        self.automaton
            .find_overlapping_iter(folded)
            .filter(move |m| {
                let before = &folded[..m.start()];
                let after = &folded[m.end()..];
                let pattern = m.pattern().as_usize();
                let qualified = self.qualified_words.contains(&pattern);
                (!(self.whole_words.contains(&pattern) || qualified)
                    || (is_word_boundary(key, m.start()) && is_word_boundary(key, m.end())))
                    && (!qualified || (m.start() > 0 && after.is_empty()))
                    && is_secret_suffix(after)
                    && !is_reference(before, &folded[m.start()..m.end()])
            })
            .map(|m| m.pattern().as_usize())
    }
}

/// Whether `before` ends with a qualifier that makes `word` a reference to a secret. A hashed
/// password is not one: passwords are few and guessable, so their hashes are cracked offline (a
/// bcrypt `hashed_password` is as good as the password), while a hashed token (random, long)
/// is only an id for it.
fn is_reference(before: &[u8], word: &[u8]) -> bool {
    REFERENCE_PREFIXES.iter().any(|p| {
        before.ends_with(p.as_bytes())
            && !(*p == "hashed" && PASSWORD_WORDS.contains(&word))
            // `publicKeyMaterial` is a public key; `public_secret` is still a secret.
            && (*p != "public" || word == b"keymaterial")
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

/// Whether `key` ends with a password word ([`PASSWORD_WORDS`]) as a word of its own
/// (`passphrase`, `db_password`, `wifiPassphrase`).
pub(crate) fn ends_with_password_word(key: &str) -> bool {
    PASSWORD_WORDS
        .iter()
        .filter_map(|w| std::str::from_utf8(w).ok())
        .any(|w| ends_with_word(key, w))
}

/// `password` in scripts that folding drops, and in Latin-script languages whose word loses a
/// letter to it (`hasło`, `şifre`, `jelszó`): a tenant's custom fields are named in its language
/// (`{"пароль": ...}`).
pub(crate) const OTHER_SCRIPT_PASSWORD_WORDS: &[&str] = &[
    "пароль",
    "密码",
    "密碼",
    "パスワード",
    "暗証番号",
    "비밀번호",
    "hasło",
    "şifre",
    // Written with their own letters in text (`lösenord: x`, `CONTRASEÑA:`): their folded forms
    // are among the key words, the text pattern reads these.
    "lösenord",
    "contraseña",
    "jelszó",
    "κωδικός",
    "סיסמה",
];

/// Whether `key`, lowercased, holds one of [`OTHER_SCRIPT_PASSWORD_WORDS`] (ASCII keys never do).
fn names_a_password_in_another_script(key: &str) -> bool {
    !key.is_ascii() && {
        let lower = key.to_lowercase();
        OTHER_SCRIPT_PASSWORD_WORDS
            .iter()
            .any(|w| lower.contains(w))
    }
}

/// Whether `key` names personal data whose values are numbers or hold digits (an IBAN, a date
/// of birth, a passport, a driver's licence, a taxpayer id): in text, a value without a digit
/// is a setting or prose (`dob: optional`, `iban: not set`; QA).
pub(crate) fn names_numbered_pii(key: &str) -> bool {
    // The key's last word, or the one before its `number` (`adobe_password` holds `dob`, and
    // is no date of birth).
    let folded = normalize_key(key);
    let head = ["number", "no"]
        .iter()
        .find_map(|suffix| folded.strip_suffix(suffix))
        .unwrap_or(&folded);
    NUMBERED_PII_WORDS
        .iter()
        .any(|w| folded.ends_with(w) || head.ends_with(w))
}

/// Whether `key` names a session key (`SESSION_KEY`, `sessionKey`, `x-session-keys`).
pub(crate) fn names_a_session_key(key: &str) -> bool {
    let folded = normalize_key(key);
    folded.ends_with("sessionkey") || folded.ends_with("sessionkeys")
}

/// `after` is empty or made only of [`SECRET_SUFFIXES`] words and versions.
fn is_secret_suffix(after: &[u8]) -> bool {
    after.is_empty()
        || version_suffix_len(after).is_some_and(|n| is_secret_suffix(&after[n..]))
        || SECRET_SUFFIXES
            .iter()
            .any(|w| after.starts_with(w.as_bytes()) && is_secret_suffix(&after[w.len()..]))
}

/// The length of the version or year that `after` starts with, if it does: digits, after a
/// `v` or not (`JWT_SECRET_V2`, `SIGNING_SECRET_V1`, `api_key_2024`, `password2`): a secret's
/// rotations, each as secret as the first.
fn version_suffix_len(after: &[u8]) -> Option<usize> {
    let start = usize::from(after.first() == Some(&b'v'));
    let digits = after[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    (digits > 0).then_some(start + digits)
}

/// Whether the last word of `key` is one of [`SHORT_PASSWORD_WORDS`] (`db_pass`, `smtpPass`,
/// `ADMIN_PW`; not `bypass`).
fn ends_with_short_password_word(key: &str) -> bool {
    SHORT_PASSWORD_WORDS.iter().any(|w| ends_with_word(key, w))
}

/// Whether `key` ends with `word` (in any case) as a word of its own: the whole key, or after
/// a separator or a lower-to-upper case change (`db_pass`, `smtpPass`, `userPin`; not
/// `bypass`, `shippin`).
pub(crate) fn ends_with_word(key: &str, word: &str) -> bool {
    let (bytes, n) = (key.as_bytes(), word.len());
    if bytes.len() < n || !bytes[bytes.len() - n..].eq_ignore_ascii_case(word.as_bytes()) {
        return false;
    }
    let word = &bytes[bytes.len() - n..];
    match bytes.len().checked_sub(n + 1).map(|i| bytes[i]) {
        None => true,
        Some(b) if !b.is_ascii_alphanumeric() => true,
        // `smtpPass`: a lower-case letter or digit, then the word capitalized.
        Some(b) => (b.is_ascii_lowercase() || b.is_ascii_digit()) && word[0].is_ascii_uppercase(),
    }
}

/// Whether a word of `key` begins or ends before its `pos`-th letter or digit (`pos` counts
/// what folding keeps; the key's length in those is its end): at either end of the key, where
/// folding dropped a byte (`user_pin`, `tax-id`), at a change to upper case (`userPin`,
/// `TOTPSeed`: `S` is followed by lower case), or between letters and digits (`cvv2`).
fn is_word_boundary(key: &str, pos: usize) -> bool {
    let bytes = key.as_bytes();
    let mut kept = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| b.is_ascii_alphanumeric())
        .map(|(i, _)| i)
        .skip(pos.saturating_sub(1));
    let (Some(prev), Some(next)) = (kept.next().filter(|_| pos > 0), kept.next()) else {
        return true;
    };
    if next != prev + 1 {
        return true;
    }
    let (a, b) = (bytes[prev], bytes[next]);
    let upper_after_lower =
        (a.is_ascii_lowercase() || a.is_ascii_digit()) && b.is_ascii_uppercase();
    let acronym_then_word = a.is_ascii_uppercase()
        && b.is_ascii_uppercase()
        && bytes.get(next + 1).is_some_and(u8::is_ascii_lowercase);
    upper_after_lower || acronym_then_word || a.is_ascii_digit() != b.is_ascii_digit()
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
            "password_hint",
            "passwordHint",
            "password_reminder",
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
    fn card_codes_one_time_codes_seeds_and_connection_strings_are_sensitive() {
        let m = matcher();
        for k in [
            "cvv",
            "CVV2",
            "card_cvv",
            "cardCvc",
            "cvc",
            "security_code",
            "psk",
            "wpa_psk",
            "ipsecPsk",
            "pin",
            "PIN",
            "user_pin",
            "newPin",
            "pin_code",
            "pinCode",
            "pin_number",
            "otp",
            "OTP",
            "otp_code",
            "smsOtp",
            "totp",
            "totp_code",
            "mfa_code",
            "mfaCode",
            "mfa_seed",
            "totp_seed",
            "TOTPSeed",
            "totpSeed",
            "recovery_codes",
            "backup_codes",
            "backupCodes",
            "recoveryPhrase",
            "mnemonic",
            "mnemonicPhrase",
            "seed",
            "wallet_seed",
            "seed_phrase",
            "seedPhrase",
            "master_key",
            "masterKey",
            "access_key",
            "accessKey",
            "awsAccessKey",
            "privKey",
            "priv_key",
            "jwt",
            "id_jwt",
            "bearer",
            "connectionString",
            "connection_string",
            "ConnectionStrings",
            "dsn",
            "sentry_dsn",
            "SENTRY_DSN",
            "DATABASE_URL",
            "databaseUri",
        ] {
            assert!(m.is_sensitive(k), "{k} should be sensitive");
        }
    }

    #[test]
    fn national_ids_and_other_pii_are_sensitive_but_not_their_types() {
        let m = matcher();
        for k in [
            "National_ID",
            "nationalId",
            "national_id",
            "national_id_number",
            "tax_id",
            "taxId",
            "TaxID",
            "tin",
            "TIN",
            "vendor_tin",
            "passport_number",
            "passportNo",
            "ssn_no",
            "ssnNumber",
            "iban",
            "IBAN",
            "payee_iban",
            "passport",
            "dob",
            "DOB",
            "user_dob",
            "date_of_birth",
            "dateOfBirth",
            "birthDate",
            "drivers_license",
            "driverLicenseNumber",
            "taxpayer_id",
            "taxpayerId",
        ] {
            assert!(m.is_sensitive(k), "{k} should be sensitive");
        }
        for k in [
            "National_ID_Type",
            "nationalIdCountry",
            "tax_id_type",
            "taxIdType",
            "international_id",
            "syntaxId",
            "tin_type",
            "tinder",
            "setting",
            "invoice_settings",
            "destination",
            "passportCountry",
            "passport_expiry",
            "caribbean",
            "ibanValidated",
            "dobby",
            "adobe",
            "birthdate_verified",
            "driverLicenseState",
        ] {
            assert!(!m.is_sensitive(k), "{k} should not be sensitive");
        }
    }

    #[test]
    fn short_words_inside_other_words_and_settings_about_secrets_are_not_secrets() {
        let m = matcher();
        for k in [
            "pinned",
            "pinned_by",
            "ping",
            "spinner",
            "pins",
            "pin_enabled",
            "pinRequired",
            "pinLength",
            "otp_enabled",
            "otpType",
            "totp_enabled",
            "hotpCounterSync",
            "seeded",
            "seedling",
            "seed_id",
            "seeds",
            "jwt_issuer",
            "jwtAlgorithm",
            "jwtPayload",
            "bearer_type",
            "bearerFormat",
            "dsn_type",
            "password_snapshot",
            "accessKeyId",
            "access_key_id",
            "AccessKeyMetadata",
            "masterKeyId",
            "cvc_check",
            "mfa",
            "mfa_code_sent",
            "recovery_codes_regenerated",
            "connectionStringName",
            "mnemonicType",
        ] {
            assert!(!m.is_sensitive(k), "{k} should not be sensitive");
        }
    }

    #[test]
    fn word_boundaries_follow_separators_case_and_digits() {
        let starts = |key: &str| -> Vec<usize> {
            (0..=normalize_key(key).len())
                .filter(|p| is_word_boundary(key, *p))
                .collect()
        };
        assert_eq!(starts("user_pin"), [0, 4, 7]);
        assert_eq!(starts("userPin"), [0, 4, 7]);
        assert_eq!(starts("TOTPSeed"), [0, 4, 8]);
        assert_eq!(starts("cvv2"), [0, 3, 4]);
        assert_eq!(starts("pinned"), [0, 6]);
        assert_eq!(starts(""), [0]);
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
