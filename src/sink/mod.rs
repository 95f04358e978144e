//! The sink: apply the plan's edits to private copies, write the output
//! beside its final path ([`write`]), verify it by opening it again, and
//! only then rename it into place.
//!
//! No failure leaves a partial output: everything is written to a
//! temporary file (or directory) named `.krepair-*` in the output's
//! directory, registered with [`crate::os::cleanup`] and removed on any
//! error.

pub mod scan;
pub mod write;

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use crate::error::{Error, Result};
use crate::sink::write::Content;
use crate::source::keras::{self as archive, Form};
use crate::view::json_span::{self, Seg};
use crate::view::open::{self as inspect, Action, Inspection};
use scan::{finish_scan, Scan};

/// An output written beside its final path, not yet in place.
pub(crate) enum Staged {
    /// A zip file, and the archive it holds as opened once written (the
    /// verification reads it).
    File(
        tempfile::NamedTempFile,
        crate::os::cleanup::Registered,
        Box<Option<archive::Archive>>,
    ),
    Dir(tempfile::TempDir, crate::os::cleanup::Registered),
}

impl Staged {
    fn path(&self) -> &Path {
        match self {
            Staged::File(f, _, _) => f.path(),
            Staged::Dir(d, _) => d.path(),
        }
    }

    /// The archive a zip output holds, as opened once written (once).
    fn take_written(&mut self) -> Option<archive::Archive> {
        match self {
            Staged::File(_, _, written) => written.take(),
            Staged::Dir(..) => None,
        }
    }

