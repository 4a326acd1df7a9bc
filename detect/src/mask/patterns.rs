//! Value patterns: secrets and PII found inside strings, replaced in place.
//!
//! Cost model: a clean value pays one Aho-Corasick pass over the literal anchors of all patterns
//! (`-----begin`, `ghp_`, `xox`, `eyj`, `akia`, `bearer`, sensitive key words, `@`, ...) and one
//! byte loop looking for digit runs long enough to be a card number or an SSN. Only the patterns
//! whose anchor was seen run their regex, and nothing is allocated unless something is replaced.
//! Each regex match then goes through a verifier (Luhn and card-network prefix, SSN ranges, the
//! key-name rule for `name=value`, randomness for `Bearer`), which keeps false positives away from
//! ordinary audit values.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use base64::Engine;
use regex::Regex;
use std::borrow::Cow;

use super::config::PatternKind;
use super::keys::KeyMatcher;
use crate::DetectError;

/// A set of pattern kinds, one bit per [`PatternKind::index`].
pub(crate) type KindSet = u32;

pub(crate) fn bit(kind: PatternKind) -> KindSet {
    1 << kind.index()
}

/// How to read one pattern's matches.
struct PatternSpec {
    kind: PatternKind,
    regex: &'static str,
    /// Capture groups that hold the secret; the first one that matched is replaced. Empty means
    /// the whole match (group 0).
    secret_groups: &'static [usize],
    /// Literal anchors (matched ASCII case-insensitively) one of which must occur for the regex to
    /// run. Empty: the kind has its own prefilter (digit runs).
    anchors: &'static [&'static str],
}

/// Value alternatives shared by the `name = value` patterns: double-quoted (possibly truncated at
/// end of text), JSON-escaped quoted (`\"...\"`, text that is itself a JSON string), single-quoted,
/// or a bare word (optionally after an auth scheme, so `Authorization: Bearer x` masks `Bearer x`).
/// A bare word may open with a bracketed placeholder glued to more of it (`<TOKEN>realsecret`):
/// the placeholder alone (`<TOKEN>`) is no value, but what is glued after it may be the secret.
/// So for the placeholder escaped for HTML (`&lt;TOKEN&gt;realsecret`).
/// A quoted value ends at its closing quote, or at the end of its line when it has none there:
/// an unclosed quote (`token = "abc` in a parse error's snippet) takes its line, not the lines
/// after it up to the next quote somewhere (which hid the rest of the error).
macro_rules! value_alternatives {
    () => {
        r#"(?:"((?:[^"\\\r\n]|\\.)*)(?:"|$|\r|\n)|\\"((?:[^"\\\r\n]|\\[^"])*)(?:\\"|$|\r|\n)|'([^'\r\n]*)(?:'|$|\r|\n)|((?i:(?:bearer|basic|ssws|token|digest|apikey|api-key|splunk|ntlm|negotiate|geniekey|sso-key|key|oauth)\s+)?(?:<[A-Za-z][A-Za-z_. -]{0,62}>|&lt;[A-Za-z][A-Za-z_. -]{0,62}&gt;)?[^\s,&;}"'<>\\]+))"#
    };
}

