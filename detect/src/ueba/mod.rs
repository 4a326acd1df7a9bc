//! Behavioural detection (UEBA): per-entity baselines learned online from event time, and seven
//! detectors built on them: `auth_failure_burst`, `password_spray`, `brute_force_success`,
//! `rate_limit_violation`, `config_change`, `first_seen`, `volume_anomaly`.
//!
//! Guarantees:
//! - event time only: windows, warm-up, eviction and suppression never read the wall clock, so a
//!   replay gives the same alerts;
//! - every piece of state is keyed by tenant + entity through a keyed BLAKE3 hash; clear user
//!   names, emails and IPs live in memory only (in the event being processed and in open alert
//!   groups) and never reach the snapshot;
//! - memory is bounded: at most `max_entities` entities (least recently seen evicted first),
//!   entities idle for `entity_idle_days` are dropped, every per-entity set and evidence list
//!   has a fixed bound;
//! - every alert explains itself with the numbers (count, window, baseline, tail probability).

mod auth_failure_burst;
mod baseline;
mod brute_force_success;
mod classify;
mod config;
mod config_change;
mod first_seen;
mod hygiene;
mod password_spray;
mod rate_limit_violation;
mod snapshot;
mod state;
mod volume_anomaly;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path;

use perimeter_model::{Alert, Detector, EntityKind, Event, Outcome};

pub use config::{
    AuthFailureBurstConfig, AuthFailureBurstOverride, BruteForceSuccessConfig,
    BruteForceSuccessOverride, ConfigChangeConfig, ConfigChangeOverride, FirstSeenAttribute,
    FirstSeenConfig, FirstSeenOverride, PasswordSprayConfig, PasswordSprayOverride,
    RateLimitViolationConfig, RateLimitViolationOverride, SnapshotConfig, TenantOverrides,
    UebaConfig, VolumeAnomalyConfig, VolumeAnomalyOverride,
};
pub use hygiene::UebaDetector;
pub use snapshot::written_with as snapshot_written_with;

use baseline::BaselineParams;
use config::DetectorSettings;
use hygiene::{Finding, Hygiene};
use state::{EntityKey, EntityState, KeyMap};

use crate::stream_clock::StreamClock;

/// What a detector needs to know about the event being processed.
pub(crate) struct Ctx<'a> {
    pub event: &'a Event,
    /// Event time, Unix seconds.
    pub t: i64,
    pub params: &'a BaselineParams,
    pub max_evidence: usize,
    pub escalate_score: f64,
    pub tag_key: &'a state::TagKey,
    /// The tenant's earliest event this engine has seen (Unix seconds): an actor first seen a
    /// warm-up or more after it is new, not just unknown since Perimeter started watching.
    pub tenant_since: i64,
}

impl Ctx<'_> {
    /// Whether an entity first seen at `first_seen` appeared `warmup_hours` or more after the
    /// tenant began to be watched: a new account, not one the watch has not learnt yet.
    pub(crate) fn is_new_actor(&self, first_seen: i64, warmup_hours: u64) -> bool {
        first_seen.saturating_sub(self.tenant_since) >= (warmup_hours as i64).saturating_mul(3600)
    }

    /// Whole days the tenant has been watched at this event.
    pub(crate) fn tenant_days(&self) -> i64 {
        (self.t - self.tenant_since).max(0) / 86_400
    }
}

impl Ctx<'_> {
    /// Whether a rate detector's finding is strong enough to raise its severity: a surprise of
    /// `escalate_score` or more *and* at least 3x the detector's floor. Against a quiet entity's
    /// prior the threshold count alone is already wildly surprising (10 failures against a
    /// prior of 0.08 per 10 minutes is p ~ 1e-18), so the score alone raised almost every
    /// alert and a raised severity said nothing.
    pub(crate) fn escalates(&self, surprise: f64, count: u64, floor: u64) -> bool {
        surprise >= self.escalate_score && count >= floor.saturating_mul(3)
    }
}

