//! `[store]` table of `perimeter.toml`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Result, StoreError};

/// Where and how the store keeps events, alerts and dead letters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Root directory of everything the store writes (`index/`, `parquet/`, `alerts/`,
    /// `dead_letters/`).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Default retention in days for every tenant and source; `0` keeps data forever.
    /// A day partition is dropped once it is older than this many whole days.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Per tenant and/or source overrides of `retention_days`; the most specific rule wins
    /// (tenant + source, then source, then tenant).
    #[serde(default)]
    pub retention: Vec<RetentionRule>,
    /// A Parquet file holds at most this many rows; a larger batch for one partition is split.
    #[serde(default = "default_parquet_max_rows_per_file")]
    pub parquet_max_rows_per_file: usize,
    /// [`crate::Store::compact`] merges the small Parquet files of a partition (one per batch)
    /// once they are older than this, so recent files are left alone while they are still
    /// being added to; `0` merges small files of any age.
    #[serde(default = "default_parquet_max_file_age_seconds")]
    pub parquet_max_file_age_seconds: u64,
    /// How often `perimeter run` compacts (every 10 minutes by default; `0`: never, the small
    /// files stay: a reader of the Parquet tree then opens one file per stored batch).
    #[serde(default = "default_parquet_compact_every_seconds")]
    pub parquet_compact_every_seconds: u64,
    /// Group commit window: concurrent `write_batch` callers arriving within this many
    /// milliseconds share one tantivy commit and one set of Parquet files. `0` commits each
    /// batch on its own.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// Memory budget of one tantivy index writer, in bytes (split across its threads).
    #[serde(default = "default_index_writer_memory_bytes")]
    pub index_writer_memory_bytes: usize,
    /// Indexing threads per tantivy index writer. Each thread writes a segment of its own at
    /// every commit (the segment re-adds the vocabulary the others share), so one thread per
    /// writer costs the least CPU; the touched indexes commit in parallel, and a batch rarely
    /// lands in a single index, so more threads seldom buy wall time.
    #[serde(default = "default_index_writer_threads")]
    pub index_writer_threads: usize,
    /// How many (tenant, day) index writers stay open; the least recently used is closed.
    #[serde(default = "default_max_open_writers")]
    pub max_open_writers: usize,
    /// Sources whose raw records are left out of free-text search: their raw values are not
    /// put in the catch-all `all` field, the largest part of indexing an event (about a
    /// third of the store's CPU per event). Their ECS fields are searched as usual,
    /// bare words included, and the raw record is still stored, returned and exported. For
    /// high-volume sources (e.g. CloudTrail data events) where searching every vendor field
    /// is not worth the ingest cost. Default: none.
    #[serde(default)]
    pub raw_text_search_off: Vec<String>,
    /// A Sigma rule that matches the same entity again within this many seconds of its open
    /// (or acknowledged) alert's occurrences adds to that alert (`count`, `last_seen`, the
    /// first 100 evidence events) instead of raising another: 500 failed logins of one user
    /// are one alert to triage, not 500. Resolving the alert ends its group. Correlation,
    /// behavioural and source-health alerts group by their own rules. `0`: every match is an
    /// alert of its own. Default: one hour.
    #[serde(default = "default_alert_group_seconds")]
    pub alert_group_seconds: u64,
    /// Closed alerts (resolved, false positive) whose last occurrence is older than this many
    /// whole days are removed by retention, with their history. Open and acknowledged alerts
    /// are never removed. Separate from `retention_days`: triage records usually have to
    /// outlive the events. Default `0`: alerts are kept forever.
    #[serde(default)]
    pub alert_retention_days: u32,
    /// The alert Parquet files (`parquet/alerts/`, one per tenant and day, rewritten whole) are
    /// brought up to date at most this often while alerts are stored or triaged, and always
    /// when the store is flushed or closed (and at open). Rewriting a day's file with every
    /// batch costs ~2 ms per 1,000 alerts of that day, per batch: an alert storm would slow every
    /// batch it touches. The journal is what makes alerts durable and what the API reads, so
    /// only readers of the Parquet export see the delay. `0`: rewritten with every batch.
    /// Default: 10 seconds.
    #[serde(default = "default_alert_parquet_export_seconds")]
    pub alert_parquet_export_seconds: u64,
}

