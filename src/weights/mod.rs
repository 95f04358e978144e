//! The only module that talks to HDF5: `model.weights.h5`.
//!
//! It answers the questions the planner asks (does this group exist, what
//! datasets does this `vars` group hold, what are their values) and makes
//! the two edits a repair needs (delete a dataset, overwrite a float32
//! dataset in place). Everything goes through the `hdf5` crate
//! (hdf5-metno), which serializes calls behind one global lock.

use std::collections::HashSet;
use std::path::PathBuf;

use hdf5::dataset::Layout;
use hdf5::types::{FloatSize, TypeDescriptor};
use hdf5::LinkType;

use crate::error::{one_line, Error, Result};
use crate::passes::stats::Tensor;

/// The element type of a dataset, as far as krepair cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Elem {
    /// IEEE float of this many bytes.
    Float(usize),
    /// Integer (signed or not) of this many bytes.
    Int(usize),
    /// Anything else (strings, compounds, ...).
    Other,
}

impl std::fmt::Display for Elem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Elem::Float(n) => write!(f, "float{}", n * 8),
            Elem::Int(n) => write!(f, "int{}", n * 8),
            Elem::Other => write!(f, "non-numeric"),
        }
    }
}

/// One dataset of a `vars` group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetInfo {
    /// Its name inside the group ("0", "1", ...).
    pub name: String,
    /// Its element type.
    pub elem: Elem,
    /// Its shape (`[]` for a scalar).
    pub shape: Vec<usize>,
    /// A null dataspace: no values at all (not even a scalar's one).
    pub null: bool,
}

/// One dataset anywhere in the file, as `krepair inspect` lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Variable {
    /// Its full path (no leading `/`).
    pub path: String,
    /// Its element type as NumPy names it (`float32`, `int64`, `bool`,
    /// ...; `string`, `compound`, ... for what is not a number).
    pub dtype: String,
    /// Its shape (`[]` for a scalar and for a null dataspace).
    pub shape: Vec<u64>,
    /// Elements it holds (0 for a null dataspace).
    pub elements: u64,
    /// Bytes its values take in memory (elements times the element size).
    pub bytes: u64,
}

/// A dataset's element type, as far as krepair cares.
fn elem_of(ds: &hdf5::Dataset) -> Elem {
    match ds.dtype().and_then(|t| t.to_descriptor()) {
        Ok(TypeDescriptor::Float(FloatSize::U2)) => Elem::Float(2),
        Ok(TypeDescriptor::Float(FloatSize::U4)) => Elem::Float(4),
        Ok(TypeDescriptor::Float(FloatSize::U8)) => Elem::Float(8),
        Ok(TypeDescriptor::Integer(s)) | Ok(TypeDescriptor::Unsigned(s)) => Elem::Int(s as usize),
        _ => Elem::Other,
    }
}

/// NumPy's name for a dataset's element type.
fn dtype_name(ds: &hdf5::Dataset) -> String {
    let Ok(t) = ds.dtype() else {
        return "unknown".into();
    };
    match t.to_descriptor() {
        Ok(TypeDescriptor::Float(FloatSize::U2)) => "float16".into(),
        Ok(TypeDescriptor::Float(FloatSize::U4)) => "float32".into(),
        Ok(TypeDescriptor::Float(FloatSize::U8)) => "float64".into(),
        Ok(TypeDescriptor::Integer(s)) => format!("int{}", s as usize * 8),
        Ok(TypeDescriptor::Unsigned(s)) => format!("uint{}", s as usize * 8),
        Ok(TypeDescriptor::Boolean) => "bool".into(),
        Ok(TypeDescriptor::Enum(_)) => "enum".into(),
        Ok(TypeDescriptor::Compound(_)) => "compound".into(),
        Ok(
            TypeDescriptor::FixedAscii(_)
            | TypeDescriptor::FixedUnicode(_)
            | TypeDescriptor::VarLenAscii
            | TypeDescriptor::VarLenUnicode,
        ) => "string".into(),
        Ok(_) => "other".into(),
        Err(_) => format!("other ({} bytes)", t.size()),
    }
}

/// Paths ordered as people count: `vars/2` before `vars/10`.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(p), Some(q)) => {
                let numeric = |s: &str| {
                    !s.is_empty() && s.len() < 20 && s.bytes().all(|c| c.is_ascii_digit())
                };
                let o = if numeric(p) && numeric(q) {
                    p.parse::<u64>()
                        .unwrap_or(0)
                        .cmp(&q.parse::<u64>().unwrap_or(0))
                        .then(p.cmp(q))
                } else {
                    p.cmp(q)
                };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

