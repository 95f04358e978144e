//! `krepair diff A B`: what differs between two archives (or two bare
//! weights files), without Python. Config differences by layer and key,
//! weights differences by variable (for equal shapes, the largest absolute
//! and relative difference), members and metadata.
//!
//! Layers are matched by their path of names, variables by their layer and
//! their path inside its group: a migration that only renames groups
//! (tf.keras 2.12's `_layer_checkpoint_dependencies/dense_2` becoming
//! `layers/dense_1`) changes no variable. Values are read a slab at a time
//! ([`crate::weights::COMPARE_CHUNK`] elements), so memory does not grow
//! with the weights. The JSON schema is docs/inspect.md.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Result;
use crate::tools::inspect::{FileSummary, LayerInfo, MemberInfo, Opened};
use crate::weights::{ValueDiff, Variable};

/// Version of the diff schema.
pub const SCHEMA_VERSION: u32 = 1;
/// The value of [`Diff::schema`].
pub const SCHEMA: &str = "krepair-diff";

/// What differs between two files.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Diff {
    /// [`SCHEMA`].
    pub schema: String,
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// krepair's version.
    pub krepair_version: String,
    /// The first file (the old one).
    pub a: FileSummary,
    /// The second file (the new one).
    pub b: FileSummary,
    /// Values closer than this are equal (`--tolerance`, default 0).
    pub tolerance: f64,
    /// Nothing below differs: no metadata, layer or variable, and no
    /// member but config.json and model.weights.h5, whose bytes may
    /// differ where what they hold does not.
    pub same: bool,
    /// `keras_version` and `date_saved` of metadata.json, where they
    /// differ.
    pub metadata: Vec<KeyChange>,
    /// Members added, removed or changed (size, CRC-32 or compression).
    pub members: Vec<MemberChange>,
    /// Layers added, removed, or whose config entry changed.
    pub layers: Vec<LayerChange>,
    /// Variables added, removed, or changed in shape, dtype or values.
    pub variables: Vec<VariableChange>,
    /// What is the same.
    pub unchanged: Unchanged,
}

/// Added, removed or changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    /// Only in B.
    Added,
    /// Only in A.
    Removed,
    /// In both, different.
    Changed,
}

/// One key whose value differs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyChange {
    /// Its path in the entry, `.`-separated (`config.mean`).
    pub key: String,
    /// In A (absent: null and `change` added).
    pub old: Option<Value>,
    /// In B.
    pub new: Option<Value>,
    /// Added, removed or changed.
    pub change: Change,
}

/// One member that differs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberChange {
    /// Its name.
    pub name: String,
    /// Added, removed or changed.
    pub change: Change,
    /// In A.
    pub old: Option<MemberInfo>,
    /// In B.
    pub new: Option<MemberInfo>,
}

/// One layer that differs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerChange {
    /// Its path of names (`""` for the model).
    pub path: String,
    /// Its class (in B, or in A if removed).
    pub class_name: String,
    /// Added, removed or changed.
    pub change: Change,
    /// For a changed layer, the keys of its config entry that differ (a
    /// model's `config.layers` excepted: its layers are compared one by
    /// one).
    pub keys: Vec<KeyChange>,
}

/// How a variable differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VariableChangeKind {
    /// Only in B.
    Added,
    /// Only in A.
    Removed,
    /// Another shape (values not compared).
    Shape,
    /// Another dtype (values compared as float64).
    Dtype,
    /// Values differ beyond the tolerance.
    Values,
}

/// A variable as one side has it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VariableSide {
    /// Its full path in that file.
    pub path: String,
    /// Its dtype.
    pub dtype: String,
    /// Its shape.
    pub shape: Vec<u64>,
}

/// One variable that differs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VariableChange {
    /// The layer that owns it (its path of names); null for a variable no
    /// layer owns (the optimizer's).
    pub layer: Option<String>,
    /// Its path inside the layer's group (`vars/0`), or its full path.
    pub name: String,
    /// How it differs.
    pub change: VariableChangeKind,
    /// In A.
    pub old: Option<VariableSide>,
    /// In B.
    pub new: Option<VariableSide>,
    /// For equal shapes, how the values differ (null when a dtype is not
    /// numeric).
    pub values: Option<ValueDiff>,
}

