//! Batch migration: find every `.keras` archive under some paths, run the
//! single-archive pipeline ([`crate::run::single`]) on each, and gather one run
//! report.
//!
//! The walk is sorted and deterministic. Each archive is an independent
//! job; `jobs` threads take them in order and hand each to an executor:
//! the binary's is a pool of worker processes ([`crate::run::worker::Pool`]),
//! so a crash, hang or memory bomb ends one archive, and HDF5 work runs
//! side by side (inside one process the binding serializes it). One failed
//! archive never stops the run: it becomes a failed entry.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::Error;
use crate::plan::{Chosen, Policy};
use crate::report::{Outcome, Status, Tool, SCHEMA_VERSION};
use crate::run::single::{self as repair, Options};
use crate::source::keras::{CONFIG, METADATA, WEIGHTS};

pub mod journal;
pub mod shard;

pub use crate::report::run::{Entry, Fingerprint, RunMode, RunReport, Summary};
pub use journal::Resume;
pub use shard::Shard;

/// Where outputs go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Write each archive to the same relative path under this directory.
    Out(PathBuf),
    /// Replace each archive after its replacement is verified; keep the
    /// original beside it with this suffix, if given.
    InPlace {
        /// `--backup SUFFIX`.
        backup: Option<String>,
    },
    /// Write nothing but the report.
    DryRun,
}

/// What `krepair batch` does with each archive the walk ([`walk`]) found.
#[derive(Clone, Debug)]
pub struct BatchOptions {
    /// Output mode.
    pub mode: Mode,
    /// `--stats`.
    pub policy: Policy,
    /// Worker threads.
    pub jobs: usize,
    /// Replace existing outputs under OUTDIR.
    pub force: bool,
    /// Migrate tf.keras 2.x archives too (`krepair batch --migrate`).
    pub migrate: bool,
    /// The Keras 3 versions every output must load in (`--load-in`), as a
    /// [`crate::passes::keras3::Targets`] mask.
    pub load_in: u32,
    /// A dry run given `--out OUTDIR`: each archive's output there is
    /// checked as the real run would check it (and nothing is created).
    pub check_out: Option<PathBuf>,
}

/// One archive found by the walk.
#[derive(Clone, Debug)]
pub struct Job {
    /// The archive.
    pub input: PathBuf,
    /// Its path relative to OUTDIR (for `Mode::Out`).
    pub relative: PathBuf,
    /// Bytes (for progress).
    pub size: u64,
}

/// What the walk found.
#[derive(Debug, Default)]
pub struct Walk {
    /// Archives, sorted by path.
    pub jobs: Vec<Job>,
    /// Files that are not archives (counted, not touched).
    pub skipped: Vec<PathBuf>,
    /// Symbolic links not followed, and loops.
    pub links_skipped: Vec<PathBuf>,
    /// Paths that could not be read.
    pub errors: Vec<(PathBuf, String)>,
    /// Archives that would be written to the same path under OUTDIR: the
    /// relative path and the two inputs.
    pub collisions: Vec<(PathBuf, PathBuf, PathBuf)>,
    /// HDF5 files are inputs too ([`walk`]).
    hdf5: bool,
}

impl Walk {
    /// Keep only the archives of `shard` (by their path relative to their
    /// root).
    pub fn retain_shard(&mut self, shard: Shard) {
        self.jobs.retain(|j| shard.owns(&j.relative));
    }

    /// Set aside, as skipped, the archives whose names end with `suffix`:
    /// backups an earlier `--in-place --backup SUFFIX` run kept, not
    /// archives to repair.
    pub fn set_aside_backups(&mut self, suffix: &str) {
        let (backups, jobs): (Vec<_>, Vec<_>) = std::mem::take(&mut self.jobs)
            .into_iter()
            .partition(|j| j.input.to_string_lossy().ends_with(suffix));
        self.jobs = jobs;
        self.skipped.extend(backups.into_iter().map(|j| j.input));
    }
}

/// The name a root keeps under OUTDIR when several roots are given: its
/// own last component, or, for `.`, `..` and the like, that of the
/// directory it names. Never `..`, never empty (`/` becomes `root`).
fn root_name(root: &Path) -> PathBuf {
    use std::path::Component;
    match root.components().next_back() {
        Some(Component::Normal(n)) => PathBuf::from(n),
        _ => fs::canonicalize(root)
            .ok()
            .and_then(|r| r.file_name().map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("root")),
    }
}

