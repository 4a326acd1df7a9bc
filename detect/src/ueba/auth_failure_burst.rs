//! `auth_failure_burst`: failed authentications per user and per source IP within a window,
//! above the entity's learned failure rate and above an absolute floor.

use perimeter_model::EntityKind;

use super::baseline::format_p;
use super::config::AuthFailureBurstConfig;
use super::hygiene::{Finding, UebaDetector};
use super::state::{EntityKey, EntityState, RateState};
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
    let age_hours = st.age_hours(t);
    let s = st
        .auth_failures
        .get_or_insert_with(|| Box::new(RateState::new(t)));
    s.baseline.observe(t, 1, ctx.params);
    let n = s.window.add(t, cfg.window_seconds, 1);
    s.evidence.push(ctx.event, ctx.max_evidence);
    if n < cfg.min_failures {
        return;
    }
    // An entity still warming up is scored against the prior only: attacks come from new IPs,
    // and hours spent under attack must not become the "normal" they are compared with.
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
            "{n} failed logins in {window} {what} {entity}, baseline {:.2}/{window}{}, {}",
            score.expected,
            if learned {
                ""
            } else {
                " (prior, entity still warming up)"
            },
            format_p(score.p_value)
        ),
        score: surprise,
        severity: cfg.severity,
        escalate: surprise >= ctx.escalate_score,
        suppress_seconds: cfg.suppress_seconds,
        evidence: s.evidence.clone(),
    });
}
