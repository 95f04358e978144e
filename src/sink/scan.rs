//! Hashing on the other core: the input while it is read, the output
//! while it is written, synced and verified ([`crate::hash`] does the
//! hashing; this joins it with the archive's own checksums).

use crate::error::{Error, Result};

/// A file's sha256 and its weights' CRC-32.
type ScanResult = Result<crate::hash::Scanned>;

/// A background scan of a zip file: its sha256 and its weights' CRC-32.
/// Dropping it unjoined (an early error) stops the thread at its next
/// window, so a failed archive does not keep a core busy hashing.
pub(crate) struct Scan {
    pub(crate) handle: Option<std::thread::JoinHandle<ScanResult>>,
    pub(crate) stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// A scan that follows the output as it is written.
    pub(crate) follow: Option<crate::hash::Follow>,
}

impl Drop for Scan {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(f) = &self.follow {
            f.stop();
        }
    }
}

/// Hash a zip file on the other core, checking the CRC-32 of its stored
/// weights member in the same pass (the inspection maps those bytes but
/// does not read them all).
pub(crate) fn scan_in_background(archive: &crate::source::keras::Archive) -> Option<Scan> {
    let file = archive.file()?.clone();
    let path = archive.path.clone();
    let range = archive
        .member(crate::source::keras::WEIGHTS)
        .and_then(|m| m.stored_at.clone());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    Some(Scan {
        handle: Some(std::thread::spawn(move || {
            crate::hash::scan_open(&file, &path, range, &flag)
        })),
        stop,
        follow: None,
    })
}

/// Join a scan: the file's sha256, after checking the weights' CRC-32.
pub(crate) fn finish_scan(
    scan: Option<Scan>,
    archive: &crate::source::keras::Archive,
) -> Result<Option<String>> {
    let Some(mut scan) = scan else {
        return Ok(None);
    };
    let Some(handle) = scan.handle.take() else {
        return Ok(None);
    };
    let (sha, crc) = handle.join().unwrap_or_else(|_| {
        Err(Error::Internal {
            path: archive.path.clone(),
            problem: "internal error: the hashing thread panicked".into(),
        })
    })?;
    let m = archive.member(crate::source::keras::WEIGHTS);
    if let (Some(crc), Some(m)) = (crc, m) {
        if Some(crc) != m.crc32 {
            return Err(Error::format(
                format!(
                    "{}!{}",
                    archive.path.display(),
                    crate::source::keras::WEIGHTS
                ),
                crate::error::Malformed::Container,
                "invalid checksum: the stored bytes do not match the zip's CRC-32",
            ));
        }
    }
    Ok(Some(sha))
}