/// `600` -> `10m`, `3600` -> `1h`, `90` -> `90s`.
pub(crate) fn human_duration(seconds: u64) -> String {
    if seconds >= 3600 && seconds / 3600 * 3600 == seconds {
        format!("{}h", seconds / 3600)
    } else if seconds >= 60 && seconds / 60 * 60 == seconds {
        format!("{}m", seconds / 60)
    } else {
        format!("{seconds}s")
    }
}

/// `n` in decimal, written into `buf` (no allocation on the per-event path).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("")
}

/// Counters for the pipeline's metrics (no values, only counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UebaStats {
    pub events_seen_total: u64,
    pub alerts_emitted_total: u64,
    /// Findings absorbed into an open alert group.
    pub findings_suppressed_total: u64,
    /// Entities dropped by the `max_entities` bound or idle eviction.
    pub entities_evicted_total: u64,
    /// Of those, dropped by the `max_entities` bound while still active: their baselines are
    /// lost, so a steady count means `max_entities` is too small.
    pub entities_evicted_at_capacity_total: u64,
}

impl UebaStats {
    /// Count `n` entities dropped by the `max_entities` bound (evictions of both kinds count in
    /// `entities_evicted_total`).
    fn count_capacity_evictions(&mut self, n: u64) {
        self.entities_evicted_total += n;
        self.entities_evicted_at_capacity_total += n;
    }
}

/// Runs every enabled behavioural detector over a stream of events.
pub struct UebaEngine {
    config: UebaConfig,
    secret: [u8; 32],
    tag_key: state::TagKey,
    params: BaselineParams,
    default_settings: DetectorSettings,
    tenant_settings: HashMap<String, DetectorSettings>,
    entities: KeyMap<EntityState>,
    hygiene: Hygiene,
    /// Highest event time seen (Unix seconds): the clock for eviction, and for group expiry of
    /// streams not seen since a restart.
    watermark: i64,
    /// Each stream's clock (tenant + source, Unix seconds): it closes the stream's alert groups,
    /// and bounds the time a record dated after its receipt is counted at
    /// ([`StreamClock::believe`]). A source delivered hours behind another must not have its
    /// groups closed by the other's time (each repeat would then be a new alert), nor a record
    /// dated `now + 9h` close them early or hold its entity's windows hours ahead. In the
    /// snapshot (its watermark), so a restart does not close a delayed stream's groups by the
    /// newest stream's time.
    stream_clocks: HashMap<String, HashMap<String, StreamClock>>,
    /// Earliest event time per tenant (Unix seconds): how long the tenant has been watched.
    tenant_since: HashMap<String, i64>,
    /// Hour bucket of the last housekeeping sweep.
    swept_hour: i64,
    events_since_snapshot: u64,
    /// Events since the last housekeeping sweep (see [`UebaEngine::advance`]).
    events_since_sweep: u64,
    stats: UebaStats,
    findings: Vec<Finding>,
}

impl UebaEngine {
    /// An engine with empty state. `entity_key` keys every entity hash (keep it secret and stable:
    /// a snapshot is only usable with the key it was written with). Out-of-range settings are
    /// clamped; call [`UebaConfig::validate`] first to report them instead.
    pub fn new(config: UebaConfig, entity_key: [u8; 32]) -> UebaEngine {
        let params = BaselineParams::new(
            config.baseline_half_life_hours,
            config.seasonality_min_history_days,
        );
        let default_settings = clamp(config.settings_for(""));
        let tenant_settings = config
            .tenants
            .keys()
            .map(|t| (t.clone(), clamp(config.settings_for(t))))
            .collect();
        UebaEngine {
            params,
            default_settings,
            tenant_settings,
            secret: entity_key,
            tag_key: state::TagKey::derive(&entity_key),
            entities: KeyMap::default(),
            hygiene: Hygiene::default(),
            watermark: i64::MIN,
            stream_clocks: HashMap::new(),
            tenant_since: HashMap::new(),
            swept_hour: i64::MIN,
            events_since_snapshot: 0,
            events_since_sweep: 0,
            stats: UebaStats::default(),
            findings: Vec::new(),
            config,
        }
    }