/// How the values of two datasets of the same shape differ (`krepair
/// diff`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ValueDiff {
    /// Elements compared.
    pub elements: u64,
    /// Elements whose absolute difference exceeds the tolerance (a NaN
    /// against a number always does; NaN against NaN never).
    pub differing: u64,
    /// Largest `|b - a|` over the elements that are numbers in both.
    pub max_abs_diff: f64,
    /// Largest `|b - a| / max(|a|, |b|)` (0 where both are 0): between 0
    /// and 2, never infinite.
    pub max_rel_diff: f64,
}

/// Most elements read from a dataset at once by [`Weights::compare`].
pub const COMPARE_CHUNK: usize = 1 << 18;

/// The hyperslabs that cover a dataset of `shape`, each of at most
/// [`COMPARE_CHUNK`] elements (at least one row of the last axis), in C
/// order: the leading axes one index at a time, then blocks along the
/// first axis whose trailing block fits.
fn chunks(shape: &[usize]) -> Vec<Vec<hdf5::SliceOrIndex>> {
    use hdf5::SliceOrIndex::{Index, SliceCount};
    let n = shape.len();
    // The first axis whose trailing block fits in a chunk.
    let mut axis = n.saturating_sub(1);
    let mut inner = 1usize;
    for a in (0..n).rev() {
        if inner.saturating_mul(shape[a]) > COMPARE_CHUNK {
            axis = a;
            break;
        }
        inner = inner.saturating_mul(shape[a]);
        axis = a;
    }
    let inner: usize = shape[axis + 1..].iter().product();
    let step = (COMPARE_CHUNK / inner.max(1)).max(1);
    let mut out = Vec::new();
    let mut index = vec![0usize; axis];
    loop {
        let mut start = 0;
        while start < shape[axis] {
            let count = step.min(shape[axis] - start);
            let mut sel: Vec<hdf5::SliceOrIndex> = index.iter().map(|&i| Index(i)).collect();
            sel.push(SliceCount {
                start,
                step: 1,
                count,
                block: 1,
            });
            for &d in &shape[axis + 1..] {
                sel.push(SliceCount {
                    start: 0,
                    step: 1,
                    count: d,
                    block: 1,
                });
            }
            out.push(sel);
            start += count;
        }
        // The next index of the leading axes (odometer).
        let mut a = axis;
        loop {
            if a == 0 {
                return out;
            }
            a -= 1;
            index[a] += 1;
            if index[a] < shape[a] {
                break;
            }
            index[a] = 0;
        }
    }
}

/// What the walk reached: a group, a dataset, or another object (a named
/// datatype), which the walk passes over.
pub(crate) enum Object {
    Group(hdf5::Group),
    Dataset(hdf5::Dataset),
    Other,
}

/// Most objects (groups and datasets) a weights file may hold.
/// EfficientNetB7 has about 1,500; a hostile file can declare millions or
/// hard-link a group into itself.
pub const MAX_OBJECTS: usize = 1_000_000;
/// Deepest group nesting walked (Keras nests a few levels per model).
pub const MAX_DEPTH: usize = 64;
/// Most links one group may hold (EfficientNetB7's largest has a few
/// hundred).
pub const MAX_GROUP_LINKS: u64 = 100_000;
/// Most attributes a group may carry (Keras writes at most one, `name`).
pub const MAX_ATTRIBUTES: usize = 1_000;
/// A dataset declaring more than this many bytes *and* more than
/// [`MAX_DATASET_RATIO`] times its storage is refused (Keras 3.15's rule).
pub const MAX_DATASET_BYTES: u64 = 4 << 30;
/// See [`MAX_DATASET_BYTES`].
pub const MAX_DATASET_RATIO: u64 = 1000;

mod gheap;
pub(crate) mod headers;
mod image;
pub mod legacy;
mod raw;

pub use image::{Image, Run};

/// An open weights file: HDF5 working on a private mapping of the bytes
/// (see [`Image`]).
pub struct Weights {
    // Declared first so it is closed before the mapping goes away.
    file: hdf5::File,
    image: Image,
    /// How the archive names this member, for messages.
    label: String,
    /// What [`gheap::check`] said of the file, once asked (before the
    /// first variable-length string is read).
    heaps: std::cell::OnceCell<std::result::Result<(), String>>,
}

