//! Objects that repeat a key (`{"eventType": "a", "eventType": "b"}`): JSON leaves their meaning
//! open, and the parsed DOM keeps both pairs. Its lookups answer with the first value while
//! serializers that build maps show the last, so the record's author would choose which value
//! the detectors see and which one the analyst reads. Perimeter settles it once, as records
//! enter the pipeline: the **last** value wins (what JavaScript, Python's `json`, Go and jq do),
//! kept at the key's first position, and the earlier values are dropped, so normalizers, rules,
//! behavioural baselines, masking, the store and every export see the same single value.

use std::collections::{HashMap, HashSet};

use sonic_rs::{JsonType, JsonValueTrait, ValueRef};

use crate::raw_prelude::node_view;
use crate::RawJson;

/// The keys of an object past this many are checked with a hash set; before (nearly all
/// objects), with a 128-bit filter of their key shapes, comparing keys only where two shapes
/// meet.
const SMALL_OBJECT: usize = 32;

/// Give each key repeated in an object of `raw` (at any depth) its last value, at its first
/// position, and drop its other pairs. Returns whether anything changed. A record without a
/// repeated key (nearly all) is left exactly as parsed: the check reads it in place, without
/// allocating.
pub fn resolve_repeated_keys(raw: &mut RawJson) -> bool {
    if !repeats_a_key(raw) {
        return false;
    }
    let mut text = Vec::new();
    write_resolved(&mut text, raw);
    // The text is that of a value the parser accepted (same depth, same strings, fewer pairs),
    // so it parses back.
    match sonic_rs::from_slice::<RawJson>(&text) {
        Ok(resolved) => {
            *raw = resolved;
            true
        }
        Err(_) => false,
    }
}

/// Whether an object in `v` repeats a key. One pass over each object: its keys are checked as
/// its values are visited, and only containers are entered.
fn repeats_a_key(v: &RawJson) -> bool {
    match node_view(v) {
        ValueRef::Object(o) => object_repeats_a_key(o),
        ValueRef::Array(a) => a.iter().any(|x| is_container(x) && repeats_a_key(x)),
        _ => false,
    }
}

/// An object or an array, told by one type read (each read is a call into the DOM).
fn is_container(x: &RawJson) -> bool {
    matches!(x.get_type(), JsonType::Object | JsonType::Array)
}

fn object_repeats_a_key(o: &sonic_rs::Object) -> bool {
    let mut large: Option<HashSet<&str>> = None;
    let mut shapes = 0u128;
    for (i, (k, x)) in o.iter().enumerate() {
        let repeated = match &mut large {
            Some(seen) => !seen.insert(k),
            None if i == SMALL_OBJECT => {
                let seen = large.insert(o.iter().take(i).map(|(k, _)| k).collect());
                !seen.insert(k)
            }
            None => {
                let bit = 1u128 << key_shape(k);
                let hit = shapes & bit != 0;
                shapes |= bit;
                hit && o.iter().take(i).any(|(earlier, _)| earlier == k)
            }
        };
        if repeated || (is_container(x) && repeats_a_key(x)) {
            return true;
        }
    }
    false
}

/// A 7-bit digest of a key from its length and three of its bytes: equal keys have equal
/// shapes, and most different keys of one object have different ones.
fn key_shape(k: &str) -> u32 {
    let b = k.as_bytes();
    let at = |i: usize| b.get(i).map_or(0, |&c| u32::from(c));
    let len = b.len() as u32;
    (len.wrapping_mul(0x9e37)
        ^ at(0).wrapping_mul(31)
        ^ at(b.len() / 2).wrapping_mul(7)
        ^ at(b.len().wrapping_sub(1)))
    .wrapping_mul(0x2545_f491)
        >> 25
}

