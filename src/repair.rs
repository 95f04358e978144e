//! The single-archive pipeline: check the paths, inspect, apply the plan to
//! private copies, write the output beside its final path, verify it by
//! inspecting it again, and only then rename it into place.
//!
//! No failure leaves a partial output: everything is written to a
//! temporary file (or directory) named `.krepair-*` in the output's
//! directory, which is removed on any error.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::archive::{self, Content, Form};
use crate::error::{Error, Result};
use crate::inspect::{self, Action, Inspection};
use crate::json_span::{self, Seg};
use crate::plan::Policy;
use crate::report::{
    ErrorInfo, FileInfo, MemberReport, Outcome, Report, Status, Tool, SCHEMA_VERSION,
};

/// What to do with one archive.
#[derive(Clone, Debug)]
pub struct Options {
    /// The archive to read (never written).
    pub input: PathBuf,
    /// Where to write the repaired archive (None for a dry run).
    pub output: Option<PathBuf>,
    /// `--stats`.
    pub policy: Policy,
    /// Replace an existing output.
    pub force: bool,
    /// Also migrate a tf.keras 2.x archive to Keras 3 (`krepair migrate`).
    pub migrate: bool,
}

/// The result of one run: always a report, and the error if the job failed.
pub struct Run {
    /// The audit report.
    pub report: Report,
    /// Set when no (complete) output could be produced.
    pub error: Option<Error>,
}

fn empty_report(opts: &Options) -> Report {
    Report {
        schema_version: SCHEMA_VERSION,
        tool: Tool {
            name: "krepair",
            version: env!("CARGO_PKG_VERSION"),
        },
        policy: opts.policy,
        dry_run: opts.output.is_none(),
        input: FileInfo {
            path: opts.input.display().to_string(),
            form: Form::Zip,
            size: 0,
            sha256: None,
        },
        output: None,
        keras_version: None,
        outcome: Outcome::Failed,
        error: None,
        members: Vec::new(),
        layers: Vec::new(),
        discretizations: Vec::new(),
        findings: Vec::new(),
        migration: Vec::new(),
    }
}

impl Run {
    /// A run that failed with `e` before (or while) producing a report.
    pub fn failed(opts: &Options, e: Error) -> Run {
        Run::with_error(empty_report(opts), e)
    }

    fn with_error(mut report: Report, e: Error) -> Run {
        report.outcome = if matches!(e, Error::Refused { .. }) {
            Outcome::Refused
        } else {
            Outcome::Failed
        };
        report.output = None;
        report.error = Some(ErrorInfo {
            code: e.code(),
            kind: e.kind(),
            message: e.to_string(),
        });
        Run {
            report,
            error: Some(e),
        }
    }

    /// A run as a worker process reported it.
    pub fn from_report(report: Report) -> Run {
        let error = report.error.as_ref().map(|e| Error::Reported {
            code: e.code,
            kind: e.kind,
            message: e.message.clone(),
        });
        Run { report, error }
    }
}

/// Repair (or, without an output, inspect) one archive.
pub fn run(opts: &Options) -> Run {
    let mut report = empty_report(opts);
    match run_inner(opts, &mut report) {
        Ok(()) => Run {
            report,
            error: None,
        },
        Err(e) => Run::with_error(report, e),
    }
}

/// Refuse outputs that would overwrite the input or an existing file (a
/// dry run given OUTPUT checks it too: it fails where the real run would).
pub fn check_output(input: &Path, output: &Path, force: bool) -> Result<()> {
    let out_err = |problem: &str| Error::Output {
        path: output.to_path_buf(),
        problem: problem.to_string(),
    };
    let input_real = fs::canonicalize(input).map_err(|e| Error::io(input, "open", e))?;
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let parent_real =
        fs::canonicalize(&parent).map_err(|e| Error::io(&parent, "use the output directory", e))?;
    if !parent_real.is_dir() {
        return Err(out_err("the output's parent is not a directory"));
    }
    let name = output
        .file_name()
        .ok_or_else(|| out_err("the output path has no file name"))?;
    let out_real = parent_real.join(name);
    let out_resolved = fs::canonicalize(&out_real).unwrap_or(out_real.clone());
    if out_resolved == input_real || out_real == input_real || input_real.starts_with(&out_resolved)
    {
        return Err(out_err(
            "the output is the input; krepair never writes its input",
        ));
    }
    if out_resolved.starts_with(&input_real) {
        return Err(out_err("the output is inside the input archive directory"));
    }
    if fs::symlink_metadata(output).is_ok() && !force {
        return Err(out_err("already exists (pass --force to replace it)"));
    }
    Ok(())
}

