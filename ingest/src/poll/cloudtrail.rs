//! AWS CloudTrail log files in S3: `ListObjectsV2` under the trail's key prefix (`feed`,
//! `AWSLogs/<account>/CloudTrail/<region>/`), each `.json.gz` (or `.json`) file fetched and its
//! `Records` submitted, every request SigV4-signed with the configured key.
//!
//! CloudTrail names files `<account>_CloudTrail_<region>_<YYYYMMDDTHHmmZ>_<unique>.json.gz`
//! under `YYYY/MM/DD/`, so keys sort by time. Files can still land a little out of order (two in
//! the same minute, a late delivery), so each poll lists again from the start of the day
//! [`SETTLE_MINUTES`] before the newest file stored, and skips what it stored already: files
//! older than that margin, and the ones within it, which the checkpoint remembers
//! (`recent_keys`).
//!
//! A prefix above the region folders (an account's `AWSLogs/<account>/`, which holds every
//! region of a multi-region trail, an organization trail's `AWSLogs/<org>/`, or `AWSLogs/`) is
//! read as each `CloudTrail/<region>/` folder under it, found at each poll, each with a place
//! of its own in the checkpoint (`folders`): one position for all of them skipped every region
//! sorting before the last key stored. A prefix without that layout is listed after the last
//! key stored.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use perimeter_model::raw_prelude::*;
use perimeter_model::RawJson;
use reqwest::Url;
use std::io::Read;

use super::sigv4::{sign_get, AwsCredentials};
use super::vendor::PageRequest;
use super::{read_secret, Checkpoint, InFlight, PollError, PollReport, PollSource, ProbeReport};

/// How far behind the newest stored file a late one is still looked for.
const SETTLE_MINUTES: i64 = 15;

struct Credentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    region: String,
}

impl Credentials {
    fn resolve(src: &PollSource, secret_access_key: &str) -> Result<Credentials, PollError> {
        let name = &src.config.name;
        let secret = |what: &str, reference: &str| {
            read_secret(reference)
                .map_err(|m| PollError::Config(format!("poll `{name}`: {what}: {m}")))
        };
        Ok(Credentials {
            access_key_id: secret(
                "aws_access_key_id",
                src.config.aws_access_key_id.as_deref().unwrap_or_default(),
            )?,
            secret_access_key: secret_access_key.to_string(),
            session_token: src
                .config
                .aws_session_token
                .as_deref()
                .map(|r| secret("aws_session_token", r))
                .transpose()?,
            region: src.config.aws_region.clone().unwrap_or_default(),
        })
    }

    fn sign(&self, url: &Url) -> Vec<(&'static str, String)> {
        sign_get(
            url,
            &AwsCredentials {
                access_key_id: &self.access_key_id,
                secret_access_key: &self.secret_access_key,
                session_token: self.session_token.as_deref(),
                region: &self.region,
            },
            Utc::now(),
        )
    }
}

/// The time in a CloudTrail file name (`..._20240102T1005Z_...`).
fn key_time(key: &str) -> Option<DateTime<Utc>> {
    let name = key.rsplit('/').next()?;
    name.split('_').find_map(|part| {
        (part.len() == 14 && part.ends_with('Z'))
            .then(|| NaiveDateTime::parse_from_str(&part[..13], "%Y%m%dT%H%M").ok())
            .flatten()
            .map(|t| t.and_utc())
    })
}

/// Whether the prefix is a trail's region folder (`.../CloudTrail/<region>/`), under which keys
/// go `YYYY/MM/DD/<file>`.
fn dated(prefix: &str) -> bool {
    prefix
        .rsplit_once("/CloudTrail/")
        .is_some_and(|(_, region)| {
            region.len() > 1 && region.ends_with('/') && region.matches('/').count() == 1
        })
}

