//! Temporary paths: how they are named, and the ones to remove if the
//! process has to stop abruptly.
//!
//! Temporary files are normally removed by their owners' destructors. When
//! Ctrl-C ends a run, destructors do not run; the handler calls
//! [`remove_all`] first. Every temporary file krepair makes starts with
//! [`prefix`]: a worker process is given a prefix of its own for each
//! archive, so that the supervisor can remove whatever a worker that
//! crashed or was killed left behind (see [`crate::run::worker`]).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static PATHS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static PREFIX: Mutex<Option<String>> = Mutex::new(None);

/// The prefix of every temporary file and directory krepair creates:
/// `.krepair-`, or what [`set_prefix`] said.
pub fn prefix() -> String {
    PREFIX
        .lock()
        .ok()
        .and_then(|g| g.clone())
        .unwrap_or_else(|| ".krepair-".to_string())
}

/// Name the temporary files of this process from now on `prefix*` (it
/// should start with `.krepair-`, which the batch walk skips).
pub fn set_prefix(prefix: &str) {
    if let Ok(mut g) = PREFIX.lock() {
        *g = Some(prefix.to_string());
    }
}

/// Registers a path for [`remove_all`] until dropped.
#[derive(Debug)]
pub struct Registered(PathBuf);

/// Register `path` (a file or a directory).
pub fn register(path: &Path) -> Registered {
    if let Ok(mut v) = PATHS.lock() {
        v.push(path.to_path_buf());
    }
    Registered(path.to_path_buf())
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut v) = PATHS.lock() {
            if let Some(i) = v.iter().rposition(|p| *p == self.0) {
                v.remove(i);
            }
        }
    }
}

/// Remove every registered path that still exists.
pub fn remove_all() {
    let paths = match PATHS.lock() {
        Ok(v) => v.clone(),
        Err(p) => p.into_inner().clone(),
    };
    for p in paths {
        if p.is_dir() {
            let _ = std::fs::remove_dir_all(&p);
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
}
