//! The only module that talks to HDF5: `model.weights.h5`.
//!
//! It answers the questions the planner asks (does this group exist, what
//! datasets does this `vars` group hold, what are their values) and makes
//! the two edits a repair needs (delete a dataset, overwrite a float32
//! dataset in place). Everything goes through the `hdf5` crate
//! (hdf5-metno), which serializes calls behind one global lock.

use std::path::{Path, PathBuf};

use hdf5::types::{FloatSize, TypeDescriptor};

use crate::error::{one_line, Error, Result};
use crate::stats::Tensor;

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
    /// Its shape.
    pub shape: Vec<usize>,
}

/// An open weights file.
pub struct Weights {
    file: hdf5::File,
    /// Path on disk, for messages.
    path: PathBuf,
    /// How the archive names this member, for messages.
    label: String,
}

fn h5err(label: &str, what: &str, e: hdf5::Error) -> Error {
    Error::Format {
        path: PathBuf::from(label),
        problem: format!("{what}: {}", one_line(&e.to_string())),
    }
}

impl Weights {
    /// Open read-only. `label` names the file in messages
    /// (e.g. `model.keras!model.weights.h5`).
    pub fn open(path: &Path, label: &str) -> Result<Self> {
        let file =
            hdf5::File::open(path).map_err(|e| h5err(label, "not a readable HDF5 file", e))?;
        Ok(Weights {
            file,
            path: path.to_path_buf(),
            label: label.to_string(),
        })
    }

    /// Open for editing.
    pub fn open_rw(path: &Path, label: &str) -> Result<Self> {
        let file = hdf5::File::open_rw(path)
            .map_err(|e| h5err(label, "cannot open HDF5 file for editing", e))?;
        Ok(Weights {
            file,
            path: path.to_path_buf(),
            label: label.to_string(),
        })
    }

    fn err(&self, what: String, e: hdf5::Error) -> Error {
        h5err(&self.label, &what, e)
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
    /// holds datasets only.
    pub fn datasets(&self, path: &str) -> Result<Vec<DatasetInfo>> {
        let g = self
            .file
            .group(path)
            .map_err(|e| self.err(format!("group `{path}`"), e))?;
        let mut names = g
            .member_names()
            .map_err(|e| self.err(format!("group `{path}`"), e))?;
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let full = format!("{path}/{name}");
            let ds = g
                .dataset(&name)
                .map_err(|e| self.err(format!("`{full}` is not a dataset"), e))?;
            let elem = match ds.dtype().and_then(|t| t.to_descriptor()) {
                Ok(TypeDescriptor::Float(FloatSize::U4)) => Elem::Float(4),
                Ok(TypeDescriptor::Float(FloatSize::U8)) => Elem::Float(8),
                Ok(TypeDescriptor::Integer(s)) | Ok(TypeDescriptor::Unsigned(s)) => {
                    Elem::Int(s as usize)
                }
                _ => Elem::Other,
            };
            out.push(DatasetInfo {
                name,
                elem,
                shape: ds.shape(),
            });
        }
        Ok(out)
    }

    /// Every group named `vars` at or below `path`, as full paths, sorted.
    pub fn vars_groups_under(&self, path: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let start = if path.is_empty() {
            "/".to_string()
        } else {
            path.to_string()
        };
        let mut stack = vec![start];
        while let Some(p) = stack.pop() {
            let g = self
                .file
                .group(&p)
                .map_err(|e| self.err(format!("group `{p}`"), e))?;
            for name in g
                .member_names()
                .map_err(|e| self.err(format!("group `{p}`"), e))?
            {
                let child = if p == "/" {
                    name.clone()
                } else {
                    format!("{p}/{name}")
                };
                if g.group(&name).is_ok() {
                    if name == "vars" {
                        out.push(child.clone());
                    }
                    stack.push(child);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The string attribute `name` that Keras >= 3.6 writes on `vars`
    /// groups, if present.
    pub fn name_attr(&self, path: &str) -> Option<String> {
        let g = self.file.group(path).ok()?;
        let a = g.attr("name").ok()?;
        if let Ok(s) = a.read_scalar::<hdf5::types::VarLenUnicode>() {
            return Some(s.as_str().to_string());
        }
        if let Ok(s) = a.read_scalar::<hdf5::types::VarLenAscii>() {
            return Some(s.as_str().to_string());
        }
        None
    }

    /// Read a float32 dataset.
    pub fn read_f32(&self, path: &str) -> Result<Tensor> {
        let ds = self
            .file
            .dataset(path)
            .map_err(|e| self.err(format!("dataset `{path}`"), e))?;
        let data = ds
            .read_raw::<f32>()
            .map_err(|e| self.err(format!("reading `{path}`"), e))?;
        Ok(Tensor {
            shape: ds.shape(),
            data,
        })
    }

    /// Read an integer scalar of any width.
    pub fn read_int_scalar(&self, path: &str) -> Result<i64> {
        let ds = self
            .file
            .dataset(path)
            .map_err(|e| self.err(format!("dataset `{path}`"), e))?;
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

    /// Overwrite a float32 dataset with values of the same shape.
    pub fn write_f32(&self, path: &str, t: &Tensor) -> Result<()> {
        let ds = self
            .file
            .dataset(path)
            .map_err(|e| self.err(format!("dataset `{path}`"), e))?;
        if ds.shape() != t.shape {
            return Err(Error::format(
                &self.label,
                format!("`{path}` has shape {:?}, not {:?}", ds.shape(), t.shape),
            ));
        }
        ds.write_raw(&t.data)
            .map_err(|e| self.err(format!("writing `{path}`"), e))
    }

    /// Flush and close.
    pub fn close(self) -> Result<()> {
        self.file
            .flush()
            .map_err(|e| h5err(&self.label, "flushing HDF5 file", e))?;
        let path = self.path.clone();
        self.file
            .close()
            .map_err(|e| h5err(&path.display().to_string(), "closing HDF5 file", e))
    }
}
