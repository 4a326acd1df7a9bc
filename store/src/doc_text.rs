//! The text forms of a batch's events, built on the write path's critical thread (before the
//! Parquet and tantivy work runs in parallel), so they are built in one pass and cheaply:
//!
//! - the masked raw record as JSON text (Parquet's `raw` column, and inside the output document);
//! - the raw record's strings and numbers as space-separated text, for the catch-all `all` field;
//! - the output document ([`perimeter_model::Event::to_output_json`]) as JSON text, for the doc
//!   store.
//!
//! The first two come from one walk of the raw record; both live in one buffer per batch, not a
//! `String` per event.

use std::sync::OnceLock;

use perimeter_model::raw_prelude::{node_view, ValueRef};
use perimeter_model::{write_json_str, EcsValue, Event, RawJson, ECS_FIELDS};

use crate::parallel;
use crate::{Result, StoreError};

/// Raw JSON and raw catch-all text of every event of a batch, in order.
///
/// The store keeps one and rebuilds it for every batch: its buffers (about 2 KB per event of
/// the largest batch) stay with the process instead of being allocated, faulted in and freed
/// again per batch, which cost the critical thread more than the walk itself.
///
/// A large batch is built in parts, one per core, in parallel: the walk runs before the index
/// and Parquet work of the batch can start, so on one thread it left the other cores idle.
#[derive(Default)]
pub(crate) struct BatchText {
    parts: Vec<TextPart>,
    /// The index of the first event of each part.
    starts: Vec<usize>,
}

impl BatchText {
    /// Replace the contents with the texts of `events`, in up to `threads` parts built in
    /// parallel. The raw words of events for which `words_of` is false are left empty.
    pub fn rebuild(
        &mut self,
        events: &[&Event],
        threads: usize,
        words_of: &(impl Fn(&Event) -> bool + Sync),
    ) -> Result<()> {
        self.starts = parallel::over_chunks(events, threads, &mut self.parts, |part, events| {
            part.rebuild(events, words_of)
        })?;
        Ok(())
    }

    #[cfg(test)]
    pub fn build(events: &[Event]) -> Result<BatchText> {
        let mut t = BatchText::default();
        t.rebuild(&events.iter().collect::<Vec<_>>(), 1, &|_| true)?;
        Ok(t)
    }

    /// The part holding the `i`th event, and `i`'s index within it.
    fn locate(&self, i: usize) -> (&TextPart, usize) {
        let p = self.starts.partition_point(|&s| s <= i) - 1;
        (&self.parts[p], i - self.starts[p])
    }

    /// The `i`th event's raw record as JSON text.
    pub fn raw(&self, i: usize) -> &str {
        let (part, j) = self.locate(i);
        part.raw(j)
    }

    /// The `i`th event's raw strings and numbers, space separated.
    pub fn raw_words(&self, i: usize) -> &str {
        let (part, j) = self.locate(i);
        part.raw_words(j)
    }
}

/// The texts of a run of consecutive events of a batch.
#[derive(Default)]
struct TextPart {
    raw: String,
    raw_ends: Vec<usize>,
    all: String,
    all_ends: Vec<usize>,
}

impl TextPart {
    fn rebuild(&mut self, events: &[&Event], words_of: impl Fn(&Event) -> bool) -> Result<()> {
        let n = events.len();
        let mut raw = std::mem::take(&mut self.raw).into_bytes();
        let mut all = std::mem::take(&mut self.all).into_bytes();
        raw.clear();
        all.clear();
        self.raw_ends.clear();
        self.all_ends.clear();
        raw.reserve(n * 1280);
        all.reserve(n * 1024);
        self.raw_ends.reserve(n);
        self.all_ends.reserve(n);
        let mut num = String::new();
        for e in events {
            let words_from = all.len();
            walk(&e.raw, &mut raw, &mut all, &mut num);
            if !words_of(e) {
                // The JSON text is still needed (Parquet, the stored document); one walk
                // writing both and dropping the words costs less than a second kind of walk.
                all.truncate(words_from);
            }
            self.raw_ends.push(raw.len());
            self.all_ends.push(all.len());
        }
        // Everything appended is either valid UTF-8 taken from `&str`s or ASCII.
        let text = |v: Vec<u8>| {
            String::from_utf8(v)
                .map_err(|_| StoreError::InvalidBatch("raw record text is not UTF-8".into()))
        };
        self.raw = text(raw)?;
        self.all = text(all)?;
        Ok(())
    }

    fn raw(&self, i: usize) -> &str {
        let from = if i == 0 { 0 } else { self.raw_ends[i - 1] };
        &self.raw[from..self.raw_ends[i]]
    }

