//! Alerts for sources that stopped sending.
//!
//! A SaaS integration that goes quiet is a blind spot that looks like a quiet day: an expired
//! or revoked API token, a removed webhook, an audit log switched off by someone covering their
//! tracks. [`SourceSilence`] turns "no event from this source for longer than `after`" into an
//! alert. The service asks it about each source's newest stored event at an interval; the
//! detector keeps no state of its own. When the source sends again, [`resumed_note`] is the
//! note the service resolves the alert with.
//!
//! The alert's id is made from the tenant, the source and its newest event time, so one silence
//! is one alert however often it is checked; a source that sends again and then goes quiet
//! again is a new alert.

use std::time::Duration;

use chrono::{DateTime, Utc};
use perimeter_model::{Alert, DetectorKind, EntityKind, Severity};
use serde::{Deserialize, Serialize};

/// The rule id of silence alerts. `GET /rules` lists it while silence alerts are on, and a
/// tenant switches it off like any rule.
pub const SOURCE_SILENT_RULE_ID: &str = "perimeter.source_silent";

/// The `[silence]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SilenceConfig {
    /// Alert when a source's newest event is older than this many seconds. 0 (the default)
    /// turns silence alerts off; 21600 (6 hours) suits sources that send every hour.
    pub after_seconds: u64,
    /// Sources whose newest event is older than this many days are taken for retired (or
    /// for a backfill of old data) and not alerted on.
    pub lookback_days: u64,
    /// How often the service checks, in seconds.
    pub check_seconds: u64,
}

impl Default for SilenceConfig {
    fn default() -> SilenceConfig {
        SilenceConfig {
            after_seconds: 0,
            lookback_days: 7,
            check_seconds: 60,
        }
    }
}

/// Decides which sources are silent (see the module documentation).
#[derive(Debug, Clone)]
pub struct SourceSilence {
    after: chrono::TimeDelta,
    lookback: chrono::TimeDelta,
    check_every: Duration,
}