const SPECS: [PatternSpec; PatternKind::COUNT] = [
    PatternSpec {
        kind: PatternKind::PemPrivateKey,
        // Group 1: a PEM private key. A PuTTY key file (`PuTTY-User-Key-File-2: ssh-rsa`)
        // keeps its private key as base64 lines after `Private-Lines: <n>` (group 2: whole
        // lines, with real or escaped line breaks) and its MAC (or a version 1 file's hash)
        // after `Private-MAC:` (group 3); its public lines and comment stay. The names in any
        // case; the lines may be broken by `<br>` too (the file pasted into HTML), also escaped
        // for HTML (`&lt;br&gt;`, `&amp;lt;br&amp;gt;`: the page's text held as HTML again).
        regex: concat!(
            r"(-----BEGIN[A-Z0-9 ]* PRIVATE KEY(?: BLOCK)?-----(?s:.*?)(?:-----END[A-Z0-9 ]* PRIVATE KEY(?: BLOCK)?-----|$))",
            r"|(?i:Private-Lines):[ \t]*[0-9]+[ \t]*(?:(?i:<br\s*/?>|&(?:amp;)?lt;br\s*/?&(?:amp;)?gt;)(?:\r?\n)?|\r?\n|\\r\\n|\\n)([A-Za-z0-9+/=]+(?:(?:(?i:<br\s*/?>|&(?:amp;)?lt;br\s*/?&(?:amp;)?gt;)(?:\r?\n)?|\r?\n|\\r\\n|\\n)[A-Za-z0-9+/=]+)*)(?:(?i:<br\s*/?>|&(?:amp;)?lt;br\s*/?&(?:amp;)?gt;)|\r?\n|\\r\\n|\\n|\r|$)",
            r"|(?i:Private-(?:MAC|Hash)):[ \t]*([0-9a-fA-F]{20,})",
            // Group 4: a DER private key's base64 without its PEM lines (pasted into a setting,
            // or a PEM's body cut out of it): an RSA, EC or Ed25519 key in PKCS#8, an RSA key in
            // PKCS#1 or an EC key in SEC1, told by the algorithm and version bytes at its start
            // (a public key's `SubjectPublicKeyInfo` has a BIT STRING there, `AAOC`, not the
            // private key's OCTET STRING, `AASC`).
            r"|((?:MI[IG][A-Za-z0-9+/]{1,3}[A-Za-z0-9+/]{0,8}(?:ADANBgkqhkiG9w0BAQEFAASC|IBAAKCA[QgY]EA|AgEAMBMGByqGSM49AgEGCC)|MC4CAQAwBQYDK2VwBCIEI|MHcCAQEEI|b3BlbnNzaC1rZXktdjE|MII[A-Za-z0-9+/]{3}IBAzCC)[A-Za-z0-9+/=]{40,}(?:(?:\\r\\n|\\n|\r?\n)[A-Za-z0-9+/=]+)*)",
            // Group 5: the SSH.com (SSH2) private key file (four dashes, not five).
            r"|(---- BEGIN SSH2 (?:ENCRYPTED )?PRIVATE KEY ----(?s:.*?)(?:---- END SSH2 (?:ENCRYPTED )?PRIVATE KEY ----|$))",
        ),
        secret_groups: &[1, 2, 3, 4, 5],
        anchors: &[
            "-----begin",
            "private-lines:",
            "private-mac:",
            "private-hash:",
            "adanbgkqhkig9w0baqefaasc",
            "ibaakcaqea",
            "ibaakcagea",
            "ibaakcayea",
            "ageambmgbyqgsm49agegcc",
            "mc4caqawbqydk2vwbciei",
            "mhccaqeei",
            // An OpenSSH private key's body (base64 of `openssh-key-v1`) and a PKCS#12 (PFX)
            // bundle's (version 3), without their armour.
            "b3blbnnzac1rzxktdje",
            "ibazcc",
            "---- begin ssh2",
        ],
    },
    PatternSpec {
        kind: PatternKind::SecretAssignment,
        // Group 1 is the name; the verifier applies the key-name rule to it. Group 2 is a prose
        // separator (`password was X`, `secret set to X`, `password reset to X`), accepted only
        // before a value that looks generated; it is empty for a password word followed by its
        // value (`with password Hunter2x`). The name may be qualified by whom it is for
        // (`password for bob: X`, `the password for svc_deploy is X`), which makes it prose too,
        // in up to four words before `:`, `is` or `was` (`password for the service account is
        // X`, `password for CORP\bob: X`, `for user "bob"`, `for bob's account`; QA), and `is
        // now X` too. Other languages' `is` count as `is` (`la contraseña es X`, `Passwort ist X`).
        // A change of the value names its old value first (`password changed from X to Y`,
        // `passcode updated: 'X' -> 'Y'`): taken only with the new value after it, which `find`
        // masks too (`change_new_value`).
        // A YAML block scalar (`password: |` and the more indented lines after it) is matched up
        // to its first line; `yaml_block` takes the whole block. Its line breaks may be escaped
        // (`password: >\n  x`, a YAML file in a logged JSON body).
        // Besides `:` and `=`: Ruby's `=>` (`"password"=>"x"`), quotes escaped for HTML
        // (`password&quot;:&quot;x`, escaped twice: `&amp;quot;`) and an XML element
        // (`<Password>x</Password>`, also with a namespace prefix and attributes:
        // `<wsse:Password Type="...">x`; the verifier wants the `<`; its text may be a CDATA
        // section; an arrow, `->` or `=>`, ends no start tag). And a name/value pair held as
        // text, where the name is the pair's name: `{"name": "DB_PASSWORD", "value": "x"}` (JSON after a
        // prefix, which the walk does not parse) and YAML's `- name: DB_PASSWORD` with
        // `value: x` on the next line (a Kubernetes manifest's `env`), or XML's `<add
        // key="DbPassword" value="x" />`. A name may be two words of a label (`API key: x`,
        // `Private key: x`, `seed phrase: ...`); LDIF writes base64 values after `::`.
        regex: concat!(
            r#"((?-u:\b)(?i:(?:api|private|secret|access|seed|recovery|signing|encryption|master)[ \t]+(?:key|phrase|token))|(?i:пароль|contraseña|lösenord(?:et)?|date[ \t]+of[ \t]+birth|birth[ \t]+date|driver(?:'?s)?[ \t]+licen[cs]e|密码|密碼|パスワード|暗証番号|비밀번호|hasło|şifre|jelszó|κωδικός|סיסמה|mot[ \t]+de[ \t]+passe)|(?-u:\b)[A-Za-z0-9_.-]{2,80})(?:\s+(?i:for)(?:\s+[^\s:：]{1,80}){2,4}?(?:[ \t]*[:：][ \t]*|\s+(?i:is|was)(?:\s+(?i:now|(?:set|changed|reset|updated)\s+to))?[ \t]*:?\s+)|(?:\s+(?i:for)\s+[A-Za-z0-9_.@+\\'"()-]{1,80})?(?:["']?[ \t]*:[ \t]*[|>][0-9+-]{0,2}[ \t]*(?:(?:#[^\n]*)?\r?\n\s*|(?:#[^\n\\]*)?(?:\\+r)?\\+n[ \t]*)|\\*["']?\s*,\s*\\*["']?(?i:value)\\*["']?\s*:\s*|\\*["'][ \t]+(?i:value)[ \t]*=[ \t]*|[ \t]*(?:\r?\n|(?:\\+r)?\\+n)[ \t]*(?i:value)[ \t]*:[ \t]*|\[?\]?\\?(?:["']|&(?:amp;)?(?:quot|#34|#39|apos);)?\s*(?:=>|::|[:=：])\s*(?:&(?:amp;)?(?:quot|#34|#39|apos);)?)|(?:\s(?:[^<>]{0,199}[^<>=-])?)?>\s*(?:<!\[CDATA\[)?|(?:\s+(?i:for)\s+[A-Za-z0-9_.@+\\'"()-]{1,80})?\s+((?i:(?:(?:(?:is|was|has\s+been)\s+)?(?:set|changed|reset|updated)\s+(?:to|from)|(?:set|changed|reset|updated):|(?:is|was)(?:\s+now)?|to|es|est|ist|è|é|är|er|jest):?\s+)?))"#,
            value_alternatives!()
        ),
        secret_groups: &[3, 4, 5, 6],
        anchors: &[
            "password",
            "passwd",
            "passphrase",
            "passcode",
            "pwd",
            // Short password names are sensitive as a key's last word only (`db_pass`, `pw`,
            // not `bypass`): the key-name rule judges the name these anchors wake the regex for.
            "pass",
            "pw",
            "secret",
            "token",
            "authorization",
            "cookie",
            "api_key",
            "api-key",
            "apikey",
            "private_key",
            "private-key",
            "privatekey",
            "credential",
            "auth_key",
            "auth-key",
            "auth.key",
            "authkey",
            // Key names are folded (`_`, `-`, `.` and case ignored) before the key-name rule;
            // compounds are listed with each separator, since only a name holding an anchor is
            // checked.
            "api.key",
            "private.key",
            // Labels of two words (`API key: x`, `Seed phrase: ...`).
            "api key",
            "private key",
            "secret key",
            "access key",
            "access token",
            "signing key",
            "encryption key",
            "master key",
            "seed phrase",
            "recovery phrase",
            "session_key",
            "session-key",
            "session.key",
            "sessionkey",
            "signing_key",
            "signing-key",
            "signing.key",
            "signingkey",
            "encryption_key",
            "encryption-key",
            "encryption.key",
            "encryptionkey",
            // `Ocp-Apim-Subscription-Key: ...` in a header line, `REDISCLI_AUTH=...` in an
            // environment.
            "subscription-key",
            "subscription_key",
            "subscriptionkey",
            "rediscli_auth",
            "passwort",
            "kennwort",
            "contrasena",
            "contraseña",
            // (and `password` in other scripts and languages, the key rule's
            // `OTHER_SCRIPT_PASSWORD_WORDS`, added in `Patterns::new`)
            "mot_de_passe",
            // (and the names of several words, `NAMES_OF_WORDS`, added in `Patterns::new`)
            // PII by name (QA: masked as JSON keys only): `iban=`, `?dob=`, `birthDate: `.
            "iban",
            "dob",
            "date_of_birth",
            "dateofbirth",
            "birth_date",
            "birthdate",
            "birthday",
            "drivers_license",
            "driver_license",
            "driverslicense",
            "taxpayer",
            "driverlicense",
            // Key words the key matcher has that occur in text as `name=value` too (`cvv=`,
            // `SENTRY_DSN=`); the short ones only with a separator after them, since `pin`,
            // `otp` and `seed` are inside common words (`shipping`).
            "cvv",
            "cvc",
            "mnemonic",
            "masterkey",
            "master_key",
            "master-key",
            "master.key",
            "databaseurl",
            "database_url",
            "database-url",
            "connectionstring",
            "connection_string",
            "connection-string",
            "dsn=",
            "dsn:",
            "dsn\"",
            "dsn'",
            "dsn>",
            "dsn&",
            "pin=",
            "pin:",
            "pin\"",
            "pin'",
            "pin>",
            "pin&",
            "otp=",
            "otp:",
            "otp\"",
            "otp'",
            "otp>",
            "otp&",
            // A PIN or code in prose (`user pin changed from 1234 to 5678`, `otp is 902114`):
            // the verifier wants the name whole and a PIN-shaped value (`is_pin_value`).
            "pin ",
            "otp ",
            "seed=",
            "seed:",
            "seed\"",
            "seed'",
            "seed>",
            "seed&",
            "jwt=",
            "jwt:",
            "jwt\"",
            "jwt'",
            "jwt>",
            "jwt&",
            "psk=",
            "psk:",
            "psk\"",
            "psk'",
            "accesskey",
            "access_key",
            "access-key",
            "access.key",
            "taxid",
            "tax_id",
            "tax-id",
            "nationalid",
            "national_id",
            "national-id",
            "mot-de-passe",
            "motdepasse",
            "mot.de.passe",
            "senha",
            "wachtwoord",
            "salasana",
            // The key matcher's names for key material, codes and assertions, each spelt as
            // the compounds above are.
            "hmac_key",
            "hmac-key",
            "hmac.key",
            "hmackey",
            "mac_key",
            "mac-key",
            "mac.key",
            "mackey",
            "shared_key",
            "shared-key",
            "shared.key",
            "sharedkey",
            "aes_key",
            "aes-key",
            "aes.key",
            "aeskey",
            "symmetric_key",
            "symmetric-key",
            "symmetric.key",
            "symmetrickey",
            "wrapping_key",
            "wrapping-key",
            "wrapping.key",
            "wrappingkey",
            "decryption_key",
            "decryption-key",
            "decryption.key",
            "decryptionkey",
            "key_material",
            "key-material",
            "key.material",
            "keymaterial",
            "recovery_key",
            "recovery-key",
            "recovery.key",
            "recoverykey",
            "license_key",
            "license-key",
            "license.key",
            "licensekey",
            "webhook_key",
            "webhook-key",
            "webhook.key",
            "webhookkey",
            "tls_key",
            "tls-key",
            "tls.key",
            "tlskey",
            "account_key",
            "account-key",
            "account.key",
            "accountkey",
            "basic_auth",
            "basic-auth",
            "basicauth",
            "http_auth",
            "http-auth",
            "httpauth",
            "proxy_auth",
            "proxy-auth",
            "proxyauth",
            "creds",
            "storage_key",
            "storage-key",
            "storage.key",
            "storagekey",
            "verification_code",
            "verification-code",
            "verification.code",
            "verificationcode",
            "unlock_code",
            "unlock-code",
            "unlock.code",
            "unlockcode",
            "auth_code",
            "auth-code",
            "auth.code",
            "authcode",
            "code_verifier",
            "code-verifier",
            "code.verifier",
            "codeverifier",
            "client_assertion",
            "client-assertion",
            "client.assertion",
            "clientassertion",
            "saml_response",
            "saml-response",
            "saml.response",
            "samlresponse",
            "saml_assertion",
            "saml-assertion",
            "saml.assertion",
            "samlassertion",
            "kek=",
            "kek:",
            "kek\"",
            "kek'",
            "kek>",
            "kek&",
            "dek=",
            "dek:",
            "dek\"",
            "dek'",
            "dek>",
            "dek&",
            "application_key",
            "application-key",
            "application.key",
            "applicationkey",
            "app_key",
            "app-key",
            "app.key",
            "appkey",
            "functions_key",
            "functions-key",
            "functions.key",
            "functionskey",
            "admin_key",
            "admin-key",
            "admin.key",
            "adminkey",
            "integration_key",
            "integration-key",
            "integration.key",
            "integrationkey",
            "passord",
            "losenord",
            "lsenord",
            "pat=",
            "pat:",
            "pat\"",
            "pat'",
            "pat>",
            "pat&",
            "clave=",
            "clave:",
            "clave\"",
            "clave'",
            "clave>",
            "clave&",
            // The key matcher's tool names and short key names (`BINDPW` and `PGPASS` hold
            // `pw` and `pass`): `NPM_AUTH=`, `CIPHER_KEY=`, `ENC_KEY=`, `CLIENT_KEY=`, `HMAC=`,
            // `COOKIE_SALT=`, `PEPPER=`.
            "npm_auth",
            "npm-auth",
            "npm.auth",
            "npmauth",
            "cipher_key",
            "cipher-key",
            "cipher.key",
            "cipherkey",
            "enc_key",
            "enc-key",
            "enc.key",
            "enckey",
            "encrypt_key",
            "encrypt-key",
            "encrypt.key",
            "encryptkey",
            "client_key",
            "client-key",
            "client.key",
            "clientkey",
            "hmac=",
            "hmac:",
            "hmac\"",
            "hmac'",
            "hmac>",
            "hmac&",
            "salt=",
            "salt:",
            "salt\"",
            "salt'",
            "salt>",
            "salt&",
            "pepper",
        ],
    },
    PatternSpec {
        kind: PatternKind::AuthHeader,
        // Group 3: Rails' `Authorization: Token token="..."` (Zendesk, others), quoted.
        regex: r#"(?i)(?-u:\b)(?:(bearer|basic)\s+([A-Za-z0-9._~+/=-]{8,})|token\s+token=\\?["']([^"'\\]{8,}))"#,
        secret_groups: &[2, 3],
        anchors: &["bearer", "basic", "token token="],
    },
    PatternSpec {
        kind: PatternKind::UrlCredentials,
        // `scheme://user:password@host`: the user stops at the first `:` (it may be an email,
        // `bob@corp.com`), the password runs to the first `@` that a host and the host's end
        // follow (a path, query, port, space, quote, or the end): generated passwords hold `/`,
        // `+`, `=`, `#`, `?`, and `@` is often left unencoded (`postgres://app:P@ss!@db:5432`);
        // an `@` later in the path or query (`/search?q=bob@example.com`, `/@babel/core`) is
        // no part of it. Neither crosses a quote or space. A
        // port then a path (`https://host:8443/x@y`) is no password (see `verify`). Group 2:
        // a token alone as the user info (`https://<token>@github.com/...`), long and
        // generated-looking (`ssh://git@github.com` stays).
        regex: concat!(
            r#"(?i)(?-u:\b)[a-z][a-z0-9+.-]{0,30}://(?:[^\s/?#:"'<>\\]{0,128}:([^\s"'<>\\]{1,256}?)@(?:[a-z0-9_-]+(?:\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?(?:[/?#\s"'<>\\,;)\]}]|\.(?:[\s"'<>]|$)|$)"#,
            r#"|([A-Za-z0-9_-]{20,256})@[a-z0-9-]+\.)"#,
        ),
        secret_groups: &[1, 2],
        anchors: &["://"],
    },
    PatternSpec {
        kind: PatternKind::UrlSignature,
        // Also `code=`: an Azure Functions key (`?code=...`) or an OAuth authorization code in
        // a redirect; 16 characters at least, so `code=200` or `code=US` stay. Group 2: the
        // other credentials a URL carries under names the key-name rule does not hold
        // sensitive (a Firebase `?auth=` token, `?pw=`, session ids); the verifier judges
        // them by name (`SESSION_PARAMETERS`). Group 3: an API key passed as a URL's `key`
        // parameter (`?key=...`, Azure APIM, Google, many others), whole up to the parameter's
        // end; judged as a session parameter (a path or a word, `?key=reports`, stays).
        // Group 4: the one-time token of a password-reset, activation, invitation or sign-in
        // link, as a path segment (`/signin/reset-password/<token>`, `/welcome/<token>`,
        // Okta's and most web apps' links): whoever reads it can use the link while it is
        // valid. Only one that looks generated (`/welcome/getting-started` stays).
        regex: concat!(
            r"(?i)(?:^|[?&;,\s])(?:(?:x-amz-signature|x-goog-signature|signature|sig|code)=([A-Za-z0-9%+/=_~.-]{16,})",
            r"|(?:auth|pw|session|session_?id|jsessionid|phpsessid|ticket)=([A-Za-z0-9%+/=_~.-]+))",
            r#"|[?&]key=([A-Za-z0-9+_~-]{12,})(?:$|[&#\s"'<>\\])"#,
            r#"|/(?:reset-?password|reset_password|password[-_/]reset|welcome|activate|activation|verify-email|confirm-email|magic-?link|invite|invitation|recovery)/([A-Za-z0-9_-]{16,128})(?:$|[/?#&\s"'<>\\])"#,
        ),
        secret_groups: &[1, 2, 3, 4],
        anchors: &[
            "signature=",
            "sig=",
            "code=",
            "auth=",
            "pw=",
            "session=",
            "sessionid=",
            "session_id=",
            "sessid=",
            // A password-reset or sign-in ticket (Auth0's `/lo/reset?ticket=`, CAS's `ST-`).
            "ticket=",
            "key=",
            // Group 4's link paths (each ends with the `/` before the token).
            "/resetpassword/",
            "/reset-password/",
            "/reset_password/",
            "/password-reset/",
            "/password_reset/",
            "/password/reset/",
            "/welcome/",
            "/activate/",
            "/activation/",
            "/verify-email/",
            "/confirm-email/",
            "/magic-link/",
            "/magiclink/",
            "/invite/",
            "/invitation/",
            "/recovery/",
        ],
    },
    PatternSpec {
        kind: PatternKind::AzureConnectionKey,
        // Group 2: a whole value shaped like a storage account key (no anchor: see
        // `is_storage_key_shape`, which the prefilter checks instead).
        regex: r#"(?i)(?:^|[^A-Za-z0-9_])(?:AccountKey|SharedAccessKey)=([^;"'\s]{8,})|^([A-Za-z0-9+/]{86}==)$"#,
        secret_groups: &[1, 2],
        // `sharedaccesskey=` ends where `accesskey` (AWS) does: the prefilter reports both.
        anchors: &["accountkey=", "sharedaccesskey="],
    },
    PatternSpec {
        kind: PatternKind::CliCredentials,
        // After a space, an opening quote, backtick, bracket or parenthesis (a command quoted
        // in a message or run by `sh -c "..."`), a `/` (a program run by its path,
        // `/usr/bin/sshpass -p ...`), or at the start: group 1: `-u`/`--user`
        // `name:password`; group 2: a secret option's value after spaces; group 3: `-p
        // <password>` of the tools whose `-p` is the password (`sshpass`, `docker login`; `-P`
        // of SQL Server's `sqlcmd` and `bcp`; `-a` of `redis-cli`, up to a shell separator:
        // other tools' `-a` is no password); groups 4-6: OpenSSL's
        // `-passin pass:<password>` (not `env:`, `file:`, `fd:`, `stdin`).
        // Where a command starts (also after a path, a quote, a backtick, `=`, `(`, `[`, `&` or
        // a pipe): group
        // 7: `mysql -p<password>` (glued, as the clients of `GLUED_PASSWORD_CLIENTS` want it);
        // groups 8-9: `net user <name> <password>` (not `*`, which prompts); groups 10-13:
        // `htpasswd -b` (the flags, then the password after the user, or after the file and
        // the user without `-n`; the verifier wants a `b` among the flags); groups 14-18:
        // PowerShell's `ConvertTo-SecureString '<password>'` (or the string piped into it; a
        // `$variable` is no password); group 19: `sqlplus user/<password>`, and the same in
        // Oracle's other tools (`expdp`, `impdp`, `dgmgrl`, `rman target`, `sqlldr userid=`;
        // QA: only `sqlplus` was read).
        // Anywhere: groups 20-21: an Oracle JDBC URL's `user/<password>@`.
        // Where groups 1-6 may start: groups 22-23: a wallet seed phrase after `--seed`
        // (any case, also `-seed`, `--seed_phrase`, `--seedphrase`, `--mnemonic`,
        // `--mnemonic-phrase`, `--recovery-phrase`, `--secret-recovery-phrase`), quoted (also with escaped quotes, as in a
        // command held in JSON text: `--seed \"...\"`), 12 words or more (`--seed 42`, a
        // random seed, is no secret); group 24: such a phrase unquoted, as wallets write it
        // (12, 15, 18, 21 or 24 lower-case words of 3-8 letters, the words of BIP-39, and no
        // more: prose has shorter words); group 25: one word after it, after `--seed` a secret
        // only as a `seed` value is (`--seed 9f86d0...`, a hex wallet seed; not `--seed 42` nor
        // `--seed random`), after the other names any word.
        regex: concat!(
            r#"(?:(?:^|[\s"'`(\[/])(?:(?:-u\s+|--user(?:\s+|=)|--proxy-user(?:\s+|=))['"]?[^\s:'"]+:([^\s'"]+)"#,
            r#"|--(?i:password|passwd|passphrase|pass|pw|pin|otp|cvv|token|secret|api-key|client-secret|access-token|auth-token|api-token|api-secret|account-key|sas-token)\s+(?:\\*['"])?([^\s'"-][^\s'"]*)"#,
            r#"|(?:(?:sshpass|(?:docker|podman|nerdctl)\s+login|(?i:sqlcmd|bcp)(?:\.exe)?)\s(?:.*\s)?-[pP]|(?i:redis-cli)(?:\.exe)?\s(?:[^;|&\n]*\s)?-a\s)\s*['"]?([^\s'"-][^\s'"]*)"#,
            r#"|-pass(?:in|out)?\s+['"]?pass:(?:'([^']*)'|"([^"]*)"|([^\s'"]+))))"#,
            r#"|(?:^|[\s\\/"'`=(\[|;&])(?:(?i:mysql(?:dump|admin|import|check|show|pump|slap)?|mariadb(?:-(?:dump|admin|import|check|show|slap))?)\s(?:.*\s)?-p([^\s'"]+)"#,
            r#"|(?i:net1?(?:\.exe)?\s+user)\s+(?:"[^"]*"|[^\s"/]+)\s+(?:"([^"]*)"|([^\s"/][^\s"]*))"#,
            r#"|(?i:htpasswd)(?:\.exe)?((?:\s+-[A-Za-z]+(?:\s+[0-9]+)?)*\s+-[A-Za-z]*n[A-Za-z]*(?:\s+-[A-Za-z]+(?:\s+[0-9]+)?)*)\s+['"]?[^\s'"-][^\s'"]*['"]?\s+['"]?([^\s'"]+)"#,
            r#"|(?i:htpasswd)(?:\.exe)?((?:\s+-[A-Za-z]+(?:\s+[0-9]+)?)+)\s+['"]?[^\s'"-][^\s'"]*['"]?\s+['"]?[^\s'"-][^\s'"]*['"]?\s+['"]?([^\s'"]+)"#,
            r#"|(?i:convertto-securestring(?:\s+-(?:asplaintext|force)(?::\$true)?)*\s+(?:-string\s+)?)(?:'([^']*)'|"([^"]*)"|([^\s'"$(|;-][^\s'"|;)]*))"#,
            r#"|(?:'([^']*)'|"([^"]*)")\s*\|\s*(?i:convertto-securestring)"#,
            r#"|(?i:sqlplus|expdp|impdp|dgmgrl|rman\s+(?:target|catalog|auxiliary)|(?:sqlldr|exp|imp)(?:\.exe)?\s+(?:[^;|&\n]*\s)?userid=)(?:\.exe)?(?:\s+-[A-Za-z]+)*\s*['"]?[^\s/@'"=]+/([^\s@/'"]+))"#,
            r#"|(?i:jdbc:oracle:(?:thin|oci8?|kprb)):[^\s/@:"']+/(?:"([^"]*)"|([^\s@"']+))@"#,
            r#"|(?:^|[\s"'`(\[])--?(?i:seed(?:[-_]?phrase)?|mnemonic(?:[-_]phrase)?|(?:secret[-_])?recovery[-_]phrase)(?:\s+|=)(?:\\*"([A-Za-z]+(?:\s+[A-Za-z]+){11,})(?:\\*"|$)|'([A-Za-z]+(?:\s+[A-Za-z]+){11,})(?:'|$)|([a-z]{3,8}(?:[ \t]+[a-z]{3,8}){11}(?:(?:[ \t]+[a-z]{3,8}){3}){0,4})(?:[ \t]*(?:$|[^A-Za-z0-9 \t])|[ \t]+[A-Z0-9])|\\*["']?([^\s'"\\-][^\s'"\\]*))"#,
            // Admin and attack tools' passwords: groups 26: `psexec`/`paexec`/`mongo...` `-p`;
            // 27: `ldap...` `-w`; 28-29: FreeRDP's `/p:`; 30-31: `net use [X: | *] \\host\share
            // [/user:<name>] <password>` (QA: the password after `/user:`, and `*` for the
            // drive, were let through); 32: impacket's `domain/user:<password>@host`.
            r#"|(?:^|[\s"'`(\[/\\])(?i:psexec(?:64)?|paexec|mongo(?:sh|dump|restore|import|export)?)(?:\.exe)?\s(?:[^;|&\n]*\s)?-p\s+['"]?([^\s'"-][^\s'"]*)"#,
            r#"|(?:^|[\s"'`(\[/\\])(?i:ldap(?:search|add|modify|delete|passwd|whoami|compare|modrdn|exop))\s(?:[^;|&\n]*\s)?-w\s+['"]?([^\s'"-][^\s'"]*)"#,
            r#"|(?i:[a-z]*freerdp3?)(?:\.exe)?\s(?:[^;|&\n]*\s)?[/-]p:(?:"([^"]*)"|([^\s"]+))"#,
            r#"|(?i:net1?(?:\.exe)?\s+use)\s+(?:[A-Za-z]:\s+|\*\s+)?\\\\[^\s]+\s+(?:/(?i:user|u):(?:"[^"]*"|[^\s"]+)\s+)?(?:"([^"]*)"|([^\s"/*][^\s"]*))"#,
            r#"|(?i:impacket-[a-z]+|(?:[a-z]*exec|secretsdump|smbclient|getuserspns|getnpusers|gettgt|getst)\.py)\s+(?:\S+\s+)*?['"]?[^\s/:@'"]+/[^\s/:@'"]+:([^\s@'"]+)@"#,
            // Group 33-35: SQL's `CREATE`/`ALTER USER <name> IDENTIFIED BY <password>` (quoted or,
            // as Oracle takes it, bare; also `IDENTIFIED WITH <plugin> BY`, and MySQL 5's
            // `GRANT ... TO <user> IDENTIFIED BY`); 36: `ipmitool -P`; 37: Samba's `-U user%<password>`;
            // 38: Java keytool's and jarsigner's `-storepass`/`-keypass` (and the `src`/`dest`
            // ones); 39: `lftp -u user,<password>`.
            r#"|(?i:(?:(?:create|alter)\s+(?:user|role|login)\s+(?:if\s+(?:not\s+)?exists\s+)?|grant\s[^;'"]{1,200}?\sto\s+)\S+\s+identified\s+(?:with\s+\S+\s+)?by)\s+(?:'([^']*)'|"([^"]*)"|([^\s;'"]+))"#,
            r#"|(?i:ipmitool)(?:\.exe)?\s(?:[^;|&\n]*\s)?-P\s+['"]?([^\s'"-][^\s'"]*)"#,
            r#"|(?i:smbclient|rpcclient|smbget|smbcacls)(?:\.exe)?\s(?:[^;|&\n]*\s)?(?:-U|--user(?:=|\s+))\s*['"]?[^\s%'"]+%([^\s'"]+)"#,
            r#"|(?:^|\s)-(?i:(?:src|dest)?(?:store|key)pass)\s+['"]?([^\s'"-][^\s'"]*)"#,
            r#"|(?i:lftp)\s(?:[^;|&\n]*\s)?-u\s+['"]?[^\s,'"]+,([^\s'"]+)"#,
            // Group 40: `curl -uuser:<password>` (glued); 41: an archiver's glued `-p<password>`
            // (7-Zip, RAR; a bare `-p` prompts); 42: `zip`/`unzip -P <password>`; 43: `echo
            // user:<password> | chpasswd`; 44: `echo <password> | passwd --stdin`; 45:
            // `redis-cli ... AUTH [user] <password>`.
            r#"|(?:^|[\s"'`(\[/\\])(?i:curl)(?:\.exe)?\s(?:[^;|&\n]*\s)?-u['"]?[^\s:'"-][^\s:'"]*:([^\s'"]+)"#,
            r#"|(?:^|[\s"'`(\[/\\])(?i:7z[arz]?|rar|unrar|winrar)(?:\.exe)?\s(?:[^;|&\n]*\s)?-p['"]?([^\s'"-][^\s'"]*)"#,
            r#"|(?:^|[\s"'`(\[/\\])(?i:zip|unzip|zipcloak)(?:\.exe)?\s(?:[^;|&\n]*\s)?(?:-P|--password)\s+['"]?([^\s'"-][^\s'"]*)"#,
            r#"|(?:echo|printf)\s+(?:-[en]+\s+)?['"]?[^\s:'"|]+:([^\s'"|]+)['"]?\s*\|\s*(?:sudo\s+)?(?:/usr/sbin/)?chpasswd"#,
            r#"|(?:echo|printf)\s+(?:-[en]+\s+)?['"]?([^\s'"|$-][^\s'"|]*)['"]?\s*\|\s*(?:sudo\s+)?(?:/usr/bin/)?passwd\s+--stdin"#,
            r#"|(?i:redis-cli)(?:\.exe)?\s[^;|&\n]*?\s(?i:auth)[ \t]+(?:[^\s'"]+[ \t]+)?['"]?([^\s'"]+)"#,
            // Group 46: attack and admin tools' `-p <password>` (evil-winrm, CrackMapExec /
            // NetExec, Hydra, Medusa, kerbrute, smbmap, rdesktop); 47: `az login -p`; 48: their
            // `-H <NTLM hash>` (pass-the-hash: the hash signs in as the password does); 49:
            // mimikatz's `/ntlm:`, `/rc4:`, `/aes128:`, `/aes256:` keys; 50: `openssl ... -k
            // <password>`; 51: `rabbitmqctl change_password|add_user <user> <password>`; 52:
            // `ldappasswd -s <new password>`; 53-54: `schtasks ... /rp <password>` (`*`
            // prompts); 55: sqlmap's `--auth-cred=user:<password>`; 56: MongoDB's
            // `changeUserPassword("user", "<password>")`; 57: SQL's `SET PASSWORD [FOR user] =
            // [PASSWORD(]'<password>'`; 58: SQL's `INSERT INTO t (<columns>) VALUES (`, the
            // secret being the quoted value at the place of a sensitive column
            // (`sql_insert_secret`).
            r#"|(?:^|[\s"'`(\[/\\])(?i:evil-winrm|crackmapexec|cme|nxc|netexec|hydra|medusa|kerbrute|smbmap|rdesktop)(?:\.exe|\.py)?\s(?:[^;|&\n]*\s)?-p\s+['"]?([^\s'"-][^\s'"]*)"#,
            r#"|(?i:az(?:\.cmd)?\s+login)\s(?:[^;|&\n]*\s)?(?:-p|--password)(?:\s+|=)['"]?([^\s'"-][^\s'"]*)"#,
            // (48 and 52 are the option alone, the program checked before it by `verify`: a
            // match of the program's `-p` or `-w` ends before them.)
            r#"|(?:^|\s)-H\s+['"]?((?:[0-9a-fA-F]{32}:)?[0-9a-fA-F]{32})(?:[^0-9A-Za-z]|$)"#,
            r#"|(?i:/(?:ntlm|rc4|aes128|aes256)):([0-9a-fA-F]{32,64})"#,
            r#"|(?i:openssl)(?:\.exe)?\s(?:[^;|&\n]*\s)?-k\s+['"]?([^\s'"-][^\s'"]*)"#,
            r#"|(?i:rabbitmqctl)(?:\.bat)?\s+(?:-[a-z]\s+\S+\s+)*(?:change_password|add_user)\s+['"]?[^\s'"]+['"]?\s+['"]?([^\s'"]+)"#,
            r#"|(?:^|\s)-s\s+['"]?([^\s'"-][^\s'"]*)"#,
            r#"|(?i:schtasks)(?:\.exe)?\s(?:[^;|&\n]*\s)?/(?i:rp)\s+(?:"([^"]*)"|([^\s"*/][^\s"]*))"#,
            r#"|--auth-cred(?:=|\s+)['"]?[^\s:'"]+:([^\s'"]+)"#,
            r#"|(?i:changeUserPassword)\(\s*["'][^"']*["']\s*,\s*["']([^"']+)"#,
            r#"|(?i:set\s+password(?:\s+for\s+\S+)?\s*=\s*(?:password\s*\(\s*)?)'([^']*)'"#,
            r#"|(?i:insert\s+into)\s+[^\s(]{1,128}\s*\(([^()]{1,1000})\)\s*(?i:values)\s*\("#,
            // Group 59: a password piped into a command that reads it on its standard input, as
            // `passwd --stdin` does (group 44): `echo <password> | sudo -S` (`-kS`, `--stdin`,
            // after other options of sudo's own), `echo <password> | docker login -u ci
            // --password-stdin` (podman, nerdctl, `helm registry login`, buildah, skopeo, oras).
            r#"|(?:echo|printf)\s+(?:-[en]+\s+)?['"]?([^\s'"|$-][^\s'"|]*)['"]?\s*\|\s*(?:(?:/usr/bin/)?sudo(?:\s+(?:--[a-z-]+(?:=\S+|\s+[^\s-]\S*)?|-[A-RT-Za-z]*[CDghpRrTUu]\s+[^\s-]\S*|-[A-RT-Za-z]+))*\s+(?:-[A-Za-z]*S[A-Za-z]*|--stdin)(?:\s|$)|(?i:docker|podman|nerdctl|helm|buildah|skopeo|oras)(?:\.exe)?\s(?:[^|;&\n]*\s)?login\s(?:[^|;&\n]*\s)?--password-stdin(?:[\s;&|)"'`]|$))"#,
            // QA, more commands (`OPTION_ALONE_GROUPS` checks the program of the options
            // alone). Groups 60-63: `ssh-keygen`'s old and new passphrases, `-P` and `-N`
            // (63: glued, not starting with a lower-case letter and holding a digit, which
            // `-Password` and `-PASSWORD` do not; an empty `-N ''` is none); 64: `rman`'s
            // second credential (`target u/p@db catalog u/<password>@cat`); 65-67: a
            // PowerShell cmdlet's `-Password` (and `-Secret`, `-ClientSecret`, `-AccessToken`,
            // `-ApiKey`, `-Token`; not a `$variable`,
            // a `(subexpression)`, an `env:`/`file:` reference nor a word); 68-69: `setx`'s own
            // `/p <password>` (a remote machine's); 70-73: `setx <name> <value>` and 74-76:
            // `[Environment]::SetEnvironmentVariable("<name>", "<value>")`, when the name is
            // sensitive (`DB_PASSWORD`); 77: Go's MySQL driver DSN, `user:<password>@tcp(host)`
            // (`unix(`, `udp(`; the password may hold `@` and `/`); 78: Cisco's `crypto isakmp
            // key <psk> address|hostname`. Network device configuration lines (at a line's start
            // or after `=`, `:` or a quote, the value ending the line, as a configuration or a
            // command accounting log writes them; prose such as `invalid username or password
            // (LDAP)` is none): 79-80: `username <name> [privilege|view|role <x>]
            // [algorithm-type <a>] secret|password [type] <secret>`; 81-82: `enable
            // [algorithm-type <a>] secret|password [level N] [type] <secret>`; 83: `snmp-server
            // community <string> [RO|RW ...]`; 84-85: `[ikev1] pre-shared-key [local|remote]
            // [type] <key>` and `key-string [type] <key>`; 86-87: Junos' `pre-shared-key
            // ascii-text|hexadecimal <key>` anywhere; 88-89: `tacacs-server|radius-server [host
            // <h>] key [type] <key>` (a type digit, or a value with a digit or a symbol, is
            // taken: `PROSE_LIKE_VALUE_GROUPS`); 90: `vault login <token>` and `vault token
            // lookup|revoke|renew <token>` (8 characters or more, no path; not after
            // `-accessor` or `-mode`: `s.` tokens of Vault before 1.10 have no prefix a vendor
            // pattern knows); 91: SNMPv3's `auth md5|sha <password>` and `priv des|aes 128
            // <password>` of an `snmp-server user` line. Also `snmp-server host <h> version
            // 1|2c <community>`, and a `key [type] <key>` line of IOS-XE's `radius server` and
            // `tacacs server` blocks and ASA's `aaa-server` (their block names are anchors, a
            // lone `key` is none).
            r#"|(?:^|\s)-[PN](?:\s*'([^']*)'|\s*"([^"]*)"|\s+([^\s'"-][^\s'"]*)|([^\s'"a-z0-9-][^\s'"0-9]*[0-9][^\s'"]*))"#,
            r#"|(?:^|\s)(?i:catalog|auxiliary)\s+['"]?[^\s/@'"=]+/([^\s@/'"]+)"#,
            r#"|(?:^|[\s(])-(?i:password|secret|clientsecret|accesstoken|apikey|token)\s+(?:'([^']*)'|"([^"]*)"|([^\s'"$(@-][^\s'"),]*))"#,
            r#"|(?i:setx)(?:\.exe)?["']?\s(?:[^|;&\n]*?\s)?/(?i:p)\s+(?:"([^"]*)"|([^\s"/][^\s"]*))"#,
            r#"|(?i:setx)(?:\.exe)?["']?\s+(?:/[A-Za-z]+\s+)*\\*"?([A-Za-z_][A-Za-z0-9_.-]*)\\*"?\s+(?:\\*"([^"\\]*)\\*"|'([^']*)'|([^\s"'/\\][^\s"]*))"#,
            r#"|(?i:setenvironmentvariable)\(\s*["']([^"']+)["']\s*,\s*(?:"([^"]*)"|'([^']*)')"#,
            r#"|(?:^|[\s"'=(\[`])[^\s:@/"'(\[`=]+:([^\s"'/][^\s"']*?)@(?:tcp|unix|udp)\("#,
            r#"|(?i:crypto\s+isakmp\s+key)\s+(?:[06]\s+)?"?([^\s"']+)"?\s+(?i:address|hostname)\b"#,
            r#"|(?:(?m:^)|[=:;"'])[ \t]*(?i:username)[ \t]+(?:[^\s"'oO][^\s"']*|[oO](?:[^\s"'rR][^\s"']*)?|[oO][rR][^\s"']+)[ \t]+(?i:(?:privilege|view|role)[ \t]+[^\s"']+[ \t]+)*(?i:algorithm-type[ \t]+[^\s"']+[ \t]+)?(?i:secret|password)[ \t]+(?:([0-9])[ \t]+|(?i:sha512|sha256)[ \t]+)?"?([^\s"']+)"?(?:[ \t]+(?i:role|privilege|priv-lvl)\b[^\n"']*)?[ \t]*(?:<cr>)?\r?(?:(?m:$)|["'])"#,
            r#"|(?:(?m:^)|[=:;"'])[ \t]*(?i:enable)[ \t]+(?i:algorithm-type[ \t]+[^\s"']+[ \t]+)?(?i:secret|password)[ \t]+(?i:level[ \t]+[0-9]+[ \t]+)?(?:([0-9])[ \t]+|(?i:sha512|sha256)[ \t]+)?"?([^\s"']+)"?[ \t]*(?:<cr>)?\r?(?:(?m:$)|["'])"#,
            r#"|(?:(?m:^)|[=:;"'])[ \t]*(?i:snmp-server[ \t]+(?:community|host[ \t]+[^\s"']+[ \t]+(?:(?:informs|traps)[ \t]+)?version[ \t]+(?:1|2c)))[ \t]+(?:[0-9][ \t]+)?"?([^\s"']+)"?(?:[ \t]+[^\n"']*)?[ \t]*(?:<cr>)?\r?(?:(?m:$)|["'])"#,
            r#"|(?:(?m:^)|[=:;"'])[ \t]*(?i:(?:ikev[12][ \t]+)?(?:(?:remote|local)-authentication[ \t]+)?(?:pre-shared-key(?:[ \t]+(?:local|remote))?|key-string))[ \t]+(?:([0-9])[ \t]+)?"?([^\s"']+)"?[ \t]*(?:<cr>)?\r?(?:(?m:$)|["'])"#,
            r#"|(?i:pre-shared-key[ \t]+(?:ascii-text|hexadecimal))[ \t]+(?:"([^"]*)"|([^\s"]+))"#,
            r#"|(?:(?m:^)|[=:;"'])[ \t]*(?i:(?:(?:tacacs|radius)-server[ \t]+(?:host[ \t]+[^\s"']+[ \t]+)?(?:(?:auth-port|acct-port|port|timeout)[ \t]+[0-9]+[ \t]+)*)?key)[ \t]+(?:([0-9])[ \t]+)?"?([^\s"']+)"?(?:[ \t]+(?i:single-connection|timeout[ \t]+[0-9]+))?[ \t]*(?:<cr>)?\r?(?:(?m:$)|["'])"#,
            r#"|(?i:vault)(?:\.exe)?["']?\s+(?i:login|token\s+(?:lookup|revoke|renew))(?:\s+-[A-Za-z-]+(?:=\S+|\s+[^\s-]\S*)?)*?\s+['"]?([^\s'"=/-][^\s'"=/]{7,})(?:['"]|\s|$)"#,
            r#"|(?:^|\s)(?i:auth[ \t]+(?:md5|sha[0-9-]*)|priv[ \t]+(?:des|3des|aes(?:[ \t]+[0-9]+)?))[ \t]+([^\s"']+)"#,
        ),
        secret_groups: &[
            1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26,
            27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48,
            49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 71,
            72, 73, 75, 76, 77, 78, 80, 82, 83, 85, 86, 87, 89, 90, 91,
        ],
        anchors: &[
            "-u ",
            "-u\t",
            "--user",
            "--proxy-user",
            "--password",
            "--pass",
            // `INSERT INTO users (name, password) VALUES (...)` (group 58).
            "insert",
            "--pw",
            "--pin",
            "--otp",
            "--mnemonic",
            "--passphrase",
            "--seed-phrase",
            // Also `--seed` alone (or `-seed`, `--seedphrase`), before a quoted seed phrase.
            "-seed",
            "recovery-phrase",
            "recovery_phrase",
            "--cvv",
            "--passwd",
            "--token",
            "--secret",
            "--api-key",
            "--client-secret",
            "--access-token",
            "--auth-token",
            "--api-token",
            "--api-secret",
            // Azure CLI's storage key and SAS token (`az storage ... --account-key <key>`).
            "--account-key",
            "--sas-token",
            "psexec",
            "paexec",
            "mongo",
            "ldap",
            "freerdp",
            "net use",
            "net.exe use",
            "net1 use",
            "impacket-",
            "exec.py",
            "secretsdump",
            "smbclient.py",
            "getuserspns",
            "getnpusers",
            "gettgt",
            "identified",
            "ipmitool",
            "smbclient",
            "rpcclient",
            "smbget",
            "smbcacls",
            "storepass",
            "keypass",
            "lftp",
            "curl",
            "7z",
            "rar",
            "zip",
            "chpasswd",
            "passwd --stdin",
            // `echo <password> | sudo -S` (group 59; `--password-stdin` wakes it as
            // `--password`).
            "| sudo",
            "|sudo",
            "/usr/bin/sudo",
            "evil-winrm",
            "crackmapexec",
            "cme ",
            "nxc ",
            "netexec",
            "hydra",
            "medusa",
            "kerbrute",
            "smbmap",
            "rdesktop",
            "az login",
            "az.cmd login",
            "/ntlm:",
            "/rc4:",
            "/aes128:",
            "/aes256:",
            "openssl",
            "rabbitmqctl",
            "schtasks",
            "--auth-cred",
            "changeuserpassword",
            "set password",
            "mysql",
            "mariadb",
            "sshpass",
            "sqlcmd",
            "bcp",
            "redis-cli",
            // The program alone: `docker  login` and `docker\tlogin` are the same command.
            "docker",
            "podman",
            "nerdctl",
            "pass:",
            "net user",
            "net.exe user",
            "net1 user",
            "htpasswd",
            "convertto-securestring",
            "sqlplus",
            "expdp",
            "impdp",
            "dgmgrl",
            "rman",
            "userid=",
            "jdbc:oracle:",
            "ssh-keygen",
            "-password",
            "-secret",
            "-clientsecret",
            "-accesstoken",
            "-apikey",
            "-token",
            "setx",
            "setenvironmentvariable",
            "@tcp(",
            "@unix(",
            "@udp(",
            "isakmp",
            "username",
            "enable secret",
            "enable password",
            "snmp-server",
            "pre-shared-key",
            "key-string",
            "algorithm-type",
            "tacacs-server",
            "radius-server",
            "radius server",
            "tacacs server",
            "aaa-server",
            "vault",
        ],
    },
    PatternSpec {
        kind: PatternKind::AwsSecretAccessKey,
        // Also the key right after its key id, as credential files and pasted pairs have it
        // (`AKIA...,wJalr...`): 40 such characters alone are too common to mask. After its
        // name, spaces also separate (`aws configure set aws_secret_access_key wJalr...`): the
        // name is no word of prose. After a key id, a slash also separates (`AKIA... / wJalr...`,
        // as pairs are pasted into notes). The separator and the key may be written encoded
        // (`%2F`, `\u002F`, `\/`, `&#x2F;`, quotes around each; a line break escaped in JSON
        // text, `\n`, at any depth), or the key be the next query
        // parameter (`?id=AKIA...&s=...`) or follow a bare `&` (`AKIA...&wJalr...`, `%26`,
        // `\u0026`, `&amp;`); a key is 40 characters decoded, and then ends (see
        // `aws_secret_ends`).
        regex: concat!(
            r#"(?i)secret_?access_?key\\?["']?(?:\s*[:=]\s*|\s+)\\?["']?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+]|$)"#,
            r#"|(?-i:(?:^|[^A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?:[\s,;|:"'=/&]|%(?:2[02467CcFf]|3[AaBbDd]|7[Cc])|\\+u00(?:0[9AaDd]|2[02467CcFf]|3[AaBbDd]|7[Cc])|\\+[/"'tnr]|&(?:#x2[267CcFf]|#3[489]|#4[47]|quot|apos|amp);|&[A-Za-z0-9_.-]{1,30}=){1,6}((?:[A-Za-z0-9+/]|%2[BbFf]|\\u002[BbFf]|\\/|&#x2[BbFf];|&#4[37];){40}))"#,
        ),
        secret_groups: &[1, 2],
        // Not `secret_access_key`: `access_key` is in it.
        anchors: &["access_key", "accesskey"],
    },
    PatternSpec {
        kind: PatternKind::OktaApiToken,
        regex: r#"(?i)(?:(?-u:\b)ssws\s+([A-Za-z0-9_-]{20,})|okta[_-]?(?:api[_-]?)?token\\?["']?\s*[:=]\s*\\?["']?(00[A-Za-z0-9_-]{40}))"#,
        secret_groups: &[1, 2],
        anchors: &["ssws", "okta"],
    },
    PatternSpec {
        kind: PatternKind::OnepasswordToken,
        // A service account token, or an account's Secret Key (`A3-` + account id + 26
        // characters in groups), which with the account password opens the vault.
        regex: r"(?:ops_[A-Za-z0-9+/=_-]{40,}|A3-[A-Z0-9]{6}-[A-Z0-9]{6}(?:-[A-Z0-9]{5}){4})",
        secret_groups: &[],
        anchors: &["ops_", "a3-"],
    },
    PatternSpec {
        kind: PatternKind::GithubToken,
        regex: r"(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,255})",
        secret_groups: &[],
        anchors: &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
    },
    PatternSpec {
        kind: PatternKind::SlackToken,
        regex: r"(?:xox[abposre]-[A-Za-z0-9-]{10,}|xapp-[0-9]+-[A-Za-z0-9-]{10,})",
        secret_groups: &[],
        anchors: &["xox", "xapp-"],
    },
    PatternSpec {
        kind: PatternKind::SlackWebhook,
        regex: r"(?i)https?://hooks\.slack(?:-gov)?\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/+-]+",
        secret_groups: &[],
        anchors: &["hooks.slack"],
    },
    PatternSpec {
        kind: PatternKind::WebhookUrl,
        // One group per vendor: the part of the URL that is the credential. Teams and Outlook
        // hooks carry it across several path segments (ids, `IncomingWebhook/<key>`, `V2...`).
        regex: concat!(
            r#"(?i)(?-u:\b)(?:"#,
            r#"(?:ptb\.|canary\.)?discord(?:app)?\.com/api/(?:v[0-9]+/)?webhooks/[0-9]{5,30}/([A-Za-z0-9_-]{20,})"#,
            r#"|[a-z0-9-]+\.webhook\.office\.com/webhookb2/([^\s"'<>?#]{20,})"#,
            r#"|outlook\.office(?:365)?\.com/webhook/([^\s"'<>?#]{20,})"#,
            r#"|hooks\.zapier\.com/hooks/catch/[0-9]+/([A-Za-z0-9]{4,})"#,
            // PagerDuty's integration URL carries the integration key.
            r#"|events\.(?:eu\.)?pagerduty\.com/integration/([A-Za-z0-9]{32})/enqueue"#,
            r#"|maker\.ifttt\.com/(?:trigger/[^\s/?#]+/(?:json/)?with/key|use)/([A-Za-z0-9_-]{16,})"#,
            // Mattermost (`/hooks/<26 lowercase>`) and Rocket.Chat (`/hooks/<id>/<token>`), on
            // any host: the token shapes are their own.
            r#"|[a-z0-9.-]+(?::[0-9]{1,5})?/hooks/([a-z0-9]{26})(?:[^A-Za-z0-9]|$)"#,
            r#"|[a-z0-9.-]+(?::[0-9]{1,5})?/hooks/[A-Za-z0-9]{17}/([A-Za-z0-9]{40,})"#,
            // Log intake URLs that carry the account's key in their path: Datadog's HTTP
            // intake (`/v1/input/<api key>`), Sumo Logic's HTTP source
            // (`/receiver/v1/http/<token>`), Loggly's (`/inputs/<token>`, `/bulk/<token>`).
            r#"|datadoghq\.(?:com|eu)/(?:v1/input|api/v2/logs)/([0-9a-f]{32})(?:[^0-9a-f]|$)"#,
            r#"|sumologic\.com/receiver/v1/(?:http|otlp)/([A-Za-z0-9_=-]{20,})"#,
            r#"|loggly\.com/(?:inputs|bulk)/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"#,
            r#")"#,
        ),
        secret_groups: &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
        anchors: &[
            "datadoghq.",
            "sumologic.com/receiver",
            "loggly.com/",
            "pagerduty.com/integration",
            "discord",
            "webhook.office",
            "outlook.office",
            "hooks.zapier",
            "maker.ifttt",
            "/hooks/",
        ],
    },
    PatternSpec {
        kind: PatternKind::VendorToken,
        // Each vendor's documented prefix, then the random part at its documented length (or a
        // floor of it), so words that merely start like a prefix (`sk_test_helper`) stay.
        regex: concat!(
            r"(?:",
            r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{20,247}",
            r"|whsec_[A-Za-z0-9+/=]{32,}",
            r"|gl(?:pat|ptt|dt|rt|cbt|oas|ft|imt|agent|soat)-[A-Za-z0-9_-]{20,}",
            r"|GR1348941[A-Za-z0-9_-]{20,}",
            r"|npm_[A-Za-z0-9]{36}",
            r"|pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}",
            r"|AIza[0-9A-Za-z_-]{35}",
            r"|GOCSPX-[A-Za-z0-9_-]{28}",
            r"|ya29\.[A-Za-z0-9_-]{20,}",
            r"|[A-Za-z0-9_~.-]{3}[78]Q~[A-Za-z0-9_~.-]{31,34}",
            r"|hv[sb]\.[A-Za-z0-9_-]{24,}",
            r"|[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_=-]{60,70}",
            r"|dckr_pat_[A-Za-z0-9_-]{27,}",
            r"|hf_[A-Za-z]{34,40}",
            r"|shp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}",
            r"|SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}",
            r"|ATATT3xFfGF0[A-Za-z0-9_=-]{100,}",
            r"|do[por]_v1_[a-f0-9]{64}",
            r"|sk-ant-(?:api|admin)[0-9]{2}-[A-Za-z0-9_-]{80,}",
            r"|sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,}",
            r"|PMAK-[a-f0-9]{24}-[a-f0-9]{34}",
            r"|NRAK-[A-Z0-9]{27}",
            r"|sntry[su]_[A-Za-z0-9+/=_-]{40,}",
            r"|dp\.(?:pt|st(?:\.[a-z0-9_-]{2,35})?|sa|ct|scim|audit)\.[A-Za-z0-9]{40,44}",
            // Amazon Bedrock API keys: long-term (`ABSK` + base64 of `BedrockAPIKey-...`) and
            // short-term; New Relic's license keys (36 characters, then `NRAL`).
            r"|ABSKQmVkcm9ja0FQSUtleS[A-Za-z0-9+/]{20,}={0,2}",
            r"|bedrock-api-key-[A-Za-z0-9+/]{40,}={0,2}",
            r"|(?-u:\b)[A-Za-z0-9]{36}NRAL(?-u:\b)",
            r"|HRKU-[A-Za-z0-9_-]{60}",
            r"|glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}",
            r"|glc_[A-Za-z0-9+/]{32,400}={0,2}",
            r"|pul-[a-f0-9]{40}",
            r"|tskey-[a-z]+-[A-Za-z0-9]{6,}-[A-Za-z0-9]{20,}",
            r"|bkua_[a-f0-9]{40}",
            r"|CCIPAT_[A-Za-z0-9]{22}_[a-f0-9]{40}",
            r"|figd_[A-Za-z0-9_-]{40,}",
            r"|ntn_[0-9]{11}[A-Za-z0-9]{35}",
            r"|secret_[A-Za-z0-9]{43}",
            r"|dapi[a-f0-9]{32}(?:-[0-9])?",
            r"|key-[a-f0-9]{32}",
            r"|sq0(?:atp|csp)-[A-Za-z0-9_-]{22,43}",
            r"|lin_api_[A-Za-z0-9]{40}",
            r"|AGE-SECRET-KEY-1[0-9A-Z]{58}",
            r"|[a-f0-9]{32}-us[0-9]{1,2}",
            r"|AKCp[A-Za-z0-9]{69}",
            r"|cmVmdGtuOjAxOj[A-Za-z0-9]{50}",
            r"|dt0c01\.[A-Za-z0-9]{24}\.[A-Za-z0-9]{64}",
            r"|ATBB[A-Za-z0-9_=.-]{28,}",
            r"|sbp_[a-f0-9]{40}",
            r"|sb_secret_[A-Za-z0-9_-]{20,}",
            r"|fo1_[A-Za-z0-9_-]{43}",
            r"|fm2_[A-Za-z0-9+/]{100,}={0,3}",
            r"|rnd_[A-Za-z0-9]{32}",
            r"|nfp_[A-Za-z0-9]{36}",
            // Perimeter's own API tokens: pasted into an alert note or an event, they are
            // credentials to this very store.
            r"|prm_[a-f0-9]{64}",
            r"|[0-9]{5,16}:AA[A-Za-z0-9_-]{33}",
            // OpenAI's older keys carry `T3BlbkFJ` (base64 of `OpenAI`) in the middle.
            r"|sk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}",
            // AWS STS session tokens: base64 of a binary blob whose first bytes are fixed
            // (`IQoJb3JpZ2luX2Vj` decodes to `!\n\torigin_ec`).
            r"|(?:IQoJb3JpZ2luX2Vj|FwoGZXIvYXdz|FQoGZXIvYXdz)[A-Za-z0-9+/]{80,}={0,2}",
            // Google OAuth refresh tokens (`1//0` + the token).
            r"|1//0[A-Za-z0-9_-]{40,}",
            r"|access_token\$production\$[0-9a-z]{16}\$[0-9a-f]{32}",
            r"|EAACEdEose0cBA[0-9A-Za-z]{20,}|EAA[MC][A-Za-z0-9]{100,}",
            r"|sl\.(?:u\.)?[A-Za-z0-9_-]{130,}",
            r"|pat[A-Za-z0-9]{14}\.[a-f0-9]{64}",
            r"|r8_[A-Za-z0-9]{37}",
            r"|gsk_[A-Za-z0-9]{52}",
            r"|xai-[A-Za-z0-9]{80}",
            r"|pplx-[A-Za-z0-9]{48}",
            r"|sk\.eyJ1Ijoi[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{20,}",
            // A Salesforce session id (an access token): the org id, `!`, the session part.
            r"|00D[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?![A-Za-z0-9._]{80,}",
            // LaunchDarkly access tokens and server-side SDK keys; HubSpot private app tokens.
            r"|(?:api|sdk)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            r"|pat-(?:na|eu)[0-9]-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            r"|pk_[0-9]{6,10}_[A-Z0-9]{32}",
            r"|pscale_(?:tkn|pw|oauth)_[A-Za-z0-9._=-]{32,64}",
            r"|sq[upa]_[0-9a-f]{40}",
            r"|rubygems_[0-9a-f]{48}",
            r"|dG9rOj[A-Za-z0-9+/]{40,}={0,2}",
            r"|cio[A-Za-z0-9]{32}",
            r"|CFPAT-[A-Za-z0-9_-]{43}",
            r"|NRII-[A-Za-z0-9_-]{32}",
            r"|tfp_[A-Za-z0-9_-]{40,60}",
            r"|pcsk_[A-Za-z0-9_]{40,}",
            r"|lsv2_(?:pt|sk)_[a-f0-9]{32}_[a-f0-9]{10}",
            // Twilio API key SID (upper-case `SK` only; see `anchor_can_match`): 32 lower-case
            // hex digits, as Twilio writes them, with a letter among them (`SK000...001` is a
            // product code or counter).
            r"|SK[0-9a-f]{32}",
            // NuGet API keys; Firebase Cloud Messaging's legacy server keys.
            r"|oy2[a-z0-9]{43}",
            r"|AAAA[A-Za-z0-9_-]{7}:APA91b[A-Za-z0-9_-]{134}",
            r")",
        ),
        secret_groups: &[],
        anchors: &[
            "oy2",
            "apa91b",
            "sk_live_",
            "sk_test_",
            "rk_live_",
            "rk_test_",
            "whsec_",
            "glpat-",
            "glptt-",
            "gldt-",
            "glrt-",
            "glcbt-",
            "gloas-",
            "glft-",
            "glimt-",
            "glagent-",
            "glsoat-",
            "gr1348941",
            "npm_",
            "pypi-ageichlwas5vcmc",
            "aiza",
            "gocspx-",
            "ya29.",
            "8q~",
            "7q~",
            "hvs.",
            "hvb.",
            ".atlasv1.",
            "dckr_pat_",
            "hf_",
            "shpat_",
            "shpss_",
            "shpca_",
            "shppa_",
            "sg.",
            "atatt3xffgf0",
            "dop_v1_",
            "doo_v1_",
            "dor_v1_",
            "sk-ant-",
            "sk-proj-",
            "sk-svcacct-",
            "sk-admin-",
            "pmak-",
            "nrak-",
            "sntrys_",
            "sntryu_",
            "dp.pt.",
            "dp.st.",
            "dp.sa.",
            "dp.ct.",
            "dp.scim.",
            "dp.audit.",
            "abskqmvkcm9ja0fqsutles",
            "bedrock-api-key-",
            "nral",
            "hrku-",
            "glsa_",
            "glc_",
            "pul-",
            "tskey-",
            "bkua_",
            "ccipat_",
            "figd_",
            "ntn_",
            // These start inside or end with other anchors (`secret`, `api_key`, `key`); the
            // prefilter reports overlapping anchors, so none hides another.
            "secret_",
            "dapi",
            "key-",
            "sq0atp-",
            "sq0csp-",
            "lin_api_",
            "age-secret-key-1",
            // Mailchimp's key ends in its data center (`-us21`); Telegram's bot token has the
            // bot id before `:AA`. Both anchors need what comes before them (`anchor_can_match`).
            "-us",
            "akcp",
            "cmvmdgtuojaxoj",
            "dt0c01.",
            "atbb",
            "sbp_",
            "sb_secret_",
            "fo1_",
            "fm2_",
            "rnd_",
            "nfp_",
            "prm_",
            ":aa",
            "sk",
            "t3blbkfj",
            "iqojb3jpz2lux2vj",
            "fwogzxivyxdz",
            "fqogzxivyxdz",
            "1//0",
            "access_token$production$",
            "eaa",
            // `sl.` ends many words (`ssl.`), `pat` starts many (`path`): see `anchor_can_match`.
            "sl.",
            "pat",
            "r8_",
            "gsk_",
            "xai-",
            "pplx-",
            "sk.eyj1ijoi",
            "00d",
            "api-",
            "sdk-",
            "pat-na",
            "pat-eu",
            "pk_",
            "pscale_tkn_",
            "pscale_pw_",
            "pscale_oauth_",
            "squ_",
            "sqp_",
            "sqa_",
            "rubygems_",
            "dg9roj",
            "cio",
            "cfpat-",
            "nrii-",
            "tfp_",
            "pcsk_",
            "lsv2_",
        ],
    },
    PatternSpec {
        kind: PatternKind::Jwt,
        // Also a JWE, encrypted (five parts; the second, the encrypted key, is empty for
        // `dir`): NextAuth session cookies, encrypted ID tokens.
        regex: r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
        secret_groups: &[],
        anchors: &["eyj"],
    },
    PatternSpec {
        kind: PatternKind::AwsAccessKeyId,
        regex: r"(?:AKIA|ASIA)[A-Z0-9]{16}",
        secret_groups: &[],
        anchors: &["akia", "asia"],
    },
    PatternSpec {
        kind: PatternKind::CreditCard,
        // The surrounding non-digit characters are consumed outside the group (no look-around in
        // `regex`), which also rejects digits glued to longer numbers.
        regex: r"(?:^|[^0-9])([0-9]{13,19}|[0-9]{4}(?:-[0-9]{4}){2}-[0-9]{1,7}|[0-9]{4}(?: [0-9]{4}){2} [0-9]{1,7}|[0-9]{4}(?:\.[0-9]{4}){3}|[0-9]{4}-[0-9]{6}-[0-9]{4,5}|[0-9]{4} [0-9]{6} [0-9]{4,5})(?:$|[^0-9])",
        secret_groups: &[1],
        anchors: &[],
    },
    PatternSpec {
        kind: PatternKind::UsSsn,
        // Dashes, spaces or dots, the same separator twice (as people write it in tickets and
        // notes). A dotted one inside a longer dotted number is rejected by the verifier. Or
        // nine bare digits, which the verifier takes only right after an SSN label (`SSN:
        // 219099999`): alone they are any id.
        regex: r"(?:^|[^0-9-])([0-9]{3}-[0-9]{2}-[0-9]{4}|[0-9]{3} [0-9]{2} [0-9]{4}|[0-9]{3}\.[0-9]{2}\.[0-9]{4})(?:$|[^0-9-])|(?:^|[^0-9])([0-9]{9})(?:$|[^0-9-])",
        secret_groups: &[1, 2],
        anchors: &[],
    },
    PatternSpec {
        kind: PatternKind::Email,
        // The `@` may be escaped for HTML (`dana&#64;acme.example`, `&#x40;`), as in mail and
        // ticket bodies.
        regex: r"[A-Za-z0-9._%+-]+(?:@|&#64;|&#[xX]40;)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
        secret_groups: &[],
        anchors: &["@", "&#64;", "&#x40;"],
    },
];

