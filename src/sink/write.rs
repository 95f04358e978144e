//! Writing an output: the zip writer (unchanged members copied raw: same
//! bytes, compression, CRC and timestamps; an edited weights image written
//! in runs, each hashed as it lands) and the directory writer.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use zip::write::SimpleFileOptions;

use crate::error::{Error, Result};
use crate::hash::{EarlyHeader, Follow};
use crate::source::keras::Archive;

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
                crate::os::sys::start_writeback(out, at, (end - start) as u64);
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
                        crate::progress::step(&format!(
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
    use crate::source::keras::WEIGHTS;
    use zip::ZipArchive;

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
}
