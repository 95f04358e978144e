//! `krepair inspect`: what is inside an archive (or a bare weights file),
//! without Python. The members, the layer tree as Keras builds it with each
//! layer's weights group and variables, and what `krepair` and `krepair
//! migrate` would do with it (their dry-run reports).
//!
//! The JSON schema is docs/inspect.md; [`SCHEMA_VERSION`] is bumped on any
//! incompatible change. Only headers are read: no variable's values are,
//! so memory does not grow with the size of the weights.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Malformed, Result};
use crate::report::Report;
use crate::source::keras::{self as archive, Archive, Form};
use crate::view::config::{self as model, TreeLayer};
use crate::weights::{Variable, Weights};

/// Version of the inspect schema.
pub const SCHEMA_VERSION: u32 = 1;
/// The value of [`Manifest::schema`].
pub const SCHEMA: &str = "krepair-inspect";

/// Everything `krepair inspect` says about one file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// [`SCHEMA`].
    pub schema: String,
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// krepair's version.
    pub krepair_version: String,
    /// The file inspected.
    pub file: FileSummary,
    /// `keras_version` from metadata.json.
    pub keras_version: Option<String>,
    /// `date_saved` from metadata.json.
    pub date_saved: Option<String>,
    /// Every member, in archive order (empty for a bare weights file).
    pub members: Vec<MemberInfo>,
    /// The model and its layers in config order, depth first (empty for a
    /// bare weights file).
    pub layers: Vec<LayerInfo>,
    /// Datasets no layer owns (the optimizer's, metrics', or, for a bare
    /// weights file, all of them), in path order.
    pub other_variables: Vec<Variable>,
    /// Sums.
    pub totals: Totals,
    /// What `krepair IN OUT` would do: its dry-run report (docs/report.md).
    pub repair: Option<Box<Report>>,
    /// What `krepair migrate IN OUT` would do, for a tf.keras 2.x archive.
    pub migrate: Option<Box<Report>>,
}

/// The file inspected.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileSummary {
    /// As given on the command line.
    pub path: String,
    /// `zip`, `directory`, `weights` (a bare `.weights.h5` file) or
    /// `hdf5-model` (a legacy HDF5 model file, `model.save("m.h5")`).
    pub form: String,
    /// Bytes (the sum of member sizes for a directory).
    pub size: u64,
}

/// One member of the archive.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Its name.
    pub name: String,
    /// Uncompressed bytes.
    pub size: u64,
    /// Bytes in the zip (null in a directory).
    pub compressed_size: Option<u64>,
    /// `stored`, `deflated`, ... (null in a directory).
    pub compression: Option<String>,
    /// The zip's CRC-32 of it, 8 hex digits (null in a directory).
    pub crc32: Option<String>,
}

/// One layer (or the model itself, depth 0).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Layer names from the model down to it, joined by `/` (empty for the
    /// model).
    pub path: String,
    /// Nesting: 0 the model, 1 its layers, 2 a nested model's layers, ...
    pub depth: usize,
    /// `class_name` in the config.
    pub class_name: String,
    /// Its name.
    pub name: String,
    /// `module` in the config.
    pub module: Option<String>,
    /// Its group in model.weights.h5, as this file spells it (tf.keras
    /// 2.12-2.14: `_layer_checkpoint_dependencies/...`); null when it has
    /// none (an operation, a Sequential model's InputLayer) or the file
    /// lacks it.
    pub weights_group: Option<String>,
    /// Its own variables: every dataset under its group, but for a model
    /// only those in `<group>/vars` (its layers list theirs).
    pub variables: Vec<Variable>,
    /// Elements of its variables.
    pub parameters: u64,
    /// A Functional or Sequential model (not in the JSON).
    #[serde(skip)]
    pub container: bool,
    /// Where its entry is in config.json (not in the JSON).
    #[serde(skip)]
    pub pointer: Vec<crate::view::json_span::Seg>,
}

/// Sums over the file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Totals {
    /// Entries of [`Manifest::layers`] (the model included).
    pub layers: usize,
    /// Datasets the layers own.
    pub variables: usize,
    /// Their elements (what Keras' `count_params()` counts).
    pub parameters: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Datasets no layer owns.
    pub other_variables: usize,
    /// Their bytes.
    pub other_bytes: u64,
}