/// The report's member list, from the input as inspected.
fn fill_members(report: &mut Report, archive: &archive::Archive) {
    report.members = archive
        .members
        .iter()
        .filter(|m| !m.name.ends_with('/'))
        .map(|m| MemberReport {
            name: m.name.clone(),
            size_before: m.size,
            crc32_before: m.crc32.map(crc_hex),
            size_after: None,
            crc32_after: None,
            changed: false,
        })
        .collect();
}

/// CRC-32 as the report writes it.
fn crc_hex(c: u32) -> String {
    format!("{c:08x}")
}

/// A file's sha256 and its weights' CRC-32.
type ScanResult = Result<archive::Scanned>;

/// A background scan of a zip file: its sha256 and its weights' CRC-32.
/// Dropping it unjoined (an early error) stops the thread at its next
/// window, so a failed archive does not keep a core busy hashing.
struct Scan {
    handle: Option<std::thread::JoinHandle<ScanResult>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// A scan that follows the output as it is written.
    follow: Option<archive::Follow>,
}

impl Drop for Scan {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(f) = &self.follow {
            f.stop();
        }
    }
}

/// Hash a zip file on the other core, checking the CRC-32 of its stored
/// weights member in the same pass (the inspection maps those bytes but
/// does not read them all).
fn scan_in_background(archive: &archive::Archive) -> Option<Scan> {
    if archive.form != Form::Zip {
        return None;
    }
    let path = archive.path.clone();
    let range = archive
        .member(archive::WEIGHTS)
        .and_then(|m| m.stored_at.clone());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    Some(Scan {
        handle: Some(std::thread::spawn(move || {
            archive::scan_file(&path, range, &flag)
        })),
        stop,
        follow: None,
    })
}

/// Join a scan: the file's sha256, after checking the weights' CRC-32.
fn finish_scan(scan: Option<Scan>, archive: &archive::Archive) -> Result<Option<String>> {
    let Some(mut scan) = scan else {
        return Ok(None);
    };
    let Some(handle) = scan.handle.take() else {
        return Ok(None);
    };
    let (sha, crc) = handle.join().unwrap_or_else(|_| {
        Err(Error::Internal {
            path: archive.path.clone(),
            problem: "internal error: the hashing thread panicked".into(),
        })
    })?;
    let m = archive.member(archive::WEIGHTS);
    if let (Some(crc), Some(m)) = (crc, m) {
        if Some(crc) != m.crc32 {
            return Err(Error::format(
                format!("{}!{}", archive.path.display(), archive::WEIGHTS),
                crate::error::Malformed::Container,
                "invalid checksum: the stored bytes do not match the zip's CRC-32",
            ));
        }
    }
    Ok(Some(sha))
}

