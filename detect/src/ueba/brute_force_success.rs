//! `brute_force_success`: a burst of failed logins followed by a success for the same user, the
//! classic account-takeover signal. Fires once per burst: the success closes the burst.

use serde::{Deserialize, Serialize};

use super::baseline::WindowCounter;
use super::config::BruteForceSuccessConfig;
use super::hygiene::{Finding, UebaDetector};
use super::state::{EntityKey, EntityState, Evidence};
use super::{human_duration, Ctx};

/// Distinct source IPs remembered per burst (for the explanation only).
const MAX_IPS: usize = 32;

/// Failures since the last success, for one user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct BruteForceState {
    window: WindowCounter,
    /// Keyed tags of the source IPs that failed.
    ips: Vec<u32>,
    evidence: Evidence,
}

/// A failed login for a user (`ip` = the source IP's entity key, when known).
pub(crate) fn record_failure(
    st: &mut EntityState,
    ip: Option<EntityKey>,
    cfg: &BruteForceSuccessConfig,
    ctx: &Ctx<'_>,
) {
    let s = st.brute_force.get_or_insert_with(Default::default);
    if s.window.total_at(ctx.t, cfg.window_seconds) == 0 {
        // A new burst: the failures of an expired one are neither counted nor evidence.
        s.ips.clear();
        s.evidence = Evidence::default();
    }
    s.window.add(ctx.t, cfg.window_seconds, 1);
    if let Some(ip) = ip {
        let tag = ip.tag();
        if !s.ips.contains(&tag) && s.ips.len() < MAX_IPS {
            s.ips.push(tag);
        }
    }
    s.evidence.push(ctx.event, ctx.max_evidence);
}

/// A successful login: alert when enough failures preceded it, then forget the burst.
pub(crate) fn on_success(
    st: &mut EntityState,
    key: EntityKey,
    user: &str,
    ip: Option<&str>,
    cfg: &BruteForceSuccessConfig,
    ctx: &Ctx<'_>,
    out: &mut Vec<Finding>,
) {
    let Some(mut s) = st.brute_force.take() else {
        return;
    };
    // Only the failures before the success count: one dated before the burst (a late page, a
    // newest-first listing) follows none of it. QA: it raised a HIGH alert naming the user's
    // own login, and closed the burst, so the attacker's success right after went unreported.
    let failures = s.window.total_until(ctx.t, cfg.window_seconds);
    if failures < cfg.min_failures {
        // Not this burst's end: the failures after this success still count for a later one.
        st.brute_force = Some(s);
        return;
    }
    s.evidence.push(ctx.event, ctx.max_evidence + 1);
    let ratio = failures as f64 / cfg.min_failures.max(1) as f64;
    let from = ip.map(|ip| format!(" from {ip}")).unwrap_or_default();
    out.push(Finding {
        detector: UebaDetector::BruteForceSuccess,
        entity_key: key,
        entity: user.to_string(),
        entity_kind: st.kind,
        title: "Successful login after a burst of failures",
        explanation: format!(
            "{failures} failed logins from {} source IP(s) within {} for {user}, then a successful login{from} (threshold {})",
            s.ips.len(),
            human_duration(cfg.window_seconds),
            cfg.min_failures
        ),
        score: ratio,
        severity: cfg.severity,
        escalate: ratio >= 3.0,
        suppress_seconds: cfg.suppress_seconds,
        evidence: s.evidence,
    });
}