/// Whether a folder under a prefix above the region folders can lead to them: `AWSLogs`, an
/// account id, an organization id, or `CloudTrail` itself (not `CloudTrail-Digest`, whose files
/// hold no records, nor anything else in the bucket).
fn leads_to_trail(name: &str) -> bool {
    name == "AWSLogs"
        || name == "CloudTrail"
        || (name.len() == 12 && name.bytes().all(|b| b.is_ascii_digit()))
        || name.strip_prefix("o-").is_some_and(|id| {
            (10..=32).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// The region folders (`.../CloudTrail/<region>/`) at most five folders under `prefix` (from the
/// bucket's root through an organization trail: `AWSLogs/<org>/<account>/CloudTrail/<region>/`),
/// found by listing folder by folder through the ones that lead to them ([`leads_to_trail`]).
async fn region_folders(
    src: &PollSource,
    creds: &Credentials,
    prefix: &str,
) -> Result<Vec<String>, PollError> {
    let mut found = Vec::new();
    let mut level = vec![prefix.to_string()];
    for _ in 0..5 {
        let mut next = Vec::new();
        for parent in &level {
            for folder in list_folders(src, creds, parent).await? {
                let name = folder[parent.len()..].trim_end_matches('/');
                if dated(&folder) && parent.ends_with("/CloudTrail/") {
                    found.push(folder);
                } else if name.is_empty() || leads_to_trail(name) {
                    // (Empty: the prefix itself as a folder, written without its `/`.)
                    next.push(folder);
                }
            }
        }
        if next.is_empty() {
            break;
        }
        level = next;
    }
    found.sort();
    Ok(found)
}

/// The configured prefix, with the `/` a trail's region folder needs (`.../CloudTrail/us-east-1`
/// would otherwise not be read as dated, and a first poll would list the trail's whole history).
/// Likewise a prefix naming a folder above them (`AWSLogs/<account>`).
fn trail_prefix(src: &PollSource) -> String {
    let mut prefix = src.config.feed.clone().unwrap_or_default();
    let last = prefix.rsplit('/').next().unwrap_or_default();
    if !prefix.ends_with('/') && (prefix.contains("/CloudTrail/") || leads_to_trail(last)) {
        prefix.push('/');
    }
    prefix
}

/// Where the next listing starts (`start-after`), and the time before which stored files are
/// not looked at again.
fn listing_start(
    prefix: &str,
    cp: &Checkpoint,
    start: DateTime<Utc>,
) -> (Option<String>, Option<DateTime<Utc>>) {
    if !dated(prefix) {
        return (cp.resume.clone(), None);
    }
    let newest = cp.resume.as_deref().and_then(key_time);
    let from = newest.map_or(start, |t| t - Duration::minutes(SETTLE_MINUTES));
    (
        Some(format!("{prefix}{}", from.format("%Y/%m/%d/"))),
        newest.map(|t| t - Duration::minutes(SETTLE_MINUTES)),
    )
}

/// How long the region folders found under a prefix are used before they are looked for again:
/// finding them takes a listing per folder level and per account (an organization of 100
/// accounts: ~2,000 requests), and a trail gains a region rarely.
const REGION_FOLDERS_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// [`region_folders`], found again at most every [`REGION_FOLDERS_TTL`] (a poller that found
/// none looks again at every poll, as an empty bucket fills).
async fn known_region_folders(
    src: &PollSource,
    creds: &Credentials,
    prefix: &str,
) -> Result<Vec<String>, PollError> {
    let cached = |now: std::time::Instant| {
        let held = src.region_folders.lock().unwrap_or_else(|e| e.into_inner());
        held.as_ref()
            .filter(|(at, folders)| {
                !folders.is_empty() && now.duration_since(*at) < REGION_FOLDERS_TTL
            })
            .map(|(_, folders)| folders.clone())
    };
    if let Some(folders) = cached(std::time::Instant::now()) {
        return Ok(folders);
    }
    let folders = region_folders(src, creds, prefix).await?;
    *src.region_folders.lock().unwrap_or_else(|e| e.into_inner()) =
        Some((std::time::Instant::now(), folders.clone()));
    Ok(folders)
}

/// The folders right under `prefix` (`ListObjectsV2` with `delimiter=/`, every page).
async fn list_folders(
    src: &PollSource,
    creds: &Credentials,
    prefix: &str,
) -> Result<Vec<String>, PollError> {
    let mut folders = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut url = src.api.join("")?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("list-type", "2")
                .append_pair("prefix", prefix)
                .append_pair("delimiter", "/");
            if let Some(token) = &token {
                q.append_pair("continuation-token", token);
            }
        }
        let text = listing(src, creds, &url).await?;
        for common in xml_values(&text, "CommonPrefixes") {
            folders.extend(xml_values(&common, "Prefix"));
        }
        let truncated =
            xml_values(&text, "IsTruncated").first().map(String::as_str) == Some("true");
        token = xml_values(&text, "NextContinuationToken").pop();
        if !truncated || token.is_none() {
            return Ok(folders);
        }
    }
}

/// A bucket listing's XML.
async fn listing(src: &PollSource, creds: &Credentials, url: &Url) -> Result<String, PollError> {
    let (bytes, _) = src
        .fetch_bytes(&PageRequest::get(url.clone()), &creds.sign(url))
        .await?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if !text.contains("<ListBucketResult") {
        return Err(PollError::Malformed(
            "the bucket listing is not a ListBucketResult".into(),
        ));
    }
    Ok(text)
}

/// One `ListObjectsV2` page after `start_after`: its keys and whether more follow.
async fn list(
    src: &PollSource,
    creds: &Credentials,
    prefix: &str,
    start_after: Option<&str>,
) -> Result<(Vec<String>, bool), PollError> {
    let mut url = src.api.join("")?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("list-type", "2")
            .append_pair("prefix", prefix);
        if let Some(after) = start_after {
            q.append_pair("start-after", after);
        }
        q.append_pair("max-keys", "1000");
    }
    let text = listing(src, creds, &url).await?;
    let keys = xml_values(&text, "Key");
    let truncated = xml_values(&text, "IsTruncated").first().map(String::as_str) == Some("true");
    Ok((keys, truncated))
}

