//! The few operating-system calls the worker model needs that `std` does
//! not wrap: the memory budget (`RLIMIT_DATA`), dying with the parent
//! (`PR_SET_PDEATHSIG`), and ending a worker's process group.
//!
//! The memory budget is what a worker may allocate beyond what it had when
//! the archive started, *plus* the private mappings of the weights that
//! are live ([`grow`] and [`shrink`], called by `weights::Image`). The
//! kernel counts private writable mappings against `RLIMIT_DATA`, so
//! without that allowance a 4 GiB archive could never be repaired under a
//! 1 GiB budget, although krepair's own memory stays in the tens of MiB.
#![allow(unsafe_code)]

use std::sync::Mutex;

/// The soft `RLIMIT_DATA` in force while a budget is set, in bytes.
static LIMIT: Mutex<Option<u64>> = Mutex::new(None);

fn set_data_limit(bytes: u64) -> std::io::Result<()> {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit write/read only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_DATA, &mut cur) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let want = libc::rlimit {
            rlim_cur: bytes.min(cur.rlim_max),
            rlim_max: cur.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_DATA, &want) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Bytes of this process's data segment as the kernel counts it for
/// `RLIMIT_DATA` (`VmData` in `/proc/self/status`).
pub fn data_bytes() -> Option<u64> {
    status_kib("VmData:").map(|k| k * 1024)
}

/// The peak resident set of this process so far (`VmHWM`), in MiB; 0 if
/// unknown. For `KREPAIR_TIMINGS` ([`crate::run::worker::TIMINGS_ENV`]).
pub fn peak_rss_mib() -> u64 {
    status_kib("VmHWM:").unwrap_or(0) / 1024
}

fn status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Allow this process `budget` more bytes of data than it uses now (plus
/// whatever [`grow`] adds later). Returns false if the limit could not be
/// set (the job then runs without one).
pub fn set_budget(budget: u64) -> bool {
    let Some(now) = data_bytes() else {
        return false;
    };
    let limit = now.saturating_add(budget);
    let mut g = LIMIT.lock().unwrap_or_else(|p| p.into_inner());
    if set_data_limit(limit).is_ok() {
        *g = Some(limit);
        true
    } else {
        false
    }
}

/// Lift the budget (back to the hard limit).
pub fn clear_budget() {
    let mut g = LIMIT.lock().unwrap_or_else(|p| p.into_inner());
    if g.take().is_some() {
        let _ = set_data_limit(u64::MAX);
    }
}

/// A private mapping of `bytes` is about to be made: raise the budget by
/// that much, if one is set.
pub fn grow(bytes: u64) {
    let mut g = LIMIT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(limit) = g.as_mut() {
        *limit = limit.saturating_add(bytes);
        let _ = set_data_limit(*limit);
    }
}

/// A mapping made after [`grow`] is gone: lower the budget again.
pub fn shrink(bytes: u64) {
    let mut g = LIMIT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(limit) = g.as_mut() {
        *limit = limit.saturating_sub(bytes);
        let _ = set_data_limit(*limit);
    }
}

/// Ask the kernel to kill this process when its parent dies, so a worker
/// never outlives the run that started it. Returns false if the parent is
/// already gone (then the caller should exit).
pub fn die_with_parent(parent: u32) -> bool {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers; getppid has no
    // arguments.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        libc::getppid() as u32 == parent
    }
}

/// Kill the process group `pgid` (a worker is the leader of its own).
pub fn kill_group(pgid: u32) {
    if pgid == 0 {
        return;
    }
    // SAFETY: kill takes plain integers; a negative pid names a group.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), libc::SIGKILL);
    }
}

/// Crash this process with SIGSEGV, as a fault in the C library would
/// (the test-only fault injection of `worker`).
pub fn crash() -> ! {
    // SAFETY: raising a signal has no memory effects; SIGSEGV's default
    // action ends the process.
    unsafe {
        libc::signal(libc::SIGSEGV, libc::SIG_DFL);
        libc::raise(libc::SIGSEGV);
    }
    std::process::abort()
}

/// The name of a signal, for messages.
pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGSEGV => "SIGSEGV (a crash)".into(),
        libc::SIGBUS => "SIGBUS (the input changed or vanished while mapped)".into(),
        libc::SIGABRT => "SIGABRT (an abort)".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGILL => "SIGILL (a crash)".into(),
        libc::SIGFPE => "SIGFPE (a crash)".into(),
        libc::SIGTERM => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}

/// Ask the kernel to start writing `len` bytes of `file` at `offset` to
/// the disk now, without waiting (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE`): the output is synced before it is renamed
/// into place, and pages whose writeback began while the rest was still
/// being copied leave the final `fsync` less to wait for. A hint only:
/// the `fsync` still decides durability, so an error here is ignored.
pub fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range reads only its integer arguments; the
    // descriptor is open for as long as `file` is borrowed.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}
