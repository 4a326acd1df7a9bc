//! `first_seen`: a user appearing from a never-seen country, ASN, user-agent family or OAuth
//! client, and a new OAuth app / integration for the org. Values are kept as keyed 32-bit tags
//! (no clear value in the snapshot), bounded per attribute with least-recently-seen eviction.
//! An attribute alerts only once the entity is past warm-up and already has a value for it, so
//! a source that starts sending geo data does not make every user "new".

use perimeter_model::EntityKind;
use serde::{Deserialize, Serialize};

use super::config::{FirstSeenAttribute, FirstSeenConfig};
use super::hygiene::{Finding, UebaDetector};
use super::state::{value_tag, EntityKey, EntityState, Evidence};
use super::Ctx;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct SeenValues {
    /// (attribute, value tag, hour bucket last seen).
    values: Vec<(FirstSeenAttribute, u32, i64)>,
}

impl SeenValues {
    /// Record a value; `Some(had_values)` when it is new (whether the attribute had values before).
    fn record(
        &mut self,
        attr: FirstSeenAttribute,
        tag: u32,
        hour: i64,
        max: usize,
    ) -> Option<bool> {
        let mut count = 0usize;
        for v in self.values.iter_mut() {
            if v.0 != attr {
                continue;
            }
            if v.1 == tag {
                v.2 = v.2.max(hour);
                return None;
            }
            count += 1;
        }
        if count >= max.max(1) {
            // Evict the least recently seen value of this attribute.
            if let Some(i) = self
                .values
                .iter()
                .enumerate()
                .filter(|(_, v)| v.0 == attr)
                .min_by_key(|(_, v)| v.2)
                .map(|(i, _)| i)
            {
                self.values.swap_remove(i);
            }
        }
        self.values.push((attr, tag, hour));
        Some(count > 0)
    }
}

fn attr_byte(attr: FirstSeenAttribute) -> u8 {
    match attr {
        FirstSeenAttribute::Country => 1,
        FirstSeenAttribute::Asn => 2,
        FirstSeenAttribute::UserAgentFamily => 3,
        FirstSeenAttribute::OauthClient => 4,
        FirstSeenAttribute::OrgApp => 5,
    }
}

/// Observe `values` (attribute, clear value) for entity `st`; one finding lists every new value.
#[allow(clippy::too_many_arguments)]
pub(crate) fn observe(
    st: &mut EntityState,
    key: EntityKey,
    entity: &str,
    values: &[(FirstSeenAttribute, &str)],
    cfg: &FirstSeenConfig,
    ctx: &Ctx<'_>,
    out: &mut Vec<Finding>,
) {
    let t = ctx.t;
    let warm = st.age_hours(t) >= cfg.warmup_hours;
    let hour = t.div_euclid(3600);
    let seen = st.seen.get_or_insert_with(Default::default);
    let mut new_values = Vec::new();
    for &(attr, value) in values {
        if !cfg.attributes.contains(&attr) || value.is_empty() {
            continue;
        }
        let tag = value_tag(ctx.tag_key, attr_byte(attr), value.as_bytes());
        if let Some(had_values) =
            seen.record(attr, tag, hour, cfg.max_values_per_attribute as usize)
        {
            if warm && had_values {
                new_values.push((attr, value));
            }
        }
    }
    if new_values.is_empty() {
        return;
    }
    let list: Vec<String> = new_values
        .iter()
        .map(|(a, v)| format!("{} `{v}`", a.as_str()))
        .collect();
    let (title, subject) = match st.kind {
        EntityKind::Org => (
            "New OAuth app or integration for the organization",
            "organization",
        ),
        _ => ("User seen with a never-seen attribute", "user"),
    };
    // More new attributes at once (new country + new ASN + new client) is a stronger signal.
    let score = new_values.len() as f64;
    let mut evidence = Evidence::default();
    evidence.push(ctx.event, 1);
    out.push(Finding {
        detector: UebaDetector::FirstSeen,
        entity_key: key,
        entity: entity.to_string(),
        entity_kind: st.kind,
        title,
        explanation: format!(
            "first time in {} days of history for {subject} {entity}: {}",
            st.age_hours(t) / 24,
            list.join(", ")
        ),
        score,
        severity: cfg.severity,
        escalate: new_values.len() >= 2
            || new_values
                .iter()
                .any(|(a, _)| *a == FirstSeenAttribute::OrgApp),
        suppress_seconds: cfg.suppress_seconds,
        evidence,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_is_bounded_and_evicts_the_least_recent() {
        let mut s = SeenValues::default();
        assert_eq!(s.record(FirstSeenAttribute::Country, 1, 10, 2), Some(false));
        assert_eq!(s.record(FirstSeenAttribute::Country, 1, 11, 2), None);
        assert_eq!(
            s.record(FirstSeenAttribute::Asn, 1, 11, 2),
            Some(false),
            "attributes are separate"
        );
        assert_eq!(s.record(FirstSeenAttribute::Country, 2, 12, 2), Some(true));
        assert_eq!(s.record(FirstSeenAttribute::Country, 3, 13, 2), Some(true));
        // 1 (last seen at 11) was evicted, 2 and 3 remain.
        assert_eq!(s.record(FirstSeenAttribute::Country, 2, 14, 2), None);
        assert_eq!(s.record(FirstSeenAttribute::Country, 3, 14, 2), None);
        assert_eq!(s.values.len(), 3);
    }
}