/// The texts of every `<tag>...</tag>` in `xml`, entities decoded (S3 listings are flat enough
/// for this; keys are the only free text in them).
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(
            after[..j]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        );
        rest = &after[j + close.len()..];
    }
    out
}

/// A log file's records (gunzipped when it is gzip; at most `max_page_bytes` either way).
async fn file_records(
    src: &PollSource,
    creds: &Credentials,
    key: &str,
) -> Result<Vec<RawJson>, PollError> {
    let mut url = src.api.join("")?;
    {
        let mut path = url
            .path_segments_mut()
            .map_err(|_| PollError::Config("base_url cannot hold a path".into()))?;
        path.pop_if_empty();
        for segment in key.split('/') {
            path.push(segment);
        }
    }
    let (bytes, _) = src
        .fetch_bytes(&PageRequest::get(url.clone()), &creds.sign(&url))
        .await?;
    let limit = src.config.max_page_bytes;
    let text = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| PollError::Malformed(format!("{key}: not gzip: {e}")))?;
        if out.len() as u64 > limit {
            return Err(PollError::Malformed(format!(
                "{key}: larger than max_page_bytes ({limit} bytes) unpacked"
            )));
        }
        out
    } else {
        bytes
    };
    let body: RawJson =
        perimeter_model::parse_with_lone_surrogates(&text, |b| sonic_rs::from_slice(b)).map_err(
            |e| {
                PollError::Malformed(format!(
                    "{key}: not JSON: {}",
                    crate::jsonl::why_not_json(&text, &e)
                ))
            },
        )?;
    body.get("Records")
        .and_then(|r| r.as_array())
        .map(|a| a.iter().cloned().collect())
        .ok_or_else(|| PollError::Malformed(format!("{key}: no `Records` list")))
}

