//! Open an HDF5 file that lives inside another file (a stored zip member)
//! without copying it out.
//!
//! The member's bytes are mapped privately (copy-on-write) and handed to
//! HDF5's in-memory ("core") driver as a file image, with callbacks that
//! make the driver use the mapping itself instead of copying it: the
//! technique of `H5LTopen_file_image` with `H5LT_FILE_IMAGE_DONT_COPY`.
//! Reading touches only the pages HDF5 asks for (object headers, the
//! Normalization statistics), so inspecting a 1 GiB archive reads a few
//! hundred kilobytes. Edits land in private pages, never in the file; the
//! edited image is then streamed into the output archive.
//!
//! This is the only `unsafe` code in krepair. The invariants:
//! - the mapping outlives every HDF5 handle that can reach it (the
//!   [`super::Weights`] field order closes the file first);
//! - HDF5 gets the same pointer back for every allocation and never a
//!   pointer it may free or grow beyond the reserved length;
//! - the callbacks' user data is the [`State`] boxed at a fixed address.

#![allow(unsafe_code)]

use std::ffi::{c_void, CString};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use hdf5_sys::h5::herr_t;
use hdf5_sys::h5f::{H5Fopen, H5F_ACC_RDONLY, H5F_ACC_RDWR};
use hdf5_sys::h5fd::{H5FD_file_image_callbacks_t, H5FD_file_image_op_t};
use hdf5_sys::h5p::{H5Pset_file_image, H5Pset_file_image_callbacks};

/// Room reserved after the image for HDF5 to grow it while editing.
/// Deleting links and overwriting values in place never grew a Keras file
/// in the tests; more growth than this fails the edit cleanly.
const GROWTH: usize = 1 << 20;
/// The largest HDF5 metadata cache of one open file.
const MDC_BYTES: usize = 256 << 10;

/// Pages released behind the reader, so a streamed 1 GiB image never stays
/// resident.
const RELEASE_EVERY: usize = 8 << 20;

/// What the callbacks see.
struct State {
    /// Start of the image.
    ptr: *mut u8,
    /// Its current length, as HDF5 last set it.
    len: usize,
    /// Bytes usable from `ptr` (image plus growth room).
    cap: usize,
}

/// A private mapping of `len` bytes at `offset` of a file, with room to
/// grow.
pub struct Image {
    base: *mut c_void,
    map_len: usize,
    state: Box<State>,
    /// Mapped for editing: its private pages may hold edits.
    writable: bool,
    /// The file it was mapped from (its own handle: the same file even if
    /// its path now names another).
    source: File,
    /// Where the image starts in that file.
    offset: u64,
    /// Its length there: the bytes the unwritten pages still show.
    mapped: usize,
}

/// A run of an image's bytes: `start..end`, either still the mapped
/// file's own bytes (`written == false`: no page of it was written) or
/// bytes HDF5 wrote (or added past the mapped length).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// First byte of the run, from the image's start.
    pub start: usize,
    /// One past its last byte.
    pub end: usize,
    /// Written by HDF5 (or past the mapped length), not the file's own.
    pub written: bool,
}

/// The most runs [`Image::runs`] reports: a more scattered image is
/// streamed whole (one syscall per run would cost more than the copy).
const MAX_RUNS: usize = 1 << 14;

/// `/proc/self/pagemap` entry bits (Documentation/admin-guide/mm/pagemap.rst):
/// the page is in memory, or in swap (only anonymous pages swap), and a
/// present page is the file's own page (not a private copy).
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
const PM_FILE: u64 = 1 << 61;

use crate::os::mapped::page_size;