    pub(crate) fn persist(self, input: &Path, output: &Path, force: bool) -> Result<()> {
        match self {
            Staged::File(f, _guard, _) => {
                let perms = fs::metadata(input)
                    .map_err(|e| Error::io(input, "stat", e))?
                    .permissions();
                fs::set_permissions(f.path(), perms)
                    .map_err(|e| Error::io(f.path(), "set permissions on", e))?;
                let res = if force {
                    f.persist(output)
                } else {
                    f.persist_noclobber(output)
                };
                res.map_err(|e| {
                    Error::io(output, "move the verified output into place at", e.error)
                })?;
            }
            Staged::Dir(d, _guard) => {
                let tmp = d.keep();
                let old = if force && fs::symlink_metadata(output).is_ok() {
                    let old = tmp.with_extension("old");
                    fs::rename(output, &old).map_err(|e| Error::io(output, "move aside", e))?;
                    Some(old)
                } else {
                    None
                };
                if let Err(e) = fs::rename(&tmp, output) {
                    let _ = fs::remove_dir_all(&tmp);
                    if let Some(old) = &old {
                        let _ = fs::rename(old, output);
                    }
                    return Err(Error::io(
                        output,
                        "move the verified output into place at",
                        e,
                    ));
                }
                if let Some(old) = old {
                    if old.is_dir() {
                        let _ = fs::remove_dir_all(&old);
                    } else {
                        let _ = fs::remove_file(&old);
                    }
                }
            }
        }
        if let Some(dir) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Make the rename durable.
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

/// Apply the plan and write the output to a temporary path in `parent`.
/// Returns the staged output and, for a zip, the scan of it (started as
/// soon as it is written, so hashing overlaps the sync and the
/// verification).
pub(crate) fn stage(
    insp: &mut Inspection,
    parent: &Path,
    output: &Path,
) -> Result<(Staged, Option<Scan>)> {
    if !insp.changes() {
        // Nothing to repair: an exact copy.
        return match insp.archive.form {
            Form::Zip | Form::Hdf5 => stage_zip(parent, output, |t, _| {
                exact_copy(&insp.archive, t.as_file()).map_err(|e| Error::io(output, "write", e))
            }),
            Form::Directory => stage_dir(parent, |d| write::copy_dir(&insp.archive, d)),
        };
    }
    // The edited text is parsed, and its layers read again, when the
    // output is verified (before it is kept).
    let new_config = edited_config(insp)?;
    let mut new = HashMap::new();
    new.insert(
        archive::CONFIG.to_string(),
        Content::Bytes(new_config.as_bytes()),
    );
    if insp.actions.is_empty() {
        // A migrated config and nothing else: the weights are copied as
        // they are.
        return stage_edited(&mut insp.archive, new, parent, output);
    }
    // model.weights.h5: edit the private mapping.
    let Some(w) = insp.weights.take() else {
        return Err(Error::Internal {
            path: insp.archive.path.clone(),
            problem: "layers to repair without open weights".into(),
        });
    };
    for a in &insp.actions {
        edit_weights(&w, a)?;
    }
    crate::progress::step("closing the edited weights");
    let mut image = w.finish()?;
    crate::progress::step("writing the archive");
    new.insert(archive::WEIGHTS.to_string(), Content::Image(&mut image));
    stage_edited(&mut insp.archive, new, parent, output)
}

/// Copy the whole input zip into `to`, from the archive's own open file
/// (the kernel copies it, as `cp` does).
fn exact_copy(input: &archive::Archive, to: &fs::File) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    let Some(mut from) = input.file().map(|f| &**f) else {
        return Err(std::io::Error::other("a zip archive without its file"));
    };
    from.seek(SeekFrom::Start(0))?;
    let mut to = to;
    std::io::copy(&mut from, &mut to).map(drop)
}

/// Write `archive` with the members in `new` replaced, as the archive's
/// own form, beside `output`.
fn stage_edited(
    archive: &mut archive::Archive,
    mut new: HashMap<String, Content<'_>>,
    parent: &Path,
    output: &Path,
) -> Result<(Staged, Option<Scan>)> {
    match archive.form {
        Form::Zip | Form::Hdf5 => stage_zip(parent, output, |t, follow| {
            let f = t
                .as_file()
                .try_clone()
                .map_err(|e| Error::io(t.path(), "open", e))?;
            write::write_zip(archive, &mut new, f, output, Some(follow)).map(drop)
        }),
        Form::Directory => stage_dir(parent, |d| write::write_dir(archive, &mut new, d)),
    }
}

/// config.json with the plan's values spliced in: the null mean/variance
/// of each embedded Normalization, and the null bin_boundaries (and
/// num_bins, and the num_tokens of a split-off CategoryEncoding) of each
/// Discretization. Every other byte is kept.
fn edited_config(insp: &Inspection) -> Result<String> {
    let mut edits = Vec::new();
    let mut members = json_span::Members::new(&insp.config_text, insp.config_keys_unique);
    for a in &insp.actions {
        for (pointer, key, text) in config_values(a) {
            let mut p = pointer.clone();
            p.push(Seg::Key("config".into()));
            let span = members.span(&p, key).map_err(|e| {
                p.push(Seg::Key(key.into()));
                Error::format(
                    &insp.archive.path,
                    crate::error::Malformed::Config,
                    format!("config.json at {}: {e}", json_span::path_string(&p)),
                )
            })?;
            edits.push((span, text));
        }
    }
    Ok(json_span::splice(&insp.config_text, edits))
}

/// The values one action writes into config.json: (layer entry, key in
/// its config, JSON text).
fn config_values(a: &Action) -> Vec<(&Vec<Seg>, &'static str, String)> {
    match a {
        Action::EmbedConfig {
            pointer,
            mean,
            variance,
            ..
        } => vec![
            (pointer, "mean", mean.to_json_text()),
            (pointer, "variance", variance.to_json_text()),
        ],
        Action::EmbedBoundaries {
            pointer,
            boundaries,
            encoding,
            ..
        } => {
            let mut v = vec![
                (pointer, "bin_boundaries", boundaries.to_json_text()),
                (pointer, "num_bins", "null".to_string()),
            ];
            if let Some(e) = encoding {
                v.push((e, "num_tokens", (boundaries.data.len() + 1).to_string()));
            }
            v
        }
        _ => Vec::new(),
    }
}

/// Apply one action's edit to the weights' private mapping.
fn edit_weights(w: &crate::weights::Weights, a: &Action) -> Result<()> {
    match a {
        Action::EmbedConfig { group, .. } => {
            for ds in ["0", "1", "2"] {
                w.unlink(group, ds)?;
            }
        }
        Action::EmbedBoundaries { group, .. } => w.unlink(group, "0")?,
        Action::WriteVariables {
            group,
            mean,
            variance,
        } => {
            w.write_f32(&format!("{group}/0"), mean)?;
            w.write_f32(&format!("{group}/1"), variance)?;
        }
        Action::Renamed { .. } => {}
        Action::DropOptimizerState { group, count } => {
            for i in 0..*count {
                w.unlink(group, &i.to_string())?;
            }
        }
        Action::OptimizerVariables {
            group,
            count,
            learning_rate,
            drop_slots,
        } => {
            if *drop_slots {
                for i in 1..*count {
                    w.unlink(group, &i.to_string())?;
                }
            } else if learning_rate.is_some() {
                // Make room for the learning rate at 1.
                for i in (1..*count).rev() {
                    w.rename(group, &i.to_string(), &(i + 1).to_string())?;
                }
            }
            if let Some(lr) = learning_rate {
                w.create_scalar_f32(group, "1", *lr)?;
            }
        }
    }
    Ok(())
}

fn tmp_err(parent: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(parent, "create a temporary file in", e)
}

/// A zip output: a `.krepair-*.tmp` file in `parent`, registered for
/// removal, filled by `write`, and hashed on the other core as it is
/// written (as far as `write` says what is final) and while it is synced.
fn stage_zip(
    parent: &Path,
    output: &Path,
    write: impl FnOnce(&tempfile::NamedTempFile, &crate::hash::Follow) -> Result<()>,
) -> Result<(Staged, Option<Scan>)> {
    let t = tempfile::Builder::new()
        .prefix(&crate::os::cleanup::prefix())
        .suffix(".tmp")
        .tempfile_in(parent)
        .map_err(tmp_err(parent))?;
    let g = crate::os::cleanup::register(t.path());
    // Every later handle on the output is a duplicate of this one: it is
    // created once and opened once more, for nothing.
    let dup = |t: &tempfile::NamedTempFile, op| {
        t.as_file()
            .try_clone()
            .map_err(|e| Error::io(t.path(), op, e))
    };
    let (follow, handle) = crate::hash::follow_open(dup(&t, "read")?, t.path())?;
    let scan = Scan {
        handle: Some(handle),
        stop: Default::default(),
        follow: Some(follow.clone()),
    };
    write(&t, &follow)?;
    let written = dup(&t, "open")
        .and_then(|f| archive::Archive::open_file(t.path(), f))
        .map_err(|e| Error::Verify {
            path: output.to_path_buf(),
            problem: e.to_string(),
        })?;
    let len = t
        .as_file()
        .metadata()
        .map_err(|e| Error::io(t.path(), "stat", e))?
        .len();
    follow.finish(
        len,
        written
            .member(archive::WEIGHTS)
            .and_then(|m| m.stored_at.clone()),
    );
    let scan = Some(scan);
    crate::progress::step("syncing the output");
    t.as_file()
        .sync_all()
        .map_err(|e| Error::io(output, "sync", e))?;
    crate::progress::step("synced");
    Ok((Staged::File(t, g, Box::new(Some(written))), scan))
}

/// A directory output: a `.krepair-*` directory in `parent`, registered
/// for removal, filled (and synced file by file) by `write`.
fn stage_dir(
    parent: &Path,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<(Staged, Option<Scan>)> {
    let d = tempfile::Builder::new()
        .prefix(&crate::os::cleanup::prefix())
        .tempdir_in(parent)
        .map_err(tmp_err(parent))?;
    let g = crate::os::cleanup::register(d.path());
    write(d.path())?;
    Ok((Staged::Dir(d, g), None))
}

/// Re-open the staged output and check it: it parses, has the same
/// members in the same order, the same Keras version, the same layers, and
/// inspecting it again plans nothing. Returns the output's sha256 (a zip)
/// and its members.
pub(crate) fn verify(
    staged: &mut Staged,
    scan: Option<Scan>,
    before: &Inspection,
    policy: crate::plan::Policy,
    migrate: bool,
    load_in: u32,
    output: &Path,
) -> Result<(Option<String>, Vec<archive::Member>)> {
    let fail = |problem: String| Error::Verify {
        path: output.to_path_buf(),
        problem,
    };
    let check = inspect::Check::VERIFY
        .migrating(migrate)
        .loading_in(load_in)
        .of_h5(before.from_h5);
    // A zip output is read through the handle it was opened with once
    // written; a directory is opened here.
    let after = match staged.take_written() {
        Some(written) => inspect::inspect_walked(written, policy, check, None),
        None => inspect::inspect(staged.path(), policy, check),
    }
    .map_err(|e| fail(e.to_string()))?;
    same_model(before, &after).map_err(fail)?;
    // The embedded values must read back bit for bit from the new config
    // (each value parsed on its own: the tree of a large config is ten
    // times its size).
    let mut members = json_span::Members::new(&after.config_text, after.config_keys_unique);
    for a in &before.actions {
        reads_back(a, &after.config_text, &mut members).map_err(fail)?;
    }
    for (b, a) in before.archive.members.iter().zip(&after.archive.members) {
        let rewritten = (before.changes() && b.name == archive::CONFIG)
            || (!before.actions.is_empty() && b.name == archive::WEIGHTS);
        if !rewritten && (b.size, b.crc32) != (a.size, a.crc32) {
            return Err(fail(format!(
                "member `{}` changed in what should be an exact copy",
                b.name
            )));
        }
    }
    crate::progress::step("waiting for the output's hash");
    let sha = finish_scan(scan, &after.archive).map_err(|e| fail(e.to_string()))?;
    Ok((sha, after.archive.members.clone()))
}

/// The output, inspected again (`after`), is the input's model with
/// nothing left to do: the same members, Keras version and layers, no
/// refusal, no migration rewrite or repair still planned.
fn same_model(before: &Inspection, after: &Inspection) -> std::result::Result<(), String> {
    if !after.migration.is_empty() {
        return Err(format!(
            "{} migration rewrite(s) still planned after the migration",
            after.migration.len()
        ));
    }
    let names = |i: &Inspection| {
        i.archive
            .members
            .iter()
            .map(|m| m.name.clone())
            .collect::<Vec<_>>()
    };
    if names(after) != names(before) {
        return Err("the member list changed".into());
    }
    if after.keras_version != before.keras_version {
        return Err("keras_version changed".into());
    }
    if after.layers.len() != before.layers.len() {
        return Err("the number of Normalization layers changed".into());
    }
    if after.discretizations.len() != before.discretizations.len() {
        return Err("the number of Discretization layers changed".into());
    }
    if let Some((layer, reason)) = after.refusal() {
        return Err(format!("layer `{layer}`: {reason}"));
    }
    if !after.actions.is_empty() {
        return Err(format!(
            "{} change(s) still planned after the repair",
            after.actions.len()
        ));
    }
    for (b, a) in before.layers.iter().zip(&after.layers) {
        if b.config_path != a.config_path {
            return Err(format!(
                "layer `{}` became `{}`",
                b.config_path, a.config_path
            ));
        }
    }
    Ok(())
}

/// What action `a` embedded reads back from the output's config text
/// (`members` walks it): the same float32 values to the bit, and a
/// split-off CategoryEncoding's `num_tokens`.
fn reads_back(
    a: &Action,
    text: &str,
    members: &mut json_span::Members,
) -> std::result::Result<(), String> {
    let embedded = match a {
        Action::EmbedConfig {
            pointer,
            mean,
            variance,
            ..
        } => vec![(pointer, "mean", mean), (pointer, "variance", variance)],
        Action::EmbedBoundaries {
            pointer,
            boundaries,
            encoding,
            ..
        } => {
            if let Some(e) = encoding {
                let mut p = e.clone();
                p.push(Seg::Key("config".into()));
                let back = members
                    .span(&p, "num_tokens")
                    .ok()
                    .and_then(|span| text.get(span))
                    .and_then(|text| text.trim().parse::<usize>().ok());
                if back != Some(boundaries.data.len() + 1) {
                    return Err(format!(
                        "num_tokens at {}/num_tokens does not read back as {}",
                        json_span::path_string(&p),
                        boundaries.data.len() + 1
                    ));
                }
            }
            vec![(pointer, "bin_boundaries", boundaries)]
        }
        _ => Vec::new(),
    };
    for (pointer, key, t) in embedded {
        let mut p = pointer.clone();
        p.push(Seg::Key("config".into()));
        let back = members
            .span(&p, key)
            .ok()
            .and_then(|span| text.get(span))
            .and_then(|text| {
                let mut d = serde_json::Deserializer::from_str(text);
                crate::passes::stats::nested_json::deserialize(&mut d).ok()
            });
        if !back.is_some_and(|b| b.bits_eq(t)) {
            return Err(format!(
                "{key} at {}/{key} does not read back as the embedded float32 values",
                json_span::path_string(&p)
            ));
        }
    }
    Ok(())
}
