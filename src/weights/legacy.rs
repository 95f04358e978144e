//! The legacy HDF5 model file (`model.save("m.h5")` from Keras 2.0 to
//! tf.keras 2.15 and tf_keras 2.21, and what tf.keras 2.12 and older
//! write under a `.keras` name): its attributes and its `model_weights`
//! tree, read ([`Weights::legacy_model`]), and a Keras 3 weights file
//! written from it ([`write_keras3`]). The format is tf-keras's
//! `legacy/saving/hdf5_format.py` (`save_model_to_hdf5`,
//! `save_weights_to_hdf5_group`, `save_attributes_to_hdf5_group`).

use std::path::Path;

use super::{h5err, is_utf8, raw, Weights};
use crate::error::{Error, Malformed, Result};

/// The most bytes one string attribute (or all chunks of one) may hold:
/// a model config of tens of thousands of layers is a few MiB.
pub const MAX_ATTR_BYTES: usize = 64 << 20;

/// The group Keras 3 keeps a model's own weights in (beside its layers').
pub const TOP_LEVEL: &str = "top_level_model_weights";

/// What a legacy HDF5 model file holds, as text (the weights stay in the
/// file, named by their paths).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegacyModel {
    /// The root's `model_config` (JSON).
    pub model_config: String,
    /// The root's `training_config` (JSON), for a compiled model.
    pub training_config: Option<String>,
    /// The root's `keras_version` (`2.15.0`, `2.2.4-tf`, `2.2.4`, ...).
    pub keras_version: Option<String>,
    /// The root's `backend` (`tensorflow`, `theano`, ...).
    pub backend: Option<String>,
    /// `model_weights`' `layer_names`, each with its group's
    /// `weight_names`, in order.
    pub layers: Vec<(String, Vec<String>)>,
    /// The model's own weights (`model_weights/top_level_model_weights`'
    /// `weight_names`, which Keras 3 writes; empty without the group).
    pub top_level_weights: Vec<String>,
    /// `optimizer_weights`' `weight_names`, in order (empty without the
    /// group).
    pub optimizer_weights: Vec<String>,
}

impl Weights {
    fn legacy_err(&self, what: String) -> Error {
        Error::format(&self.label, Malformed::Weights, what)
    }

    /// The strings of the attribute `name` of the group `group`: an array
    /// or a scalar, of fixed- or variable-length strings, or split by
    /// Keras into `name0`, `name1`, ... when it outgrew an object header.
    /// None when there is no such attribute.
    pub fn string_attr(&self, group: &str, name: &str) -> Result<Option<Vec<String>>> {
        let g = self
            .file
            .group(if group.is_empty() { "/" } else { group })
            .map_err(|e| self.err(format!("group `{group}`"), e))?;
        let names = g
            .attr_names()
            .map_err(|e| self.err(format!("attributes of `/{group}`"), e))?;
        if names.iter().any(|n| !is_utf8(n)) {
            return Err(self.legacy_err(format!(
                "`/{group}` has an attribute name that is not UTF-8"
            )));
        }
        let mut parts: Vec<String> = Vec::new();
        if names.iter().any(|n| n == name) {
            parts.push(name.to_string());
        } else {
            while names.iter().any(|n| *n == format!("{name}{}", parts.len())) {
                parts.push(format!("{name}{}", parts.len()));
            }
            if parts.is_empty() {
                return Ok(None);
            }
        }
        let mut out = Vec::new();
        let mut budget = MAX_ATTR_BYTES;
        for part in parts {
            let a = g
                .attr(&part)
                .map_err(|e| self.err(format!("attribute `{part}` of `/{group}`"), e))?;
            for bytes in self.attr_strings(&a, &part, group, budget)? {
                budget = budget.checked_sub(bytes.len()).ok_or_else(|| {
                    Error::format(
                        &self.label,
                        Malformed::Limit,
                        format!("attribute `{name}` of `/{group}` holds more than {MAX_ATTR_BYTES} bytes"),
                    )
                })?;
                out.push(String::from_utf8(bytes).map_err(|_| {
                    self.legacy_err(format!(
                        "attribute `{part}` of `/{group}` is not UTF-8 text"
                    ))
                })?);
            }
        }
        Ok(Some(out))
    }

    /// The raw strings of one attribute, whatever its string type.
    fn attr_strings(
        &self,
        a: &hdf5::Attribute,
        part: &str,
        group: &str,
        budget: usize,
    ) -> Result<Vec<Vec<u8>>> {
        let what = || format!("attribute `{part}` of `/{group}`");
        // An empty list: h5py writes it as an empty float array.
        if a.space().is_ok_and(|s| s.size() == 0) {
            return Ok(Vec::new());
        }
        if let Some(v) = raw::read_fixed_strings(a, budget).map_err(|e| self.err(what(), e))? {
            return Ok(v);
        }
        let n = a.space().map(|s| s.size()).unwrap_or(0);
        if n > budget {
            return Err(Error::format(
                &self.label,
                Malformed::Limit,
                format!("{} holds {n} strings, more than the limit", what()),
            ));
        }
        // Variable-length strings (h5py writes a Python `str` so): their
        // bytes are in the file, so bounded by its size, in global heap
        // collections HDF5 1.10.8 reads without bounds checks.
        self.check_global_heaps()?;
        if let Ok(v) = a.read_raw::<hdf5::types::VarLenUnicode>() {
            return Ok(v.iter().map(|s| s.as_bytes().to_vec()).collect());
        }
        if let Ok(v) = a.read_raw::<hdf5::types::VarLenAscii>() {
            return Ok(v.iter().map(|s| s.as_bytes().to_vec()).collect());
        }
        Err(self.legacy_err(format!("{} is not a string", what())))
    }

