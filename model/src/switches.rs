//! Rules a tenant has switched off.
//!
//! A SOC turns off a rule that is noisy in its organisation without editing the shared rule files
//! (they serve every tenant) and without restarting (correlation windows and baselines would be
//! lost). The detectors keep running every rule; the pipeline drops the alerts of a rule that is
//! off for the alert's tenant before they are stored or sent, and counts them. So a correlation
//! built on a rule that is off still sees that rule's matches, and switching a rule back on needs
//! no warm-up.
//!
//! This is the shared in-memory view: the API changes it and persists it (query-api's
//! `RuleSwitchStore`), the pipeline reads it once per alert.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Who switched a rule off, when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchedOff {
    /// The actor (`token:<name>:<id>`), as in alert histories.
    pub by: String,
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// Per tenant, the rules switched off (rule id -> who/when/why). Ordered, so the persisted form
/// is stable.
pub type SwitchedOffRules = BTreeMap<String, BTreeMap<String, SwitchedOff>>;

/// The rules switched off per tenant. Cheap to read when nothing is off (one atomic load).
#[derive(Debug, Default)]
pub struct RuleSwitches {
    any_off: AtomicBool,
    off: RwLock<HashMap<String, HashMap<String, SwitchedOff>>>,
}

impl RuleSwitches {
    /// The switches in `rules` (as [`RuleSwitches::snapshot`] gave them).
    pub fn from_snapshot(rules: SwitchedOffRules) -> RuleSwitches {
        let switches = RuleSwitches::default();
        {
            let mut off = switches.write();
            for (tenant, rules) in rules {
                if !rules.is_empty() {
                    off.insert(tenant, rules.into_iter().collect());
                }
            }
            switches.any_off.store(!off.is_empty(), Ordering::Release);
        }
        switches
    }

    /// Whether `rule_id` is switched off for `tenant`.
    pub fn is_off(&self, tenant: &str, rule_id: &str) -> bool {
        self.any_off.load(Ordering::Acquire) && self.switched_off(tenant, rule_id).is_some()
    }

    /// Who switched `rule_id` off for `tenant`, when and why; `None` when it is on.
    pub fn switched_off(&self, tenant: &str, rule_id: &str) -> Option<SwitchedOff> {
        self.read().get(tenant)?.get(rule_id).cloned()
    }

    /// The rules switched off for `tenant`.
    pub fn off_for(&self, tenant: &str) -> BTreeMap<String, SwitchedOff> {
        self.read()
            .get(tenant)
            .map(|rules| rules.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Switch `rule_id` off for `tenant` (replacing an earlier who/when/why).
    pub fn switch_off(&self, tenant: &str, rule_id: &str, why: SwitchedOff) {
        let mut off = self.write();
        off.entry(tenant.to_string())
            .or_default()
            .insert(rule_id.to_string(), why);
        self.any_off.store(true, Ordering::Release);
    }

    /// Switch `rule_id` back on for `tenant`; whether it was off.
    pub fn switch_on(&self, tenant: &str, rule_id: &str) -> bool {
        let mut off = self.write();
        let Some(rules) = off.get_mut(tenant) else {
            return false;
        };
        let was_off = rules.remove(rule_id).is_some();
        if rules.is_empty() {
            off.remove(tenant);
        }
        self.any_off.store(!off.is_empty(), Ordering::Release);
        was_off
    }

    /// Every switched-off rule, for persisting.
    pub fn snapshot(&self) -> SwitchedOffRules {
        self.read()
            .iter()
            .map(|(tenant, rules)| {
                let rules = rules.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                (tenant.clone(), rules)
            })
            .collect()
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<String, HashMap<String, SwitchedOff>>> {
        self.off.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<String, HashMap<String, SwitchedOff>>> {
        self.off.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(reason: &str) -> SwitchedOff {
        SwitchedOff {
            by: "token:alice:abc".into(),
            at: "2026-12-01T10:00:00Z".parse().unwrap(),
            reason: reason.into(),
        }
    }

    #[test]
    fn switches_are_per_tenant_and_survive_a_snapshot() {
        let s = RuleSwitches::default();
        assert!(!s.is_off("acme", "r1"));
        s.switch_off("acme", "r1", why("noisy"));
        assert!(s.is_off("acme", "r1"));
        assert!(!s.is_off("globex", "r1"), "another tenant keeps the rule");
        assert!(!s.is_off("acme", "r2"));
        assert_eq!(s.switched_off("acme", "r1"), Some(why("noisy")));

        let again = RuleSwitches::from_snapshot(s.snapshot());
        assert!(again.is_off("acme", "r1"));
        assert_eq!(again.off_for("acme").len(), 1);

        assert!(again.switch_on("acme", "r1"));
        assert!(!again.switch_on("acme", "r1"), "already on");
        assert!(!again.is_off("acme", "r1"));
        assert!(again.snapshot().is_empty(), "no empty tenant entries left");
    }
}