impl Image {
    /// Map `len` bytes of `file` starting at `offset`.
    pub fn map(file: &File, offset: u64, len: u64, writable: bool) -> io::Result<Image> {
        let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "image too large to map");
        let len = usize::try_from(len).map_err(|_| too_big())?;
        let source = file.try_clone()?;
        let page = page_size();
        let delta = (offset % page as u64) as usize;
        let aligned = offset - delta as u64;
        let room = if writable { GROWTH } else { 0 };
        let file_part = (delta.checked_add(len).ok_or_else(too_big)?).div_ceil(page) * page;
        let map_len = file_part
            .checked_add(room.div_ceil(page) * page)
            .ok_or_else(too_big)?;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // A private writable mapping counts against the worker's memory
        // budget (RLIMIT_DATA): allow for it, and take it back on drop.
        crate::os::sys::grow(map_len as u64);
        let undo = || crate::os::sys::shrink(map_len as u64);
        // SAFETY: a fresh anonymous private mapping; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            undo();
            return Err(e);
        }
        let off = match libc::off_t::try_from(aligned) {
            Ok(o) => o,
            Err(_) => {
                // SAFETY: unmapping the reservation made above.
                unsafe { libc::munmap(base, map_len) };
                undo();
                return Err(too_big());
            }
        };
        // SAFETY: replaces the first `file_part` bytes of our own reservation
        // with a private (copy-on-write) view of the file; writes never
        // reach the file.
        let fixed = unsafe {
            libc::mmap(
                base,
                file_part,
                prot,
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                file.as_raw_fd(),
                off,
            )
        };
        if fixed == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // SAFETY: unmapping the reservation made above.
            unsafe { libc::munmap(base, map_len) };
            undo();
            return Err(e);
        }
        // SAFETY: `delta < page <= map_len`.
        let ptr = unsafe { (base as *mut u8).add(delta) };
        Ok(Image {
            base,
            map_len,
            state: Box::new(State {
                ptr,
                len,
                cap: map_len - delta,
            }),
            writable,
            source,
            offset,
            mapped: len,
        })
    }

    /// Let go of the pages read so far (a read-only image only: they are
    /// the file's, and the next read faults them in again), so reading
    /// every value of a large file ([`super::Weights::compare`]) never
    /// keeps it resident.
    pub fn release(&self) {
        if self.writable {
            return;
        }
        // SAFETY: our own mapping; no page of a read-only image was ever
        // written (HDF5 opened it read-only), so dropping them loses
        // nothing, and the addresses stay mapped.
        unsafe { libc::madvise(self.base, self.map_len, libc::MADV_DONTNEED) };
    }

    /// Does the image begin with `prefix`?
    pub fn starts_with(&self, prefix: &[u8]) -> bool {
        let st = &self.state;
        // SAFETY: at most `len` mapped bytes, read while no HDF5 file is
        // open on them.
        st.len >= prefix.len()
            && unsafe { std::slice::from_raw_parts(st.ptr, prefix.len()) } == prefix
    }

    /// Is the image empty?
    pub fn is_empty(&self) -> bool {
        self.state.len == 0
    }

    /// The image's current length.
    pub fn len(&self) -> usize {
        self.state.len
    }

    /// Hand the image to `sink` in order, in chunks of [`RELEASE_EVERY`]
    /// bytes, releasing each chunk's pages once it is consumed. Call it
    /// once, after HDF5 has closed the file: what was handed over is gone.
    pub fn drain(&mut self, mut sink: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        let (ptr, len) = (self.state.ptr, self.state.len);
        let page = page_size();
        let delta = ptr as usize - self.base as usize;
        let mut released = 0;
        let mut pos = 0;
        while pos < len {
            let n = RELEASE_EVERY.min(len - pos);
            // SAFETY: `pos + n <= len <= cap`, all mapped; HDF5 no longer
            // holds the image, and the slice is dropped before the pages
            // are released below.
            sink(unsafe { std::slice::from_raw_parts(ptr.add(pos), n) })?;
            pos += n;
            let done = (delta + pos) / page * page;
            if done > released {
                // SAFETY: whole pages of our mapping already consumed and
                // never read again. Private pages revert to the file.
                unsafe {
                    libc::madvise(
                        (self.base as *mut u8).add(released) as *mut c_void,
                        done - released,
                        libc::MADV_DONTNEED,
                    )
                };
                released = done;
            }
        }
        Ok(())
    }

    /// The file the image was mapped from.
    pub fn source(&self) -> &File {
        &self.source
    }

    /// Where the image starts in the file it was mapped from.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Its length in that file, before any edit.
    pub fn mapped_len(&self) -> usize {
        self.mapped
    }

    /// All the bytes of a read-only image, also while HDF5 has it open:
    /// HDF5 opened it read-only and never writes it. None for a writable
    /// image.
    pub fn read_only_bytes(&self) -> Option<&[u8]> {
        if self.writable {
            return None;
        }
        // SAFETY: `ptr..ptr+len` is mapped; nothing writes a read-only
        // image, so sharing it with HDF5's reads is sound.
        Some(unsafe { std::slice::from_raw_parts(self.state.ptr, self.state.len) })
    }

    /// The image's bytes in `range` (within [`Image::len`]). Call it only
    /// after HDF5 has closed the file.
    pub fn bytes(&self, range: std::ops::Range<usize>) -> &[u8] {
        assert!(range.start <= range.end && range.end <= self.state.len);
        // SAFETY: inside the image (checked above), all mapped; HDF5 no
        // longer holds the image, so nothing writes it while it is
        // borrowed.
        unsafe {
            std::slice::from_raw_parts(self.state.ptr.add(range.start), range.end - range.start)
        }
    }

    /// The image as runs of bytes that are still the mapped file's own and
    /// bytes HDF5 wrote, in order, covering `0..len()`, from the kernel's
    /// page table (`/proc/self/pagemap`): a page of a private mapping that
    /// was written is a private copy, one never written is the file's.
    /// Only a page-granular answer: a written page counts whole, even where
    /// HDF5 wrote back the same bytes. Bytes past the mapped length are
    /// written ones. None where the kernel does not say, where the image
    /// is shorter than what was mapped (the file's bytes are then not a
    /// prefix of it), or where it is too scattered to be worth it. Call it
    /// after HDF5 has closed the file.
    pub fn runs(&self) -> Option<Vec<Run>> {
        let len = self.state.len;
        if !self.writable || len < self.mapped || !pagemap_tells_writes() {
            return None;
        }
        let page = page_size();
        let delta = self.state.ptr as usize - self.base as usize;
        let first = self.base as usize / page;
        let pages = (delta + self.mapped).div_ceil(page);
        let map = File::open("/proc/self/pagemap").ok()?;
        let mut runs: Vec<Run> = Vec::new();
        let mut push = |start: usize, end: usize, written: bool| {
            if start >= end {
                return;
            }
            match runs.last_mut() {
                Some(r) if r.written == written && r.end == start => r.end = end,
                _ => runs.push(Run {
                    start,
                    end,
                    written,
                }),
            }
        };
        let mut buf = vec![0u8; 8 << 12];
        let mut p = 0;
        while p < pages {
            let n = (pages - p).min(buf.len() / 8);
            let bytes = &mut buf[..n * 8];
            std::os::unix::fs::FileExt::read_exact_at(&map, bytes, ((first + p) * 8) as u64)
                .ok()?;
            for (i, e) in bytes.chunks_exact(8).enumerate() {
                let e = u64::from_ne_bytes(e.try_into().expect("8 bytes"));
                let written = e & PM_SWAPPED != 0 || (e & PM_PRESENT != 0 && e & PM_FILE == 0);
                let at = (p + i) * page;
                let start = at.saturating_sub(delta).min(self.mapped);
                let end = (at + page).saturating_sub(delta).min(self.mapped);
                push(start, end, written);
            }
            p += n;
        }
        push(self.mapped, len, true);
        (runs.len() <= MAX_RUNS).then_some(runs)
    }

    /// Let go of every page of the image: what was written out is not
    /// read again. Call it once the image has been consumed.
    pub fn release_all(&mut self) {
        // SAFETY: our own mapping, no longer read; private pages revert
        // to the file and the addresses stay mapped.
        unsafe { libc::madvise(self.base, self.map_len, libc::MADV_DONTNEED) };
    }

    /// Open the image with HDF5 (read-only or read-write). The file must
    /// be closed before the image is dropped.
    pub fn open(&mut self, writable: bool) -> hdf5::Result<hdf5::File> {
        static SERIAL: AtomicU64 = AtomicU64::new(0);
        // The core driver refuses a name that exists on disk and treats two
        // open images of one name as one file: make it unique and absent.
        let name = format!(
            "/nonexistent/krepair-image-{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        let name = CString::new(name).expect("no NUL");
        // The metadata cache is capped at 256 KiB: krepair visits each
        // object once, and HDF5's default (up to 32 MiB) would grow the
        // process by tens of MiB on a model with thousands of layers. The
        // walk of 3,000 layers runs the same instructions with 256 KiB as
        // with 2 MiB (and 30% more with 64 KiB), and peaks 13 MiB lower.
        // Evicting every object as it is closed bounds it too, but doubled
        // that walk (HDF5 1.10 flushes the cache's skip list on every
        // close): docs/performance.md.
        // The core driver rounds a grown file up to its increment when it
        // closes; growing costs nothing here (the reserved mapping is
        // handed back), so a page keeps that padding small.
        let mut mdc = hdf5::file::FileAccess::try_new()?.mdc_config();
        mdc.set_initial_size = true;
        mdc.initial_size = MDC_BYTES;
        mdc.min_size = MDC_BYTES / 2;
        mdc.max_size = MDC_BYTES;
        let fapl = hdf5::file::FileAccess::build()
            .core_options(4 << 10, false)
            .mdc_config(&mdc)
            .finish()?;
        let mut callbacks = H5FD_file_image_callbacks_t {
            image_malloc: Some(image_malloc),
            image_memcpy: Some(image_memcpy),
            image_realloc: Some(image_realloc),
            image_free: Some(image_free),
            udata_copy: Some(udata_copy),
            udata_free: Some(udata_free),
            udata: &mut *self.state as *mut State as *mut c_void,
        };
        let ptr = self.state.ptr as *mut c_void;
        let len = self.state.len;
        let flags = if writable {
            H5F_ACC_RDWR
        } else {
            H5F_ACC_RDONLY
        };
        hdf5::sync::sync(|| {
            // SAFETY: `fapl` is a valid file-access list; the callbacks and
            // their user data stay valid while the file is open (see the
            // module invariants); `ptr..ptr+len` is mapped.
            unsafe {
                hdf5::h5check(H5Pset_file_image_callbacks(fapl.id(), &mut callbacks))?;
                hdf5::h5check(H5Pset_file_image(fapl.id(), ptr, len))?;
                let id = hdf5::h5check(H5Fopen(name.as_ptr(), flags, fapl.id()))?;
                hdf5::from_id::<hdf5::File>(id)
            }
        })
    }
}

