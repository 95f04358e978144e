//! The `.keras` container: a zip file or an unzipped directory.
//!
//! Opening checks the container before anything is read from it (magic
//! bytes, member names, duplicates, declared sizes); reading checks every
//! member's CRC-32; writing builds the output next to its final path and
//! only renames it into place once it is complete and synced (see
//! [`crate::repair`] for the verification in between). Unchanged zip
//! members are copied raw: same bytes, compression, CRC and timestamps.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;
use zip::ZipArchive;

use crate::error::{Error, Result};

/// Most members a `.keras` archive may hold. Keras writes three plus its
/// assets; a hostile central directory can declare millions of tiny entries.
pub const MAX_MEMBERS: usize = 10_000;
/// Largest `config.json` read into memory (EfficientNetB7's is ~0.5 MB).
pub const MAX_CONFIG_BYTES: u64 = 64 << 20;
/// Largest `metadata.json` read into memory.
pub const MAX_METADATA_BYTES: u64 = 1 << 20;
/// A member declaring more than this many bytes *and* more than
/// [`MAX_RATIO`] times its stored size is treated as a zip bomb. Keras 3.15
/// uses 4 GiB; krepair is stricter, since Keras writes every member stored
/// (ratio 1) and no honest asset compresses a quarter gigabyte 100-fold.
pub const BOMB_MIN_BYTES: u64 = 256 << 20;
/// See [`BOMB_MIN_BYTES`].
pub const MAX_RATIO: u64 = 100;

/// The member names Keras uses.
pub const CONFIG: &str = "config.json";
/// See [`CONFIG`].
pub const METADATA: &str = "metadata.json";
/// See [`CONFIG`].
pub const WEIGHTS: &str = "model.weights.h5";
/// npz weights: pickled, never read.
pub const WEIGHTS_NPZ: &str = "model.weights.npz";
/// The first bytes of an HDF5 file (superblock signature at offset 0, where
/// h5py and Keras put it).
pub const HDF5_MAGIC: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

/// Zip file or unzipped directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Form {
    /// A zip file (what `model.save("m.keras")` writes).
    Zip,
    /// A directory (what `model.save("m", zipped=False)` writes).
    Directory,
}

/// One member of the archive.
#[derive(Clone, Debug)]
pub struct Member {
    /// Its name (`/`-separated, relative).
    pub name: String,
    /// Its uncompressed size in bytes.
    pub size: u64,
    /// Its CRC-32: the zip's declared one (checked whenever the member is
    /// read), or computed for a directory's file when it was read.
    pub crc32: Option<u32>,
    /// Where its bytes lie in the zip file when it is stored uncompressed
    /// (checked to lie inside the file), so it can be used in place.
    pub stored_at: Option<Range<u64>>,
    /// How a zip member is stored: its compression method (`stored`,
    /// `deflated`, ...) and compressed size; None in a directory.
    pub packed: Option<(String, u64)>,
}

/// An opened `.keras` archive.
pub struct Archive {
    /// Where it is.
    pub path: PathBuf,
    /// Zip or directory.
    pub form: Form,
    /// Members in archive order (sorted by name for a directory).
    pub members: Vec<Member>,
    zip: Option<ZipArchive<BufReader<File>>>,
}