/// What [`Patterns::candidates_scanned`] tells of a text.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Candidates {
    /// The kinds that may be found.
    pub kinds: KindSet,
    /// Whether the anchor automaton read the text.
    pub scanned: bool,
    /// Whether a `%` or `\` occurs: the text may hold escapes ([`super::encoded`]). Texts too
    /// short for any kind are not looked at and say `false`.
    pub escaped: bool,
}

/// One found secret: byte range in the text being scanned, and its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found {
    pub start: usize,
    pub end: usize,
    pub kind: PatternKind,
}

/// All value patterns, compiled once.
#[derive(Debug)]
pub(crate) struct Patterns {
    prefilter: AhoCorasick,
    /// Shortest prefilter anchor: shorter strings skip the automaton.
    min_anchor_len: usize,
    /// Every anchor has a byte outside [`ID_SHAPED`], so strings made only of such bytes (UUIDs,
    /// timestamps, IPs, hex ids, numbers) skip the automaton.
    id_shape_skip: bool,
    /// Kind for each prefilter pattern id.
    anchor_kind: Vec<PatternKind>,
    regexes: Vec<Regex>,
}

impl Patterns {
    /// `usable`: the kinds that may ever be enabled (globally or by a field rule); the others'
    /// anchors stay out of the prefilter, so e.g. every email does not wake it when emails are
    /// off.
    pub(crate) fn new(usable: KindSet) -> Result<Patterns, DetectError> {
        let mut anchors = Vec::new();
        let mut anchor_kind = Vec::new();
        let mut regexes = Vec::with_capacity(SPECS.len());
        for (i, spec) in SPECS.iter().enumerate() {
            debug_assert_eq!(spec.kind.index(), i, "SPECS follows PatternKind::ALL");
            let (other_script_names, names_of_words) = match spec.kind {
                // `password` in other scripts and languages, as the key rule knows it (QA:
                // `пароль: x` was let through in text, its name sensitive only as a JSON key),
                // and the names of several words the pre-check looks for.
                PatternKind::SecretAssignment => {
                    (super::keys::OTHER_SCRIPT_PASSWORD_WORDS, NAMES_OF_WORDS)
                }
                _ => (&[][..], &[][..]),
            };
            let spec_anchors = spec
                .anchors
                .iter()
                .chain(names_of_words)
                .copied()
                .map(Cow::Borrowed);
            // The prefilter folds ASCII letters only: the other scripts' words also as a
            // sentence or a label starts them, and in capitals (`Пароль:`, `ПАРОЛЬ:`; QA).
            let other_script_anchors = other_script_names.iter().flat_map(|w| {
                let mut capitalized = w.chars();
                let capitalized = capitalized
                    .next()
                    .map(|c| c.to_uppercase().chain(capitalized).collect::<String>());
                let mut forms = vec![Cow::Borrowed(*w)];
                for form in capitalized.into_iter().chain([w.to_uppercase()]) {
                    if !forms.contains(&Cow::Owned(form.clone())) {
                        forms.push(Cow::Owned(form));
                    }
                }
                forms
            });
            for a in spec_anchors
                .chain(other_script_anchors)
                .filter(|_| usable & bit(spec.kind) != 0)
            {
                anchors.push(a);
                anchor_kind.push(spec.kind);
            }
            regexes.push(Regex::new(spec.regex).map_err(|e| {
                DetectError::Other(format!("compiling the {} pattern: {e}", spec.kind.as_str()))
            })?);
        }
        let prefilter = AhoCorasick::builder()
            .kind(Some(AhoCorasickKind::DFA))
            .match_kind(MatchKind::Standard)
            .ascii_case_insensitive(true)
            .build(anchors.iter().map(|a| a.as_bytes()))
            .map_err(|e| DetectError::Other(format!("building the pattern prefilter: {e}")))?;
        let min_anchor_len = anchors.iter().map(|a| a.len()).min().unwrap_or(usize::MAX);
        // A URL's credentials need an `@` after the anchor `://`, which is id-shaped.
        let id_shape_skip = anchors.iter().zip(&anchor_kind).all(|(a, kind)| {
            *kind == PatternKind::UrlCredentials
                || ID_SHAPED_ANCHORS_WITH_RANDOM_TAIL.contains(&a.as_ref())
                || a.bytes().any(|b| {
                    !ID_SHAPED[usize::from(b.to_ascii_lowercase())]
                        && !ID_SHAPED[usize::from(b.to_ascii_uppercase())]
                })
        });
        Ok(Patterns {
            prefilter,
            min_anchor_len,
            id_shape_skip,
            anchor_kind,
            regexes,
        })
    }

    /// Kinds among `enabled` that may be found in `text` by [`Patterns::find`] with the same
    /// `keys` (a superset of those that are).
    #[cfg(test)]
    pub(crate) fn candidates(&self, text: &str, enabled: KindSet, keys: &KeyMatcher) -> KindSet {
        self.candidates_scanned(text, enabled, keys).kinds
    }

    /// Kinds among `enabled` that may be found in `text` by [`Patterns::find`] with the same
    /// `keys` (a superset of those that are), whether the anchor automaton had to read the
    /// text (the costly case), and whether the text may hold escapes.
    pub(crate) fn candidates_scanned(
        &self,
        text: &str,
        enabled: KindSet,
        keys: &KeyMatcher,
    ) -> Candidates {
        let bytes = text.as_bytes();
        let digit_kinds = enabled & (bit(PatternKind::CreditCard) | bit(PatternKind::UsSsn));
        let anchored = enabled & !digit_kinds;
        // Nine digits is the shortest thing the digit kinds match (an SSN).
        let want_digits = digit_kinds != 0 && bytes.len() >= 9;
        let want_anchors = anchored != 0 && bytes.len() >= self.min_anchor_len;
        if !want_digits && !want_anchors {
            return Candidates::default();
        }
        // One pass over the bytes: digit runs, whether every byte is id-shaped, and whether the
        // text has the separators that assignment-like patterns need.
        let scan = scan_bytes(bytes);
        let mut set: KindSet = 0;
        let mut scanned = false;
        if want_digits {
            if scan.card {
                set |= digit_kinds & bit(PatternKind::CreditCard);
            }
            if (scan.ssn && has_ssn_shape(bytes)) || (scan.nine_digits && mentions_ssn_label(bytes))
            {
                set |= digit_kinds & bit(PatternKind::UsSsn);
            }
        }
        if anchored & bit(PatternKind::AzureConnectionKey) != 0 && is_storage_key_shape(bytes) {
            set |= bit(PatternKind::AzureConnectionKey);
        }
        if want_anchors && !(self.id_shape_skip && scan.id_shaped) {
            // Overlapping: an anchor that starts inside another, or ends where another does
            // (`accesskey` in `sharedaccesskey=`), is still reported.
            scanned = true;
            let mut assignment_anchor = false;
            for m in self.prefilter.find_overlapping_iter(text) {
                let kind = self.anchor_kind[m.pattern().as_usize()];
                if kind == PatternKind::SecretAssignment {
                    assignment_anchor = true;
                    continue;
                }
                // Kinds whose regex needs more right after the anchor than the anchor: `Okta`
                // in `Okta Verify` must not run a regex on every such value.
                if set & bit(kind) == 0 && anchor_can_match(kind, bytes, m.start(), m.end()) {
                    set |= bit(kind);
                }
            }
            // A word like `Password` in `1Password Browser Extension` must not run the
            // (capturing) assignment regex: only a sensitive name before a separator can match.
            if assignment_anchor
                && enabled & bit(PatternKind::SecretAssignment) != 0
                && (scan.has_assign || scan.has_space)
                && assignment_possible(bytes, keys)
            {
                set |= bit(PatternKind::SecretAssignment);
            }
            // Kinds whose regex cannot match without these bytes (`name = value`, `Bearer x`).
            if !scan.has_assign && !scan.has_space {
                set &= !(bit(PatternKind::SecretAssignment)
                    | bit(PatternKind::AwsSecretAccessKey)
                    | bit(PatternKind::OktaApiToken));
            }
            if !scan.has_space {
                set &= !bit(PatternKind::AuthHeader);
            }
            // A key id may have its secret key right after it (see the pattern).
            if set & bit(PatternKind::AwsAccessKeyId) != 0 {
                set |= bit(PatternKind::AwsSecretAccessKey);
            }
        }
        Candidates {
            kinds: set & enabled,
            scanned,
            escaped: scan.escaped,
        }
    }

    /// Find the secrets of one kind in `text`, appending them to `out`.
    pub(crate) fn find(
        &self,
        kind: PatternKind,
        text: &str,
        keys: &KeyMatcher,
        out: &mut Vec<Found>,
    ) {
        let spec = &SPECS[kind.index()];
        let re = &self.regexes[kind.index()];
        let mut pos = 0;
        while pos <= text.len() {
            // The lazy DFA finds the match; a capturing search (far slower) runs only for the
            // kinds whose secret is a group of it.
            let Some(m) = re.find_at(text, pos) else {
                break;
            };
            let whole = m.range();
            // The new value of a change whose old value is the secret found.
            let mut new_value: Option<std::ops::Range<usize>> = None;
            let secret = match plain_secret(kind, text, whole.clone()) {
                Some(range) => Some(range)
                    .filter(|r| verify(kind, &text[r.clone()], None, text, r.start, keys)),
                None => {
                    let Some(caps) = re.captures_at(text, pos) else {
                        break;
                    };
                    let found = spec
                        .secret_groups
                        .iter()
                        .find_map(|g| caps.get(*g).map(|m| (*g, m)))
                        .or_else(|| {
                            caps.get(0)
                                .filter(|_| spec.secret_groups.is_empty())
                                .map(|m| (0, m))
                        })
                        .filter(|(_, s)| {
                            verify(kind, s.as_str(), Some(&caps), text, s.start(), keys)
                        })
                        .map(|(g, s)| match kind {
                            PatternKind::SecretAssignment => caps
                                .get(1)
                                .and_then(|k| yaml_block(text, k.range(), s.start()))
                                .unwrap_or_else(|| {
                                    let r = assignment_value(text, g, s);
                                    match caps.get(1) {
                                        Some(k)
                                            if g == BARE_VALUE_GROUP
                                                && names_a_hint(k.as_str()) =>
                                        {
                                            r.start..hint_end(text, r.end)
                                        }
                                        // `Cookie: a=1; session=x; b=2`: every cookie (a
                                        // `Set-Cookie` sets one, then its attributes).
                                        Some(k)
                                            if g == BARE_VALUE_GROUP
                                                && k.as_str().eq_ignore_ascii_case("cookie") =>
                                        {
                                            r.start..cookie_pairs_end(text, r.end)
                                        }
                                        Some(k)
                                            if g == BARE_VALUE_GROUP
                                                && names_a_phrase(k.as_str()) =>
                                        {
                                            r.start..seed_phrase_end(text, r.end)
                                        }
                                        Some(k) if g == BARE_VALUE_GROUP => {
                                            r.start..passphrase_end(text, k.range(), r.clone())
                                        }
                                        _ => r,
                                    }
                                }),
                            PatternKind::CliCredentials if g == SQL_INSERT_COLUMNS_GROUP => {
                                let values = caps.get(0).map_or(text.len(), |m| m.end());
                                sql_insert_secret(text, values, s.as_str(), keys)
                                    .unwrap_or(s.end()..s.end())
                            }
                            // A value that ends in a backslash ends before it: in JSON held as
                            // text that backslash escapes the closing quote, and masking it
                            // left the JSON broken (QA).
                            PatternKind::CliCredentials => {
                                let r = to_closing_quote(text, s.range());
                                let kept = text[r.clone()].trim_end_matches('\\').len();
                                r.start..r.start + kept
                            }
                            _ => s.range(),
                        })
                        .map(|r| match kind {
                            PatternKind::SecretAssignment | PatternKind::CliCredentials => {
                                past_glued_reference(text, to_expression_end(text, r))
                            }
                            _ => r,
                        })
                        // What masking wrote (`["[REDACTED:key]"]`) is not masked again.
                        .filter(|r| !holds_only_masked_strings(&text[r.clone()]))
                        // `--token $TOKEN`, `password: ${DB_PASSWORD}`: where the secret
                        // comes from, which an analyst of a CI log or shell history needs.
                        .filter(|r| {
                            !(matches!(
                                kind,
                                PatternKind::SecretAssignment
                                    | PatternKind::CliCredentials
                                    | PatternKind::AuthHeader
                            ) && names_a_secret_source(text, r.clone()))
                        });
                    // `password changed from X to Y`: the new value too.
                    if kind == PatternKind::SecretAssignment
                        && caps.get(2).is_some_and(|p| names_a_change_from(p.as_str()))
                    {
                        new_value = found
                            .as_ref()
                            .and_then(|r| change_new_value(text, r.end))
                            .filter(|n| {
                                !is_masked(&text[n.clone()])
                                    && !names_a_secret_source(text, n.clone())
                            });
                    }
                    found
                }
            };
            match secret {
                Some(s) => {
                    if s.end > s.start {
                        out.push(Found {
                            start: s.start,
                            end: s.end,
                            kind,
                        });
                    }
                    pos = s.end.max(whole.start + 1);
                    if let Some(n) = new_value.take().filter(|n| n.start >= s.end) {
                        out.push(Found {
                            start: n.start,
                            end: n.end,
                            kind,
                        });
                        pos = pos.max(n.end);
                    }
                }
                // Rejected (`url=...` is not a secret name, a number fails Luhn): look again one
                // character further, so a secret inside the rejected span is still found.
                None => pos = whole.start + 1,
            }
            while pos < text.len() && !text.is_char_boundary(pos) {
                pos += 1;
            }
        }
    }
}

/// The group of [`value_alternatives`] that is a bare (unquoted) value, in the
/// `SecretAssignment` pattern.
const BARE_VALUE_GROUP: usize = 6;

/// The secret of an assignment whose value group `group` matched `value` (on one line): a bare
/// value goes on to the end of its CDATA section, JSON array or object, or over the `&` and `,`
/// that do not separate it from another setting.
/// A command-line secret that opens with a quote goes on to its closing quote (or the end of
/// the text): `--mnemonic "abandon ability ..."` is all of the words, where the pattern's word
/// stopped at the first space.
/// A quote escaped with backslashes (`--mnemonic \"abandon ...\"`, a command in JSON text)
/// goes on to the same escaped quote.
fn to_closing_quote(text: &str, secret: std::ops::Range<usize>) -> std::ops::Range<usize> {
    let bytes = text.as_bytes();
    let escapes = bytes[..secret.start.saturating_sub(1)]
        .iter()
        .rev()
        .take_while(|b| **b == b'\\')
        .count();
    match secret.start.checked_sub(1).map(|i| bytes[i]) {
        Some(quote @ (b'"' | b'\'')) if !secret.is_empty() && escapes > 0 => {
            // The first quote after exactly as many backslashes: that one closes it.
            let end = (secret.end..bytes.len())
                .find(|&i| {
                    bytes[i] == quote
                        && i >= escapes
                        && bytes[i - escapes..i].iter().all(|b| *b == b'\\')
                        && (i == escapes || bytes[i - escapes - 1] != b'\\')
                })
                .map_or(text.len(), |i| i - escapes);
            secret.start..end.max(secret.end)
        }
        Some(quote @ (b'"' | b'\'')) if !secret.is_empty() => {
            // A quote escaped with a backslash (`"ab\" cd"`) does not close it.
            let end = (secret.end..bytes.len())
                .find(|&i| bytes[i] == quote && bytes[i - 1] != b'\\')
                .unwrap_or(text.len());
            secret.start..end.max(secret.end)
        }
        _ => secret,
    }
}

/// A secret that opens a shell or GitHub Actions expression (`${...}`, `${{ ... }}`, after an
/// optional auth scheme) goes on to the expression's closing brace on the same line: a bare
/// value stops at the first `}` or space, which left the rest of `${{ secrets.X || 'literal' }}`
/// or `${VAR:-default value}` (a literal default may be the secret) unmasked.
fn to_expression_end(text: &str, secret: std::ops::Range<usize>) -> std::ops::Range<usize> {
    let value = secret.start + auth_scheme_len(&text[secret.start..]);
    if !text[value..].starts_with("${") {
        return secret;
    }
    let end = bracketed_end(text, value + 1);
    if end > secret.end && text[..end].ends_with('}') && !text[value..end].contains('\n') {
        secret.start..end
    } else {
        secret
    }
}

/// A value that opens with a reference or placeholder (after an optional auth scheme) and goes
/// on glued to more characters (`${X}abc9secret`, `<TOKEN>realsecret`, `{{ .Values.x }}abc`)
/// goes on to the end of those characters: a bare value stops at `}`, `<` or a space, which
/// left what follows the reference, the secret, unmasked. A value that is the reference alone
/// (or followed only by punctuation ending a sentence) is left as found, for
/// [`names_a_secret_source`] to keep.
fn past_glued_reference(text: &str, secret: std::ops::Range<usize>) -> std::ops::Range<usize> {
    let value = secret.start + auth_scheme_len(&text[secret.start..]);
    let rest = &text[value..];
    let Some(len) = reference_len(rest).or_else(|| placeholder_len(rest)) else {
        return secret;
    };
    let end = value + len;
    if end < secret.end {
        return secret;
    }
    let tail = glued_tail_len(&text[end..]);
    if tail == 0 || only_closing_punctuation(&text[end..end + tail]) {
        secret
    } else {
        secret.start..end + tail
    }
}

/// How many characters at the start of `rest` go on a bare value (up to a space, quote, `,`,
/// `&`, `;`, `<`, `>`, backslash or a `}` it did not open: `${X}${Y}` goes on over `${Y}`).
fn glued_tail_len(rest: &str) -> usize {
    let mut open = 0usize;
    rest.bytes()
        .take_while(|b| match b {
            b'{' => {
                open += 1;
                true
            }
            b'}' if open > 0 => {
                open -= 1;
                true
            }
            _ => {
                !b.is_ascii_whitespace()
                    && !matches!(
                        b,
                        b',' | b'&' | b';' | b'}' | b'"' | b'\'' | b'<' | b'>' | b'\\' | b'`'
                    )
            }
        })
        .count()
}

/// Whether `tail` is only punctuation that ends a sentence or closes a bracket (`${TOKEN}.`,
/// `<TOKEN>).`), at most two characters of it: no secret glued to the reference.
fn only_closing_punctuation(tail: &str) -> bool {
    tail.len() <= 2
        && tail
            .bytes()
            .all(|b| matches!(b, b'.' | b':' | b'!' | b'?' | b')' | b']'))
}

fn assignment_value(text: &str, group: usize, value: regex::Match<'_>) -> std::ops::Range<usize> {
    if group != BARE_VALUE_GROUP {
        return value.start()..doubled_quote_end(text, value.start(), value.end());
    }
    if let Some(end) = prefixed_literal_end(text, value.as_str(), value.end()) {
        return value.start()..end;
    }
    if let Some(end) = cdata_end(text, value.start()) {
        return value.start()..end;
    }
    if let Some(end) = digest_credentials_end(text, value.start()) {
        return value.start()..end;
    }
    match text.as_bytes()[value.start()] {
        b'[' | b'{' => value.start()..bracketed_end(text, value.start()),
        _ => {
            let end = extend_bare_value(text, value.end());
            value.start()..without_closing_parens(text, value.start(), end)
        }
    }
}

/// Where a string literal written with a prefix ends, when the bare value `bare` (ending at
/// `end`) is only that prefix: T-SQL's `N'...'`, Postgres' `E'...'`, Python's `b'...'` `u'...'`
/// `r'...'` `f'...'`, bash's `$'...'`, C#'s `@"..."`, Go's `:= "..."` (the `=` of `:=` read as
/// the value) or a YAML tag (`!!str value`). QA: the prefix was masked and the quoted secret
/// after it left in clear (`PASSWORD = [REDACTED]'NqAlter34pw'`).
fn prefixed_literal_end(text: &str, bare: &str, end: usize) -> Option<usize> {
    const PREFIXES: &[&str] = &[
        "N", "n", "E", "e", "b", "B", "u", "U", "r", "R", "f", "F", "br", "rb", "Rb", "bR", "$",
        "@", "=",
    ];
    let bytes = text.as_bytes();
    let tagged = bare.starts_with("!!");
    if !tagged && !PREFIXES.contains(&bare) {
        return None;
    }
    let mut at = end;
    if bare == "=" || tagged {
        at += bytes[at..]
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count();
    }
    match bytes.get(at) {
        Some(&q @ (b'\'' | b'"')) => {
            let close = bytes[at + 1..].iter().position(|b| *b == q)? + at + 1;
            Some(doubled_quote_end(text, at + 1, close) + 1)
        }
        // `!!str value`: the value after the tag, bare.
        Some(b) if tagged && !b.is_ascii_whitespace() => Some(extend_bare_value(text, at + 1)),
        _ => None,
    }
}

/// Where a quoted value starting at `start` ends when its closing quote at `end` is SQL's
/// doubled quote (`'It''s56pw'`: the quote inside the value written twice), else `end`. QA:
/// the value was cut at the first quote and its tail left in clear.
fn doubled_quote_end(text: &str, start: usize, mut end: usize) -> usize {
    let bytes = text.as_bytes();
    let Some(&q @ (b'\'' | b'"')) = start.checked_sub(1).and_then(|i| bytes.get(i)) else {
        return end;
    };
    while bytes.get(end) == Some(&q) && bytes.get(end + 1) == Some(&q) {
        match bytes[end + 2..].iter().position(|b| *b == q) {
            Some(next) => end = end + 2 + next,
            None => break,
        }
    }
    end
}

/// Where HTTP Digest credentials starting at `start` end (`Digest username="bob", realm="x",
/// nonce="...", response="6629..."`): after their last `name=value` parameter, quoted
/// (`"..."`, also JSON-escaped `\"...\"`) or not. The response, nonce and cnonce are all in
/// it, so the whole list is the secret. `None`: no `Digest` and a parameter at `start`.
fn digest_credentials_end(text: &str, start: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let scheme = bytes.get(start..start + 6)?;
    if !scheme.eq_ignore_ascii_case(b"digest") {
        return None;
    }
    let mut pos = start + 6;
    let spaces = bytes[pos..]
        .iter()
        .take_while(|b| b.is_ascii_whitespace())
        .count();
    if spaces == 0 {
        return None;
    }
    pos += spaces;
    let mut end = None;
    loop {
        let name = bytes[pos..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
            .count();
        if name == 0 || bytes.get(pos + name) != Some(&b'=') {
            break;
        }
        pos += name + 1;
        let rest = &bytes[pos..];
        pos += if rest.starts_with(b"\\\"") {
            // JSON-escaped quotes: up to the next `\"` (or the end).
            rest[2..]
                .windows(2)
                .position(|w| w == b"\\\"")
                .map_or(rest.len(), |i| i + 4)
        } else if rest.first() == Some(&b'"') {
            (1..rest.len())
                .find(|&i| rest[i] == b'"' && rest[i - 1] != b'\\')
                .map_or(rest.len(), |i| i + 1)
        } else {
            rest.iter()
                .take_while(|b| !b.is_ascii_whitespace() && !matches!(b, b',' | b'"' | b'\\'))
                .count()
        };
        end = Some(pos);
        let gap = bytes[pos..]
            .iter()
            .take_while(|b| b.is_ascii_whitespace() || **b == b',')
            .count();
        if !bytes[pos..pos + gap].contains(&b',') {
            break;
        }
        pos += gap;
    }
    end
}

/// The secret of a YAML-style `name:` whose value is a block: after a block scalar indicator
/// (`password: |`, `>-`, ...) or on the lines after the name (`credentials:` then `  - x`). It
/// is every following line indented more than the name (list items may also be at the name's
/// column), from the first line's text to the last one's end; only the first line of it was
/// matched. An indicator with no block after it is an empty value: the empty range at
/// `value_start`. `None`: the value is on the name's line, or (without an indicator) no line is
/// indented more, which leaves the value as matched.
///
/// After an indicator, the line breaks may be escaped (`\n` of a YAML file held in JSON text,
/// with as many backslashes as it is nested deep); the block then also ends where the string
/// holding it does (an unescaped quote). A name after other text on its line (`cfg=password:
/// >`, as a decoded query parameter has it) has the line's indentation as its column.
fn yaml_block(
    text: &str,
    name: std::ops::Range<usize>,
    value_start: usize,
) -> Option<std::ops::Range<usize>> {
    let separator = &text[name.end..value_start];
    let (line_break, brk) = first_line_break(separator)?;
    let escapes = brk.len() - 1;
    let mut rest_of_line = separator[..line_break].trim_end();
    if escapes > 0 {
        // An escaped CR before the escaped LF (`\r\n`).
        rest_of_line = rest_of_line
            .strip_suffix('r')
            .filter(|r| r.ends_with(&brk[..escapes]))
            .map_or(rest_of_line, |r| &r[..r.len() - escapes]);
    }
    let rest_of_line = rest_of_line
        .strip_prefix(['"', '\''])
        .unwrap_or(rest_of_line)
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let indicator = !rest_of_line.is_empty();
    if indicator && !is_block_indicator(rest_of_line) {
        return None;
    }
    if escapes > 0 && !indicator {
        return None;
    }
    // The line's start, looked for within a bounded distance: a block header is no further
    // than that into its line, and an unbounded search for each header was quadratic.
    let mut window = name.start.saturating_sub(4096);
    while !text.is_char_boundary(window) {
        window += 1;
    }
    let line_start = text[window..name.start]
        .rfind(brk)
        .map_or(window, |i| window + i + brk.len());
    // A quoted name's column is its quote's.
    let quoted = name.start > line_start && matches!(text.as_bytes()[name.start - 1], b'"' | b'\'');
    let column = name.start - line_start - usize::from(quoted);
    let before_name = &text[line_start..line_start + column];
    let indentation = before_name.len() - before_name.trim_start_matches([' ', '\t']).len();
    let after_indentation = before_name[indentation..].trim_end();
    let column = if indicator && !after_indentation.is_empty() && after_indentation != "-" {
        indentation
    } else {
        column
    };
    // Escaped breaks: the string holding the block ends at a quote with fewer backslashes.
    let text_end = if escapes > 0 {
        let bytes = text.as_bytes();
        (value_start..bytes.len())
            .find(|&i| {
                bytes[i] == b'"'
                    && bytes[..i].iter().rev().take_while(|b| **b == b'\\').count() < escapes
            })
            .unwrap_or(text.len())
    } else {
        text.len()
    };
    let mut block: Option<std::ops::Range<usize>> = None;
    let mut line = name.end + line_break + brk.len();
    while line < text_end {
        let line_end = text[line..text_end]
            .find(brk)
            .map_or(text_end, |i| line + i);
        let content = text[line..line_end].trim_start_matches([' ', '\t']);
        let body = content.trim_end();
        let indent = line_end - line - content.len();
        let list_item = body == "-" || body.starts_with("- ");
        if !body.is_empty() {
            if indent > column || (!indicator && indent == column && list_item) {
                let start = block.as_ref().map_or(line_end - content.len(), |b| b.start);
                block = Some(start..line_end - content.len() + body.len());
            } else {
                break;
            }
        }
        line = line_end + brk.len();
    }
    match block {
        // `password:` over `secretKeyRef:` / `valueFrom:` (Kubernetes, Helm, External Secrets)
        // names where the secret is kept: nothing to mask, and which secret is used is what an
        // analyst needs.
        Some(block) if !indicator && names_a_secret_reference(&text[block.clone()]) => {
            Some(value_start..value_start)
        }
        Some(block) => Some(block),
        None if indicator => Some(value_start..value_start),
        None => None,
    }
}

/// The first line break in `s`: where it is and how it is written, a real `\n` or one escaped
/// in JSON text (`\n`, or `\\\n` nested a level deeper: backslashes, then `n`).
fn first_line_break(s: &str) -> Option<(usize, &str)> {
    let bytes = s.as_bytes();
    let real = memchr::memchr(b'\n', bytes);
    let mut i = 0;
    let limit = real.unwrap_or(bytes.len());
    while i < limit {
        if bytes[i] == b'\\' {
            let run = bytes[i..].iter().take_while(|b| **b == b'\\').count();
            if bytes.get(i + run) == Some(&b'n') {
                return Some((i, &s[i..i + run + 1]));
            }
            i += run;
        } else {
            i += 1;
        }
    }
    real.map(|i| (i, "\n"))
}

/// Whether the secret found at `range` of `text` is, whole, a reference to a secret kept
/// elsewhere ([`reference_len`]) or a placeholder for one ([`placeholder_len`]), after an optional auth scheme (`Bearer $TOKEN`): nothing to
/// mask. The reference may go on past `range` (a bare value stops at `}` or a space, as in
/// `${API_TOKEN}` and `${{ secrets.NPM_TOKEN }}`), but then only up to the end of the value
/// (punctuation ending a sentence may follow: `${TOKEN}.`); anything else after it in the value
/// (`$TOKEN/x`, `${X}abc`, `<TOKEN>abc`) keeps the whole value masked.
fn names_a_secret_source(text: &str, range: std::ops::Range<usize>) -> bool {
    let value = &text[range.start..];
    let skip = auth_scheme_len(value);
    let rest = &value[skip..];
    let Some(len) = reference_len(rest).or_else(|| placeholder_len(rest)) else {
        return false;
    };
    let end = range.start + skip + len;
    let tail = glued_tail_len(&text[end..]);
    if tail > 0 && only_closing_punctuation(&text[end..end + tail]) {
        return end + tail >= range.end;
    }
    end >= range.end
        && text[end..].bytes().next().is_none_or(|b| {
            b.is_ascii_whitespace()
                || matches!(
                    b,
                    b'"' | b'\''
                        | b'`'
                        | b','
                        | b';'
                        | b'&'
                        | b')'
                        | b']'
                        | b'}'
                        | b'|'
                        | b'<'
                        | b'\\'
                )
        })
}

/// Whether `value` as a whole is a reference to a secret kept elsewhere or a placeholder for one
/// (see [`names_a_secret_source`]): `$DB_PASSWORD`, `Bearer ${TOKEN}`, `<your-token>`.
pub(crate) fn is_secret_source(value: &str) -> bool {
    names_a_secret_source(value, 0..value.len())
}

/// The length of the auth scheme and the spaces after it that `value` starts with (`Bearer `,
/// `token `), as the assignment pattern takes it into the value; 0 if none.
pub(crate) fn auth_scheme_len(value: &str) -> usize {
    let bytes = value.as_bytes();
    let word = bytes.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    let spaces = bytes[word..]
        .iter()
        .take_while(|b| b.is_ascii_whitespace())
        .count();
    let scheme = &value[..word];
    if spaces > 0
        && ["bearer", "basic", "ssws", "token", "digest"]
            .iter()
            .any(|s| scheme.eq_ignore_ascii_case(s))
    {
        word + spaces
    } else {
        0
    }
}

/// The length of the reference to a secret kept elsewhere that `value` starts with, if it
/// does: a shell variable `$NAME` (upper case only, since a password may start with `$`:
/// `$ecretPassw0rd`, bcrypt's `$2a$10$...`), `${name}` (also dotted: `${env.TOKEN}`), a
/// PowerShell `$env:NAME`, a Windows `%NAME%` (upper case only), a GitHub Actions expression
/// `${{ secrets.NAME }}` or a template `{{ .Values.token }}` / `{{ token }}` holding only a
/// (dotted) name. An expression with anything else in it (`${VAR:-default}`, `{{ x | default
/// "y" }}`) may hold a literal secret and is no reference.
pub(crate) fn reference_len(value: &str) -> Option<usize> {
    let bytes = value.as_bytes();
    let ident = |s: &[u8]| {
        if s.first()
            .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
        {
            s.iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                .count()
        } else {
            0
        }
    };
    let upper_ident = |s: &[u8]| {
        let n = s
            .iter()
            .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || **b == b'_')
            .count();
        let ok = n > 0 && !s[0].is_ascii_digit() && s[..n].iter().any(u8::is_ascii_uppercase);
        if ok {
            n
        } else {
            0
        }
    };
    // A dotted path of names (`secrets.NPM_TOKEN`, `steps.get-token.outputs.token`), the whole
    // of `s`.
    let dotted_path = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|seg| {
                let seg = seg.as_bytes();
                seg.first()
                    .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
                    && seg
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
            })
    };
    if let Some(rest) = value.strip_prefix("${{") {
        let close = rest.find("}}")?;
        return dotted_path(rest[..close].trim()).then_some(3 + close + 2);
    }
    if let Some(rest) = value.strip_prefix("{{") {
        let close = rest.find("}}")?;
        let inner = rest[..close].trim();
        // Go template trim markers (`{{- .Values.token -}}`) and its root (`.Values`, `$.Values`).
        let inner = inner.strip_prefix('-').unwrap_or(inner);
        let inner = inner.strip_suffix('-').unwrap_or(inner).trim();
        let inner = inner.strip_prefix('$').unwrap_or(inner);
        let inner = inner.strip_prefix('.').unwrap_or(inner);
        return dotted_path(inner).then_some(2 + close + 2);
    }
    if let Some(rest) = value.strip_prefix("${") {
        let close = rest.find('}')?;
        return dotted_path(&rest[..close]).then_some(2 + close + 1);
    }
    if bytes.len() > 5 && bytes[..5].eq_ignore_ascii_case(b"$env:") {
        let n = ident(&bytes[5..]);
        return (n > 0).then_some(5 + n);
    }
    if let Some(rest) = bytes.strip_prefix(b"$") {
        let n = upper_ident(rest);
        return (n > 0).then_some(1 + n);
    }
    if let Some(rest) = bytes.strip_prefix(b"%") {
        let n = upper_ident(rest);
        return (n > 0 && rest.get(n) == Some(&b'%')).then_some(n + 2);
    }
    None
}