    /// One string: the attribute's only value.
    fn one_string(&self, group: &str, name: &str) -> Result<Option<String>> {
        match self.string_attr(group, name)? {
            None => Ok(None),
            Some(mut v) if v.len() == 1 => Ok(v.pop()),
            Some(v) => Err(self.legacy_err(format!(
                "attribute `{name}` of `/{group}` holds {} strings where one was expected",
                v.len()
            ))),
        }
    }

    /// Read what a legacy HDF5 model file holds (see [`LegacyModel`]).
    /// A file without `model_config` is refused: it holds weights only
    /// (`model.save_weights`), and no model to migrate.
    pub fn legacy_model(&self) -> Result<LegacyModel> {
        let Some(model_config) = self.one_string("", "model_config")? else {
            let what = if self.is_group("model_weights")
                || self.string_attr("", "layer_names")?.is_some()
            {
                "an HDF5 file of weights only (no `model_config` attribute: `model.save_weights`), not a whole model: there is no architecture to migrate"
            } else {
                "an HDF5 file that is not a Keras model (no `model_config` attribute at its root)"
            };
            return Err(Error::format(&self.label, Malformed::NotAnArchive, what));
        };
        let training_config = self.one_string("", "training_config")?;
        let keras_version = self.one_string("", "keras_version")?;
        let backend = self.one_string("", "backend")?;
        // Keras 2.0's save_model wrote the weights at the root when the
        // model had no `model_weights` group (Keras 1): refused below by
        // the caller, which finds no layer names.
        let mut layers = Vec::new();
        if self.is_group("model_weights") {
            let names = self
                .string_attr("model_weights", "layer_names")?
                .ok_or_else(|| {
                    self.legacy_err("`/model_weights` has no `layer_names` attribute".into())
                })?;
            for name in names {
                let path = format!("model_weights/{name}");
                if !self.is_group(&path) {
                    return Err(self.legacy_err(format!(
                        "`layer_names` lists `{name}`, but `/model_weights` has no such group"
                    )));
                }
                let weights = self.string_attr(&path, "weight_names")?.unwrap_or_default();
                for w in &weights {
                    let ds = format!("{path}/{w}");
                    if !self.is_dataset(&ds) {
                        return Err(self.legacy_err(format!(
                            "`weight_names` of layer `{name}` lists `{w}`, which is not a dataset of its group"
                        )));
                    }
                }
                layers.push((name, weights));
            }
        }
        let top = format!("model_weights/{TOP_LEVEL}");
        let mut top_level_weights = Vec::new();
        if self.is_group(&top) && !layers.iter().any(|(n, _)| n == TOP_LEVEL) {
            top_level_weights = self.string_attr(&top, "weight_names")?.unwrap_or_default();
            for w in &top_level_weights {
                if !self.is_dataset(&format!("{top}/{w}")) {
                    return Err(self.legacy_err(format!(
                        "`weight_names` of `/{top}` lists `{w}`, which is not a dataset of it"
                    )));
                }
            }
        }
        let optimizer_weights = if self.is_group("optimizer_weights") {
            self.string_attr("optimizer_weights", "weight_names")?
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        for w in &optimizer_weights {
            if !self.is_dataset(&format!("optimizer_weights/{w}")) {
                return Err(self.legacy_err(format!(
                    "`weight_names` of `/optimizer_weights` lists `{w}`, which is not a dataset of it"
                )));
            }
        }
        Ok(LegacyModel {
            model_config,
            training_config,
            keras_version,
            backend,
            layers,
            top_level_weights,
            optimizer_weights,
        })
    }

    /// Is there a dataset at `path`?
    pub fn is_dataset(&self, path: &str) -> bool {
        self.file.dataset(path).is_ok()
    }
}

/// Write a Keras 3 weights file at `out` (a new file): the empty groups
/// `groups` (parents first), then the values of each dataset `from` of
/// `src` copied bit for bit to a new dataset `to` of the same type and
/// shape ([`raw::copy_values`]; `to`'s group among `groups`). Nothing
/// else of the source objects is copied: a crafted header message or
/// attribute of a weight (which `H5Ocopy` copied, and HDF5 1.10.8 crashed
/// on, found by `fuzz_legacy_h5`) never reaches the library's copy code.
pub fn write_keras3(
    src: &Weights,
    groups: &[String],
    moves: &[(String, String)],
    out: &Path,
) -> Result<()> {
    let label = out.display().to_string();
    let f = hdf5::File::create(out).map_err(|e| h5err(&label, "creating the weights file", e))?;
    for g in groups {
        f.create_group(g)
            .map_err(|e| h5err(&label, &format!("creating the group `{g}`"), e))?;
    }
    for (from, to) in moves {
        let (parent, name) = to.rsplit_once('/').unwrap_or(("", to.as_str()));
        let g = f
            .group(if parent.is_empty() { "/" } else { parent })
            .map_err(|e| h5err(&label, &format!("group `{parent}`"), e))?;
        let ds = src
            .file
            .dataset(from)
            .map_err(|e| h5err(&src.label, &format!("dataset `{from}`"), e))?;
        raw::copy_values(&ds, &g, name)
            .map_err(|e| h5err(&src.label, &format!("copying `{from}` to `{to}`"), e))?;
    }
    f.close()
        .map_err(|e| h5err(&label, "closing the weights file", e))
}
