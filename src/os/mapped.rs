//! Read a file through memory mappings, window by window.
//!
//! Hashing a file with `read()` copies every byte from the page cache into
//! a buffer first; mapping it hands the hasher the cached pages directly,
//! which on a 47 MB model saves about as much CPU as the CRC-32 costs. Each
//! window is unmapped before the next is mapped, so at most one window is
//! ever resident on krepair's account, whatever the file size.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Bytes mapped at a time (a multiple of any page size).
pub const WINDOW: u64 = 8 << 20;

/// The system's page size.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// Call `f` with the file's bytes in order, one window at a time, until
/// it returns false. Returns whether every window was seen.
pub fn for_each_window(file: &File, mut f: impl FnMut(&[u8]) -> bool) -> io::Result<bool> {
    let len = file.metadata()?.len();
    let mut pos = 0u64;
    while pos < len {
        let n = WINDOW.min(len - pos) as usize;
        let mut go_on = true;
        with_window(file, pos, n, |buf| go_on = f(buf))?;
        if !go_on {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}

/// Call `f` with the `len` bytes of `file` at `start`, which must lie
/// inside the file (a file still being written: bytes already written).
pub fn with_window(file: &File, start: u64, len: usize, f: impl FnOnce(&[u8])) -> io::Result<()> {
    if len == 0 {
        f(&[]);
        return Ok(());
    }
    let page = page_size() as u64;
    let delta = (start % page) as usize;
    let n = len + delta;
    let off = libc::off_t::try_from(start - delta as u64)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large"))?;
    // SAFETY: a fresh read-only private mapping of `n` bytes that the
    // caller says lie inside the file.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            n,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_POPULATE,
            file.as_raw_fd(),
            off,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `p..p+n` is mapped and readable until the munmap below; the
    // slice does not outlive the call.
    f(unsafe { std::slice::from_raw_parts((p as *const u8).add(delta), len) });
    // SAFETY: unmapping the mapping made above.
    unsafe { libc::munmap(p, n) };
    Ok(())
}