/// A zip compression method as people name it (`stored`, `deflated`, ...).
fn method_name(m: zip::CompressionMethod) -> String {
    match m {
        zip::CompressionMethod::Stored => "stored".into(),
        zip::CompressionMethod::Deflated => "deflated".into(),
        other => other.to_string().to_lowercase(),
    }
}

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
    let mut sha = Sha256::new();
    let mut crc = crc32fast::Hasher::new();
    let mut pos = 0u64;
    let done = crate::mapped::for_each_window(&f, |buf| {
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
type EarlyHeader = (u64, Vec<u8>);

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
            let n = crate::mapped::WINDOW.min(ready - pos);
            crate::mapped::with_window(&f, pos, n as usize, |buf| {
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
struct CrcWriter<W = io::Sink> {
    inner: W,
    crc: crc32fast::Hasher,
    count: u64,
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

/// What the first bytes say the file is.
fn sniff(path: &Path) -> Result<Form> {
    let meta = fs::metadata(path).map_err(|e| Error::io(path, "read", e))?;
    if meta.is_dir() {
        return Ok(Form::Directory);
    }
    let mut head = [0u8; 8];
    let mut f = File::open(path).map_err(|e| Error::io(path, "open", e))?;
    let n = read_up_to(&mut f, &mut head).map_err(|e| Error::io(path, "read", e))?;
    let head = &head[..n];
    if n == 0 {
        return Err(Error::format(
            path,
            crate::error::Malformed::NotAnArchive,
            "empty file: not a .keras archive",
        ));
    }
    if head.starts_with(HDF5_MAGIC) {
        return Err(Error::format(
            path, crate::error::Malformed::NotAnArchive,
            "this is a legacy HDF5 model file (tf.keras `save_format=\"h5\"`), not a .keras zip archive; Keras 3 refuses it as well; krepair repairs .keras archives only",
        ));
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Ok(Form::Zip);
    }
    Err(Error::format(
        path,
        crate::error::Malformed::NotAnArchive,
        "not a .keras archive (no zip signature)",
    ))
}

pub(crate) fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The entry count declared by the end-of-central-directory record(s).
/// The zip crate keeps one entry per name, so comparing the two finds
/// duplicate names (which would otherwise vanish from a copy).
fn declared_entries(f: &mut File, path: &Path) -> Result<u64> {
    let len = f
        .seek(SeekFrom::End(0))
        .map_err(|e| Error::io(path, "read", e))?;
    let tail_len = len.min(22 + 65_535 + 20);
    let mut tail = vec![0u8; tail_len as usize];
    f.seek(SeekFrom::Start(len - tail_len))
        .and_then(|_| f.read_exact(&mut tail))
        .map_err(|e| Error::io(path, "read", e))?;
    let eocd = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..].starts_with(b"PK\x05\x06"))
        .ok_or_else(|| {
            Error::format(
                path,
                crate::error::Malformed::Container,
                "truncated zip: no end-of-central-directory record",
            )
        })?;
    let n16 = u16::from_le_bytes([tail[eocd + 10], tail[eocd + 11]]) as u64;
    if n16 != 0xFFFF || eocd < 20 || !tail[eocd - 20..].starts_with(b"PK\x06\x07") {
        return Ok(n16);
    }
    let loc = &tail[eocd - 20..eocd];
    let z64_at = u64::from_le_bytes(loc[8..16].try_into().expect("8 bytes"));
    let mut rec = [0u8; 40];
    f.seek(SeekFrom::Start(z64_at))
        .and_then(|_| f.read_exact(&mut rec))
        .map_err(|_| {
            Error::format(
                path,
                crate::error::Malformed::Container,
                "corrupt zip64 end-of-central-directory record",
            )
        })?;
    if !rec.starts_with(b"PK\x06\x06") {
        return Err(Error::format(
            path,
            crate::error::Malformed::Container,
            "corrupt zip64 end-of-central-directory record",
        ));
    }
    Ok(u64::from_le_bytes(rec[32..40].try_into().expect("8 bytes")))
}

/// A member name is safe if it is relative, has no `..`, no backslash, no
/// NUL, and is exactly what `enclosed_name()` makes of it.
fn check_name(path: &Path, name: &str, enclosed: Option<PathBuf>) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::format(
            path,
            crate::error::Malformed::Container,
            format!("member `{}`: {why}", name.escape_debug()),
        ))
    };
    if name.is_empty() {
        return bad("empty name");
    }
    if name.contains('\\') {
        return bad("backslash in name");
    }
    if name.contains('\0') {
        return bad("NUL in name");
    }
    let trimmed = name.trim_end_matches('/');
    let p = Path::new(trimmed);
    if p.is_absolute() || name.starts_with('/') {
        return bad("absolute path");
    }
    if p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return bad("path leaves the archive (`..` or `.`)");
    }
    match enclosed {
        Some(e) if e == p => Ok(()),
        _ => bad("unsafe name (not its own enclosed name)"),
    }
}

impl Archive {
    /// Open and check an archive (zip file or directory).
    pub fn open(path: &Path) -> Result<Self> {
        match sniff(path)? {
            Form::Zip => Self::open_zip(path),
            Form::Directory => Self::open_dir(path),
        }
    }

