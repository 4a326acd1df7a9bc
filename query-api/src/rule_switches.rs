//! The rules each tenant switched off (for everyone or for one entity, for good or until a
//! time), persisted in `rule_switches.json` in the data directory.
//!
//! The pipeline reads the shared [`RuleSwitches`] ([`RuleSwitchStore::switches`]); the API
//! changes them through this store, which writes the file (write-then-rename, fsynced) before
//! the change takes effect, so a switch that was answered survives a crash.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use perimeter_model::{apply_switch, RuleSwitches, SwitchedOff, SwitchedOffRules};
use serde::{Deserialize, Serialize};

/// The file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchFile {
    /// Tenant -> rule id -> off for everyone and/or per entity: who, when, why, until.
    switched_off: SwitchedOffRules,
}

#[derive(Debug, thiserror::Error)]
pub enum RuleSwitchError {
    #[error("rule switches {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("rule switches {path} is not a valid switch file: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Persisted rule switches. Changes are serialized; reads go to the shared [`RuleSwitches`].
#[derive(Debug)]
pub struct RuleSwitchStore {
    path: Option<PathBuf>,
    switches: Arc<RuleSwitches>,
    /// Held while a change is written, so two changes cannot persist out of order.
    writing: Mutex<()>,
}

impl RuleSwitchStore {
    /// Open (or start) the switches at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<RuleSwitchStore, RuleSwitchError> {
        let path = path.as_ref().to_path_buf();
        let file: SwitchFile = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| RuleSwitchError::Corrupt {
                    path: path.clone(),
                    source,
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SwitchFile::default(),
            Err(source) => return Err(RuleSwitchError::Io { path, source }),
        };
        Ok(RuleSwitchStore {
            path: Some(path),
            switches: Arc::new(RuleSwitches::from_snapshot(file.switched_off)),
            writing: Mutex::default(),
        })
    }

    /// `rule_switches.json` in the data directory.
    pub fn open_in(data_dir: impl AsRef<Path>) -> Result<RuleSwitchStore, RuleSwitchError> {
        RuleSwitchStore::open(data_dir.as_ref().join("rule_switches.json"))
    }

    /// Switches that live in memory only (tests, services without a data directory).
    pub fn in_memory() -> RuleSwitchStore {
        RuleSwitchStore {
            path: None,
            switches: Arc::default(),
            writing: Mutex::default(),
        }
    }

    /// The shared switches the pipeline reads.
    pub fn switches(&self) -> Arc<RuleSwitches> {
        self.switches.clone()
    }

    /// Switch `rule_id` off (`change` given) or back on for `tenant`, for every entity or for
    /// `entity` only; persisted before it applies. Returns whether anything changed.
    pub fn switch(
        &self,
        tenant: &str,
        rule_id: &str,
        entity: Option<&str>,
        change: Option<SwitchedOff>,
    ) -> Result<bool, RuleSwitchError> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        // Switches that lapsed are left out of what is written.
        let mut next = self.switches.snapshot(chrono::Utc::now());
        if !apply_switch(&mut next, tenant, rule_id, entity, change) {
            return Ok(false);
        }
        self.persist(&next)?;
        self.switches.replace(next);
        Ok(true)
    }

    fn persist(&self, switched_off: &SwitchedOffRules) -> Result<(), RuleSwitchError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file = SwitchFile {
            switched_off: switched_off.clone(),
        };
        let text = serde_json::to_vec_pretty(&file).expect("switches serialize to JSON");
        crate::files::replace_file(path, &text, crate::files::Readers::Default).map_err(|source| {
            RuleSwitchError::Io {
                path: path.clone(),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(reason: &str) -> Option<SwitchedOff> {
        Some(SwitchedOff {
            by: "token:alice:abc".into(),
            at: chrono::Utc::now(),
            reason: reason.into(),
            until: None,
        })
    }

    #[test]
    fn switches_survive_a_reopen_and_a_bad_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = RuleSwitchStore::open_in(dir.path()).unwrap();
        let shared = store.switches();
        let now = chrono::Utc::now();
        assert!(store.switch("acme", "r1", None, why("noisy")).unwrap());
        assert!(store
            .switch("acme", "r2", Some("svc-ci"), why("CI"))
            .unwrap());
        assert!(store.switch("acme", "r3", None, why("tuning")).unwrap());
        assert!(
            shared.drops("acme", "r1", "x", now),
            "the pipeline's view changes too"
        );
        assert!(store.switch("acme", "r3", None, None).unwrap());
        assert!(!store.switch("acme", "r3", None, None).unwrap());
        assert!(!store.switch("globex", "r1", None, None).unwrap());

        let again = RuleSwitchStore::open_in(dir.path()).unwrap();
        let off = again.switches().for_tenant("acme", now);
        assert_eq!(off.keys().collect::<Vec<_>>(), vec!["r1", "r2"]);
        assert_eq!(off["r1"].off.as_ref().unwrap().reason, "noisy");
        assert!(again.switches().drops("acme", "r2", "svc-ci", now));
        assert!(!again.switches().drops("acme", "r2", "dana", now));

        let path = dir.path().join("rule_switches.json");
        std::fs::write(&path, "{\"switched_off\": 3}").unwrap();
        let err = RuleSwitchStore::open(&path).unwrap_err().to_string();
        assert!(err.contains("rule_switches.json"), "{err}");
    }

    #[test]
    fn a_change_that_cannot_be_written_does_not_apply() {
        let dir = tempfile::tempdir().unwrap();
        // The file's place is taken by a directory: the write fails.
        let path = dir.path().join("taken");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("x"), "").unwrap();
        let store = RuleSwitchStore {
            path: Some(path),
            switches: Arc::default(),
            writing: Mutex::default(),
        };
        assert!(store.switch("acme", "r1", None, why("noisy")).is_err());
        assert!(!store
            .switches()
            .drops("acme", "r1", "x", chrono::Utc::now()));
    }
}