    fn raw_words(&self, i: usize) -> &str {
        let from = if i == 0 { 0 } else { self.all_ends[i - 1] };
        &self.all[from..self.all_ends[i]]
    }
}

/// Append `v` as JSON to `json`, and its strings and numbers (not keys, booleans or nulls),
/// each followed by a space, to `words`.
fn walk(v: &RawJson, json: &mut Vec<u8>, words: &mut Vec<u8>, num: &mut String) {
    match node_view(v) {
        ValueRef::String(s) => {
            write_json_str(json, s);
            words.extend_from_slice(s.as_bytes());
            words.push(b' ');
        }
        ValueRef::Number(n) => {
            use std::fmt::Write;
            num.clear();
            let _ = write!(num, "{n}");
            json.extend_from_slice(num.as_bytes());
            words.extend_from_slice(num.as_bytes());
            words.push(b' ');
        }
        ValueRef::Bool(b) => json.extend_from_slice(if b { b"true" } else { b"false" }),
        ValueRef::Null => json.extend_from_slice(b"null"),
        ValueRef::Array(a) => {
            json.push(b'[');
            for (k, x) in a.iter().enumerate() {
                if k > 0 {
                    json.push(b',');
                }
                walk(x, json, words, num);
            }
            json.push(b']');
        }
        ValueRef::Object(o) => {
            json.push(b'{');
            for (k, (key, x)) in o.iter().enumerate() {
                if k > 0 {
                    json.push(b',');
                }
                write_json_str(json, key);
                json.push(b':');
                walk(x, json, words, num);
            }
            json.push(b'}');
        }
    }
}

/// Where a value of the output document comes from.
#[derive(Clone, Copy)]
enum Origin {
    Timestamp,
    Ecs(&'static str),
    Id,
    Module,
    Ingested,
    Source,
    Tenant,
    Line,
    /// `true` on an event whose vendor time could not be true and was replaced by the receive
    /// time (ADR 012); absent on the others, as in `Event::to_output_json`.
    TimestampAdjusted,
    Raw,
}

/// One leaf of the output document: its parents' keys, its key, where its value comes from.
struct Slot {
    parents: Vec<&'static str>,
    leaf: &'static str,
    origin: Origin,
}

/// Every possible leaf, sorted by path segment-wise, so the leaves of one object are adjacent.
fn layout() -> &'static [Slot] {
    static LAYOUT: OnceLock<Vec<Slot>> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        let mut paths: Vec<(&'static str, Origin)> = vec![("@timestamp", Origin::Timestamp)];
        paths.extend(ECS_FIELDS.iter().skip(1).map(|f| (*f, Origin::Ecs(f))));
        paths.extend([
            ("event.id", Origin::Id),
            ("event.module", Origin::Module),
            ("event.ingested", Origin::Ingested),
            ("perimeter.source", Origin::Source),
            ("perimeter.tenant", Origin::Tenant),
            ("perimeter.line", Origin::Line),
            ("perimeter.timestamp_adjusted", Origin::TimestampAdjusted),
            ("raw", Origin::Raw),
        ]);
        paths.sort_by(|a, b| a.0.split('.').cmp(b.0.split('.')));
        paths
            .into_iter()
            .map(|(path, origin)| {
                let (parents, leaf) = match path.rsplit_once('.') {
                    Some((p, l)) => (p.split('.').collect(), l),
                    None => (Vec::new(), path),
                };
                Slot {
                    parents,
                    leaf,
                    origin,
                }
            })
            .collect()
    })
}