    /// Restore the state written by [`UebaEngine::snapshot_to`]. Fails when the file is
    /// unreadable, malformed, or was written with another entity key.
    pub fn restore_from(
        config: UebaConfig,
        entity_key: [u8; 32],
        path: &Path,
    ) -> Result<UebaEngine, crate::DetectError> {
        let mut engine = UebaEngine::new(config, entity_key);
        snapshot::read(&mut engine, path)?;
        Ok(engine)
    }

    /// [`UebaEngine::restore_from`] for a service that must start: a snapshot that is present
    /// but cannot be used (malformed, from another version, written under another entity key)
    /// is renamed to `<name>.unreadable-<UTC time>` and the engine starts empty. Baselines come
    /// back by warming up again, while refusing to start would stop all detection. Errors
    /// reading the file (permissions, IO) still fail. No snapshot: an empty engine.
    ///
    /// Returns the engine and, when a snapshot was set aside, where it went and why.
    pub fn restore_or_set_aside(
        config: UebaConfig,
        entity_key: [u8; 32],
        path: &Path,
    ) -> Result<(UebaEngine, Option<(std::path::PathBuf, String)>), crate::DetectError> {
        if !path.exists() {
            return Ok((UebaEngine::new(config, entity_key), None));
        }
        let restored = crate::state_file::restore_or_set_aside(path, || {
            UebaEngine::restore_from(config.clone(), entity_key, path)
        })?;
        Ok(match restored {
            Ok(engine) => (engine, None),
            Err(aside) => (UebaEngine::new(config, entity_key), Some(aside)),
        })
    }

    /// Restore from `config.snapshot.path` when that file exists, else start empty.
    pub fn open(
        config: UebaConfig,
        entity_key: [u8; 32],
    ) -> Result<UebaEngine, crate::DetectError> {
        match config.snapshot.path.clone() {
            Some(path) if path.exists() => UebaEngine::restore_from(config, entity_key, &path),
            _ => Ok(UebaEngine::new(config, entity_key)),
        }
    }

    /// Write baselines, windows and open alert groups to `path` atomically (temp file + rename).
    /// The file holds keyed hashes, counts and event ids only - no clear entity value.
    pub fn snapshot_to(&self, path: &Path) -> Result<(), crate::DetectError> {
        snapshot::write(self, path)
    }

    /// Entities currently tracked.
    pub fn tracked_entities(&self) -> usize {
        self.entities.len()
    }

    pub fn stats(&self) -> UebaStats {
        UebaStats {
            findings_suppressed_total: self.hygiene.num_suppressed,
            ..self.stats
        }
    }

    pub fn config(&self) -> &UebaConfig {
        &self.config
    }

    fn key(&self, tenant: &str, kind: EntityKind, value: &str) -> EntityKey {
        EntityKey::derive(&self.secret, tenant, kind, value)
    }

    /// Hourly (event time) housekeeping: idle eviction and closing alert groups.
    ///
    /// The hour is that of the newest event of all streams. When that stream stalls (a source
    /// gone quiet, one whose clock runs ahead), the hour stops and so would housekeeping: the
    /// other streams' groups would not close (their repeats reported only at shutdown). So it
    /// also runs every [`crate::FORCED_SWEEP_MIN_EVENTS`] events, or every as many events as
    /// entities held when more (a flat cost per event); groups still close by their own stream's
    /// clock.
    fn advance(&mut self, t: i64, alerts: &mut Vec<Alert>) {
        self.events_since_sweep += 1;
        let forced = self.events_since_sweep >= crate::FORCED_SWEEP_MIN_EVENTS
            && self.events_since_sweep >= self.entities.len() as u64;
        if t <= self.watermark && !forced {
            return;
        }
        self.watermark = self.watermark.max(t);
        let hour = self.watermark.div_euclid(3600);
        if hour <= self.swept_hour && !forced {
            return;
        }
        self.swept_hour = hour;
        self.events_since_sweep = 0;
        let t = self.watermark;
        let idle_seconds = self.config.entity_idle_days.clamp(1, 36_500) * 86_400;
        let horizon = t.saturating_sub(idle_seconds as i64);
        let before = self.entities.len();
        self.entities.retain(|_, st| st.last_seen >= horizon);
        self.stats.entities_evicted_total += (before - self.entities.len()) as u64;
        let before = alerts.len();
        let (clocks, fallback) = (&self.stream_clocks, self.watermark);
        self.hygiene.expire(
            |tenant, source| {
                clocks
                    .get(tenant)
                    .and_then(|sources| sources.get(source))
                    .map_or(fallback, StreamClock::watermark)
            },
            alerts,
        );
        self.stats.alerts_emitted_total += (alerts.len() - before) as u64;
    }