/// The length of the placeholder for a secret that `value` starts with, if it does: the text
/// of documentation and examples, not a secret. An angle-bracketed name in one case, without
/// digits (`<TOKEN>`, `<your-token>`, `<api key>`; `password=<your-password>` is not even
/// taken for a value by the assignment pattern); a name saying what to put there
/// (`YOUR_TOKEN_HERE`, `your-api-key`, `PASTE_TOKEN_HERE`, `REPLACE_ME`); or a run of one
/// filler character (`xxxxxxxx`, `********`, `...`). Names in one case only. Real default passwords (`changeme`,
/// `admin`) are no placeholders, nor is a run of digits (`00000000` is a PIN).
pub(crate) fn placeholder_len(value: &str) -> Option<usize> {
    let bytes = value.as_bytes();
    if let Some(rest) = bytes.strip_prefix(b"<") {
        let close = rest.iter().position(|b| *b == b'>')?;
        let inner = &rest[..close];
        let one_case =
            !inner.iter().any(u8::is_ascii_lowercase) || !inner.iter().any(u8::is_ascii_uppercase);
        return (inner.first().is_some_and(u8::is_ascii_alphabetic)
            && inner
                .iter()
                .all(|b| b.is_ascii_alphabetic() || matches!(b, b'_' | b'-' | b'.' | b' '))
            && one_case)
            .then_some(close + 2);
    }
    let filler = value.chars().next()?;
    if matches!(filler, 'x' | 'X' | '*' | '#' | '.' | '\u{2022}') {
        let run = value.chars().take_while(|c| *c == filler).count();
        if run >= 3 {
            return Some(run * filler.len_utf8());
        }
    }
    let word = bytes
        .iter()
        .take_while(|b| b.is_ascii_alphabetic() || matches!(b, b'_' | b'-'))
        .count();
    // In one case, as such names are written: `YOUR_TOKEN_HEREabc` goes on with a secret.
    let one_case = !value[..word].bytes().any(|b| b.is_ascii_lowercase())
        || !value[..word].bytes().any(|b| b.is_ascii_uppercase());
    let lower = value[..word].to_ascii_lowercase().replace('-', "_");
    let says_what_to_put = one_case
        && ((lower.starts_with("your_") && lower.len() > 5)
            || (lower.ends_with("_here") && lower.len() > 5)
            || ["replace_me", "replaceme", "replace_this"].contains(&lower.as_str()));
    says_what_to_put.then_some(word)
}

/// Whether a YAML block starts with a mapping key that refers to a secret kept elsewhere.
fn names_a_secret_reference(block: &str) -> bool {
    const REFERENCE_KEYS: &[&str] = &[
        "secretKeyRef",
        "secretRef",
        "valueFrom",
        "configMapKeyRef",
        "existingSecret",
        "secretName",
        "secretStoreRef",
        "remoteRef",
        "fromSecret",
    ];
    let Some((key, rest)) = block.split_once(':') else {
        return false;
    };
    (rest.is_empty() || rest.starts_with([' ', '\n', '\r']))
        && REFERENCE_KEYS
            .iter()
            .any(|r| key.trim_start_matches("- ").eq_ignore_ascii_case(r))
}

/// Whether the name of an assignment is a password hint's or reminder's (`password_hint`,
/// `passwordReminder`): its value is prose, which may give the password away whole.
fn names_a_hint(name: &str) -> bool {
    name_ends_with(name, "hint") || names_a_reminder(name)
}

/// Whether the name of an assignment is a password reminder's (`password_reminder`).
pub(crate) fn names_a_reminder(name: &str) -> bool {
    name_ends_with(name, "reminder")
}

/// Whether `name`, in any case and singular, ends with the lower-case `word`.
fn name_ends_with(name: &str, word: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.strip_suffix('s').unwrap_or(&name).ends_with(word)
}

/// Where a hint's bare value that matched up to `end` ends: its words go on, like a quoted
/// value's, to the next `;`, `&`, line end or quote (also an escaped one, `<` of markup).
fn hint_end(text: &str, end: usize) -> usize {
    let rest = &text[end..];
    let stop = rest
        .find([';', '&', '\n', '\r', '"', '\'', '<', '\\'])
        .unwrap_or(rest.len());
    end + rest[..stop].trim_end().len()
}

/// Where a `Cookie:` header's cookies end, the first ending at `end`: over each further
/// `; name=value` (RFC 6265's separator), and no further: what follows on a one-line log
/// (`status=302 dst=...`) stays.
fn cookie_pairs_end(text: &str, end: usize) -> usize {
    let bytes = text.as_bytes();
    let mut pos = end;
    loop {
        let Some(b';') = bytes.get(pos) else {
            return pos;
        };
        let name_start = pos + 1 + bytes[pos + 1..].iter().take_while(|b| **b == b' ').count();
        let name_len = bytes[name_start..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'$'))
            .count();
        if name_len == 0 || bytes.get(name_start + name_len) != Some(&b'=') {
            return pos;
        }
        let value_start = name_start + name_len + 1;
        let value_len = bytes[value_start..]
            .iter()
            .take_while(|b| {
                !b.is_ascii_whitespace() && !matches!(b, b';' | b',' | b'"' | b'\'' | b'\\')
            })
            .count();
        pos = value_start + value_len;
    }
}

/// Whether `name` names a wallet's seed or recovery phrase (`seed phrase`, `mnemonic`,
/// `recovery_phrase`): its value is a dozen words or more.
fn names_a_phrase(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("mnemonic") || (name.ends_with("phrase") && !name.ends_with("passphrase"))
}

/// Where a seed phrase whose first word ends at `end` ends: after 12 to 24 lower-case words
/// of 3-8 letters (BIP-39's), one space or tab apart; else at `end` (one word).
fn seed_phrase_end(text: &str, end: usize) -> usize {
    let bytes = text.as_bytes();
    let mut pos = end;
    let mut words = 1;
    let mut last = end;
    while words < 24 {
        let spaces = bytes[pos..]
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count();
        let letters = bytes[pos + spaces..]
            .iter()
            .take_while(|b| b.is_ascii_lowercase())
            .count();
        let after = bytes.get(pos + spaces + letters);
        if spaces == 0
            || !(3..=8).contains(&letters)
            || after.is_some_and(u8::is_ascii_alphanumeric)
        {
            break;
        }
        pos += spaces + letters;
        words += 1;
        last = pos;
    }
    if words >= 12 {
        last
    } else {
        end
    }
}

/// Where an unquoted value `value` of the assignment named at `name` ends when it may be a
/// passphrase of several words: the name is a password's (`passphrase`, `db_password`), starts
/// its line (a setting: config files, `.env`, YAML; a line break may be escaped) and a
/// spaced `:` or `=` stands before the value (`passphrase: correct horse battery
/// staple`, `password = my secret words`, as config files and prose write it). Its words go on,
/// one space or tab apart, up to the end of the line (or a `;`, `,`, `&`, `|`, quote, `<`,
/// backslash or ` #` comment), but not into another setting: a word with `=` in it, ending
/// in `:`, followed by a spaced `=` or `:`, or an option (`--x`). `key=value` logs
/// (`password=x user=bob`) have no space there and keep the first word; so does a value that
/// is a reference or placeholder (`password: ******** (hidden)`).
fn passphrase_end(
    text: &str,
    name: std::ops::Range<usize>,
    value: std::ops::Range<usize>,
) -> usize {
    let separator = &text[name.end..value.start];
    let spaced = separator.ends_with([' ', '\t'])
        && !separator.contains(['\n', '\r', '>', '&', '"', '\'', '\\'])
        && separator.trim().len() == 1
        && separator.trim().starts_with([':', '=']);
    // The name starts its line (after indentation or a list marker): a setting, not a sentence
    // about a password (`Update password: User update password for Okta`). Read back from the
    // name over that much only: a search for the line's start read the whole text before each
    // value found (quadratic on a long line of many).
    let before = text[..name.start].trim_end_matches([' ', '\t']);
    let before = before
        .strip_suffix(['-', '#'])
        .unwrap_or(before)
        .trim_end_matches([' ', '\t']);
    let starts_line =
        before.is_empty() || before.ends_with(['\n', '\r']) || before.ends_with("\\n");
    if !spaced
        || !starts_line
        || !super::keys::ends_with_password_word(&text[name.clone()])
        || is_secret_source(&text[value.clone()])
    {
        return value.end;
    }
    let stops = |b: u8| {
        b.is_ascii_whitespace()
            || matches!(
                b,
                b';' | b',' | b'&' | b'|' | b'"' | b'\'' | b'<' | b'`' | b'\\'
            )
    };
    let bytes = text.as_bytes();
    let mut end = value.end;
    loop {
        let gap = bytes[end..]
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count();
        let word_start = end + gap;
        let word = bytes[word_start..]
            .iter()
            .take_while(|b| !stops(**b))
            .count();
        if gap == 0 || word == 0 {
            break;
        }
        let w = &text[word_start..word_start + word];
        let next = text[word_start + word..].trim_start_matches([' ', '\t']);
        if w.contains('=')
            || w.ends_with(':')
            || w.starts_with('#')
            || w.starts_with("--")
            || is_masked(w)
            || next.starts_with(['=', ':'])
        {
            break;
        }
        end = word_start + word;
    }
    end
}

/// Whether `value` opens with an HTML tag (`<b>`, `<br>`, `<strong>`) rather than a placeholder.
fn opens_with_html_tag(value: &str) -> bool {
    const TAGS: &[&str] = &[
        "a",
        "abbr",
        "b",
        "big",
        "blockquote",
        "br",
        "center",
        "code",
        "dd",
        "del",
        "div",
        "dl",
        "dt",
        "em",
        "font",
        "hr",
        "i",
        "ins",
        "kbd",
        "li",
        "mark",
        "nobr",
        "ol",
        "p",
        "pre",
        "q",
        "s",
        "samp",
        "small",
        "span",
        "strike",
        "strong",
        "sub",
        "sup",
        "table",
        "tbody",
        "td",
        "th",
        "thead",
        "tr",
        "tt",
        "u",
        "ul",
        "var",
        "wbr",
    ];
    value
        .strip_prefix('<')
        .and_then(|rest| rest.split_once('>'))
        .is_some_and(|(tag, _)| TAGS.iter().any(|t| tag.trim().eq_ignore_ascii_case(t)))
}

/// Whether `secret` at `start` is a YAML block scalar indicator ending its line (`token: |-`
/// held alone, as an array item of a file's lines): the block's header, no value.
fn is_lone_block_indicator(text: &str, start: usize, secret: &str) -> bool {
    // The cheap test first: this runs for every value found, and the rest of a long line is
    // read only after an indicator (reading it for each of many values was quadratic).
    is_block_indicator(secret) && {
        let rest = &text[start + secret.len()..];
        let rest = rest[..rest.find(['\n', '\\']).unwrap_or(rest.len())].trim();
        rest.is_empty() || rest.starts_with('#')
    }
}

/// A YAML block scalar header: `|` or `>`, then an optional indentation digit and chomping
/// indicator in either order (`|-`, `>+`, `|2-`), then optionally a comment.
pub(crate) fn is_block_indicator(header: &str) -> bool {
    let header = header.split(" #").next().unwrap_or(header).trim_end();
    let Some(rest) = header.strip_prefix(['|', '>']) else {
        return false;
    };
    rest.len() <= 2
        && rest.bytes().filter(|b| matches!(b, b'+' | b'-')).count() <= 1
        && rest.bytes().filter(u8::is_ascii_digit).count() <= 1
        && rest.bytes().all(|b| matches!(b, b'+' | b'-' | b'1'..=b'9'))
}

/// The group of the `UrlSignature` pattern that is the value of a session or password query
/// parameter (`?auth=`, `?pw=`, `?sessionid=`).
const SESSION_PARAMETER_GROUP: usize = 2;

/// The group of the `UrlSignature` pattern that is the value of a URL's `key` parameter.
const URL_KEY_GROUP: usize = 3;

/// The group of the `UrlSignature` pattern that is a one-time link's token in a URL path.
const LINK_TOKEN_GROUP: usize = 4;

/// The group of the `CliCredentials` pattern that is the one word after `--seed`.
const SEED_WORD_GROUP: usize = 25;

/// Whether `name` (of an option, `--<name>=`) is one the command-line pattern reads a wallet
/// seed phrase after.
pub(super) fn names_a_seed_option(name: &str) -> bool {
    let name = name.to_ascii_lowercase().replace('_', "-");
    [
        "seed",
        "seed-phrase",
        "seedphrase",
        "mnemonic",
        "mnemonic-phrase",
        "recovery-phrase",
        "secret-recovery-phrase",
    ]
    .contains(&name.as_str())
}

/// Whether the option before the value at `start` (`--seed 9f86...`, `-seed="..."`) is `seed`
/// itself, not `--seed-phrase` or `--mnemonic`, which hold nothing but secrets.
fn option_before_is_seed(text: &str, start: usize) -> bool {
    let option = text[..start].trim_end_matches(['"', '\'', '\\', ' ', '\t', '=']);
    let option = option.as_bytes();
    option.len() >= 5 && option[option.len() - 5..].eq_ignore_ascii_case(b"-seed")
}

/// The group of the `CliCredentials` pattern that is `zip -P`'s password.
const ZIP_PASSWORD_GROUP: usize = 42;

/// The group of the `CliCredentials` pattern that is the admin and attack tools' `-p`.
const TOOLS_PASSWORD_GROUP: usize = 46;

/// The group of the `CliCredentials` pattern that is the column list of an SQL `INSERT`.
const SQL_INSERT_COLUMNS_GROUP: usize = 58;

/// The span of an SQL `INSERT`'s secrets: from the first to the last quoted value at the place of
/// a column of `columns` that names a secret (`password`, `api_key`), in every row of its
/// `VALUES (...), (...)` list (starting at `values`, inside the first row's parenthesis):
/// `INSERT INTO users (email, password) VALUES ('a@b.c', '<secret>')`. The values between two
/// secrets are masked with them, so that no secret is left between (the masking takes one span
/// per match). `None` when no column names one, or no such value is a quoted string (`NULL`, a
/// number, a placeholder such as `?` or `$2`, a function call: no secret written out).
fn sql_insert_secret(
    text: &str,
    values: usize,
    columns: &str,
    keys: &KeyMatcher,
) -> Option<std::ops::Range<usize>> {
    let secret_places: Vec<bool> = columns
        .split(',')
        .map(|c| keys.is_sensitive(c.trim().trim_matches(['`', '"', '[', ']'])))
        .collect();
    if !secret_places.contains(&true) {
        return None;
    }
    let b = text.as_bytes();
    let skip_space = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    };
    let mut span: Option<std::ops::Range<usize>> = None;
    let mut i = values;
    // Rows: the first starts at `values`; each next one after `, (`.
    for _row in 0..10_000 {
        for (place, secret) in secret_places.iter().enumerate() {
            i = skip_space(i);
            let (value, next) = match *b.get(i)? {
                quote @ (b'\'' | b'"') => {
                    let mut j = i + 1;
                    loop {
                        match *b.get(j)? {
                            // A doubled quote is one inside the string (SQL's escape).
                            c if c == quote && b.get(j + 1) == Some(&quote) => j += 2,
                            c if c == quote => break,
                            b'\\' => j += 2,
                            _ => j += 1,
                        }
                    }
                    (Some(i + 1..j), j + 1)
                }
                _ => {
                    let mut depth = 0usize;
                    let mut j = i;
                    while let Some(&c) = b.get(j) {
                        match c {
                            b'(' => depth += 1,
                            b')' if depth == 0 => break,
                            b')' => depth -= 1,
                            b',' if depth == 0 => break,
                            _ => {}
                        }
                        j += 1;
                    }
                    (None, j)
                }
            };
            if let Some(value) = value.filter(|r| *secret && r.end > r.start) {
                span = Some(match span {
                    Some(s) => s.start..value.end,
                    None => value,
                });
            }
            i = skip_space(next);
            let last = place + 1 == secret_places.len();
            match b.get(i) {
                Some(b',') if !last => i += 1,
                Some(b')') if last => i += 1,
                _ => return span,
            }
        }
        // Another row: `, (`.
        i = skip_space(i);
        if b.get(i) != Some(&b',') {
            return span;
        }
        i = skip_space(i + 1);
        if b.get(i) != Some(&b'(') {
            return span;
        }
        i += 1;
    }
    span
}

/// The group of the `CliCredentials` pattern that is `rabbitmqctl`'s password.
const RABBITMQ_PASSWORD_GROUP: usize = 51;

/// The groups of the `CliCredentials` pattern that are an option alone, `-H <NTLM hash>` and
/// `-s <new password>`, with the programs that must run it (checked by [`runs_before`]).
const OPTION_ALONE_GROUPS: [(usize, &[&str]); 8] = [
    (
        48,
        &[
            "evil-winrm",
            "crackmapexec",
            "cme",
            "nxc",
            "netexec",
            "smbmap",
        ],
    ),
    (52, &["ldappasswd"]),
    (60, &["ssh-keygen"]),
    (61, &["ssh-keygen"]),
    (62, &["ssh-keygen"]),
    (63, &["ssh-keygen"]),
    (64, &["rman"]),
    (91, &["snmp-server"]),
];

/// The groups of the `CliCredentials` pattern that are the name given a value by `setx` and
/// `SetEnvironmentVariable`: the value is a secret only under a sensitive name.
const VARIABLE_NAME_GROUPS: [usize; 2] = [70, 74];

/// The groups of the `CliCredentials` pattern that are a bare value which prose could hold too
/// (`use the -Token Parameter`, `Username or password INCORRECT`), with the group of the type
/// digit that makes a network device's line a configuration (`secret 0 x`), if any.
const PROSE_LIKE_VALUE_GROUPS: [(usize, Option<usize>); 4] = [
    (80, Some(79)),
    (82, Some(81)),
    (85, Some(84)),
    (89, Some(88)),
];

/// The groups of the `CliCredentials` pattern that are a PowerShell parameter's value: a
/// reference to a secret elsewhere (`$env:X`, `${env:X}`, OpenSSL's `env:X`, `file:/run/x`) is
/// none.
const PARAMETER_VALUE_GROUPS: [usize; 3] = [65, 66, 67];

/// The group of the `CliCredentials` pattern that is a PowerShell parameter's bare value.
const PARAMETER_BARE_GROUP: usize = 67;

/// The group of the `CliCredentials` pattern that is a Vault token.
const VAULT_TOKEN_GROUP: usize = 90;

/// Whether one of `programs` runs the command that `start` is in: named before it, with no
/// command separator (`;`, `|`, `&`, a line break) between, within 1 KiB.
fn runs_before(text: &str, start: usize, programs: &[&str]) -> bool {
    let mut from = start.saturating_sub(1024);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let command = &text[from..start];
    let command = command
        .rfind([';', '|', '&', '\n'])
        .map_or(command, |i| &command[i + 1..]);
    command
        .split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '(' | '[' | '='))
        .any(|word| runs_one_of(word.trim_end_matches(".py"), programs))
}

/// Whether the value after a device configuration keyword is prose instead (`pre-shared-key
/// mismatch.`, `enable password complexity=High`, `pre-shared-key (PSK) configured`): a
/// lower-case word (a sentence's closing `.`, `;` or `)` aside), a setting (`=`) or an opening
/// parenthesis.
fn device_value_in_prose(secret: &str) -> bool {
    let word = secret.trim_end_matches(['.', ',', ';', ':', '!', '?', ')']);
    word.is_empty()
        || word.contains('=')
        || word.starts_with('(')
        || word.bytes().all(|b| b.is_ascii_lowercase())
}

/// Whether a PowerShell parameter's bare value is a word of a sentence (`Use the -Token
/// Parameter to pass a PAT`, `-Password SecureString expected`): letters only, and lower-case
/// or followed by a lower-case word.
fn parameter_word_in_prose(text: &str, start: usize, secret: &str) -> bool {
    if !secret.bytes().all(|b| b.is_ascii_alphabetic()) {
        return false;
    }
    let after = text[start + secret.len()..].trim_start_matches([' ', '\t']);
    secret.bytes().all(|b| b.is_ascii_lowercase())
        || after.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
}

/// Whether a parameter's value names where a secret is instead of holding it: a variable
/// (`$env:X`, `${env:X}`) or OpenSSL's `env:`, `file:`, `fd:` and `stdin`.
fn names_a_secret_elsewhere(secret: &str) -> bool {
    secret.starts_with('$')
        || ["env:", "file:", "fd:", "stdin"].iter().any(|p| {
            secret
                .get(..p.len())
                .is_some_and(|h| h.eq_ignore_ascii_case(p))
        })
}

/// The group of the `CliCredentials` pattern that is the bare password of `net user`.
const NET_USER_PASSWORD_GROUP: usize = 9;

/// Whether the word after `net user <name>` is prose (`net user account was created`), not a
/// password: a plain lower-case word that neither ends the text nor comes before a `/` switch
/// (`net user bob hunter /add` sets one).
fn net_user_prose(text: &str, start: usize, secret: &str) -> bool {
    let after = text[start + secret.len()..].trim_start_matches([' ', '\t']);
    secret.bytes().all(|b| b.is_ascii_lowercase()) && !after.is_empty() && !after.starts_with('/')
}

/// Whether `secret`, the value of `name` in text, can be what the name's last word calls it:
/// the short or ambiguous names hold ordinary words in text too (`tests pass: all 42 green`,
/// `seed=12345` of a test run, `OTP: sent via sms`, `pw: the usual`). A value of `pass`/`pw`
/// must look generated (letters and digits) or mix in symbols, a `seed` must look generated or
/// be long, an `otp`/`pin` must hold a digit; other names take any value.
fn short_name_value_is_secret(name: &str, secret: &str) -> bool {
    let last_word_is = |word: &str| super::keys::ends_with_word(name, word);
    let digits_only = secret.bytes().all(|b| b.is_ascii_digit());
    let symbols = secret.len() >= 6 && secret.bytes().any(|b| b.is_ascii_punctuation());
    if last_word_is("pass") || last_word_is("pw") {
        !digits_only && (looks_generated(secret) || symbols)
    } else if last_word_is("seed") {
        !digits_only && (looks_generated(secret) || secret.len() >= 16)
    } else if PIN_WORDS.iter().any(|w| last_word_is(w)) {
        secret.bytes().any(|b| b.is_ascii_digit())
    } else {
        true
    }
}

/// Whether `name` (a secret's name in text) calls its value a PIN or a one-time code, whose
/// values look like no generated secret (`pin changed from 1234 to 5678`).
fn names_a_pin(name: &str) -> bool {
    PIN_WORDS
        .iter()
        .chain(&["passcode"])
        .any(|w| super::keys::ends_with_word(name, w))
}

/// The last words of names whose value is a PIN or a one-time code.
const PIN_WORDS: &[&str] = &["otp", "totp", "hotp", "pin"];

/// Whether the name at `name_start` is the `pin` of a version or a build (`Version pin
/// changed from v1.2.3 to v1.2.4`, `dependency pin`): a pinned version, no PIN.
fn pins_a_version(text: &str, name_start: usize) -> bool {
    let before = text[..name_start].trim_end();
    let word = before
        .rsplit(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or("");
    [
        "version",
        "versions",
        "build",
        "dependency",
        "package",
        "image",
        "tag",
        "commit",
        "release",
        "sha",
        "digest",
        "chart",
        "module",
    ]
    .iter()
    .any(|w| word.eq_ignore_ascii_case(w))
}

/// Whether `secret` can be a PIN or one-time code: 4 to 12 digits, or letters and digits
/// mixed (`4821`, `a7k9`), where `is 6 digits`, `was v2` or `to sms` are prose.
fn is_pin_value(secret: &str) -> bool {
    // The end of a sentence or an aside after it (`Your OTP is 123456.`, `(pin is 1234)`).
    let b = secret.trim_end_matches(['.', ')', ',', ';']).as_bytes();
    (4..=12).contains(&b.len())
        && b.iter().all(u8::is_ascii_alphanumeric)
        && b.iter().any(u8::is_ascii_digit)
        && (b.iter().all(u8::is_ascii_digit)
            || b.iter().filter(|c| c.is_ascii_digit()).count() >= 2)
}

/// Whether `token:<value>` is an Okta factor type (`token:software:totp`, `token:hardware`,
/// `token:hotp`): what kind of factor a user enrolled, which an analyst needs, not a token.
fn is_okta_factor_type(
    text: &str,
    name: std::ops::Range<usize>,
    start: usize,
    secret: &str,
) -> bool {
    text[name.clone()].eq_ignore_ascii_case("token")
        && start == name.end + 1
        && ["software", "hardware", "hotp", "totp"].iter().any(|t| {
            secret
                .strip_prefix(t)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(':'))
        })
}

/// The groups of the `CliCredentials` pattern that are `htpasswd`'s flags (with `-n`, without).
const HTPASSWD_FLAGS_GROUPS: [usize; 2] = [10, 12];

/// The MySQL and MariaDB clients, whose `-p` takes the password glued to it (`-pS3cret`; a
/// bare `-p` prompts). The `CliCredentials` pattern names the same programs (a test holds
/// them together), and the masking walk masks such an option in an argument list after one of
/// them (`["mysql", "-uroot", "-pS3cret"]`).
pub(crate) const GLUED_PASSWORD_CLIENTS: &[&str] = &[
    "mysql",
    "mysqldump",
    "mysqladmin",
    "mysqlimport",
    "mysqlcheck",
    "mysqlshow",
    "mysqlpump",
    "mysqlslap",
    "mariadb",
    "mariadb-dump",
    "mariadb-admin",
    "mariadb-import",
    "mariadb-check",
    "mariadb-show",
    "mariadb-slap",
];

/// Whether the argument `program` runs one of [`GLUED_PASSWORD_CLIENTS`] (also by its path,
/// or as a Windows `.exe`), in any case.
pub(crate) fn is_glued_password_client(program: &str) -> bool {
    runs_one_of(program, GLUED_PASSWORD_CLIENTS)
}

/// The other programs whose credentials the `CliCredentials` pattern reads from their command
/// line (`curl -u user:<password>`, `sshpass -p`, `docker login -p`, `sqlcmd -P`, `redis-cli
/// -a`, `htpasswd -b`, `net user <name> <password>`, `openssl -passin pass:`, `sqlplus
/// user/<password>`). An argument list holding one of them is read as that command line (a
/// test holds the two together).
pub(crate) const CREDENTIAL_CLIENTS: &[&str] = &[
    "curl",
    "sshpass",
    "docker",
    "podman",
    "nerdctl",
    "sqlcmd",
    "bcp",
    "redis-cli",
    "htpasswd",
    "net",
    "net1",
    "openssl",
    "sqlplus",
    "7z",
    "7za",
    "rar",
    "unrar",
    "zip",
    "unzip",
    "ssh-keygen",
    "vault",
    "setx",
    "rman",
];

/// Whether the argument `program` runs one of [`CREDENTIAL_CLIENTS`] (as
/// [`is_glued_password_client`] reads it).
pub(crate) fn is_credential_client(program: &str) -> bool {
    runs_one_of(program, CREDENTIAL_CLIENTS)
}

