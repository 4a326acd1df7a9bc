//! `volume_anomaly`: downloads, exports, deletions and API calls per user far above that user's
//! own learned rate. A user must be past warm-up to alert at all: "unusual for this user" needs
//! history of this user.

use super::baseline::format_p;
use super::config::VolumeAnomalyConfig;
use super::hygiene::{Finding, UebaDetector};
use super::state::{EntityKey, EntityState, RateState};
use super::{human_duration, Ctx};

pub(crate) fn observe(
    st: &mut EntityState,
    key: EntityKey,
    user: &str,
    cfg: &VolumeAnomalyConfig,
    ctx: &Ctx<'_>,
    out: &mut Vec<Finding>,
) {
    let t = ctx.t;
    let age_hours = st.age_hours(t);
    let s = st.volume.get_or_insert_with(|| Box::new(RateState::new(t)));
    s.baseline.observe(t, 1, ctx.params);
    let n = s.window.add(t, cfg.window_seconds, 1);
    // Only the events just before and after the floor can end up as evidence: quiet entities
    // never allocate an evidence list.
    if n + ctx.max_evidence as u64 > cfg.min_events {
        s.evidence.push(ctx.event, ctx.max_evidence);
    }
    s.evidence.keep_last(n);
    // Still warming up: judged only as a new actor, in a tenant watched for longer (a first-day
    // mass export by a new account), against the prior alone.
    let learned = age_hours >= cfg.warmup_hours;
    let new_actor = !learned && ctx.is_new_actor(st.first_seen, cfg.warmup_hours);
    if n < cfg.min_events || !(learned || new_actor) {
        return;
    }
    let score = s.baseline.score(
        t,
        cfg.window_seconds,
        n,
        cfg.prior_per_hour,
        learned,
        cfg.min_ratio,
        ctx.params,
    );
    if score.p_value > cfg.max_p_value {
        return;
    }
    let window = human_duration(cfg.window_seconds);
    let surprise = score.surprise();
    out.push(Finding {
        detector: UebaDetector::VolumeAnomaly,
        entity_key: key,
        entity: user.to_string(),
        entity_kind: st.kind,
        title: "Unusual volume of downloads, exports, deletions or API calls",
        explanation: format!(
            "{n} data-access/export/delete/API events in {window} for {user}, baseline {:.2}/{window} ({:.1}x), {}{}",
            score.expected,
            n as f64 / score.expected,
            format_p(score.p_value),
            if new_actor {
                format!(", {user} first seen {age_hours} h ago (prior only)")
            } else {
                String::new()
            }
        ),
        score: surprise,
        severity: cfg.severity,
        escalate: ctx.escalates(surprise, n, cfg.min_events),
        suppress_seconds: cfg.suppress_seconds,
        evidence: s.evidence.clone(),
    });
}
