//! Snapshot of the UEBA state: entities (by keyed hash), their windows and baselines, and the open
//! alert groups, and each stream's (tenant + source) event-time clock. Written atomically (temp
//! file, fsync, rename) in the binary form of `state_file::write_binary` (JSON snapshots of
//! earlier versions are still read). Clear entity values are
//! never written: keys are keyed BLAKE3 hashes, set members are keyed 32-bit tags, and the
//! groups' clear entity / explanation fields are `#[serde(skip)]`.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::hygiene::{Group, GroupKey};
use super::state::{EntityState, KeyMap};
use super::UebaEngine;
use crate::DetectError;

const FORMAT: &str = "perimeter-ueba/1";

/// Proves which entity key wrote the file without revealing it.
fn key_check(secret: &[u8; 32]) -> String {
    blake3::keyed_hash(secret, b"perimeter ueba snapshot key check").to_hex()[..16].to_string()
}

#[derive(Serialize)]
struct SnapshotOut<'a> {
    format: &'static str,
    key_check: String,
    watermark: i64,
    swept_hour: i64,
    entities: &'a KeyMap<EntityState>,
    groups: Vec<(&'a GroupKey, &'a Group)>,
    stream_clocks: &'a HashMap<String, HashMap<String, i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotIn {
    format: String,
    key_check: String,
    watermark: i64,
    swept_hour: i64,
    entities: KeyMap<EntityState>,
    groups: Vec<(GroupKey, Group)>,
    /// Absent in snapshots of earlier versions: those streams fall back to `watermark`.
    #[serde(default)]
    stream_clocks: HashMap<String, HashMap<String, i64>>,
}

pub(crate) fn write(engine: &UebaEngine, path: &Path) -> Result<(), DetectError> {
    crate::state_file::write_binary(path, "ueba snapshot", &snapshot_out(engine), true)
}

fn snapshot_out(engine: &UebaEngine) -> SnapshotOut<'_> {
    SnapshotOut {
        format: FORMAT,
        key_check: key_check(&engine.secret),
        watermark: engine.watermark,
        swept_hour: engine.swept_hour,
        entities: &engine.entities,
        groups: engine.hygiene.groups.iter().collect(),
        stream_clocks: &engine.stream_clocks,
    }
}

/// The JSON form earlier versions wrote, for testing that it is still read.
#[cfg(test)]
pub(crate) fn write_json(engine: &UebaEngine, path: &Path) -> Result<(), DetectError> {
    crate::state_file::write_json(path, "ueba snapshot", &snapshot_out(engine), true)
}

pub(crate) fn read(engine: &mut UebaEngine, path: &Path) -> Result<(), DetectError> {
    let snap: SnapshotIn = crate::state_file::read_state(path, "ueba snapshot")?;
    if snap.format != FORMAT {
        return Err(DetectError::Other(format!(
            "ueba snapshot {}: format `{}` is not `{FORMAT}`",
            path.display(),
            snap.format
        )));
    }
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
    engine.stream_clocks = snap.stream_clocks;
    // A smaller `max_entities` than when the snapshot was written still holds after restore.
    while engine.entities.len() as u64 > engine.config.max_entities.max(1) {
        engine.evict_lru();
    }
    Ok(())
}