/// Whether the argument `program` runs one of `programs`: its file name, without the path and
/// a Windows `.exe`, is one of them in any case.
fn runs_one_of(program: &str, programs: &[&str]) -> bool {
    let name = program.rsplit(['/', '\\']).next().unwrap_or(program);
    let name = match name.len().checked_sub(4) {
        Some(stem) if name.is_char_boundary(stem) && name[stem..].eq_ignore_ascii_case(".exe") => {
            &name[..stem]
        }
        _ => name,
    };
    programs.iter().any(|p| name.eq_ignore_ascii_case(p))
}

/// Whether the value `secret` (at `start`) of a session or password query parameter is one:
/// any value of `pw` other than a status word; of a session id (`sessionid`, `jsessionid`,
/// `PHPSESSID`), one that mixes letters and digits or is 16+ characters; of the names that also
/// carry plain settings (`?auth=google`, `?session=new`, `?auth=oauth2`) and of a URL's `key`
/// (`?key=orders_by_day`), only one that looks generated (12+ characters mixing letters and digits) or is long (32+). What masking wrote
/// (`hmac:...`) is not masked again.
fn session_parameter_holds_secret(text: &str, start: usize, secret: &str) -> bool {
    if is_masked(&text[start..]) {
        return false;
    }
    let name_end = start.saturating_sub(1);
    let name_start = text[..name_end]
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    let name = &text[name_start..name_end];
    if name.eq_ignore_ascii_case("pw") {
        !is_status_word(secret)
    } else if ["auth", "session", "key", "ticket"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
    {
        (secret.len() >= 12 && looks_generated(secret)) || secret.len() >= 32
    } else {
        looks_generated(secret) || secret.len() >= 16
    }
}

/// Whether a JSON array or object (as text) holds nothing but values masking wrote: no other
/// string value (keys aside), and no number or word outside strings.
fn holds_only_masked_strings(json: &str) -> bool {
    let bytes = json.as_bytes();
    if !matches!(bytes.first(), Some(b'[' | b'{')) {
        return false;
    }
    let mut rest = json;
    loop {
        let Some(open) = rest.find('"') else {
            return !rest.bytes().any(|b| b.is_ascii_alphanumeric());
        };
        if rest[..open].bytes().any(|b| b.is_ascii_alphanumeric()) {
            return false;
        }
        let body = &rest[open + 1..];
        let close = body.find('"').unwrap_or(body.len());
        rest = &body[(close + 1).min(body.len())..];
        let is_key = rest.trim_start().starts_with(':');
        if !is_key && !is_masked(&body[..close]) {
            return false;
        }
    }
}

/// Where the JSON array or object opening at `start` ends: after its matching bracket, read
/// past strings (with their escapes), or the end of `text` when it is cut short. The value of a
/// sensitive name in JSON text (`"password": ["..."]`, `"secret": {"value": "..."}`) is all of
/// it; only its opening bracket had been taken as the value, leaving what was inside.
fn bracketed_end(text: &str, start: usize) -> usize {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut i = start;
    while i < bytes.len() {
        match (in_string, bytes[i]) {
            (true, b'\\') => i += 1,
            (_, b'"') => in_string = !in_string,
            (false, b'[' | b'{') => depth += 1,
            (false, b']' | b'}') => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    bytes.len()
}

/// Where a bare `name=value` value ends. The pattern stops it at `&` and `,` (query strings,
/// lists of settings), but those are only separators when another `name=` follows (or prose,
/// `, ` with a space): `password=Tr0ub4dor&3` is one password, and `token=abc,def` one token.
/// `end` moved back over `)`s the value at `start..end` does not open: the parenthesis that
/// closes the text around it (`(token=x)`, `deploy-script/1.0 (token=x)`) is not the secret's.
fn without_closing_parens(text: &str, start: usize, mut end: usize) -> usize {
    let bytes = text.as_bytes();
    let opened = bytes[start..end].iter().filter(|b| **b == b'(').count();
    let mut closed = bytes[start..end].iter().filter(|b| **b == b')').count();
    while closed > opened && end > start + 1 && bytes[end - 1] == b')' {
        end -= 1;
        closed -= 1;
    }
    end
}

fn extend_bare_value(text: &str, mut end: usize) -> usize {
    let bytes = text.as_bytes();
    let stops = |c: &u8| {
        c.is_ascii_whitespace()
            || matches!(
                c,
                b'&' | b',' | b';' | b'}' | b'"' | b'\'' | b'<' | b'>' | b'\\'
            )
    };
    while end < bytes.len() && matches!(bytes[end], b'&' | b',') {
        // A quote escaped for HTML closes the value (`password&quot;:&quot;x&quot;`); another
        // character reference is part of it (`Hunter2&amp;Secret99`, `a&lt;b`).
        if [
            &b"&quot;"[..],
            b"&#34;",
            b"&#39;",
            b"&apos;",
            b"&amp;quot;",
            b"&amp;#34;",
        ]
        .iter()
        .any(|e| bytes[end..].starts_with(e))
        {
            break;
        }
        if let Some(len) = character_reference_len(&bytes[end..]) {
            end += len;
            let run = bytes[end..].iter().take_while(|c| !stops(c)).count();
            end += run;
            continue;
        }
        let rest = &bytes[end + 1..];
        let run = rest.iter().take_while(|c| !stops(c)).count();
        if run == 0 || rest[..run].contains(&b'=') {
            break;
        }
        end += 1 + run;
    }
    end
}

/// The length of the character reference (`&amp;`, `&lt;`, `&#38;`, `&#x26;`) `bytes` starts
/// with, if it does.
fn character_reference_len(bytes: &[u8]) -> Option<usize> {
    let body = bytes.strip_prefix(b"&")?;
    let name_len = match body.first()? {
        b'#' => {
            1 + body[1..]
                .iter()
                .take_while(|b| b.is_ascii_hexdigit() || matches!(b, b'x' | b'X'))
                .count()
        }
        _ => body.iter().take_while(|b| b.is_ascii_alphabetic()).count(),
    };
    (2..=10).contains(&name_len).then_some(())?;
    (body.get(name_len) == Some(&b';')).then_some(name_len + 2)
}

/// A whole value shaped like an Azure storage account key: 64 random bytes in base64, 86
/// characters and `==`. Such a key also travels alone, not in a connection string (the `value`
/// of each key a `listKeys` call returns, an `accountKey` setting), and nothing else in audit
/// logs has that shape but a SHA-512 digest in base64, which masking costs little.
fn is_storage_key_shape(bytes: &[u8]) -> bool {
    bytes.len() == 88
        && bytes.ends_with(b"==")
        && bytes[..86]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/'))
}

/// Anchors made of [`ID_SHAPED`] bytes only, whose secret goes on with 28 or more random
/// characters: Telegram's `:AA` + 33, Dynatrace's `dt0c01.` + 89, Bitbucket's `ATBB` + 28,
/// Google's refresh tokens `1//0` + 40, Meta's `EAA` + 100. A random part that long made only of
/// identifier bytes (27 or 28 of the token alphabet's 62-66 characters) does not occur (odds
/// below 1e-10), so identifier-shaped strings may still skip the automaton with these anchors in
/// it.
///
/// Salesforce's `00D` is there too for another reason: its session id has a `!`, which no
/// identifier-shaped string holds.
///
/// And 7-Zip's `7z`, a trade-off: a 7-Zip command made of identifier bytes only (`7z a -p1234
/// f.7z`, no path, no `.exe`, a password of hex digits) is left to the other kinds, so that
/// every timestamp and UUID does not run the automaton.
const ID_SHAPED_ANCHORS_WITH_RANDOM_TAIL: &[&str] =
    &[":aa", "dt0c01.", "atbb", "a3-", "1//0", "eaa", "00d", "7z"];

/// Bytes of identifier-shaped values: digits, hex letters, `T`/`Z` and the separators of
/// UUIDs, timestamps and IP addresses.
const ID_SHAPED: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_digit()
            || matches!(c, b'a'..=b'f' | b'A'..=b'F' | b'T' | b'Z' | b't' | b'z' | b'.' | b':' | b'-' | b'+' | b' ' | b'/');
        b += 1;
    }
    t
};

/// What one pass over a value's bytes tells [`Patterns::candidates`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ByteScan {
    /// A card number may be here: a maximal run of 13-19 digits starting with a card network's
    /// digit (2-6; the pattern takes such runs whole, and the verifier rejects other leads), or
    /// a run of 13+ digits split by single spaces, dashes or dots (grouped forms).
    card: bool,
    /// An SSN may be here: a run of 9+ digits split by single spaces, dashes or dots.
    ssn: bool,
    /// A stretch of 9+ digits (with separators or not) occurs: an SSN written without
    /// separators may be here, if the text labels one.
    nine_digits: bool,
    /// Every byte is in [`ID_SHAPED`].
    id_shaped: bool,
    /// A `:`, `=` or `>` occurs.
    has_assign: bool,
    /// A whitespace byte occurs, or a non-ASCII byte (`\s` in the patterns is Unicode-aware).
    has_space: bool,
    /// A `%` or `\` occurs.
    escaped: bool,
}

const DIGIT: u8 = 1;
const RUN_SEP: u8 = 2;
const ID: u8 = 4;
const ASSIGN: u8 = 8;
const SPACE: u8 = 16;
const ESCAPE: u8 = 32;
/// A digit or a dot: a value made only of these is a number, a version or an IPv4 address.
const DOTTED: u8 = 64;

/// Byte classes for [`scan_bytes`].
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let mut k = 0;
        if c.is_ascii_digit() {
            k |= DIGIT;
        }
        if c == b' ' || c == b'-' || c == b'.' {
            k |= RUN_SEP;
        }
        if ID_SHAPED[b] {
            k |= ID;
        }
        // `>` ends an XML element's start tag (`<Password>x`).
        if c == b':' || c == b'=' || c == b'>' {
            k |= ASSIGN;
        }
        if c.is_ascii_whitespace() || c >= 0x80 {
            k |= SPACE;
        }
        if c == b'%' || c == b'\\' {
            k |= ESCAPE;
        }
        if c.is_ascii_digit() || c == b'.' {
            k |= DOTTED;
        }
        t[b] = k;
        b += 1;
    }
    t
};

fn scan_bytes(bytes: &[u8]) -> ByteScan {
    // Most values (timestamps, UUIDs, IPs, words) have no stretch of 9 digits, which every
    // digit kind needs: a branch-free pass settles those. A stretch here is digits and run
    // separators in any order, a superset of the runs the full pass follows.
    let (mut all, mut any) = (0xffu8, 0u8);
    let (mut stretch, mut most) = (0u32, 0u32);
    for &b in bytes {
        let k = CLASS[usize::from(b)];
        all &= k;
        any |= k;
        let in_stretch = u32::from(k & (DIGIT | RUN_SEP) != 0);
        stretch = (stretch + u32::from(k & DIGIT)) * in_stretch;
        most = most.max(stretch);
    }
    let scan = ByteScan {
        card: false,
        ssn: false,
        nine_digits: most >= 9,
        id_shaped: all & ID != 0 || bytes.is_empty(),
        has_assign: any & ASSIGN != 0,
        has_space: any & SPACE != 0,
        escaped: any & ESCAPE != 0,
    };
    if most < 9 {
        return scan;
    }
    // Only digits and dots, in groups of at most three (an IPv4 address, the usual such value):
    // no card (a whole run of 13+, or groups of four) and no SSN (a group of four) is possible.
    if all & DOTTED != 0 && bytes.split(|b| *b == b'.').all(|group| group.len() <= 3) {
        return scan;
    }
    let (card, ssn) = digit_runs(bytes);
    ByteScan { card, ssn, ..scan }
}

/// [`ByteScan::card`] and [`ByteScan::ssn`]: the digit runs of `bytes` followed exactly.
fn digit_runs(bytes: &[u8]) -> (bool, bool) {
    // The current run of digits with single separators, and its pure (separator-free) tail.
    let (mut run_digits, mut run_sep) = (0usize, false);
    let (mut pure_len, mut pure_lead) = (0usize, 0u8);
    let (mut card, mut ssn) = (false, false);
    let end_pure = |len: usize, lead: u8, card: &mut bool| {
        if (13..=19).contains(&len) && (b'2'..=b'6').contains(&lead) {
            *card = true;
        }
    };
    let end_run = |digits: usize, sep: bool, card: &mut bool, ssn: &mut bool| {
        if sep && digits >= 13 {
            *card = true;
        }
        if sep && digits >= 9 {
            *ssn = true;
        }
    };
    for (i, &b) in bytes.iter().enumerate() {
        let k = CLASS[usize::from(b)];
        if k & DIGIT != 0 {
            if pure_len == 0 {
                pure_lead = b;
            }
            pure_len += 1;
            run_digits += 1;
            continue;
        }
        end_pure(pure_len, pure_lead, &mut card);
        pure_len = 0;
        if k & RUN_SEP != 0 && run_digits > 0 && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
            // A single separator inside a number keeps the run going.
            run_sep = true;
            continue;
        }
        end_run(run_digits, run_sep, &mut card, &mut ssn);
        (run_digits, run_sep) = (0, false);
    }
    end_pure(pure_len, pure_lead, &mut card);
    end_run(run_digits, run_sep, &mut card, &mut ssn);
    (card, ssn)
}

/// Whether the text after an anchor of `kind` (at `start..end`) can continue a match of the
/// kind's regex: a necessary condition, checked on bytes. Non-ASCII bytes are taken as possible
/// whitespace (`\s` in the patterns is Unicode-aware), which keeps this a superset.
fn anchor_can_match(kind: PatternKind, text: &[u8], start: usize, end: usize) -> bool {
    let anchor = &text[start..end];
    let rest = &text[end..];
    let space = |b: &u8| b.is_ascii_whitespace() || *b >= 0x80;
    match kind {
        // `secret_access_key <sep> value`: the separator (or a space) right after the name.
        PatternKind::AwsSecretAccessKey => {
            let name_end = rest
                .iter()
                .position(|b| !name_byte(b))
                .unwrap_or(rest.len());
            separator_follows(&rest[name_end..], space)
                || rest[name_end..].first().is_some_and(space)
        }
        // `Token token="x"`: the regex decides.
        PatternKind::AuthHeader if anchor.eq_ignore_ascii_case(b"token token=") => true,
        // `Bearer x` / `Basic x`: spaces, then at least 8 token characters.
        PatternKind::AuthHeader => {
            let spaces = rest.iter().take_while(|b| space(b)).count();
            spaces > 0
                && (rest[..spaces].iter().any(|b| *b >= 0x80)
                    || rest[spaces..]
                        .iter()
                        .take_while(|b| {
                            b.is_ascii_alphanumeric()
                                || matches!(b, b'.' | b'_' | b'~' | b'+' | b'/' | b'=' | b'-')
                        })
                        .count()
                        >= 8)
        }
        // `ssws <token>` or `okta[_-]?(api[_-]?)?token...`: what follows either anchor.
        PatternKind::OktaApiToken => {
            let starts = |s: &[u8], word: &[u8]| {
                s.len() >= word.len() && s[..word.len()].eq_ignore_ascii_case(word)
            };
            if anchor.eq_ignore_ascii_case(b"ssws") {
                return rest.first().is_some_and(space);
            }
            let mut r = rest;
            if let [b'_' | b'-', tail @ ..] = r {
                r = tail;
            }
            if starts(r, b"api") {
                r = &r[3..];
                if let [b'_' | b'-', tail @ ..] = r {
                    r = tail;
                }
            }
            starts(r, b"token")
        }
        // `://user:password@`: a `:` then an `@` before a space or quote, and not a port then
        // a path (`host:8443/x@y`); or `://<token>@`: 20 or more token characters, then `@`.
        PatternKind::UrlCredentials => {
            let end = rest
                .iter()
                .position(|b| {
                    b.is_ascii_whitespace() || matches!(b, b'"' | b'\'' | b'<' | b'>' | b'\\')
                })
                .unwrap_or(rest.len());
            let info = &rest[..end];
            let user_end = info
                .iter()
                .position(|b| matches!(b, b'/' | b'?' | b'#' | b':'))
                .unwrap_or(info.len());
            let password = info[user_end..]
                .strip_prefix(b":")
                .filter(|after| after.contains(&b'@') && !is_port_then_path(after));
            let token_user = info[..user_end]
                .iter()
                .position(|b| *b == b'@')
                .is_some_and(|at| {
                    at >= 20
                        && info[..at]
                            .iter()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
                });
            password.is_some() || token_user
        }
        // `sig=` / `signature=` / `code=`: at least 16 signature characters; a session or
        // password parameter: one.
        PatternKind::UrlSignature => {
            let signature = [&b"sig="[..], b"signature=", b"code="]
                .iter()
                .any(|a| anchor.eq_ignore_ascii_case(a));
            rest.iter()
                .take_while(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'%' | b'+' | b'/' | b'=' | b'_' | b'~' | b'.' | b'-')
                })
                .count()
                >= if signature { 16 } else { 1 }
        }
        // `SG.` (SendGrid) is also the end of many words (`msg.`): 22 key characters and a dot.
        // `NRAL` ends a license key: upper case, after 36 letters and digits (`neural`,
        // `generally` hold the letters too).
        PatternKind::VendorToken if anchor.eq_ignore_ascii_case(b"nral") => {
            anchor == b"NRAL"
                && start >= 36
                && text[start - 36..start]
                    .iter()
                    .all(u8::is_ascii_alphanumeric)
        }
        PatternKind::VendorToken if anchor.eq_ignore_ascii_case(b"sg.") => {
            rest.len() > 22
                && rest[..22]
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
                && rest[22] == b'.'
        }
        // `-us` (Mailchimp) ends many words (`en-US`): 32 hex digits must come before it.
        PatternKind::VendorToken if anchor.eq_ignore_ascii_case(b"-us") => {
            start >= 32 && text[start - 32..start].iter().all(u8::is_ascii_hexdigit)
        }
        // `SK` (Twilio, upper case only) is in many words (`task`, `desk`): 32 hex digits after
        // it, and no letter or digit before it.
        PatternKind::VendorToken if anchor.eq_ignore_ascii_case(b"sk") => {
            anchor == b"SK"
                && is_twilio_key_tail(rest)
                && !start
                    .checked_sub(1)
                    .is_some_and(|i| text[i].is_ascii_alphanumeric())
        }
        // `T3BlbkFJ` (OpenAI, exact case): `sk-` and 20 key characters before it.
        PatternKind::VendorToken if anchor.eq_ignore_ascii_case(b"t3blbkfj") => {
            anchor == b"T3BlbkFJ"
                && start >= 23
                && text[start - 23..start - 20] == *b"sk-"
                && text[start - 20..start]
                    .iter()
                    .all(u8::is_ascii_alphanumeric)
        }
        // `EAA` (Meta, exact case) starts words (`EAAS`): `CEdEose0cBA`, or `M`/`C` and 100
        // key characters.
        PatternKind::VendorToken if anchor.eq_ignore_ascii_case(b"eaa") => {
            anchor == b"EAA"
                && (rest.starts_with(b"CEdEose0cBA")
                    || (matches!(rest.first(), Some(b'M' | b'C'))
                        && rest.len() > 100
                        && rest[1..101].iter().all(u8::is_ascii_alphanumeric)))
        }
        // `sl.` (Dropbox, lower case): not the end of a word (`ssl.`), 130 token characters.
        PatternKind::VendorToken if anchor.eq_ignore_ascii_case(b"sl.") => {
            anchor == b"sl."
                && !start
                    .checked_sub(1)
                    .is_some_and(|i| text[i].is_ascii_alphanumeric())
                && rest
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
                    .count()
                    >= 130
        }
        // `pat` (Airtable, lower case) starts many words (`path`): 14 letters or digits, a dot
        // and 64 hex digits.
        PatternKind::VendorToken if anchor.eq_ignore_ascii_case(b"pat") => {
            anchor == b"pat"
                && rest.len() >= 79
                && rest[..14].iter().all(u8::is_ascii_alphanumeric)
                && rest[14] == b'.'
                && rest[15..79].iter().all(u8::is_ascii_hexdigit)
        }
        // `00D` (Salesforce, exact case) is in many ids: the org id's 12 or 15 characters and
        // `!` after it.
        PatternKind::VendorToken if anchor.eq_ignore_ascii_case(b"00d") => {
            let org = rest
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric())
                .count();
            anchor == b"00D" && matches!(org, 12 | 15) && rest.get(org) == Some(&b'!')
        }
        // `api-`/`sdk-` (LaunchDarkly, lower case) start many words (`api-key`): a UUID after.
        PatternKind::VendorToken
            if anchor.eq_ignore_ascii_case(b"api-") || anchor.eq_ignore_ascii_case(b"sdk-") =>
        {
            !anchor.iter().any(u8::is_ascii_uppercase) && is_uuid_start(rest)
        }
        // `cio` (crates.io, lower case) is in words (`precious`): a word of its own, 32 letters
        // or digits after it and no more.
        PatternKind::VendorToken if anchor.eq_ignore_ascii_case(b"cio") => {
            anchor == b"cio"
                && !start
                    .checked_sub(1)
                    .is_some_and(|i| text[i].is_ascii_alphanumeric())
                && rest.len() >= 32
                && rest[..32].iter().all(u8::is_ascii_alphanumeric)
                && !rest.get(32).is_some_and(u8::is_ascii_alphanumeric)
        }
        // `:AA` (Telegram, upper case only): the bot id's digits before it.
        PatternKind::VendorToken if anchor.eq_ignore_ascii_case(b":aa") => {
            anchor == b":AA" && start >= 5 && text[start - 5..start].iter().all(u8::is_ascii_digit)
        }
        _ => true,
    }
}

/// Whether a URL's user info without a password is a token rather than a user name: letters
/// and digits only (`svc_build_automation01`, `deploy-bot` are names), 32+ hex digits or a mix
/// of upper case, lower case and digits.
fn is_token_shaped(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().all(u8::is_ascii_alphanumeric)
        && b.iter().any(u8::is_ascii_digit)
        && ((b.len() >= 32 && b.iter().all(u8::is_ascii_hexdigit))
            || (b.iter().any(u8::is_ascii_uppercase) && b.iter().any(u8::is_ascii_lowercase)))
}

/// Whether a path segment after a one-time link's name (`/welcome/...`) is its token: it mixes
/// letters and digits, no part of it between `-` and `_` is a lower-case word (a page's slug,
/// `page2-overview-and-more`, is words), and words are not half of it (`NewHire2025Checklist`,
/// `ENG-1234-Platform`, `Onboarding_2025_Q1` are names; in a random token few of its letters are
/// in runs of four or more shaped like a word).
fn is_link_token(s: &str) -> bool {
    looks_generated(s)
        && !s
            .split(['-', '_'])
            .any(|part| part.len() >= 4 && part.bytes().all(|b| b.is_ascii_lowercase()))
        && 2 * word_letters(s) < s.bytes().filter(u8::is_ascii_alphabetic).count()
}

/// How many letters of `s` are in word-shaped runs: four or more letters, all lower case or one
/// capital then lower case (runs split where a capital follows a lower-case letter).
fn word_letters(s: &str) -> usize {
    let b = s.as_bytes();
    let mut total = 0;
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_alphabetic() {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        while i < b.len()
            && b[i].is_ascii_alphabetic()
            && !(b[i].is_ascii_uppercase() && b[i - 1].is_ascii_lowercase())
        {
            i += 1;
        }
        let run = &b[start..i];
        let rest_lower = run[1..].iter().all(u8::is_ascii_lowercase);
        if run.len() >= 4 && rest_lower {
            total += run.len();
        }
    }
    total
}

/// Whether `after` (what follows `host:` in a URL) is a port, then a path, query or fragment:
/// `8443/x@y` is no password before an `@`.
fn is_port_then_path(after: &[u8]) -> bool {
    let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
    (1..=5).contains(&digits) && matches!(after.get(digits), Some(b'/' | b'?' | b'#') | None)
}

/// Whether `rest` starts with a UUID in lower-case hex (`0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0`).
fn is_uuid_start(rest: &[u8]) -> bool {
    rest.len() >= 36
        && rest[..36].iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(b),
        })
}

/// Whether `rest` (after `SK`) is a Twilio API key SID's: 32 lower-case hex digits, not all
/// decimal ones, then no more letters
/// or digits (a longer run is another id).
fn is_twilio_key_tail(rest: &[u8]) -> bool {
    rest.len() >= 32
        && rest[..32]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        && rest[..32].iter().any(u8::is_ascii_lowercase)
        && !rest.get(32).is_some_and(u8::is_ascii_alphanumeric)
}

/// Bytes of a `name = value` name in the assignment pattern.
fn name_byte(b: &u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// Names of several words (`mot de passe`, `password` in French; labels of personal data as
/// people write them): the name right before a separator is only their last word.
/// Each is also an anchor of the assignment pattern.
const NAMES_OF_WORDS: &[&str] = &[
    "mot de passe",
    "date of birth",
    "birth date",
    "driver's licen",
    "drivers licen",
    "driver licen",
];

/// Whether the assignment pattern can find a secret in `text`: a sensitive name (per `keys`,
/// as its verifier requires) right before `:`/`=` (after an optional escaped quote and spaces),
/// or any prose word (`is`, `was`, `to`, `for`, ...), which the verifier then judges. Checked at every
/// separator rather than near an anchor, so it does not depend on where the anchor was.
fn assignment_possible(text: &[u8], keys: &KeyMatcher) -> bool {
    if keys.has_extra_words() || !text.is_ascii() {
        // Configured words have no anchors of their own; non-ASCII may be `\s`: let the
        // regex decide.
        return true;
    }
    // A prose verb (`is`, `was`, `has been`, `set`/`changed`/`reset`/`updated` `to`, `to`) or
    // the `for <whom>` after a name: a whitespace byte, then the word's first letters.
    if text.windows(3).any(|x| {
        x[0].is_ascii_whitespace()
            && matches!(
                [x[1].to_ascii_lowercase(), x[2].to_ascii_lowercase()],
                [b'i', b's']
                    | [b'w', b'a']
                    | [b'h', b'a']
                    | [b's', b'e']
                    | [b'c', b'h']
                    | [b'r', b'e']
                    | [b'u', b'p']
                    | [b't', b'o']
                    | [b'f', b'o']
                    // Other languages' `is` (`es`, `est`, `ist`, `er`, `jest`).
                    | [b'e', b's']
                    | [b'e', b'r']
                    | [b'j', b'e']
            )
    }) {
        return true;
    }
    if NAMES_OF_WORDS.iter().any(|name| {
        text.windows(name.len())
            .any(|w| w.eq_ignore_ascii_case(name.as_bytes()))
    }) {
        return true;
    }
    // `password Hunter2x`: a password word, then whitespace.
    let password_word_before = |end: usize| {
        let head = &text[..end];
        // The whole name, as the pattern takes it (`1Password` is no password word).
        let word_start = head
            .iter()
            .rposition(|b| !name_byte(b))
            .map_or(0, |i| i + 1);
        std::str::from_utf8(&head[word_start..]).is_ok_and(super::keys::is_password_word)
    };
    if memchr::memchr2_iter(b' ', b'\t', text).any(password_word_before) {
        return true;
    }
    memchr::memchr3_iter(b':', b'=', b'>', text).any(|sep| {
        // `<name ...>` (or `<prefix:name ...>`): the element's name.
        if text[sep] == b'>' {
            let Some(lt) = text[..sep].iter().rposition(|b| matches!(b, b'<' | b'>')) else {
                return false;
            };
            if text[lt] != b'<' {
                return false;
            }
            let tag = &text[lt + 1..sep];
            let name_end = tag
                .iter()
                .position(|b| !name_byte(b) && *b != b':')
                .unwrap_or(tag.len());
            let name = &tag[..name_end];
            let name = name.rsplit(|b| *b == b':').next().unwrap_or(name);
            return (2..=80).contains(&name.len())
                && std::str::from_utf8(name).is_ok_and(|n| keys.is_sensitive(n));
        }
        // Back over spaces, an optional quote (or one escaped for HTML), an optional backslash
        // and an optional `]` or `[]` (form fields: `user[password]=`, `password[]=`) to the
        // name's end.
        let mut end = sep;
        while end > 0 && text[end - 1].is_ascii_whitespace() {
            end -= 1;
        }
        if end > 0 && matches!(text[end - 1], b'"' | b'\'') {
            end -= 1;
        } else if let Some(entity) = [&b"&quot;"[..], b"&#34;", b"&#39;", b"&apos;"]
            .iter()
            .find(|e| text[..end].ends_with(e))
        {
            end -= entity.len();
        } else if let Some(entity) = [
            &b"&amp;quot;"[..],
            b"&amp;#34;",
            b"&amp;#39;",
            b"&amp;apos;",
        ]
        .iter()
        .find(|e| text[..end].ends_with(e))
        {
            // Escaped twice.
            end -= entity.len();
        }
        if end > 0 && text[end - 1] == b'\\' {
            end -= 1;
        }
        if end > 0 && text[end - 1] == b']' {
            end -= 1;
            if end > 0 && text[end - 1] == b'[' {
                end -= 1;
            }
        }
        let run_start = text[..end]
            .iter()
            .rposition(|b| !name_byte(b))
            .map_or(0, |i| i + 1);
        sensitive_name_ends_at(text, end, keys)
            || (text[run_start..end].eq_ignore_ascii_case(b"value")
                && pair_name_end(text, run_start)
                    .is_some_and(|name_end| sensitive_name_ends_at(text, name_end, keys)))
    })
}

/// Whether a name the assignment pattern may take (a run of name bytes begun at a word
/// boundary, 2-80 bytes) ends at `end` and is sensitive per `keys`.
fn sensitive_name_ends_at(text: &[u8], end: usize, keys: &KeyMatcher) -> bool {
    let run_start = text[..end]
        .iter()
        .rposition(|b| !name_byte(b))
        .map_or(0, |i| i + 1);
    let word = |i: usize| text[i].is_ascii_alphanumeric() || text[i] == b'_';
    (run_start..end).any(|p| {
        (2..=80).contains(&(end - p))
            && (p == 0 || word(p - 1) != word(p))
            && std::str::from_utf8(&text[p..end]).is_ok_and(|n| keys.is_sensitive(n))
    }) || two_word_name_before(text, run_start, end, keys)
}

/// Whether a label of two words ends at `end` (`API key`, `seed phrase`: the word before the
/// name run `run_start..end`, one space or tab apart) that is sensitive per `keys`.
fn two_word_name_before(text: &[u8], run_start: usize, end: usize, keys: &KeyMatcher) -> bool {
    let Some(space) = run_start.checked_sub(1) else {
        return false;
    };
    // The pattern's labels end in one of these words (`API key`, `seed phrase`, `access
    // token`): any other name before a separator needs no second look (this runs at every
    // `:` and `=` of every text).
    let second = &text[run_start..end];
    if !matches!(text[space], b' ' | b'\t')
        || !(second.eq_ignore_ascii_case(b"key")
            || second.eq_ignore_ascii_case(b"phrase")
            || second.eq_ignore_ascii_case(b"token"))
    {
        return false;
    }
    let first = text[..space]
        .iter()
        .rposition(|b| !b.is_ascii_alphabetic())
        .map_or(0, |i| i + 1);
    (3..=10).contains(&(space - first))
        && std::str::from_utf8(&text[first..end]).is_ok_and(|n| keys.is_sensitive(n))
}

/// Where the pair's name ends, for a `value` key that starts at `value_start`: before `", "`
/// (JSON: `"name": "DB_PASSWORD", "value": ...`, quotes escaped or not) or before a line break
/// (YAML: `- name: DB_PASSWORD` and `value: ...` on the next line), as the assignment pattern's
/// pair separator reads them.
fn pair_name_end(text: &[u8], value_start: usize) -> Option<usize> {
    let mut i = value_start;
    let back_over = |i: &mut usize, what: &dyn Fn(u8) -> bool| {
        while *i > 0 && what(text[*i - 1]) {
            *i -= 1;
        }
    };
    back_over(&mut i, &|b| matches!(b, b'"' | b'\\' | b'\''));
    let spaces_end = i;
    back_over(&mut i, &|b| b.is_ascii_whitespace());
    if i > 0 && text[i - 1] == b',' {
        i -= 1;
        back_over(&mut i, &|b| b.is_ascii_whitespace());
        back_over(&mut i, &|b| matches!(b, b'"' | b'\\' | b'\''));
        Some(i)
    } else if i > 0 && spaces_end > i && matches!(text[i - 1], b'"' | b'\'') {
        // XML attributes: `key="DbPassword" value=`.
        back_over(&mut i, &|b| matches!(b, b'"' | b'\\' | b'\''));
        Some(i)
    } else if text[i..spaces_end].contains(&b'\n') {
        Some(i)
    } else {
        // A line break escaped in JSON text (`\n`, `\r\n`, `\\n` at a deeper level).
        let head = &text[..i];
        let head = head.strip_suffix(b"n")?;
        let slashes = head.iter().rev().take_while(|b| **b == b'\\').count();
        (slashes > 0).then(|| {
            let head = &head[..head.len() - slashes];
            match head.strip_suffix(b"r") {
                Some(r) if r.ends_with(b"\\") => {
                    r.len() - r.iter().rev().take_while(|b| **b == b'\\').count()
                }
                _ => head.len(),
            }
        })
    }
}

/// Whether `after` (the text after a name) starts with `:`/`=`, after an optional escaped quote
/// and spaces: what `secret_access_key <sep> value` needs there.
fn separator_follows(mut after: &[u8], space: impl Fn(&u8) -> bool) -> bool {
    if let [b'\\', tail @ ..] = after {
        after = tail;
    }
    if let [b'"' | b'\'', tail @ ..] = after {
        after = tail;
    }
    let spaces = after.iter().take_while(|b| space(b)).count();
    matches!(after.get(spaces), Some(b':' | b'='))
}

/// Whether `bytes` holds `ddd-dd-dddd` (or the same with spaces or dots) with neither a digit
/// nor a dash on either side: exactly where the SSN pattern can match (UUIDs, dates and IPs have
/// separated digit runs too).
fn has_ssn_shape(bytes: &[u8]) -> bool {
    let digits = |r: std::ops::Range<usize>| bytes[r].iter().all(u8::is_ascii_digit);
    let free = |i: Option<usize>| {
        i.and_then(|i| bytes.get(i))
            .is_none_or(|b| !b.is_ascii_digit() && *b != b'-')
    };
    memchr::memchr3_iter(b'-', b' ', b'.', bytes).any(|i| {
        i >= 3
            && i + 8 <= bytes.len()
            && bytes[i + 3] == bytes[i]
            && digits(i - 3..i)
            && digits(i + 1..i + 3)
            && digits(i + 4..i + 8)
            && free(i.checked_sub(4))
            && free(Some(i + 8))
    })
}

/// Whether `bytes` holds the start of an SSN label (`ssn`, `social security`), in any case: a
/// necessary condition of [`follows_ssn_label`].
fn mentions_ssn_label(bytes: &[u8]) -> bool {
    bytes
        .windows(3)
        .any(|w| w.eq_ignore_ascii_case(b"ssn") || w.eq_ignore_ascii_case(b"ss#"))
        || bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"social"))
}