/// Is `dir` an unzipped `.keras` archive?
pub fn is_archive_dir(dir: &Path) -> bool {
    [CONFIG, METADATA, WEIGHTS]
        .iter()
        .all(|n| dir.join(n).is_file())
}

fn is_keras_file(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("keras"))
}

/// Walk `paths` (sorted, recursive) for archives, never entering
/// `exclude` (the output directory, when it lies inside a walked path).
/// With `hdf5` (`batch --migrate`), a file that is HDF5 by its content
/// is an input too, whatever its name (a legacy model file; one that
/// holds no model is refused when it is run), written as `NAME.keras`.
pub fn walk(paths: &[PathBuf], follow_links: bool, exclude: Option<&Path>, hdf5: bool) -> Walk {
    let mut w = Walk {
        hdf5,
        ..Walk::default()
    };
    let mut seen_dirs = HashSet::new();
    if let Some(x) = exclude.and_then(|x| fs::canonicalize(x).ok()) {
        seen_dirs.insert(x);
    }
    let many = paths.len() > 1;
    for root in paths {
        let prefix = if many {
            root_name(root)
        } else {
            PathBuf::new()
        };
        let meta = match fs::metadata(root) {
            Ok(m) => m,
            Err(e) => {
                w.errors.push((root.clone(), e.to_string()));
                continue;
            }
        };
        if meta.is_file() || is_archive_dir(root) {
            push_job(&mut w, root, root_name(root), &meta);
            continue;
        }
        visit(root, &prefix, follow_links, &mut seen_dirs, &mut w);
    }
    w.jobs.sort_by(|a, b| a.input.cmp(&b.input));
    w.skipped.sort();
    let mut by_output: std::collections::HashMap<&Path, &Path> = std::collections::HashMap::new();
    for j in &w.jobs {
        if let Some(first) = by_output.insert(&j.relative, &j.input) {
            w.collisions
                .push((j.relative.clone(), first.to_path_buf(), j.input.clone()));
        }
    }
    w
}

fn push_job(w: &mut Walk, p: &Path, relative: PathBuf, meta: &fs::Metadata) {
    if meta.is_dir() {
        let size = [CONFIG, METADATA, WEIGHTS]
            .iter()
            .filter_map(|n| fs::metadata(p.join(n)).ok())
            .map(|m| m.len())
            .sum();
        w.jobs.push(Job {
            input: p.to_path_buf(),
            relative,
            size,
        });
    } else if is_keras_file(p) {
        w.jobs.push(Job {
            input: p.to_path_buf(),
            relative,
            size: meta.len(),
        });
    } else if w.hdf5 && crate::source::keras::is_hdf5(p) {
        // `model.h5` is written as `model.keras`.
        let relative = relative.with_extension("keras");
        w.jobs.push(Job {
            input: p.to_path_buf(),
            relative,
            size: meta.len(),
        });
    } else {
        w.skipped.push(p.to_path_buf());
    }
}

fn visit(dir: &Path, rel: &Path, follow: bool, seen: &mut HashSet<PathBuf>, w: &mut Walk) {
    let real = match fs::canonicalize(dir) {
        Ok(r) => r,
        Err(e) => {
            w.errors.push((dir.to_path_buf(), e.to_string()));
            return;
        }
    };
    if !seen.insert(real) {
        // A loop, a second link to the same folder, or the output folder.
        w.links_skipped.push(dir.to_path_buf());
        return;
    }
    let mut entries: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => {
            w.errors.push((dir.to_path_buf(), e.to_string()));
            return;
        }
    };
    entries.sort();
    for p in entries {
        let name = p.file_name().map(PathBuf::from).unwrap_or_default();
        let r = rel.join(&name);
        let is_link = fs::symlink_metadata(&p)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        if is_link && !follow {
            w.links_skipped.push(p);
            continue;
        }
        // Our own leftovers from an interrupted run are never inputs.
        if name.to_string_lossy().starts_with(".krepair-") {
            continue;
        }
        let meta = match fs::metadata(&p) {
            Ok(m) => m,
            Err(e) => {
                w.errors.push((p.clone(), e.to_string()));
                continue;
            }
        };
        if meta.is_dir() {
            if is_archive_dir(&p) {
                push_job(w, &p, r, &meta);
            } else {
                visit(&p, &r, follow, seen, w);
            }
        } else {
            push_job(w, &p, r, &meta);
        }
    }
}