/// A file read for `inspect` or `diff`: its manifest (without the dry
/// runs), and the parsed config and open weights behind it.
pub(crate) struct Opened {
    pub manifest: Manifest,
    /// The archive (none for a bare weights file), for the dry runs.
    pub archive: Option<Archive>,
    pub config: Option<Value>,
    pub weights: Option<Weights>,
    /// A legacy HDF5 model file's conversion ([`open_model`]): keeps the
    /// temporary archive until the comparison is done.
    pub converted: Option<crate::view::legacy_h5::Converted>,
}

/// Inspect the file at `path`: a `.keras` zip or directory, or a bare
/// HDF5 weights file.
pub fn inspect(path: &Path) -> Result<Manifest> {
    let Opened {
        mut manifest,
        archive,
        ..
    } = open(path)?;
    let Some(archive) = archive else {
        if manifest.file.form == "hdf5-model" {
            // A legacy HDF5 model file: what `krepair migrate` would do.
            crate::progress::step("planning a migration (dry run)");
            let opts = crate::run::single::Options {
                input: path.to_path_buf(),
                output: None,
                policy: crate::Policy::Auto,
                force: false,
                migrate: true,
                load_in: crate::passes::keras3::Targets::ALL,
            };
            manifest.migrate = Some(Box::new(crate::run::single::run(&opts).report));
        }
        return Ok(manifest);
    };
    crate::progress::step("planning a repair (dry run)");
    // Each dry run reads the archive opened above (a clone shares its
    // file and central directory).
    let dry = |migrate| {
        let opts = crate::run::single::Options {
            input: path.to_path_buf(),
            output: None,
            policy: crate::Policy::Auto,
            force: false,
            migrate,
            load_in: crate::passes::keras3::Targets::ALL,
        };
        Box::new(crate::run::single::run_opened(&opts, archive.clone()).report)
    };
    manifest.repair = Some(dry(false));
    if crate::passes::migrate::is_tf_keras(manifest.keras_version.as_deref()) {
        crate::progress::step("planning a migration (dry run)");
        manifest.migrate = Some(dry(true));
    }
    Ok(manifest)
}

/// Read the file at `path` into its manifest (no dry runs), keeping the
/// config and the weights open.
pub(crate) fn open(path: &Path) -> Result<Opened> {
    let m = blank_manifest(path);
    let (file, hdf5) = open_file(path)?;
    if let (Some(f), true) = (&file, hdf5) {
        return bare_weights(path, f, m);
    }
    crate::progress::step("reading the zip container");
    let archive = match file {
        Some(f) => Archive::open_file(path, f)?,
        None => Archive::open(path)?,
    };
    from_archive(path, archive, m)
}

/// Open `path` for `diff`: a legacy HDF5 model file as the archive
/// `krepair migrate` makes of it before any rule (its config as the file
/// holds it, its weights where Keras 3 reads them), so that it compares
/// with its migrated `.keras` variable by variable; anything else as
/// [`open`] does.
pub(crate) fn open_model(path: &Path) -> Result<Opened> {
    let is_model = match open_file(path)? {
        (Some(f), true) => {
            let len = f.metadata().map_err(|e| Error::io(path, "stat", e))?.len();
            let w = Weights::open_at(&f, 0, len, &path.display().to_string(), false)?;
            w.check_structure()?;
            w.legacy_model().is_ok()
        }
        _ => false,
    };
    if !is_model {
        return open(path);
    }
    let (archive, converted) = crate::view::legacy_h5::convert(path)?;
    let mut o = from_archive(path, archive, blank_manifest(path))?;
    o.manifest.file.form = "hdf5-model".into();
    o.manifest.file.size = std::fs::metadata(path)
        .map_err(|e| Error::io(path, "stat", e))?
        .len();
    // The members are the conversion's, not the file's.
    o.manifest.members.clear();
    o.manifest.keras_version = Some(converted.keras_version.clone());
    o.converted = Some(converted);
    Ok(o)
}

/// The manifest of `path` before anything is read.
fn blank_manifest(path: &Path) -> Manifest {
    Manifest {
        schema: SCHEMA.into(),
        schema_version: SCHEMA_VERSION,
        krepair_version: env!("CARGO_PKG_VERSION").into(),
        file: FileSummary {
            path: path.display().to_string(),
            form: String::new(),
            size: 0,
        },
        keras_version: None,
        date_saved: None,
        members: Vec::new(),
        layers: Vec::new(),
        other_variables: Vec::new(),
        totals: Totals::default(),
        repair: None,
        migrate: None,
    }
}