/// Keys still to store, in order, from one listing page.
fn new_keys(keys: Vec<String>, cp: &Checkpoint, settled: Option<DateTime<Utc>>) -> Vec<String> {
    keys.into_iter()
        .filter(|k| k.ends_with(".json.gz") || k.ends_with(".json"))
        // Digests list the log files of an hour and hold no records.
        .filter(|k| !k.contains("/CloudTrail-Digest/"))
        .filter(|k| !cp.recent_keys.contains(k))
        .filter(|k| match (settled, key_time(k), &cp.resume) {
            // Stored before the margin: not looked at again.
            (Some(settled), Some(t), Some(resume)) => t >= settled || k > resume,
            (None, _, Some(resume)) => k > resume,
            _ => true,
        })
        .collect()
}

/// One poll: list from the checkpoint on and store new files in key order, the checkpoint
/// moving past each once it is stored (files are put on the bus in key order, and the next
/// ones fetched while the ones before are stored). Under a prefix above the region folders,
/// each folder in turn.
pub(super) async fn poll(
    src: &PollSource,
    secret_access_key: &str,
    start: DateTime<Utc>,
) -> Result<PollReport, PollError> {
    let creds = Credentials::resolve(src, secret_access_key)?;
    let mut listings = listings(src, &creds).await?;
    let mut cp = src.checkpoint()?;
    // The folders after the one that spent the last poll's page budget go first, that one
    // last: a busy region read first at every poll kept the others from ever being read (QA).
    if let Some(last) = &cp.next_folder {
        let after = listings.partition_point(|(f, _)| f.as_ref().is_some_and(|f| f <= last));
        listings.rotate_left(after);
    }
    // A checkpoint of a build that kept one position for the whole prefix: each region folder
    // new to the checkpoint starts no later than that position's time, so a service stopped
    // longer than the lookback loses no file on its first poll after the upgrade.
    // (Until every folder has a place of its own: a first poll may spend its page budget in
    // one folder, and the others start at a later poll.)
    let upgraded_start = match cp.resume.as_deref().and_then(key_time) {
        Some(t) => start.min(t - Duration::minutes(SETTLE_MINUTES)),
        None => start,
    };
    let mut report = PollReport::default();
    // Each file moves its folder's checkpoint past it once it is stored.
    let mut in_flight = InFlight::new(|cp: &mut Checkpoint, (folder, key): FileOf| {
        let at = folder_checkpoint(cp, folder.as_deref());
        *at = advance(std::mem::take(at), key);
    });
    let mut budget_spent_in = None;
    for (folder, folder_prefix) in listings {
        let folder_start = match &folder {
            Some(f) if !cp.folders.contains_key(f) => upgraded_start,
            _ => start,
        };
        let read = read_folder(
            src,
            &creds,
            (folder.clone(), &folder_prefix, folder_start),
            &mut cp,
            &mut in_flight,
            &mut report,
        )
        .await;
        match read {
            Ok(true) => continue,
            Ok(false) => {
                budget_spent_in = folder;
                break;
            }
            Err(e) => return Err(in_flight.stop_with(src, &mut cp, &mut report, e).await),
        }
    }
    in_flight.settle_all(src, &mut cp, &mut report).await?;
    if cp.next_folder != budget_spent_in {
        cp.next_folder = budget_spent_in;
        src.save_checkpoint(&cp)?;
    }
    Ok(report)
}

/// The prefixes to list, each with the region folder it is when the poller's prefix is above
/// them: the region folders found under it, or (none found, or a region folder itself) the
/// poller's prefix alone.
async fn listings(
    src: &PollSource,
    creds: &Credentials,
) -> Result<Vec<(Option<String>, String)>, PollError> {
    let prefix = trail_prefix(src);
    let folders = if dated(&prefix) {
        Vec::new()
    } else {
        known_region_folders(src, creds, &prefix).await?
    };
    Ok(if folders.is_empty() {
        vec![(None, prefix)]
    } else {
        folders.into_iter().map(|f| (Some(f.clone()), f)).collect()
    })
}

/// A file to store: the region folder it is in (under a prefix above them) and its key.
type FileOf = (Option<String>, String);

