//! The `.keras` container: a zip file or an unzipped directory.
//!
//! Opening checks the container before anything is read from it (magic
//! bytes, member names, duplicates, declared sizes); reading checks every
//! member's CRC-32; writing builds the output next to its final path and
//! only renames it into place once it is complete and synced (see
//! [`crate::run::single`] for the verification in between). Unchanged zip
//! members are copied raw: same bytes, compression, CRC and timestamps.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

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
    /// A legacy HDF5 model file (`model.save("m.h5")`), which only
    /// `krepair migrate` reads (never an [`Archive`]'s form: the report's
    /// name for such an input).
    Hdf5,
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

/// An opened `.keras` archive. A clone shares the open file and the
/// parsed central directory.
#[derive(Clone)]
pub struct Archive {
    /// Where it is.
    pub path: PathBuf,
    /// Zip or directory.
    pub form: Form,
    /// Members in archive order (sorted by name for a directory).
    pub members: Vec<Member>,
    pub(crate) zip: Option<ZipArchive<SharedFile>>,
    /// The zip file, opened once: the central directory, the members and
    /// the in-place mappings of stored members all read through it.
    file: Option<std::sync::Arc<File>>,
}

/// A zip file read by position through one shared handle. Each clone has
/// its own position and read buffer, so one opened archive serves every
/// reader of a run (the stage, and the dry runs `krepair inspect` makes).
///
/// Nothing that reads through the shared handle uses the file's offset
/// (positional reads here, memory mappings for the weights and the
/// hashes) except the kernel copy of unchanged weights runs into the
/// output (`sink::write`, a seek then a copy), which runs alone on the
/// writing thread.
pub(crate) struct SharedFile {
    file: std::sync::Arc<File>,
    len: u64,
    pos: u64,
    buf: Box<[u8]>,
    /// The file offset of `buf[0]`, and how many bytes of `buf` hold data.
    buf_at: u64,
    buf_len: usize,
}

/// The read buffer of a [`SharedFile`]: the central directory is read in
/// small pieces.
const SHARED_BUF: usize = 64 << 10;

impl SharedFile {
    fn new(file: std::sync::Arc<File>, len: u64) -> SharedFile {
        SharedFile {
            file,
            len,
            pos: 0,
            buf: vec![0; SHARED_BUF].into_boxed_slice(),
            buf_at: 0,
            buf_len: 0,
        }
    }
}

impl Clone for SharedFile {
    fn clone(&self) -> SharedFile {
        SharedFile {
            file: self.file.clone(),
            len: self.len,
            pos: self.pos,
            buf: vec![0; SHARED_BUF].into_boxed_slice(),
            buf_at: 0,
            buf_len: 0,
        }
    }
}

impl Read for SharedFile {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let in_buf = self.pos >= self.buf_at && self.pos < self.buf_at + self.buf_len as u64;
        if !in_buf {
            if out.len() >= self.buf.len() {
                let n = self.file.read_at(out, self.pos)?;
                self.pos += n as u64;
                return Ok(n);
            }
            self.buf_len = self.file.read_at(&mut self.buf, self.pos)?;
            self.buf_at = self.pos;
            if self.buf_len == 0 {
                return Ok(0);
            }
        }
        let from = (self.pos - self.buf_at) as usize;
        let n = out.len().min(self.buf_len - from);
        out[..n].copy_from_slice(&self.buf[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for SharedFile {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let at = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match at {
            Some(n) => {
                self.pos = n;
                Ok(n)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the file",
            )),
        }
    }
}

/// Where a member's bytes can be mapped in place ([`Archive::in_place`]).
#[derive(Clone, Debug)]
pub enum InPlace {
    /// A stored member of a zip: a byte range of the archive's own open
    /// file (no second open).
    Shared(std::sync::Arc<File>),
    /// A member file of an unzipped directory.
    File(PathBuf),
}

/// A zip compression method as people name it (`stored`, `deflated`, ...).
fn method_name(m: zip::CompressionMethod) -> String {
    match m {
        zip::CompressionMethod::Stored => "stored".into(),
        zip::CompressionMethod::Deflated => "deflated".into(),
        other => other.to_string().to_lowercase(),
    }
}

/// What the first bytes of the file `f` (at `path`) say it is: a zip, or
/// the error that says what it is instead.
fn sniff(path: &Path, f: &mut File) -> Result<()> {
    let mut head = [0u8; 8];
    let n = read_up_to(f, &mut head).map_err(|e| Error::io(path, "read", e))?;
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
            "this is an HDF5 file (a legacy Keras model, `model.save(\"m.h5\")`, whatever its name), not a .keras zip archive: `krepair migrate IN OUT.keras` turns a Keras 2 one into a Keras 3 archive",
        ));
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Ok(());
    }
    Err(Error::format(
        path,
        crate::error::Malformed::NotAnArchive,
        "not a .keras archive (no zip signature)",
    ))
}