/// The pagemap entry of the page at `addr`, read from `map`.
fn pagemap_entry(map: &File, addr: usize) -> Option<u64> {
    let mut e = [0u8; 8];
    std::os::unix::fs::FileExt::read_exact_at(map, &mut e, (addr / page_size() * 8) as u64).ok()?;
    Some(u64::from_ne_bytes(e))
}

/// Does `/proc/self/pagemap` say what [`Image::runs`] relies on? Checked
/// once per process on a page of our own: a private mapping of a file,
/// read, must show the file's page; written, a private copy. A kernel (or
/// an emulated `/proc`) that says otherwise gets every byte streamed.
fn pagemap_tells_writes() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        let (Ok(map), Ok(exe)) = (
            File::open("/proc/self/pagemap"),
            File::open("/proc/self/exe"),
        ) else {
            return false;
        };
        let page = page_size();
        if exe.metadata().map(|m| m.len()).unwrap_or(0) < page as u64 {
            return false;
        }
        // SAFETY: a fresh private mapping of one page of a file at least
        // that long; writes to it never reach the file.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                exe.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return false;
        }
        let b = p as *mut u8;
        // SAFETY: `b` is the mapped page; volatile so the read and the
        // write happen where they are written.
        let first = unsafe { std::ptr::read_volatile(b) };
        let read = pagemap_entry(&map, p as usize);
        // SAFETY: as above; the same byte back, into a private copy.
        unsafe { std::ptr::write_volatile(b, first) };
        let written = pagemap_entry(&map, p as usize);
        // SAFETY: unmapping the page mapped above.
        unsafe { libc::munmap(p, page) };
        let file_page = |e: Option<u64>| e.map(|e| e & PM_PRESENT != 0 && e & PM_FILE != 0);
        let copy = |e: Option<u64>| e.map(|e| e & PM_PRESENT != 0 && e & PM_FILE == 0);
        file_page(read) == Some(true) && copy(written) == Some(true)
    })
}

