//! A legacy HDF5 model file (`model.save("m.h5")`, and what tf.keras
//! 2.12 and older write under a `.keras` name) as the `.keras` archive
//! the rest of the pipeline reads: `config.json` from the root's
//! `model_config` (and `compile_config` from its `training_config`),
//! `metadata.json` with its `keras_version`, and `model.weights.h5` in
//! Keras 3's layout, each weight copied bit for bit from where the
//! legacy file keeps it ([`crate::passes::migrate::h5_layout`]).
//!
//! The archive is written into a temporary directory (removed when the
//! [`Converted`] is dropped, or by the Ctrl-C handler) and opened as any
//! archive; [`super::open::Check::from_h5`] tells the migration pass that
//! its config is in the legacy form whatever Keras 2 wrote it.

use std::io::Write;
use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Malformed, Result, Verb};
use crate::passes::migrate::{self, Rewrite};
use crate::plan::{finding, Code, Finding, Rule};
use crate::source::keras::{self as archive, Archive};
use crate::weights::legacy::write_keras3;
use crate::weights::Weights;

/// A legacy HDF5 model file, converted (the archive made from it is
/// handed out beside this, which keeps its temporary directory).
pub struct Converted {
    /// The `keras_version` the file names.
    pub keras_version: String,
    /// The rewrites of the conversion (`hdf5-model` per layer with
    /// weights, `training-config`).
    pub rewrites: Vec<Rewrite>,
    /// What the conversion leaves behind (the optimizer's state).
    pub findings: Vec<Finding>,
    // Dropped last: the archive's file is open until then.
    _dir: tempfile::TempDir,
    _guard: crate::os::cleanup::Registered,
}

impl Converted {
    /// The temporary directory the archive is in.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }
}

/// Convert the legacy HDF5 model file at `input` (never written): the
/// archive made from it, opened, and what the conversion did.
pub fn convert(input: &Path) -> Result<(Archive, Converted)> {
    let refuse = |layer: &str, reason: String| Error::Refused {
        path: input.to_path_buf(),
        verb: Verb::Migrate,
        layer: if layer.is_empty() {
            "(the model)".into()
        } else {
            layer.to_string()
        },
        reason,
    };
    crate::progress::step("reading the legacy HDF5 model file");
    let f = std::fs::File::open(input).map_err(|e| Error::io(input, "open", e))?;
    let len = f.metadata().map_err(|e| Error::io(input, "stat", e))?.len();
    let label = input.display().to_string();
    let w = Weights::open_at(&f, 0, len, &label, false)?;
    w.check_structure()?;
    let m = w.legacy_model()?;
    let bad = |what: String| Error::format(input, Malformed::Config, what);
    let keras_version = m.keras_version.clone().ok_or_else(|| {
        refuse("", "the file names no keras_version (Keras 1 wrote such files): krepair migrates what Keras 2, tf.keras and Keras 3 wrote".into())
    })?;
    let keras3 = keras_version.starts_with("3.");
    if !keras_version.starts_with("2.") && !keras3 {
        return Err(refuse(
            "",
            format!("written by Keras {keras_version}: krepair migrate converts the HDF5 model files of Keras 2, tf.keras (2.x) and Keras 3"),
        ));
    }
    let mut root: Value =
        serde_json::from_str(&m.model_config).map_err(|e| bad(format!("model_config: {e}")))?;
    if migrate::model_layers(&root).is_none() {
        return Err(refuse(
            "",
            format!(
                "the model is a `{}`, not a Sequential or Functional model: no migration rule for it",
                root.get("class_name").and_then(Value::as_str).unwrap_or("?")
            ),
        ));
    }
    let layout = migrate::h5_layout(&root, &m.layers, &m.top_level_weights, keras3)
        .map_err(|r| refuse(&r.layer, r.reason))?;
    let mut rewrites = layer_rewrites(&layout, &m.layers);
    let mut findings = Vec::new();
    let mut layout = layout;
    if let Some(t) = &m.training_config {
        let t: Value = serde_json::from_str(t).map_err(|e| bad(format!("training_config: {e}")))?;
        let (cc, rw) =
            migrate::compile_config_of(&t, keras3).map_err(|r| refuse(&r.layer, r.reason))?;
        let optimizer = match cc["optimizer"]["module"].as_str() {
            _ if keras3 => Optimizer::Keras3,
            Some("keras.optimizers") => Optimizer::TfKeras,
            _ => Optimizer::Legacy,
        };
        root["compile_config"] = cc;
        rewrites.push(rw);
        optimizer_state(
            &m.optimizer_weights,
            optimizer,
            &mut layout,
            &mut rewrites,
            &mut findings,
        );
    }
    let dir = tempfile::Builder::new()
        .prefix(&crate::os::cleanup::prefix())
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), "create a temporary directory", e))?;
    let guard = crate::os::cleanup::register(dir.path());
    crate::progress::step("writing the weights in Keras 3's layout");
    let weights_path = dir.path().join(archive::WEIGHTS);
    write_keras3(&w, &layout.groups, &layout.moves, &weights_path)?;
    drop(w);
    crate::progress::step("zipping the archive made from it");
    let zip_path = dir.path().join("model.keras");
    let config = serde_json::to_string(&root).map_err(|e| bad(e.to_string()))?;
    let metadata = serde_json::json!({ "keras_version": keras_version }).to_string();
    write_zip(&zip_path, &metadata, &config, &weights_path)?;
    std::fs::remove_file(&weights_path).map_err(|e| Error::io(&weights_path, "remove", e))?;
    let archive = Archive::open(&zip_path)?;
    Ok((
        archive,
        Converted {
            keras_version,
            rewrites,
            findings,
            _dir: dir,
            _guard: guard,
        },
    ))
}