fn run_inner(opts: &Options, report: &mut Report) -> Result<()> {
    if let Some(out) = &opts.output {
        check_output(&opts.input, out, opts.force)?;
    }
    let check = if opts.output.is_some() {
        inspect::Check::REPAIR
    } else {
        inspect::Check::DRY_RUN
    }
    .migrating(opts.migrate);
    // The structure of the weights is walked on the other core while the
    // archive is read (a dry run too), and a repair hashes the whole input
    // there as well; a dry run reads only what it needs.
    let a = archive::Archive::open(&opts.input)?;
    let walk = a.in_place(archive::WEIGHTS).map(|(file, range)| {
        let label = format!("{}!{}", opts.input.display(), archive::WEIGHTS);
        inspect::Walk::spawn(file, range, label)
    });
    let input_scan = opts.output.as_ref().and_then(|_| scan_in_background(&a));
    drop(a);
    // The weights are opened for editing only once the walk has passed.
    let mut insp = inspect::inspect_walked(&opts.input, opts.policy, check, walk)?;
    report.input.form = insp.archive.form;
    report.input.size = match insp.archive.form {
        Form::Zip => fs::metadata(&opts.input)
            .map_err(|e| Error::io(&opts.input, "stat", e))?
            .len(),
        Form::Directory => insp.archive.members.iter().map(|m| m.size).sum(),
    };
    report.keras_version = insp.keras_version.clone();
    report.findings = insp.findings.clone();
    report.layers = insp.layers.clone();
    report.discretizations = insp.discretizations.clone();
    report.migration = insp.migration.clone();
    let refusal = insp.refusal().map(|(layer, reason)| Error::Refused {
        path: opts.input.clone(),
        layer: layer.to_string(),
        reason: reason.to_string(),
    });
    let Some(output) = opts.output.clone() else {
        fill_members(report, &insp.archive);
        if let Some(e) = refusal {
            return Err(e);
        }
        report.outcome = if insp.changes() {
            Outcome::WouldRepair
        } else {
            Outcome::NothingToRepair
        };
        return Ok(());
    };
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let changed = insp.changes();
    crate::worker::step("writing the output");
    let staged = if refusal.is_none() {
        Some(stage(&mut insp, &parent, &output))
    } else {
        None
    };

    // The input's bytes are checked before anything is reported or kept.
    crate::worker::step("waiting for the input's hash");
    report.input.sha256 = finish_scan(input_scan, &insp.archive)?;
    fill_members(report, &insp.archive);
    if let Some(e) = refusal {
        return Err(e);
    }
    let (staged, output_scan) = staged.expect("staged unless refused")?;
    let exact_zip_copy = !changed && insp.archive.form == Form::Zip;
    let (output_sha, after) = if exact_zip_copy {
        // Nothing to repair: the copy is verified by its hash, which must
        // be the input's, so it inspects exactly as the input did.
        let sha = finish_scan(output_scan, &insp.archive)?;
        if sha.is_none() || sha != report.input.sha256 {
            return Err(Error::Verify {
                path: output.clone(),
                problem: "the copy differs from the input".into(),
            });
        }
        (sha, insp.archive.members.clone())
    } else {
        crate::worker::step("verifying the output");
        verify(&staged, output_scan, &insp, opts, &output)?
    };
    crate::worker::step("renaming the output into place");
    staged.persist(&opts.input, &output, opts.force)?;

    for l in &mut report.layers {
        if l.status == Status::WouldRepair {
            l.status = Status::Repaired;
        }
    }
    for l in &mut report.discretizations {
        if l.status == Status::WouldRepair {
            l.status = Status::Repaired;
        }
    }
    for m in &mut report.members {
        let a = after.iter().find(|a| a.name == m.name);
        m.size_after = a.map(|x| x.size);
        m.crc32_after = a.and_then(|x| x.crc32).map(crc_hex);
        m.changed = m.size_after != Some(m.size_before) || m.crc32_after != m.crc32_before;
    }
    report.output = Some(FileInfo {
        path: output.display().to_string(),
        form: insp.archive.form,
        size: match insp.archive.form {
            Form::Zip => fs::metadata(&output)
                .map_err(|e| Error::io(&output, "stat", e))?
                .len(),
            Form::Directory => after.iter().map(|x| x.size).sum(),
        },
        sha256: output_sha,
    });
    report.outcome = if changed {
        Outcome::Repaired
    } else {
        Outcome::NothingToRepair
    };
    Ok(())
}

