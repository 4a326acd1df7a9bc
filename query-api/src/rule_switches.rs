//! The rules each tenant switched off, persisted in `rule_switches.json` in the data directory.
//!
//! The pipeline reads the shared [`RuleSwitches`] ([`RuleSwitchStore::switches`]); the API
//! changes them through this store, which writes the file (write-then-rename, fsynced) before
//! the change takes effect, so a switch that was answered survives a crash.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use perimeter_model::{RuleSwitches, SwitchedOff, SwitchedOffRules};
use serde::{Deserialize, Serialize};

/// The file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchFile {
    /// Tenant -> rule id -> who switched it off, when and why.
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

    /// Switch `rule_id` off for `tenant`, persisted before it applies.
    pub fn switch_off(
        &self,
        tenant: &str,
        rule_id: &str,
        why: SwitchedOff,
    ) -> Result<(), RuleSwitchError> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = self.switches.snapshot();
        next.entry(tenant.to_string())
            .or_default()
            .insert(rule_id.to_string(), why.clone());
        self.persist(next)?;
        self.switches.switch_off(tenant, rule_id, why);
        Ok(())
    }

    /// Switch `rule_id` back on for `tenant`, persisted before it applies; whether it was off.
    pub fn switch_on(&self, tenant: &str, rule_id: &str) -> Result<bool, RuleSwitchError> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = self.switches.snapshot();
        let Some(rules) = next.get_mut(tenant) else {
            return Ok(false);
        };
        if rules.remove(rule_id).is_none() {
            return Ok(false);
        }
        if rules.is_empty() {
            next.remove(tenant);
        }
        self.persist(next)?;
        Ok(self.switches.switch_on(tenant, rule_id))
    }

    fn persist(&self, switched_off: SwitchedOffRules) -> Result<(), RuleSwitchError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let text = serde_json::to_vec_pretty(&SwitchFile { switched_off })
            .expect("switches serialize to JSON");
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

    fn why(reason: &str) -> SwitchedOff {
        SwitchedOff {
            by: "token:alice:abc".into(),
            at: chrono::Utc::now(),
            reason: reason.into(),
        }
    }

    #[test]
    fn switches_survive_a_reopen_and_a_bad_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = RuleSwitchStore::open_in(dir.path()).unwrap();
        let shared = store.switches();
        store.switch_off("acme", "r1", why("noisy")).unwrap();
        store.switch_off("acme", "r2", why("tuning")).unwrap();
        assert!(
            shared.is_off("acme", "r1"),
            "the pipeline's view changes too"
        );
        assert!(store.switch_on("acme", "r2").unwrap());
        assert!(!store.switch_on("acme", "r2").unwrap());
        assert!(!store.switch_on("globex", "r1").unwrap());

        let again = RuleSwitchStore::open_in(dir.path()).unwrap();
        let off = again.switches().off_for("acme");
        assert_eq!(off.keys().collect::<Vec<_>>(), vec!["r1"]);
        assert_eq!(off["r1"].reason, "noisy");

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
        assert!(store.switch_off("acme", "r1", why("noisy")).is_err());
        assert!(!store.switches().is_off("acme", "r1"));
    }
}