/// An SSN label at the end of the text: `SSN`, `social security number` (words joined by
/// spaces, `_`, `-` or `.`), then the separators people put before the number (`:`, `#`, `=`,
/// `no.`, spaces, and the quotes of JSON text, escaped or not).
static SSN_LABEL_AT_END: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
    Regex::new(
        r#"(?i)(?:ssn|ss#|social[\s_.-]*security(?:[\s_.-]*(?:number|num|nbr|no))?)[\s"'\\]*(?:(?:no|nr|num|number)\.?)?[\s:#=."'\\]*$"#,
    )
    .expect("the SSN label pattern compiles")
});

/// Whether the text right before `start` is an SSN label ([`SSN_LABEL_AT_END`]) that begins a
/// word (`employee_ssn`, `employeeSSN`; not `classname`): nine bare digits are an SSN only there.
fn follows_ssn_label(text: &str, start: usize) -> bool {
    // The longest label with its separators fits in far less.
    let mut from = start.saturating_sub(64);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let before = &text[from..start];
    let Some(label) = SSN_LABEL_AT_END.find(before) else {
        return false;
    };
    let bytes = before.as_bytes();
    match label.start().checked_sub(1).map(|i| bytes[i]) {
        None => from == 0 || !text.as_bytes()[from - 1].is_ascii_alphanumeric(),
        Some(b) if !b.is_ascii_alphanumeric() => true,
        // `employeeSsn`, `mySSN`: a lower-case letter or digit, then the label capitalized.
        Some(b) => {
            (b.is_ascii_lowercase() || b.is_ascii_digit())
                && bytes[label.start()].is_ascii_uppercase()
        }
    }
}

/// Whether `secret` (at `start` in `text`) is part of the hex of an `hmac:<hex>` pseudonym that
/// masking wrote: its digits can look like a card number, and masking them again would break
/// idempotence and the pseudonym's stability.
fn inside_hash_output(text: &str, start: usize, secret: &str) -> bool {
    let hex_start = text[..start]
        .trim_end_matches(|c: char| c.is_ascii_hexdigit())
        .len();
    text[..hex_start].ends_with("hmac:") && secret.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Text already produced by masking is never masked again (idempotence, stable hashes).
pub(crate) fn is_masked(s: &str) -> bool {
    s.starts_with("[REDACTED:") || s.starts_with("hmac:") || s.starts_with("****")
}

/// The secret in a match of `kind` when no capture group is needed to find it: the whole match,
/// or for the digit kinds the match without the one non-digit boundary character the pattern
/// takes on each side (the secret starts and ends with a digit). `None`: the kinds whose secret
/// is one of several groups.
fn plain_secret(
    kind: PatternKind,
    text: &str,
    whole: std::ops::Range<usize>,
) -> Option<std::ops::Range<usize>> {
    match kind {
        PatternKind::PemPrivateKey
        | PatternKind::SecretAssignment
        | PatternKind::AuthHeader
        | PatternKind::UrlCredentials
        | PatternKind::UrlSignature
        | PatternKind::AzureConnectionKey
        | PatternKind::CliCredentials
        | PatternKind::WebhookUrl
        | PatternKind::AwsSecretAccessKey
        | PatternKind::OktaApiToken => None,
        PatternKind::CreditCard | PatternKind::UsSsn => {
            let bytes = &text.as_bytes()[whole.clone()];
            let first = bytes.iter().position(u8::is_ascii_digit)?;
            let last = bytes.iter().rposition(u8::is_ascii_digit)?;
            Some(whole.start + first..whole.start + last + 1)
        }
        _ => Some(whole),
    }
}

fn verify(
    kind: PatternKind,
    secret: &str,
    caps: Option<&regex::Captures<'_>>,
    text: &str,
    start: usize,
    keys: &KeyMatcher,
) -> bool {
    if secret.is_empty() || is_masked(secret) || inside_hash_output(text, start, secret) {
        return false;
    }
    match kind {
        // `creds: AKIA... wJalr...`: an access key id is hashed by its own kind, and read with
        // the secret key after it by the key-pair pattern, which taking the id here would hide.
        // So is SigV4's `Credential=AKIA.../20240101/us-east-1/s3/aws4_request`: the key id and
        // its scope, no secret (the request's `Signature=` is masked by its own pattern).
        PatternKind::SecretAssignment
            if is_aws_key_id(secret)
                || (secret.get(..20).is_some_and(is_aws_key_id)
                    && secret[20..].starts_with('/')) =>
        {
            false
        }
        // `Authorization: Token token="..."`: the scheme and the parameter's name, not the
        // token, which the header pattern takes from its quotes.
        PatternKind::SecretAssignment
            if secret.ends_with('=')
                && secret
                    .get(..6)
                    .is_some_and(|s| s.eq_ignore_ascii_case("token "))
                && text[start + secret.len()..].starts_with(['"', '\'', '\\']) =>
        {
            false
        }
        PatternKind::SecretAssignment => caps.is_some_and(|caps| {
            let prose = caps.get(2);
            // `password Hunter2x` without a verb: only after a password word itself (`token
            // refresh2` is prose about tokens).
            let bare = prose.is_some_and(|p| p.as_str().is_empty());
            // `password for bob: X` is a sentence about the password, as `password is X` is.
            let for_whom = caps
                .get(1)
                .is_some_and(|k| names_whom_for(&text[k.end()..start]));
            // A bare `to` (`set secret to X`) only after a verb of setting: `token to X` may
            // name where a token went.
            let to_after_setting = prose.is_none_or(|p| {
                !p.as_str().trim_end().eq_ignore_ascii_case("to")
                    || caps
                        .get(1)
                        .is_some_and(|k| follows_a_setting_verb(&text[..k.start()]))
            });
            // `password changed from X to Y`: only with the new value after the old one.
            let change = prose
                .filter(|p| names_a_change_from(p.as_str()))
                .map(|_| change_new_value(text, start + secret.len()));
            to_after_setting
                && change.as_ref().is_none_or(Option::is_some)
                && !(for_whom && bare)
                && caps.get(1).is_some_and(|k| {
                    // `name ... >` is an XML element's start tag only, and its value is text
                    // closed by an end tag (`<token>` in `Bearer <token>.` is a placeholder).
                    // A YAML folded block (`password: >` ending its line) is no start tag.
                    let separator = text[k.end()..start].trim_end();
                    let element = separator.ends_with('>')
                        && !separator.ends_with("=>")
                        && !is_folded_block_header(separator);
                    // (A placeholder-shaped start, `<Value>x`, is a child element's tag there.)
                    (!element
                        || (!secret[auth_scheme_len(secret)..].starts_with('<')
                            && element_value(text, k.start(), start, secret)))
                    // `Password: <b>Reset</b>`: markup, no placeholder glued to a value.
                    && !opens_with_html_tag(&secret[auth_scheme_len(secret)..])
                    && keys.is_sensitive(k.as_str())
                    // `--mnemonic=abandon ability ...`: an option the command-line pattern reads
                    // whole (the phrase), where this one would take its first word only.
                    && !(text[..k.start()].ends_with('-') && names_a_seed_option(k.as_str()))
                    && !super::is_working_directory(k.as_str(), Some(secret))
                    && !is_resource_name_segment(text, k.start())
                    && short_name_value_is_secret(k.as_str(), secret)
                    // A label of two words (`Encryption key: arn:aws:kms:...`, `API key:
                    // rotated by admin`) names a key's metadata as often as the key: only a
                    // generated-looking value that is no ARN, path, fingerprint or algorithm.
                    && (!k.as_str().contains([' ', '\t'])
                        || names_a_phrase(k.as_str())
                        // `Date of birth: 1990-01-08` (its digits checked below).
                        || super::keys::names_numbered_pii(k.as_str())
                        || (looks_generated(secret) && !names_key_metadata(secret)))
                    // A phrase is a dozen words (or a generated value): `seed phrase: shown
                    // once` is about it.
                    && (!names_a_phrase(k.as_str())
                        || looks_generated(secret)
                        || seed_phrase_end(text, start + secret.len()) > start + secret.len())
                    && !is_okta_factor_type(text, k.range(), start, secret)
                    && !(names_a_pin(k.as_str()) && pins_a_version(text, k.start()))
                    // `hmac:<hex>` is masking's own pseudonym, no `hmac` name and value.
                    && !text
                        .get(k.end().saturating_sub(4)..)
                        .is_some_and(|t| t.starts_with("hmac:"))
                    && !is_cmdlet_value(text, k.start(), secret)
                    // `dob: optional`: personal data of these names holds digits.
                    && (!super::keys::names_numbered_pii(k.as_str())
                        || secret.bytes().any(|b| b.is_ascii_digit()))
                    && !is_account_setting(k.as_str(), secret)
                    // Eight or more characters: `password Okta2FA policy` names a product.
                    && (!bare
                        || (super::keys::is_password_word(k.as_str()) && secret.len() >= 8))
                })
                && ((prose.is_none() && !for_whom)
                    || looks_generated(secret)
                    // `user pin changed from 1234 to 5678`: a PIN is short and plain.
                    || caps
                        .get(1)
                        .is_some_and(|k| names_a_pin(k.as_str()) && is_pin_value(secret))
                    || change
                        .clone()
                        .flatten()
                        .is_some_and(|new| looks_generated(&text[new]))
                    // `recovery phrase is abandon ability ...`: a dozen words or more.
                    || caps.get(1).is_some_and(|k| {
                        names_a_phrase(k.as_str())
                            && seed_phrase_end(text, start + secret.len()) > start + secret.len()
                    }))
                && !is_status_word(secret)
                && !is_hash_algorithm(secret)
                && !is_lone_block_indicator(text, start, secret)
                // `password_reminder: 14 days before expiry`: when to remind, a setting.
                && !(caps.get(1).is_some_and(|k| names_a_reminder(k.as_str()))
                    && secret.bytes().all(|b| b.is_ascii_digit()))
                && !caps
                    .get(1)
                    .is_some_and(|k| stack_frame_on_next_line(text, k.end(), start))
        }),
        PatternKind::AuthHeader => {
            let scheme = caps.and_then(|c| c.get(1)).map_or("", |m| m.as_str());
            if scheme.eq_ignore_ascii_case("basic") {
                is_basic_credential(secret) || looks_random(secret)
            } else {
                looks_random(secret)
            }
        }
        PatternKind::CreditCard => {
            // A grouped number glued to letters is a segment of a UUID or hex id
            // (`00aa2796-5620-3104-10aa-...`), not a card written out by a person.
            let grouped = secret.bytes().any(|b| matches!(b, b'-' | b' ' | b'.'));
            let glued = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphabetic);
            let before = start.checked_sub(1).and_then(|i| text.as_bytes().get(i));
            let after = text.as_bytes().get(start + secret.len());
            is_card_number(secret)
                && !(grouped && (glued(before) || glued(after)))
                && !is_signed_number(text, start)
        }
        PatternKind::UsSsn if !secret.bytes().any(|b| matches!(b, b'-' | b' ' | b'.')) => {
            is_valid_ssn(secret) && follows_ssn_label(text, start)
        }
        PatternKind::UsSsn => {
            is_valid_ssn(secret)
                && !inside_dotted_number(text, start, secret)
                && (!secret.contains(' ') || spaced_ssn_in_context(text, start, secret))
        }
        // Fixed-length tokens: a longer run of their characters is something else.
        PatternKind::GithubToken | PatternKind::AwsAccessKeyId | PatternKind::OnepasswordToken => {
            !glued_to_word(text, start, start + secret.len(), true)
        }
        // A `code=` is a key or an authorization code only when it mixes letters and digits:
        // `code=INVALID_CREDENTIALS_LOCKED_OUT` is an error code.
        PatternKind::UrlSignature
            if start >= 5 && text.as_bytes()[start - 5..start].eq_ignore_ascii_case(b"code=") =>
        {
            looks_generated(secret)
        }
        PatternKind::UrlSignature if caps.is_some_and(|c| c.get(LINK_TOKEN_GROUP).is_some()) => {
            is_link_token(secret) && !is_masked(&text[start..])
        }
        PatternKind::UrlSignature
            if caps.is_some_and(|c| {
                c.get(SESSION_PARAMETER_GROUP).is_some() || c.get(URL_KEY_GROUP).is_some()
            }) =>
        {
            session_parameter_holds_secret(text, start, secret)
        }
        // `zip -P` in prose (`the zip code -P is ...`): a password looks generated or mixes
        // in symbols, as a `pass` value in text must.
        PatternKind::CliCredentials
            if caps.is_some_and(|c| c.get(ZIP_PASSWORD_GROUP).is_some()) =>
        {
            short_name_value_is_secret("pass", secret)
        }
        // A port and a path before a later `@` (`https://host:8443/x@y`) is no password; a
        // token as the whole user info must look generated (`https://deploy-bot-account@`
        // is a user name).
        PatternKind::UrlCredentials => match caps {
            Some(c) if c.get(2).is_some() => is_token_shaped(secret),
            _ => !is_port_then_path(secret.as_bytes()),
        },
        PatternKind::CliCredentials => caps.is_some_and(|caps| {
            // `-u http://app` (`az login`'s service principal) is a URL, not `user:password`.
            !(caps.get(1).is_some() && secret.starts_with("//"))
            && OPTION_ALONE_GROUPS
                .iter()
                .all(|(group, programs)| caps.get(*group).is_none() || runs_before(text, start, programs))
            // `setx PATH C:\bin`: only a variable named as a secret holds one.
            && VARIABLE_NAME_GROUPS
                .iter()
                .filter_map(|g| caps.get(*g))
                .all(|name| keys.is_sensitive(name.as_str()))
            && PROSE_LIKE_VALUE_GROUPS.iter().all(|(group, type_digit)| {
                caps.get(*group).is_none()
                    || type_digit.is_some_and(|t| caps.get(t).is_some())
                    || !device_value_in_prose(secret)
            })
            // `-Token Parameter to pass a PAT`: a word that goes on as prose.
            && (caps.get(PARAMETER_BARE_GROUP).is_none() || !parameter_word_in_prose(text, start, secret))
            // `vault login completed successfully`: a token has a digit or a symbol.
            && caps.get(VAULT_TOKEN_GROUP).is_none_or(|_| {
                secret.bytes().any(|b| b.is_ascii_digit() || !b.is_ascii_alphanumeric())
            })
            && (PARAMETER_VALUE_GROUPS.iter().all(|g| caps.get(*g).is_none())
                || !names_a_secret_elsewhere(secret))
            // `vault token lookup -accessor <accessor>`: an accessor is logged by design, and a
            // `-mode=path` revocation names a path.
            && caps.get(VAULT_TOKEN_GROUP).is_none_or(|_| {
                caps.get(0)
                    .is_none_or(|m| !m.as_str().contains("-accessor") && !m.as_str().contains("-mode"))
            })
            // `hydra ... -p 22` in prose is a port; `rabbitmqctl add_user command requires a
            // password` is a sentence.
            && (caps.get(TOOLS_PASSWORD_GROUP).is_none()
                || !(secret.len() <= 5 && secret.bytes().all(|b| b.is_ascii_digit())))
            && (caps.get(RABBITMQ_PASSWORD_GROUP).is_none() || !net_user_prose(text, start, secret))
            // `--seed 42` seeds a random generator: only a seed that looks generated or is long
            // (a hex wallet seed) is one, as for a `seed=` assignment.
            && (caps.get(SEED_WORD_GROUP).is_none()
                || !option_before_is_seed(text, start)
                || short_name_value_is_secret("seed", secret))
            // An `INSERT` whose row has a quoted value under a sensitive column.
            && caps.get(SQL_INSERT_COLUMNS_GROUP).is_none_or(|columns| {
                let values = caps.get(0).map_or(text.len(), |m| m.end());
                sql_insert_secret(text, values, columns.as_str(), keys).is_some()
            })
            // `net user <name> *` asks for the password; `htpasswd` without `-b` too.
            && (caps.get(NET_USER_PASSWORD_GROUP).is_none()
                || (secret != "*" && !net_user_prose(text, start, secret)))
                && HTPASSWD_FLAGS_GROUPS
                    .iter()
                    .filter_map(|g| caps.get(*g))
                    .all(|flags| {
                        flags
                            .as_str()
                            .split_whitespace()
                            .any(|f| f.starts_with('-') && f.contains('b'))
                    })
        }),
        PatternKind::AwsSecretAccessKey => aws_secret_ends(&text[start + secret.len()..]),
        // A Twilio key SID has a fixed length: a longer run of letters and digits is another id.
        PatternKind::VendorToken if secret.starts_with("SK") && secret.len() == 34 => {
            !glued_to_word(text, start, start + secret.len(), true)
        }
        PatternKind::SlackToken | PatternKind::VendorToken | PatternKind::Jwt => {
            !glued_to_word(text, start, start + secret.len(), false)
        }
        _ => true,
    }
}

/// Whether the prose separator `prose` (the assignment pattern's group 2) names the old value of
/// a change, the new one after it (`changed from`, `updated:`).
fn names_a_change_from(prose: &str) -> bool {
    let p = prose.trim_end();
    // `updated:` names the old value next; `is:` (`contraseña es: X`) the value.
    let verb_colon = p.strip_suffix(':').is_some_and(|verb| {
        let verb = verb.trim_end().to_ascii_lowercase();
        ["set", "changed", "reset", "updated"]
            .iter()
            .any(|v| verb.ends_with(v))
    });
    verb_colon
        || p.len()
            .checked_sub(4)
            .and_then(|i| p.get(i..))
            .is_some_and(|w| w.eq_ignore_ascii_case("from"))
}

/// The new value of a change whose old value ends at `old_end` (`password changed from X to
/// Y`, `passcode updated: 'X' -> 'Y'`): after the old value's closing quote, ` to ` or an
/// arrow (`->`, `=>`, `→`), a quoted value (its text, to the closing quote or the line's end)
/// or a bare one (up to a space, `,`, `;`, `<`, `>` or a quote; a sentence's final `.` is no
/// part of it).
fn change_new_value(text: &str, old_end: usize) -> Option<std::ops::Range<usize>> {
    let mut rest = text.get(old_end..)?;
    if let Some(r) = rest.strip_prefix(['\'', '"']) {
        rest = r;
    }
    let trimmed = rest.trim_start_matches([' ', '\t']);
    let spaced = trimmed.len() < rest.len();
    let after = match ["->", "=>", "→"]
        .iter()
        .find_map(|a| trimmed.strip_prefix(a))
    {
        Some(after) => after,
        None if spaced
            && trimmed.as_bytes().get(..3).is_some_and(|w| {
                w[..2].eq_ignore_ascii_case(b"to") && matches!(w[2], b' ' | b'\t')
            }) =>
        {
            &trimmed[2..]
        }
        None => return None,
    };
    let value = after.trim_start_matches([' ', '\t']);
    let start = text.len() - value.len();
    let range = match value.chars().next()? {
        q @ ('\'' | '"') => {
            let inner = &value[1..];
            let len = inner.find([q, '\n', '\r']).unwrap_or(inner.len());
            start + 1..start + 1 + len
        }
        _ => {
            let len = value
                .find(|c: char| {
                    c.is_whitespace() || matches!(c, ',' | ';' | '<' | '>' | '\'' | '"')
                })
                .unwrap_or(value.len());
            let bare = &value[..len];
            let bare = match bare.strip_suffix('.') {
                Some(b) if !b.is_empty() => b,
                _ => bare,
            };
            start..start + bare.len()
        }
    };
    (range.end > range.start).then_some(range)
}

/// Whether `secret`, the value of the name that starts at `name_start`, is the PowerShell
/// cmdlet that makes the value (`$password = ConvertTo-SecureString 'x' -AsPlainText`, `$pw =
/// Read-Host -AsSecureString`): no secret, and what an analyst looks for. The literal after
/// `ConvertTo-SecureString` is the command-line pattern's to find.
fn is_cmdlet_value(text: &str, name_start: usize, secret: &str) -> bool {
    const VERBS: &[&str] = &[
        "convertto",
        "convertfrom",
        "get",
        "read",
        "new",
        "import",
        "invoke",
    ];
    let Some((verb, noun)) = secret.split_once('-') else {
        return false;
    };
    let cmdlet = VERBS.iter().any(|v| verb.eq_ignore_ascii_case(v))
        && noun.len() >= 3
        && noun.bytes().all(|b| b.is_ascii_alphabetic());
    cmdlet
        && (text[..name_start].ends_with('$')
            || secret.eq_ignore_ascii_case("convertto-securestring"))
}

/// Whether `secret`, the value of the sensitive name `name`, is itself a setting that names an
/// account (`Invalid credentials: username=erin`): who failed to sign in is no secret, and a
/// secret beside it is found by its own name (`password=...`). A cookie's value is secret
/// whatever it holds (`Cookie: user=erin; sid=...`).
fn is_account_setting(name: &str, secret: &str) -> bool {
    const ACCOUNT_NAMES: &[&str] = &[
        "user",
        "username",
        "userid",
        "login",
        "loginname",
        "account",
        "accountname",
        "email",
        "upn",
        "uid",
        "principal",
        "userprincipalname",
    ];
    let Some((inner, _)) = secret.split_once('=') else {
        return false;
    };
    !inner.is_empty()
        && inner.bytes().all(|b| name_byte(&b))
        && ACCOUNT_NAMES.contains(&super::keys::normalize_key(inner).as_str())
        && !super::keys::normalize_key(name).contains("cookie")
}

/// Whether `rest`, the text after 40 characters of an AWS secret key, goes on with no 41st
/// character of it (plain or encoded): the key ends there.
fn aws_secret_ends(rest: &str) -> bool {
    let b = rest.as_bytes();
    let lower = rest.get(..8).unwrap_or(rest).to_ascii_lowercase();
    !(b.first()
        .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'/' | b'+'))
        || [
            "%2f", "%2b", "\\u002f", "\\u002b", "\\/", "&#x2f;", "&#x2b;", "&#47;", "&#43;",
        ]
        .iter()
        .any(|unit| lower.starts_with(unit)))
}

/// Whether `s` is whole an AWS access key id (`AKIA...`, `ASIA...`).
pub(crate) fn is_aws_key_id(s: &str) -> bool {
    s.len() == 20
        && (s.starts_with("AKIA") || s.starts_with("ASIA"))
        && s[4..]
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// Whether `s` is whole shaped as an AWS secret access key: 40 characters of base64's alphabet
/// with both cases in them (a SHA-1 in hex, an id in one case, is another value).
pub(crate) fn is_aws_secret_shape(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'+'))
        && s.bytes().any(|b| b.is_ascii_uppercase())
        && s.bytes().any(|b| b.is_ascii_lowercase())
}

/// A hash algorithm's name as the whole value (`the password is sha256`, `password: bcrypt`):
/// how passwords are stored, not one.
/// Whether `value`, after a label such as `Encryption key:`, says which key rather than being
/// it: an ARN, a path, a public fingerprint (`SHA256:...`, `MD5:...`), an algorithm and size
/// (`AES-256`, `RSA-2048`, `P-256`).
fn names_key_metadata(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    lower.starts_with("arn:")
        || lower.starts_with('/')
        || lower.starts_with("sha256:")
        || lower.starts_with("md5:")
        || (value.len() <= 16
            && [
                "aes", "rsa", "ecdsa", "ed25519", "p-", "hmac", "sha", "chacha", "x25519",
            ]
            .iter()
            .any(|a| lower.starts_with(a)))
}

fn is_hash_algorithm(value: &str) -> bool {
    const ALGORITHMS: &[&str] = &[
        "md5", "sha1", "sha224", "sha256", "sha384", "sha512", "sha3", "sha3256", "sha3512",
        "bcrypt", "scrypt", "yescrypt", "argon2", "argon2i", "argon2d", "argon2id", "pbkdf2",
    ];
    let value = value.trim_end_matches(['.', ',', ')']);
    let lower = value.to_ascii_lowercase();
    // `sha-256`, `pbkdf2-sha256`, `pbkdf2_sha512`, `sha512crypt`.
    let plain = lower.replace('-', "");
    let plain = plain
        .strip_suffix("crypt")
        .filter(|p| p.starts_with("sha") || *p == "md5")
        .unwrap_or(plain.as_str());
    let plain = plain
        .strip_prefix("pbkdf2")
        .and_then(|rest| rest.strip_prefix(['_', ':']).or(Some(rest)))
        .filter(|rest| !rest.is_empty())
        .unwrap_or(plain);
    ALGORITHMS.contains(&plain)
}

