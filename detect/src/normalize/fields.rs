//! Borrowing accessors over raw records ([`RawJson`]) shared by every normalizer.
//!
//! Normalizers run per event, so these look values up in place (no JSON pointer parsing, no
//! intermediate documents) and only allocate when a value is copied into the [`Ecs`] view.

use chrono::{DateTime, Utc};
use perimeter_model::raw_prelude::*;
use perimeter_model::{parse_timestamp, Ecs, NormalizeError, RawJson};

/// A raw record known to be a JSON object (look keys up with `get`).
pub(crate) type Obj = RawJson;

/// The record as an object, or [`NormalizeError::NotAnObject`].
pub(crate) fn object(raw: &RawJson) -> Result<&Obj, NormalizeError> {
    if raw.is_object() {
        Ok(raw)
    } else {
        Err(NormalizeError::NotAnObject)
    }
}

/// A record's top-level keys, read once. A normalizer looks up a dozen top-level fields of each
/// record, and a lookup in the parsed DOM decodes every key it passes on the way (about 40
/// instructions a key, most of normalizing); here a lookup compares lengths and bytes in a
/// slice. Records reach normalizers with their repeated keys resolved to the last value
/// ([`perimeter_model::resolve_repeated_keys`]), so each key is here once.
pub(crate) struct Record<'a> {
    pairs: Vec<(&'a str, &'a RawJson)>,
}

impl<'a> Record<'a> {
    /// The keys of `raw` (none when it is not an object).
    pub(crate) fn new(raw: &'a RawJson) -> Record<'a> {
        let mut pairs = Vec::new();
        if let Some(o) = raw.as_object() {
            pairs.reserve_exact(o.len());
            pairs.extend(o.iter());
        }
        Record { pairs }
    }

    /// The value of a top-level key.
    pub(crate) fn get(&self, key: &str) -> Option<&'a RawJson> {
        self.pairs
            .iter()
            .find(|(k, _)| k.len() == key.len() && *k == key)
            .map(|(_, v)| *v)
    }
}

/// Where a path's first key is looked up: a record read once ([`Record`]) or any value.
pub(crate) trait Lookup<'a>: Copy {
    fn key(self, key: &str) -> Option<&'a RawJson>;
}

impl<'a> Lookup<'a> for &'a RawJson {
    fn key(self, key: &str) -> Option<&'a RawJson> {
        self.get(key)
    }
}

impl<'a> Lookup<'a> for &&'a RawJson {
    fn key(self, key: &str) -> Option<&'a RawJson> {
        (*self).get(key)
    }
}

impl<'a> Lookup<'a> for &Record<'a> {
    fn key(self, key: &str) -> Option<&'a RawJson> {
        self.get(key)
    }
}

/// Walk `path` (object keys, at least one) from `v`.
pub(crate) fn at<'a>(v: impl Lookup<'a>, path: &[&str]) -> Option<&'a RawJson> {
    let (first, rest) = path.split_first()?;
    let mut cur = v.key(first)?;
    for key in rest {
        cur = cur.get(*key)?;
    }
    Some(cur)
}

/// Empty or only whitespace. Settled on the first byte for most values (a printable ASCII
/// character that is not a space), without `trim`'s Unicode checks.
pub(crate) fn is_blank(s: &str) -> bool {
    match s.as_bytes().first() {
        None => true,
        Some(&b) if b > b' ' && b < 0x7f => false,
        Some(_) => s.trim().is_empty(),
    }
}

/// A non-empty string at `path`; other types and empty strings count as absent.
pub(crate) fn str_at<'a>(v: impl Lookup<'a>, path: &[&str]) -> Option<&'a str> {
    at(v, path)?.as_str().filter(|s| !is_blank(s))
}

/// A string or number at `path`, as an owned string (ids are numbers in some vendors' APIs).
pub(crate) fn id_at<'a>(v: impl Lookup<'a>, path: &[&str]) -> Option<String> {
    scalar_string(at(v, path)?)
}

/// A string or number value as an owned string; empty strings, null, objects, arrays are `None`.
pub(crate) fn scalar_string(v: &RawJson) -> Option<String> {
    match v.as_ref() {
        ValueRef::String(s) if !is_blank(s) => Some(s.to_owned()),
        ValueRef::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A required string field: [`NormalizeError::MissingField`] when absent or null,
/// [`NormalizeError::WrongType`] when present with another type.
pub(crate) fn required_str<'a>(
    v: impl Lookup<'a>,
    path: &[&str],
) -> Result<&'a str, NormalizeError> {
    match at(v, path).map(|v| v.as_ref()) {
        None | Some(ValueRef::Null) => Err(NormalizeError::MissingField(path.join("."))),
        Some(ValueRef::String(s)) if !s.is_empty() => Ok(s),
        Some(ValueRef::String(_)) => Err(NormalizeError::MissingField(path.join("."))),
        Some(_) => Err(NormalizeError::WrongType {
            field: path.join("."),
            expected: "string",
        }),
    }
}

