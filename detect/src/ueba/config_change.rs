//! `config_change`: security-relevant configuration changes (policy, MFA, SSO, admin roles,
//! audit settings, integrations). Every change feeds the actor's change rate; an alert fires when
//! an actor who rarely changes configuration does, or when the change happens in an hour that
//! holds almost none of the actor's activity. An actor still in its warm-up is judged only when
//! it was first seen a warm-up or more after the tenant began to be watched: then the actor is
//! new (an account made to change MFA or sign-on policy), not merely unknown since Perimeter
//! started.

use perimeter_model::Event;
use serde::{Deserialize, Serialize};

use super::baseline::{format_p, hour_and_day, surprise, RateBaseline};
use super::classify::Classified;
use super::config::ConfigChangeConfig;
use super::hygiene::{Finding, UebaDetector};
use super::state::{EntityKey, EntityState, Evidence};
use super::Ctx;

/// What `config_change` knows about an actor (a user).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ActorState {
    /// Events per hour of day (UTC), halved when a slot saturates so the profile keeps adapting.
    hours: [u16; 24],
    /// Learned security-change rate, started at the actor's first sighting.
    changes: Option<RateBaseline>,
}

fn is_security_relevant(event: &Event, cfg: &ConfigChangeConfig) -> bool {
    let ecs = &event.ecs;
    if ecs
        .event_category
        .iter()
        .any(|c| c.eq_ignore_ascii_case("iam"))
    {
        return true;
    }
    let action = ecs
        .event_action
        .as_deref()
        .unwrap_or("")
        .to_ascii_lowercase();
    cfg.security_keywords
        .iter()
        .any(|k| action.contains(k.as_str()))
}

fn hour_share(hours: &[u16; 24], h: usize) -> (f64, u64) {
    let total: u64 = hours.iter().map(|&c| c as u64).sum();
    let near = hours[(h + 23) % 24] as u64 + hours[h] as u64 + hours[(h + 1) % 24] as u64;
    if total == 0 {
        return (0.0, 0);
    }
    (near as f64 / total as f64, total)
}

/// Every event of a user passes here (activity hours); changes are judged, then recorded.
pub(crate) fn observe(
    st: &mut EntityState,
    key: EntityKey,
    user: &str,
    c: &Classified<'_>,
    cfg: &ConfigChangeConfig,
    ctx: &Ctx<'_>,
    out: &mut Vec<Finding>,
) {
    let t = ctx.t;
    let first_seen = st.first_seen;
    let age_hours = st.age_hours(t);
    let a = st.actor.get_or_insert_with(|| {
        Box::new(ActorState {
            hours: [0; 24],
            changes: None,
        })
    });
    let (h, _) = hour_and_day(t.div_euclid(3600));
    if c.config_change && is_security_relevant(ctx.event, cfg) {
        let changes = a
            .changes
            .get_or_insert_with(|| RateBaseline::new(first_seen));
        let per_week = changes.rate_per_hour(t, ctx.params) * 168.0;
        changes.observe(t, 1, ctx.params);
        let (share, total) = hour_share(&a.hours, h);
        let learned = age_hours >= cfg.warmup_hours;
        let new_actor = !learned && ctx.is_new_actor(first_seen, cfg.warmup_hours);
        if learned || new_actor {
            let rare = new_actor || per_week < cfg.rare_max_changes_per_week;
            let off_hours =
                learned && total >= cfg.min_activity_events && share <= cfg.unusual_hour_max_share;
            if rare || off_hours {
                let age_days = age_hours as f64 / 24.0;
                // At least "one change in the whole history", so a first change is not p = 0.
                let per_day = (per_week / 7.0).max(1.0 / (age_days + 1.0));
                let p_rare = 1.0 - (-per_day).exp();
                let p_hour = share.max(1.0 / (total as f64 + 1.0));
                // A new actor: the share of the tenant's watched time the actor has existed.
                let watched_hours = (t - ctx.tenant_since).max(0) as f64 / 3600.0;
                let p_new = (age_hours as f64 + 1.0) / (watched_hours + 1.0);
                let p = match (new_actor, rare, off_hours) {
                    (true, _, _) => p_new,
                    (_, true, true) => p_rare.min(p_hour),
                    (_, true, false) => p_rare,
                    _ => p_hour,
                };
                let action = ctx
                    .event
                    .ecs
                    .event_action
                    .as_deref()
                    .unwrap_or("unknown action");
                let mut why = Vec::new();
                if new_actor {
                    why.push(format!(
                        "{user} was first seen {age_hours} h ago, in a tenant watched for {} days",
                        ctx.tenant_days()
                    ));
                } else if rare {
                    why.push(format!(
                        "{user} makes {per_week:.2} security config changes/week over {age_days:.0} days (rare below {})",
                        cfg.rare_max_changes_per_week
                    ));
                }
                if off_hours {
                    why.push(format!(
                        "{h:02}:00 UTC (with neighbouring hours) holds {:.1}% of {user}'s {total} events",
                        share * 100.0
                    ));
                }
                let mut evidence = Evidence::default();
                evidence.push(ctx.event, 1);
                let s = surprise(p);
                out.push(Finding {
                    detector: UebaDetector::ConfigChange,
                    entity_key: key,
                    entity: user.to_string(),
                    entity_kind: st.kind,
                    title: if new_actor {
                        "Security configuration change by a new actor"
                    } else if off_hours && !rare {
                        "Security configuration change outside the actor's usual hours"
                    } else {
                        "Security configuration change by an actor who rarely changes configuration"
                    },
                    explanation: format!(
                        "security configuration change `{action}`: {}, {}",
                        why.join("; "),
                        format_p(p)
                    ),
                    score: s,
                    severity: cfg.severity,
                    // A new account changing MFA or sign-on policy is as alarming as a rare
                    // actor doing so at an unusual hour.
                    escalate: new_actor || (rare && off_hours),
                    suppress_seconds: cfg.suppress_seconds,
                    evidence,
                });
            }
        }
    }
    if a.hours[h] == u16::MAX {
        for v in a.hours.iter_mut() {
            *v /= 2;
        }
    }
    a.hours[h] += 1;
}
