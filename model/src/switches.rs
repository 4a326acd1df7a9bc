//! Rules a tenant has switched off, for everyone or for one entity, for good or until a time.
//!
//! A SOC turns off a rule that is noisy in its organisation without editing the shared rule files
//! (they serve every tenant) and without restarting (correlation windows and baselines would be
//! lost); or, far more often, silences one rule for one entity that is known to do that (a CI
//! service account creating access keys), for a while. The detectors keep running every rule;
//! the pipeline drops an alert whose rule is off for its tenant, or off for its entity, before it
//! is stored or sent, and counts it. So a correlation built on a rule that is off still sees that
//! rule's matches, and switching a rule back on needs no warm-up.
//!
//! Entities are compared as alerts show them, i.e. masked (`hmac:...` for a hashed access key),
//! so an analyst copies the entity from the alert. A switch with `until` lapses by itself
//! (wall-clock time).
//!
//! This is the shared in-memory view: the API changes it and persists it (query-api's
//! `RuleSwitchStore`), the pipeline reads it once per alert.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Who switched a rule off, when, why, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchedOff {
    /// The actor (`token:<name>:<id>`), as in alert histories.
    pub by: String,
    pub at: DateTime<Utc>,
    pub reason: String,
    /// The switch lapses at this time; absent: until switched on again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

impl SwitchedOff {
    /// Whether the switch still holds at `now`.
    pub fn holds(&self, now: DateTime<Utc>) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

/// One rule's switches for one tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSwitch {
    /// Off for every entity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub off: Option<SwitchedOff>,
    /// Off for these entities only (as alerts show them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub off_for: BTreeMap<String, SwitchedOff>,
}

impl RuleSwitch {
    fn is_empty(&self) -> bool {
        self.off.is_none() && self.off_for.is_empty()
    }

    /// Without the switches that lapsed before `now`.
    fn holding(mut self, now: DateTime<Utc>) -> RuleSwitch {
        self.off = self.off.filter(|s| s.holds(now));
        self.off_for.retain(|_, s| s.holds(now));
        self
    }
}

/// Per tenant, per rule id, the switches.
pub type SwitchedOffRules = BTreeMap<String, BTreeMap<String, RuleSwitch>>;

/// Switch `rule_id` of `tenant` off (`change` given) or back on (`None`), for every entity or
/// for `entity` only. Switching on for every entity leaves the per-entity switches. Returns
/// whether anything changed.
pub fn apply_switch(
    rules: &mut SwitchedOffRules,
    tenant: &str,
    rule_id: &str,
    entity: Option<&str>,
    change: Option<SwitchedOff>,
) -> bool {
    let tenant_rules = rules.entry(tenant.to_string()).or_default();
    let switch = tenant_rules.entry(rule_id.to_string()).or_default();
    // Entities are named as alerts show them, in any case (`QA9@acme.test` is `qa9@acme.test`,
    // as the alert filters take it): kept lower-cased, and any spelling of one is the same.
    let changed = match (entity, change) {
        (None, Some(off)) => switch.off.replace(off.clone()) != Some(off),
        (None, None) => switch.off.take().is_some(),
        (Some(e), Some(off)) => {
            let before = switch.off_for.len();
            switch.off_for.retain(|k, _| !same_entity(k, e));
            let replaced = switch.off_for.insert(e.to_lowercase(), off.clone());
            replaced != Some(off) || switch.off_for.len() != before
        }
        (Some(e), None) => {
            let before = switch.off_for.len();
            switch.off_for.retain(|k, _| !same_entity(k, e));
            switch.off_for.len() != before
        }
    };
    if switch.is_empty() {
        tenant_rules.remove(rule_id);
    }
    if tenant_rules.is_empty() {
        rules.remove(tenant);
    }
    changed
}

/// Whether two names are one entity (case aside).
fn same_entity(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b) || (!a.is_ascii() && a.to_lowercase() == b.to_lowercase())
}

/// The switches of every tenant. Cheap to read when nothing is off (one atomic load).
#[derive(Debug, Default)]
pub struct RuleSwitches {
    any: AtomicBool,
    rules: RwLock<SwitchedOffRules>,
}

impl RuleSwitches {
    /// The switches in `rules` (as [`RuleSwitches::snapshot`] gave them).
    pub fn from_snapshot(rules: SwitchedOffRules) -> RuleSwitches {
        let switches = RuleSwitches::default();
        switches.replace(rules);
        switches
    }

    /// Use `rules` from now on.
    pub fn replace(&self, rules: SwitchedOffRules) {
        let mut current = self.rules.write().unwrap_or_else(|p| p.into_inner());
        self.any.store(!rules.is_empty(), Ordering::Release);
        *current = rules;
    }