/// An output written beside its final path, not yet in place.
enum Staged {
    File(tempfile::NamedTempFile, crate::cleanup::Registered),
    Dir(tempfile::TempDir, crate::cleanup::Registered),
}

impl Staged {
    fn path(&self) -> &Path {
        match self {
            Staged::File(f, _) => f.path(),
            Staged::Dir(d, _) => d.path(),
        }
    }

    fn persist(self, input: &Path, output: &Path, force: bool) -> Result<()> {
        match self {
            Staged::File(f, _guard) => {
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
fn stage(insp: &mut Inspection, parent: &Path, output: &Path) -> Result<(Staged, Option<Scan>)> {
    let form = insp.archive.form;
    if !insp.changes() {
        // Nothing to repair: an exact copy.
        return match form {
            Form::Zip => stage_zip(parent, output, |t, _| {
                fs::copy(&insp.archive.path, t.path())
                    .map(drop)
                    .map_err(|e| Error::io(output, "write", e))
            }),
            Form::Directory => stage_dir(parent, |d| archive::copy_dir(&insp.archive, d)),
        };
    }

    // config.json: replace the null mean/variance of each embedded
    // Normalization, and the null bin_boundaries (and num_bins, and the
    // num_tokens of a split-off CategoryEncoding) of each Discretization.
    let mut edits = Vec::new();
    let mut members = json_span::Members::new(&insp.config_text, insp.config_keys_unique);
    for a in &insp.actions {
        let values: Vec<(&Vec<Seg>, &str, String)> = match a {
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
        };
        for (pointer, key, text) in values {
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
    // The edited text is parsed, and its layers read again, when the
    // output is verified (before it is kept).
    let new_config = json_span::splice(&insp.config_text, edits);

    let mut new = HashMap::new();
    new.insert(
        archive::CONFIG.to_string(),
        Content::Bytes(new_config.as_bytes()),
    );
    if insp.actions.is_empty() {
        // A migrated config and nothing else: the weights are copied as
        // they are.
        return match form {
            Form::Zip => stage_zip(parent, output, |t, follow| {
                let f = t.reopen().map_err(|e| Error::io(t.path(), "open", e))?;
                archive::write_zip(&mut insp.archive, &mut new, f, output, Some(follow)).map(drop)
            }),
            Form::Directory => {
                stage_dir(parent, |d| archive::write_dir(&insp.archive, &mut new, d))
            }
        };
    }
    // model.weights.h5: edit the private mapping.
    let Some(w) = insp.weights.take() else {
        return Err(Error::Internal {
            path: insp.archive.path.clone(),
            problem: "layers to repair without open weights".into(),
        });
    };
    for a in &insp.actions {
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
    }
    crate::worker::step("closing the edited weights");
    let mut image = w.finish()?;
    crate::worker::step("writing the archive");
    new.insert(archive::WEIGHTS.to_string(), Content::Image(&mut image));
    match form {
        Form::Zip => stage_zip(parent, output, |t, follow| {
            let f = t.reopen().map_err(|e| Error::io(t.path(), "open", e))?;
            archive::write_zip(&mut insp.archive, &mut new, f, output, Some(follow)).map(drop)
        }),
        Form::Directory => stage_dir(parent, |d| archive::write_dir(&insp.archive, &mut new, d)),
    }
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
    write: impl FnOnce(&tempfile::NamedTempFile, &archive::Follow) -> Result<()>,
) -> Result<(Staged, Option<Scan>)> {
    let t = tempfile::Builder::new()
        .prefix(&crate::cleanup::prefix())
        .suffix(".tmp")
        .tempfile_in(parent)
        .map_err(tmp_err(parent))?;
    let g = crate::cleanup::register(t.path());
    let (follow, handle) = archive::follow_file(t.path())?;
    let scan = Scan {
        handle: Some(handle),
        stop: Default::default(),
        follow: Some(follow.clone()),
    };
    write(&t, &follow)?;
    let written = archive::Archive::open(t.path()).map_err(|e| Error::Verify {
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
    crate::worker::step("syncing the output");
    t.as_file()
        .sync_all()
        .map_err(|e| Error::io(output, "sync", e))?;
    crate::worker::step("synced");
    Ok((Staged::File(t, g), scan))
}

/// A directory output: a `.krepair-*` directory in `parent`, registered
/// for removal, filled (and synced file by file) by `write`.
fn stage_dir(
    parent: &Path,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<(Staged, Option<Scan>)> {
    let d = tempfile::Builder::new()
        .prefix(&crate::cleanup::prefix())
        .tempdir_in(parent)
        .map_err(tmp_err(parent))?;
    let g = crate::cleanup::register(d.path());
    write(d.path())?;
    Ok((Staged::Dir(d, g), None))
}

/// Re-open the staged output and check it: it parses, has the same
/// members in the same order, the same Keras version, the same layers, and
/// inspecting it again plans nothing. Returns the output's sha256 (a zip)
/// and its members.
fn verify(
    staged: &Staged,
    scan: Option<Scan>,
    before: &Inspection,
    opts: &Options,
    output: &Path,
) -> Result<(Option<String>, Vec<archive::Member>)> {
    let fail = |problem: String| Error::Verify {
        path: output.to_path_buf(),
        problem,
    };
    let after = inspect::inspect(
        staged.path(),
        opts.policy,
        inspect::Check::VERIFY.migrating(opts.migrate),
    )
    .map_err(|e| fail(e.to_string()))?;
    if !after.migration.is_empty() {
        return Err(fail(format!(
            "{} migration rewrite(s) still planned after the migration",
            after.migration.len()
        )));
    }
    let names = |i: &Inspection| {
        i.archive
            .members
            .iter()
            .map(|m| m.name.clone())
            .collect::<Vec<_>>()
    };
    if names(&after) != names(before) {
        return Err(fail("the member list changed".into()));
    }
    if after.keras_version != before.keras_version {
        return Err(fail("keras_version changed".into()));
    }
    if after.layers.len() != before.layers.len() {
        return Err(fail("the number of Normalization layers changed".into()));
    }
    if after.discretizations.len() != before.discretizations.len() {
        return Err(fail("the number of Discretization layers changed".into()));
    }
    if let Some((layer, reason)) = after.refusal() {
        return Err(fail(format!("layer `{layer}`: {reason}")));
    }
    if !after.actions.is_empty() {
        return Err(fail(format!(
            "{} change(s) still planned after the repair",
            after.actions.len()
        )));
    }
    for (b, a) in before.layers.iter().zip(&after.layers) {
        if b.config_path != a.config_path {
            return Err(fail(format!(
                "layer `{}` became `{}`",
                b.config_path, a.config_path
            )));
        }
    }
    // The embedded values must read back bit for bit from the new config
    // (each value parsed on its own: the tree of a large config is ten
    // times its size).
    let mut members = json_span::Members::new(&after.config_text, after.config_keys_unique);
    for a in &before.actions {
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
                        .and_then(|span| after.config_text.get(span))
                        .and_then(|text| text.trim().parse::<usize>().ok());
                    if back != Some(boundaries.data.len() + 1) {
                        return Err(fail(format!(
                            "num_tokens at {}/num_tokens does not read back as {}",
                            json_span::path_string(&p),
                            boundaries.data.len() + 1
                        )));
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
                .and_then(|span| after.config_text.get(span))
                .and_then(|text| {
                    let mut d = serde_json::Deserializer::from_str(text);
                    crate::stats::nested_json::deserialize(&mut d).ok()
                });
            if !back.is_some_and(|b| b.bits_eq(t)) {
                return Err(fail(format!(
                    "{key} at {}/{key} does not read back as the embedded float32 values",
                    json_span::path_string(&p)
                )));
            }
        }
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
    crate::worker::step("waiting for the output's hash");
    let sha = finish_scan(scan, &after.archive).map_err(|e| fail(e.to_string()))?;
    Ok((sha, after.archive.members.clone()))
}