impl SourceSilence {
    /// `None` when silence alerts are off (`after_seconds = 0`).
    pub fn new(config: &SilenceConfig) -> Option<SourceSilence> {
        if config.after_seconds == 0 {
            return None;
        }
        let seconds =
            |s: u64| chrono::TimeDelta::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000));
        Some(SourceSilence {
            after: seconds(config.after_seconds),
            lookback: seconds(config.lookback_days.saturating_mul(86_400)),
            check_every: Duration::from_secs(config.check_seconds.max(1)),
        })
    }

    /// How often the service should check.
    pub fn check_every(&self) -> Duration {
        self.check_every
    }

    /// The alert for `source` of `tenant` if its newest event, at `newest`, is older than
    /// `after` at `now` (and not older than the lookback).
    pub fn alert(
        &self,
        tenant: &str,
        source: &str,
        newest: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<Alert> {
        let quiet = now - newest;
        if quiet <= self.after || quiet > self.lookback {
            return None;
        }
        let mut alert = Alert::new(
            SOURCE_SILENT_RULE_ID,
            format!("Source went silent: no {source} events for {}", span(quiet)),
            Severity::Medium,
            DetectorKind::SourceHealth,
            source,
            tenant,
            newest,
            source,
            EntityKind::App,
        );
        alert.description = Some(format!(
            "The newest stored {source} event is from {}. An expired or revoked API token, a \
             removed webhook or an audit log switched off at the vendor all look like this: \
             check the integration (`perimeter poll-check`, the vendor's audit settings).",
            newest.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
        alert.tags = vec!["source_health".into()];
        // One silence, one alert: the newest event time is the evidence.
        alert.event_ids = vec![format!("newest:{}", newest.timestamp_micros())];
        Some(alert.seal())
    }
}

/// The newest event time a silence alert was raised on (its evidence); `None` for other alerts.
pub fn silent_since(alert: &Alert) -> Option<DateTime<Utc>> {
    if alert.rule_id != SOURCE_SILENT_RULE_ID {
        return None;
    }
    alert
        .event_ids
        .iter()
        .find_map(|id| id.strip_prefix("newest:")?.parse::<i64>().ok())
        .and_then(DateTime::from_timestamp_micros)
}

/// The note that resolves a silence alert once its source has sent again: `Some` when the
/// source's newest stored event, `newest`, is newer than the one the alert was raised on. A
/// silence that ended needs no analyst; one still going on stays open.
pub fn resumed_note(alert: &Alert, newest: DateTime<Utc>) -> Option<String> {
    let since = silent_since(alert)?;
    let at = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    (newest > since).then(|| {
        format!(
            "{} sent again: its newest event is from {}, after a silence since {} ({})",
            alert.source,
            at(newest),
            at(since),
            span(newest - since)
        )
    })
}

/// A quiet span as people say it: whole days, else hours, else minutes.
fn span(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    match s {
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 2 * 3_600 => format!("{} hours", s / 3_600),
        s if s >= 120 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + h * 3_600, 0).unwrap()
    }

    fn silence() -> SourceSilence {
        SourceSilence::new(&SilenceConfig {
            after_seconds: 6 * 3_600,
            ..SilenceConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn off_by_default() {
        assert!(SourceSilence::new(&SilenceConfig::default()).is_none());
    }

    #[test]
    fn a_source_quiet_past_the_threshold_raises_one_alert_per_silence() {
        let s = silence();
        assert!(
            s.alert("acme", "okta", at(0), at(6)).is_none(),
            "not past 6 h"
        );
        let a = s.alert("acme", "okta", at(0), at(7)).unwrap();
        assert_eq!(a.rule_id, SOURCE_SILENT_RULE_ID);
        assert_eq!((a.entity.as_str(), a.source.as_str()), ("okta", "okta"));
        assert_eq!(a.detector, DetectorKind::SourceHealth);
        assert_eq!(a.title, "Source went silent: no okta events for 7 hours");
        // Checked again later: the same silence, the same alert id.
        let later = s.alert("acme", "okta", at(0), at(30)).unwrap();
        assert_eq!(later.id, a.id);
        assert_eq!(
            later.title,
            "Source went silent: no okta events for 30 hours"
        );
        // Sending again and going quiet again is a new silence; another tenant is another.
        assert_ne!(s.alert("acme", "okta", at(10), at(17)).unwrap().id, a.id);
        assert_ne!(s.alert("globex", "okta", at(0), at(7)).unwrap().id, a.id);
        // Older than the lookback: a retired source or a backfill, not a silence.
        assert!(s.alert("acme", "okta", at(0), at(8 * 24)).is_none());
        // Stamped in the future: not quiet.
        assert!(s.alert("acme", "okta", at(10), at(0)).is_none());
    }

    #[test]
    fn a_silence_ends_when_the_source_sends_a_newer_event() {
        let s = silence();
        let a = s.alert("acme", "okta", at(0), at(7)).unwrap();
        assert_eq!(silent_since(&a), Some(at(0)));
        assert!(resumed_note(&a, at(0)).is_none(), "nothing newer yet");
        let note = resumed_note(&a, at(9)).unwrap();
        assert!(
            note.starts_with("okta sent again: its newest event is from "),
            "{note}"
        );
        assert!(note.ends_with("(9 hours)"), "{note}");
        // Other alerts are no silences.
        let mut other = a.clone();
        other.rule_id = "okta_bruteforce".into();
        assert!(silent_since(&other).is_none() && resumed_note(&other, at(9)).is_none());
    }

    #[test]
    fn spans_read_in_the_largest_whole_unit() {
        for (seconds, text) in [
            (30, "30 seconds"),
            (600, "10 minutes"),
            (3 * 3_600 + 59, "3 hours"),
            (3 * 86_400, "3 days"),
        ] {
            assert_eq!(span(chrono::TimeDelta::seconds(seconds)), text);
        }
    }
}
