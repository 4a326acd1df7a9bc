//! `rate_limit_violation`: rate-limit / throttling events (Okta `system.org.rate_limit.*`,
//! CloudTrail `ThrottlingException`, HTTP 429s) per token, app or source IP, above the entity's
//! learned rate and an absolute floor.

use perimeter_model::EntityKind;

use super::baseline::format_p;
use super::config::RateLimitViolationConfig;
use super::hygiene::{Finding, UebaDetector};
use super::state::{EntityKey, EntityState, RateState};
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
    let age_hours = st.age_hours(t);
    let s = st
        .rate_limit
        .get_or_insert_with(|| Box::new(RateState::new(t)));
    s.baseline.observe(t, 1, ctx.params);
    let n = s.window.add(t, cfg.window_seconds, 1);
    // Only the events just before and after the floor can end up as evidence: quiet entities
    // never allocate an evidence list.
    if n + ctx.max_evidence as u64 > cfg.min_events {
        s.evidence.push(ctx.event, ctx.max_evidence);
    }
    if n < cfg.min_events {
        return;
    }
    let learned = age_hours >= cfg.warmup_hours;
    let score = s.baseline.score(
        t,
        cfg.window_seconds,
        n,
        cfg.prior_per_hour,
        learned,
        1.0,
        ctx.params,
    );
    if score.p_value > cfg.max_p_value {
        return;
    }
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
            "{n} rate-limit/throttling events in {window} for {what} {entity}, baseline {:.2}/{window}{}, {}",
            score.expected,
            if learned { "" } else { " (prior, entity still warming up)" },
            format_p(score.p_value)
        ),
        score: surprise,
        severity: cfg.severity,
        escalate: surprise >= ctx.escalate_score,
        suppress_seconds: cfg.suppress_seconds,
        evidence: s.evidence.clone(),
    });
}
