//! Snapshot of the UEBA state: entities (by keyed hash), their windows and baselines, and the open
//! alert groups, and each stream's (tenant + source) event-time clock. Written atomically (temp
//! file, fsync, rename) in the binary form of `state_file::write_binary` (JSON snapshots of
//! earlier versions are still read). Clear entity values are
//! never written: keys are keyed BLAKE3 hashes, set members are keyed 32-bit tags, and the
//! groups' clear entity / explanation fields are `#[serde(skip)]`.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::baseline::read_legacy_windows;
use super::hygiene::{Group, GroupKey, GroupV2};
use super::state::{EntityState, KeyMap};
use super::UebaEngine;
use crate::stream_clock::StreamClock;
use crate::DetectError;

const FORMAT: &str = "perimeter-ueba/4";
/// The format before entity keys were case-folded (`EntityKey::derive`): its users written with
/// capitals are found under new keys, as if first seen now; still read (see [`read`]).
const CASE_SENSITIVE_FORMAT: &str = "perimeter-ueba/3";
/// The format before alert groups remembered the repeats already reported (see
/// `hygiene::Group::reported`); still read, its groups reporting nothing yet.
const GROUPS_V2_FORMAT: &str = "perimeter-ueba/2";
/// The format before sliding windows got their 11th slot (see `baseline::WINDOW_SLOTS`); still
/// read, its windows moved to the new layout.
const LEGACY_FORMAT: &str = "perimeter-ueba/1";

/// Proves which entity key wrote the file without revealing it.
fn key_check(secret: &[u8; 32]) -> String {
    blake3::keyed_hash(secret, b"perimeter ueba snapshot key check").to_hex()[..16].to_string()
}

#[derive(Serialize)]
struct SnapshotOut<'a, G> {
    format: &'static str,
    key_check: String,
    watermark: i64,
    swept_hour: i64,
    entities: &'a KeyMap<EntityState>,
    groups: Vec<(&'a GroupKey, G)>,
    stream_clocks: HashMap<String, HashMap<String, i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotIn<G> {
    format: String,
    key_check: String,
    watermark: i64,
    swept_hour: i64,
    entities: KeyMap<EntityState>,
    groups: Vec<(GroupKey, G)>,
    /// Absent in snapshots of earlier versions: those streams fall back to `watermark`.
    #[serde(default)]
    stream_clocks: HashMap<String, HashMap<String, i64>>,
}

impl SnapshotIn<GroupV2> {
    /// The snapshot with its groups as they are now (nothing reported yet).
    fn upgrade(self) -> SnapshotIn<Group> {
        SnapshotIn {
            format: self.format,
            key_check: self.key_check,
            watermark: self.watermark,
            swept_hour: self.swept_hour,
            entities: self.entities,
            groups: self
                .groups
                .into_iter()
                .map(|(k, g)| (k, g.into()))
                .collect(),
            stream_clocks: self.stream_clocks,
        }
    }
}

/// Under this source name (no source has an empty name) a tenant's clocks in the snapshot
/// hold the tenant's earliest event time: stored so without changing the snapshot's layout
/// (earlier versions read it, and snapshots of earlier versions have none: a tenant's history
/// then counts from the restart).
const TENANT_SINCE: &str = "";

pub(crate) fn write(engine: &UebaEngine, path: &Path) -> Result<(), DetectError> {
    crate::state_file::write_binary(path, "ueba snapshot", &snapshot_out(engine), true)
}

fn snapshot_out(engine: &UebaEngine) -> SnapshotOut<'_, &Group> {
    SnapshotOut {
        format: FORMAT,
        key_check: key_check(&engine.secret),
        watermark: engine.watermark,
        swept_hour: engine.swept_hour,
        entities: &engine.entities,
        groups: engine.hygiene.groups.iter().collect(),
        stream_clocks: {
            // A stream's watermark only: the rest of its clock is learnt again from its next
            // record dated before receipt ([`StreamClock::restored`]).
            let mut clocks: HashMap<String, HashMap<String, i64>> = engine
                .stream_clocks
                .iter()
                .map(|(tenant, sources)| {
                    let sources = sources
                        .iter()
                        .map(|(source, clock)| (source.clone(), clock.watermark()))
                        .collect();
                    (tenant.clone(), sources)
                })
                .collect();
            for (tenant, since) in &engine.tenant_since {
                clocks
                    .entry(tenant.clone())
                    .or_default()
                    .insert(TENANT_SINCE.to_string(), *since);
            }
            clocks
        },
    }
}

/// The JSON form earlier versions wrote, for testing that it is still read.
#[cfg(test)]
pub(crate) fn write_json(engine: &UebaEngine, path: &Path) -> Result<(), DetectError> {
    crate::state_file::write_json(path, "ueba snapshot", &snapshot_out(engine), true)
}

/// A snapshot as format `perimeter-ueba/2` wrote it (groups without what they reported), for
/// testing that it is still read.
#[cfg(test)]
pub(crate) fn write_groups_v2(engine: &UebaEngine, path: &Path) -> Result<(), DetectError> {
    crate::state_file::write_binary(
        path,
        "ueba snapshot",
        &earlier_out(engine, GROUPS_V2_FORMAT),
        true,
    )
}