    /// Whether an alert of `rule_id` about `entity` is dropped for `tenant` at `now`.
    pub fn drops(&self, tenant: &str, rule_id: &str, entity: &str, now: DateTime<Utc>) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let rules = self.rules.read().unwrap_or_else(|p| p.into_inner());
        let Some(switch) = rules.get(tenant).and_then(|r| r.get(rule_id)) else {
            return false;
        };
        switch.off.as_ref().is_some_and(|s| s.holds(now))
            || switch
                .off_for
                .iter()
                .any(|(e, s)| same_entity(e, entity) && s.holds(now))
    }

    /// The switches of `tenant` that hold at `now`, by rule id.
    pub fn for_tenant(&self, tenant: &str, now: DateTime<Utc>) -> BTreeMap<String, RuleSwitch> {
        let rules = self.rules.read().unwrap_or_else(|p| p.into_inner());
        rules
            .get(tenant)
            .into_iter()
            .flatten()
            .map(|(rule, switch)| (rule.clone(), switch.clone().holding(now)))
            .filter(|(_, switch)| !switch.is_empty())
            .collect()
    }

    /// Every switch that holds at `now` (lapsed ones are left out), for persisting.
    pub fn snapshot(&self, now: DateTime<Utc>) -> SwitchedOffRules {
        let rules = self.rules.read().unwrap_or_else(|p| p.into_inner());
        let mut out = SwitchedOffRules::new();
        for (tenant, tenant_rules) in rules.iter() {
            for (rule, switch) in tenant_rules {
                let switch = switch.clone().holding(now);
                if !switch.is_empty() {
                    out.entry(tenant.clone())
                        .or_default()
                        .insert(rule.clone(), switch);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn off(reason: &str, until: Option<&str>) -> SwitchedOff {
        SwitchedOff {
            by: "token:alice:abc".into(),
            at: at("2026-12-01T10:00:00Z"),
            reason: reason.into(),
            until: until.map(at),
        }
    }

    #[test]
    fn switches_are_per_tenant_per_entity_lapse_and_survive_a_snapshot() {
        let now = at("2026-12-02T00:00:00Z");
        let mut rules = SwitchedOffRules::new();
        assert!(apply_switch(
            &mut rules,
            "acme",
            "r1",
            None,
            Some(off("noisy", None))
        ));
        assert!(!apply_switch(
            &mut rules,
            "acme",
            "r1",
            None,
            Some(off("noisy", None))
        ));
        let ci = off("CI creates keys", Some("2026-12-03T00:00:00Z"));
        assert!(apply_switch(
            &mut rules,
            "acme",
            "r2",
            Some("svc-ci"),
            Some(ci)
        ));
        let lapsed = off("old", Some("2026-12-01T12:00:00Z"));
        assert!(apply_switch(&mut rules, "acme", "r3", None, Some(lapsed)));
        let s = RuleSwitches::from_snapshot(rules.clone());

        assert!(s.drops("acme", "r1", "anyone", now));
        assert!(
            !s.drops("globex", "r1", "anyone", now),
            "another tenant keeps the rule"
        );
        assert!(s.drops("acme", "r2", "svc-ci", now));
        assert!(
            s.drops("acme", "r2", "SVC-CI", now),
            "any case of the entity"
        );
        assert!(
            !s.drops("acme", "r2", "dana", now),
            "other entities keep the rule"
        );
        // Switched off as `QA9@...`, on again as `qa9@...`: one entity.
        let mut cased = rules.clone();
        let e = Some("QA9@acme.test");
        assert!(apply_switch(
            &mut cased,
            "acme",
            "r4",
            e,
            Some(off("x", None))
        ));
        let s4 = RuleSwitches::from_snapshot(cased.clone());
        assert!(s4.drops("acme", "r4", "qa9@acme.test", now));
        assert!(apply_switch(
            &mut cased,
            "acme",
            "r4",
            Some("qa9@ACME.test"),
            None
        ));
        assert!(!apply_switch(
            &mut cased,
            "acme",
            "r4",
            Some("qa9@acme.test"),
            None
        ));
        assert!(!RuleSwitches::from_snapshot(cased).drops("acme", "r4", "QA9@acme.test", now));
        assert!(
            !s.drops("acme", "r2", "svc-ci", at("2026-12-03T00:00:00Z")),
            "lapsed"
        );
        assert!(!s.drops("acme", "r3", "anyone", now), "lapsed");
        assert_eq!(
            s.for_tenant("acme", now).keys().collect::<Vec<_>>(),
            vec!["r1", "r2"]
        );
        let again = RuleSwitches::from_snapshot(s.snapshot(now));
        assert!(again.drops("acme", "r2", "svc-ci", now));
        assert!(
            !again.snapshot(now)["acme"].contains_key("r3"),
            "lapsed ones are dropped"
        );

        // On for everyone leaves the entity switch; on for the entity removes it.
        assert!(apply_switch(&mut rules, "acme", "r1", None, None));
        assert!(!apply_switch(&mut rules, "acme", "r1", None, None));
        assert!(!apply_switch(&mut rules, "acme", "r2", None, None));
        assert!(rules["acme"]["r2"].off_for.contains_key("svc-ci"));
        assert!(apply_switch(&mut rules, "acme", "r2", Some("svc-ci"), None));
        assert!(apply_switch(&mut rules, "acme", "r3", None, None));
        assert!(rules.is_empty(), "no empty entries left: {rules:?}");
        s.replace(rules);
        assert!(!s.drops("acme", "r1", "anyone", now));
    }
}
