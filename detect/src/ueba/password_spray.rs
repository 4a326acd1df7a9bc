//! `password_spray`: one source IP failing against many distinct users within a window. The
//! distinct count is exact up to `max_tracked_users` (keyed 32-bit user tags with their last
//! failure time), which bounds memory per IP at ~12 bytes per user.

use serde::{Deserialize, Serialize};

use super::config::PasswordSprayConfig;
use super::hygiene::{Finding, UebaDetector};
use super::state::{EntityKey, EntityState, Evidence};
use super::{human_duration, Ctx};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct SprayState {
    /// (user tag, event time of the user's last failure from this IP).
    users: Vec<(u32, i64)>,
    evidence: Evidence,
}

/// A failed login from the IP `st` for the user keyed `user`.
pub(crate) fn observe(
    st: &mut EntityState,
    key: EntityKey,
    ip: &str,
    user: EntityKey,
    cfg: &PasswordSprayConfig,
    ctx: &Ctx<'_>,
    out: &mut Vec<Finding>,
) {
    let t = ctx.t;
    let s = st.spray.get_or_insert_with(Default::default);
    let horizon = t - cfg.window_seconds as i64;
    s.users.retain(|&(_, seen)| seen > horizon);
    if s.users.is_empty() {
        // A new spray: the failures of an expired one are not its evidence.
        s.evidence.clear();
    }
    let tag = user.tag();
    if let Some(entry) = s.users.iter_mut().find(|(u, _)| *u == tag) {
        entry.1 = entry.1.max(t);
    } else if (s.users.len() as u64) < cfg.max_tracked_users {
        s.users.push((tag, t));
    }
    s.evidence.push(ctx.event, ctx.max_evidence);
    let distinct = s.users.len() as u64;
    if distinct < cfg.min_distinct_users {
        return;
    }
    let ratio = distinct as f64 / cfg.min_distinct_users.max(1) as f64;
    let capped = if distinct >= cfg.max_tracked_users {
        " (tracking cap reached)"
    } else {
        ""
    };
    out.push(Finding {
        detector: UebaDetector::PasswordSpray,
        entity_key: key,
        entity: ip.to_string(),
        entity_kind: st.kind,
        title: "Password spray: one source IP failing against many users",
        explanation: format!(
            "{distinct} distinct users{capped} with failed logins from {ip} within {}, threshold {}",
            human_duration(cfg.window_seconds),
            cfg.min_distinct_users
        ),
        score: ratio,
        severity: cfg.severity,
        escalate: ratio >= 3.0,
        suppress_seconds: cfg.suppress_seconds,
        evidence: s.evidence.clone(),
    });
}
