//! `auth_failure_burst`: failed authentications per user and per source IP within a window,
//! above the entity's learned failure rate and above an absolute floor.

use perimeter_model::EntityKind;

use super::baseline::baseline_clause;
use super::config::AuthFailureBurstConfig;
use super::hygiene::{Finding, UebaDetector};
use super::state::{BurstRule, EntityKey, EntityState, RateState};
use super::{human_duration, Ctx};

/// Failure window + learned failure rate + recent failure evidence.
pub(crate) type AuthFailureState = RateState;

/// Count one failed authentication for `entity` (a user or a source IP).
pub(crate) fn observe(
    st: &mut EntityState,
    key: EntityKey,
    entity: &str,
    cfg: &AuthFailureBurstConfig,
    ctx: &Ctx<'_>,
    out: &mut Vec<Finding>,
) {
    let t = ctx.t;
    // An entity still warming up is scored against the prior only: attacks come from new IPs,
    // and hours spent under attack must not become the "normal" they are compared with.
    let learned = st.age_hours(t) >= cfg.warmup_hours;
    let s = st
        .auth_failures
        .get_or_insert_with(|| Box::new(RateState::new(t)));
    let rule = BurstRule {
        window_seconds: cfg.window_seconds,
        min_events: cfg.min_failures,
        prior_per_hour: cfg.prior_per_hour,
        learned,
        max_p_value: cfg.max_p_value,
        evidence_after: 0,
    };
    let Some((n, score)) = s.observe_burst(ctx, &rule) else {
        return;
    };
    // Failures are not a workload that grows: an hour under attack learned as normal made the
    // same attack days later no surprise (QA). A routine volume (rate limits, downloads) is
    // learned as it comes.
    s.baseline.forget_current_hour();
    let window = human_duration(cfg.window_seconds);
    let (title, what) = match st.kind {
        EntityKind::Ip => ("Burst of failed logins from one source IP", "from"),
        _ => ("Burst of failed logins for one user", "for"),
    };
    let surprise = score.surprise();
    out.push(Finding {
        detector: UebaDetector::AuthFailureBurst,
        entity_key: key,
        entity: entity.to_string(),
        entity_kind: st.kind,
        title,
        explanation: format!(
            "{n} failed logins in {window} {what} {entity}, {}",
            baseline_clause(&score, &window, learned)
        ),
        score: surprise,
        severity: cfg.severity,
        escalate: ctx.escalates(surprise, n, cfg.min_failures),
        suppress_seconds: cfg.suppress_seconds,
        evidence: s.evidence.clone(),
    });
}