    fn open_zip(path: &Path) -> Result<Self> {
        let mut f = File::open(path).map_err(|e| Error::io(path, "open", e))?;
        let declared = declared_entries(&mut f, path)?;
        let file_len = f.metadata().map_err(|e| Error::io(path, "stat", e))?.len();
        if declared > MAX_MEMBERS as u64 {
            return Err(Error::format(
                path,
                crate::error::Malformed::Limit,
                format!("{declared} members, more than the limit of {MAX_MEMBERS}"),
            ));
        }
        f.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(path, "read", e))?;
        let mut zip = ZipArchive::new(BufReader::with_capacity(1 << 16, f)).map_err(|e| {
            Error::format(
                path,
                crate::error::Malformed::Container,
                format!("invalid zip: {e}"),
            )
        })?;
        if zip.len() as u64 != declared {
            return Err(Error::format(
                path, crate::error::Malformed::Container,
                format!(
                    "duplicate member names: the central directory lists {declared} entries but only {} distinct names",
                    zip.len()
                ),
            ));
        }
        let mut members = Vec::with_capacity(zip.len());
        let mut seen = HashSet::new();
        for i in 0..zip.len() {
            let m = zip.by_index_raw(i).map_err(|e| {
                Error::format(
                    path,
                    crate::error::Malformed::Container,
                    format!("member #{i}: {e}"),
                )
            })?;
            let name = m
                .name()
                .map_err(|e| {
                    Error::format(
                        path,
                        crate::error::Malformed::Container,
                        format!("member #{i}: bad name: {e}"),
                    )
                })?
                .to_string();
            check_name(path, &name, m.enclosed_name())?;
            if m.is_symlink() {
                return Err(Error::format(
                    path,
                    crate::error::Malformed::Container,
                    format!("member `{name}` is a symbolic link"),
                ));
            }
            if m.size() > BOMB_MIN_BYTES && m.size() / MAX_RATIO.max(1) > m.compressed_size() {
                return Err(Error::format(
                    path,
                    crate::error::Malformed::Limit,
                    format!(
                        "member `{name}` declares {} bytes from {} stored bytes (zip bomb)",
                        m.size(),
                        m.compressed_size()
                    ),
                ));
            }
            if !seen.insert(name.trim_end_matches('/').to_string()) {
                return Err(Error::format(
                    path,
                    crate::error::Malformed::Container,
                    format!("duplicate member `{name}`"),
                ));
            }
            let stored_at = match (m.compression(), m.data_start()) {
                (zip::CompressionMethod::Stored, Some(start))
                    if m.size() == m.compressed_size() =>
                {
                    let end = start.checked_add(m.size()).filter(|&e| e <= file_len);
                    match end {
                        Some(end) => Some(start..end),
                        None => {
                            return Err(Error::format(
                                path,
                                crate::error::Malformed::Container,
                                format!(
                                    "member `{name}` extends past the end of the file (truncated?)"
                                ),
                            ))
                        }
                    }
                }
                _ => None,
            };
            members.push(Member {
                name,
                size: m.size(),
                crc32: Some(m.crc32()),
                stored_at,
                packed: Some((method_name(m.compression()), m.compressed_size())),
            });
        }
        Ok(Archive {
            path: path.to_path_buf(),
            form: Form::Zip,
            members,
            zip: Some(zip),
        })
    }

    fn open_dir(path: &Path) -> Result<Self> {
        let mut members = Vec::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let dir = path.join(&rel);
            let rd = fs::read_dir(&dir).map_err(|e| Error::io(&dir, "list", e))?;
            for entry in rd {
                let entry = entry.map_err(|e| Error::io(&dir, "list", e))?;
                let ft = entry
                    .file_type()
                    .map_err(|e| Error::io(entry.path(), "stat", e))?;
                let name_os = entry.file_name();
                let name = name_os.to_str().ok_or_else(|| {
                    Error::format(
                        entry.path(),
                        crate::error::Malformed::Container,
                        "file name is not UTF-8",
                    )
                })?;
                let r = rel.join(name);
                if ft.is_symlink() {
                    return Err(Error::format(
                        path,
                        crate::error::Malformed::Container,
                        format!("`{}` is a symbolic link", r.display()),
                    ));
                } else if ft.is_dir() {
                    stack.push(r);
                } else if ft.is_file() {
                    let size = entry
                        .metadata()
                        .map_err(|e| Error::io(entry.path(), "stat", e))?
                        .len();
                    let name = r.to_str().expect("joined UTF-8").replace('\\', "/");
                    members.push(Member {
                        name,
                        size,
                        crc32: None,
                        stored_at: None,
                        packed: None,
                    });
                } else {
                    return Err(Error::format(
                        path,
                        crate::error::Malformed::Container,
                        format!("`{}` is not a regular file", r.display()),
                    ));
                }
                if members.len() > MAX_MEMBERS {
                    return Err(Error::format(
                        path,
                        crate::error::Malformed::Limit,
                        format!("more than {MAX_MEMBERS} files"),
                    ));
                }
            }
        }
        members.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Archive {
            path: path.to_path_buf(),
            form: Form::Directory,
            members,
            zip: None,
        })
    }

    /// The member called `name`, if any.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    fn index_of(&self, name: &str) -> Result<usize> {
        self.members
            .iter()
            .position(|m| m.name == name)
            .ok_or_else(|| {
                Error::format(
                    &self.path,
                    crate::error::Malformed::MissingMember,
                    format!("no member `{name}`"),
                )
            })
    }

    /// Stream member `name` (decompressed, CRC-checked) into `out`;
    /// return its CRC-32 (and record it for a directory's file). Stops
    /// with an error after `limit` bytes.
    pub fn copy_member(&mut self, name: &str, out: &mut impl Write, limit: u64) -> Result<u32> {
        let idx = self.index_of(name)?;
        let label = format!("{}!{name}", self.path.display());
        let mut w = CrcWriter {
            inner: out,
            crc: crc32fast::Hasher::new(),
            count: 0,
        };
        match &mut self.zip {
            Some(zip) => {
                let m = zip.by_index(idx).map_err(|e| {
                    Error::format(
                        &self.path,
                        crate::error::Malformed::Container,
                        format!("member `{name}`: {e}"),
                    )
                })?;
                let declared = m.size();
                if declared > limit {
                    return Err(Error::format(
                        &label,
                        crate::error::Malformed::Limit,
                        format!("declares {declared} bytes, more than the limit of {limit}"),
                    ));
                }
                // Never trust the stream to end where the header says.
                let mut limited = m.take(declared.saturating_add(1));
                io::copy(&mut limited, &mut w).map_err(|e| {
                    Error::format(
                        &label,
                        crate::error::Malformed::Container,
                        format!("cannot read: {e}"),
                    )
                })?;
                if w.count != declared {
                    return Err(Error::format(
                        &label,
                        crate::error::Malformed::Container,
                        format!("holds at least {} bytes but declares {declared}", w.count),
                    ));
                }
            }
            None => {
                let p = self.path.join(name);
                let f = File::open(&p).map_err(|e| Error::io(&p, "read", e))?;
                let mut limited =
                    BufReader::with_capacity(1 << 20, f).take(limit.saturating_add(1));
                io::copy(&mut limited, &mut w).map_err(|e| Error::io(&p, "read", e))?;
                if w.count > limit {
                    return Err(Error::format(
                        &p,
                        crate::error::Malformed::Limit,
                        format!("larger than the limit of {limit} bytes"),
                    ));
                }
            }
        }
        let crc = w.crc.finalize();
        self.members[idx].crc32 = Some(crc);
        Ok(crc)
    }

    /// Read a small member into memory.
    pub fn read_member(&mut self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.copy_member(name, &mut buf, limit)?;
        Ok(buf)
    }

    /// Read a member through: checks a zip member's size and CRC-32, and
    /// computes a directory file's.
    pub fn check_member(&mut self, name: &str) -> Result<u32> {
        self.copy_member(name, &mut io::sink(), u64::MAX)
    }

    /// Where member `name` can be read in place: the file and the byte
    /// range, for a stored zip member or a directory's file.
    pub fn in_place(&self, name: &str) -> Option<(PathBuf, Range<u64>)> {
        let m = self.member(name)?;
        match self.form {
            Form::Zip => m.stored_at.clone().map(|r| (self.path.clone(), r)),
            Form::Directory => Some((self.path.join(name), 0..m.size)),
        }
    }
}

