//! The `krepair` binary, orchestration only: parse the arguments
//! ([`cli`]), hand each archive to a worker process or the batch runner
//! (the library), send what they report to its sink ([`output`]), and map
//! the outcome to an exit code (docs/exit-codes.md). The binary is the only
//! place that prints or exits.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod cli;
mod output;

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches};
use cli::{
    ArchiveArgs, Args, BatchArgs, Command, DiffArgs, InspectArgs, MergeFormat, ReportCommand,
    ReportFormat, Shell,
};
use krepair::batch::{self, BatchOptions, Mode};
use krepair::worker::{self, Pool};
use krepair::Outcome;
use output::{print_err, print_out, Bar, Journal, ReportSink};

/// Exit code: repaired, or nothing to repair.
const EXIT_OK: u8 = 0;
/// Exit code: krepair could not do its job (bad input, refused layer, I/O).
const EXIT_FAILURE: u8 = 1;
/// Exit code: bad command line (clap's convention).
const EXIT_USAGE: u8 = 2;
/// Exit code: a dry run found something to repair.
const EXIT_WORK_FOUND: u8 = 3;
/// Exit code: the output was written, but the report could not be.
const EXIT_REPORT_LOST: u8 = 4;
/// Exit code: stopped by Ctrl-C or SIGTERM (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

/// Print completions or the man page, generated from the parser's own
/// definitions (without the run-time HDF5 version, so every build prints
/// the same text).
fn print_generated(command: &Command) -> u8 {
    let mut cmd = Args::command();
    let mut buf = Vec::new();
    let res = match command {
        Command::Completions { shell } => {
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut cmd, "krepair", &mut buf);
            Ok(())
        }
        Command::Man => clap_mangen::Man::new(cmd).render(&mut buf),
        Command::Batch(_)
        | Command::Report(_)
        | Command::Migrate(_)
        | Command::Inspect(_)
        | Command::Diff(_) => Ok(()),
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
        krepair::cleanup::remove_all();
        print_err("krepair: interrupted");
        std::process::exit(EXIT_INTERRUPTED as i32);
    });
    stop
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(worker::WORKER_ARG)) {
        return ExitCode::from(worker::serve().clamp(0, 255) as u8);
    }
    worker::trace("start");
    let version: &'static str = Box::leak(cli::long_version().into_boxed_str());
    let parsed = Args::command()
        .version(version)
        .try_get_matches()
        .and_then(|m| Args::from_arg_matches(&m));
    let args = match parsed {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    let code = match args.command {
        Some(Command::Batch(b)) => ExitCode::from(run_batch(b)),
        Some(Command::Report(r)) => ExitCode::from(run_report(r)),
        Some(Command::Migrate(a)) => ExitCode::from(run_single(a, true)),
        Some(Command::Inspect(a)) => ExitCode::from(run_inspect(a)),
        Some(Command::Diff(a)) => ExitCode::from(run_diff(a)),
        Some(c) => ExitCode::from(print_generated(&c)),
        None => ExitCode::from(run_single(args.archive, false)),
    };
    worker::trace("exit");
    code
}