/// What is the same.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Unchanged {
    /// Layers in both with the same config entry.
    pub layers: usize,
    /// Variables in both with the same shape, dtype and values.
    pub variables: usize,
    /// Members in both with the same size, CRC-32 and compression.
    pub members: usize,
}

/// Compare the file at `a` with the file at `b`.
pub fn diff(a: &Path, b: &Path, tolerance: f64) -> Result<Diff> {
    crate::progress::step("reading the first file");
    let oa = crate::tools::inspect::open_model(a)?;
    crate::progress::step("reading the second file");
    let ob = crate::tools::inspect::open_model(b)?;
    let (ma, mb) = (&oa.manifest, &ob.manifest);
    let mut d = Diff {
        schema: SCHEMA.into(),
        schema_version: SCHEMA_VERSION,
        krepair_version: env!("CARGO_PKG_VERSION").into(),
        a: ma.file.clone(),
        b: mb.file.clone(),
        tolerance,
        same: false,
        metadata: Vec::new(),
        members: Vec::new(),
        layers: Vec::new(),
        variables: Vec::new(),
        unchanged: Unchanged::default(),
    };
    for (key, x, y) in [
        ("keras_version", &ma.keras_version, &mb.keras_version),
        ("date_saved", &ma.date_saved, &mb.date_saved),
    ] {
        if x != y {
            d.metadata.push(key_change(
                key.into(),
                x.clone().map(Value::from),
                y.clone().map(Value::from),
            ));
        }
    }
    crate::progress::step("comparing the members");
    // A legacy HDF5 model file has no members to compare: it compares by
    // its layers and variables (the archive `migrate` makes of it).
    if ma.file.form != "hdf5-model" && mb.file.form != "hdf5-model" {
        d.members = members(a, ma, b, mb, &mut d.unchanged)?;
    }
    crate::progress::step("comparing config.json");
    d.layers = layers(&oa, &ob, &mut d.unchanged);
    crate::progress::step("comparing the weights");
    d.variables = variables(&oa, &ob, tolerance, &mut d.unchanged)?;
    // config.json and model.weights.h5 are compared by what they hold
    // (their layers and variables): their bytes may differ while the
    // model is the same (JSON spacing, HDF5's free space, a tolerance).
    let semantic = |m: &MemberChange| {
        m.change == Change::Changed
            && (m.name == crate::source::keras::CONFIG || m.name == crate::source::keras::WEIGHTS)
    };
    d.same = d.metadata.is_empty()
        && d.members.iter().all(semantic)
        && d.layers.is_empty()
        && d.variables.is_empty();
    Ok(d)
}

fn key_change(key: String, old: Option<Value>, new: Option<Value>) -> KeyChange {
    let change = match (&old, &new) {
        (None, _) => Change::Added,
        (_, None) => Change::Removed,
        _ => Change::Changed,
    };
    KeyChange {
        key,
        old,
        new,
        change,
    }
}

/// A directory's members carry no CRC-32: compute it (streamed) so two
/// files of the same size but other bytes differ.
fn with_crc(root: &Path, m: &MemberInfo, form: &str) -> Result<MemberInfo> {
    let mut m = m.clone();
    if m.crc32.is_none() && form == "directory" {
        let crc = crate::hash::crc_file(&root.join(&m.name))?;
        m.crc32 = Some(format!("{crc:08x}"));
    }
    Ok(m)
}

fn members(
    a: &Path,
    ma: &crate::tools::inspect::Manifest,
    b: &Path,
    mb: &crate::tools::inspect::Manifest,
    same: &mut Unchanged,
) -> Result<Vec<MemberChange>> {
    let (fa, fb) = (ma.file.form.as_str(), mb.file.form.as_str());
    let (ma, mb) = (&ma.members, &mb.members);
    let byname: HashMap<&str, &MemberInfo> = mb.iter().map(|m| (m.name.as_str(), m)).collect();
    let mut out = Vec::new();
    for x in ma {
        match byname.get(x.name.as_str()) {
            None => out.push(MemberChange {
                name: x.name.clone(),
                change: Change::Removed,
                old: Some(x.clone()),
                new: None,
            }),
            Some(y) => {
                let (x, y) = (with_crc(a, x, fa)?, with_crc(b, y, fb)?);
                // A zip member and a directory's file compare by content.
                let packing = x.compression.is_some()
                    && y.compression.is_some()
                    && x.compression != y.compression;
                if x.size != y.size || x.crc32 != y.crc32 || packing {
                    out.push(MemberChange {
                        name: x.name.clone(),
                        change: Change::Changed,
                        old: Some(x),
                        new: Some(y),
                    });
                } else {
                    same.members += 1;
                }
            }
        }
    }
    let names: std::collections::HashSet<&str> = ma.iter().map(|m| m.name.as_str()).collect();
    for y in mb.iter().filter(|y| !names.contains(y.name.as_str())) {
        out.push(MemberChange {
            name: y.name.clone(),
            change: Change::Added,
            old: None,
            new: Some(y.clone()),
        });
    }
    Ok(out)
}