/// A required timestamp (any format [`parse_timestamp`] accepts).
pub(crate) fn required_time<'a>(
    v: impl Lookup<'a>,
    path: &[&str],
) -> Result<DateTime<Utc>, NormalizeError> {
    match at(v, path) {
        Some(t) if !t.is_null() => parse_time(t, path),
        _ => Err(NormalizeError::MissingField(path.join("."))),
    }
}

/// Parse a present timestamp value, naming the field on failure.
pub(crate) fn parse_time(t: &RawJson, path: &[&str]) -> Result<DateTime<Utc>, NormalizeError> {
    parse_timestamp(t).map_err(|e| NormalizeError::BadTimestamp {
        field: path.join("."),
        reason: e.to_string(),
    })
}

/// An optional array at `path`; a present non-array is a type error.
pub(crate) fn opt_array<'a>(
    v: impl Lookup<'a>,
    path: &[&str],
) -> Result<Option<&'a [RawJson]>, NormalizeError> {
    match at(v, path) {
        None => Ok(None),
        Some(x) if x.is_null() => Ok(None),
        Some(x) => match x.as_array() {
            Some(a) => Ok(Some(a.as_slice())),
            None => Err(NormalizeError::WrongType {
                field: path.join("."),
                expected: "array",
            }),
        },
    }
}

/// Owned copy of an optional borrowed string.
pub(crate) fn owned(s: Option<&str>) -> Option<String> {
    s.map(str::to_owned)
}

/// `["a", "b"]` as the `Vec<String>` the ECS struct stores.
pub(crate) fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Set ECS category and type.
pub(crate) fn classify(ecs: &mut Ecs, category: &[&str], kind: &[&str]) {
    ecs.event_category = strings(category);
    ecs.event_type = strings(kind);
}

/// A vendor IP field as an ECS `source.ip`: the address only (ports and IPv6 brackets stripped),
/// and `None` for values that are not addresses (`"Unknown IP"`, `"iam.amazonaws.com"`).
pub(crate) fn clean_ip(s: &str) -> Option<String> {
    let s = s.trim();
    // `0.0.0.0`, `::` and `255.255.255.255` are what vendors write when they have no client
    // address (GitHub's `actor_ip`, Zoom, Salesforce Marketing Cloud): no address at all.
    let placeholder = |ip: &std::net::IpAddr| {
        ip.is_unspecified() || *ip == std::net::IpAddr::V4(std::net::Ipv4Addr::BROADCAST)
    };
    // In one written form (`2001:db8:0:0:0:0:0:66` is `2001:db8::66`, `::ffff:198.51.100.7`
    // is `198.51.100.7`): one address is one entity for the detectors and one search term.
    let canonical = |ip: std::net::IpAddr| {
        let ip = ip.to_canonical();
        (!placeholder(&ip)).then(|| ip.to_string())
    };
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        // An IPv4 address parses only from its one written form: kept as it is, not formatted
        // again (most addresses, and formatting is a good part of normalizing one).
        return match ip {
            std::net::IpAddr::V4(_) if placeholder(&ip) => None,
            std::net::IpAddr::V4(_) => Some(s.to_owned()),
            std::net::IpAddr::V6(_) => canonical(ip),
        };
    }
    // `[2001:db8::1]:443` and `203.0.113.5:51234` (M365 ClientIP)
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        return rest[..end].parse().ok().and_then(canonical);
    }
    let (host, port) = s.rsplit_once(':')?;
    if port.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
            return canonical(ip.into());
        }
    }
    None
}

/// Whether `s` looks like an email address (used to split vendor logins into name/email).
pub(crate) fn is_email(s: &str) -> bool {
    match s.find('@') {
        Some(i) => i > 0 && s[i + 1..].contains('.'),
        None => false,
    }
}

/// Fill `user.name` and, when the login is an address, `user.email` from one vendor login.
pub(crate) fn set_login(
    name: &mut Option<String>,
    email: &mut Option<String>,
    login: Option<&str>,
) {
    if let Some(login) = login {
        if name.is_none() {
            *name = Some(login.to_owned());
        }
        if email.is_none() && is_email(login) {
            *email = Some(login.to_owned());
        }
    }
}

/// ISO 3166-1 alpha-2 code for a vendor country value: two-letter codes pass through
/// (upper-cased), known English names are looked up, anything else is `None`.
pub(crate) fn country_iso(value: &str) -> Option<String> {
    let v = value.trim();
    if v.len() == 2 && v.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Some(v.to_ascii_uppercase());
    }
    COUNTRIES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(v))
        .map(|(_, code)| (*code).to_owned())
}