/// New content for a member of the output.
pub enum Content<'a> {
    /// These bytes.
    Bytes(&'a [u8]),
    /// An edited weights image, streamed (and released) as it is written.
    Image(&'a mut crate::weights::Image),
}

impl Content<'_> {
    fn len(&self) -> u64 {
        match self {
            Content::Bytes(b) => b.len() as u64,
            Content::Image(i) => i.len() as u64,
        }
    }

    fn write_to(&mut self, out: &mut impl Write) -> io::Result<()> {
        match self {
            Content::Bytes(b) => out.write_all(b),
            Content::Image(i) => i.drain(|chunk| out.write_all(chunk)),
        }
    }
}

/// `KREPAIR_STREAM_WRITES=1`: write every byte of an edited image through
/// the process, as where the kernel cannot say which pages were written.
/// For tests (the two ways must give the same bytes) and measurements.
fn stream_writes() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("KREPAIR_STREAM_WRITES").is_some_and(|v| v == "1"))
}

/// Write the data of the current (stored) entry of `w` from an edited
/// image of the input member it replaces, run by run: the kernel copies
/// the runs no page of which was written straight from the input file
/// (`copy_file_range`, as `cp` does: no page faults, no copy through the
/// process), the written runs come from the image. The entry's CRC-32 is
/// [`patched_crc`] of the input member's, from the written runs alone;
/// the output's own bytes are checked against it when the output is
/// verified (its scan). That catches a bad copy, a moved position or an
/// input changed meanwhile, not a written page the page table called
/// unwritten (the CRC follows the same split): [`crate::weights::Image::runs`]
/// trusts the page table only once it has answered right about a page of
/// krepair's own, and the verification inspects the output again.
///
/// The CRC-32 and size are known before the data is written, so with a
/// `follow`er the local header of the entry (`name`) gets them at once
/// (the writer writes the same bytes there again when the entry ends,
/// which [`write_zip`] checks) and the hash follows the data as it is
/// written. Returns the bytes the kernel copied and the header's patch.
#[allow(unsafe_code)]
fn write_runs(
    w: &mut zip::ZipWriter<BufWriter<File>>,
    img: &mut crate::weights::Image,
    runs: &[crate::weights::Run],
    name: &str,
    input_crc: u32,
    follow: Option<&Follow>,
) -> io::Result<(u64, Option<EarlyHeader>)> {
    let src = img.source();
    let base = img.offset();
    let mapped = img.mapped_len();
    let len = img.len();
    let mut patches = Vec::new();
    let mut old = vec![0u8; (1 << 20).min(mapped)];
    for r in runs.iter().filter(|r| r.written && r.start < mapped) {
        let end = r.end.min(mapped);
        // A piece at a time: a written run can be long.
        let (mut was, mut now) = (crc32fast::Hasher::new(), crc32fast::Hasher::new());
        let mut at = r.start;
        while at < end {
            let n = old.len().min(end - at);
            std::os::unix::fs::FileExt::read_exact_at(src, &mut old[..n], base + at as u64)?;
            was.update(&old[..n]);
            now.update(img.bytes(at..at + n));
            at += n;
        }
        patches.push((
            r.start as u64,
            was.finalize() ^ now.finalize(),
            (end - r.start) as u64,
        ));
    }
    let mut crc = crc32fast::Hasher::new_with_initial_len(
        patched_crc(input_crc, mapped as u64, &patches),
        mapped as u64,
    );
    if len > mapped {
        let mut tail = crc32fast::Hasher::new();
        tail.update(img.bytes(mapped..len));
        crc.combine(&tail);
    }
    let crc = crc.finalize();
    let mut copied = 0;
    let mut patch = None;
    {
        // SAFETY: the entry's data is written at the writer's position and
        // nothing else (the header's CRC-32 and sizes are written in place
        // with the values the writer writes there itself at the entry's
        // end); the buffer is flushed first and the file's position is
        // left at the end of the data, where the writer continues.
        let out = unsafe { w.get_mut() }.ok_or_else(|| io::Error::other("zip writer closed"))?;
        out.flush()?;
        let out = out.get_mut();
        let data_at = out.stream_position()?;
        // Under 4 GiB: no zip64 fields, which the writer fills in later.
        let small = u32::try_from(len).ok().filter(|&n| n < u32::MAX);
        if let (Some(f), Some(small)) = (follow, small) {
            patch = finalize_local_header(out, name, data_at, crc, small)?;
            if patch.is_some() {
                f.ready(data_at, Some(data_at..data_at + len as u64));
            }
        }
        // Runs are written a piece at a time, so the hash follows closely.
        const PIECE: usize = 16 << 20;
        let mut at = data_at;
        for r in runs {
            let mut start = r.start;
            while start < r.end {
                let end = r.end.min(start + PIECE);
                if r.written {
                    out.write_all(img.bytes(start..end))?;
                } else {
                    let n = (end - start) as u64;
                    let mut from = src;
                    from.seek(SeekFrom::Start(base + start as u64))?;
                    if io::copy(&mut from.take(n), out)? != n {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the input ended while its weights were copied",
                        ));
                    }
                    copied += n;
                }
                // The piece goes to the disk while the next is copied.
                crate::sys::start_writeback(out, at, (end - start) as u64);
                at += (end - start) as u64;
                start = end;
                if let (Some(f), true) = (follow, patch.is_some()) {
                    f.ready(at, None);
                }
            }
        }
    }
    img.release_all();
    // SAFETY: exactly `len` bytes were written for the entry above, and
    // `crc` is their CRC-32 (checked against the bytes themselves when the
    // output is verified).
    unsafe { w.set_file_metadata(len as u64, crc) }.map_err(io::Error::other)?;
    Ok((copied, patch))
}