    /// Move the event's stream clock forward (looked up by borrowed names: no allocation once
    /// the stream is known). Returns the time the event counts at (its own, unless it is dated
    /// after its receipt and past what its stream's clock allows: [`StreamClock::believe`]) and
    /// whether the clock entered a new hour.
    fn note_stream_time(&mut self, event: &Event) -> (i64, bool) {
        let (tenant, source) = (event.tenant.as_str(), event.source.as_str());
        if let Some(clock) = self
            .stream_clocks
            .get_mut(tenant)
            .and_then(|sources| sources.get_mut(source))
        {
            return tick(clock, event);
        }
        let clock = self
            .stream_clocks
            .entry(event.tenant.clone())
            .or_default()
            .entry(event.source.clone())
            .or_insert(StreamClock::NEW);
        tick(clock, event)
    }

    /// Close the alert groups of one stream that its own clock has passed. The hourly sweep
    /// ([`Self::advance`]) goes by the newest time of all streams: a tenant whose events are
    /// no newer than another's (the same day sent twice, a backfill) would otherwise have its
    /// groups closed only by another tenant's later input, and counted in that input's answer.
    fn expire_stream(&mut self, event: &Event, alerts: &mut Vec<Alert>) {
        let before = alerts.len();
        let (tenant, source) = (event.tenant.as_str(), event.source.as_str());
        let t = self
            .stream_clocks
            .get(tenant)
            .and_then(|sources| sources.get(source))
            .map_or(i64::MIN, StreamClock::watermark);
        self.hygiene.expire(
            |g_tenant, g_source| {
                if g_tenant == tenant && g_source == source {
                    t
                } else {
                    i64::MIN
                }
            },
            alerts,
        );
        self.stats.alerts_emitted_total += (alerts.len() - before) as u64;
    }

    fn evict_lru(&mut self) {
        let evicted = evict_lru(&mut self.entities);
        self.stats.count_capacity_evictions(evicted);
    }

