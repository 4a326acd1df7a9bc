//! `rate_limit_violation`: rate-limit / throttling events (Okta `system.org.rate_limit.*`,
//! CloudTrail `ThrottlingException`, HTTP 429s) per token, app or source IP, above the entity's
//! learned rate and an absolute floor.

use perimeter_model::EntityKind;

use super::baseline::baseline_clause;
use super::config::RateLimitViolationConfig;
use super::hygiene::{Finding, UebaDetector};
use super::state::{BurstRule, EntityKey, EntityState, RateState};
use super::{human_duration, Ctx};

pub(crate) fn observe(
    st: &mut EntityState,
    key: EntityKey,
    entity: &str,
    cfg: &RateLimitViolationConfig,
    ctx: &Ctx<'_>,
    out: &mut Vec<Finding>,
) {
    let t = ctx.t;
    let learned = st.age_hours(t) >= cfg.warmup_hours;
    let s = st
        .rate_limit
        .get_or_insert_with(|| Box::new(RateState::new(t)));
    let rule = BurstRule {
        window_seconds: cfg.window_seconds,
        min_events: cfg.min_events,
        prior_per_hour: cfg.prior_per_hour,
        learned,
        max_p_value: cfg.max_p_value,
        // Only the events just before and after the floor can end up as evidence: quiet
        // entities never allocate an evidence list.
        evidence_after: cfg.min_events.saturating_sub(ctx.max_evidence as u64),
    };
    let Some((n, score)) = s.observe_burst(ctx, &rule) else {
        return;
    };
    let what = match st.kind {
        EntityKind::Token => "API token",
        EntityKind::App => "app",
        EntityKind::Ip => "source IP",
        _ => "user",
    };
    let window = human_duration(cfg.window_seconds);
    let surprise = score.surprise();
    out.push(Finding {
        detector: UebaDetector::RateLimitViolation,
        entity_key: key,
        entity: entity.to_string(),
        entity_kind: st.kind,
        title: "Rate-limit violations above baseline",
        explanation: format!(
            "{n} rate-limit/throttling events in {window} for {what} {entity}, {}",
            baseline_clause(&score, &window, learned)
        ),
        score: surprise,
        severity: cfg.severity,
        escalate: ctx.escalates(surprise, n, cfg.min_events),
        suppress_seconds: cfg.suppress_seconds,
        evidence: s.evidence.clone(),
    });
}