/// `Event::to_output_json` as JSON text, written directly (no `serde_json::Value` tree) with
/// the raw record's JSON text spliced in: parsed back it equals `to_output_json()` (key order
/// aside, which JSON objects do not have), as the tests check. Written into `buf` (cleared
/// first; one buffer serves a whole batch).
pub(crate) fn output_document<'b>(e: &Event, raw_text: &str, buf: &'b mut String) -> &'b str {
    use chrono::SecondsFormat::AutoSi;
    let mut out = std::mem::take(buf).into_bytes();
    out.clear();
    out.reserve(raw_text.len() + 768);
    out.push(b'{');
    let mut open: &[&str] = &[];
    let mut first = true;
    let mut num = String::new();
    for slot in layout() {
        // Absent values are skipped before any object is opened for them.
        let value: Option<EcsValue> = match slot.origin {
            Origin::Timestamp if e.ecs.timestamp.is_none() => continue,
            Origin::TimestampAdjusted if !e.timestamp_adjusted => continue,
            Origin::Ecs(name) => match e.ecs.get(name) {
                Some(v) => Some(v),
                None => continue,
            },
            _ => None,
        };
        let common = open
            .iter()
            .zip(&slot.parents)
            .take_while(|(a, b)| a == b)
            .count();
        if open.len() > common {
            out.extend(std::iter::repeat_n(b'}', open.len() - common));
            first = false;
        }
        for p in &slot.parents[common..] {
            if !first {
                out.push(b',');
            }
            write_json_str(&mut out, p);
            out.extend_from_slice(b":{");
            first = true;
        }
        open = &slot.parents;
        if !first {
            out.push(b',');
        }
        first = false;
        write_json_str(&mut out, slot.leaf);
        out.push(b':');
        let mut number = |out: &mut Vec<u8>, n: u64| {
            use std::fmt::Write;
            num.clear();
            let _ = write!(num, "{n}");
            out.extend_from_slice(num.as_bytes());
        };
        match (slot.origin, value) {
            (_, Some(EcsValue::Str(s))) => write_json_str(&mut out, s),
            (_, Some(EcsValue::Num(n))) => number(&mut out, n),
            (_, Some(EcsValue::List(l))) => {
                out.push(b'[');
                for (k, s) in l.iter().enumerate() {
                    if k > 0 {
                        out.push(b',');
                    }
                    write_json_str(&mut out, s);
                }
                out.push(b']');
            }
            (Origin::Timestamp, None) => {
                if let Some(t) = e.ecs.timestamp {
                    write_json_str(&mut out, &t.to_rfc3339_opts(AutoSi, true));
                }
            }
            (Origin::Id, None) => write_json_str(&mut out, &e.id().0),
            (Origin::Module | Origin::Source, None) => write_json_str(&mut out, &e.source),
            (Origin::Ingested, None) => {
                write_json_str(&mut out, &e.received_at.to_rfc3339_opts(AutoSi, true))
            }
            (Origin::Tenant, None) => write_json_str(&mut out, &e.tenant),
            (Origin::Line, None) => match e.line {
                Some(n) => number(&mut out, n),
                None => out.extend_from_slice(b"null"),
            },
            (Origin::TimestampAdjusted, None) => out.extend_from_slice(b"true"),
            (Origin::Raw, None) => out.extend_from_slice(raw_text.as_bytes()),
            (Origin::Ecs(_), None) => {}
        }
    }
    out.extend(std::iter::repeat_n(b'}', open.len() + 1));
    // Only `&str` contents and ASCII were written.
    *buf = String::from_utf8(out).unwrap_or_default();
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use perimeter_model::{Ecs, Outcome, RawRecord};

    fn event(ecs: Ecs, line: Option<u64>, raw: serde_json::Value) -> Event {
        let at = Utc.with_ymd_and_hms(2026, 11, 2, 3, 4, 5).unwrap();
        let record = RawRecord {
            source: "okta".into(),
            tenant: "ac\"me".into(),
            received_at: at + chrono::Duration::milliseconds(1234),
            line,
            raw: perimeter_model::raw_from_serde(&raw),
        };
        Event::new("okta", record, ecs)
    }

    fn events() -> Vec<Event> {
        let mut full = Ecs {
            event_action: Some("user.session.start".into()),
            event_outcome: Outcome::Failure,
            event_category: vec!["authentication".into(), "iam".into()],
            event_type: vec!["start".into()],
            user_name: Some("Ä \"quoted\" \\ name\n\u{1}\u{7f}".into()),
            user_email: Some("alice@acme.test".into()),
            user_id: Some("00u1".into()),
            user_target_name: Some("bob".into()),
            user_target_email: Some("bob@acme.test".into()),
            user_target_id: Some("00u2".into()),
            source_ip: Some("198.51.100.7".into()),
            source_geo_country_iso_code: Some("DE".into()),
            source_as_number: Some(64501),
            user_agent_original: Some("Mozilla/5.0 (X11)".into()),
            organization_id: Some("org".into()),
            cloud_account_id: Some("acct".into()),
            ..Default::default()
        };
        full.fill_related();
        let raw = serde_json::json!({
            "a": [1, {"b": null, "t": true, "f": false}, -7, 1.5e300, 0.25],
            "c": "\u{1F600} tab\there \"q\" \\ \u{0} \u{1f} </script>",
            "d": 1.5,
            "e": {}, "g": [], "k\"ey\n": "v",
            "big": u64::MAX, "neg": i64::MIN
        });
        vec![
            event(full, Some(7), raw.clone()),
            event(Ecs::default(), None, raw),
            event(Ecs::default(), Some(1), serde_json::json!({})),
            event(
                Ecs::default(),
                Some(1),
                serde_json::json!(["top", "level", 3]),
            ),
            // Dated in 2999: the receive time is used instead, and the document says so.
            event(
                Ecs {
                    timestamp: Some(Utc.with_ymd_and_hms(2999, 1, 1, 0, 0, 0).unwrap()),
                    ..Default::default()
                },
                Some(2),
                serde_json::json!({"published": "2999-01-01T00:00:00Z"}),
            ),
        ]
    }

    #[test]
    fn raw_text_parses_back_to_the_raw_record() {
        let evs = events();
        let text = BatchText::build(&evs).unwrap();
        for (i, e) in evs.iter().enumerate() {
            let parsed: serde_json::Value = serde_json::from_str(text.raw(i)).unwrap();
            assert_eq!(
                parsed,
                perimeter_model::raw_to_serde(&e.raw),
                "{}",
                text.raw(i)
            );
        }
        assert_eq!(text.raw_words(2), "");
        assert_eq!(text.raw_words(3), "top level 3 ");
        let words = text.raw_words(0);
        for w in ["1 ", "-7 ", "0.25 ", "1.5 ", "v ", "18446744073709551615 "] {
            assert!(words.contains(w), "{w:?} in {words:?}");
        }
        assert!(!words.contains("true") && !words.contains("null") && !words.contains("ey"));
    }

    #[test]
    fn a_rebuilt_batch_text_has_only_the_new_events() {
        let evs = events();
        let mut text = BatchText::build(&evs).unwrap();
        text.rebuild(&evs[2..].iter().collect::<Vec<_>>(), 1, &|_| true)
            .unwrap();
        assert_eq!(text.raw(0), "{}");
        assert_eq!(text.raw_words(0), "");
        assert_eq!(text.raw(1), r#"["top","level",3]"#);
        assert_eq!(text.raw_words(1), "top level 3 ");
        text.rebuild(&[], 1, &|_| true).unwrap();
        let part = &text.parts[0];
        assert!(text.parts.len() == 1 && part.raw.is_empty() && part.all.is_empty());
        assert!(part.raw_ends.is_empty());
    }

    #[test]
    fn a_batch_built_in_parallel_parts_reads_like_one_built_in_one_part() {
        let base = events();
        // Enough events for three parts, each event distinct.
        let evs: Vec<Event> = (0..3 * parallel::MIN_ITEMS_PER_CHUNK + 17)
            .map(|k| {
                let mut e = base[k % base.len()].clone();
                e.raw = perimeter_model::raw_from_serde(
                    &serde_json::json!({"k": k, "s": format!("v{k}")}),
                );
                e
            })
            .collect();
        let refs: Vec<&Event> = evs.iter().collect();
        let one = BatchText::build(&evs).unwrap();
        let mut parts = BatchText::default();
        parts.rebuild(&refs, 3, &|_| true).unwrap();
        assert_eq!(parts.parts.len(), 3);
        for i in 0..evs.len() {
            assert_eq!(parts.raw(i), one.raw(i));
            assert_eq!(parts.raw_words(i), one.raw_words(i));
        }
        assert_eq!(
            parts.raw(evs.len() - 1),
            format!(r#"{{"k":{},"s":"v{}"}}"#, evs.len() - 1, evs.len() - 1)
        );
        // A smaller batch afterwards uses fewer parts; nothing of the larger one shows.
        parts.rebuild(&refs[..5], 3, &|_| true).unwrap();
        assert_eq!(parts.parts.len(), 1);
        assert_eq!(parts.raw(4), one.raw(4));
    }

    #[test]
    fn output_document_text_is_to_output_json() {
        let evs = events();
        let text = BatchText::build(&evs).unwrap();
        // One buffer for all of them, as on the write path.
        let mut buf = String::new();
        for (i, e) in evs.iter().enumerate() {
            let doc = output_document(e, text.raw(i), &mut buf);
            let parsed: serde_json::Value = serde_json::from_str(doc).unwrap();
            assert_eq!(parsed, e.to_output_json(), "{doc}");
            let adjusted = parsed["perimeter"].get("timestamp_adjusted");
            assert_eq!(
                adjusted,
                e.timestamp_adjusted.then_some(&true.into()),
                "{doc}"
            );
        }
        assert!(evs.iter().any(|e| e.timestamp_adjusted));
    }

    #[test]
    fn json_strings_are_escaped_like_serde_json() {
        let all: String = (0u8..=0x7f).map(char::from).chain("é😀".chars()).collect();
        for s in ["", "plain", "a\"b\\c/d", &all] {
            let mut out = Vec::new();
            write_json_str(&mut out, s);
            let parsed: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(parsed, s);
        }
    }
}