/// Progress callbacks (the binary draws a bar; tests pass a no-op).
pub trait Progress: Sync {
    /// An archive is starting.
    fn start(&self, job: &Job);
    /// An archive is done.
    fn done(&self, job: &Job);
}

/// No progress display.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &Job) {}
    fn done(&self, _: &Job) {}
}

/// Runs one archive: `exec(slot, options)`, where `slot` is the index of
/// the batch thread asking (each thread keeps its own worker).
pub type Exec<'a> = dyn Fn(usize, &Options) -> repair::Run + Sync + 'a;

/// Run every archive in this process ([`repair::run`]), for library
/// callers that need no isolation.
pub fn in_process(_slot: usize, opts: &Options) -> repair::Run {
    repair::run(opts)
}

/// Run one archive in place: repair into a hidden sibling, then swap it in.
/// A legacy HDF5 model file is never migrated in place: its name would
/// then hold a `.keras` archive.
fn not_in_place(input: &Path, policy: Policy) -> repair::Run {
    let o = Options {
        input: input.to_path_buf(),
        output: None,
        policy,
        force: false,
        migrate: true,
        load_in: crate::passes::keras3::Targets::ALL,
    };
    let e = Error::Output {
        path: input.to_path_buf(),
        problem: "a legacy HDF5 model file is not migrated in place (its name would hold a .keras archive): give --out DIR".into(),
    };
    repair::Run::failed(&o, e)
}

fn in_place(
    job: &Job,
    policy: Policy,
    (migrate, load_in): (bool, u32),
    backup: Option<&str>,
    slot: usize,
    exec: &Exec,
) -> (repair::Run, Option<PathBuf>) {
    let input = &job.input;
    if migrate && crate::source::keras::is_hdf5(input) {
        return (not_in_place(input, policy), None);
    }
    let name = input
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let staged = input.with_file_name(format!(".krepair-{name}.new"));
    let _guard = crate::os::cleanup::register(&staged);
    let _ = fs::remove_file(&staged);
    let _ = fs::remove_dir_all(&staged);
    let opts = Options {
        input: input.clone(),
        output: Some(staged.clone()),
        policy,
        force: true,
        migrate,
        load_in,
    };
    let mut run = exec(slot, &opts);
    let remove_staged = || {
        let _ = fs::remove_file(&staged);
        let _ = fs::remove_dir_all(&staged);
    };
    if run.error.is_some() || run.report.outcome != Outcome::Repaired {
        // Nothing to repair (or a failure): the original stays untouched.
        remove_staged();
        run.report.output = None;
        return (run, None);
    }
    let swap = || -> std::io::Result<()> {
        let backup_path = backup.map(|suffix| input.with_file_name(format!("{name}{suffix}")));
        if let Some(b) = &backup_path {
            if fs::symlink_metadata(b).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("backup {} already exists", b.display()),
                ));
            }
        }
        if input.is_dir() {
            // Two renames: the original goes aside (to the backup, or to
            // a hidden name), then the new one takes its place. If the
            // second fails, the original comes back.
            let aside = backup_path
                .clone()
                .unwrap_or_else(|| input.with_file_name(format!(".krepair-{name}.old")));
            fs::rename(input, &aside)?;
            if let Err(e) = fs::rename(&staged, input) {
                fs::rename(&aside, input)?;
                return Err(e);
            }
            if backup_path.is_none() {
                let _ = fs::remove_dir_all(&aside);
            }
        } else {
            if let Some(b) = &backup_path {
                fs::hard_link(input, b)?;
            }
            // Atomic: readers see the old file or the new one.
            if let Err(e) = fs::rename(&staged, input) {
                if let Some(b) = &backup_path {
                    let _ = fs::remove_file(b);
                }
                return Err(e);
            }
        }
        Ok(())
    };
    match swap() {
        Ok(()) => {
            if let Some(o) = &mut run.report.output {
                o.path = input.display().to_string();
            }
            (run, Some(input.clone()))
        }
        Err(e) => {
            remove_staged();
            let err = Error::io(input, "replace in place", e);
            run.report.outcome = Outcome::Failed;
            run.report.output = None;
            run.error = Some(err);
            (run, None)
        }
    }
}