fn h5err(label: &str, what: &str, e: hdf5::Error) -> Error {
    Error::Format {
        path: PathBuf::from(label),
        kind: crate::error::Malformed::Weights,
        problem: format!("{what}: {}", one_line(&checked_utf8(&e.to_string()))),
    }
}

/// hdf5-metno builds `String`s from C strings without checking that they
/// are UTF-8 (`util::string_from_cstr`, `VarLenUnicode::as_str`), and a
/// hostile file's bytes reach them through link names and error messages
/// (the fuzzer found one: an error naming a garbage object aborted the
/// process). Every text taken from the binding passes here, through its
/// raw bytes, before anything looks at its characters.
fn checked_utf8(s: &str) -> String {
    String::from_utf8_lossy(s.as_bytes()).into_owned()
}

/// Is a name from the binding really UTF-8 (see [`checked_utf8`])?
fn is_utf8(s: &str) -> bool {
    std::str::from_utf8(s.as_bytes()).is_ok()
}

impl Weights {
    /// [`Weights::open_at`] on the byte `range` of a member mapped in place:
    /// the archive's own open file, or a directory's member file.
    pub fn open_in_place(
        place: &crate::source::keras::InPlace,
        range: std::ops::Range<u64>,
        label: &str,
        writable: bool,
    ) -> Result<Self> {
        match place {
            crate::source::keras::InPlace::Shared(f) => {
                Self::open_at(f, range.start, range.end - range.start, label, writable)
            }
            crate::source::keras::InPlace::File(p) => Self::open_in(p, range, label, writable),
        }
    }