/// `krepair IN OUT` and `krepair migrate IN OUT`.
fn run_single(args: ArchiveArgs, migrate: bool) -> u8 {
    let Some(input) = args.input.clone() else {
        print_err("krepair: no INPUT given (see --help)");
        return EXIT_USAGE;
    };
    let opts = krepair::Options {
        input,
        output: if args.dry_run {
            None
        } else {
            args.output.clone()
        },
        policy: args.stats,
        force: args.force,
        migrate,
    };
    let _stop = on_interrupt(false);
    let sink = match ReportSink::open(args.report.as_deref()) {
        Ok(s) => s,
        Err(line) => {
            print_err(&line);
            return EXIT_FAILURE;
        }
    };
    // A dry run given OUTPUT fails where the real run would on it.
    let unusable = args
        .output
        .as_deref()
        .filter(|_| args.dry_run)
        .and_then(|out| krepair::repair::check_output(&opts.input, out, args.force).err());
    let run = match (unusable, Pool::current(args.limits.limits(), 1)) {
        (Some(e), _) => krepair::Run::failed(&opts, e),
        (None, Ok(pool)) => pool.run(0, &opts),
        (None, Err(e)) => krepair::Run::failed(
            &opts,
            krepair::Error::io(&opts.input, "find krepair's own executable to", e),
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
    if !args.quiet && !report_to_stdout {
        print_out(&run.report.human());
    }
    if let Some(e) = &run.error {
        print_err(&format!("krepair: {e}"));
    }
    code
}

/// `krepair inspect FILE`: 0 when the file could be read (whatever a
/// repair would do with it), 1 when it could not.
fn run_inspect(args: InspectArgs) -> u8 {
    let res = in_worker(args.limits, &args.file, |pool| pool.inspect(0, &args.file));
    let text = res.map(|m| if args.json { m.to_json() } else { m.human() });
    match printed(text) {
        Some(true) => EXIT_OK,
        _ => EXIT_FAILURE,
    }
}

/// `krepair diff A B`, with diff(1)'s exit codes: 0 the same, 1
/// different, 2 trouble.
fn run_diff(args: DiffArgs) -> u8 {
    const SAME: u8 = 0;
    const DIFFERENT: u8 = 1;
    const TROUBLE: u8 = 2;
    let res = in_worker(args.limits, &args.a, |pool| {
        pool.diff(0, &args.a, &args.b, args.tolerance)
    });
    let mut same = false;
    let text = res.map(|d| {
        same = d.same;
        if args.json {
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
    limits: cli::LimitArgs,
    path: &Path,
    job: impl FnOnce(&Pool) -> Result<T, krepair::Error>,
) -> Result<T, krepair::Error> {
    let _stop = on_interrupt(false);
    match Pool::current(limits.limits(), 1) {
        Ok(pool) => job(&pool),
        Err(e) => Err(krepair::Error::io(
            path,
            "find krepair's own executable to",
            e,
        )),
    }
}

/// Print a command's text (Some(true)), or its error as one line
/// (None); Some(false) when stdout could not take the text.
fn printed(text: Result<String, krepair::Error>) -> Option<bool> {
    match text {
        Ok(t) => Some(print_out(&t)),
        Err(e) => {
            print_err(&format!("krepair: {e}"));
            None
        }
    }
}

fn run_batch(b: BatchArgs) -> u8 {
    let mode = if b.dry_run {
        Mode::DryRun
    } else if b.in_place {
        Mode::InPlace {
            backup: b.backup.clone(),
        }
    } else if let Some(out) = b.out.clone() {
        Mode::Out(out)
    } else {
        print_err("krepair: batch needs --out OUTDIR, --in-place or --dry-run");
        return EXIT_USAGE;
    };
    // A dry run takes the real run's command line: given --out, it checks
    // the outputs there as the real run would.
    let out_dir = b.out.clone().filter(|_| b.dry_run);
    let exclude = match &mode {
        Mode::Out(d) => Some(d.as_path()),
        _ => out_dir.as_deref(),
    };
    let mut walk = batch::walk(&b.paths, b.follow_links, exclude);
    if matches!(&mode, Mode::Out(_)) || out_dir.is_some() {
        // Two archives that would land on the same output: refuse the run
        // before anything is written.
        if let Some((rel, a, c)) = walk.collisions.first() {
            print_err(&format!(
                "krepair: {} and {} would both be written to OUTDIR/{}: give roots with different names, or run them separately",
                a.display(),
                c.display(),
                rel.display()
            ));
            return EXIT_USAGE;
        }
    }
    if let Some(shard) = b.shard {
        walk.jobs.retain(|j| shard.owns(&j.relative));
    }
    if let Some(suffix) = b.backup.as_deref() {
        // Backups from an earlier run are not archives to repair.
        let (backups, jobs): (Vec<_>, Vec<_>) = walk
            .jobs
            .into_iter()
            .partition(|j| j.input.to_string_lossy().ends_with(suffix));
        walk.jobs = jobs;
        walk.skipped.extend(backups.into_iter().map(|j| j.input));
    }
    for (p, e) in &walk.errors {
        print_err(&format!("krepair: {}: {e}", p.display()));
    }
    let jobs = b
        .jobs
        .map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let opts = BatchOptions {
        mode,
        policy: b.stats,
        jobs,
        force: b.force,
        migrate: b.migrate,
        check_out: out_dir,
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
    let journal = match (b.report_format, b.report.as_deref()) {
        (ReportFormat::Jsonl, None) => {
            print_err("krepair: --report-format jsonl needs --report FILE (or -)");
            return EXIT_USAGE;
        }
        (ReportFormat::Jsonl, Some(p)) => match Journal::open(p, b.resume.as_deref()) {
            Ok(j) => Some(j),
            Err(e) => {
                print_err(&format!(
                    "krepair: {}: cannot write the journal: {e}",
                    p.display()
                ));
                return EXIT_FAILURE;
            }
        },
        _ => None,
    };
    let sink = if journal.is_some() {
        ReportSink::None
    } else {
        match ReportSink::open(b.report.as_deref()) {
            Ok(s) => s,
            Err(line) => {
                print_err(&line);
                return EXIT_FAILURE;
            }
        }
    };
    let pool = match Pool::current(b.limits.limits(), jobs) {
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
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(batch::total_bytes(&walk)),
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
    let progress = Bar {
        bar,
        done: AtomicUsize::new(0),
        total: walk.jobs.len(),
    };
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
    let mut code = match report.worst() {
        Outcome::Failed | Outcome::Refused => EXIT_FAILURE,
        Outcome::WouldRepair => EXIT_WORK_FOUND,
        _ => EXIT_OK,
    };
    if !walk.errors.is_empty() {
        code = EXIT_FAILURE;
    }
    let text = match b.report_format {
        ReportFormat::Json => report.to_json(),
        ReportFormat::Md => report.to_markdown(),
        ReportFormat::Jsonl => String::new(),
    };
    let written = match &journal {
        Some(j) => j.finish(&report),
        None => sink.write(&text),
    };
    if !written {
        code = if report.summary.bytes_written > 0 {
            EXIT_REPORT_LOST
        } else {
            EXIT_FAILURE
        };
    }
    if !b.quiet && !report_to_stdout {
        print_out(&report.table());
    }
    for e in &report.entries {
        if let Some(err) = &e.error {
            print_err(&format!("krepair: {err}"));
        }
    }
    if report.interrupted {
        return EXIT_INTERRUPTED;
    }
    code
}

/// `krepair report merge`.
fn run_report(cmd: ReportCommand) -> u8 {
    let ReportCommand::Merge {
        files,
        format,
        output,
    } = cmd;
    let mut loaded = Vec::new();
    for f in &files {
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
    let sink = match ReportSink::open(Some(output.as_deref().unwrap_or(Path::new("-")))) {
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