/// The rest of [`open`], once the archive is open.
fn from_archive(path: &Path, mut archive: Archive, mut m: Manifest) -> Result<Opened> {
    m.file.form = match archive.form {
        Form::Zip => "zip".into(),
        Form::Directory => "directory".into(),
        Form::Hdf5 => "hdf5".into(),
    };
    m.file.size = match archive.form {
        Form::Zip | Form::Hdf5 => std::fs::metadata(path)
            .map_err(|e| Error::io(path, "stat", e))?
            .len(),
        Form::Directory => archive.members.iter().map(|x| x.size).sum(),
    };
    m.members = archive
        .members
        .iter()
        .map(|x| MemberInfo {
            name: x.name.clone(),
            size: x.size,
            compressed_size: x.packed.as_ref().map(|p| p.1),
            compression: x.packed.as_ref().map(|p| p.0.clone()),
            crc32: x.crc32.map(|c| format!("{c:08x}")),
        })
        .collect();
    read_metadata(&mut archive, &mut m)?;
    let config = match archive.member(archive::CONFIG) {
        Some(_) => {
            crate::progress::step("reading config.json");
            let bytes = archive.read_member(archive::CONFIG, archive::MAX_CONFIG_BYTES)?;
            Some(crate::view::open::parse_json(
                &bytes,
                archive::CONFIG,
                &archive,
            )?)
        }
        None => None,
    };
    let tree = match &config {
        Some(c) => model::layer_tree(c)
            .map_err(|e| Error::format(path, Malformed::Config, format!("config.json: {e}")))?,
        None => Vec::new(),
    };
    let mut opened = None;
    if archive.member(archive::WEIGHTS).is_some() {
        crate::progress::step("walking the HDF5 structure of model.weights.h5");
        let label = format!("{}!{}", path.display(), archive::WEIGHTS);
        let weights = match archive.in_place(archive::WEIGHTS) {
            Some((file, range)) => Weights::open_in_place(&file, range, &label, false)?,
            None => {
                let tmp = crate::view::open::Inflated::weights(&mut archive)?;
                Weights::open_at(tmp.file.as_file(), 0, tmp.len, &label, false)?
            }
        };
        let variables = weights.variables()?;
        let groups = stored_groups(&tree, config.as_ref(), m.keras_version.as_deref(), &weights);
        let (layers, other) = assign(&tree, groups, variables);
        m.layers = layers;
        m.other_variables = other;
        opened = Some(weights);
    } else {
        m.layers = assign(&tree, vec![None; tree.len()], Vec::new()).0;
    }
    m.totals = totals(&m.layers, &m.other_variables);
    Ok(Opened {
        manifest: m,
        archive: Some(archive),
        config,
        weights: opened,
        converted: None,
    })
}

/// A bare HDF5 weights file: its variables, owned by no layer.
fn bare_weights(path: &Path, f: &std::fs::File, mut m: Manifest) -> Result<Opened> {
    crate::progress::step("walking the HDF5 file");
    let len = f.metadata().map_err(|e| Error::io(path, "stat", e))?.len();
    m.file.form = "weights".into();
    m.file.size = len;
    let label = path.display().to_string();
    let weights = Weights::open_at(f, 0, len, &label, false)?;
    m.other_variables = weights.variables()?;
    // A legacy model file (model.save("m.h5")): its saving version. The
    // walk above has passed, so its attributes are safe to read.
    if let Ok(legacy) = weights.legacy_model() {
        m.file.form = "hdf5-model".into();
        m.keras_version = legacy.keras_version;
    }
    m.totals = totals(&m.layers, &m.other_variables);
    Ok(Opened {
        manifest: m,
        archive: None,
        config: None,
        weights: Some(weights),
        converted: None,
    })
}

/// The saving Keras version and date, from `metadata.json` if any.
fn read_metadata(archive: &mut Archive, m: &mut Manifest) -> Result<()> {
    if archive.member(archive::METADATA).is_some() {
        let bytes = archive.read_member(archive::METADATA, archive::MAX_METADATA_BYTES)?;
        let meta = crate::view::open::parse_json(&bytes, archive::METADATA, archive)?;
        let text = |k: &str| meta.get(k).and_then(Value::as_str).map(str::to_string);
        m.keras_version = text("keras_version");
        m.date_saved = text("date_saved");
    }
    Ok(())
}

