//! Where things live under `data_dir`, and the hive-style encoding of partition values.
//!
//! ```text
//! index/tenant=<t>/dt=YYYY-MM-DD/                      tantivy index of one tenant and day
//! parquet/events/tenant=<t>/source=<s>/dt=YYYY-MM-DD/part-<batch seq>-<n>.parquet
//! alerts/tenant=<t>/journal.jsonl                      alert journal (alerts + triage updates)
//! parquet/alerts/tenant=<t>/dt=YYYY-MM-DD/alerts.parquet  the day's alerts as they stand
//! dead_letters/tenant=<t>/dead_letters.jsonl
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use crate::error::IoContext;
use crate::Result;

/// Hive-style escaping of a partition value: every ASCII character outside `[A-Za-z0-9_-]`
/// becomes `%XX`, so a tenant called `../x` can never leave its directory and `.`-prefixed names
/// never become hidden files. Readers (Spark, DuckDB, pyarrow) decode `%XX` in partition values.
///
/// Other characters stay as they are, as Hive writes them: Spark decodes each `%XX` as one
/// character, so a letter written as its UTF-8 bytes (`ü` as `%C3%BC`) would read as two
/// (`Ã¼`) there, while pyarrow and DuckDB decode either form. Directories written when letters
/// were escaped too still decode to the same name here, and the names the product accepts
/// (tenants `[A-Za-z0-9-_.@]`, sources `[a-z0-9_]`) are ASCII, so no store the service wrote
/// has such a directory.
pub fn encode_partition_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' || !c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("%{:02X}", c as u32));
        }
    }
    out
}

