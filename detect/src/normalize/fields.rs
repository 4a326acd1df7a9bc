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
        // `UK` is the one common two-letter name that is no ISO code.
        if v.eq_ignore_ascii_case("uk") {
            return Some("GB".to_owned());
        }
        return Some(v.to_ascii_uppercase());
    }
    // ISO's own forms end in ` (the)` (`Bahamas (the)`).
    let v = v.strip_suffix(" (the)").unwrap_or(v);
    // Looked up by the name in lower case (ASCII), in a buffer on the stack: the table holds
    // every ISO name (QA: with only the common ones, a login from Kazakhstan lost its country),
    // and a scan of it ran for every event that names a country.
    static BY_NAME: std::sync::LazyLock<std::collections::HashMap<Vec<u8>, &'static str>> =
        std::sync::LazyLock::new(|| {
            COUNTRIES
                .iter()
                .map(|(name, code)| (name.to_ascii_lowercase().into_bytes(), *code))
                .collect()
        });
    let mut buf = [0u8; 64];
    let lower = buf.get_mut(..v.len())?;
    lower.copy_from_slice(v.as_bytes());
    lower.make_ascii_lowercase();
    BY_NAME.get(&lower[..]).map(|code| (*code).to_owned())
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
    // Spellings vendors use beside ISO's: without accents, short forms, older names.
    ("Democratic Republic of the Congo", "CD"),
    ("DR Congo", "CD"),
    ("DRC", "CD"),
    ("Congo Republic", "CG"),
    ("Republic of the Congo", "CG"),
    ("The Gambia", "GM"),
    ("The Bahamas", "BS"),
    ("The Netherlands", "NL"),
    ("Macau", "MO"),
    ("UAE", "AE"),
    ("Great Britain", "GB"),
    ("Curacao", "CW"),
    ("Reunion", "RE"),
    ("Cote d'Ivoire", "CI"),
    ("Turkiye", "TR"),
    ("Aland Islands", "AX"),
    ("Sao Tome and Principe", "ST"),
    ("Saint Barthelemy", "BL"),
    // The other ISO 3166-1 names (short, common and official) and a few older spellings.
    ("Aruba", "AW"),
    ("Afghanistan", "AF"),
    ("Islamic Republic of Afghanistan", "AF"),
    ("Angola", "AO"),
    ("Republic of Angola", "AO"),
    ("Anguilla", "AI"),
    ("Åland Islands", "AX"),
    ("Albania", "AL"),
    ("Republic of Albania", "AL"),
    ("Andorra", "AD"),
    ("Principality of Andorra", "AD"),
    ("Argentine Republic", "AR"),
    ("Armenia", "AM"),
    ("Republic of Armenia", "AM"),
    ("American Samoa", "AS"),
    ("Antarctica", "AQ"),
    ("French Southern Territories", "TF"),
    ("Antigua and Barbuda", "AG"),
    ("Republic of Austria", "AT"),
    ("Azerbaijan", "AZ"),
    ("Republic of Azerbaijan", "AZ"),
    ("Burundi", "BI"),
    ("Republic of Burundi", "BI"),
    ("Kingdom of Belgium", "BE"),
    ("Benin", "BJ"),
    ("Republic of Benin", "BJ"),
    ("Bonaire, Sint Eustatius and Saba", "BQ"),
    ("Burkina Faso", "BF"),
    ("People's Republic of Bangladesh", "BD"),
    ("Republic of Bulgaria", "BG"),
    ("Bahrain", "BH"),
    ("Kingdom of Bahrain", "BH"),
    ("Bahamas", "BS"),
    ("Commonwealth of the Bahamas", "BS"),
    ("Bosnia and Herzegovina", "BA"),
    ("Republic of Bosnia and Herzegovina", "BA"),
    ("Saint Barthélemy", "BL"),
    ("Republic of Belarus", "BY"),
    ("Belize", "BZ"),
    ("Bermuda", "BM"),
    ("Bolivia, Plurinational State of", "BO"),
    ("Bolivia", "BO"),
    ("Plurinational State of Bolivia", "BO"),
    ("Federative Republic of Brazil", "BR"),
    ("Barbados", "BB"),
    ("Brunei Darussalam", "BN"),
    ("Bhutan", "BT"),
    ("Kingdom of Bhutan", "BT"),
    ("Bouvet Island", "BV"),
    ("Botswana", "BW"),
    ("Republic of Botswana", "BW"),
    ("Central African Republic", "CF"),
    ("Cocos (Keeling) Islands", "CC"),
    ("Swiss Confederation", "CH"),
    ("Republic of Chile", "CL"),
    ("People's Republic of China", "CN"),
    ("Côte d'Ivoire", "CI"),
    ("Republic of Côte d'Ivoire", "CI"),
    ("Cameroon", "CM"),
    ("Republic of Cameroon", "CM"),
    ("Congo, The Democratic Republic of the", "CD"),
    ("Congo", "CG"),
    ("Republic of the Congo", "CG"),
    ("Cook Islands", "CK"),
    ("Republic of Colombia", "CO"),
    ("Comoros", "KM"),
    ("Union of the Comoros", "KM"),
    ("Cabo Verde", "CV"),
    ("Republic of Cabo Verde", "CV"),
    ("Costa Rica", "CR"),
    ("Republic of Costa Rica", "CR"),
    ("Cuba", "CU"),
    ("Republic of Cuba", "CU"),
    ("Curaçao", "CW"),
    ("Christmas Island", "CX"),
    ("Cayman Islands", "KY"),
    ("Cyprus", "CY"),
    ("Republic of Cyprus", "CY"),
    ("Federal Republic of Germany", "DE"),
    ("Djibouti", "DJ"),
    ("Republic of Djibouti", "DJ"),
    ("Dominica", "DM"),
    ("Commonwealth of Dominica", "DM"),
    ("Kingdom of Denmark", "DK"),
    ("Dominican Republic", "DO"),
    ("Algeria", "DZ"),
    ("People's Democratic Republic of Algeria", "DZ"),
    ("Ecuador", "EC"),
    ("Republic of Ecuador", "EC"),
    ("Arab Republic of Egypt", "EG"),
    ("Eritrea", "ER"),
    ("the State of Eritrea", "ER"),
    ("Western Sahara", "EH"),
    ("Kingdom of Spain", "ES"),
    ("Republic of Estonia", "EE"),
    ("Ethiopia", "ET"),
    ("Federal Democratic Republic of Ethiopia", "ET"),
    ("Republic of Finland", "FI"),
    ("Fiji", "FJ"),
    ("Republic of Fiji", "FJ"),
    ("Falkland Islands (Malvinas)", "FK"),
    ("French Republic", "FR"),
    ("Faroe Islands", "FO"),
    ("Micronesia, Federated States of", "FM"),
    ("Federated States of Micronesia", "FM"),
    ("Gabon", "GA"),
    ("Gabonese Republic", "GA"),
    ("United Kingdom of Great Britain and Northern Ireland", "GB"),
    ("Georgia", "GE"),
    ("Guernsey", "GG"),
    ("Ghana", "GH"),
    ("Republic of Ghana", "GH"),
    ("Gibraltar", "GI"),
    ("Guinea", "GN"),
    ("Republic of Guinea", "GN"),
    ("Guadeloupe", "GP"),
    ("Gambia", "GM"),
    ("Republic of the Gambia", "GM"),
    ("Guinea-Bissau", "GW"),
    ("Republic of Guinea-Bissau", "GW"),
    ("Equatorial Guinea", "GQ"),
    ("Republic of Equatorial Guinea", "GQ"),
    ("Hellenic Republic", "GR"),
    ("Grenada", "GD"),
    ("Greenland", "GL"),
    ("Guatemala", "GT"),
    ("Republic of Guatemala", "GT"),
    ("French Guiana", "GF"),
    ("Guam", "GU"),
    ("Guyana", "GY"),
    ("Republic of Guyana", "GY"),
    ("Hong Kong Special Administrative Region of China", "HK"),
    ("Heard Island and McDonald Islands", "HM"),
    ("Honduras", "HN"),
    ("Republic of Honduras", "HN"),
    ("Republic of Croatia", "HR"),
    ("Haiti", "HT"),
    ("Republic of Haiti", "HT"),
    ("Republic of Indonesia", "ID"),
    ("Isle of Man", "IM"),
    ("Republic of India", "IN"),
    ("British Indian Ocean Territory", "IO"),
    ("Iran, Islamic Republic of", "IR"),
    ("Islamic Republic of Iran", "IR"),
    ("Republic of Iraq", "IQ"),
    ("Republic of Iceland", "IS"),
    ("State of Israel", "IL"),
    ("Italian Republic", "IT"),
    ("Jamaica", "JM"),
    ("Jersey", "JE"),
    ("Jordan", "JO"),
    ("Hashemite Kingdom of Jordan", "JO"),
    ("Kazakhstan", "KZ"),
    ("Republic of Kazakhstan", "KZ"),
    ("Republic of Kenya", "KE"),
    ("Kyrgyzstan", "KG"),
    ("Kyrgyz Republic", "KG"),
    ("Cambodia", "KH"),
    ("Kingdom of Cambodia", "KH"),
    ("Kiribati", "KI"),
    ("Republic of Kiribati", "KI"),
    ("Saint Kitts and Nevis", "KN"),
    ("Kuwait", "KW"),
    ("State of Kuwait", "KW"),
    ("Lao People's Democratic Republic", "LA"),
    ("Laos", "LA"),
    ("Lebanon", "LB"),
    ("Lebanese Republic", "LB"),
    ("Liberia", "LR"),
    ("Republic of Liberia", "LR"),
    ("Libya", "LY"),
    ("Saint Lucia", "LC"),
    ("Liechtenstein", "LI"),
    ("Principality of Liechtenstein", "LI"),
    ("Sri Lanka", "LK"),
    ("Democratic Socialist Republic of Sri Lanka", "LK"),
    ("Lesotho", "LS"),
    ("Kingdom of Lesotho", "LS"),
    ("Republic of Lithuania", "LT"),
    ("Grand Duchy of Luxembourg", "LU"),
    ("Republic of Latvia", "LV"),
    ("Macao", "MO"),
    ("Macao Special Administrative Region of China", "MO"),
    ("Saint Martin (French part)", "MF"),
    ("Kingdom of Morocco", "MA"),
    ("Monaco", "MC"),
    ("Principality of Monaco", "MC"),
    ("Moldova, Republic of", "MD"),
    ("Moldova", "MD"),
    ("Republic of Moldova", "MD"),
    ("Madagascar", "MG"),
    ("Republic of Madagascar", "MG"),
    ("Maldives", "MV"),
    ("Republic of Maldives", "MV"),
    ("United Mexican States", "MX"),
    ("Marshall Islands", "MH"),
    ("Republic of the Marshall Islands", "MH"),
    ("North Macedonia", "MK"),
    ("Republic of North Macedonia", "MK"),
    ("Mali", "ML"),
    ("Republic of Mali", "ML"),
    ("Malta", "MT"),
    ("Republic of Malta", "MT"),
    ("Myanmar", "MM"),
    ("Republic of Myanmar", "MM"),
    ("Montenegro", "ME"),
    ("Mongolia", "MN"),
    ("Northern Mariana Islands", "MP"),
    ("Commonwealth of the Northern Mariana Islands", "MP"),
    ("Mozambique", "MZ"),
    ("Republic of Mozambique", "MZ"),
    ("Mauritania", "MR"),
    ("Islamic Republic of Mauritania", "MR"),
    ("Montserrat", "MS"),
    ("Martinique", "MQ"),
    ("Mauritius", "MU"),
    ("Republic of Mauritius", "MU"),
    ("Malawi", "MW"),
    ("Republic of Malawi", "MW"),
    ("Mayotte", "YT"),
    ("Namibia", "NA"),
    ("Republic of Namibia", "NA"),
    ("New Caledonia", "NC"),
    ("Niger", "NE"),
    ("Republic of the Niger", "NE"),
    ("Norfolk Island", "NF"),
    ("Federal Republic of Nigeria", "NG"),
    ("Nicaragua", "NI"),
    ("Republic of Nicaragua", "NI"),
    ("Niue", "NU"),
    ("Kingdom of the Netherlands", "NL"),
    ("Kingdom of Norway", "NO"),
    ("Nepal", "NP"),
    ("Federal Democratic Republic of Nepal", "NP"),
    ("Nauru", "NR"),
    ("Republic of Nauru", "NR"),
    ("Oman", "OM"),
    ("Sultanate of Oman", "OM"),
    ("Islamic Republic of Pakistan", "PK"),
    ("Panama", "PA"),
    ("Republic of Panama", "PA"),
    ("Pitcairn", "PN"),
    ("Republic of Peru", "PE"),
    ("Republic of the Philippines", "PH"),
    ("Palau", "PW"),
    ("Republic of Palau", "PW"),
    ("Papua New Guinea", "PG"),
    ("Independent State of Papua New Guinea", "PG"),
    ("Republic of Poland", "PL"),
    ("Puerto Rico", "PR"),
    ("Korea, Democratic People's Republic of", "KP"),
    ("Democratic People's Republic of Korea", "KP"),
    ("Portuguese Republic", "PT"),
    ("Paraguay", "PY"),
    ("Republic of Paraguay", "PY"),
    ("Palestine, State of", "PS"),
    ("the State of Palestine", "PS"),
    ("French Polynesia", "PF"),
    ("State of Qatar", "QA"),
    ("Réunion", "RE"),
    ("Rwanda", "RW"),
    ("Rwandese Republic", "RW"),
    ("Kingdom of Saudi Arabia", "SA"),
    ("Sudan", "SD"),
    ("Republic of the Sudan", "SD"),
    ("Senegal", "SN"),
    ("Republic of Senegal", "SN"),
    ("Republic of Singapore", "SG"),
    ("South Georgia and the South Sandwich Islands", "GS"),
    ("Saint Helena, Ascension and Tristan da Cunha", "SH"),
    ("Svalbard and Jan Mayen", "SJ"),
    ("Solomon Islands", "SB"),
    ("Sierra Leone", "SL"),
    ("Republic of Sierra Leone", "SL"),
    ("El Salvador", "SV"),
    ("Republic of El Salvador", "SV"),
    ("San Marino", "SM"),
    ("Republic of San Marino", "SM"),
    ("Somalia", "SO"),
    ("Federal Republic of Somalia", "SO"),
    ("Saint Pierre and Miquelon", "PM"),
    ("Republic of Serbia", "RS"),
    ("South Sudan", "SS"),
    ("Republic of South Sudan", "SS"),
    ("Sao Tome and Principe", "ST"),
    ("Democratic Republic of Sao Tome and Principe", "ST"),
    ("Suriname", "SR"),
    ("Republic of Suriname", "SR"),
    ("Slovak Republic", "SK"),
    ("Republic of Slovenia", "SI"),
    ("Kingdom of Sweden", "SE"),
    ("Eswatini", "SZ"),
    ("Kingdom of Eswatini", "SZ"),
    ("Sint Maarten (Dutch part)", "SX"),
    ("Seychelles", "SC"),
    ("Republic of Seychelles", "SC"),
    ("Syrian Arab Republic", "SY"),
    ("Syria", "SY"),
    ("Turks and Caicos Islands", "TC"),
    ("Chad", "TD"),
    ("Republic of Chad", "TD"),
    ("Togo", "TG"),
    ("Togolese Republic", "TG"),
    ("Kingdom of Thailand", "TH"),
    ("Tajikistan", "TJ"),
    ("Republic of Tajikistan", "TJ"),
    ("Tokelau", "TK"),
    ("Turkmenistan", "TM"),
    ("Timor-Leste", "TL"),
    ("Democratic Republic of Timor-Leste", "TL"),
    ("Tonga", "TO"),
    ("Kingdom of Tonga", "TO"),
    ("Trinidad and Tobago", "TT"),
    ("Republic of Trinidad and Tobago", "TT"),
    ("Tunisia", "TN"),
    ("Republic of Tunisia", "TN"),
    ("Republic of Türkiye", "TR"),
    ("Tuvalu", "TV"),
    ("Taiwan, Province of China", "TW"),
    ("Tanzania, United Republic of", "TZ"),
    ("Tanzania", "TZ"),
    ("United Republic of Tanzania", "TZ"),
    ("Uganda", "UG"),
    ("Republic of Uganda", "UG"),
    ("United States Minor Outlying Islands", "UM"),
    ("Uruguay", "UY"),
    ("Eastern Republic of Uruguay", "UY"),
    ("Uzbekistan", "UZ"),
    ("Republic of Uzbekistan", "UZ"),
    ("Holy See (Vatican City State)", "VA"),
    ("Saint Vincent and the Grenadines", "VC"),
    ("Venezuela, Bolivarian Republic of", "VE"),
    ("Bolivarian Republic of Venezuela", "VE"),
    ("Virgin Islands, British", "VG"),
    ("British Virgin Islands", "VG"),
    ("Virgin Islands, U.S.", "VI"),
    ("Virgin Islands of the United States", "VI"),
    ("Socialist Republic of Viet Nam", "VN"),
    ("Vanuatu", "VU"),
    ("Republic of Vanuatu", "VU"),
    ("Wallis and Futuna", "WF"),
    ("Samoa", "WS"),
    ("Independent State of Samoa", "WS"),
    ("Yemen", "YE"),
    ("Republic of Yemen", "YE"),
    ("Republic of South Africa", "ZA"),
    ("Zambia", "ZM"),
    ("Republic of Zambia", "ZM"),
    ("Zimbabwe", "ZW"),
    ("Republic of Zimbabwe", "ZW"),
    ("Kosovo", "XK"),
    ("Macedonia", "MK"),
    ("Swaziland", "SZ"),
    ("Ivory Coast", "CI"),
    ("Cape Verde", "CV"),
    ("Burma", "MM"),
    ("East Timor", "TL"),
    ("Vatican City", "VA"),
    ("Palestine", "PS"),
    ("Brunei", "BN"),
    ("Micronesia", "FM"),
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
        // Beyond the common ones (QA: Kazakhstan lost its country), official and old names too.
        for (name, code) in [
            ("Kazakhstan", "KZ"),
            ("MOLDOVA", "MD"),
            ("Georgia", "GE"),
            ("Republic of Cyprus", "CY"),
            ("Czech Republic", "CZ"),
            ("Côte d'Ivoire", "CI"),
            ("DR Congo", "CD"),
            ("Bahamas (the)", "BS"),
            ("UAE", "AE"),
            ("uk", "GB"),
        ] {
            assert_eq!(country_iso(name).as_deref(), Some(code), "{name}");
        }
        assert_eq!(country_iso(&"x".repeat(100)), None);
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