/// What a run does beside the archives.
#[derive(Default)]
pub struct Extras<'a> {
    /// `--shard K/N`, recorded in the report (the caller filters the walk).
    pub shard: Option<Shard>,
    /// `--resume`: archives finished in an earlier run.
    pub resume: Option<&'a Resume>,
    /// Called with each entry as it finishes (the journal), one at a time.
    pub on_entry: Option<&'a (dyn Fn(&Entry) + Sync)>,
}

/// Run the batch. `stop` is set by Ctrl-C: no new archive is started, and
/// the ones in flight finish (each is atomic).
pub fn run(
    opts: &BatchOptions,
    walk: &Walk,
    progress: &dyn Progress,
    stop: &AtomicBool,
    exec: &Exec,
    extras: &Extras,
) -> RunReport {
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<Entry>>> = Mutex::new(vec![None; walk.jobs.len()]);
    let jobs = opts.jobs.max(1).min(walk.jobs.len().max(1));
    let created_dirs = Arc::new(Mutex::new(()));
    let dry_run = opts.mode == Mode::DryRun;
    std::thread::scope(|s| {
        for slot in 0..jobs {
            let (next, results, created_dirs) = (&next, &results, &created_dirs);
            s.spawn(move || loop {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let i = {
                    let mut n = next.lock().unwrap_or_else(|p| p.into_inner());
                    let i = *n;
                    *n += 1;
                    i
                };
                let Some(job) = walk.jobs.get(i) else { return };
                progress.start(job);
                let resumed = extras
                    .resume
                    .and_then(|r| r.finished(&job.input, opts.policy, dry_run));
                let entry = match resumed {
                    Some(e) => e,
                    None => run_job(opts, job, created_dirs, slot, exec),
                };
                progress.done(job);
                let mut g = results.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(f) = extras.on_entry {
                    f(&entry);
                }
                g[i] = Some(entry);
            });
        }
    });
    let entries: Vec<Option<Entry>> = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let not_processed = entries.iter().filter(|e| e.is_none()).count();
    let entries: Vec<Entry> = entries.into_iter().flatten().collect();
    let mut skipped: Vec<String> = walk
        .skipped
        .iter()
        .chain(&walk.links_skipped)
        .map(|p| p.display().to_string())
        .collect();
    skipped.sort();
    let summary = summarize(&entries, skipped.len(), not_processed);
    RunReport {
        schema_version: SCHEMA_VERSION,
        tool: Tool::current(),
        policy: opts.policy,
        mode: match opts.mode {
            Mode::Out(_) => RunMode::Out,
            Mode::InPlace { .. } => RunMode::InPlace,
            Mode::DryRun => RunMode::DryRun,
        },
        shard: extras.shard.map(|s| s.to_string()),
        interrupted: stop.load(Ordering::SeqCst) && not_processed > 0,
        summary,
        entries,
        skipped,
    }
}

/// The counts over `entries` (the same for a run and for a merge).
pub(crate) fn summarize(entries: &[Entry], skipped: usize, not_processed: usize) -> Summary {
    let mut summary = Summary {
        archives: entries.len() + not_processed,
        skipped,
        not_processed,
        ..Summary::default()
    };
    for e in entries {
        match e.outcome {
            Outcome::Repaired | Outcome::WouldRepair => summary.repaired += 1,
            Outcome::NothingToRepair => summary.already_healthy += 1,
            Outcome::Refused => summary.refused += 1,
            Outcome::Failed => summary.failed += 1,
        }
        summary.resumed += e.resumed as usize;
        summary.bytes_read += e.report.input.size;
        summary.bytes_written += e.report.output.as_ref().map_or(0, |o| o.size);
        let mut legacy = false;
        for f in &e.report.findings {
            *summary
                .findings_by_code
                .entry(f.code.to_string())
                .or_default() += 1;
        }
        for l in &e.report.layers {
            for f in &l.findings {
                *summary
                    .findings_by_code
                    .entry(f.code.to_string())
                    .or_default() += 1;
                legacy |= f.code == crate::plan::Code::LegacyWeightsSignature;
            }
            if matches!(l.status, Status::Repaired | Status::WouldRepair) {
                if let Some(p) = &l.policy {
                    let k = match p.chosen {
                        Chosen::Adapted => "adapted",
                        Chosen::Identity => "identity",
                    };
                    *summary.layers_by_policy.entry(k.to_string()).or_default() += 1;
                }
            }
        }
        for l in &e.report.discretizations {
            for f in &l.findings {
                *summary
                    .findings_by_code
                    .entry(f.code.to_string())
                    .or_default() += 1;
            }
        }
        summary.legacy_signature_archives += legacy as usize;
    }
    summary
}

