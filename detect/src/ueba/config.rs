//! The `[ueba]` table of `perimeter.toml`: global settings, one table per detector, and
//! per-tenant overrides (`[ueba.tenants.<tenant>.<detector>]`) that replace only the keys they set.

use std::collections::BTreeMap;
use std::path::PathBuf;

use perimeter_model::Severity;
use serde::{Deserialize, Serialize};

use crate::DetectError;

/// Declares a detector config struct with its defaults, plus the matching per-tenant override
/// struct (every field optional) and the merge. One macro instead of two hand-written structs per
/// detector keeps the override table from drifting out of sync with the config it overrides.
macro_rules! detector_config {
    (
        $(#[doc = $sdoc:expr])*
        $name:ident / $over:ident {
            $( $(#[doc = $doc:expr])* $field:ident : $ty:ty = $default:expr ),* $(,)?
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }

        /// Per-tenant override: every key optional; keys left out keep the global value.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $over {
            $( $(#[doc = $doc])* #[serde(skip_serializing_if = "Option::is_none")] pub $field: Option<$ty>, )*
        }

        impl $name {
            /// This config with the keys set in `o` replaced.
            pub fn with_override(&self, o: &$over) -> Self {
                Self { $( $field: o.$field.clone().unwrap_or_else(|| self.$field.clone()), )* }
            }
        }
    };
}

detector_config! {
    /// `auth_failure_burst`: failed authentications per user and per source IP within a window,
    /// above the entity's baseline and above an absolute floor.
    AuthFailureBurstConfig / AuthFailureBurstOverride {
        /// Run this detector.
        enabled: bool = true,
        /// Sliding window length in seconds (event time).
        window_seconds: u64 = 600,
        /// Absolute floor: fewer failures than this in the window never alert.
        min_failures: u64 = 10,
        /// Alert only when the tail probability of the count under the baseline is at most this.
        max_p_value: f64 = 1e-6,
        /// Hours of history before an entity's own baseline is trusted; until then the prior is used.
        warmup_hours: u64 = 24,
        /// Baseline assumed (failures per hour) while an entity warms up, and the lowest baseline ever used.
        prior_per_hour: f64 = 0.5,
        /// Severity before score escalation.
        severity: Severity = Severity::Medium,
        /// Repeats for the same entity within this many seconds are grouped into one alert.
        suppress_seconds: u64 = 3600,
    }
}

detector_config! {
    /// `password_spray`: one source IP failing against many distinct users within a window.
    PasswordSprayConfig / PasswordSprayOverride {
        /// Run this detector.
        enabled: bool = true,
        /// Sliding window length in seconds (event time).
        window_seconds: u64 = 600,
        /// Distinct users with a failed login from one IP in the window that make a spray.
        min_distinct_users: u64 = 20,
        /// Upper bound on distinct users remembered per IP (exact count up to this bound).
        max_tracked_users: u64 = 512,
        /// Severity before score escalation.
        severity: Severity = Severity::High,
        /// Repeats for the same IP within this many seconds are grouped into one alert.
        suppress_seconds: u64 = 3600,
    }
}

detector_config! {
    /// `brute_force_success`: a burst of failures followed by a success for the same user.
    BruteForceSuccessConfig / BruteForceSuccessOverride {
        /// Run this detector.
        enabled: bool = true,
        /// How far back (seconds, event time) failures count towards the burst before a success.
        window_seconds: u64 = 900,
        /// Failures within the window that make a success suspicious.
        min_failures: u64 = 5,
        /// Severity before score escalation.
        severity: Severity = Severity::High,
        /// Repeats for the same user within this many seconds are grouped into one alert.
        suppress_seconds: u64 = 3600,
    }
}

detector_config! {
    /// `rate_limit_violation`: rate-limit / throttling / HTTP 429 events per token, app or IP above baseline.
    RateLimitViolationConfig / RateLimitViolationOverride {
        /// Run this detector.
        enabled: bool = true,
        /// Sliding window length in seconds (event time).
        window_seconds: u64 = 600,
        /// Absolute floor of rate-limit events in the window.
        min_events: u64 = 5,
        /// Alert only when the tail probability of the count under the baseline is at most this.
        max_p_value: f64 = 1e-4,
        /// Hours of history before an entity's own baseline is trusted; until then the prior is used.
        warmup_hours: u64 = 24,
        /// Baseline assumed (events per hour) while an entity warms up, and the lowest baseline ever used.
        prior_per_hour: f64 = 0.2,
        /// Severity before score escalation.
        severity: Severity = Severity::Medium,
        /// Repeats for the same entity within this many seconds are grouped into one alert.
        suppress_seconds: u64 = 3600,
    }
}

detector_config! {
    /// `config_change`: security-relevant configuration changes by an actor who rarely changes
    /// configuration, or outside the actor's usual hours. Every change feeds the actor's baseline.
    ConfigChangeConfig / ConfigChangeOverride {
        /// Run this detector.
        enabled: bool = true,
        /// Hours an actor must have been seen before its change habits are judged.
        warmup_hours: u64 = 72,
        /// An actor making fewer security config changes per week than this is "rare".
        rare_max_changes_per_week: f64 = 1.0,
        /// An hour of day (with its neighbours) holding at most this share of the actor's activity is unusual.
        unusual_hour_max_share: f64 = 0.02,
        /// Events of the actor needed before its usual hours are judged.
        min_activity_events: u64 = 50,
        /// Lowercase keywords in the action (or category/type) that make a change security-relevant.
        security_keywords: Vec<String> = default_security_keywords(),
        /// Severity before score escalation.
        severity: Severity = Severity::Medium,
        /// Repeats for the same actor within this many seconds are grouped into one alert.
        suppress_seconds: u64 = 3600,
    }
}

detector_config! {
    /// `first_seen`: a user from a never-seen country / ASN / user-agent family / OAuth client,
    /// and a new OAuth app or integration for the org.
    FirstSeenConfig / FirstSeenOverride {
        /// Run this detector.
        enabled: bool = true,
        /// Hours an entity must have been seen before a new value alerts (values are learned meanwhile).
        warmup_hours: u64 = 72,
        /// Attributes to track.
        attributes: Vec<FirstSeenAttribute> = FirstSeenAttribute::ALL.to_vec(),
        /// Values remembered per entity and attribute (least recently seen evicted first).
        max_values_per_attribute: u64 = 32,
        /// Severity before score escalation.
        severity: Severity = Severity::Low,
        /// Repeats for the same entity within this many seconds are grouped into one alert.
        suppress_seconds: u64 = 3600,
    }
}

detector_config! {
    /// `volume_anomaly`: downloads, exports, deletions and API calls per user far above that
    /// user's own baseline.
    VolumeAnomalyConfig / VolumeAnomalyOverride {
        /// Run this detector.
        enabled: bool = true,
        /// Sliding window length in seconds (event time).
        window_seconds: u64 = 3600,
        /// Absolute floor of events in the window.
        min_events: u64 = 50,
        /// Alert only when the tail probability of the count under the baseline is at most this.
        max_p_value: f64 = 1e-6,
        /// The count must also be at least this multiple of the expected count (keeps busy
        /// accounts with a tiny variance from alerting on a modest rise).
        min_ratio: f64 = 5.0,
        /// Hours of history before a user can alert at all.
        warmup_hours: u64 = 24,
        /// Lowest baseline (events per hour) ever used, so a silent user is not scored against zero.
        prior_per_hour: f64 = 0.5,
        /// Severity before score escalation.
        severity: Severity = Severity::Medium,
        /// Repeats for the same user within this many seconds are grouped into one alert.
        suppress_seconds: u64 = 3600,
    }
}

/// What `first_seen` tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FirstSeenAttribute {
    /// `source.geo.country_iso_code` per user.
    Country,
    /// `source.as.number` per user.
    Asn,
    /// User-agent family (`Chrome`, `python-requests`, ...) per user.
    UserAgentFamily,
    /// OAuth client / application used by a user.
    OauthClient,
    /// OAuth app or integration granted/installed for the org.
    OrgApp,
}

impl FirstSeenAttribute {
    pub const ALL: [FirstSeenAttribute; 5] = [
        FirstSeenAttribute::Country,
        FirstSeenAttribute::Asn,
        FirstSeenAttribute::UserAgentFamily,
        FirstSeenAttribute::OauthClient,
        FirstSeenAttribute::OrgApp,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            FirstSeenAttribute::Country => "country",
            FirstSeenAttribute::Asn => "ASN",
            FirstSeenAttribute::UserAgentFamily => "user-agent family",
            FirstSeenAttribute::OauthClient => "OAuth client",
            FirstSeenAttribute::OrgApp => "OAuth app/integration",
        }
    }
}

fn default_security_keywords() -> Vec<String> {
    [
        "policy",
        "mfa",
        "factor",
        "sso",
        "saml",
        "idp",
        "federation",
        "admin",
        "role",
        "privilege",
        "permission",
        "audit",
        "log",
        "integration",
        "oauth",
        "app",
        "token",
        "key",
        "password",
        "retention",
        "trust",
        "conditional",
        "security",
        "member",
        "group",
        "webhook",
        "deploy_key",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// Where and how often the state is snapshotted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// Snapshot file; restored on start when it exists, written on flush. `None` keeps state in memory only.
    pub path: Option<PathBuf>,
    /// Also write a snapshot every this many events (0 = only on flush).
    pub every_events: u64,
}

/// Per-tenant overrides; each table replaces only the keys it sets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantOverrides {
    /// Overrides for `auth_failure_burst`.
    pub auth_failure_burst: AuthFailureBurstOverride,
    /// Overrides for `password_spray`.
    pub password_spray: PasswordSprayOverride,
    /// Overrides for `brute_force_success`.
    pub brute_force_success: BruteForceSuccessOverride,
    /// Overrides for `rate_limit_violation`.
    pub rate_limit_violation: RateLimitViolationOverride,
    /// Overrides for `config_change`.
    pub config_change: ConfigChangeOverride,
    /// Overrides for `first_seen`.
    pub first_seen: FirstSeenOverride,
    /// Overrides for `volume_anomaly`.
    pub volume_anomaly: VolumeAnomalyOverride,
}

/// The `[ueba]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UebaConfig {
    /// Run behavioural detection at all.
    pub enabled: bool,
    /// Most entities (tenant + user/IP/token/app/org) kept; the least recently seen are evicted beyond it.
    pub max_entities: u64,
    /// Entities not seen for this many days (event time) are forgotten.
    pub entity_idle_days: u64,
    /// Half-life of the learned rates, in hours: older behaviour weighs half as much after it.
    pub baseline_half_life_hours: f64,
    /// Days of an entity's own history before hour-of-day x day-of-week seasonality is applied.
    pub seasonality_min_history_days: u64,
    /// Evidence event ids kept per alert (the most recent ones).
    pub max_evidence_events: u64,
    /// An alert whose score (-log10 p, or the detector's own score) reaches this is raised one severity level.
    pub escalate_score: f64,
    /// Snapshot settings.
    pub snapshot: SnapshotConfig,
    /// `auth_failure_burst` settings.
    pub auth_failure_burst: AuthFailureBurstConfig,
    /// `password_spray` settings.
    pub password_spray: PasswordSprayConfig,
    /// `brute_force_success` settings.
    pub brute_force_success: BruteForceSuccessConfig,
    /// `rate_limit_violation` settings.
    pub rate_limit_violation: RateLimitViolationConfig,
    /// `config_change` settings.
    pub config_change: ConfigChangeConfig,
    /// `first_seen` settings.
    pub first_seen: FirstSeenConfig,
    /// `volume_anomaly` settings.
    pub volume_anomaly: VolumeAnomalyConfig,
    /// Per-tenant overrides, keyed by tenant name.
    pub tenants: BTreeMap<String, TenantOverrides>,
}

impl Default for UebaConfig {
    fn default() -> Self {
        UebaConfig {
            enabled: true,
            max_entities: 2_000_000,
            entity_idle_days: 30,
            baseline_half_life_hours: 168.0,
            seasonality_min_history_days: 14,
            max_evidence_events: 20,
            escalate_score: 9.0,
            snapshot: SnapshotConfig::default(),
            auth_failure_burst: Default::default(),
            password_spray: Default::default(),
            brute_force_success: Default::default(),
            rate_limit_violation: Default::default(),
            config_change: Default::default(),
            first_seen: Default::default(),
            volume_anomaly: Default::default(),
            tenants: BTreeMap::new(),
        }
    }
}

/// The detector settings that apply to one tenant (global values with its overrides applied).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DetectorSettings {
    pub auth_failure_burst: AuthFailureBurstConfig,
    pub password_spray: PasswordSprayConfig,
    pub brute_force_success: BruteForceSuccessConfig,
    pub rate_limit_violation: RateLimitViolationConfig,
    pub config_change: ConfigChangeConfig,
    pub first_seen: FirstSeenConfig,
    pub volume_anomaly: VolumeAnomalyConfig,
}