    fn process(&mut self, event: &Event, alerts: &mut Vec<Alert>) {
        // Every clock below (windows, baselines, warm-up, idle eviction) reads this time.
        let (t, hour_turned) = self.note_stream_time(event);
        self.advance(t, alerts);
        if hour_turned {
            self.expire_stream(event, alerts);
        }
        let c = classify::classify(event);
        let tenant = event.tenant.as_str();
        let failure = c.auth == Some(Outcome::Failure);

        let user_key = c.user.map(|u| self.key(tenant, EntityKind::User, u));
        let ip_key = match c.ip {
            Some(ip) if failure || c.rate_limit => Some(self.key(tenant, EntityKind::Ip, ip)),
            _ => None,
        };
        let token = c
            .token
            .as_deref()
            .map(|v| (EntityKind::Token, v))
            .or(c.app.as_deref().map(|v| (EntityKind::App, v)));
        let token_key = match token {
            Some((kind, v)) if c.rate_limit => Some((self.key(tenant, kind, v), kind, v)),
            _ => None,
        };
        let org_name = if c.org.is_empty() { tenant } else { c.org };
        let org_key = match c.app.as_deref() {
            Some(_) if c.app_grant => Some(self.key(tenant, EntityKind::Org, org_name)),
            _ => None,
        };
        let mut findings = std::mem::take(&mut self.findings);
        findings.clear();
        // Field borrows (not `self.settings()`) so `self.entities` can be borrowed mutably below.
        let settings = if self.tenant_settings.is_empty() {
            &self.default_settings
        } else {
            self.tenant_settings
                .get(tenant)
                .unwrap_or(&self.default_settings)
        };
        let since = match self.tenant_since.get_mut(tenant) {
            Some(since) => {
                *since = (*since).min(t);
                *since
            }
            None => *self.tenant_since.entry(tenant.to_string()).or_insert(t),
        };
        let ctx = Ctx {
            event,
            t,
            params: &self.params,
            max_evidence: self.config.max_evidence_events as usize,
            escalate_score: self.config.escalate_score,
            tag_key: &self.tag_key,
            tenant_since: since,
        };
        let entities = &mut self.entities;
        let max_entities = self.config.max_entities;
        let mut evicted = 0u64;

        if let (Some(user), Some(key)) = (c.user, user_key) {
            {
                let st = entity_mut(
                    entities,
                    &mut evicted,
                    max_entities,
                    key,
                    EntityKind::User,
                    t,
                );
                match c.auth {
                    Some(Outcome::Failure) => {
                        if settings.auth_failure_burst.enabled {
                            auth_failure_burst::observe(
                                st,
                                key,
                                user,
                                &settings.auth_failure_burst,
                                &ctx,
                                &mut findings,
                            );
                        }
                        if settings.brute_force_success.enabled {
                            brute_force_success::record_failure(
                                st,
                                ip_key,
                                &settings.brute_force_success,
                                &ctx,
                            );
                        }
                    }
                    Some(Outcome::Success) if settings.brute_force_success.enabled => {
                        brute_force_success::on_success(
                            st,
                            key,
                            user,
                            c.ip,
                            &settings.brute_force_success,
                            &ctx,
                            &mut findings,
                        );
                    }
                    _ => {}
                }
                if c.volume && settings.volume_anomaly.enabled {
                    volume_anomaly::observe(
                        st,
                        key,
                        user,
                        &settings.volume_anomaly,
                        &ctx,
                        &mut findings,
                    );
                }
                if settings.config_change.enabled {
                    config_change::observe(
                        st,
                        key,
                        user,
                        &c,
                        &settings.config_change,
                        &ctx,
                        &mut findings,
                    );
                }
                // A failed attempt says where someone tried, not where the account was used:
                // learning its country would let the attacker's later success from there pass
                // unremarked, and alerting on it would raise one alert per user a spray tried.
                if settings.first_seen.enabled && c.auth != Some(Outcome::Failure) {
                    let mut asn_buf = [0u8; 20];
                    let asn = c.asn.map(|n| decimal(n, &mut asn_buf));
                    let values = [
                        (FirstSeenAttribute::Country, c.country.unwrap_or("")),
                        (FirstSeenAttribute::Asn, asn.unwrap_or("")),
                        (
                            FirstSeenAttribute::UserAgentFamily,
                            c.user_agent_family.unwrap_or(""),
                        ),
                        (
                            FirstSeenAttribute::OauthClient,
                            c.app.as_deref().unwrap_or(""),
                        ),
                    ];
                    first_seen::observe(
                        st,
                        key,
                        user,
                        &values,
                        &settings.first_seen,
                        &ctx,
                        &mut findings,
                    );
                }
            }
        }

        if let (Some(ip), Some(key)) = (c.ip, ip_key) {
            {
                let st = entity_mut(entities, &mut evicted, max_entities, key, EntityKind::Ip, t);
                if failure {
                    if settings.auth_failure_burst.enabled {
                        auth_failure_burst::observe(
                            st,
                            key,
                            ip,
                            &settings.auth_failure_burst,
                            &ctx,
                            &mut findings,
                        );
                    }
                    if let (Some(user), true) = (user_key, settings.password_spray.enabled) {
                        password_spray::observe(
                            st,
                            key,
                            ip,
                            user,
                            &settings.password_spray,
                            &ctx,
                            &mut findings,
                        );
                    }
                }
                if c.rate_limit && settings.rate_limit_violation.enabled {
                    rate_limit_violation::observe(
                        st,
                        key,
                        ip,
                        &settings.rate_limit_violation,
                        &ctx,
                        &mut findings,
                    );
                }
            }
        }

        if let Some((key, token_kind, value)) = token_key {
            {
                let st = entity_mut(entities, &mut evicted, max_entities, key, token_kind, t);
                if settings.rate_limit_violation.enabled {
                    rate_limit_violation::observe(
                        st,
                        key,
                        value,
                        &settings.rate_limit_violation,
                        &ctx,
                        &mut findings,
                    );
                }
            }
        }
        // Rate limits with neither token, app nor IP are charged to the user.
        if c.rate_limit
            && token_key.is_none()
            && ip_key.is_none()
            && settings.rate_limit_violation.enabled
        {
            if let (Some(user), Some(key)) = (c.user, user_key) {
                {
                    let st = entity_mut(
                        entities,
                        &mut evicted,
                        max_entities,
                        key,
                        EntityKind::User,
                        t,
                    );
                    rate_limit_violation::observe(
                        st,
                        key,
                        user,
                        &settings.rate_limit_violation,
                        &ctx,
                        &mut findings,
                    );
                }
            }
        }

        if let (Some(key), Some(app)) = (org_key, c.app.as_deref()) {
            {
                let st = entity_mut(
                    entities,
                    &mut evicted,
                    max_entities,
                    key,
                    EntityKind::Org,
                    t,
                );
                if settings.first_seen.enabled {
                    let values = [(FirstSeenAttribute::OrgApp, app)];
                    first_seen::observe(
                        st,
                        key,
                        org_name,
                        &values,
                        &settings.first_seen,
                        &ctx,
                        &mut findings,
                    );
                }
            }
        }

        let max_evidence = ctx.max_evidence;
        let before = alerts.len();
        for f in findings.drain(..) {
            self.hygiene.admit(f, event, max_evidence, alerts);
        }
        self.stats.alerts_emitted_total += (alerts.len() - before) as u64;
        self.stats.count_capacity_evictions(evicted);
        self.findings = findings;
    }
}

