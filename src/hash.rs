//! Whole-file checksums: the SHA-256 of the input and the output for the
//! report, and the CRC-32 of a stored member checked in the same pass.
//! [`follow_file`] hashes a file while another thread is still writing it,
//! so hashing the output overlaps writing, syncing and verifying it.

use std::fs::File;
use std::io::{self, BufReader, Write};
use std::ops::Range;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A sha256 digest as lowercase hex.
pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Add to `crc` the bytes of `range` (file offsets) that lie in `buf`,
/// the file's bytes from `pos`.
fn crc_within(crc: &mut crc32fast::Hasher, range: &Range<u64>, pos: u64, buf: &[u8]) {
    let end_of_buf = pos + buf.len() as u64;
    let start = range.start.clamp(pos, end_of_buf);
    let end = range.end.clamp(pos, end_of_buf);
    crc.update(&buf[(start - pos) as usize..(end - pos) as usize]);
}

/// One streamed read of a file: its sha256 and the CRC-32 of one byte
/// range of it (a stored member, checked in the same pass). Gives up (with
/// an error) as soon as `stop` is set.
pub fn scan_file(
    path: &Path,
    crc_of: Option<Range<u64>>,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<Scanned> {
    let f = File::open(path).map_err(|e| Error::io(path, "read", e))?;
    scan_open(&f, path, crc_of, stop)
}

/// [`scan_file`] on a file already open (`path` names it in messages).
pub fn scan_open(
    f: &File,
    path: &Path,
    crc_of: Option<Range<u64>>,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<Scanned> {
    let mut sha = Sha256::new();
    let mut crc = crc32fast::Hasher::new();
    let mut pos = 0u64;
    let done = crate::os::mapped::for_each_window(f, |buf| {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        sha.update(buf);
        if let Some(range) = &crc_of {
            crc_within(&mut crc, range, pos, buf);
        }
        pos += buf.len() as u64;
        true
    })
    .map_err(|e| Error::io(path, "read", e))?;
    if !done {
        return Err(Error::io(
            path,
            "hash",
            io::Error::new(io::ErrorKind::Interrupted, "no longer needed"),
        ));
    }
    Ok((hex(&sha.finalize()), crc_of.map(|_| crc.finalize())))
}

/// A file's sha256, and the CRC-32 of the byte range asked for.
pub type Scanned = (String, Option<u32>);

/// A local header as written early: where it starts and its bytes.
pub(crate) type EarlyHeader = (u64, Vec<u8>);

/// What the writer of a file tells the hasher following it.
#[derive(Default)]
struct FollowState {
    /// The bytes before this are written and final.
    ready: u64,
    /// The whole file is written and `ready` is its length.
    finished: bool,
    /// The byte range whose CRC-32 is wanted (a stored member).
    crc_of: Option<Range<u64>>,
    /// Start again from the first byte: something declared final changed.
    restart: bool,
    /// No longer wanted.
    stop: bool,
}

/// The writer's end of a hasher that follows a file as it is written
/// ([`follow_file`]): it hashes what the writer declares final while the
/// rest is still being written, instead of the whole file afterwards.
#[derive(Clone)]
pub struct Follow(std::sync::Arc<(std::sync::Mutex<FollowState>, std::sync::Condvar)>);

impl Follow {
    fn update(&self, f: impl FnOnce(&mut FollowState)) {
        let (m, c) = &*self.0;
        f(&mut m.lock().unwrap_or_else(|p| p.into_inner()));
        c.notify_all();
    }

    /// The bytes before `ready` are final; `crc_of` is the range whose
    /// CRC-32 is wanted, once known.
    pub fn ready(&self, ready: u64, crc_of: Option<Range<u64>>) {
        self.update(|s| {
            s.ready = s.ready.max(ready);
            if crc_of.is_some() {
                s.crc_of = crc_of;
            }
        });
    }

    /// The file is complete at `len` bytes, with the CRC-32 wanted of
    /// `crc_of`. A range other than the one announced starts the hash
    /// again.
    pub fn finish(&self, len: u64, crc_of: Option<Range<u64>>) {
        self.update(|s| {
            if s.crc_of.is_some() && s.crc_of != crc_of {
                s.restart = true;
            }
            s.crc_of = crc_of;
            s.ready = len;
            s.finished = true;
        });
    }

    /// Something declared final was written again: hash from the start.
    pub fn restart(&self) {
        self.update(|s| s.restart = true);
    }

    /// Stop the hasher (the file is not wanted any more).
    pub fn stop(&self) {
        self.update(|s| s.stop = true);
    }
}

/// Start hashing the file at `path` as it is written: a thread hashes each
/// byte once the writer has declared it final ([`Follow::ready`]), and
/// returns, once the writer has said [`Follow::finish`], the file's sha256
/// and the CRC-32 of the range asked for, as [`scan_file`] does.
pub fn follow_file(path: &Path) -> Result<(Follow, std::thread::JoinHandle<Result<Scanned>>)> {
    let f = File::open(path).map_err(|e| Error::io(path, "read", e))?;
    follow_open(f, path)
}

/// [`follow_file`] on a handle of the file being written (`path` names it
/// in messages).
pub fn follow_open(
    f: File,
    path: &Path,
) -> Result<(Follow, std::thread::JoinHandle<Result<Scanned>>)> {
    let follow = Follow(Default::default());
    let shared = follow.0.clone();
    let path = path.to_path_buf();
    let handle = std::thread::spawn(move || {
        let (m, c) = &*shared;
        let mut sha = Sha256::new();
        let mut crc = crc32fast::Hasher::new();
        let mut range: Option<Range<u64>> = None;
        let mut pos = 0u64;
        loop {
            let ready = {
                let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if g.stop {
                        return Err(Error::io(
                            &path,
                            "hash",
                            io::Error::new(io::ErrorKind::Interrupted, "no longer needed"),
                        ));
                    }
                    if g.crc_of != range {
                        // A range announced after the hash went past its
                        // start, or replacing one it began, cannot be
                        // checked on the way: start again.
                        let begun =
                            |r: &Option<Range<u64>>| r.as_ref().is_some_and(|r| r.start < pos);
                        if begun(&g.crc_of) || begun(&range) {
                            g.restart = true;
                        }
                        range = g.crc_of.clone();
                    }
                    if g.restart {
                        g.restart = false;
                        (sha, crc, pos) = (Sha256::new(), crc32fast::Hasher::new(), 0);
                    }
                    if pos < g.ready || g.finished {
                        break;
                    }
                    g = c.wait(g).unwrap_or_else(|p| p.into_inner());
                }
                if pos >= g.ready {
                    break;
                }
                g.ready
            };
            let n = crate::os::mapped::WINDOW.min(ready - pos);
            crate::os::mapped::with_window(&f, pos, n as usize, |buf| {
                sha.update(buf);
                if let Some(r) = &range {
                    crc_within(&mut crc, r, pos, buf);
                }
            })
            .map_err(|e| Error::io(&path, "read", e))?;
            pos += n;
        }
        Ok((hex(&sha.finalize()), range.map(|_| crc.finalize())))
    });
    Ok((follow, handle))
}

/// CRC-32 of a whole file, streamed.
pub fn crc_file(path: &Path) -> Result<u32> {
    let f = File::open(path).map_err(|e| Error::io(path, "read", e))?;
    let mut w = CrcWriter::<io::Sink>::default();
    io::copy(&mut BufReader::with_capacity(1 << 20, f), &mut w)
        .map_err(|e| Error::io(path, "read", e))?;
    Ok(w.crc.finalize())
}

/// A sink that computes the CRC-32 of what passes through it.
#[derive(Default)]
pub(crate) struct CrcWriter<W = io::Sink> {
    pub(crate) inner: W,
    pub(crate) crc: crc32fast::Hasher,
    pub(crate) count: u64,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_follower_hashes_what_the_file_ends_as() {
        use std::os::unix::fs::FileExt;
        let bytes: Vec<u8> = (0..(9u32 << 20) + 123)
            .map(|i| (i * 13 + i / 509) as u8)
            .collect();
        let n = bytes.len() as u64;
        // Past the first piece, so a range announced after it starts
        // beyond what was hashed.
        let range = (5 << 20) + 1000..n - 77;
        let want_crc = crc32fast::hash(&bytes[range.start as usize..range.end as usize]);
        let want_sha = hex(&Sha256::digest(&bytes));
        // (announce the range early?, rewrite declared bytes and restart?,
        // announce another range first?)
        for (early, rewrite, other) in [
            (true, false, false),
            (false, false, false),
            (true, true, false),
            (true, false, true),
        ] {
            let t = tempfile::NamedTempFile::new().unwrap();
            let (follow, handle) = follow_file(t.path()).unwrap();
            let f = t.as_file();
            let mut at = 0usize;
            for (i, piece) in bytes.chunks(3 << 20).enumerate() {
                let mut piece = piece.to_vec();
                if rewrite && i == 0 {
                    piece[5] ^= 0xff;
                }
                f.write_all_at(&piece, at as u64).unwrap();
                at += piece.len();
                // Another range at first, then the right one, which
                // starts past what was hashed: the two must not mix.
                let announced = if other && i == 0 {
                    0..10
                } else {
                    range.clone()
                };
                follow.ready(at as u64, early.then_some(announced));
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            if rewrite {
                f.write_all_at(&bytes[5..6], 5).unwrap();
                follow.restart();
            }
            follow.finish(n, Some(range.clone()));
            let (sha, crc) = handle.join().unwrap().unwrap();
            let case = format!("early {early}, rewrite {rewrite}, other {other}");
            assert_eq!(sha, want_sha, "{case}");
            assert_eq!(crc, Some(want_crc), "{case}");
        }
        // Stopped, it says so instead of hashing half a file.
        let t = tempfile::NamedTempFile::new().unwrap();
        let (follow, handle) = follow_file(t.path()).unwrap();
        t.as_file().write_all_at(b"abc", 0).unwrap();
        follow.ready(3, None);
        follow.stop();
        assert!(handle.join().unwrap().is_err());
    }

    #[test]
    fn scan_hashes_the_file_and_checks_a_range_in_one_pass() {
        let t = tempfile::NamedTempFile::new().unwrap();
        // Longer than one mapping window, so the range straddles two.
        let bytes: Vec<u8> = (0..(9u32 << 20)).map(|i| (i * 7 + i / 251) as u8).collect();
        fs::write(t.path(), &bytes).unwrap();
        let range = (8u64 << 20) - 5..(8u64 << 20) + 1000;
        let go = std::sync::atomic::AtomicBool::new(false);
        let (sha, crc) = scan_file(t.path(), Some(range.clone()), &go).unwrap();
        assert_eq!(sha, hex(&Sha256::digest(&bytes)));
        let want = crc32fast::hash(&bytes[range.start as usize..range.end as usize]);
        assert_eq!(crc, Some(want));
        let e = tempfile::NamedTempFile::new().unwrap();
        let (sha, crc) = scan_file(e.path(), None, &go).unwrap();
        assert_eq!(sha, hex(&Sha256::digest(b"")));
        assert_eq!(crc, None);
        let stop = std::sync::atomic::AtomicBool::new(true);
        assert!(scan_file(t.path(), None, &stop).is_err());
    }
}