/// The longest window a detector takes: event-time arithmetic on i64 seconds stays far from
/// overflow.
pub(crate) const MAX_WINDOW_SECONDS: u64 = 31 * 86_400;

impl UebaConfig {
    /// The detectors that run (globally; tenants may switch more off). None when UEBA is off.
    pub fn detectors(&self) -> Vec<super::UebaDetector> {
        use super::UebaDetector as D;
        if !self.enabled {
            return Vec::new();
        }
        D::ALL
            .into_iter()
            .filter(|d| match d {
                D::AuthFailureBurst => self.auth_failure_burst.enabled,
                D::PasswordSpray => self.password_spray.enabled,
                D::BruteForceSuccess => self.brute_force_success.enabled,
                D::RateLimitViolation => self.rate_limit_violation.enabled,
                D::ConfigChange => self.config_change.enabled,
                D::FirstSeen => self.first_seen.enabled,
                D::VolumeAnomaly => self.volume_anomaly.enabled,
            })
            .collect()
    }

    /// Parse the body of the `[ueba]` table from TOML.
    pub fn from_toml(text: &str) -> Result<UebaConfig, DetectError> {
        toml::from_str(text).map_err(|e| DetectError::Config {
            path: PathBuf::from("[ueba]"),
            message: e.to_string(),
        })
    }