/// English country names as vendors spell them (Okta, 1Password, Duo, Atlassian) -> ISO code.
const COUNTRIES: &[(&str, &str)] = &[
    ("United States", "US"),
    ("United States of America", "US"),
    ("USA", "US"),
    ("Canada", "CA"),
    ("Mexico", "MX"),
    ("Brazil", "BR"),
    ("Argentina", "AR"),
    ("Chile", "CL"),
    ("Colombia", "CO"),
    ("Peru", "PE"),
    ("Venezuela", "VE"),
    ("United Kingdom", "GB"),
    ("Great Britain", "GB"),
    ("England", "GB"),
    ("Ireland", "IE"),
    ("France", "FR"),
    ("Germany", "DE"),
    ("Netherlands", "NL"),
    ("The Netherlands", "NL"),
    ("Belgium", "BE"),
    ("Luxembourg", "LU"),
    ("Switzerland", "CH"),
    ("Austria", "AT"),
    ("Italy", "IT"),
    ("Spain", "ES"),
    ("Portugal", "PT"),
    ("Denmark", "DK"),
    ("Norway", "NO"),
    ("Sweden", "SE"),
    ("Finland", "FI"),
    ("Iceland", "IS"),
    ("Poland", "PL"),
    ("Czechia", "CZ"),
    ("Czech Republic", "CZ"),
    ("Slovakia", "SK"),
    ("Hungary", "HU"),
    ("Romania", "RO"),
    ("Bulgaria", "BG"),
    ("Greece", "GR"),
    ("Turkey", "TR"),
    ("Türkiye", "TR"),
    ("Ukraine", "UA"),
    ("Belarus", "BY"),
    ("Russia", "RU"),
    ("Russian Federation", "RU"),
    ("Estonia", "EE"),
    ("Latvia", "LV"),
    ("Lithuania", "LT"),
    ("Serbia", "RS"),
    ("Croatia", "HR"),
    ("Slovenia", "SI"),
    ("Israel", "IL"),
    ("United Arab Emirates", "AE"),
    ("Saudi Arabia", "SA"),
    ("Qatar", "QA"),
    ("Iran", "IR"),
    ("Iraq", "IQ"),
    ("Egypt", "EG"),
    ("Morocco", "MA"),
    ("Nigeria", "NG"),
    ("Kenya", "KE"),
    ("South Africa", "ZA"),
    ("India", "IN"),
    ("Pakistan", "PK"),
    ("Bangladesh", "BD"),
    ("China", "CN"),
    ("Hong Kong", "HK"),
    ("Taiwan", "TW"),
    ("Japan", "JP"),
    ("South Korea", "KR"),
    ("Korea, Republic of", "KR"),
    ("Republic of Korea", "KR"),
    ("North Korea", "KP"),
    ("Vietnam", "VN"),
    ("Viet Nam", "VN"),
    ("Thailand", "TH"),
    ("Malaysia", "MY"),
    ("Singapore", "SG"),
    ("Indonesia", "ID"),
    ("Philippines", "PH"),
    ("Australia", "AU"),
    ("New Zealand", "NZ"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use sonic_rs::json;

    #[test]
    fn country_names_and_codes() {
        assert_eq!(country_iso("United States").as_deref(), Some("US"));
        assert_eq!(country_iso("france").as_deref(), Some("FR"));
        assert_eq!(country_iso("us").as_deref(), Some("US"));
        assert_eq!(country_iso("country"), None);
        assert_eq!(country_iso(""), None);
    }

    #[test]
    fn ips_are_cleaned_or_dropped() {
        assert_eq!(clean_ip("203.0.113.5").as_deref(), Some("203.0.113.5"));
        assert_eq!(
            clean_ip("203.0.113.5:51234").as_deref(),
            Some("203.0.113.5")
        );
        assert_eq!(
            clean_ip("[2001:db8::1]:443").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(clean_ip("2001:db8::1").as_deref(), Some("2001:db8::1"));
        // One written form per address.
        for same in [
            "2001:db8:0:0:0:0:0:66",
            "2001:DB8::66",
            "[2001:db8:0::66]:443",
        ] {
            assert_eq!(clean_ip(same).as_deref(), Some("2001:db8::66"), "{same}");
        }
        assert_eq!(
            clean_ip("::ffff:198.51.100.7").as_deref(),
            Some("198.51.100.7")
        );
        assert_eq!(clean_ip("iam.amazonaws.com"), None);
        assert_eq!(clean_ip("Unknown IP"), None);
        assert_eq!(clean_ip("000.000.00.000"), None);
    }

    #[test]
    fn required_fields_report_name_and_type() {
        let v = json!({"a": {"b": 3}, "s": ""});
        assert_eq!(
            required_str(&v, &["a", "b"]),
            Err(NormalizeError::WrongType {
                field: "a.b".into(),
                expected: "string"
            })
        );
        assert_eq!(
            required_str(&v, &["x"]),
            Err(NormalizeError::MissingField("x".into()))
        );
        assert_eq!(
            required_str(&v, &["s"]),
            Err(NormalizeError::MissingField("s".into()))
        );
        assert!(matches!(
            required_time(&json!({"t": "soon"}), &["t"]),
            Err(NormalizeError::BadTimestamp { .. })
        ));
    }
}