    /// [`Weights::open_at`] on the byte `range` of the file at `path`.
    pub fn open_in(
        path: &std::path::Path,
        range: std::ops::Range<u64>,
        label: &str,
        writable: bool,
    ) -> Result<Self> {
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, "open", e))?;
        Self::open_at(&f, range.start, range.end - range.start, label, writable)
    }

    /// Open the `len` bytes at `offset` of `file` as an HDF5 file, in
    /// place: nothing is copied, and with `writable` the edits stay in
    /// memory until [`Weights::finish`] hands them over. `label` names the
    /// member in messages (e.g. `model.keras!model.weights.h5`).
    pub fn open_at(
        file: &std::fs::File,
        offset: u64,
        len: u64,
        label: &str,
        writable: bool,
    ) -> Result<Self> {
        if len < crate::source::keras::HDF5_MAGIC.len() as u64 {
            return Err(Error::format(
                label,
                crate::error::Malformed::Weights,
                format!("not an HDF5 file ({len} bytes, no HDF5 signature)"),
            ));
        }
        let mut image = Image::map(file, offset, len, writable).map_err(|e| Error::Format {
            path: PathBuf::from(label),
            kind: crate::error::Malformed::Weights,
            problem: format!("cannot map the weights: {e}"),
        })?;
        if !image.starts_with(crate::source::keras::HDF5_MAGIC) {
            return Err(Error::format(
                label,
                crate::error::Malformed::Weights,
                "not an HDF5 file (no HDF5 signature at its start)",
            ));
        }
        let file = image
            .open(writable)
            .map_err(|e| h5err(label, "not a readable HDF5 file", e))?;
        Ok(Weights {
            file,
            image,
            label: label.to_string(),
            heaps: std::cell::OnceCell::new(),
        })
    }

    fn err(&self, what: String, e: hdf5::Error) -> Error {
        h5err(&self.label, &what, e)
    }

    /// The file's global heap collections, checked ([`gheap::check`])
    /// before HDF5 reads a variable-length string from one. A writable
    /// image (an archive's weights being repaired, never a legacy file)
    /// is not checked: its strings are not read.
    pub(crate) fn check_global_heaps(&self) -> Result<()> {
        let checked = self
            .heaps
            .get_or_init(|| self.image.read_only_bytes().map_or(Ok(()), gheap::check));
        checked.clone().map_err(|problem| {
            Error::format(&self.label, crate::error::Malformed::Weights, problem)
        })
    }

    /// Is there a group at `path`?
    pub fn is_group(&self, path: &str) -> bool {
        // Walk link by link, so a missing intermediate group is a plain
        // "no" rather than an HDF5 error.
        let mut g = match self.file.group("/") {
            Ok(g) => g,
            Err(_) => return false,
        };
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !g.link_exists(part) {
                return false;
            }
            g = match g.group(part) {
                Ok(x) => x,
                Err(_) => return false,
            };
        }
        true
    }

    /// The datasets directly inside the group at `path`, sorted by name.
    /// Sub-groups and other links are reported as an error: a `vars` group
    /// holds datasets only. Nothing is read but each dataset's header.
    pub fn datasets(&self, path: &str) -> Result<Vec<DatasetInfo>> {
        let g = self
            .file
            .group(path)
            .map_err(|e| self.err(format!("group `{path}`"), e))?;
        let n = g.len();
        if n > MAX_GROUP_LINKS {
            return Err(self.unsafe_hdf5(format!(
                "group `{path}` holds {n} links, more than the limit of {MAX_GROUP_LINKS}"
            )));
        }
        let mut names = g
            .member_names()
            .map_err(|e| self.err(format!("group `{path}`"), e))?;
        if let Some(bad) = names.iter().find(|n| !is_utf8(n)) {
            return Err(self.unsafe_hdf5(format!(
                "group `{path}` holds a link whose name is not UTF-8 (`{}`)",
                checked_utf8(bad)
            )));
        }
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let full = format!("{path}/{name}");
            let ds = g
                .dataset(&name)
                .map_err(|e| self.err(format!("`{full}` is not a dataset"), e))?;
            let elem = elem_of(&ds);
            let space = ds
                .space()
                .map_err(|e| self.err(format!("dataspace of `{full}`"), e))?;
            out.push(DatasetInfo {
                name,
                elem,
                // The binding reports a null dataspace's shape as `[]`, the
                // shape of a scalar: keep the two apart.
                null: space.is_null(),
                shape: space.shape(),
            });
        }
        Ok(out)
    }

    /// Every group named `vars` at or below `path`, as full paths, sorted.
    /// Walked with the same bounds as [`Weights::check_structure`].
    pub fn vars_groups_under(&self, path: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        self.walk(path, |object, name, child| {
            if matches!(object, Object::Group(_)) && name == "vars" {
                out.push(child.to_string());
            }
            Ok(())
        })?;
        out.sort();
        Ok(out)
    }

    /// The string attribute `name` that Keras >= 3.6 writes on `vars`
    /// groups, if present.
    pub fn name_attr(&self, path: &str) -> Option<String> {
        let g = self.file.group(path).ok()?;
        let a = g.attr("name").ok()?;
        // Through the raw bytes: the binding's `as_str` does not check them.
        if let Ok(s) = a.read_scalar::<hdf5::types::VarLenUnicode>() {
            return std::str::from_utf8(s.as_bytes()).ok().map(str::to_string);
        }
        if let Ok(s) = a.read_scalar::<hdf5::types::VarLenAscii>() {
            return std::str::from_utf8(s.as_bytes()).ok().map(str::to_string);
        }
        None
    }

    /// Read a float32 or float16 dataset as float32 (widening is exact).
    /// tf.keras stores Normalization statistics as float16 under a
    /// `mixed_float16` policy; Keras 3 always uses float32.
    ///
    /// The size is checked before anything is read: a simple dataspace of
    /// at most `max_elems` elements (a chunked dataset that was never
    /// written declares any size it likes and reads back fill values).
    pub fn read_f32(&self, path: &str, max_elems: usize) -> Result<Tensor> {
        let ds = self
            .file
            .dataset(path)
            .map_err(|e| self.err(format!("dataset `{path}`"), e))?;
        let space = ds
            .space()
            .map_err(|e| self.err(format!("dataspace of `{path}`"), e))?;
        if space.is_null() {
            return Err(Error::format(
                &self.label,
                crate::error::Malformed::Weights,
                format!("`{path}` has a null dataspace (no values)"),
            ));
        }
        let shape = space.shape();
        let n = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= max_elems)
            .ok_or_else(|| {
                Error::format(
                    &self.label,
                    crate::error::Malformed::Limit,
                    format!("`{path}` declares shape {shape:?}, more than {max_elems} values"),
                )
            })?;
        let data: Vec<f32> = if ds.dtype().map(|t| t.size()).unwrap_or(4) == 2 {
            ds.read_raw::<half::f16>()
                .map_err(|e| self.err(format!("reading `{path}`"), e))?
                .into_iter()
                .map(f32::from)
                .collect()
        } else {
            ds.read_raw::<f32>()
                .map_err(|e| self.err(format!("reading `{path}`"), e))?
        };
        if data.len() != n {
            return Err(Error::format(
                &self.label,
                crate::error::Malformed::Weights,
                format!(
                    "`{path}`: read {} values where its shape {shape:?} declares {n}",
                    data.len()
                ),
            ));
        }
        Ok(Tensor { shape, data })
    }

    /// Read an integer scalar of any width.
    pub fn read_int_scalar(&self, path: &str) -> Result<i64> {
        let ds = self
            .file
            .dataset(path)
            .map_err(|e| self.err(format!("dataset `{path}`"), e))?;
        let scalar = ds.space().map(|s| s.is_scalar()).unwrap_or(false);
        if !scalar {
            return Err(Error::format(
                &self.label,
                crate::error::Malformed::Weights,
                format!("`{path}` is not a scalar"),
            ));
        }
        ds.read_scalar::<i64>()
            .map_err(|e| self.err(format!("reading `{path}`"), e))
    }

    /// Delete the dataset at `group/name`.
    pub fn unlink(&self, group: &str, name: &str) -> Result<()> {
        let g = self
            .file
            .group(group)
            .map_err(|e| self.err(format!("group `{group}`"), e))?;
        g.unlink(name)
            .map_err(|e| self.err(format!("deleting `{group}/{name}`"), e))
    }

    /// Rename the link `group/from` to `group/to` (which must not exist).
    pub fn rename(&self, group: &str, from: &str, to: &str) -> Result<()> {
        let g = self
            .file
            .group(if group.is_empty() { "/" } else { group })
            .map_err(|e| self.err(format!("group `{group}`"), e))?;
        if g.link_exists(to) {
            return Err(Error::format(
                &self.label,
                crate::error::Malformed::Weights,
                format!("cannot rename `{group}/{from}`: `{group}/{to}` exists"),
            ));
        }
        g.relink(from, to)
            .map_err(|e| self.err(format!("renaming `{group}/{from}` to `{to}`"), e))
    }

    /// Create the float32 scalar dataset `group/name` holding `value`.
    pub fn create_scalar_f32(&self, group: &str, name: &str, value: f32) -> Result<()> {
        let g = self
            .file
            .group(group)
            .map_err(|e| self.err(format!("group `{group}`"), e))?;
        let what = || format!("creating `{group}/{name}`");
        g.new_dataset::<f32>()
            .create(name)
            .and_then(|d| d.write_scalar(&value))
            .map_err(|e| self.err(what(), e))
    }

    /// Overwrite a float dataset with values of the same shape, in the
    /// dataset's own width (float16 values must be exactly representable).
    pub fn write_f32(&self, path: &str, t: &Tensor) -> Result<()> {
        let ds = self
            .file
            .dataset(path)
            .map_err(|e| self.err(format!("dataset `{path}`"), e))?;
        if ds.shape() != t.shape {
            return Err(Error::format(
                &self.label,
                crate::error::Malformed::Weights,
                format!("`{path}` has shape {:?}, not {:?}", ds.shape(), t.shape),
            ));
        }
        if ds.dtype().map(|t| t.size()).unwrap_or(4) == 2 {
            let h: Vec<half::f16> = t.data.iter().map(|v| half::f16::from_f32(*v)).collect();
            if h.iter()
                .zip(&t.data)
                .any(|(a, b)| f32::from(*a).to_bits() != b.to_bits())
            {
                return Err(Error::format(
                    &self.label,
                    crate::error::Malformed::Weights,
                    format!("`{path}`: the values are not exact in float16"),
                ));
            }
            ds.write_raw(&h)
        } else {
            ds.write_raw(&t.data)
        }
        .map_err(|e| self.err(format!("writing `{path}`"), e))
    }

    /// Does the group at `path` hold a dataset anywhere below it? (A
    /// walk with the usual bounds; an error counts as no.)
    pub fn has_datasets_under(&self, path: &str) -> bool {
        let mut found = false;
        let _ = self.walk(path, |object, _, _| {
            found |= matches!(object, Object::Dataset(_));
            Ok(())
        });
        found
    }

    /// Walk every object and refuse what Keras 3.15 refuses and krepair
    /// must never follow: soft and external links, external and virtual
    /// datasets, datasets whose declared size is absurd against their
    /// storage, and more objects, links, attributes or deeper nesting than
    /// any model has.
    ///
    /// A file made only of the structures h5py writes by default is read
    /// without HDF5 ([`headers::scan`], which accepts a file only if this
    /// walk would); anything else, and every file with
    /// `KREPAIR_HDF5_WALK=1`, is walked by HDF5.
    pub fn check_structure(&self) -> Result<()> {
        if let Some(bytes) = self.image.read_only_bytes() {
            if std::env::var_os("KREPAIR_HDF5_WALK").is_none()
                && headers::scan(bytes, &mut |_, _| {}).is_ok()
            {
                return Ok(());
            }
        }
        self.walk("", |object, _, child| match object {
            Object::Dataset(ds) => self.check_dataset(ds, child),
            _ => Ok(()),
        })
    }

    /// Every dataset in the file with its type and shape, in natural path
    /// order, after the checks of [`Weights::check_structure`] (one walk
    /// does both). Nothing is read but object headers.
    pub fn variables(&self) -> Result<Vec<Variable>> {
        let mut out = Vec::new();
        self.walk("", |object, _, child| {
            if let Object::Dataset(ds) = object {
                self.check_dataset(ds, child)?;
                let space = ds
                    .space()
                    .map_err(|e| self.err(format!("dataspace of `{child}`"), e))?;
                let shape: Vec<u64> = space.shape().into_iter().map(|d| d as u64).collect();
                let elements = if space.is_null() {
                    0
                } else {
                    // check_dataset refused a size that overflows.
                    shape.iter().product()
                };
                let size = ds.dtype().map(|t| t.size() as u64).unwrap_or(0);
                out.push(Variable {
                    path: child.to_string(),
                    dtype: dtype_name(ds),
                    shape,
                    elements,
                    bytes: elements.saturating_mul(size),
                });
            }
            Ok(())
        })?;
        out.sort_by(|a, b| natural_cmp(&a.path, &b.path));
        Ok(out)
    }

    /// Compare the dataset `a` of this file with the dataset `b` of
    /// `other`, element by element, reading at most [`COMPARE_CHUNK`]
    /// elements of each at a time. Both must be numeric (integers or
    /// floats, compared as float64) and of the same shape; None if either
    /// is not numeric.
    pub fn compare(
        &self,
        a: &str,
        other: &Weights,
        b: &str,
        tolerance: f64,
    ) -> Result<Option<ValueDiff>> {
        let da = self
            .file
            .dataset(a)
            .map_err(|e| self.err(format!("dataset `{a}`"), e))?;
        let db = other
            .file
            .dataset(b)
            .map_err(|e| other.err(format!("dataset `{b}`"), e))?;
        let numeric = |ds: &hdf5::Dataset| elem_of(ds) != Elem::Other;
        if !numeric(&da) || !numeric(&db) {
            return Ok(None);
        }
        let (sa, sb) = (da.space(), db.space());
        let (sa, sb) = (
            sa.map_err(|e| self.err(format!("dataspace of `{a}`"), e))?,
            sb.map_err(|e| other.err(format!("dataspace of `{b}`"), e))?,
        );
        let shape = sa.shape();
        if shape != sb.shape() || sa.is_null() != sb.is_null() {
            return Err(self.unsafe_hdf5(format!(
                "`{a}` and `{b}` have different shapes: nothing to compare"
            )));
        }
        let mut d = ValueDiff::default();
        let mut add = |x: &[f64], y: &[f64]| {
            for (&p, &q) in x.iter().zip(y) {
                d.elements += 1;
                match (p.is_nan(), q.is_nan()) {
                    (true, true) => {}
                    (true, false) | (false, true) => d.differing += 1,
                    (false, false) => {
                        let diff = (q - p).abs();
                        if diff > tolerance || (diff.is_nan() && p != q) {
                            d.differing += 1;
                        }
                        if diff.is_finite() {
                            d.max_abs_diff = d.max_abs_diff.max(diff);
                            let scale = p.abs().max(q.abs());
                            if scale > 0.0 && scale.is_finite() {
                                d.max_rel_diff = d.max_rel_diff.max(diff / scale);
                            }
                        } else if p != q {
                            // An infinity against a number or the other
                            // infinity: as far apart as numbers go.
                            d.max_abs_diff = f64::MAX;
                            d.max_rel_diff = d.max_rel_diff.max(2.0);
                        }
                    }
                }
            }
        };
        if sa.is_null() || shape.iter().product::<usize>() == 0 {
            return Ok(Some(d));
        }
        if shape.is_empty() {
            let x: f64 = da
                .read_scalar()
                .map_err(|e| self.err(format!("reading `{a}`"), e))?;
            let y: f64 = db
                .read_scalar()
                .map_err(|e| other.err(format!("reading `{b}`"), e))?;
            add(&[x], &[y]);
            return Ok(Some(d));
        }
        for sel in chunks(&shape) {
            let read = |w: &Weights, ds: &hdf5::Dataset, path: &str| -> Result<Vec<f64>> {
                let h = hdf5::Hyperslab::from(sel.clone());
                ds.read_slice::<f64, _, ndarray::IxDyn>(hdf5::Selection::from(h))
                    .map(|arr| arr.iter().copied().collect())
                    .map_err(|e| w.err(format!("reading `{path}`"), e))
            };
            let x = read(self, &da, a)?;
            let y = read(other, &db, b)?;
            add(&x, &y);
            self.image.release();
            other.image.release();
        }
        Ok(Some(d))
    }

    fn unsafe_hdf5(&self, problem: String) -> Error {
        Error::format(&self.label, crate::error::Malformed::Weights, problem)
    }

    /// The one walk over the HDF5 tree, from the group at `start` (`""` is
    /// the root): depth first, every hard link once. It refuses soft and
    /// external links, a group reached twice (a hard-link loop or alias),
    /// nesting deeper than [`MAX_DEPTH`], more than [`MAX_OBJECTS`] objects
    /// in all or [`MAX_GROUP_LINKS`] in one group, and more than
    /// [`MAX_ATTRIBUTES`] attributes on a group. `visit(object, name, path)`
    /// sees every group and dataset below `start`, open. Each object is
    /// opened once, by one lookup of its name ([`raw::open_object`]): the walk
    /// costs one name lookup and one object-header read per object.
    fn walk(
        &self,
        start: &str,
        mut visit: impl FnMut(&Object, &str, &str) -> Result<()>,
    ) -> Result<()> {
        let root = self
            .file
            .group(if start.is_empty() { "/" } else { start })
            .map_err(|e| self.err(format!("group `{start}`"), e))?;
        let mut seen: HashSet<String> = HashSet::new();
        let mut count = 0usize;
        let mut stack = vec![(root, start.to_string(), 0usize)];
        while let Some((g, path, depth)) = stack.pop() {
            if depth > MAX_DEPTH {
                return Err(
                    self.unsafe_hdf5(format!("groups nested deeper than {MAX_DEPTH} at `{path}`"))
                );
            }
            let info = g
                .loc_info()
                .map_err(|e| self.err(format!("group `{path}`"), e))?;
            if !seen.insert(format!("{:?}", info.token)) {
                return Err(self.unsafe_hdf5(format!(
                    "group `{path}` is reached twice (a hard-link loop or alias)"
                )));
            }
            if info.num_attrs > MAX_ATTRIBUTES {
                return Err(self.unsafe_hdf5(format!(
                    "group `{path}` has {} attributes, more than the limit of {MAX_ATTRIBUTES}",
                    info.num_attrs
                )));
            }
            // The bounds are checked as the links are listed (asking for
            // the count first costs another lookup of the group).
            let mut links = Vec::new();
            let mut over = false;
            let listed = g.iter_visit_default(|name, info| {
                if links.len() as u64 >= MAX_GROUP_LINKS || count + links.len() >= MAX_OBJECTS {
                    over = true;
                    return Err("over the limits".into());
                }
                links.push((name.to_string(), info.link_type));
                Ok(())
            });
            if over {
                return Err(self.unsafe_hdf5(format!(
                    "group `{path}` holds more than {} links: more objects than the limit of {MAX_GROUP_LINKS} in a group, or {MAX_OBJECTS} in all",
                    links.len()
                )));
            }
            listed.map_err(|e| self.err(format!("listing `{path}`"), e))?;
            if let Some((bad, _)) = links.iter().find(|(n, _)| !is_utf8(n)) {
                return Err(self.unsafe_hdf5(format!(
                    "group `{path}` holds a link whose name is not UTF-8 (`{}`)",
                    checked_utf8(bad)
                )));
            }
            // At most MAX_OBJECTS: the listing stopped before it got there.
            count += links.len();
            for (name, link_type) in links {
                let child = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}/{name}")
                };
                match link_type {
                    LinkType::Hard => {}
                    LinkType::Soft => {
                        return Err(self.unsafe_hdf5(format!("`{child}` is a soft link")))
                    }
                    LinkType::External => {
                        return Err(self.unsafe_hdf5(format!("`{child}` is an external link")))
                    }
                }
                let object =
                    raw::open_object(&g, &name).map_err(|e| self.err(format!("`{child}`"), e))?;
                visit(&object, &name, &child)?;
                if let Object::Group(sub) = object {
                    stack.push((sub, child, depth + 1));
                }
            }
        }
        Ok(())
    }

    fn check_dataset(&self, ds: &hdf5::Dataset, path: &str) -> Result<()> {
        // One creation property list answers both layout questions.
        let dcpl = ds.dcpl().map_err(|e| self.err(format!("`{path}`"), e))?;
        let layout = dcpl.layout();
        if !matches!(
            layout,
            Layout::Compact | Layout::Contiguous | Layout::Chunked
        ) {
            return Err(self.unsafe_hdf5(format!("`{path}` is a virtual dataset")));
        }
        // External storage exists only for contiguous layouts.
        if layout == Layout::Contiguous && !dcpl.external().is_empty() {
            return Err(self.unsafe_hdf5(format!("`{path}` stores its data in an external file")));
        }
        let elem = ds.dtype().map(|t| t.size() as u64).unwrap_or(1);
        let declared = ds
            .shape()
            .iter()
            .try_fold(elem, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| self.unsafe_hdf5(format!("`{path}` declares a size that overflows")))?;
        // The stored size walks a chunked dataset's index: ask only when
        // the declared size is large enough to matter.
        if declared > MAX_DATASET_BYTES {
            let stored = ds.storage_size();
            if declared / MAX_DATASET_RATIO > stored {
                return Err(self.unsafe_hdf5(format!(
                    "`{path}` declares {declared} bytes from {stored} stored bytes"
                )));
            }
        }
        Ok(())
    }

    /// Flush, close, and return the (edited) bytes.
    pub fn finish(self) -> Result<Image> {
        let Weights {
            file, image, label, ..
        } = self;
        file.flush()
            .map_err(|e| h5err(&label, "flushing HDF5 file", e))?;
        file.close()
            .map_err(|e| h5err(&label, "closing HDF5 file", e))?;
        Ok(image)
    }
}

