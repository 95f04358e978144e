//! Each command's orchestration: hand the work to the library (a worker
//! process, or the batch runner), send what comes back to its sink
//! ([`super::output`]), and say which exit code it earned.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use clap::CommandFactory;
use krepair::run::batch::{self, BatchOptions, Mode};
use krepair::run::worker::{self, Limits, Pool};
use krepair::{Error, Outcome, Run};

use super::args::{Args, MergeFormat, ReportFormat, Shell};
use super::exit::{
    EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_REPORT_LOST, EXIT_USAGE, EXIT_WORK_FOUND,
};
use super::options::{Batch, Single, Task};
use super::output::{print_err, print_out, Bar, Journal, ReportSink};

/// Run one validated task; its exit code.
pub fn run(task: Task) -> u8 {
    match task {
        Task::Single(s) => single(s),
        Task::Inspect { file, json, limits } => inspect(&file, json, limits),
        Task::Diff {
            a,
            b,
            json,
            tolerance,
            limits,
        } => diff(&a, &b, json, tolerance, limits),
        Task::Batch(b) => batch(*b),
        Task::Merge {
            files,
            format,
            output,
        } => merge(&files, format, &output),
        Task::Completions(shell) => generated(Some(shell)),
        Task::Man => generated(None),
    }
}

/// Print completions (for `shell`) or the man page, generated from the
/// parser's own definitions (without the run-time HDF5 version, so every
/// build prints the same text).
fn generated(shell: Option<Shell>) -> u8 {
    let mut cmd = Args::command();
    let mut buf = Vec::new();
    let res = match shell {
        Some(shell) => {
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut cmd, "krepair", &mut buf);
            Ok(())
        }
        None => clap_mangen::Man::new(cmd).render(&mut buf),
    };
    match res {
        Ok(()) if print_out(&String::from_utf8_lossy(&buf)) => EXIT_OK,
        Ok(()) => EXIT_FAILURE,
        Err(e) => {
            print_err(&format!("krepair: cannot write to stdout: {e}"));
            EXIT_FAILURE
        }
    }
}

/// Ctrl-C and SIGTERM: `graceful` lets a batch finish the archives in
/// flight on the first one; otherwise (and on the second) every worker is
/// killed, every temporary file removed, and the process exits 130.
fn on_interrupt(graceful: bool) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if graceful && !flag.swap(true, Ordering::SeqCst) {
            print_err("krepair: interrupted: finishing the archives in progress (Ctrl-C again to stop now)");
            return;
        }
        worker::kill_all();
        krepair::os::cleanup::remove_all();
        print_err("krepair: interrupted");
        std::process::exit(EXIT_INTERRUPTED as i32);
    });
    stop
}

/// `krepair IN OUT` and `krepair migrate IN OUT`.
fn single(s: Single) -> u8 {
    let opts = &s.opts;
    let _stop = on_interrupt(false);
    let sink = match ReportSink::open(s.report.as_deref()) {
        Ok(sink) => sink,
        Err(line) => {
            print_err(&line);
            return EXIT_FAILURE;
        }
    };
    // A dry run given OUTPUT fails where the real run would on it.
    let unusable = s
        .check_output
        .as_deref()
        .and_then(|out| krepair::run::single::check_output(&opts.input, out, opts.force).err());
    let run = match (unusable, Pool::current(s.limits, 1)) {
        (Some(e), _) => Run::failed(opts, e),
        (None, Ok(pool)) => pool.run(0, opts),
        (None, Err(e)) => Run::failed(
            opts,
            Error::io(&opts.input, "find krepair's own executable to", e),
        ),
    };
    let mut code = match run.report.outcome {
        Outcome::Repaired | Outcome::NothingToRepair => EXIT_OK,
        Outcome::WouldRepair => EXIT_WORK_FOUND,
        Outcome::Refused | Outcome::Failed => EXIT_FAILURE,
    };
    let report_to_stdout = sink.to_stdout();
    if !sink.write(&run.report.to_json()) {
        code = if run.report.output.is_some() {
            EXIT_REPORT_LOST
        } else {
            EXIT_FAILURE
        };
    }
    if !s.quiet && !report_to_stdout {
        print_out(&run.report.human());
    }
    if let Some(e) = &run.error {
        print_err(&format!("krepair: {e}"));
    }
    code
}

