//! Temporary paths to remove if the process has to stop abruptly.
//!
//! Temporary files are normally removed by their owners' destructors. When
//! the HDF5 watchdog (see `main.rs` and [`crate::weights::busy_for`]) ends
//! the process because the C library hangs on a malformed file,
//! destructors do not run; it calls [`remove_all`] first.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static PATHS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

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