/// Inverse of [`encode_partition_value`]; `None` when the text is not a valid encoding.
pub fn decode_partition_value(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `key=value` directory name -> decoded value.
pub fn partition_value(dir_name: &str, key: &str) -> Option<String> {
    let rest = dir_name.strip_prefix(key)?.strip_prefix('=')?;
    decode_partition_value(rest)
}

pub fn format_day(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

pub fn parse_day(dir_name: &str) -> Option<NaiveDate> {
    let v = dir_name.strip_prefix("dt=")?;
    NaiveDate::parse_from_str(v, "%Y-%m-%d").ok()
}

/// One event Parquet partition directory ([`Layout::event_partitions`]).
#[derive(Debug, Clone)]
pub struct EventPartition {
    pub tenant: String,
    pub source: String,
    pub day: NaiveDate,
    pub dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn index_root(&self) -> PathBuf {
        self.root.join("index")
    }
    /// The (tenant, day) index directories under the index root, with the tenant decoded;
    /// other names (a rebuild's `.rebuild-*`) are left out.
    pub fn index_days(&self) -> Result<Vec<(String, NaiveDate, PathBuf)>> {
        let mut out = Vec::new();
        for (tname, tdir) in list_dirs(&self.index_root())? {
            let Some(tenant) = partition_value(&tname, "tenant") else {
                continue;
            };
            for (dname, ddir) in list_dirs(&tdir)? {
                if let Some(day) = parse_day(&dname) {
                    out.push((tenant.clone(), day, ddir));
                }
            }
        }
        Ok(out)
    }
    pub fn index_dir(&self, tenant: &str, day: NaiveDate) -> PathBuf {
        self.index_root()
            .join(format!("tenant={}", encode_partition_value(tenant)))
            .join(format!("dt={}", format_day(day)))
    }
    pub fn parquet_events_root(&self) -> PathBuf {
        self.root.join("parquet").join("events")
    }
    /// The event Parquet partitions (`tenant=/source=/dt=` directories), with their tenant,
    /// source and day decoded; other names are left out.
    pub fn event_partitions(&self) -> Result<Vec<EventPartition>> {
        let mut out = Vec::new();
        for (tname, tdir) in list_dirs(&self.parquet_events_root())? {
            let Some(tenant) = partition_value(&tname, "tenant") else {
                continue;
            };
            for (sname, sdir) in list_dirs(&tdir)? {
                let Some(source) = partition_value(&sname, "source") else {
                    continue;
                };
                for (dname, dir) in list_dirs(&sdir)? {
                    if let Some(day) = parse_day(&dname) {
                        out.push(EventPartition {
                            tenant: tenant.clone(),
                            source: source.clone(),
                            day,
                            dir,
                        });
                    }
                }
            }
        }
        Ok(out)
    }
    pub fn parquet_partition_dir(&self, tenant: &str, source: &str, day: NaiveDate) -> PathBuf {
        self.parquet_events_root()
            .join(format!("tenant={}", encode_partition_value(tenant)))
            .join(format!("source={}", encode_partition_value(source)))
            .join(format!("dt={}", format_day(day)))
    }
    /// The Parquet export of `tenant`'s alerts of `day` (see `alert_parquet`).
    pub fn parquet_alerts_file(&self, tenant: &str, day: NaiveDate) -> PathBuf {
        self.root
            .join("parquet")
            .join("alerts")
            .join(format!("tenant={}", encode_partition_value(tenant)))
            .join(format!("dt={}", format_day(day)))
            .join("alerts.parquet")
    }
    pub fn alerts_journal(&self, tenant: &str) -> PathBuf {
        self.root
            .join("alerts")
            .join(format!("tenant={}", encode_partition_value(tenant)))
            .join("journal.jsonl")
    }
    pub fn alerts_root(&self) -> PathBuf {
        self.root.join("alerts")
    }
    pub fn dead_letters_file(&self, tenant: &str) -> PathBuf {
        self.root
            .join("dead_letters")
            .join(format!("tenant={}", encode_partition_value(tenant)))
            .join("dead_letters.jsonl")
    }
    pub fn dead_letters_root(&self) -> PathBuf {
        self.root.join("dead_letters")
    }
}

/// Subdirectories of `dir` as (name, path); a missing `dir` is empty.
pub fn list_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).at(dir),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.at(dir)?;
        if entry.file_type().at(entry.path())?.is_dir() {
            if let Some(name) = entry.file_name().to_str() {
                out.push((name.to_string(), entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// fsync a directory so a rename or create inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|f| f.sync_all()).at(dir)
}

/// Create `dir` and fsync its parent chain up to (excluding) `root`, so a fresh partition
/// directory survives a crash.
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).at(dir)?;
    let mut cur = dir.parent();
    // Three levels cover tenant=/source=/dt= partitions.
    for _ in 0..4 {
        match cur {
            Some(p) if p.exists() => {
                sync_dir(p)?;
                cur = p.parent();
            }
            _ => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_values_round_trip_and_never_escape_the_directory() {
        for v in [
            "acme",
            "a b",
            "../etc",
            ".hidden",
            "tenant/with/slash",
            "ünï",
            "a%b",
            "",
        ] {
            let e = encode_partition_value(v);
            assert!(
                !e.contains('/') && !e.contains('.') && !e.starts_with('.'),
                "{e}"
            );
            assert_eq!(decode_partition_value(&e).as_deref(), Some(v));
        }
        assert_eq!(encode_partition_value("acme-1_x"), "acme-1_x");
        // Letters beyond ASCII as they are (Spark's decoding); escaped, as once, they decode too.
        assert_eq!(encode_partition_value("ü %"), "ü%20%25");
        assert_eq!(
            decode_partition_value("%C3%BC%20%25").as_deref(),
            Some("ü %")
        );
        assert_eq!(decode_partition_value("%zz"), None);
        assert_eq!(
            partition_value("tenant=a%20b", "tenant").as_deref(),
            Some("a b")
        );
        assert_eq!(
            parse_day("dt=2026-11-25"),
            NaiveDate::from_ymd_opt(2026, 11, 25)
        );
        assert_eq!(parse_day("dt=2026-13-25"), None);
    }
}