/// What a pass needs to know of a weights file's tree, by path (the
/// weights-layout match of `passes::migrate::legacy_layout` reads it; its
/// tests stand in a tree of their own).
pub trait WeightsTree {
    /// Is there a group at `path`?
    fn is_group(&self, path: &str) -> bool;
    /// Does the group at `path` hold a dataset anywhere below it?
    fn has_datasets(&self, path: &str) -> bool;
    /// How many links the group at `path` holds.
    fn links(&self, path: &str) -> usize;
}

impl WeightsTree for Weights {
    fn is_group(&self, path: &str) -> bool {
        Weights::is_group(self, path)
    }

    fn has_datasets(&self, path: &str) -> bool {
        self.has_datasets_under(path)
    }

    fn links(&self, path: &str) -> usize {
        self.file.group(path).map(|g| g.len() as usize).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdf5::SliceOrIndex::{Index, SliceCount};

    /// The flat C-order offsets a chunk list covers, in order.
    fn covered(shape: &[usize]) -> Vec<usize> {
        let mut out = Vec::new();
        for sel in chunks(shape) {
            assert_eq!(sel.len(), shape.len());
            let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
            for s in &sel {
                ranges.push(match *s {
                    Index(i) => i..i + 1,
                    SliceCount { start, count, .. } => start..start + count,
                    _ => panic!("unexpected selection {s:?}"),
                });
            }
            let size: usize = ranges.iter().map(|r| r.len()).product();
            assert!(size <= COMPARE_CHUNK.max(shape.last().copied().unwrap_or(1)));
            // Every element of the box, in C order.
            let mut idx: Vec<usize> = ranges.iter().map(|r| r.start).collect();
            'all: loop {
                out.push(idx.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i));
                let mut a = idx.len();
                loop {
                    if a == 0 {
                        break 'all;
                    }
                    a -= 1;
                    idx[a] += 1;
                    if idx[a] < ranges[a].end {
                        break;
                    }
                    idx[a] = ranges[a].start;
                }
            }
        }
        out
    }

    #[test]
    fn chunks_cover_every_element_once_in_order() {
        for shape in [
            vec![5],
            vec![3, 4, 5],
            vec![COMPARE_CHUNK + 3],
            vec![3, COMPARE_CHUNK / 2 + 1],
            vec![2, 3, COMPARE_CHUNK + 1],
            vec![700, 1000],
        ] {
            let n: usize = shape.iter().product();
            assert_eq!(covered(&shape), (0..n).collect::<Vec<_>>(), "{shape:?}");
        }
    }

    #[test]
    fn paths_sort_as_people_count() {
        let mut v = vec!["vars/10", "vars/2", "a/vars/1", "vars/1", "vars/b"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, vec!["a/vars/1", "vars/1", "vars/2", "vars/10", "vars/b"]);
    }
}