impl Drop for Image {
    fn drop(&mut self) {
        // SAFETY: the whole mapping made in `map`; no HDF5 handle reaches it
        // any more (module invariants).
        unsafe { libc::munmap(self.base, self.map_len) };
        crate::os::sys::shrink(self.map_len as u64);
    }
}

fn state<'a>(udata: *mut c_void) -> &'a mut State {
    // SAFETY: HDF5 passes back the `udata` given in `open`: a live `State`.
    unsafe { &mut *(udata as *mut State) }
}

extern "C" fn image_malloc(
    size: usize,
    _op: H5FD_file_image_op_t,
    udata: *mut c_void,
) -> *mut c_void {
    let st = state(udata);
    if size <= st.cap {
        st.ptr as *mut c_void
    } else {
        std::ptr::null_mut()
    }
}

extern "C" fn image_memcpy(
    dest: *mut c_void,
    src: *const c_void,
    size: usize,
    _op: H5FD_file_image_op_t,
    _udata: *mut c_void,
) -> *mut c_void {
    if !std::ptr::eq(dest, src) {
        // SAFETY: HDF5 asks for a copy between two buffers of `size` bytes.
        unsafe { std::ptr::copy(src as *const u8, dest as *mut u8, size) };
    }
    dest
}

extern "C" fn image_realloc(
    ptr: *mut c_void,
    size: usize,
    _op: H5FD_file_image_op_t,
    udata: *mut c_void,
) -> *mut c_void {
    let st = state(udata);
    if ptr == st.ptr as *mut c_void && size <= st.cap {
        if size > st.len {
            // SAFETY: `len..size` is inside the mapping; the core driver
            // expects new space to read as zeros.
            unsafe { std::ptr::write_bytes(st.ptr.add(st.len), 0, size - st.len) };
        }
        st.len = size;
        ptr
    } else {
        std::ptr::null_mut()
    }
}

extern "C" fn image_free(
    _ptr: *mut c_void,
    _op: H5FD_file_image_op_t,
    _udata: *mut c_void,
) -> herr_t {
    0
}

unsafe extern "C" fn udata_copy(udata: *mut c_void) -> *mut c_void {
    udata
}

unsafe extern "C" fn udata_free(_udata: *mut c_void) -> herr_t {
    0
}