    /// Check value ranges (no IO). `UebaEngine::new` clamps what this rejects, so call it at
    /// config load to report mistakes instead of silently clamping.
    pub fn validate(&self) -> Result<(), DetectError> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, what: String| {
            if !ok {
                problems.push(what)
            }
        };
        check(self.max_entities > 0, "max_entities must be > 0".into());
        check(
            self.entity_idle_days > 0,
            "entity_idle_days must be > 0".into(),
        );
        check(
            self.baseline_half_life_hours.is_finite() && self.baseline_half_life_hours >= 1.0,
            "baseline_half_life_hours must be >= 1".into(),
        );
        let mut all = vec![("", self.settings_for(""))];
        for tenant in self.tenants.keys() {
            all.push((tenant.as_str(), self.settings_for(tenant)));
        }
        for (tenant, s) in all {
            let at = |key: &str| {
                if tenant.is_empty() {
                    format!("ueba.{key}")
                } else {
                    format!("ueba.tenants.{tenant}.{key}")
                }
            };
            let p_ok = |p: f64| p > 0.0 && p <= 1.0;
            check(
                (1..=MAX_WINDOW_SECONDS).contains(&s.auth_failure_burst.window_seconds),
                at("auth_failure_burst.window_seconds must be 1 to 2678400 (31 days)"),
            );
            check(
                p_ok(s.auth_failure_burst.max_p_value),
                at("auth_failure_burst.max_p_value must be in (0, 1]"),
            );
            check(
                s.auth_failure_burst.prior_per_hour > 0.0,
                at("auth_failure_burst.prior_per_hour must be > 0"),
            );
            check(
                (1..=MAX_WINDOW_SECONDS).contains(&s.password_spray.window_seconds),
                at("password_spray.window_seconds must be 1 to 2678400 (31 days)"),
            );
            check(
                s.password_spray.max_tracked_users >= s.password_spray.min_distinct_users,
                at("password_spray.max_tracked_users must be >= min_distinct_users"),
            );
            check(
                (1..=MAX_WINDOW_SECONDS).contains(&s.brute_force_success.window_seconds),
                at("brute_force_success.window_seconds must be 1 to 2678400 (31 days)"),
            );
            check(
                (1..=MAX_WINDOW_SECONDS).contains(&s.rate_limit_violation.window_seconds),
                at("rate_limit_violation.window_seconds must be 1 to 2678400 (31 days)"),
            );
            check(
                p_ok(s.rate_limit_violation.max_p_value),
                at("rate_limit_violation.max_p_value must be in (0, 1]"),
            );
            check(
                s.rate_limit_violation.prior_per_hour > 0.0,
                at("rate_limit_violation.prior_per_hour must be > 0"),
            );
            check(
                (0.0..=1.0).contains(&s.config_change.unusual_hour_max_share),
                at("config_change.unusual_hour_max_share must be in [0, 1]"),
            );
            check(
                (1..=MAX_WINDOW_SECONDS).contains(&s.volume_anomaly.window_seconds),
                at("volume_anomaly.window_seconds must be 1 to 2678400 (31 days)"),
            );
            check(
                p_ok(s.volume_anomaly.max_p_value),
                at("volume_anomaly.max_p_value must be in (0, 1]"),
            );
            check(
                s.volume_anomaly.prior_per_hour > 0.0,
                at("volume_anomaly.prior_per_hour must be > 0"),
            );
            // Values that load but make a detector meaningless (QA): a "spray" of one user,
            // floors of 0, a ratio that is no number.
            check(
                s.password_spray.min_distinct_users >= 2,
                at("password_spray.min_distinct_users must be >= 2"),
            );
            for (value, key) in [
                (
                    s.auth_failure_burst.min_failures,
                    "auth_failure_burst.min_failures",
                ),
                (
                    s.brute_force_success.min_failures,
                    "brute_force_success.min_failures",
                ),
                (s.volume_anomaly.min_events, "volume_anomaly.min_events"),
                (
                    s.rate_limit_violation.min_events,
                    "rate_limit_violation.min_events",
                ),
                (
                    s.first_seen.max_values_per_attribute,
                    "first_seen.max_values_per_attribute",
                ),
                (
                    s.config_change.min_activity_events,
                    "config_change.min_activity_events",
                ),
            ] {
                check(value >= 1, at(&format!("{key} must be >= 1")));
            }
            for (value, key) in [
                (s.volume_anomaly.min_ratio, "volume_anomaly.min_ratio"),
                (
                    s.config_change.rare_max_changes_per_week,
                    "config_change.rare_max_changes_per_week",
                ),
            ] {
                check(
                    value.is_finite() && value >= 0.0,
                    at(&format!("{key} must be a number >= 0")),
                );
            }
        }
        check(
            self.max_evidence_events >= 1,
            "max_evidence_events must be >= 1 (an alert cites its events)".into(),
        );
        check(
            self.escalate_score.is_finite() && self.escalate_score > 0.0,
            "escalate_score must be a number > 0".into(),
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(DetectError::Config {
                path: PathBuf::from("[ueba]"),
                message: problems.join("; "),
            })
        }
    }

    /// Settings for `tenant` (global values when it has no overrides).
    pub(crate) fn settings_for(&self, tenant: &str) -> DetectorSettings {
        let base = DetectorSettings {
            auth_failure_burst: self.auth_failure_burst.clone(),
            password_spray: self.password_spray.clone(),
            brute_force_success: self.brute_force_success.clone(),
            rate_limit_violation: self.rate_limit_violation.clone(),
            config_change: self.config_change.clone(),
            first_seen: self.first_seen.clone(),
            volume_anomaly: self.volume_anomaly.clone(),
        };
        let Some(o) = self.tenants.get(tenant) else {
            return base;
        };
        DetectorSettings {
            auth_failure_burst: base.auth_failure_burst.with_override(&o.auth_failure_burst),
            password_spray: base.password_spray.with_override(&o.password_spray),
            brute_force_success: base
                .brute_force_success
                .with_override(&o.brute_force_success),
            rate_limit_violation: base
                .rate_limit_violation
                .with_override(&o.rate_limit_violation),
            config_change: base.config_change.with_override(&o.config_change),
            first_seen: base.first_seen.with_override(&o.first_seen),
            volume_anomaly: base.volume_anomaly.with_override(&o.volume_anomaly),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_roundtrip_through_toml() {
        let text = toml::to_string(&UebaConfig::default()).unwrap();
        let back = UebaConfig::from_toml(&text).unwrap();
        assert_eq!(back, UebaConfig::default());
        UebaConfig::default().validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_rejected_at_every_level() {
        for bad in [
            "max_entitys = 5",
            "[auth_failure_burst]\nmin_failure = 3",
            "[snapshot]\nfile = \"x\"",
            "[tenants.acme.password_spray]\nmin_users = 3",
            "[tenants.acme.nonsense]\nx = 1",
        ] {
            let err = UebaConfig::from_toml(bad).unwrap_err().to_string();
            assert!(err.contains("unknown field"), "{bad}: {err}");
        }
    }

    #[test]
    fn tenant_override_replaces_only_its_keys() {
        let cfg = UebaConfig::from_toml(
            "[auth_failure_burst]\nmin_failures = 12\nwindow_seconds = 300\n\
             [tenants.acme.auth_failure_burst]\nmin_failures = 3\n\
             [tenants.acme.first_seen]\nattributes = [\"country\"]\n",
        )
        .unwrap();
        let acme = cfg.settings_for("acme");
        assert_eq!(acme.auth_failure_burst.min_failures, 3);
        assert_eq!(
            acme.auth_failure_burst.window_seconds, 300,
            "not overridden: global value"
        );
        assert_eq!(
            acme.first_seen.attributes,
            vec![FirstSeenAttribute::Country]
        );
        let other = cfg.settings_for("globex");
        assert_eq!(other.auth_failure_burst.min_failures, 12);
        assert_eq!(other.first_seen.attributes.len(), 5);
    }

    #[test]
    fn validate_names_the_bad_key() {
        let cfg =
            UebaConfig::from_toml("[tenants.acme.volume_anomaly]\nmax_p_value = 0.0\n").unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("ueba.tenants.acme.volume_anomaly.max_p_value"),
            "{err}"
        );
        // Values that loaded and made a detector meaningless (QA).
        for (toml, key) in [
            (
                "[password_spray]\nmin_distinct_users = 0",
                "password_spray.min_distinct_users",
            ),
            ("max_evidence_events = 0", "max_evidence_events"),
            (
                "[auth_failure_burst]\nwindow_seconds = 99999999",
                "auth_failure_burst.window_seconds",
            ),
            ("escalate_score = nan", "escalate_score"),
            (
                "[volume_anomaly]\nmin_ratio = -1.0",
                "volume_anomaly.min_ratio",
            ),
            (
                "[first_seen]\nmax_values_per_attribute = 0",
                "first_seen.max_values_per_attribute",
            ),
            (
                "[brute_force_success]\nmin_failures = 0",
                "brute_force_success.min_failures",
            ),
            (
                "[rate_limit_violation]\nmin_events = 0",
                "rate_limit_violation.min_events",
            ),
            (
                "[config_change]\nrare_max_changes_per_week = nan",
                "config_change.rare_max_changes_per_week",
            ),
        ] {
            let err = UebaConfig::from_toml(toml)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        assert!(UebaConfig::default().validate().is_ok());
    }
}