/// Take `event` on its stream's clock: the time it counts at ([`StreamClock::believe`]), and
/// whether the clock entered a new hour.
fn tick(clock: &mut StreamClock, event: &Event) -> (i64, bool) {
    let ts = event.timestamp.timestamp();
    let before = clock.watermark();
    // A time `Event::new` replaced (implausible) is its receipt: no evidence of how far the
    // stream has come (in a replay of old logs, "now").
    if !event.timestamp_adjusted {
        clock.observe(ts, event.received_at.timestamp());
    }
    let after = clock.watermark();
    let turned = before != i64::MIN && after.div_euclid(3600) > before.div_euclid(3600);
    (clock.believe(ts), turned)
}

/// Drop the least recently seen sixteenth of the entities: amortised O(1) per insert without an
/// LRU list (which would cost two pointers per entity). Returns how many were dropped.
fn evict_lru(entities: &mut KeyMap<EntityState>) -> u64 {
    let mut seen: Vec<i64> = entities.values().map(|s| s.last_seen).collect();
    if seen.is_empty() {
        return 0;
    }
    let n = (seen.len() / 16).max(1);
    let (_, cutoff, _) = seen.select_nth_unstable(n - 1);
    let cutoff = *cutoff;
    let mut dropped = 0usize;
    entities.retain(|_, st| {
        if dropped < n && st.last_seen <= cutoff {
            dropped += 1;
            false
        } else {
            true
        }
    });
    dropped as u64
}