/// Write the CRC-32 and both sizes into the local header of the stored
/// entry `name` whose data starts at `data_at` (what the zip writer writes
/// there when the entry ends, for an entry under 4 GiB: the fields at 14,
/// 18 and 22 of the header). The header is found by what it holds: the
/// signature, `name`, and a name and extra fields that end at `data_at`.
/// Returns where it starts and its bytes as they now are; None, and
/// nothing written, if no such header is there.
fn finalize_local_header(
    out: &File,
    name: &str,
    data_at: u64,
    crc: u32,
    len: u32,
) -> io::Result<Option<EarlyHeader>> {
    use std::os::unix::fs::FileExt;
    let fixed = 30 + name.len() as u64;
    let span = data_at.min(fixed + u16::MAX as u64);
    if span < fixed {
        return Ok(None);
    }
    let mut tail = vec![0u8; span as usize];
    out.read_exact_at(&mut tail, data_at - span)?;
    // Fewest extra bytes first: the writer adds none to a stored entry.
    let found = (0..=span - fixed).find_map(|extra| {
        let at = (span - fixed - extra) as usize;
        let h = &tail[at..];
        let ok = h.starts_with(b"PK\x03\x04")
            // stored (method 0), no data descriptor (flag bit 3)
            && h[8..10] == [0, 0]
            && h[6] & 8 == 0
            && u16::from_le_bytes([h[26], h[27]]) as usize == name.len()
            && u16::from_le_bytes([h[28], h[29]]) as u64 == extra
            && &h[30..30 + name.len()] == name.as_bytes();
        ok.then_some(at)
    });
    let Some(at) = found else {
        return Ok(None);
    };
    let mut header = tail[at..].to_vec();
    header[14..18].copy_from_slice(&crc.to_le_bytes());
    header[18..22].copy_from_slice(&len.to_le_bytes());
    header[22..26].copy_from_slice(&len.to_le_bytes());
    let header_at = data_at - span + at as u64;
    out.write_all_at(&header[14..26], header_at + 14)?;
    Ok(Some((header_at, header)))
}