/// The checkpoint of a region folder under a prefix above them, or the poller's own.
fn folder_checkpoint<'a>(cp: &'a mut Checkpoint, folder: Option<&str>) -> &'a mut Checkpoint {
    match folder {
        Some(folder) => cp.folders.entry(folder.to_string()).or_default(),
        None => cp,
    }
}

/// Put the new files of one prefix on the bus (`folder`: the region folder it is, when the
/// poller's prefix is above them); false once the poll's page budget is spent.
async fn read_folder<A: Fn(&mut Checkpoint, FileOf)>(
    src: &PollSource,
    creds: &Credentials,
    (folder, prefix, start): (Option<String>, &str, DateTime<Utc>),
    cp: &mut Checkpoint,
    in_flight: &mut InFlight<FileOf, A>,
    report: &mut PollReport,
) -> Result<bool, PollError> {
    let (mut after, settled) =
        listing_start(prefix, folder_checkpoint(cp, folder.as_deref()), start);
    loop {
        let (keys, truncated) = list(src, creds, prefix, after.as_deref()).await?;
        after = keys.last().cloned();
        // The keys in flight are not in `cp` yet, which is fine: each listing starts after
        // the last key of the one before, so it never lists them again.
        let keys = new_keys(keys, folder_checkpoint(cp, folder.as_deref()), settled);
        for key in keys {
            if report.pages >= src.config.max_pages_per_poll.max(1) {
                return Ok(false);
            }
            report.pages += 1;
            let queued = match file_records(src, creds, &key).await {
                Ok(records) => src.enqueue(records).await?,
                // S3 objects never change: fetching it again cannot help, and every later
                // file would wait behind it.
                Err(PollError::Malformed(reason)) => src.enqueue_set_aside(&key, &reason).await?,
                Err(e) => return Err(e),
            };
            in_flight.push((folder.clone(), key), queued);
            in_flight.make_room(src, cp, report).await?;
        }
        if !truncated || after.is_none() {
            return Ok(true);
        }
    }
}

/// The checkpoint once `key` is stored: the newest key, and the keys within the margin.
fn advance(mut cp: Checkpoint, key: String) -> Checkpoint {
    if cp.resume.as_ref().is_none_or(|r| &key > r) {
        cp.resume = Some(key.clone());
    }
    cp.recent_keys.push(key);
    if let Some(newest) = cp.resume.as_deref().and_then(key_time) {
        let settled = newest - Duration::minutes(SETTLE_MINUTES);
        cp.recent_keys
            .retain(|k| key_time(k).is_none_or(|t| t >= settled));
    }
    cp
}

