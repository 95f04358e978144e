//! The single-archive pipeline: check the paths, inspect, apply the plan to
//! private copies, write the output beside its final path, verify it by
//! inspecting it again, and only then rename it into place.
//!
//! No failure leaves a partial output: everything is written to a
//! temporary file (or directory) named `.krepair-*` in the output's
//! directory, which is removed on any error.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::plan::Policy;
use crate::report::{
    ErrorInfo, FileInfo, MemberReport, Outcome, Report, Status, Tool, SCHEMA_VERSION,
};
use crate::source::keras::{self as archive, Form};
use crate::view::open as inspect;

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
    /// The Keras 3 versions the output must load in (`--load-in`), as a
    /// [`crate::passes::keras3::Targets`] mask.
    pub load_in: u32,
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
        tool: Tool::current(),
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
    run_with(opts, None)
}

/// [`run`] on an archive the caller opened already (at `opts.input`).
pub fn run_opened(opts: &Options, archive: archive::Archive) -> Run {
    run_with(opts, Some(archive))
}

fn run_with(opts: &Options, archive: Option<archive::Archive>) -> Run {
    let mut report = empty_report(opts);
    match run_inner(opts, &mut report, archive) {
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

fn run_inner(opts: &Options, report: &mut Report, opened: Option<archive::Archive>) -> Result<()> {
    if let Some(out) = &opts.output {
        check_output(&opts.input, out, opts.force)?;
    }
    let h5_hash = hash_h5_in_background(opts, opened.is_some());
    let (opened, h5) = open_legacy_h5(opts, opened)?;
    let (mut insp, input_scan) =
        inspect_input(opts, opened, h5.is_some()).map_err(|e| match &h5 {
            Some(c) => e.renamed(c.dir(), &opts.input),
            None => e,
        })?;
    record_inspection(report, &insp)?;
    if let Some(c) = &h5 {
        record_h5(report, &opts.input, c)?;
    }
    let refusal = insp.refusal().map(|(layer, reason)| Error::Refused {
        path: opts.input.clone(),
        verb: crate::error::Verb::Repair,
        layer: layer.to_string(),
        reason: reason.to_string(),
    });
    let Some(output) = opts.output.clone() else {
        if h5.is_none() {
            fill_members(report, &insp.archive);
        }
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
    crate::progress::step("writing the output");
    let staged = if refusal.is_none() {
        Some(crate::sink::stage(&mut insp, &parent, &output))
    } else {
        None
    };

    // The input's bytes are checked before anything is reported or kept.
    crate::progress::step("waiting for the input's hash");
    report.input.sha256 = crate::sink::scan::finish_scan(input_scan, &insp.archive)?;
    fill_members(report, &insp.archive);
    if h5.is_some() {
        report.input.sha256 = join_hash(h5_hash, &opts.input)?;
        report.members.clear();
    }
    if let Some(e) = refusal {
        return Err(e);
    }
    let (mut staged, output_scan) = staged.expect("staged unless refused")?;
    let exact_zip_copy = !changed && insp.archive.form == Form::Zip;
    let (output_sha, after) = if exact_zip_copy {
        // Nothing to repair: the copy is verified by its hash, which must
        // be the input's, so it inspects exactly as the input did.
        let sha = crate::sink::scan::finish_scan(output_scan, &insp.archive)?;
        if sha.is_none() || sha != report.input.sha256 {
            return Err(Error::Verify {
                path: output.clone(),
                problem: "the copy differs from the input".into(),
            });
        }
        (sha, insp.archive.members.clone())
    } else {
        crate::progress::step("verifying the output");
        crate::sink::verify(
            &mut staged,
            output_scan,
            &insp,
            opts.policy,
            opts.migrate,
            opts.load_in,
            &output,
        )?
    };
    crate::progress::step("renaming the output into place");
    staged.persist(&opts.input, &output, opts.force)?;
    record_output(report, insp.archive.form, &output, &after, output_sha)?;
    report.outcome = if changed {
        Outcome::Repaired
    } else {
        Outcome::NothingToRepair
    };
    Ok(())
}

/// The input's SHA-256 when it is a legacy HDF5 file to migrate (not one
/// the caller opened), computed on the other core while it is converted
/// (the archive made from it is krepair's own, and not hashed).
fn hash_h5_in_background(opts: &Options, opened: bool) -> Option<HashThread> {
    if opened || opts.output.is_none() || !opts.migrate || !archive::is_hdf5(&opts.input) {
        return None;
    }
    let path = opts.input.clone();
    Some(std::thread::spawn(move || {
        let stop = std::sync::atomic::AtomicBool::new(false);
        crate::hash::scan_file(&path, None, &stop).map(|s| s.0)
    }))
}

/// A thread hashing a file.
type HashThread = std::thread::JoinHandle<Result<String>>;

/// The hash [`hash_h5_in_background`] computed, if it was started.
fn join_hash(h: Option<HashThread>, input: &Path) -> Result<Option<String>> {
    match h.map(std::thread::JoinHandle::join) {
        Some(Ok(sha)) => sha.map(Some),
        Some(Err(_)) => Err(Error::Internal {
            path: input.to_path_buf(),
            problem: "the input's hash thread panicked".into(),
        }),
        None => Ok(None),
    }
}

/// A legacy HDF5 model file is migrated through the archive made from it
/// ([`crate::view::legacy_h5`]; the report names the file itself): that
/// archive, opened, and the conversion, when `opts` migrates one.
fn open_legacy_h5(
    opts: &Options,
    opened: Option<archive::Archive>,
) -> Result<(
    Option<archive::Archive>,
    Option<crate::view::legacy_h5::Converted>,
)> {
    if opened.is_some() || !opts.migrate || !archive::is_hdf5(&opts.input) {
        return Ok((opened, None));
    }
    let (a, c) = crate::view::legacy_h5::convert(&opts.input)?;
    Ok((Some(a), Some(c)))
}

/// Open the input (unless the caller did), and inspect it. The structure
/// of the weights is walked on the other core while the archive is read
/// (a dry run too), and a repair hashes the whole input there as well; a
/// dry run reads only what it needs. The weights are opened for editing
/// only once the walk has passed.
fn inspect_input(
    opts: &Options,
    opened: Option<archive::Archive>,
    from_h5: bool,
) -> Result<(inspect::Inspection, Option<crate::sink::scan::Scan>)> {
    let check = if opts.output.is_some() {
        inspect::Check::REPAIR
    } else {
        inspect::Check::DRY_RUN
    }
    .migrating(opts.migrate)
    .loading_in(opts.load_in)
    .of_h5(from_h5);
    let a = match opened {
        Some(a) => a,
        None => {
            crate::progress::step("reading the zip container");
            archive::Archive::open(&opts.input)?
        }
    };
    let walk = a.in_place(archive::WEIGHTS).map(|(file, range)| {
        let label = format!("{}!{}", opts.input.display(), archive::WEIGHTS);
        inspect::Walk::spawn(file, range, label)
    });
    let input_scan = opts
        .output
        .as_ref()
        .filter(|_| !from_h5)
        .and_then(|_| crate::sink::scan::scan_in_background(&a));
    let insp = inspect::inspect_walked(a, opts.policy, check, walk)?;
    Ok((insp, input_scan))
}

/// What the inspection found, into the report.
fn record_inspection(report: &mut Report, insp: &inspect::Inspection) -> Result<()> {
    let input = &insp.archive.path;
    report.input.form = insp.archive.form;
    report.input.size = match insp.archive.form {
        Form::Zip | Form::Hdf5 => fs::metadata(input)
            .map_err(|e| Error::io(input, "stat", e))?
            .len(),
        Form::Directory => insp.archive.members.iter().map(|m| m.size).sum(),
    };
    report.keras_version = insp.keras_version.clone();
    report.findings = insp.findings.clone();
    report.layers = insp.layers.clone();
    report.discretizations = insp.discretizations.clone();
    report.migration = insp.migration.clone();
    Ok(())
}

/// A legacy HDF5 input, into the report: the file itself (not the
/// archive made from it), and the conversion's rewrites and findings
/// before the migration's.
fn record_h5(
    report: &mut Report,
    input: &Path,
    c: &crate::view::legacy_h5::Converted,
) -> Result<()> {
    report.input.form = Form::Hdf5;
    report.input.size = fs::metadata(input)
        .map_err(|e| Error::io(input, "stat", e))?
        .len();
    report.keras_version = Some(c.keras_version.clone());
    let mut migration = c.rewrites.clone();
    migration.append(&mut report.migration);
    report.migration = migration;
    report.findings.extend(c.findings.iter().cloned());
    Ok(())
}

/// The output kept at `output` (its members `after`, its hash), into the
/// report: what would be repaired now is repaired.
fn record_output(
    report: &mut Report,
    form: Form,
    output: &Path,
    after: &[archive::Member],
    sha256: Option<String>,
) -> Result<()> {
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
        form,
        size: match form {
            Form::Zip | Form::Hdf5 => fs::metadata(output)
                .map_err(|e| Error::io(output, "stat", e))?
                .len(),
            Form::Directory => after.iter().map(|x| x.size).sum(),
        },
        sha256,
    });
    Ok(())
}