/// The entity's state, created when new (evicting first when the map is full); one map lookup
/// in the common case.
fn entity_mut<'m>(
    entities: &'m mut KeyMap<EntityState>,
    evicted: &mut u64,
    max_entities: u64,
    key: EntityKey,
    kind: EntityKind,
    t: i64,
) -> &'m mut EntityState {
    if entities.len() as u64 >= max_entities.max(1) && !entities.contains_key(&key) {
        *evicted += evict_lru(entities);
    }
    let st = entities
        .entry(key)
        .or_insert_with(|| EntityState::new(kind, t));
    st.last_seen = st.last_seen.max(t);
    st.first_seen = st.first_seen.min(t);
    st
}

/// Keep values that would break arithmetic (zero windows, p outside (0, 1]) in range.
fn clamp(mut s: DetectorSettings) -> DetectorSettings {
    let p = |p: f64| {
        if p.is_finite() {
            p.clamp(1e-300, 1.0)
        } else {
            1e-6
        }
    };
    let rate = |r: f64| if r.is_finite() && r > 0.0 { r } else { 1e-3 };
    // Durations are event-time arithmetic on i64 seconds: keep them far from overflow.
    const MAX_SUPPRESS: u64 = 366 * 86_400;
    let w = |v: &mut u64| *v = (*v).clamp(1, config::MAX_WINDOW_SECONDS);
    w(&mut s.auth_failure_burst.window_seconds);
    w(&mut s.password_spray.window_seconds);
    w(&mut s.brute_force_success.window_seconds);
    w(&mut s.rate_limit_violation.window_seconds);
    w(&mut s.volume_anomaly.window_seconds);
    for v in [
        &mut s.auth_failure_burst.suppress_seconds,
        &mut s.password_spray.suppress_seconds,
        &mut s.brute_force_success.suppress_seconds,
        &mut s.rate_limit_violation.suppress_seconds,
        &mut s.config_change.suppress_seconds,
        &mut s.first_seen.suppress_seconds,
        &mut s.volume_anomaly.suppress_seconds,
    ] {
        *v = (*v).min(MAX_SUPPRESS);
    }
    s.auth_failure_burst.max_p_value = p(s.auth_failure_burst.max_p_value);
    s.auth_failure_burst.prior_per_hour = rate(s.auth_failure_burst.prior_per_hour);
    s.password_spray.max_tracked_users = s
        .password_spray
        .max_tracked_users
        .max(s.password_spray.min_distinct_users)
        .clamp(1, 100_000);
    s.rate_limit_violation.max_p_value = p(s.rate_limit_violation.max_p_value);
    s.rate_limit_violation.prior_per_hour = rate(s.rate_limit_violation.prior_per_hour);
    s.volume_anomaly.max_p_value = p(s.volume_anomaly.max_p_value);
    s.volume_anomaly.prior_per_hour = rate(s.volume_anomaly.prior_per_hour);
    s
}

impl Detector for UebaEngine {
    fn name(&self) -> &str {
        "ueba"
    }

    fn detect(&mut self, event: &Event, alerts: &mut Vec<Alert>) {
        if !self.config.enabled {
            return;
        }
        self.stats.events_seen_total += 1;
        self.process(event, alerts);
        self.events_since_snapshot += 1;
        let every = self.config.snapshot.every_events;
        if every > 0 && self.events_since_snapshot >= every {
            self.events_since_snapshot = 0;
            if let Some(path) = self.config.snapshot.path.clone() {
                if let Err(error) = self.snapshot_to(&path) {
                    tracing::warn!(%error, "ueba snapshot failed");
                }
            }
        }
    }

    /// Emit grouped alerts for open windows with repeats and write the snapshot (when configured).
    fn flush(&mut self, alerts: &mut Vec<Alert>) {
        if !self.config.enabled {
            return;
        }
        let before = alerts.len();
        self.hygiene.flush(alerts);
        self.stats.alerts_emitted_total += (alerts.len() - before) as u64;
        if let Some(path) = self.config.snapshot.path.clone() {
            if let Err(error) = self.snapshot_to(&path) {
                tracing::warn!(%error, "ueba snapshot failed");
            }
        }
    }
}