/// `krepair inspect FILE`: 0 when the file could be read (whatever a
/// repair would do with it), 1 when it could not.
fn inspect(file: &Path, json: bool, limits: Limits) -> u8 {
    let res = in_worker(limits, file, |pool| pool.inspect(0, file));
    let text = res.map(|m| if json { m.to_json() } else { m.human() });
    match printed(text) {
        Some(true) => EXIT_OK,
        _ => EXIT_FAILURE,
    }
}

/// `krepair diff A B`, with diff(1)'s exit codes: 0 the same, 1
/// different, 2 trouble.
fn diff(a: &Path, b: &Path, json: bool, tolerance: f64, limits: Limits) -> u8 {
    const SAME: u8 = 0;
    const DIFFERENT: u8 = 1;
    const TROUBLE: u8 = 2;
    let res = in_worker(limits, a, |pool| pool.diff(0, a, b, tolerance));
    let mut same = false;
    let text = res.map(|d| {
        same = d.same;
        if json {
            d.to_json()
        } else {
            d.human()
        }
    });
    match printed(text) {
        Some(true) if same => SAME,
        Some(true) => DIFFERENT,
        _ => TROUBLE,
    }
}

/// Run `job` on a one-slot pool of worker processes with `limits`
/// (inspect and diff), Ctrl-C handled as in a single repair.
fn in_worker<T>(
    limits: Limits,
    path: &Path,
    job: impl FnOnce(&Pool) -> Result<T, Error>,
) -> Result<T, Error> {
    let _stop = on_interrupt(false);
    match Pool::current(limits, 1) {
        Ok(pool) => job(&pool),
        Err(e) => Err(Error::io(path, "find krepair's own executable to", e)),
    }
}

/// Print a command's text (Some(true)), or its error as one line
/// (None); Some(false) when stdout could not take the text.
fn printed(text: Result<String, Error>) -> Option<bool> {
    match text {
        Ok(t) => Some(print_out(&t)),
        Err(e) => {
            print_err(&format!("krepair: {e}"));
            None
        }
    }
}

/// The progress bar of a batch: drawn on a terminal's stderr unless the
/// run is quiet or its report goes to stdout.
fn progress_bar(walk: &batch::Walk, show: bool) -> Bar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(batch::total_bytes(walk)),
        if show {
            indicatif::ProgressDrawTarget::stderr()
        } else {
            indicatif::ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix} archives  {bytes}/{total_bytes}  eta {eta}  {wide_msg}",
    ) {
        bar.set_style(style);
    }
    bar.set_prefix(format!("0/{}", walk.jobs.len()));
    Bar {
        bar,
        done: AtomicUsize::new(0),
        total: walk.jobs.len(),
    }
}

/// Where a batch's report goes: a journal written as archives finish
/// (`jsonl`), or a sink written at the end. None: the line that says why
/// neither can be opened has been printed.
fn batch_report(b: &Batch) -> Option<(Option<Journal>, ReportSink)> {
    if let (ReportFormat::Jsonl, Some(p)) = (b.report_format, b.report.as_deref()) {
        return match Journal::open(p, b.resume.as_deref()) {
            Ok(j) => Some((Some(j), ReportSink::None)),
            Err(e) => {
                print_err(&format!(
                    "krepair: {}: cannot write the journal: {e}",
                    p.display()
                ));
                None
            }
        };
    }
    match ReportSink::open(b.report.as_deref()) {
        Ok(s) => Some((None, s)),
        Err(line) => {
            print_err(&line);
            None
        }
    }
}