/// Is the file at `path` an HDF5 file, by its content: the signature at
/// its very start, as every Keras and h5py write it? (HDF5 also allows it
/// after a user block of 512, 1024, ... bytes, but a zip can hold an
/// HDF5 member at exactly such an offset: a stored `model.weights.h5`
/// starting at byte 1024 made a `.keras` archive look like HDF5, found by
/// CI. Neither h5py nor Keras writes a user block.) False for a directory
/// or what cannot be read: the archive reader then says what it is.
pub fn is_hdf5(path: &Path) -> bool {
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return false;
    }
    let mut head = [0u8; 8];
    read_up_to(&mut f, &mut head).ok() == Some(8) && &head == HDF5_MAGIC
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

/// Member `i` of a zip, once its name is safe, it is no link and no bomb,
/// its name is not taken, and a stored member's bytes lie inside the file
/// (`file_len` bytes).
fn zip_member<R: Read>(
    path: &Path,
    i: usize,
    m: &zip::read::ZipFile<'_, R>,
    file_len: u64,
    seen: &mut HashSet<String>,
) -> Result<Member> {
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
        (zip::CompressionMethod::Stored, Some(start)) if m.size() == m.compressed_size() => {
            let end = start.checked_add(m.size()).filter(|&e| e <= file_len);
            match end {
                Some(end) => Some(start..end),
                None => {
                    return Err(Error::format(
                        path,
                        crate::error::Malformed::Container,
                        format!("member `{name}` extends past the end of the file (truncated?)"),
                    ))
                }
            }
        }
        _ => None,
    };
    Ok(Member {
        name,
        size: m.size(),
        crc32: Some(m.crc32()),
        stored_at,
        packed: Some((method_name(m.compression()), m.compressed_size())),
    })
}

impl Archive {
    /// Open and check an archive (zip file or directory).
    ///
    /// A zip file is opened once: the handle serves the checks, the
    /// central directory and every later read of the archive and of its
    /// clones ([`SharedFile`]).
    pub fn open(path: &Path) -> Result<Self> {
        let meta = fs::metadata(path).map_err(|e| Error::io(path, "read", e))?;
        if meta.is_dir() {
            return Self::open_dir(path);
        }
        let mut f = File::open(path).map_err(|e| Error::io(path, "open", e))?;
        // A fresh handle is at the start: no seek, so an input that cannot
        // seek (a pipe) still gets the sniff's verdict on what it is.
        sniff(path, &mut f)?;
        Self::open_zip(path, f)
    }

    /// [`Archive::open`] on the file at `path`, opened already (not a
    /// directory; read from its start whatever its position).
    pub fn open_file(path: &Path, mut f: File) -> Result<Self> {
        f.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(path, "read", e))?;
        sniff(path, &mut f)?;
        Self::open_zip(path, f)
    }

    fn open_zip(path: &Path, mut f: File) -> Result<Self> {
        let declared = declared_entries(&mut f, path)?;
        let file_len = f.metadata().map_err(|e| Error::io(path, "stat", e))?.len();
        if declared > MAX_MEMBERS as u64 {
            return Err(Error::format(
                path,
                crate::error::Malformed::Limit,
                format!("{declared} members, more than the limit of {MAX_MEMBERS}"),
            ));
        }
        // The length the zip reader seeks from, as the file's own end says
        // (a block device's metadata says 0).
        let end = f
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io(path, "read", e))?;
        let file = std::sync::Arc::new(f);
        let mut zip = ZipArchive::new(SharedFile::new(file.clone(), end)).map_err(|e| {
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
            members.push(zip_member(path, i, &m, file_len, &mut seen)?);
        }
        Ok(Archive {
            path: path.to_path_buf(),
            form: Form::Zip,
            members,
            zip: Some(zip),
            file: Some(file),
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
            file: None,
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
        let mut w = crate::hash::CrcWriter {
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
    pub fn in_place(&self, name: &str) -> Option<(InPlace, Range<u64>)> {
        let m = self.member(name)?;
        match (self.form, &self.file) {
            (Form::Zip, Some(f)) => m.stored_at.clone().map(|r| (InPlace::Shared(f.clone()), r)),
            (Form::Zip | Form::Hdf5, None) => None,
            (Form::Hdf5, Some(_)) => None,
            (Form::Directory, _) => Some((InPlace::File(self.path.join(name)), 0..m.size)),
        }
    }

    /// The zip file as opened (none for a directory).
    pub fn file(&self) -> Option<&std::sync::Arc<File>> {
        self.file.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hdf5_is_its_signature_at_the_start_only() {
        let t = tempfile::tempdir().unwrap();
        let mut zip_like = b"PK\x03\x04".to_vec();
        zip_like.resize(1024, 0);
        zip_like.extend_from_slice(HDF5_MAGIC);
        zip_like.resize(4096, 0);
        let z = t.path().join("a.keras");
        fs::write(&z, &zip_like).unwrap();
        // A stored weights member at byte 1024 of a .keras zip (CI found
        // one) is not an HDF5 file.
        assert!(!is_hdf5(&z));
        let h = t.path().join("m");
        let mut h5 = HDF5_MAGIC.to_vec();
        h5.resize(64, 0);
        fs::write(&h, &h5).unwrap();
        assert!(is_hdf5(&h));
        assert!(!is_hdf5(t.path()));
        fs::write(&h, &HDF5_MAGIC[..4]).unwrap();
        assert!(!is_hdf5(&h));
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