/// The file at `path`, opened (none for a directory), and whether it
/// starts with the HDF5 signature.
fn open_file(path: &Path) -> Result<(Option<std::fs::File>, bool)> {
    if std::fs::metadata(path)
        .map_err(|e| Error::io(path, "read", e))?
        .is_dir()
    {
        return Ok((None, false));
    }
    let mut head = [0u8; 8];
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, "open", e))?;
    let n = archive::read_up_to(&mut f, &mut head).map_err(|e| Error::io(path, "read", e))?;
    Ok((Some(f), &head[..n] == archive::HDF5_MAGIC))
}

/// Each layer's group as this weights file spells it: Keras 3's path if
/// the file has it, else (tf.keras 2.12-2.14) the same group in the
/// `_layer_checkpoint_dependencies` layout and numbering.
fn stored_groups(
    tree: &[TreeLayer],
    config: Option<&Value>,
    keras_version: Option<&str>,
    weights: &Weights,
) -> Vec<Option<String>> {
    let legacy = weights.is_group(crate::passes::migrate::LEGACY_CONTAINER);
    let renames = match config {
        Some(c) if legacy => crate::passes::migrate::legacy_layout(
            c,
            crate::passes::migrate::numbering_of(keras_version)
                .unwrap_or(crate::passes::migrate::Numbering::Plain),
            weights,
        )
        .unwrap_or_default(),
        _ => Vec::new(),
    };
    tree.iter()
        .map(|l| {
            let g = l.group.as_deref()?;
            if g.is_empty() || weights.is_group(g) {
                return Some(g.to_string());
            }
            if !legacy {
                return None;
            }
            let alt = if renames.is_empty() {
                g.replace("layers", crate::passes::migrate::LEGACY_CONTAINER)
            } else {
                crate::passes::migrate::legacy_path(&renames, g)
            };
            weights.is_group(&alt).then_some(alt)
        })
        .collect()
}

/// Give each variable to the layer that owns it: a model owns what is in
/// `<group>/vars`, any other layer everything under its group (a layer
/// held as an attribute of a custom layer is stored there).
fn assign(
    tree: &[TreeLayer],
    groups: Vec<Option<String>>,
    variables: Vec<Variable>,
) -> (Vec<LayerInfo>, Vec<Variable>) {
    let mut own_vars: HashMap<String, usize> = HashMap::new();
    let mut under: HashMap<String, usize> = HashMap::new();
    for (i, (l, g)) in tree.iter().zip(&groups).enumerate() {
        if let Some(g) = g {
            if l.container || g.is_empty() {
                own_vars.insert(crate::passes::migrate::join_path(g, "vars"), i);
            } else {
                under.insert(g.clone(), i);
            }
        }
    }
    let mut owned: Vec<Vec<Variable>> = vec![Vec::new(); tree.len()];
    let mut other = Vec::new();
    for v in variables {
        let parent = v.path.rsplit_once('/').map_or("", |(p, _)| p);
        let owner = own_vars.get(parent).copied().or_else(|| {
            v.path
                .match_indices('/')
                .map(|(i, _)| &v.path[..i])
                .find_map(|prefix| under.get(prefix).copied())
        });
        match owner {
            Some(i) => owned[i].push(v),
            None => other.push(v),
        }
    }
    let layers = tree
        .iter()
        .zip(groups)
        .zip(owned)
        .map(|((l, g), variables)| LayerInfo {
            path: l.path.clone(),
            depth: l.depth,
            class_name: l.class_name.clone(),
            name: l.name.clone(),
            module: l.module.clone(),
            weights_group: g,
            parameters: variables.iter().map(|v| v.elements).sum(),
            variables,
            container: l.container,
            pointer: l.pointer.clone(),
        })
        .collect();
    (layers, other)
}

fn totals(layers: &[LayerInfo], other: &[Variable]) -> Totals {
    let vars = layers.iter().flat_map(|l| &l.variables);
    Totals {
        layers: layers.len(),
        variables: vars.clone().count(),
        parameters: vars.clone().map(|v| v.elements).sum(),
        bytes: vars.map(|v| v.bytes).sum(),
        other_variables: other.len(),
        other_bytes: other.iter().map(|v| v.bytes).sum(),
    }
}