/// One `hdf5-model` rewrite per layer with weights: its legacy dataset
/// paths, and where each went.
fn layer_rewrites(layout: &migrate::H5Layout, layers: &[(String, Vec<String>)]) -> Vec<Rewrite> {
    let mut out = Vec::new();
    for (name, _) in &layout.layers {
        let Some((_, weights)) = layers.iter().find(|(n, _)| n == name) else {
            continue;
        };
        let prefix = format!("model_weights/{name}/");
        let to: Vec<Value> = layout
            .moves
            .iter()
            .filter(|(from, _)| from.starts_with(&prefix))
            .map(|(_, to)| Value::from(to.as_str()))
            .collect();
        out.push(Rewrite {
            code: Rule::Hdf5Model,
            layer: name.clone(),
            key: "weights".into(),
            old: weights
                .iter()
                .map(|w| Value::from(format!("{prefix}{w}")))
                .collect(),
            new: Some(Value::Array(to)),
        });
    }
    out
}

/// Whose optimizer a compiled legacy file holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Optimizer {
    /// A tf.keras legacy optimizer (`keras.optimizers.legacy`).
    Legacy,
    /// tf.keras 2.11+'s `keras.optimizers`.
    TfKeras,
    /// Keras 3's.
    Keras3,
}

/// The optimizer's saved variables. tf.keras 2.11 and later (the
/// optimizers of `keras.optimizers`) save them in the order their
/// `.keras` archives keep under `optimizer/vars` (`iteration`, then each
/// slot of each variable: `Adam/m/dense/kernel:0`, `Adam/v/dense/kernel:0`,
/// ...): they go there, and the optimizer rules lay them out for Keras 3
/// as for any tf.keras archive. Keras 3 saves `optimizer.variables`
/// (`adam/iteration`, `adam/learning_rate`, then the slots), the list its
/// `.keras` archives keep under `optimizer/vars`: they go there as they
/// are. A legacy optimizer's (`Adam/iter:0`, `training/Adam/Variable:0`)
/// are not carried over.
fn optimizer_state(
    names: &[String],
    optimizer: Optimizer,
    layout: &mut migrate::H5Layout,
    rewrites: &mut Vec<Rewrite>,
    findings: &mut Vec<Finding>,
) {
    if names.is_empty() || optimizer == Optimizer::Legacy {
        // A legacy optimizer: the optimizer rules say it starts afresh
        // (optimizer-state-not-saved).
        return;
    }
    let first = names.first().map(String::as_str).unwrap_or("");
    let (iteration_first, layout_of) = match optimizer {
        Optimizer::Keras3 => (
            first == "iteration" || first.ends_with("/iteration"),
            "Keras 3's optimizers (iteration)",
        ),
        _ => (
            first == "iteration:0",
            "tf.keras 2.11+'s optimizers (iteration:0)",
        ),
    };
    if !iteration_first {
        findings.push(finding(
            Code::OptimizerStateDropped,
            format!("the legacy file's {} optimizer weights do not start with the iteration count, the layout of {layout_of}: they are not carried over, and the migrated model is compiled with the same optimizer and hyperparameters, starting afresh from step 0", names.len()),
        ));
        return;
    }
    layout.groups.push("optimizer".into());
    layout.groups.push("optimizer/vars".into());
    let mut to = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let dst = format!("optimizer/vars/{i}");
        layout
            .moves
            .push((format!("optimizer_weights/{n}"), dst.clone()));
        to.push(Value::from(dst));
    }
    rewrites.push(Rewrite {
        code: Rule::Hdf5Model,
        layer: String::new(),
        key: "optimizer_weights".into(),
        old: names
            .iter()
            .map(|n| Value::from(format!("optimizer_weights/{n}")))
            .collect(),
        new: Some(Value::Array(to)),
    });
}

/// A `.keras` zip at `path`: the three members, stored, in the order
/// Keras 3 writes them.
fn write_zip(path: &Path, metadata: &str, config: &str, weights: &Path) -> Result<()> {
    use zip::write::SimpleFileOptions;
    let io = |e: std::io::Error| Error::io(path, "write", e);
    let zerr = |e: zip::result::ZipError| Error::io(path, "write", std::io::Error::other(e));
    let f = std::fs::File::create(path).map_err(io)?;
    let mut z = zip::ZipWriter::new(std::io::BufWriter::new(f));
    let size = std::fs::metadata(weights)
        .map_err(|e| Error::io(weights, "stat", e))?
        .len();
    let opts = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(size >= u32::MAX as u64);
    z.start_file(archive::METADATA, opts).map_err(zerr)?;
    z.write_all(metadata.as_bytes()).map_err(io)?;
    z.start_file(archive::CONFIG, opts).map_err(zerr)?;
    z.write_all(config.as_bytes()).map_err(io)?;
    z.start_file(archive::WEIGHTS, opts).map_err(zerr)?;
    let mut w = std::fs::File::open(weights).map_err(|e| Error::io(weights, "open", e))?;
    std::io::copy(&mut w, &mut z).map_err(io)?;
    z.finish().map_err(zerr)?.flush().map_err(io)?;
    Ok(())
}