/// `v` as JSON text, each object's repeated keys resolved (see [`resolve_repeated_keys`]).
fn write_resolved(out: &mut Vec<u8>, v: &RawJson) {
    match v.as_ref() {
        ValueRef::Object(o) => {
            let pairs: Vec<(&str, &RawJson)> = o.iter().collect();
            let mut last: HashMap<&str, &RawJson> = HashMap::with_capacity(pairs.len());
            for &(k, x) in &pairs {
                last.insert(k, x);
            }
            let mut written = HashSet::with_capacity(last.len());
            out.push(b'{');
            for &(k, _) in &pairs {
                if !written.insert(k) {
                    continue;
                }
                if written.len() > 1 {
                    out.push(b',');
                }
                crate::write_json_str(out, k);
                out.push(b':');
                write_resolved(out, last[k]);
            }
            out.push(b'}');
        }
        ValueRef::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_resolved(out, x);
            }
            out.push(b']');
        }
        ValueRef::String(s) => crate::write_json_str(out, s),
        // Null, booleans and numbers, written as the parser read them.
        _ => out.extend_from_slice(sonic_rs::to_string(v).unwrap_or_default().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventId;
    use sonic_rs::JsonContainerTrait;

    fn parse(text: &str) -> RawJson {
        sonic_rs::from_str(text).expect("valid JSON")
    }

    fn resolved(text: &str) -> (bool, String) {
        let mut v = parse(text);
        let changed = resolve_repeated_keys(&mut v);
        // In the DOM's key order (sonic's serializer sorts keys); without repeats this is the
        // plain text of `v`.
        let mut text = Vec::new();
        write_resolved(&mut text, &v);
        (changed, String::from_utf8(text).unwrap())
    }

    #[test]
    fn the_last_value_wins_at_the_first_position_at_any_depth() {
        assert_eq!(
            resolved(r#"{"a":1,"b":"x","a":[2,{"c":3,"c":"y"}],"d":null}"#),
            (true, r#"{"a":[2,{"c":"y"}],"b":"x","d":null}"#.to_string())
        );
        assert_eq!(
            resolved(r#"[{"k":"v","k":"w","k":{"z":1.5e3}}]"#),
            (true, r#"[{"k":{"z":1500.0}}]"#.to_string())
        );
        // Escapes are resolved before keys are compared: `\u0061` is `a`.
        assert_eq!(
            resolved(r#"{"a":"first","\u0061":"last \"q\""}"#),
            (true, r#"{"a":"last \"q\""}"#.to_string())
        );
        // The parser's own lookup answers with the last value afterwards.
        let mut v =
            parse(r#"{"eventType":"user.session.start","eventType":"user.mfa.factor.deactivate"}"#);
        resolve_repeated_keys(&mut v);
        assert_eq!(
            v.get("eventType").and_then(|x| x.as_str()),
            Some("user.mfa.factor.deactivate")
        );
    }

    #[test]
    fn records_without_repeated_keys_are_left_as_parsed() {
        for text in [
            r#"{"a":1,"b":{"a":2,"ab":3,"ba":4},"c":[{"a":1},{"a":2}]}"#,
            r#"{}"#,
            r#"[1,"a","a"]"#,
            r#""a""#,
        ] {
            let mut v = parse(text);
            let before = EventId::derive("json", &v);
            assert!(!resolve_repeated_keys(&mut v), "{text}");
            assert_eq!(EventId::derive("json", &v), before, "{text}");
        }
    }

    #[test]
    fn large_objects_are_checked_too() {
        let keys: Vec<String> = (0..100).map(|i| format!("\"k{i}\":{i}")).collect();
        let distinct = format!("{{{}}}", keys.join(","));
        assert_eq!(resolved(&distinct), (false, distinct.clone()));
        let repeated = format!("{{{},\"k7\":\"last\"}}", keys.join(","));
        let (changed, text) = resolved(&repeated);
        assert!(changed);
        let v = parse(&text);
        let o = v.as_object().unwrap();
        assert_eq!(o.len(), 100);
        assert_eq!(o.get(&"k7").and_then(|x| x.as_str()), Some("last"));
    }

    #[test]
    fn keys_of_one_shape_are_not_taken_for_a_repeat() {
        let keys: Vec<String> = (0..1000).map(|i| format!("k{i}")).collect();
        let (a, b) = keys
            .iter()
            .enumerate()
            .find_map(|(i, a)| {
                let b = keys[..i].iter().find(|b| key_shape(b) == key_shape(a))?;
                Some((a, b))
            })
            .expect("1000 keys in 128 shapes");
        let text = format!(r#"{{"{a}":1,"x":2,"{b}":3}}"#);
        assert_eq!(resolved(&text), (false, text.clone()));
        let text = format!(r#"{{"{a}":1,"{b}":2,"{a}":3}}"#);
        assert_eq!(resolved(&text), (true, format!(r#"{{"{a}":3,"{b}":2}}"#)));
    }
}