/// [`PollSource::probe`] for CloudTrail: the first listing page after the checkpoint, and the
/// records of its first new file.
pub(super) async fn probe(
    src: &PollSource,
    secret_access_key: &str,
    start: DateTime<Utc>,
) -> Result<ProbeReport, PollError> {
    let creds = Credentials::resolve(src, secret_access_key)?;
    let listings = listings(src, &creds).await?;
    let mut cp = src.checkpoint()?;
    let last = listings.len() - 1;
    for (i, (folder, prefix)) in listings.into_iter().enumerate() {
        let at = folder_checkpoint(&mut cp, folder.as_deref()).clone();
        let (after, settled) = listing_start(&prefix, &at, start);
        let (keys, truncated) = list(src, &creds, &prefix, after.as_deref()).await?;
        let keys = new_keys(keys, &at, settled);
        if let Some(key) = keys.first() {
            return Ok(ProbeReport {
                url: src.api.base.to_string(),
                records: file_records(src, &creds, key).await?.len(),
                newest: key_time(key),
                more: keys.len() > 1 || truncated || i < last,
            });
        }
    }
    Ok(ProbeReport {
        url: src.api.base.to_string(),
        records: 0,
        newest: None,
        more: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "AWSLogs/111122223333/CloudTrail/us-east-1/";

    fn key(day: &str, hhmm: &str, unique: &str) -> String {
        format!(
            "{P}2024/01/{day}/111122223333_CloudTrail_us-east-1_202401{day}T{hhmm}Z_{unique}.json.gz"
        )
    }

    #[test]
    fn region_folders_are_dated_and_folders_above_them_lead_to_them() {
        assert!(dated(P));
        assert!(dated(
            "trails/AWSLogs/o-abcdefghij/111122223333/CloudTrail/eu-west-1/"
        ));
        for above in [
            "AWSLogs/111122223333/",
            "AWSLogs/111122223333/CloudTrail/",
            "AWSLogs/",
            "",
            "AWSLogs/111122223333/CloudTrail/us-east-1/2024/",
            "AWSLogs/111122223333/CloudTrail/us-east-1",
        ] {
            assert!(!dated(above), "{above}");
        }
        for name in ["AWSLogs", "CloudTrail", "111122223333", "o-a1b2c3d4e5"] {
            assert!(leads_to_trail(name), "{name}");
        }
        for name in [
            "CloudTrail-Digest",
            "CloudTrail-Insight",
            "logs",
            "1111",
            "o-x",
        ] {
            assert!(!leads_to_trail(name), "{name}");
        }
    }

    #[test]
    fn file_names_give_their_time() {
        assert_eq!(
            key_time(&key("02", "1005", "abc")).map(|t| t.to_rfc3339()),
            Some("2024-01-02T10:05:00+00:00".into())
        );
        assert_eq!(key_time("AWSLogs/x/other.json.gz"), None);
    }

    #[test]
    fn listings_start_a_margin_before_the_newest_file() {
        let start = DateTime::parse_from_rfc3339("2024-01-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let (after, settled) = listing_start(P, &Checkpoint::default(), start);
        assert_eq!(after, Some(format!("{P}2024/01/01/")));
        assert_eq!(settled, None);
        // 00:05 minus the margin is the day before.
        let cp = Checkpoint {
            resume: Some(key("02", "0005", "abc")),
            ..Checkpoint::default()
        };
        let (after, settled) = listing_start(P, &cp, start);
        assert_eq!(after, Some(format!("{P}2024/01/01/")));
        assert_eq!(
            settled.map(|t| t.to_rfc3339()),
            Some("2024-01-01T23:50:00+00:00".into())
        );
        // Another layout: after the last key.
        let cp = Checkpoint {
            resume: Some("logs/b.json".into()),
            ..Checkpoint::default()
        };
        assert_eq!(
            listing_start("logs/", &cp, start),
            (Some("logs/b.json".into()), None)
        );
    }

    #[test]
    fn late_files_within_the_margin_are_taken_and_stored_ones_are_not() {
        let mut cp = Checkpoint::default();
        for k in [key("02", "1000", "a"), key("02", "1010", "b")] {
            cp = advance(cp, k);
        }
        assert_eq!(cp.resume, Some(key("02", "1010", "b")));
        let (_, settled) = listing_start(P, &cp, Utc::now());
        let listed = vec![
            key("02", "0930", "old"),
            key("02", "1000", "a"),
            key("02", "1005", "late"),
            key("02", "1010", "b"),
            key("02", "1010", "a-same-minute"),
            key("02", "1020", "c"),
            format!("{P}2024/01/02/readme.txt"),
        ];
        assert_eq!(
            new_keys(listed, &cp, settled),
            [
                key("02", "1005", "late"),
                key("02", "1010", "a-same-minute"),
                key("02", "1020", "c")
            ]
        );
        // The remembered keys stay within the margin of the newest.
        let cp = advance(cp, key("02", "1040", "d"));
        assert_eq!(
            cp.recent_keys,
            [key("02", "1040", "d")],
            "1000 and 1010 are past 1040's margin"
        );
    }

    #[test]
    fn listings_are_read_from_their_xml() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><IsTruncated>true</IsTruncated><Contents><Key>a/x&amp;y.json.gz</Key><Size>1</Size></Contents><Contents><Key>a/z.json.gz</Key></Contents></ListBucketResult>"#;
        assert_eq!(xml_values(xml, "Key"), ["a/x&y.json.gz", "a/z.json.gz"]);
        assert_eq!(xml_values(xml, "IsTruncated"), ["true"]);
    }
}