/// Whether the value at `start` is on a line after its name (which ends at `name_end`) and that
/// line is a stack frame (`Error: invalid token:` then `    at Object.verify (/app/x.js:75:21)`):
/// the error message ended with the name, nothing was assigned to it.
fn stack_frame_on_next_line(text: &str, name_end: usize, start: usize) -> bool {
    if !text[name_end..start].contains('\n') {
        return false;
    }
    let line_end = text[start..]
        .find(['\n', '\r'])
        .map_or(text.len(), |i| start + i);
    let line = text[start..line_end].trim_end();
    let Some(frame) = line.strip_prefix("at ") else {
        return false;
    };
    // `at fn (file:line:col)`, `at file:line:col`, Java's `at pkg.Class.method(File.java:42)`.
    let location = frame.strip_suffix(')').unwrap_or(frame);
    let mut parts = location.rsplit(':');
    let last = parts.next().unwrap_or_default();
    frame.ends_with(')') || (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `separator` (after a name, up to its value, trimmed) is a YAML folded block scalar's
/// header without modifiers: `:` then `>`, and the value on the lines after it (`password: >`).
/// `>-`, `>+` and `>2` do not end in `>`, so they are never taken for an XML start tag.
/// (The pattern takes `: >` only with a line break after it.)
fn is_folded_block_header(separator: &str) -> bool {
    separator
        .trim_start_matches(['"', '\''])
        .trim_start()
        .strip_prefix(':')
        .is_some_and(|rest| rest.trim() == ">")
}

/// Whether the separator after a name (`separator`, up to the value) starts with `for <whom>`
/// (`password for bob: X`).
fn names_whom_for(separator: &str) -> bool {
    let rest = separator.trim_start();
    rest.len() < separator.len()
        && rest.len() > 3
        && rest.as_bytes()[..3].eq_ignore_ascii_case(b"for")
        && rest.as_bytes()[3].is_ascii_whitespace()
}

/// Whether `before` (the text before a name) ends with a verb of setting (`set secret to X`,
/// `changed the password to X`).
fn follows_a_setting_verb(before: &str) -> bool {
    let mut words = before.split_whitespace().rev();
    let mut last = words.next();
    if last.is_some_and(|w| w.eq_ignore_ascii_case("the")) {
        last = words.next();
    }
    last.is_some_and(|w| {
        ["set", "reset", "change", "changed", "update", "updated"]
            .iter()
            .any(|v| w.eq_ignore_ascii_case(v))
    })
}

/// Whether `secret` at `start` is the text of the XML element whose name starts at
/// `name_start`: the name opens an element, the value holds a letter or digit, and an end tag
/// follows it (after the rest of a value with character references, and spaces).
fn element_value(text: &str, name_start: usize, start: usize, secret: &str) -> bool {
    let (end, after) = match cdata_end(text, start) {
        Some(end) => (end, text[end..].strip_prefix("]]>").unwrap_or("</")),
        None => {
            let end = extend_bare_value(text, start + secret.len());
            (end, &text[end..])
        }
    };
    opens_element(text.as_bytes(), name_start)
        && text[start..end].bytes().any(|b| b.is_ascii_alphanumeric())
        && after.trim_start().starts_with("</")
}

/// Where the text of a CDATA section starting at `start` (right after `<![CDATA[`) ends: at its
/// `]]>`, or the end of `text` when it is cut short. `None`: `start` is not inside one. Its
/// text is the element's value whatever it holds (spaces, `<`, quotes).
fn cdata_end(text: &str, start: usize) -> Option<usize> {
    text[..start]
        .ends_with("<![CDATA[")
        .then(|| text[start..].find("]]>").map_or(text.len(), |i| start + i))
}

/// Whether the name at `name_start` is an XML element's: right after `<`, or after `<prefix:`.
fn opens_element(text: &[u8], name_start: usize) -> bool {
    match name_start.checked_sub(1).map(|i| text[i]) {
        Some(b'<') => true,
        Some(b':') => {
            let prefix_start = text[..name_start - 1]
                .iter()
                .rposition(|b| !name_byte(b))
                .map_or(0, |i| i + 1);
            prefix_start > 0 && prefix_start < name_start - 1 && text[prefix_start - 1] == b'<'
        }
        _ => false,
    }
}

/// Whether a letter or digit comes right before `start` (or, with `after`, right at `end`): the
/// token found there is the inside of a longer word. The token patterns carry no `\b` for this,
/// because `_` is a word character to it and tokens are glued into names with `_`
/// (`deploy_ghp_...`, `AKIA..._credentials.csv`, `GITHUB_TOKEN_ghp_...`).
fn glued_to_word(text: &str, start: usize, end: usize, after: bool) -> bool {
    let bytes = text.as_bytes();
    let alnum = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    alnum(start.checked_sub(1).and_then(|i| bytes.get(i))) || (after && alnum(bytes.get(end)))
}

/// Whether the name at `name_start` is the resource type of an ARN (`arn:aws:secretsmanager:
/// us-east-1:123456789012:secret:prod/db`): what follows names the secret, it is not one, and
/// which secret was read is what an analyst of a `GetSecretValue` needs to know.
fn is_resource_name_segment(text: &str, name_start: usize) -> bool {
    let before = &text[..name_start];
    before.ends_with(':')
        && before
            .rfind("arn:")
            .is_some_and(|arn| !before[arn..].contains(|c: char| c.is_whitespace() || c == '"'))
}

/// Words that say what became of a secret, not what it is (`password: expired`,
/// `Authorization: denied by policy`): masking them only hides why a login failed.
pub(crate) fn is_status_word(value: &str) -> bool {
    const STATUS_WORDS: &[&str] = &[
        "denied",
        "expired",
        "required",
        "invalid",
        "incorrect",
        "missing",
        "changed",
        "reset",
        "locked",
        "unknown",
        "none",
        "null",
        "true",
        "false",
        "empty",
        "set",
        "unset",
        "ok",
        "failed",
        "success",
        "valid",
        "enabled",
        "disabled",
        "granted",
        "revoked",
        "redacted",
        "hidden",
        "masked",
        "rejected",
        "accepted",
        "verified",
        "updated",
        "created",
        "deleted",
    ];
    STATUS_WORDS.iter().any(|w| value.eq_ignore_ascii_case(w))
}

/// The digits at `start` carry a sign of their own (`-1234...` / `+4915...` as a whole value, or
/// after a space, `=` or `:`): a signed integer written as text, such as Google Workspace's
/// `id.uniqueQualifier` (a signed 64-bit id), or a phone number in E.164 form (`+` and up to 15
/// digits), not a card number, which nobody writes with a sign. A dash after a word
/// (`cc-4111...`) is a separator and still counts as a card.
fn is_signed_number(text: &str, start: usize) -> bool {
    let bytes = text.as_bytes();
    match start.checked_sub(1).map(|i| (i, bytes[i])) {
        Some((0, b'-' | b'+')) => true,
        Some((i, b'-' | b'+')) => !bytes[i - 1].is_ascii_alphanumeric(),
        _ => false,
    }
}

/// Random-looking token: a digit or token punctuation, or long enough that it is no English word
/// (`Bearer authentication` is prose, `Bearer 8f3a...` is a token).
fn looks_random(s: &str) -> bool {
    s.len() >= 24
        || s.bytes().any(|b| {
            b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'~' | b'+' | b'/' | b'=' | b'-')
        })
}

/// A value in prose (`password was X`) is a secret only when it mixes letters and digits, so
/// `password is expired` / `token was revoked` stay readable.
fn looks_generated(s: &str) -> bool {
    s.len() >= 6
        && s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes().any(|b| b.is_ascii_alphabetic())
}

/// `Basic` credentials are base64 of printable `user:password`.
pub(crate) fn is_basic_credential(s: &str) -> bool {
    let trimmed = s.trim_end_matches('=');
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .is_ok_and(|bytes| bytes.contains(&b':') && bytes.iter().all(|b| (0x20..0x7f).contains(b)))
}

/// 13-19 digits, a card-network prefix (Visa 4, Mastercard 51-55/22-27, Amex 34/37, Diners
/// 30/36/38/39, Discover/UnionPay/Maestro 6, JCB 35) and a valid Luhn checksum. The prefix check
/// keeps epoch-millisecond timestamps and vendor ids (which start with 1) out.
pub(crate) fn is_card_number(s: &str) -> bool {
    let mut digits = [0u8; 19];
    let mut n = 0;
    for b in s.bytes() {
        if b.is_ascii_digit() {
            if n == digits.len() {
                return false;
            }
            digits[n] = b - b'0';
            n += 1;
        }
    }
    if n < 13 {
        return false;
    }
    let prefix_ok = matches!(
        (digits[0], digits[1]),
        (4, _) | (5, 1..=5) | (2, 2..=7) | (3, 0 | 4..=9) | (6, _)
    );
    prefix_ok && luhn_ok(&digits[..n])
}

fn luhn_ok(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(*d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    // `is_multiple_of` is newer than the workspace's rust-version.
    matches!(sum % 10, 0)
}

/// A dotted `ddd.dd.dddd` that goes on with a dot and a digit on either side is a part of a
/// longer dotted number (a version, an OID), not an SSN.
fn inside_dotted_number(text: &str, start: usize, secret: &str) -> bool {
    secret.as_bytes().get(3) == Some(&b'.') && number_goes_on(text, start, secret, b'.')
}

/// Whether the number `secret` at `start` in `text` goes on past either end: `sep` and a digit
/// right before or right after it.
fn number_goes_on(text: &str, start: usize, secret: &str, sep: u8) -> bool {
    let bytes = text.as_bytes();
    let end = start + secret.len();
    let sep_digit =
        |a: Option<&u8>, b: Option<&u8>| a == Some(&sep) && b.is_some_and(u8::is_ascii_digit);
    (start >= 2 && sep_digit(bytes.get(start - 1), bytes.get(start - 2)))
        || sep_digit(bytes.get(end), bytes.get(end + 1))
}

/// A `ddd dd dddd` written with spaces is an SSN only where the text says so (`SSN`, `social
/// security` shortly before it) and it is no part of a longer list of numbers: `ports 443 80
/// 8080` has the same shape.
fn spaced_ssn_in_context(text: &str, start: usize, secret: &str) -> bool {
    if number_goes_on(text, start, secret, b' ') {
        return false;
    }
    let before = text[..start]
        .char_indices()
        .rev()
        .nth(31)
        .map_or(&text[..start], |(i, _)| &text[i..start])
        .to_ascii_lowercase();
    before.contains("ssn")
        || before.contains("social security")
        || before.contains("social-security")
}

/// `ddd-dd-dddd` (or spaces or dots for the dashes, or `ddddddddd`) outside the ranges the SSA
/// never issues (area 000, 666, 900-999; group 00; serial 0000).
fn is_valid_ssn(s: &str) -> bool {
    let (area, group, serial) = match s.len() {
        11 => (&s[0..3], &s[4..6], &s[7..11]),
        9 => (&s[0..3], &s[3..5], &s[5..9]),
        _ => return false,
    };
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<(PatternKind, String)> {
        let p = Patterns::new(KindSet::MAX).expect("compiles");
        let keys = KeyMatcher::new(&[], &[]).expect("builds");
        let all: KindSet = PatternKind::ALL
            .iter()
            .map(|k| bit(*k))
            .fold(0, |a, b| a | b);
        let cands = p.candidates(text, all, &KeyMatcher::new(&[], &[]).expect("keys"));
        let mut out = Vec::new();
        for kind in PatternKind::ALL {
            if cands & bit(kind) != 0 {
                p.find(kind, text, &keys, &mut out);
            }
        }
        out.into_iter()
            .map(|f| (f.kind, text[f.start..f.end].to_string()))
            .collect()
    }

    /// `kind` finds nothing in `text`.
    fn none_of(kind: PatternKind, text: &str) {
        let f = found(text);
        assert!(
            !f.iter().any(|(k, _)| *k == kind),
            "{text:?}: expected no {kind:?}, got {f:?}"
        );
    }

    fn one(text: &str, kind: PatternKind, secret: &str) {
        let f = found(text);
        assert!(
            f.contains(&(kind, secret.to_string())),
            "{text:?}: expected {kind:?} {secret:?}, got {f:?}"
        );
    }

    #[test]
    fn luhn_and_prefixes() {
        assert!(is_card_number("4111111111111111"));
        assert!(is_card_number("4111 1111 1111 1111"));
        assert!(is_card_number("378282246310005"));
        assert!(is_card_number("5555-5555-5555-4444"));
        assert!(!is_card_number("4111111111111112"));
        // Luhn-valid but an epoch-millis-like prefix
        assert!(!is_card_number("1234567812345670"));
        assert!(!is_card_number("411111111111"));
    }

    #[test]
    fn passwords_on_command_lines_of_other_tools_are_masked() {
        use PatternKind::CliCredentials;
        for (text, secret) in [
            (
                "openssl rsa -in k.pem -passin pass:Zebra9KettleC1 -out k2.pem",
                "Zebra9KettleC1",
            ),
            (
                "openssl pkcs12 -export -passout pass:'Zebra9 Kettle' -out a.p12",
                "Zebra9 Kettle",
            ),
            (
                "openssl enc -aes256 -pass pass:Zebra9KettleC1",
                "Zebra9KettleC1",
            ),
            ("net user svc Zebra9KettleC1 /add", "Zebra9KettleC1"),
            (
                "cmd.exe /c NET.EXE USER Administrator Zebra9KettleC1",
                "Zebra9KettleC1",
            ),
            (
                r#"net user "svc acct" "Zebra9 Kettle" /add /domain"#,
                "Zebra9 Kettle",
            ),
            (
                "htpasswd -b /etc/nginx/.htpasswd admin Zebra9KettleC1",
                "Zebra9KettleC1",
            ),
            (
                "htpasswd -cbB -C 12 users.txt admin Zebra9KettleC1",
                "Zebra9KettleC1",
            ),
            (
                "htpasswd -B -b users.txt admin Zebra9KettleC1",
                "Zebra9KettleC1",
            ),
            (
                "htpasswd -nb admin Zebra9KettleC1 > users.txt",
                "Zebra9KettleC1",
            ),
            (
                "ConvertTo-SecureString 'Zebra9KettleC1' -AsPlainText -Force",
                "Zebra9KettleC1",
            ),
            (
                r#"$p = ConvertTo-SecureString -String "Zebra9KettleC1" -AsPlainText -Force"#,
                "Zebra9KettleC1",
            ),
            (
                "convertto-securestring -AsPlainText -Force -String Zebra9KettleC1",
                "Zebra9KettleC1",
            ),
            (
                "'Zebra9KettleC1' | ConvertTo-SecureString -AsPlainText -Force",
                "Zebra9KettleC1",
            ),
            (
                "url=jdbc:oracle:thin:scott/Zebra9KettleC1@db:1521:orcl",
                "Zebra9KettleC1",
            ),
            (
                "jdbc:oracle:thin:scott/Zebra9KettleC1@//db.internal:1521/svc",
                "Zebra9KettleC1",
            ),
            // A client run by its path, or after `&` (both were left in clear).
            (
                "cron: /usr/bin/mysqldump -uroot -pZebra9KettleC1 prod",
                "Zebra9KettleC1",
            ),
            ("url: /api?x=1&mysql -pZebra9KettleC1", "Zebra9KettleC1"),
            (
                "sqlplus -s scott/Zebra9KettleC1@orcl @report.sql",
                "Zebra9KettleC1",
            ),
            ("curl -sS -ubob:Zebra9KettleC1 https://x", "Zebra9KettleC1"),
            (
                "7z a -pZebra9KettleC1 -mhe=on out.7z docs/",
                "Zebra9KettleC1",
            ),
            (
                r#"C:\tools\7za.exe x -p"Zebra9KettleC1" in.7z"#,
                "Zebra9KettleC1",
            ),
            (
                "rar a -hpZebra9KettleC1 -pZebra9KettleC1 b.rar f",
                "Zebra9KettleC1",
            ),
            ("zip -r -P Zebra9KettleC1 out.zip docs/", "Zebra9KettleC1"),
            ("unzip -P Zebra9KettleC1 in.zip", "Zebra9KettleC1"),
            ("echo 'svc:Zebra9KettleC1' | chpasswd", "Zebra9KettleC1"),
            (
                "echo Zebra9KettleC1 | sudo passwd --stdin svc",
                "Zebra9KettleC1",
            ),
            ("redis-cli -h cache AUTH Zebra9KettleC1", "Zebra9KettleC1"),
            (
                "redis-cli -h cache auth default Zebra9KettleC1",
                "Zebra9KettleC1",
            ),
        ] {
            one(text, CliCredentials, secret);
        }
        for clean in [
            "openssl rsa -in k.pem -passin env:KEY_PASSPHRASE -out k2.pem",
            "openssl pkcs12 -passin file:/run/secrets/p12 -passout stdin",
            "net user svc * /add",
            "net user svc /delete",
            "net user bob /domain",
            "net user",
            "htpasswd -c /etc/nginx/.htpasswd admin",
            "htpasswd -D users.txt admin",
            "htpasswd -n admin > users.txt",
            "ConvertTo-SecureString $env:SVC_PASSWORD -AsPlainText -Force",
            "ConvertTo-SecureString -String $pw -AsPlainText",
            "Read-Host -AsSecureString | ConvertFrom-SecureString",
            "jdbc:oracle:thin:@db:1521:orcl",
            "jdbc:oracle:thin:@//db.internal:1521/svc",
            "sqlplus / as sysdba",
            "sqlplus scott@orcl",
            "curl -u bob https://x",
            "curl -uploader https://x",
            "7z a -p out.7z docs/",
            "7z x in.7z -o/tmp/out",
            "gzip -p 4 big.log",
            "zip -r out.zip docs/ -x '*.tmp'",
            "the zip code -P is unknown",
            "echo 'svc:$NEW_PW' | chpasswd",
            "echo $PW | passwd --stdin svc",
            "redis-cli -h cache ping",
        ] {
            none_of(CliCredentials, clean);
        }
    }

    #[test]
    fn passwords_of_key_tools_cmdlets_variables_dsns_and_network_configs_are_masked() {
        use PatternKind::CliCredentials;
        // QA: each of these was let through. A line with two secrets lists both.
        for (text, secrets) in [
            (
                "ssh-keygen -p -f id_rsa -P Zebra9Old -N Zebra9New",
                &["Zebra9Old", "Zebra9New"][..],
            ),
            (
                "ssh-keygen -t ed25519 -N 'Zebra9 New' -f k",
                &["Zebra9 New"],
            ),
            (
                "rman target sys/Zebra9Tgt@db catalog rco/Zebra9Cat@cat",
                &["Zebra9Tgt", "Zebra9Cat"],
            ),
            (
                "Invoke-Sqlcmd -ServerInstance db -Username sa -Password 'Zebra9 Kettle'",
                &["Zebra9 Kettle"],
            ),
            (
                "Connect-ExchangeOnline -UserPrincipalName a@b.c -Password Zebra9Kettle",
                &["Zebra9Kettle"],
            ),
            (
                "New-Thing -Name x -ClientSecret \"Zebra9Kettle\"",
                &["Zebra9Kettle"],
            ),
            ("setx DB_PASSWORD Zebra9Kettle /M", &["Zebra9Kettle"]),
            (
                "setx /M \"API_TOKEN\" \"Zebra9 Kettle\"",
                &["Zebra9 Kettle"],
            ),
            (
                r#"[Environment]::SetEnvironmentVariable("DB_PASSWORD", "Zebra9Kettle", "Machine")"#,
                &["Zebra9Kettle"],
            ),
            (
                "az storage container create --account-key Zebra9KettleAbc== -n c",
                &["Zebra9KettleAbc=="],
            ),
            (
                "az storage blob list --sas-token sv=2024&sig=Zebra9Kettle",
                &["sv=2024&sig=Zebra9Kettle"],
            ),
            (
                r#"Error 1045: dsn "app:Zebra9Kettle@unix(/tmp/mysql.sock)/db""#,
                &["Zebra9Kettle"],
            ),
            (
                "panic: failed with DSN app:Zebra9Kettle@tcp(db:3306)/app",
                &["Zebra9Kettle"],
            ),
            (
                "crypto isakmp key Zebra9Kettle address 0.0.0.0",
                &["Zebra9Kettle"],
            ),
            (
                "username admin privilege 15 secret 0 Zebra9Kettle",
                &["Zebra9Kettle"],
            ),
            ("username ops password 7 0822455D0A16", &["0822455D0A16"]),
            (
                "enable secret 5 $1$mERr$Zebra9Kettle",
                &["$1$mERr$Zebra9Kettle"],
            ),
            ("snmp-server community Zebra9Kettle RW", &["Zebra9Kettle"]),
            (" ikev1 pre-shared-key Zebra9Kettle", &["Zebra9Kettle"]),
            (
                "vault login s.Zebra9KettleAbCdEfGhIjKlMn",
                &["s.Zebra9KettleAbCdEfGhIjKlMn"],
            ),
            (
                "vault token lookup -format=json s.Zebra9KettleAbCdEfGhIjKlMn",
                &["s.Zebra9KettleAbCdEfGhIjKlMn"],
            ),
            // The second QA pass: quoted programs and values, options with values, glued
            // passphrases, setx's own /p, DSN passwords with `@` and `/`, device secrets after
            // an algorithm, a view or a role, Junos' ascii-text, TACACS+ and RADIUS keys.
            (
                r#""C:\Windows\system32\setx.exe" API_TOKEN Zebra9Kettle /M"#,
                &["Zebra9Kettle"],
            ),
            ("setx API_TOKEN 'Zebra9 Kettle'", &["Zebra9 Kettle"]),
            (
                r#"setx /s srv01 /u CORP\admin /p Zebra9Kettle"#,
                &["Zebra9Kettle"],
            ),
            (
                r#""C:\HashiCorp\vault.exe" login s.Zebra9KettleAbCdEfGhIjKlMn"#,
                &["s.Zebra9KettleAbCdEfGhIjKlMn"],
            ),
            (
                "vault login 's.Zebra9KettleAbCdEfGhIjKlMn'",
                &["s.Zebra9KettleAbCdEfGhIjKlMn"],
            ),
            (
                "vault login -address https://vault:8200 s.Zebra9KettleAbCdEfGhIjKlMn",
                &["s.Zebra9KettleAbCdEfGhIjKlMn"],
            ),
            (
                "ssh-keygen -p -f id_rsa -PZebra9Old -NZebra9New",
                &["Zebra9Old", "Zebra9New"],
            ),
            ("dsn app:p@ss9Word@tcp(db:3306)/app", &["p@ss9Word"]),
            ("dsn app:Ab/cd9Zebra@tcp(db:3306)/app", &["Ab/cd9Zebra"]),
            (
                "enable algorithm-type scrypt secret Zebra9Kettle",
                &["Zebra9Kettle"],
            ),
            (
                "username admin privilege 15 algorithm-type scrypt secret Zebra9Kettle",
                &["Zebra9Kettle"],
            ),
            (
                "username admin view netops secret Zebra9Kettle",
                &["Zebra9Kettle"],
            ),
            (
                "username admin role network-admin secret sha512 $6$Zebra9Salt$Hash",
                &["$6$Zebra9Salt$Hash"],
            ),
            (
                r#"set security ike policy p1 pre-shared-key ascii-text "Zebra9Kettle""#,
                &["Zebra9Kettle"],
            ),
            ("pre-shared-key 0 zebrakettle", &["zebrakettle"]),
            ("tacacs-server key 7 0822455D0A16", &["0822455D0A16"]),
            (
                "radius-server host 10.0.0.5 key Zebra9Radius",
                &["Zebra9Radius"],
            ),
            (
                "interface Gi0/1\n key-string Zebra9Kettle\n",
                &["Zebra9Kettle"],
            ),
            // The third QA pass: text after the secret, quoted values, letters-only secrets.
            (
                "username admin password 5 $1$abc$Zebra9Hash role network-admin",
                &["$1$abc$Zebra9Hash"],
            ),
            (
                "username ops secret 0 Zebra9Kettle privilege 15",
                &["Zebra9Kettle"],
            ),
            (
                " ikev2 remote-authentication pre-shared-key Zebra9Kettle",
                &["Zebra9Kettle"],
            ),
            (r#"snmp-server community "Zebra9Comm" RO"#, &["Zebra9Comm"]),
            ("Connect-Thing -Password Welcome", &["Welcome"]),
            ("Connect-Thing -PASSWORD Zebra", &["Zebra"]),
            ("enable secret ZebraKettle", &["ZebraKettle"]),
            ("username admin password Cisco", &["Cisco"]),
            (
                "radius-server host 10.0.0.5 auth-port 1812 key Zebra9Radius",
                &["Zebra9Radius"],
            ),
            (
                "tacacs-server host 10.0.0.1 key 0 Zebra9Tac single-connection",
                &["Zebra9Tac"],
            ),
            (
                "radius server ISE\n address ipv4 10.0.0.1 auth-port 1812\n key Zebra9Radiu\n",
                &["Zebra9Radiu"],
            ),
            (
                "snmp-server user u1 g1 v3 auth sha Zebra9Auth priv aes 128 Zebra9Priv",
                &["Zebra9Auth", "Zebra9Priv"],
            ),
            (
                "snmp-server host 10.0.0.1 version 2c Zebra9Comm",
                &["Zebra9Comm"],
            ),
        ] {
            for secret in secrets {
                one(text, CliCredentials, secret);
            }
        }
        for clean in [
            "ssh-keygen -t ed25519 -N '' -f k",
            "rsync -P -a src/ dst/",
            "mysql -h db -P 3306 -u app",
            "rman target /",
            "select * from catalog",
            "Invoke-Sqlcmd -Password $env:SQL_PW",
            "New-Thing -Password (Get-Secret db)",
            "use the -password option",
            "setx PATH C:\\bin /M",
            r#"[Environment]::SetEnvironmentVariable("PATH", "C:\bin", "User")"#,
            "connecting to db:3306 over tcp(4)",
            "username bob password reset requested",
            "enable password protection",
            "snmp-server community",
            "vault login -method=oidc",
            "vault token lookup",
            // The second QA pass: prose the device lines took for secrets, references to
            // secrets, Vault paths and accessors.
            "Authentication failed: invalid username or password (LDAP)",
            "User entered wrong username or password 3 times",
            "Sign-in failed: Username or password INCORRECT",
            "Invalid username or password (code 401)",
            "username alice password expired; reset required",
            "User clicked Enable Password Manager",
            "Please enable password rotation.",
            "Policy update: enable password complexity=High",
            "IKE phase 1 failed: pre-shared-key mismatch.",
            "IPsec: pre-shared-key (PSK) configured",
            "Configure the snmp-server community string on each switch",
            "Removed snmp-server community RO from the config",
            "crypto isakmp key rotated for peer 203.0.113.5",
            "the key-string Value must be 16 chars",
            "vault token capabilities secret/data/app/config",
            "vault token lookup -accessor 8609694a-cdbc-db9b-d345-e782dbb562ed",
            "vault token revoke -mode=path auth/userpass/login/alice",
            "openssl pkcs12 -export -password env:P12_PASS -out a.p12",
            "openssl pkcs12 -export -password file:/run/secrets/p12 -out a.p12",
            r#"Connect-Thing -Token "${env:GH_TOKEN}""#,
            "Use the -Token Parameter to pass a PAT",
            "vault login -method=userpass username=bob",
            "vault login completed successfully",
            "mysql://root@tcp(db:3306)/app",
            "the key is rotated\n key rotated",
            "-Password SecureString expected",
        ] {
            none_of(CliCredentials, clean);
        }
    }

    #[test]
    fn every_glued_password_client_is_one_the_text_pattern_knows() {
        for client in GLUED_PASSWORD_CLIENTS {
            one(
                &format!("{client} -u root -pZebra9KettleC1 prod"),
                PatternKind::CliCredentials,
                "Zebra9KettleC1",
            );
            assert!(is_glued_password_client(client), "{client}");
            assert!(is_glued_password_client(&format!("/usr/bin/{client}")));
        }
        assert!(is_glued_password_client(r"C:\mysql\bin\MYSQL.EXE"));
        for other in ["ssh", "mysqlsh", "mysql-router", "psql", "docker"] {
            assert!(!is_glued_password_client(other), "{other}");
        }
    }

    #[test]
    fn every_credential_client_is_one_the_text_pattern_knows() {
        let commands = [
            "curl -u bob:Zebra9KettleC1 https://x",
            "sshpass -p Zebra9KettleC1 ssh h",
            "docker login -u ci -p Zebra9KettleC1 r",
            "podman login -p Zebra9KettleC1 r",
            "nerdctl login -p Zebra9KettleC1 r",
            "sqlcmd -S db -P Zebra9KettleC1",
            "bcp t out f -S db -P Zebra9KettleC1",
            "redis-cli -h r -a Zebra9KettleC1 ping",
            "htpasswd -b /etc/h bob Zebra9KettleC1",
            "net user bob Zebra9KettleC1 /add",
            "net1 user bob Zebra9KettleC1",
            "openssl rsa -passin pass:Zebra9KettleC1",
            "sqlplus scott/Zebra9KettleC1@orcl",
            "7z a -pZebra9KettleC1 out.7z f",
            "7za a -pZebra9KettleC1 out.7z f",
            "rar a -pZebra9KettleC1 out.rar f",
            "unrar x -pZebra9KettleC1 in.rar",
            "zip -P Zebra9KettleC1 out.zip f",
            "unzip -P Zebra9KettleC1 in.zip",
            "ssh-keygen -p -f k -P Zebra9KettleC1",
            "vault login Zebra9KettleC1",
            "setx DB_PASSWORD Zebra9KettleC1",
            "rman target sys/Zebra9KettleC1@db",
        ];
        for client in CREDENTIAL_CLIENTS {
            assert!(
                commands
                    .iter()
                    .any(|c| c.split(' ').next() == Some(*client)),
                "{client} has no command here"
            );
            assert!(is_credential_client(&format!("/usr/bin/{client}")));
            assert!(is_credential_client(&format!(
                "{}.EXE",
                client.to_uppercase()
            )));
        }
        for command in commands {
            assert!(is_credential_client(
                command.split(' ').next().unwrap_or_default()
            ));
            one(command, PatternKind::CliCredentials, "Zebra9KettleC1");
        }
        for other in ["ssh", "curl-config", "docker-compose", "netstat", "mysql"] {
            assert!(!is_credential_client(other), "{other}");
        }
    }

    #[test]
    fn session_and_password_query_parameters_are_masked() {
        use PatternKind::UrlSignature;
        for (text, secret) in [
            (
                "https://acme.firebaseio.com/users.json?auth=Zebra9KettleC1abc",
                "Zebra9KettleC1abc",
            ),
            (
                "https://x.example/y?sessionid=Zebra9KettleC1abc&lang=en",
                "Zebra9KettleC1abc",
            ),
            (
                "https://x.example/y?session_id=Zebra9KettleC1abc",
                "Zebra9KettleC1abc",
            ),
            (
                "https://x.example/y?session=Zebra9KettleC1",
                "Zebra9KettleC1",
            ),
            (
                "https://x.example/app;jsessionid=0A1B2C3D4E5F6A7B8C9D?x=1",
                "0A1B2C3D4E5F6A7B8C9D",
            ),
            (
                "GET /index.php?PHPSESSID=k3j4h5g6f7d8s9a0q1w2e3r4t5 HTTP/1.1",
                "k3j4h5g6f7d8s9a0q1w2e3r4t5",
            ),
            (
                "https://x.example/login?user=bob&pw=hunter&next=/",
                "hunter",
            ),
            (
                "https://x.example/y?session=abcdefghijklmnopqrstuvwxyzabcdefgh",
                "abcdefghijklmnopqrstuvwxyzabcdefgh",
            ),
        ] {
            one(text, UrlSignature, secret);
        }
        for clean in [
            "https://x.example/y?session=new",
            "https://x.example/login?auth=google&next=/home",
            "https://x.example/login?auth=saml2",
            "https://x.example/login?auth=oauth2&session=2fa-setup",
            "https://x.example/y?sessionid=&x=1",
            "https://x.example/y?pw=&x=1",
            "https://x.example/y?pw=true",
            "https://x.example/y?oauth=Zebra9KettleC1abc",
            "session=expired",
        ] {
            none_of(UrlSignature, clean);
        }
    }

    /// The token of a password-reset, activation or invitation link in a URL's path (Okta's
    /// `requestUri`, web access logs) works for whoever reads it while the link is valid.
    #[test]
    fn one_time_link_tokens_in_url_paths_are_masked() {
        use PatternKind::UrlSignature;
        for (text, secret) in [
            (
                "/signin/reset-password/XE6wE17zmphl3KqAPFxO",
                "XE6wE17zmphl3KqAPFxO",
            ),
            (
                "https://acme.okta.com/welcome/drpFgIbz9sVbP3c7Yk1L?fromURI=/app",
                "drpFgIbz9sVbP3c7Yk1L",
            ),
            (
                "GET /accounts/password/reset/Mz-5fq8bk2r7a1XyZq9w/ HTTP/1.1",
                "Mz-5fq8bk2r7a1XyZq9w",
            ),
            (
                "https://app.example.com/invite/9f8e7d6c5b4a39281706f5e4",
                "9f8e7d6c5b4a39281706f5e4",
            ),
            (
                "see https://x.example/magic-link/Ab3dEf6hIj9kLm2nOp5q for the sign-in",
                "Ab3dEf6hIj9kLm2nOp5q",
            ),
        ] {
            one(text, UrlSignature, secret);
        }
        for clean in [
            "https://help.example.com/welcome/getting-started-with-okta",
            "/signin/reset-password/",
            "https://x.example/invite/members",
            "/activate/short1",
            "https://x.example/docs/welcome/page2-overview-and-more",
            "/signin/reset-password/hmac:0123456789abcdef0123456789abcdef",
            "https://wiki.example/welcome/NewHire2025Checklist",
            "https://x.example/invite/ENG-1234-Platform",
            "https://x.example/welcome/Onboarding_2025_Q1",
        ] {
            none_of(UrlSignature, clean);
        }
    }

    #[test]
    fn separated_digits_that_are_no_ssn_stay() {
        for text in [
            // Versions, OIDs and addresses: dotted numbers going on past the SSN's shape.
            "agent 1.123.45.6789",
            "build 123.45.6789.2",
            "from 198.151.10.7 and 10.123.45.67",
            "mixed 123-45.6789 and 123 45-6789",
            "date 2024 01 15 and 123 456 7890",
            // Lists of numbers with the spaced shape, and a spaced one with no SSN said.
            "security group opened ports 443 80 8080 to the world",
            "allow 443 80 8443",
            "ssn on file: ref 123 45 6789 0123",
            "order 123 45 6789 shipped",
            "firmware 5412.7534.0000.19 installed",
        ] {
            let f = found(text);
            assert!(
                !f.iter()
                    .any(|(k, _)| matches!(k, PatternKind::UsSsn | PatternKind::CreditCard)),
                "{text:?}: {f:?}"
            );
        }
    }

    #[test]
    fn nine_bare_digits_are_an_ssn_only_right_after_an_ssn_label() {
        for text in [
            "employee record updated, SSN: 219099999",
            "ssn#219099999",
            "SSN 219099999 on file",
            "ssn=219099999&x=1",
            "SSN no. 219099999",
            "SSN No: 219099999",
            "social security number: 219099999",
            "Social_Security_Number=219099999",
            "Social Security No. 219099999.",
            "employee_ssn: 219099999",
            "employeeSSN=219099999",
            r#"{"ssn":"219099999"}"#,
            r#"{\"ssn\": \"219099999\"}"#,
        ] {
            assert_eq!(
                found(text),
                [(PatternKind::UsSsn, "219099999".to_string())],
                "{text:?}"
            );
        }
        for text in [
            // No label, or not right before the number: nine digits are an id.
            "219099999",
            "order 219099999 shipped",
            "ssn check passed for order 219099999",
            "SSN verified; ticket 219099999",
            // Labels that are part of another word.
            "classname: 219099999",
            "lessn 219099999",
            // Not nine digits, or outside the ranges the SSA issues.
            "SSN: 2190999991",
            "SSN: 21909999",
            "SSN: 219099999-1",
            "SSN: 919099999",
            "SSN: 000099999",
            "SSN: 219009999",
            "SSN: 219090000",
        ] {
            none_of(PatternKind::UsSsn, text);
        }
    }

    #[test]
    fn ssn_ranges() {
        assert!(is_valid_ssn("123-45-6789"));
        assert!(is_valid_ssn("123 45 6789"));
        assert!(is_valid_ssn("123456789"));
        assert!(!is_valid_ssn("12345678"));
        for bad in [
            "666123456",
            "000-12-3456",
            "666-12-3456",
            "912-12-3456",
            "123-00-4567",
            "123-45-0000",
        ] {
            assert!(!is_valid_ssn(bad), "{bad}");
        }
    }

    #[test]
    fn id_shaped_values_skip_the_automaton_safely() {
        let p = Patterns::new(KindSet::MAX).expect("compiles");
        assert!(p.id_shape_skip, "every anchor has a non-id byte");
        let all: KindSet = KindSet::MAX;
        let no_digits = all & !(bit(PatternKind::CreditCard) | bit(PatternKind::UsSsn));
        assert_eq!(
            p.candidates(
                "550e8400-e29b-41d4-a716-446655440000",
                no_digits,
                &KeyMatcher::new(&[], &[]).expect("keys")
            ),
            0
        );
        assert_eq!(
            p.candidates(
                "550e8400-e29b-41d4-a716-446655440000",
                all,
                &KeyMatcher::new(&[], &[]).expect("keys")
            ),
            bit(PatternKind::CreditCard),
            "a 15-digit run (716-446655440000) still wakes the card kind; no ddd-dd-dddd, no SSN"
        );
        assert_eq!(
            p.candidates(
                "2024-01-15T10:23:45.123Z",
                all,
                &KeyMatcher::new(&[], &[]).expect("keys")
            ),
            0
        );
        assert_ne!(
            p.candidates(
                "4111 1111 1111 1111",
                all,
                &KeyMatcher::new(&[], &[]).expect("keys")
            ),
            0,
            "digit kinds still run"
        );
    }

    #[test]
    fn anchors_wake_their_kind_only_where_its_regex_can_continue() {
        let p = Patterns::new(KindSet::MAX).expect("compiles");
        let keys = KeyMatcher::new(&[], &[]).expect("keys");
        let kinds = |t: &str| p.candidates(t, KindSet::MAX, &keys);
        for (text, kind) in [
            ("1Password Browser Extension", PatternKind::SecretAssignment),
            (
                "aws-cli/2.22.4 md/command#ecr.get-login-password",
                PatternKind::SecretAssignment,
            ),
            ("User login to Okta", PatternKind::OktaApiToken),
            ("Okta Verify", PatternKind::OktaApiToken),
            ("Basic auth", PatternKind::AuthHeader),
            ("00000003-0000-0ff1-ce00-000000000000", PatternKind::UsSsn),
            ("2024-01-15 123-45-67890", PatternKind::UsSsn),
            ("https://example.com:8443/x@y", PatternKind::UrlCredentials),
            ("ssh://git@github.com/acme", PatternKind::UrlCredentials),
            ("?sig=short", PatternKind::UrlSignature),
            ("msg.received", PatternKind::VendorToken),
            ("ask the desk about the task", PatternKind::VendorToken),
            (
                "TASK0123456789abcdef0123456789abcdef",
                PatternKind::VendorToken,
            ),
        ] {
            assert_eq!(kinds(text) & bit(kind), 0, "{text:?} {kind:?}");
        }
        for (text, kind) in [
            ("db_password = x", PatternKind::SecretAssignment),
            (
                r#"{\"client_secret\": \"x\"}"#,
                PatternKind::SecretAssignment,
            ),
            (
                "the password was changed to Zq9abc123",
                PatternKind::SecretAssignment,
            ),
            ("AWS_SECRET_ACCESS_KEY=abc", PatternKind::AwsSecretAccessKey),
            ("okta_api_token: 00abc", PatternKind::OktaApiToken),
            ("OKTA-TOKEN=00abc", PatternKind::OktaApiToken),
            ("SSWS 00abcdefghijklmnopqrstuv", PatternKind::OktaApiToken),
            ("Basic dXNlcjpwYXNz", PatternKind::AuthHeader),
            ("ssn 123-45-6789.", PatternKind::UsSsn),
            ("123-45-6789", PatternKind::UsSsn),
            ("postgres://app:pw@db", PatternKind::UrlCredentials),
            ("?sig=0123456789abcdef", PatternKind::UrlSignature),
            ("SharedAccessKey=x", PatternKind::AzureConnectionKey),
            (
                "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/abcdefghijklmnopqrstuv==",
                PatternKind::AzureConnectionKey,
            ),
            ("SG.abcdefghijklmnopqrstuv.x", PatternKind::VendorToken),
            ("sid=SK0123456789abcdef0123456789abcdef", PatternKind::VendorToken),
        ] {
            assert_ne!(kinds(text) & bit(kind), 0, "{text:?} {kind:?}");
        }
    }

    proptest::proptest! {
        /// The prefilter is a superset: whatever a kind's regex and verifier find in a text, the
        /// candidates for that text include the kind. Texts are glued from anchors, separators,
        /// digits and words, so near-misses of every precheck come up.
        #[test]
        fn candidates_never_hide_a_finding(parts in proptest::collection::vec(
            proptest::sample::select(vec![
                "password", "Password", "secret", "token", "okta", "Okta", "ssws", "SSWS",
                "api", "_", "-", ".", "\\", "\"", "'", " ", "\u{2003}", ":", "=", "is", "was",
                "set to", "changed to", "Bearer", "basic", "access_key", "AKIA", "ghp_",
                "123", "45", "6789", "4111", "1111", "0", "abcdefgh", "Zq9abc123XY",
                "00abcdefghijklmnopqrstuvwxyz0123456789ABCDEF", "eyJhbGciOi.eyJzdWIi.sig", "x",
                "client_", "hashed_", "next", "s", "key", "Type", ".actions", "db.", "my-",
                "Api.Key", "signingKey", "session-key", "Encryption.Key", "https://", "@",
                "/", "?", "&", "sig=", "X-Amz-Signature=", "sk_live_", "SG.", "8Q~", "glpat-",
                "AIza", "hf_", "msg.", "aB3dE6gH9jK2mN5pQ8rS1tV4wX7yZ0cF", "Shared", "AccessKey",
                "Account", "Key=", ";", "-u ", "--token ", "mysql ", "-p", "curl",
                "SK", "sk", "0123456789abcdef0123456789abcdef",
            ]),
            0..12,
        )) {
            let p = patterns();
            let keys = KeyMatcher::new(&[], &[]).expect("keys");
            let text: String = parts.concat();
            let candidates = p.candidates(&text, KindSet::MAX, &keys);
            let lower = text.to_ascii_lowercase();
            for kind in PatternKind::ALL {
                let mut found = Vec::new();
                p.find(kind, &text, &keys, &mut found);
                // Anchored kinds are looked for only where one of their anchors occurs (by
                // design: a sensitive word spelt with other separators, `api__key`, has none).
                let anchors = SPECS[kind.index()].anchors;
                let anchored = anchors.is_empty() || anchors.iter().any(|a| lower.contains(a));
                proptest::prop_assert!(
                    found.is_empty() || !anchored || candidates & bit(kind) != 0,
                    "{kind:?} found in {text:?} but not a candidate"
                );
            }
        }
    }

    fn patterns() -> &'static Patterns {
        static P: std::sync::OnceLock<Patterns> = std::sync::OnceLock::new();
        P.get_or_init(|| Patterns::new(KindSet::MAX).expect("compiles"))
    }

    #[test]
    fn byte_scan_only_drops_kinds_that_cannot_match() {
        let p = Patterns::new(KindSet::MAX).expect("compiles");
        let assign = bit(PatternKind::SecretAssignment);
        // An event type that names a token: no separator, so no assignment can be in it.
        assert_eq!(
            p.candidates(
                "app.oauth2.as.token.grant",
                KindSet::MAX,
                &KeyMatcher::new(&[], &[]).expect("keys")
            ) & assign,
            0
        );
        assert_eq!(
            p.candidates(
                "Bearer",
                KindSet::MAX,
                &KeyMatcher::new(&[], &[]).expect("keys")
            ) & bit(PatternKind::AuthHeader),
            0
        );
        // Separators of every kind keep the kinds: ASCII, Unicode spaces (the regexes' `\s` is
        // Unicode-aware), `:` and `=`.
        for text in [
            "token=ghx1234567",
            "token: abc123xyz",
            "password was Zq9abc123",
            "password\u{2003}was\u{2003}Zq9abc123",
        ] {
            assert_ne!(
                p.candidates(
                    text,
                    KindSet::MAX,
                    &KeyMatcher::new(&[], &[]).expect("keys")
                ) & assign,
                0,
                "{text:?}"
            );
        }
        one(
            "password\u{2003}was\u{2003}Zq9abc123",
            PatternKind::SecretAssignment,
            "Zq9abc123",
        );
        one(
            "Authorization: Bearer 8f3a9c2e1b7d",
            PatternKind::AuthHeader,
            "8f3a9c2e1b7d",
        );
    }

    #[test]
    fn digit_secrets_without_captures_are_the_captured_group() {
        let p = Patterns::new(KindSet::MAX).expect("compiles");
        for (kind, text) in [
            (PatternKind::CreditCard, "card 4111 1111 1111 1111 ok"),
            (PatternKind::CreditCard, "é4111111111111111é"),
            (PatternKind::CreditCard, "4111-1111-1111-1111"),
            (PatternKind::CreditCard, "x3782-822463-10005-"),
            (PatternKind::UsSsn, "ssn:123-45-6789."),
            (PatternKind::UsSsn, "ü123-45-6789"),
        ] {
            let re = &p.regexes[kind.index()];
            let caps = re.captures(text).expect("matches");
            let whole = caps.get(0).unwrap().range();
            assert_eq!(
                plain_secret(kind, text, whole),
                Some(caps.get(1).unwrap().range()),
                "{text:?}"
            );
        }
    }

    proptest::proptest! {
        /// The quick pass never settles a value whose digit runs the full pass would flag,
        /// but for values of digits and dots in groups of at most three (IPv4 addresses),
        /// where neither pattern can match.
        #[test]
        fn quick_pass_agrees_with_the_digit_runs(t in "[0-9 .:T-]{0,30}|[0-9a-f -]{0,40}|[0-9]{0,20}|[0-9]{1,3}(\\.[0-9]{1,4}){0,5}") {
            let s = scan_bytes(t.as_bytes());
            let dotted_short = t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && t.split('.').all(|g| g.len() <= 3);
            if dotted_short {
                // The patterns themselves, not asked through the quick pass.
                let p = Patterns::new(KindSet::MAX).expect("compiles");
                let keys = KeyMatcher::new(&[], &[]).expect("keys");
                let mut f = Vec::new();
                for kind in [PatternKind::CreditCard, PatternKind::UsSsn] {
                    p.find(kind, &t, &keys, &mut f);
                }
                proptest::prop_assert!(f.is_empty(), "{:?}: {:?}", t, f);
            } else {
                proptest::prop_assert_eq!((s.card, s.ssn), digit_runs(t.as_bytes()), "{:?}", t);
            }
        }
    }

    #[test]
    fn digit_runs_in_values() {
        let scan = |t: &str| {
            let s = scan_bytes(t.as_bytes());
            (s.card, s.ssn)
        };
        assert_eq!(scan("2024-01-15T10:00:00Z"), (false, false));
        // Any separated run of 9+ digits may be an SSN; `has_ssn_shape` looks closer.
        assert_eq!(scan("card 4111 1111 1111 1111 ok"), (true, true));
        assert_eq!(scan("123 45 6789"), (false, true));
        // An IPv4 address is settled by the quick pass.
        assert_eq!(scan("192.168.100.200"), (false, false));
        assert_eq!(scan("4111111111111111"), (true, false));
        assert_eq!(scan("x-4111111111111111-y"), (true, false));
        assert_eq!(scan("3782-822463-10005"), (true, true));
        assert_eq!(scan("10.0.0.1"), (false, false));
        assert_eq!(scan("123-45-6789"), (false, true));
        // Epoch milliseconds, long numeric ids, 20+ digit runs: no card can be a whole run.
        assert_eq!(scan("1795520823000"), (false, false));
        assert_eq!(scan("104557764472572952884"), (false, false));
        assert_eq!(scan("-259962867503283954"), (true, false));
    }

    #[test]
    fn each_detector_finds_its_secret_in_text() {
        use PatternKind::*;
        one(
            "id AKIAIOSFODNN7EXAMPLE used",
            AwsAccessKeyId,
            "AKIAIOSFODNN7EXAMPLE",
        );
        one(
            "ASIAY34FZKBOKMUTVV7A",
            AwsAccessKeyId,
            "ASIAY34FZKBOKMUTVV7A",
        );
        one(
            "export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            SecretAssignment,
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        );
        one(
            "SecretAccessKey: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            SecretAssignment,
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        );
        one(
            "aws configure set aws_secret_access_key wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY --profile x",
            AwsSecretAccessKey,
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        );
        // Ruby hashes, JSON escaped for HTML, XML elements (all left in clear before).
        one(
            r#"params: {:user=>"bob", :password=>"Hunter2!xyz"}"#,
            SecretAssignment,
            "Hunter2!xyz",
        );
        one(
            r#"{"user"=>"bob", "password" => "Hunter2!xyz"}"#,
            SecretAssignment,
            "Hunter2!xyz",
        );
        one(
            "{&quot;password&quot;:&quot;Hunter2!xyz&quot;}",
            SecretAssignment,
            "Hunter2!xyz",
        );
        one(
            "{&#34;api_key&#34;: &#34;k3yV4lue99&#34;}",
            SecretAssignment,
            "k3yV4lue99",
        );
        one(
            "<Credentials><Username>bob</Username><Password>Hunter2!xyz</Password></Credentials>",
            SecretAssignment,
            "Hunter2!xyz",
        );
        // Namespaces, attributes, a value on its own line, character references in the value
        // (each was left in clear, or masked only up to the `&`).
        for (text, secret) in [
            (
                r#"<wsse:Password Type="http://docs.oasis-open.org/wss#PasswordText">S3cretPass!</wsse:Password>"#,
                "S3cretPass!",
            ),
            ("<wsse:Password>S3cretPass!</wsse:Password>", "S3cretPass!"),
            (
                r#"<Password encrypted="false">S3cretPass!</Password>"#,
                "S3cretPass!",
            ),
            ("<Password>\n  S3cretPass!\n</Password>", "S3cretPass!"),
            (
                "<Password>Hunter2&amp;Secret99</Password>",
                "Hunter2&amp;Secret99",
            ),
            (
                "{&quot;password&quot;:&quot;Hunter2&amp;Secret99&quot;}",
                "Hunter2&amp;Secret99",
            ),
            (
                "{&quot;password&quot;:&quot;Abc&lt;def&gt;123&quot;}",
                "Abc&lt;def&gt;123",
            ),
        ] {
            one(text, SecretAssignment, secret);
        }
        one(
            "token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 leaked",
            GithubToken,
            "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        );
        one(
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
            GithubToken,
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        );
        one(
            "slack xoxb-123456789012-1234567890123-AbCdEfGhIjKl end",
            SlackToken,
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKl",
        );
        one(
            "xapp-1-A0123456789-1234567890-abcdef",
            SlackToken,
            "xapp-1-A0123456789-1234567890-abcdef",
        );
        one(
            "post to https://hooks.slack.com/services/T0000/B0000/XXXXXXXX now",
            SlackWebhook,
            "https://hooks.slack.com/services/T0000/B0000/XXXXXXXX",
        );
        one(
            "post to https://discord.com/api/webhooks/123456789012345678/Ab_Cd-EfGhIjKlMnOpQrStUvWxYz0123456789abcdefGHIJKLMNOPQRSTUVWXyz012345 now",
            WebhookUrl,
            "Ab_Cd-EfGhIjKlMnOpQrStUvWxYz0123456789abcdefGHIJKLMNOPQRSTUVWXyz012345",
        );
        one(
            "url=https://acme.webhook.office.com/webhookb2/0a1b2c3d-aaaa-bbbb-cccc-0123456789ab@11112222-3333-4444-5555-666677778888/IncomingWebhook/0123456789abcdef0123456789abcdef/99998888-7777-6666-5555-444433332222/V2AbCdEfGh 'x'",
            WebhookUrl,
            "0a1b2c3d-aaaa-bbbb-cccc-0123456789ab@11112222-3333-4444-5555-666677778888/IncomingWebhook/0123456789abcdef0123456789abcdef/99998888-7777-6666-5555-444433332222/V2AbCdEfGh",
        );
        one(
            "https://outlook.office.com/webhook/0a1b2c3d-aaaa-bbbb-cccc-0123456789ab@1111/IncomingWebhook/0123456789abcdef/9999",
            WebhookUrl,
            "0a1b2c3d-aaaa-bbbb-cccc-0123456789ab@1111/IncomingWebhook/0123456789abcdef/9999",
        );
        one(
            "zap https://hooks.zapier.com/hooks/catch/1234567/abc9xyz/ created",
            WebhookUrl,
            "abc9xyz",
        );
        one(
            "https://maker.ifttt.com/trigger/door_open/with/key/dAbCdEfGhIjKlMnOpQrSt",
            WebhookUrl,
            "dAbCdEfGhIjKlMnOpQrSt",
        );
        one(
            "https://chat.acme.example/hooks/abcdefghij0123456789klmnop",
            WebhookUrl,
            "abcdefghij0123456789klmnop",
        );
        one(
            "POST https://rocket.acme.example:3000/hooks/AbCdEfGhIjKlMnOpQ/AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKl",
            WebhookUrl,
            "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKl",
        );
        one(
            "Authorization: SSWS 00QCjAl4MlV-WPXM-ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            SecretAssignment,
            "SSWS 00QCjAl4MlV-WPXM-ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        );
        one(
            "curl -H SSWS 00QCjAl4MlV-WPXM-ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            OktaApiToken,
            "00QCjAl4MlV-WPXM-ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        );
        let ops = format!("ops_eyJ{}", "a".repeat(60));
        one(&format!("sa {ops} x"), OnepasswordToken, &ops);
        // A bare value goes on over `&` and `,` unless another `name=` (or prose) follows.
        one("password=Tr0ub4dor&3 ok", SecretAssignment, "Tr0ub4dor&3");
        one(
            "token=abc1234,def5678,ghi ok",
            SecretAssignment,
            "abc1234,def5678,ghi",
        );
        one(
            "/login?password=hunter22&next=/home",
            SecretAssignment,
            "hunter22",
        );
        one(
            "password=hunter22, then retry",
            SecretAssignment,
            "hunter22",
        );
        let secret_key = "A3-ASWWYB-798JRY-LJVD4-23DC2-86TVM-H43EB";
        one(
            &format!("emergency kit: {secret_key}."),
            OnepasswordToken,
            secret_key,
        );
        for near_miss in [
            "A3-ASWWYB-798JRY-LJVD4-23DC2-86TVM",
            "build a3-4f2e-11ee-be56-0242ac120002",
        ] {
            assert!(
                found(near_miss).is_empty(),
                "{near_miss}: {:?}",
                found(near_miss)
            );
        }
        let jwt =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        one(&format!("jwt={jwt}&x=1"), Jwt, jwt);
        one(&format!("id_token={jwt}&x=1"), SecretAssignment, jwt);
        one(&format!("got {jwt}."), Jwt, jwt);
        one(
            "curl -H 'Bearer abc123def456ghi' x",
            AuthHeader,
            "abc123def456ghi",
        );
        one(
            "basic dXNlcjpwYXNzd29yZA==",
            AuthHeader,
            "dXNlcjpwYXNzd29yZA==",
        );
        let pem =
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\nabc\n-----END RSA PRIVATE KEY-----";
        one(&format!("key:\n{pem}\ntrailer"), PemPrivateKey, pem);
        one(
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1r",
            PemPrivateKey,
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1r",
        );
        one(
            "paid with 4111 1111 1111 1111.",
            CreditCard,
            "4111 1111 1111 1111",
        );
        one("4111-1111-1111-1111", CreditCard, "4111-1111-1111-1111");
        one("amex 3782-822463-10005 ok", CreditCard, "3782-822463-10005");
        one("cc=x 5555555555554444", CreditCard, "5555555555554444");
        one(
            "login with password Hunter2Qa3Secret1 failed",
            SecretAssignment,
            "Hunter2Qa3Secret1",
        );
        // Form fields as Rails and PHP name them, and `password` in other languages.
        one(
            "login[password]=Hunter2xyz&x=1",
            SecretAssignment,
            "Hunter2xyz",
        );
        one("password[]=Hunter2xyz", SecretAssignment, "Hunter2xyz");
        one(
            "sshpass -p Hunter2xyz ssh root@h",
            CliCredentials,
            "Hunter2xyz",
        );
        one(
            "docker login -u bob -p Hunter2xyz registry.example.com",
            CliCredentials,
            "Hunter2xyz",
        );
        one("Passwort: Geheim2024x", SecretAssignment, "Geheim2024x");
        one("mot_de_passe=Geheim2024x", SecretAssignment, "Geheim2024x");
        one("ssn 123-45-6789 on file", UsSsn, "123-45-6789");
        one("SSN: 123 45 6789, verified", UsSsn, "123 45 6789");
        one("ssn 123.45.6789.", UsSsn, "123.45.6789");
        one(
            "card 4111.1111.1111.1111 ok",
            CreditCard,
            "4111.1111.1111.1111",
        );
        one(
            "mail bob.smith+x@example.co.uk today",
            Email,
            "bob.smith+x@example.co.uk",
        );
        one(
            "https://x.example/cb?code=1&access_token=abcDEF123&state=9",
            SecretAssignment,
            "abcDEF123",
        );
        one(
            r#"{"user":"a","password":"hunter2"}"#,
            SecretAssignment,
            "hunter2",
        );
        one(r#"{"password": "hunt"#, SecretAssignment, "hunt");
        one(
            r#"{\"client_secret\": \"s3cr3t\"}"#,
            SecretAssignment,
            "s3cr3t",
        );
        one(
            "Set-Cookie: sid=abc123; Path=/",
            SecretAssignment,
            "sid=abc123",
        );
        one(
            "hook url postgres://app_user:Hunter2Secret!@db.example.com:5432/prod",
            UrlCredentials,
            "Hunter2Secret!",
        );
        one(
            "https://deploy:v1.2b3c4d*@github.com/org/repo.git",
            UrlCredentials,
            "v1.2b3c4d*",
        );
        one(
            "mongodb+srv://svc:p%40ss:w0rd!@cluster0.example.net/db",
            UrlCredentials,
            "p%40ss:w0rd!",
        );
        one(
            "https://bucket.s3.amazonaws.com/k?X-Amz-Credential=x&X-Amz-Signature=3f1c0e0a9b8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b&x=1",
            UrlSignature,
            "3f1c0e0a9b8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b",
        );
        // An Azure Functions key (it was listed in clear with the destinations).
        one(
            "https://alerts-fn.azurewebsites.net/api/hook?code=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA==&x=1",
            UrlSignature,
            "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA==",
        );
        one(
            "post https://events.pagerduty.com/integration/0123456789abcdef0123456789abcdef/enqueue",
            WebhookUrl,
            "0123456789abcdef0123456789abcdef",
        );
        one(
            "https://acct.blob.core.windows.net/c/f.csv?sv=2022-11-02&sp=r&sig=Zx9%2BqAbCdEfGhIjKlMnOpQrStUv%3D",
            UrlSignature,
            "Zx9%2BqAbCdEfGhIjKlMnOpQrStUv%3D",
        );
        one(
            "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=Zx9aBcD+eFgH/iJkL==;EndpointSuffix=core.windows.net",
            AzureConnectionKey,
            "Zx9aBcD+eFgH/iJkL==",
        );
        one(
            "Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=Zx9aBcDeFgHiJk=",
            AzureConnectionKey,
            "Zx9aBcDeFgHiJk=",
        );
        one(
            "curl -s -u deploy:Hunter2Secret https://ci.example.com/api",
            CliCredentials,
            "Hunter2Secret",
        );
        one(
            "aws configure set x --token 'tok9Zq2xYz' --profile ci",
            CliCredentials,
            "tok9Zq2xYz",
        );
        one(
            "mysqldump -h db.internal -u root -pS3cretPw prod",
            CliCredentials,
            "S3cretPw",
        );
        let alnum = |n: usize| "aB3dE6gH9j".repeat(n / 10 + 1)[..n].to_string();
        let hex = |n: usize| "0123456789abcdef".repeat(n / 16 + 1)[..n].to_string();
        for token in [
            format!("sk_live_{}", alnum(24)),
            format!("rk_test_{}", alnum(24)),
            format!("whsec_{}", alnum(32)),
            format!("glpat-{}", alnum(20)),
            format!("npm_{}", alnum(36)),
            format!("pypi-AgEIcHlwaS5vcmc{}", alnum(60)),
            format!("AIza{}", alnum(35)),
            format!("GOCSPX-{}", alnum(28)),
            format!("ya29.{}", alnum(40)),
            format!("Abc8Q~{}", alnum(34)),
            format!("hvs.{}", alnum(24)),
            format!("{}.atlasv1.{}", alnum(14), alnum(64)),
            format!("dckr_pat_{}", alnum(27)),
            format!("prm_{}", hex(64)),
            "hf_abcdefghijklmnopqrstuvwxyzABCDEFGH".to_string(),
            format!("shpat_{}", hex(32)),
            format!("SG.{}.{}", alnum(22), alnum(43)),
            format!("ATATT3xFfGF0{}", alnum(120)),
            format!("dop_v1_{}", hex(64)),
            format!("sk-ant-api03-{}", alnum(90)),
            format!("sk-proj-{}", alnum(48)),
            format!("PMAK-{}-{}", hex(24), hex(34)),
            "NRAK-ABCDEFGHIJKLMNOPQRSTUVWXYZ0".to_string(),
            format!("sntrys_{}", alnum(48)),
            format!("dp.pt.{}", alnum(43)),
            format!("HRKU-{}", alnum(60)),
            format!("glsa_{}_{}", alnum(32), hex(8)),
            format!("glc_{}", alnum(40)),
            format!("pul-{}", hex(40)),
            format!("tskey-api-{}-{}", alnum(8), alnum(24)),
            format!("bkua_{}", hex(40)),
            format!("CCIPAT_{}_{}", alnum(22), hex(40)),
            format!("figd_{}", alnum(40)),
            format!("ntn_{}{}", "12345678901", alnum(35)),
            format!("secret_{}", alnum(43)),
            format!("dapi{}", hex(32)),
            format!("key-{}", hex(32)),
            format!("sq0atp-{}", alnum(22)),
            format!("lin_api_{}", alnum(40)),
            format!("AGE-SECRET-KEY-1{}", &"QZ7".repeat(20)[..58]),
            format!("{}-us21", hex(32)),
            format!("AKCp{}", alnum(69)),
            format!("cmVmdGtuOjAxOj{}", alnum(50)),
            format!("dt0c01.{}.{}", alnum(24), alnum(64)),
            format!("ATBB{}", alnum(32)),
            format!("sbp_{}", hex(40)),
            format!("sb_secret_{}", alnum(32)),
            format!("fo1_{}", alnum(43)),
            format!("fm2_{}", alnum(120)),
            format!("rnd_{}", alnum(32)),
            format!("nfp_{}", alnum(36)),
            format!("123456789:AA{}", alnum(33)),
            format!("SK{}", hex(32)),
            format!("sk-{}T3BlbkFJ{}", alnum(20), alnum(20)),
            format!("IQoJb3JpZ2luX2VjEHYaCXVzLWVhc3QtMSJHMEUCIQD{}", alnum(120)),
            format!("FwoGZXIvYXdzEBYaDH{}==", alnum(100)),
            format!("1//0g{}", alnum(60)),
            format!("access_token$production${}${}", "abcd1234efgh5678", hex(32)),
            format!("EAACEdEose0cBA{}", alnum(40)),
            format!("EAAM{}", alnum(120)),
            format!("sl.{}", alnum(140)),
            format!("sl.u.{}", alnum(140)),
            format!("pat{}.{}", alnum(14), hex(64)),
            format!("r8_{}", alnum(37)),
            format!("gsk_{}", alnum(52)),
            format!("xai-{}", alnum(80)),
            format!("pplx-{}", alnum(48)),
            format!(
                "sk.eyJ1IjoiYWNtZSIsImEiOiJja2FiY2RlZmcwMTIzNDU2Nzg5In0.{}",
                alnum(22)
            ),
            format!("00D5g000004ABCD!{}", alnum(96)),
            format!("00D5g000004ABCDEAU!{}.{}", alnum(40), alnum(60)),
            "api-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".to_string(),
            "sdk-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".to_string(),
            "pat-na1-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".to_string(),
            "pk_12345678_ABCDEFGHIJKLMNOPQRSTUVWXYZ012345".to_string(),
            format!("pscale_tkn_{}", alnum(43)),
            format!("squ_{}", hex(40)),
            format!("rubygems_{}", hex(48)),
            format!("dG9rOj{}=", alnum(56)),
            format!("cio{}", alnum(32)),
            format!("glcbt-{}", alnum(24)),
            format!("glsoat-{}", alnum(24)),
            format!("GR1348941{}", alnum(20)),
            format!("CFPAT-{}", alnum(43)),
            format!("NRII-{}", alnum(32)),
            format!("tfp_{}", alnum(59)),
            format!("pcsk_{}", alnum(60)),
            format!("lsv2_pt_{}_{}", hex(32), hex(10)),
        ] {
            one(&format!("key {token} rotated"), VendorToken, &token);
        }
    }

    #[test]
    fn ordinary_values_are_not_secrets() {
        for clean in [
            "00000000-0000-0000-0000-000000000000",
            "550e8400-e29b-41d4-a716-446655440000",
            "12345678-1234-1234-1234-123456789012",
            "198.51.100.7",
            "2001:db8::1",
            "2024-01-15T10:23:45.123Z",
            "2024-01-15 10:23:45",
            "user.session.start",
            "app.oauth2.as.authorize.code",
            "system.api_token.create",
            "user.authentication.auth_via_mfa",
            "personal_access_token.request_created",
            "token_type=Bearer",
            "Bearer",
            "Basic authentication enabled",
            "Bearer token revoked",
            "1234567812345678",
            "4111111111111112",
            "1700000000000",
            "1700000000000123",
            "Asia/Tokyo",
            "ASIA region",
            "call 555-123-4567",
            "order 900-12-3456",
            "alice@example.com",
            "Mozilla/5.0 (X11; Fedora; Linux x86_64; rv:78.0) Gecko/20100101 Firefox/78.0",
            "00ub0oNGTSWTBKOLGLNR",
            "secrets_passed: EXAMPLE_SECRET",
            "password reset requested",
            "https://api.example.com/v1/x?code=200&country_code=US",
            "error_code=AUTHENTICATION_FAILED_FOR_USER",
            "denied: code=INVALID_CREDENTIALS_LOCKED_OUT",
            // `>` after a name that is no element's start tag; an element about secrets.
            "password>8 characters",
            "x=1 token>0",
            "<PasswordPolicy>strict</PasswordPolicy>",
            r#"<PasswordPolicy minLength="8">strict</PasswordPolicy>"#,
            "<TokenType>Bearer</TokenType>",
            "<PasswordLastSet>2024-01-01</PasswordLastSet>",
            "password must be > 8 characters",
            // Placeholders in prose (regression QA: the character after them was masked).
            "send the API token as `Bearer <token>`",
            "the token is <token>.",
            "set <apiKey>)</apiKey>",
            "<NextToken>",
            "password policy v2 applied",
            "token refresh2 scheduled",
            "api key rotation2024 done",
            "password is expired",
            "Token was revoked by admin",
            "secret is set to default",
            "eyJhbGciOiJIUzI1NiJ9 only a header",
            "https://github.com/acme/api/pull/12",
            "ssh://git@github.com/acme/api.git",
            "git@github.com:acme/api.git",
            "http://[2001:db8::1]:8080/status",
            "https://example.com:8443/login?next=/home",
            "https://example.com/a?sig=short&x=1",
            "msg.received",
            "sk_test_helper",
            "npm_install",
            "prm_config",
            "hf_hub_download",
            "pul-request",
            "signature=valid",
            "sudo -u root systemctl restart nginx",
            "docker login --password-stdin",
            "curl --user-agent Mozilla/5.0 https://x",
            "cli --token-file /etc/token --secret -",
            "mysql -h db -P 3306 -p",
            "secret_santa_2024",
            "api-key-rotation",
            "dapi_version",
            "Accept-Language: en-US,en;q=0.9",
            "deadbeef-us-east-1",
            "meeting 12:30:AA room",
            "https://discord.com/channels/123456789012345678/876543210987654321",
            "https://discord.com/api/webhooks",
            "https://hooks.zapier.com/hooks/standard/1234",
            "https://api.github.com/repos/acme/api/hooks/123456789",
            "https://chat.acme.example/hooks/abcdefghij0123456789klmnopq",
            "rnd_seed",
            "ATBB",
            "dt0c01",
            // Not a Twilio key SID: lower case, glued to a word, one hex digit short or long.
            "sk0123456789abcdef0123456789abcdef",
            "TASK0123456789abcdef0123456789abcdef",
            "SK0123456789abcdef0123456789abcde",
            "SK0123456789abcdef0123456789abcdef0",
            "ask desk SKU risk",
            // Upper-case hex, or decimal digits only: a product code, a counter.
            "SK0123456789ABCDEF0123456789ABCDEF",
            "SKU SK00000000000000000000000000000001 restocked",
            // Words that start or end like the prefixes of newer vendor formats.
            "https://ssl.example.com/path/to/patterns/patch",
            "curl --cacert /etc/ssl.d/ca.pem https://x",
            "EAAS policy applied, EAAC team",
            "sk-1234 T3BlbkFJ",
            "fallback 1//0 path",
            "xai-grok model, pplx-api, r8_model, gsk_helper",
            "record 00D5g000004ABCD updated, 00Dxx0000001gPL!",
            "api-key-rotation api-gateway sdk-version mob-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
            "API-0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0",
            "pat-na1 region, pk_live_publishable, pscale_tkn_, squ_short",
            "precious cioccolato ciofor, cio",
            "glft-config tfp_form pcsk_ lsv2_ CFPAT- NRII-",
            "pk.eyJ1IjoiYWNtZSIsImEiOiJja2FiY2RlZmcwMTIzNDU2Nzg5In0.AbCdEfGhIjKlMnOpQrStUv",
        ] {
            assert!(
                found(clean)
                    .iter()
                    .all(|(k, _)| *k == PatternKind::Email && clean.contains('@')),
                "{clean:?}: {:?}",
                found(clean)
            );
        }
    }

    #[test]
    fn masked_output_is_not_masked_again() {
        assert!(found("password=[REDACTED:secret_assignment]").is_empty());
        assert!(found("token=hmac:0123456789abcdef").is_empty());
        assert!(found("card ****1111").is_empty());
    }
}