/// The keys of two config entries that differ: objects are compared key
/// by key, everything else as a whole. `skip` is left out (a model's
/// `config.layers`).
fn entry_changes(x: &Value, y: &Value, prefix: &str, skip: Option<&str>, out: &mut Vec<KeyChange>) {
    match (x, y) {
        (Value::Object(p), Value::Object(q)) => {
            for (k, v) in p {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if Some(key.as_str()) == skip {
                    continue;
                }
                match q.get(k) {
                    Some(w) => entry_changes(v, w, &key, skip, out),
                    None => out.push(key_change(key, Some(v.clone()), None)),
                }
            }
            for (k, w) in q.iter().filter(|(k, _)| !p.contains_key(*k)) {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if Some(key.as_str()) != skip {
                    out.push(key_change(key, None, Some(w.clone())));
                }
            }
        }
        _ if x == y => {}
        _ => out.push(key_change(prefix.into(), Some(x.clone()), Some(y.clone()))),
    }
}

fn layers(a: &Opened, b: &Opened, same: &mut Unchanged) -> Vec<LayerChange> {
    let (la, lb) = (&a.manifest.layers, &b.manifest.layers);
    let entry = |o: &Opened, l: &LayerInfo| -> Option<Value> {
        let config = o.config.as_ref()?;
        crate::view::config::at(config, &l.pointer).cloned()
    };
    let byname: HashMap<&str, &LayerInfo> = lb.iter().map(|l| (l.path.as_str(), l)).collect();
    let mut out = Vec::new();
    for x in la {
        let Some(y) = byname.get(x.path.as_str()) else {
            out.push(LayerChange {
                path: x.path.clone(),
                class_name: x.class_name.clone(),
                change: Change::Removed,
                keys: Vec::new(),
            });
            continue;
        };
        let mut keys = Vec::new();
        let skip = (x.container || y.container).then_some("config.layers");
        match (entry(a, x), entry(b, y)) {
            (Some(p), Some(q)) => entry_changes(&p, &q, "", skip, &mut keys),
            (p, q) if p != q => keys.push(key_change(String::new(), p, q)),
            _ => {}
        }
        if keys.is_empty() {
            same.layers += 1;
        } else {
            out.push(LayerChange {
                path: x.path.clone(),
                class_name: y.class_name.clone(),
                change: Change::Changed,
                keys,
            });
        }
    }
    let paths: std::collections::HashSet<&str> = la.iter().map(|l| l.path.as_str()).collect();
    for y in lb.iter().filter(|y| !paths.contains(y.path.as_str())) {
        out.push(LayerChange {
            path: y.path.clone(),
            class_name: y.class_name.clone(),
            change: Change::Added,
            keys: Vec::new(),
        });
    }
    out
}

/// Every variable of a manifest by (owning layer, path inside its group),
/// in manifest order.
fn keyed(o: &Opened) -> Vec<((Option<String>, String), &Variable)> {
    let mut out = Vec::new();
    for l in &o.manifest.layers {
        for v in &l.variables {
            let name = crate::tools::inspect::short(v, l.weights_group.as_deref());
            out.push(((Some(l.path.clone()), name.to_string()), v));
        }
    }
    for v in &o.manifest.other_variables {
        out.push(((None, v.path.clone()), v));
    }
    out
}

fn side(v: &Variable) -> VariableSide {
    VariableSide {
        path: v.path.clone(),
        dtype: v.dtype.clone(),
        shape: v.shape.clone(),
    }
}