/// `krepair batch`.
fn batch(b: Batch) -> u8 {
    let exclude = match &b.mode {
        Mode::Out(d) => Some(d.as_path()),
        _ => b.check_out.as_deref(),
    };
    let mut walk = batch::walk(&b.paths, b.follow_links, exclude, b.migrate);
    if matches!(&b.mode, Mode::Out(_)) || b.check_out.is_some() {
        // Two archives that would land on the same output: refuse the run
        // before anything is written.
        if let Some((rel, x, y)) = walk.collisions.first() {
            print_err(&format!(
                "krepair: {} and {} would both be written to OUTDIR/{}: give roots with different names, or run them separately",
                x.display(),
                y.display(),
                rel.display()
            ));
            return EXIT_USAGE;
        }
    }
    if let Some(shard) = b.shard {
        walk.retain_shard(shard);
    }
    if let Some(suffix) = b.backup.as_deref() {
        walk.set_aside_backups(suffix);
    }
    for (p, e) in &walk.errors {
        print_err(&format!("krepair: {}: {e}", p.display()));
    }
    let opts = BatchOptions {
        mode: b.mode.clone(),
        policy: b.policy,
        jobs: b.jobs,
        force: b.force,
        migrate: b.migrate,
        load_in: b.load_in,
        check_out: b.check_out.clone(),
    };
    let resume = match &b.resume {
        Some(p) => match batch::journal::load(p) {
            Ok(l) => Some(batch::Resume::new(l)),
            Err(e) => {
                print_err(&format!("krepair: --resume {e}"));
                return EXIT_FAILURE;
            }
        },
        None => None,
    };
    let stop = on_interrupt(true);
    let Some((journal, sink)) = batch_report(&b) else {
        return EXIT_FAILURE;
    };
    let pool = match Pool::current(b.limits, b.jobs) {
        Ok(p) => p,
        Err(e) => {
            print_err(&format!(
                "krepair: cannot find krepair's own executable: {e}"
            ));
            return EXIT_FAILURE;
        }
    };
    let report_to_stdout = sink.to_stdout() || journal.as_ref().is_some_and(|j| j.stdout);
    let show = !b.quiet && !report_to_stdout && std::io::stderr().is_terminal();
    let progress = progress_bar(&walk, show);
    let exec = |slot: usize, o: &krepair::Options| pool.run(slot, o);
    let on_entry = |e: &batch::Entry| {
        if let Some(j) = &journal {
            j.entry(e);
        }
    };
    let extras = batch::Extras {
        shard: b.shard,
        resume: resume.as_ref(),
        on_entry: Some(&on_entry),
    };
    let report = batch::run(&opts, &walk, &progress, &stop, &exec, &extras);
    progress.bar.finish_and_clear();
    let written = match &journal {
        Some(j) => j.finish(&report),
        None => sink.write(&match b.report_format {
            ReportFormat::Md => report.to_markdown(),
            _ => report.to_json(),
        }),
    };
    if !b.quiet && !report_to_stdout {
        print_out(&report.table());
    }
    for e in &report.entries {
        if let Some(err) = &e.error {
            print_err(&format!("krepair: {err}"));
        }
    }
    batch_exit(&report, !walk.errors.is_empty(), written)
}

/// A batch's exit code: the worst outcome, a failure if a path could not
/// be read, [`EXIT_REPORT_LOST`] if outputs were written but the report
/// was not, [`EXIT_INTERRUPTED`] above all.
fn batch_exit(report: &batch::RunReport, walk_errors: bool, written: bool) -> u8 {
    if report.interrupted {
        return EXIT_INTERRUPTED;
    }
    if !written {
        return if report.summary.bytes_written > 0 {
            EXIT_REPORT_LOST
        } else {
            EXIT_FAILURE
        };
    }
    if walk_errors {
        return EXIT_FAILURE;
    }
    match report.worst() {
        Outcome::Failed | Outcome::Refused => EXIT_FAILURE,
        Outcome::WouldRepair => EXIT_WORK_FOUND,
        _ => EXIT_OK,
    }
}

/// `krepair report merge`.
fn merge(files: &[std::path::PathBuf], format: MergeFormat, output: &Path) -> u8 {
    let mut loaded = Vec::new();
    for f in files {
        match batch::journal::load(f) {
            Ok(l) => loaded.push(l),
            Err(e) => {
                print_err(&format!("krepair: {e}"));
                return EXIT_FAILURE;
            }
        }
    }
    let report = match batch::journal::merge(loaded) {
        Ok(r) => r,
        Err(e) => {
            print_err(&format!("krepair: cannot merge: {e}"));
            return EXIT_FAILURE;
        }
    };
    let text = match format {
        MergeFormat::Json => report.to_json(),
        MergeFormat::Md => report.to_markdown(),
    };
    let sink = match ReportSink::open(Some(output)) {
        Ok(s) => s,
        Err(line) => {
            print_err(&line);
            return EXIT_FAILURE;
        }
    };
    if sink.write(&text) {
        EXIT_OK
    } else {
        EXIT_FAILURE
    }
}