/// The CRC-32 of a message of `len` bytes whose CRC-32 was `crc`, after
/// the bytes at some places changed: each patch is `(at, d, n)` with
/// `d = crc32(old) ^ crc32(new)` of the `n` bytes at `at`. A CRC is affine
/// over GF(2): the change of the whole is the change of each part carried
/// through the `len - at - n` bytes after it, and carrying a CRC through
/// `k` bytes is what combining it with `k` bytes of CRC 0 does.
pub fn patched_crc(crc: u32, len: u64, patches: &[(u64, u32, u64)]) -> u32 {
    patches.iter().fold(crc, |acc, &(at, d, n)| {
        let mut h = crc32fast::Hasher::new_with_initial_len(d, 0);
        h.combine(&crc32fast::Hasher::new_with_initial_len(0, len - at - n));
        acc ^ h.finalize()
    })
}

/// Write a zip with every member of `src` in order: replaced ones from
/// `new`, the rest copied raw. Returns the file. A `follow`er of the file
/// is told what is final as it is written (see [`write_runs`]), but not
/// that the file is finished.
pub fn write_zip(
    src: &mut Archive,
    new: &mut HashMap<String, Content<'_>>,
    out: File,
    out_path: &Path,
    follow: Option<&Follow>,
) -> Result<File> {
    let zip = src.zip.as_mut().expect("zip form");
    let mut w = zip::ZipWriter::new(BufWriter::with_capacity(1 << 20, out));
    let mut patched = None;
    let werr = |e: &dyn std::fmt::Display| Error::Output {
        path: out_path.to_path_buf(),
        problem: format!("cannot write: {e}"),
    };
    for i in 0..zip.len() {
        let m = zip.by_index_raw(i).map_err(|e| {
            Error::format(
                &src.path,
                crate::error::Malformed::Container,
                format!("member #{i}: {e}"),
            )
        })?;
        let name = m.name().map_err(|e| werr(&e))?.to_string();
        match new.get_mut(&name) {
            None => w.raw_copy_file(m).map_err(|e| werr(&e))?,
            Some(content) => {
                let mut opts = SimpleFileOptions::default().compression_method(m.compression());
                if let Some(t) = m.last_modified() {
                    opts = opts.last_modified_time(t);
                }
                if let Some(mode) = m.unix_mode() {
                    opts = opts.unix_permissions(mode);
                }
                // Only a member that may exceed 4 GiB needs zip64 fields.
                opts = opts.large_file(content.len() >= u32::MAX as u64);
                // An edited image of this very member, stored: its unwritten
                // pages can be copied by the kernel from the input.
                let source = (m.compression() == zip::CompressionMethod::Stored
                    && m.size() == m.compressed_size())
                .then(|| m.data_start().map(|at| (at, m.size(), m.crc32())))
                .flatten();
                drop(m);
                w.start_file(name.as_str(), opts).map_err(|e| werr(&e))?;
                let runs = match (&*content, source) {
                    (Content::Image(img), Some((at, size, _)))
                        if img.offset() == at
                            && img.mapped_len() as u64 == size
                            && !stream_writes() =>
                    {
                        img.runs()
                    }
                    _ => None,
                };
                match (content, runs, source) {
                    (Content::Image(img), Some(runs), Some((_, _, crc))) => {
                        let (copied, patch) = write_runs(&mut w, img, &runs, &name, crc, follow)
                            .map_err(|e| werr(&e))?;
                        crate::worker::step(&format!(
                            "{name}: {copied} of {} bytes copied from the input by the kernel{}",
                            runs.last().map_or(0, |r| r.end),
                            if patch.is_some() {
                                ", hashed as they were written"
                            } else {
                                ""
                            }
                        ));
                        patched = patched.or(patch);
                    }
                    (content, _, _) => content.write_to(&mut w).map_err(|e| werr(&e))?,
                }
            }
        }
    }
    let buf = w.finish().map_err(|e| werr(&e))?;
    let file = buf.into_inner().map_err(|e| werr(&e.error()))?;
    // The writer wrote the header fields again when the entry ended: if
    // the header is not what was written early, what was hashed is stale.
    if let (Some((at, header)), Some(f)) = (patched, follow) {
        let mut now = vec![0u8; header.len()];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut now, at).map_err(|e| werr(&e))?;
        if now != header {
            f.restart();
        }
    }
    Ok(file)
}