fn variables(
    a: &Opened,
    b: &Opened,
    tolerance: f64,
    same: &mut Unchanged,
) -> Result<Vec<VariableChange>> {
    let ka = keyed(a);
    let kb = keyed(b);
    let byname: HashMap<&(Option<String>, String), &Variable> =
        kb.iter().map(|(k, v)| (k, *v)).collect();
    let mut out = Vec::new();
    let change =
        |k: &(Option<String>, String), kind, x: Option<&Variable>, y: Option<&Variable>| {
            VariableChange {
                layer: k.0.clone(),
                name: k.1.clone(),
                change: kind,
                old: x.map(side),
                new: y.map(side),
                values: None,
            }
        };
    for (k, x) in &ka {
        let Some(y) = byname.get(k) else {
            out.push(change(k, VariableChangeKind::Removed, Some(x), None));
            continue;
        };
        if x.shape != y.shape {
            out.push(change(k, VariableChangeKind::Shape, Some(x), Some(y)));
            continue;
        }
        let values = match (&a.weights, &b.weights) {
            (Some(wa), Some(wb)) => wa.compare(&x.path, wb, &y.path, tolerance)?,
            _ => None,
        };
        let differs = values.as_ref().is_some_and(|v| v.differing > 0);
        let kind = if x.dtype != y.dtype {
            Some(VariableChangeKind::Dtype)
        } else if differs {
            Some(VariableChangeKind::Values)
        } else {
            None
        };
        match kind {
            Some(kind) => out.push(VariableChange {
                values,
                ..change(k, kind, Some(x), Some(y))
            }),
            None => same.variables += 1,
        }
    }
    let keys: std::collections::HashSet<&(Option<String>, String)> =
        ka.iter().map(|(k, _)| k).collect();
    for (k, y) in kb.iter().filter(|(k, _)| !keys.contains(k)) {
        out.push(change(k, VariableChangeKind::Added, None, Some(y)));
    }
    Ok(out)
}

/// A JSON value in at most `n` characters, for the human output.
fn brief(v: &Option<Value>, n: usize) -> String {
    let s = match v {
        None => "(absent)".to_string(),
        Some(v) => v.to_string(),
    };
    if s.chars().count() <= n {
        s
    } else {
        let cut: String = s.chars().take(n).collect();
        format!("{cut}...")
    }
}

fn shape(v: &VariableSide) -> String {
    crate::tools::inspect::typed_shape(&v.dtype, &v.shape)
}

fn sign(c: Change) -> char {
    match c {
        Change::Added => '+',
        Change::Removed => '-',
        Change::Changed => '~',
    }
}

impl Diff {
    /// The human-readable difference `krepair diff` prints.
    pub fn human(&self) -> String {
        let mut out = format!("--- {}\n+++ {}\n", self.a.path, self.b.path);
        if self.same && self.members.is_empty() {
            out.push_str(&format!(
                "the same: {} members, {} layers, {} variables{}\n",
                self.unchanged.members,
                self.unchanged.layers,
                self.unchanged.variables,
                if self.tolerance > 0.0 {
                    format!(" (values within {})", self.tolerance)
                } else {
                    String::new()
                }
            ));
            return out;
        }
        for k in &self.metadata {
            out.push_str(&format!(
                "metadata {}: {} -> {}\n",
                k.key,
                brief(&k.old, 60),
                brief(&k.new, 60)
            ));
        }
        self.members_text(&mut out);
        self.layers_text(&mut out);
        self.variables_text(&mut out);
        out.push_str(&format!(
            "unchanged: {} members, {} layers, {} variables\n",
            self.unchanged.members, self.unchanged.layers, self.unchanged.variables
        ));
        if self.same {
            out.push_str(
                "the same model: only the bytes of config.json or model.weights.h5 differ\n",
            );
        }
        out
    }