/// Bytes as people read them: `812 B`, `20.4 KiB`, `45.2 MiB`.
fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A count with thousands separators: `4,049,571`.
fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A dtype and shape as people write them: `float32[3,3,3,32]`.
pub(crate) fn typed_shape(dtype: &str, shape: &[u64]) -> String {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    format!("{dtype}[{}]", dims.join(","))
}

fn shape(v: &Variable) -> String {
    typed_shape(&v.dtype, &v.shape)
}

/// A variable's name inside its layer: its path below `group` (the whole
/// path where there is no group, or for the model's own `vars`).
pub(crate) fn short<'a>(v: &'a Variable, group: Option<&str>) -> &'a str {
    match group {
        Some(g) if !g.is_empty() => v
            .path
            .strip_prefix(g)
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or(&v.path),
        _ => &v.path,
    }
}

impl Manifest {
    /// The human-readable tree `krepair inspect` prints.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let f = &self.file;
        out.push_str(&format!("{}: {}, {}", f.path, f.form, size(f.size)));
        if let Some(v) = &self.keras_version {
            out.push_str(&format!(", saved by Keras {v}"));
        }
        if let Some(d) = &self.date_saved {
            out.push_str(&format!(" on {d}"));
        }
        out.push('\n');
        self.members_text(&mut out);
        self.layers_text(&mut out);
        self.dry_runs_text(&mut out);
        out
    }

    /// The archive's members, one per line.
    fn members_text(&self, out: &mut String) {
        if !self.members.is_empty() {
            out.push_str("members:\n");
            let w = self.members.iter().map(|m| m.name.len()).max().unwrap_or(0);
            for m in &self.members {
                out.push_str(&format!("  {:<w$}  {:>10}", m.name, size(m.size)));
                if let (Some(c), Some(z)) = (&m.compression, m.compressed_size) {
                    out.push_str(&format!("  {c}"));
                    if c != "stored" {
                        out.push_str(&format!(" to {}", size(z)));
                    }
                }
                if let Some(crc) = &m.crc32 {
                    out.push_str(&format!("  crc32 {crc}"));
                }
                out.push('\n');
            }
        }
    }

    /// The layer tree with each layer's group and variables, then the
    /// variables no layer owns.
    fn layers_text(&self, out: &mut String) {
        if !self.layers.is_empty() {
            let t = &self.totals;
            out.push_str(&format!(
                "layers ({}, {} variables, {} parameters, {}):\n",
                t.layers - 1,
                count(t.variables as u64),
                count(t.parameters),
                size(t.bytes)
            ));
        }
        for l in &self.layers {
            let indent = "  ".repeat(l.depth + 1);
            let label = if l.depth == 0 {
                format!("{} `{}` (the model)", l.class_name, l.name)
            } else {
                format!("{} `{}`", l.class_name, l.name)
            };
            let group = match (&l.weights_group, l.depth) {
                (Some(g), 0) if g.is_empty() => "vars".to_string(),
                (Some(g), _) => g.clone(),
                (None, _) => "no weights group".into(),
            };
            out.push_str(&format!("{indent}{label}  [{group}]"));
            if l.parameters > 0 || !l.variables.is_empty() {
                out.push_str(&format!("  {} parameters", count(l.parameters)));
            }
            out.push('\n');
            if !l.variables.is_empty() {
                let vars: Vec<String> = l
                    .variables
                    .iter()
                    .map(|v| format!("{} {}", short(v, l.weights_group.as_deref()), shape(v)))
                    .collect();
                out.push_str(&format!("{indent}    {}\n", vars.join("  ")));
            }
        }
        if !self.other_variables.is_empty() {
            out.push_str(&format!(
                "{} ({} variables, {}):\n",
                if self.layers.is_empty() {
                    "variables"
                } else {
                    "other variables"
                },
                count(self.totals.other_variables as u64),
                size(self.totals.other_bytes)
            ));
            for v in &self.other_variables {
                out.push_str(&format!("  {}  {}\n", v.path, shape(v)));
            }
        }
    }

    /// What `krepair` and `krepair migrate` would do, from their dry runs.
    fn dry_runs_text(&self, out: &mut String) {
        for (what, r) in [
            ("krepair", &self.repair),
            ("krepair migrate", &self.migrate),
        ] {
            let Some(r) = r else { continue };
            let verdict = match r.outcome {
                crate::Outcome::WouldRepair => "would change it".to_string(),
                crate::Outcome::NothingToRepair => "has nothing to change".into(),
                crate::Outcome::Refused | crate::Outcome::Failed => format!(
                    "refuses it: {}",
                    r.error.as_ref().map_or("", |e| e.message.as_str())
                ),
                crate::Outcome::Repaired => "repaired it".into(),
            };
            out.push_str(&format!("{what} (dry run) {verdict}\n"));
            let body = r.human();
            // Its first line names the file and its last the dry run's
            // verdict, both said above.
            for line in body
                .lines()
                .skip(1)
                .filter(|l| !l.trim_start().starts_with("dry run:"))
            {
                out.push_str(&format!("  {line}\n"));
            }
        }
    }

    /// The manifest as pretty JSON, with a final newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a manifest serializes");
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn var(path: &str, n: u64) -> Variable {
        Variable {
            path: path.into(),
            dtype: "float32".into(),
            shape: vec![n],
            elements: n,
            bytes: 4 * n,
        }
    }

    #[test]
    fn variables_go_to_the_layer_that_owns_them() {
        let layer = |class: &str, name: &str| json!({"module": "keras.layers", "class_name": class, "config": {"name": name}});
        let inner = json!({"class_name": "Sequential", "config": {"name": "block", "layers": [
            layer("InputLayer", "in2"), layer("Dense", "d2")]}});
        let custom = json!({"module": "pkg", "class_name": "Scaler", "config": {"name": "s"}});
        let cfg = json!({"class_name": "Functional", "config": {"name": "m", "layers": [
            layer("InputLayer", "in"), layer("Dense", "d"), inner, custom, layer("Dense", "d1")]}});
        let tree = model::layer_tree(&cfg).unwrap();
        let groups: Vec<Option<String>> = tree.iter().map(|l| l.group.clone()).collect();
        assert_eq!(
            groups,
            vec![
                Some("".into()),
                Some("layers/input_layer".into()),
                Some("layers/dense".into()),
                Some("layers/sequential".into()),
                None,
                Some("layers/sequential/layers/dense".into()),
                Some("layers/scaler".into()),
                Some("layers/dense_1".into()),
            ]
        );
        let vars = vec![
            var("layers/dense/vars/0", 6),
            var("layers/dense/vars/1", 2),
            var("layers/dense_1/vars/0", 3),
            var("layers/scaler/norm/vars/0", 4),
            var("layers/sequential/layers/dense/vars/0", 5),
            var("layers/sequential/vars/0", 1),
            var("optimizer/vars/0", 1),
            var("vars/0", 7),
        ];
        let (layers, other) = assign(&tree, groups, vars);
        let got: Vec<(&str, Vec<&str>, u64)> = layers
            .iter()
            .map(|l| {
                (
                    l.path.as_str(),
                    l.variables.iter().map(|v| v.path.as_str()).collect(),
                    l.parameters,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("", vec!["vars/0"], 7),
                ("in", vec![], 0),
                ("d", vec!["layers/dense/vars/0", "layers/dense/vars/1"], 8),
                ("block", vec!["layers/sequential/vars/0"], 1),
                ("block/in2", vec![], 0),
                ("block/d2", vec!["layers/sequential/layers/dense/vars/0"], 5),
                ("s", vec!["layers/scaler/norm/vars/0"], 4),
                ("d1", vec!["layers/dense_1/vars/0"], 3),
            ]
        );
        assert_eq!(
            other.iter().map(|v| v.path.as_str()).collect::<Vec<_>>(),
            vec!["optimizer/vars/0"]
        );
        let t = totals(&layers, &other);
        assert_eq!(
            (t.layers, t.variables, t.parameters, t.bytes),
            (8, 7, 28, 112)
        );
        assert_eq!((t.other_variables, t.other_bytes), (1, 4));
    }

    #[test]
    fn sizes_and_counts_read_as_people_write_them() {
        assert_eq!(size(812), "812 B");
        assert_eq!(size(20_890), "20.4 KiB");
        assert_eq!(count(4_049_571), "4,049,571");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
    }
}