/// Write a directory-form archive into `dir` (which exists and is empty).
pub fn write_dir(src: &Archive, new: &mut HashMap<String, Content<'_>>, dir: &Path) -> Result<()> {
    for m in &src.members {
        let dst = dir.join(&m.name);
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, "create", e))?;
        }
        match new.get_mut(&m.name) {
            None => {
                fs::copy(src.path.join(&m.name), &dst).map_err(|e| Error::io(&dst, "write", e))?;
            }
            Some(content) => {
                let f = File::create(&dst).map_err(|e| Error::io(&dst, "create", e))?;
                let mut bw = BufWriter::with_capacity(1 << 20, f);
                content
                    .write_to(&mut bw)
                    .and_then(|_| bw.flush())
                    .map_err(|e| Error::io(&dst, "write", e))?;
            }
        }
        File::open(&dst)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&dst, "sync", e))?;
    }
    Ok(())
}

/// Copy a directory tree (for an unchanged directory-form archive).
pub fn copy_dir(src: &Archive, dir: &Path) -> Result<()> {
    write_dir(src, &mut HashMap::new(), dir)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[allow(unsafe_code)]
    #[test]
    fn the_early_header_is_what_the_zip_writer_writes_at_the_end() {
        let t = tempfile::NamedTempFile::new().unwrap();
        let mut w = zip::ZipWriter::new(BufWriter::new(t.reopen().unwrap()));
        // A compressed member before it, as a deflated config.json would be.
        let deflated =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        w.start_file("config.json", deflated).unwrap();
        w.write_all(&b"{\"a\": 1} ".repeat(5000)).unwrap();
        let stored =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        w.start_file(WEIGHTS, stored).unwrap();
        let data = b"weights ".repeat(3000);
        let crc = crc32fast::hash(&data);
        // SAFETY (of the test): the data is written at the writer's
        // position, and the size and CRC-32 given are the data's.
        let early = unsafe {
            let out = w.get_mut().unwrap();
            out.flush().unwrap();
            let file = out.get_mut();
            let at = file.stream_position().unwrap();
            let early = finalize_local_header(file, WEIGHTS, at, crc, data.len() as u32)
                .unwrap()
                .expect("the header is found");
            file.write_all(&data).unwrap();
            w.set_file_metadata(data.len() as u64, crc).unwrap();
            early
        };
        let file = w.finish().unwrap().into_inner().unwrap();
        let mut now = vec![0u8; early.1.len()];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut now, early.0).unwrap();
        assert_eq!(now, early.1, "the writer wrote other header bytes");
        // And the archive reads back, CRC-checked.
        let mut z = ZipArchive::new(File::open(t.path()).unwrap()).unwrap();
        let mut back = Vec::new();
        z.by_name(WEIGHTS).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        // No header where none is: nothing is written.
        let junk = tempfile::NamedTempFile::new().unwrap();
        fs::write(junk.path(), vec![7u8; 500]).unwrap();
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(junk.path())
            .unwrap();
        assert!(finalize_local_header(&f, WEIGHTS, 400, 1, 2)
            .unwrap()
            .is_none());
        assert_eq!(fs::read(junk.path()).unwrap(), vec![7u8; 500]);
    }

    #[test]
    fn a_patched_crc_is_the_crc_of_the_patched_bytes() {
        // A small generator, so the test needs no dependency.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for case in 0..200 {
            let len = 1 + (next() % 20_000) as usize;
            let old: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let mut new = old.clone();
            let mut patches = Vec::new();
            let mut at = 0;
            // Disjoint runs in order, some at the very start or end, some
            // rewriting the same bytes.
            while at < len {
                at += (next() % 3000) as usize * (case % 3);
                if at >= len {
                    break;
                }
                let n = (1 + next() % 700) as usize;
                let end = (at + n).min(len);
                if next() % 4 != 0 {
                    for b in &mut new[at..end] {
                        *b = next() as u8;
                    }
                }
                let d = crc32fast::hash(&old[at..end]) ^ crc32fast::hash(&new[at..end]);
                patches.push((at as u64, d, (end - at) as u64));
                at = end;
            }
            assert_eq!(
                patched_crc(crc32fast::hash(&old), len as u64, &patches),
                crc32fast::hash(&new),
                "case {case}: {} patches over {len} bytes",
                patches.len()
            );
        }
        // And it is not the unpatched CRC.
        assert_ne!(crc32fast::hash(b"abc"), crc32fast::hash(b"abd"));
        let d = crc32fast::hash(b"c") ^ crc32fast::hash(b"d");
        assert_eq!(
            patched_crc(crc32fast::hash(b"abc"), 3, &[(2, d, 1)]),
            crc32fast::hash(b"abd")
        );
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

    #[test]
    fn names_are_checked() {
        let p = Path::new("x.keras");
        assert!(check_name(p, "config.json", Some("config.json".into())).is_ok());
        assert!(check_name(p, "assets/", Some("assets".into())).is_ok());
        for bad in ["../x", "/abs", "a\\b", "assets/../config.json", "", "./a"] {
            let enclosed = Some(PathBuf::from(bad.trim_start_matches('/')));
            assert!(check_name(p, bad, enclosed).is_err(), "{bad}");
        }
        assert!(check_name(p, "fine", None).is_err());
    }
}