/// A snapshot as format `perimeter-ueba/3` wrote it (entity keys not case-folded), for testing
/// that it is still read.
#[cfg(test)]
pub(crate) fn write_case_sensitive(engine: &UebaEngine, path: &Path) -> Result<(), DetectError> {
    let mut snap = snapshot_out(engine);
    snap.format = CASE_SENSITIVE_FORMAT;
    crate::state_file::write_binary(path, "ueba snapshot", &snap, true)
}

/// A snapshot as format `perimeter-ueba/1` wrote it, binary or JSON, for testing that it is
/// still read.
#[cfg(test)]
pub(crate) fn write_legacy(
    engine: &UebaEngine,
    path: &Path,
    binary: bool,
) -> Result<(), DetectError> {
    let snap = earlier_out(engine, LEGACY_FORMAT);
    read_legacy_windows(|| match binary {
        true => crate::state_file::write_binary(path, "ueba snapshot", &snap, true),
        false => crate::state_file::write_json(path, "ueba snapshot", &snap, true),
    })
}

/// The engine's snapshot in the group layout of the formats before `perimeter-ueba/3`.
#[cfg(test)]
fn earlier_out<'a>(engine: &'a UebaEngine, format: &'static str) -> SnapshotOut<'a, GroupV2> {
    let current = snapshot_out(engine);
    SnapshotOut {
        format,
        groups: current
            .groups
            .iter()
            .map(|(k, g)| (*k, GroupV2::from((*g).clone())))
            .collect(),
        key_check: current.key_check.clone(),
        watermark: current.watermark,
        swept_hour: current.swept_hour,
        entities: current.entities,
        stream_clocks: current.stream_clocks.clone(),
    }
}

/// Whether the snapshot at `path` was written with `entity_key`; `None` when there is none,
/// or it cannot be read. Reads its head only.
pub fn written_with(path: &Path, entity_key: &[u8; 32]) -> Option<bool> {
    #[derive(Deserialize)]
    struct Head {
        #[allow(dead_code)]
        format: String,
        key_check: String,
    }
    if !path.exists() {
        return None;
    }
    let head = crate::state_file::read_state::<Head>(path, "ueba snapshot").ok()?;
    Some(head.key_check == key_check(entity_key))
}

pub(crate) fn read(engine: &mut UebaEngine, path: &Path) -> Result<(), DetectError> {
    // The layout of a binary snapshot follows from its format, which the file states first:
    // the format is read alone, then the file in its layout.
    #[derive(Deserialize)]
    struct FormatOnly {
        format: String,
    }
    let format = crate::state_file::read_state::<FormatOnly>(path, "ueba snapshot")?.format;
    let earlier = || {
        crate::state_file::read_state::<SnapshotIn<GroupV2>>(path, "ueba snapshot")
            .map(SnapshotIn::upgrade)
    };
    let snap = match format.as_str() {
        FORMAT | CASE_SENSITIVE_FORMAT => {
            crate::state_file::read_state::<SnapshotIn<Group>>(path, "ueba snapshot")?
        }
        GROUPS_V2_FORMAT => earlier()?,
        LEGACY_FORMAT => read_legacy_windows(earlier)?,
        _ => {
            return Err(DetectError::Other(format!(
                "ueba snapshot {}: format `{format}` is not `{FORMAT}`",
                path.display(),
            )))
        }
    };
    if snap.key_check != key_check(&engine.secret) {
        return Err(DetectError::Other(format!(
            "ueba snapshot {}: written with a different entity key; its entities cannot be matched",
            path.display()
        )));
    }
    engine.watermark = snap.watermark;
    engine.swept_hour = snap.swept_hour;
    engine.entities = snap.entities;
    engine.hygiene.groups = snap.groups.into_iter().collect();
    let mut clocks = snap.stream_clocks;
    engine.tenant_since = clocks
        .iter_mut()
        .filter_map(|(tenant, sources)| Some((tenant.clone(), sources.remove(TENANT_SINCE)?)))
        .collect();
    if format != FORMAT {
        // Written before entity keys were case-folded: a user written with capitals comes back
        // as a new entity. Counted as watched from now on, so that such a user is not judged a
        // new actor while it warms up again (QA: an upgrade raised "a new actor" at high
        // severity for admins of ten days); a real new account of that warm-up is not judged
        // new either, as after a first start.
        for since in engine.tenant_since.values_mut() {
            *since = (*since).max(snap.watermark);
        }
    }
    engine.stream_clocks = clocks
        .into_iter()
        .map(|(tenant, sources)| {
            let sources = sources
                .into_iter()
                .map(|(source, watermark)| (source, StreamClock::restored(watermark)))
                .collect();
            (tenant, sources)
        })
        .collect();
    // A smaller `max_entities` than when the snapshot was written still holds after restore.
    while engine.entities.len() as u64 > engine.config.max_entities.max(1) {
        engine.evict_lru();
    }
    Ok(())
}