    /// The members that differ.
    fn members_text(&self, out: &mut String) {
        if !self.members.is_empty() {
            out.push_str("members:\n");
            let info = |m: &Option<MemberInfo>| match m {
                Some(m) => format!(
                    "{} bytes{}{}",
                    m.size,
                    m.compression
                        .as_ref()
                        .map(|c| format!(" {c}"))
                        .unwrap_or_default(),
                    m.crc32
                        .as_ref()
                        .map(|c| format!(" crc32 {c}"))
                        .unwrap_or_default()
                ),
                None => "(absent)".into(),
            };
            for m in &self.members {
                out.push_str(&format!(
                    "  {} {}: {} -> {}\n",
                    sign(m.change),
                    m.name,
                    info(&m.old),
                    info(&m.new)
                ));
            }
        }
    }

    /// The layers that differ, key by key.
    fn layers_text(&self, out: &mut String) {
        if !self.layers.is_empty() {
            out.push_str("layers:\n");
            for l in &self.layers {
                let name = if l.path.is_empty() {
                    "(the model)"
                } else {
                    &l.path
                };
                out.push_str(&format!("  {} {name} ({})\n", sign(l.change), l.class_name));
                for k in &l.keys {
                    out.push_str(&format!(
                        "      {}: {} -> {}\n",
                        if k.key.is_empty() { "(entry)" } else { &k.key },
                        brief(&k.old, 70),
                        brief(&k.new, 70)
                    ));
                }
            }
        }
    }

    /// The variables that differ, with their values' differences.
    fn variables_text(&self, out: &mut String) {
        if !self.variables.is_empty() {
            out.push_str("variables:\n");
            for v in &self.variables {
                let at = match &v.layer {
                    Some(l) if l.is_empty() => format!("(the model): {}", v.name),
                    Some(l) => format!("{l}: {}", v.name),
                    None => v.name.clone(),
                };
                let what = match (v.change, &v.old, &v.new) {
                    (VariableChangeKind::Added, _, Some(n)) => format!("+ {at} {}", shape(n)),
                    (VariableChangeKind::Removed, Some(o), _) => format!("- {at} {}", shape(o)),
                    (_, Some(o), Some(n)) => {
                        let mut s = format!("~ {at} {}", shape(o));
                        if o.dtype != n.dtype || o.shape != n.shape {
                            s.push_str(&format!(" -> {}", shape(n)));
                        }
                        if let Some(d) = &v.values {
                            if d.differing == 0 {
                                s.push_str(": values equal");
                            } else {
                                s.push_str(&format!(
                                    ": {} of {} values differ, max |diff| {:.6e}, max rel {:.3e}",
                                    d.differing, d.elements, d.max_abs_diff, d.max_rel_diff
                                ));
                            }
                        }
                        s
                    }
                    _ => at,
                };
                out.push_str(&format!("  {what}\n"));
            }
        }
    }

    /// The diff as pretty JSON, with a final newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a diff serializes");
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_entries_differ_by_key() {
        let a = json!({"class_name": "Normalization", "config": {"name": "n", "mean": null,
            "variance": null, "axis": [-1]}, "inbound_nodes": [1]});
        let b = json!({"class_name": "Normalization", "config": {"name": "n", "mean": [0.5],
            "variance": [2.0], "axis": [-1], "invert": false}, "inbound_nodes": [1]});
        let mut out = Vec::new();
        entry_changes(&a, &b, "", None, &mut out);
        let got: Vec<(&str, Change, String, String)> = out
            .iter()
            .map(|k| {
                (
                    k.key.as_str(),
                    k.change,
                    brief(&k.old, 20),
                    brief(&k.new, 20),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "config.mean",
                    Change::Changed,
                    "null".into(),
                    "[0.5]".into()
                ),
                (
                    "config.variance",
                    Change::Changed,
                    "null".into(),
                    "[2.0]".into()
                ),
                (
                    "config.invert",
                    Change::Added,
                    "(absent)".into(),
                    "false".into()
                ),
            ]
        );
        // A model's layers are compared one by one, not as its key.
        let m =
            |n: u32| json!({"class_name": "Functional", "config": {"layers": [n], "name": "m"}});
        let mut out = Vec::new();
        entry_changes(&m(1), &m(2), "", Some("config.layers"), &mut out);
        assert!(out.is_empty(), "{out:?}");
        entry_changes(&m(1), &m(2), "", None, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn long_values_are_cut_for_people() {
        let v = Some(json!([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
        assert_eq!(brief(&v, 8), "[1,2,3,4...");
        assert_eq!(brief(&None, 8), "(absent)");
    }
}