fn run_job(opts: &BatchOptions, job: &Job, dirs: &Mutex<()>, slot: usize, exec: &Exec) -> Entry {
    let (run, output) = match &opts.mode {
        Mode::DryRun => {
            let o = Options {
                input: job.input.clone(),
                output: None,
                policy: opts.policy,
                force: false,
                migrate: opts.migrate,
                load_in: opts.load_in,
            };
            let unusable = opts.check_out.as_ref().and_then(|dir| {
                would_write(&job.input, &dir.join(&job.relative), opts.force).err()
            });
            if let Some(e) = unusable {
                return entry(job, repair::Run::failed(&o, e), None);
            }
            (exec(slot, &o), None)
        }
        Mode::Out(dir) => {
            let out = dir.join(&job.relative);
            let o = Options {
                input: job.input.clone(),
                output: Some(out.clone()),
                policy: opts.policy,
                force: opts.force,
                migrate: opts.migrate,
                load_in: opts.load_in,
            };
            if let Some(parent) = out.parent() {
                let _g = dirs.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(e) = fs::create_dir_all(parent) {
                    let r = repair::Run::failed(&o, Error::io(parent, "create", e));
                    return entry(job, r, None);
                }
            }
            let r = exec(slot, &o);
            let ok = r.error.is_none();
            (r, ok.then_some(out))
        }
        Mode::InPlace { backup } => in_place(
            job,
            opts.policy,
            (opts.migrate, opts.load_in),
            backup.as_deref(),
            slot,
            exec,
        ),
    };
    entry(job, run, output)
}

/// Would the real run (`--out`) be able to write `out`? It creates the
/// missing directories, so those are fine if the nearest existing one is a
/// directory; an existing output is checked as [`repair::check_output`]
/// does.
fn would_write(input: &Path, out: &Path, force: bool) -> crate::Result<()> {
    let parent = out.parent().unwrap_or(Path::new("."));
    if parent.as_os_str().is_empty() || parent.is_dir() {
        return repair::check_output(input, out, force);
    }
    let existing = parent
        .ancestors()
        .find(|a| a.as_os_str().is_empty() || fs::symlink_metadata(a).is_ok())
        .unwrap_or(Path::new("."));
    if existing.as_os_str().is_empty() || existing.is_dir() {
        Ok(())
    } else {
        Err(Error::Output {
            path: out.to_path_buf(),
            problem: format!(
                "cannot create its directory: `{}` is not a directory",
                existing.display()
            ),
        })
    }
}

fn entry(job: &Job, run: repair::Run, output: Option<PathBuf>) -> Entry {
    // What is at the archive's path now: the new file after an in-place
    // swap (whose hash is the output's), else the input as read.
    let swapped = output.as_deref() == Some(job.input.as_path());
    let sha256 = if swapped {
        run.report.output.as_ref().and_then(|o| o.sha256.clone())
    } else {
        run.report.input.sha256.clone()
    };
    let fingerprint = journal::stat(&job.input).map(|(size, mtime_ns)| Fingerprint {
        size,
        mtime_ns,
        sha256,
    });
    Entry {
        path: job.input.display().to_string(),
        output: output.map(|p| p.display().to_string()),
        outcome: run.report.outcome,
        error: run.error.map(|e| e.to_string()),
        fingerprint,
        resumed: false,
        report: run.report,
    }
}

/// Re-exported for the binary: the archive size for progress.
pub fn total_bytes(walk: &Walk) -> u64 {
    walk.jobs.iter().map(|j| j.size).sum()
}