/// Retention override for a tenant, a source, or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    /// Tenant the rule applies to; absent means every tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Source (`okta`, `github`, ...) the rule applies to; absent means every source.
    #[serde(default)]
    pub source: Option<String>,
    /// Days to keep; `0` keeps forever.
    pub days: u32,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_retention_days() -> u32 {
    90
}
fn default_parquet_max_rows_per_file() -> usize {
    1_000_000
}
fn default_parquet_max_file_age_seconds() -> u64 {
    3600
}
fn default_parquet_compact_every_seconds() -> u64 {
    600
}
fn default_commit_interval_ms() -> u64 {
    0
}
fn default_index_writer_memory_bytes() -> usize {
    128 * 1024 * 1024
}
fn default_index_writer_threads() -> usize {
    1
}
fn default_alert_parquet_export_seconds() -> u64 {
    10
}
fn default_max_open_writers() -> usize {
    8
}
fn default_alert_group_seconds() -> u64 {
    3600
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: default_data_dir(),
            retention_days: default_retention_days(),
            retention: Vec::new(),
            parquet_max_rows_per_file: default_parquet_max_rows_per_file(),
            parquet_max_file_age_seconds: default_parquet_max_file_age_seconds(),
            parquet_compact_every_seconds: default_parquet_compact_every_seconds(),
            commit_interval_ms: default_commit_interval_ms(),
            index_writer_memory_bytes: default_index_writer_memory_bytes(),
            index_writer_threads: default_index_writer_threads(),
            max_open_writers: default_max_open_writers(),
            raw_text_search_off: Vec::new(),
            alert_group_seconds: default_alert_group_seconds(),
            alert_retention_days: 0,
            alert_parquet_export_seconds: default_alert_parquet_export_seconds(),
        }
    }
}

impl StoreConfig {
    /// A default config rooted at `data_dir`.
    pub fn at(data_dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            data_dir: data_dir.into(),
            ..StoreConfig::default()
        }
    }

    /// Checks that need no IO.
    pub fn validate(&self) -> Result<()> {
        if self.parquet_max_rows_per_file == 0 {
            return Err(StoreError::InvalidConfig(
                "parquet_max_rows_per_file must be > 0".into(),
            ));
        }
        if self.index_writer_threads == 0 || self.index_writer_threads > 16 {
            return Err(StoreError::InvalidConfig(
                "index_writer_threads must be in 1..=16".into(),
            ));
        }
        // tantivy refuses less than 15 MB per indexing thread.
        let min = 15_000_000 * self.index_writer_threads;
        if self.index_writer_memory_bytes < min {
            return Err(StoreError::InvalidConfig(format!(
                "index_writer_memory_bytes must be at least {min} for {} threads",
                self.index_writer_threads
            )));
        }
        if self.max_open_writers == 0 {
            return Err(StoreError::InvalidConfig(
                "max_open_writers must be > 0".into(),
            ));
        }
        if self.alert_parquet_export_seconds > 86_400 {
            return Err(StoreError::InvalidConfig(
                "alert_parquet_export_seconds must be <= 86400".into(),
            ));
        }
        if self.commit_interval_ms > 60_000 {
            return Err(StoreError::InvalidConfig(
                "commit_interval_ms must be <= 60000".into(),
            ));
        }
        Ok(())
    }

    /// Whether the raw values of `source`'s events are searched as free text (`all`).
    pub fn raw_text_searched(&self, source: &str) -> bool {
        !self.raw_text_search_off.iter().any(|s| s == source)
    }

    /// Retention in days for one tenant and source (`0` = forever).
    pub fn retention_days_for(&self, tenant: &str, source: &str) -> u32 {
        let mut best: Option<(u8, u32)> = None;
        for rule in &self.retention {
            let tenant_ok = rule.tenant.as_deref().is_none_or(|t| t == tenant);
            let source_ok = rule.source.as_deref().is_none_or(|s| s == source);
            if !tenant_ok || !source_ok {
                continue;
            }
            let specificity = match (rule.tenant.is_some(), rule.source.is_some()) {
                (true, true) => 3,
                (false, true) => 2,
                (true, false) => 1,
                (false, false) => 0,
            };
            if best.is_none_or(|(s, _)| specificity > s) {
                best = Some((specificity, rule.days));
            }
        }
        best.map(|(_, d)| d).unwrap_or(self.retention_days)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_specific_retention_rule_wins() {
        let c = StoreConfig {
            retention_days: 90,
            retention: vec![
                RetentionRule {
                    tenant: Some("acme".into()),
                    source: None,
                    days: 30,
                },
                RetentionRule {
                    tenant: None,
                    source: Some("github".into()),
                    days: 10,
                },
                RetentionRule {
                    tenant: Some("acme".into()),
                    source: Some("okta".into()),
                    days: 7,
                },
            ],
            ..StoreConfig::default()
        };
        assert_eq!(c.retention_days_for("acme", "okta"), 7);
        assert_eq!(c.retention_days_for("acme", "github"), 10);
        assert_eq!(c.retention_days_for("acme", "slack"), 30);
        assert_eq!(c.retention_days_for("other", "slack"), 90);
        assert_eq!(c.retention_days_for("other", "github"), 10);
    }

    #[test]
    fn toml_rejects_unknown_keys_and_fills_defaults() {
        let c: StoreConfig = toml::from_str("data_dir = \"/tmp/x\"\nretention_days = 5\n").unwrap();
        assert_eq!(c.retention_days, 5);
        assert_eq!(c.parquet_max_rows_per_file, 1_000_000);
        assert_eq!(c.index_writer_threads, 1);
        assert!(toml::from_str::<StoreConfig>("data_dirr = \"/tmp/x\"").is_err());
        assert!(StoreConfig {
            parquet_max_rows_per_file: 0,
            ..StoreConfig::default()
        }
        .validate()
        .is_err());
    }
}
