//! The `krepair` binary: parse arguments, run the pipeline, print, and map
//! the outcome to an exit code (docs/exit-codes.md). The only place that
//! prints or exits.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use krepair::batch::{self, BatchOptions, Job, Mode};
use krepair::{Outcome, Policy};

/// Exit code: repaired, or nothing to repair.
const EXIT_OK: u8 = 0;
/// Exit code: krepair could not do its job (bad input, refused layer, I/O).
const EXIT_FAILURE: u8 = 1;
/// Exit code: bad command line (clap's convention).
const EXIT_USAGE: u8 = 2;
/// Exit code: a dry run found something to repair.
const EXIT_WORK_FOUND: u8 = 3;
/// Exit code: a batch stopped by Ctrl-C (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

const EXAMPLES: &str = "\
Examples:
  krepair model.keras fixed.keras
      Repair model.keras into fixed.keras; print what was done.
  krepair --dry-run model.keras
      Inspect only: exit 3 if a repair would change something, 0 if not.
  krepair --stats identity --report audit.json model.keras fixed.keras
      Make every adapt-mode Normalization layer compute identity, and
      write the audit report as JSON.
  krepair saved_model_dir out_dir
      Repair an unzipped .keras directory (model.save(..., zipped=False)).
  krepair batch experiments/ --out migrated/ --report run.md --report-format md
      Repair every archive under experiments/ into migrated/.

Exit codes: 0 repaired or nothing to repair, 1 failure (nothing written),
2 usage error, 3 dry run found work, 130 batch interrupted.
See docs/exit-codes.md.";

/// Repair Keras .keras archives whose Normalization layers depend on
/// finalize_state() (keras #20147).
///
/// For each adapt-mode Normalization layer, krepair reads the stored
/// statistics, chooses what the layer must compute, and embeds it in the
/// layer config, so every Keras version loads the model computing the same
/// normalization it computed when it was saved. The input is never written.
#[derive(Parser, Debug)]
#[command(
    name = "krepair",
    version,
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    /// The .keras archive (zip file or unzipped directory) to repair.
    #[arg(required = true)]
    input: Option<PathBuf>,

    /// Where to write the repaired archive (same form as the input).
    /// Required unless --dry-run.
    #[arg(required_unless_present = "dry_run")]
    output: Option<PathBuf>,

    /// What repaired layers compute: `auto` (what the model computed when it
    /// was saved), `adapted` (the stored statistics) or `identity` (mean 0,
    /// variance 1).
    #[arg(long, value_enum, default_value_t = Policy::Auto)]
    stats: Policy,

    /// Inspect and plan only; create no file (except --report).
    #[arg(long, conflicts_with = "output")]
    dry_run: bool,

    /// Write the audit report as JSON to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,

    /// Replace OUTPUT if it exists.
    #[arg(long)]
    force: bool,

    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Find, check and repair every .keras archive under PATHs.
    ///
    /// Picks up .keras files and unzipped .keras directories; everything
    /// else is skipped and counted. One failed archive never stops the run.
    Batch(BatchArgs),

    /// Print a shell completion script to stdout.
    ///
    /// bash: `krepair completions bash > ~/.local/share/bash-completion/completions/krepair`;
    /// zsh: save as `_krepair` in a directory of your `$fpath`;
    /// fish: `krepair completions fish > ~/.config/fish/completions/krepair.fish`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },

    /// Print the manual page (roff) to stdout: `krepair man | man -l -`.
    Man,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// The version line: krepair's version and the HDF5 library it runs with
/// (bundled and linked in, or the system's shared library).
fn long_version() -> String {
    let (a, b, c) = hdf5::library_version();
    let how = if cfg!(feature = "static") {
        "bundled, statically linked"
    } else {
        "system library"
    };
    format!("{} (HDF5 {a}.{b}.{c}, {how})", env!("CARGO_PKG_VERSION"))
}

/// Print completions or the man page, generated from the parser's own
/// definitions (without the run-time HDF5 version, so every build prints
/// the same text).
fn print_generated(command: &Command) -> u8 {
    let mut cmd = Args::command();
    let mut out = std::io::stdout().lock();
    let res = match command {
        Command::Completions { shell } => {
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut cmd, "krepair", &mut out);
            Ok(())
        }
        Command::Man => clap_mangen::Man::new(cmd).render(&mut out),
        Command::Batch(_) => unreachable!("not generated output"),
    };
    match res.and_then(|()| out.flush()) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("krepair: cannot write to stdout: {e}");
            EXIT_FAILURE
        }
    }
}

#[derive(clap::Args, Debug)]
struct BatchArgs {
    /// Files and directories to walk (recursively, in sorted order).
    #[arg(required = true)]
    paths: Vec<PathBuf>,

    /// Write each archive to the same relative path under OUTDIR
    /// (archives with nothing to repair are copied).
    #[arg(long, value_name = "OUTDIR", required_unless_present_any = ["in_place", "dry_run"], conflicts_with_all = ["in_place", "dry_run"])]
    out: Option<PathBuf>,

    /// Replace each archive, once its replacement is verified.
    #[arg(long, conflicts_with = "dry_run")]
    in_place: bool,

    /// With --in-place: keep each original beside it, named NAME+SUFFIX
    /// (and skip archives whose names end with SUFFIX: they are backups).
    #[arg(long, value_name = "SUFFIX", requires = "in_place", conflicts_with_all = ["dry_run", "out"])]
    backup: Option<String>,

    /// Write nothing but the report.
    #[arg(long)]
    dry_run: bool,

    /// What repaired layers compute (as for a single archive).
    #[arg(long, value_enum, default_value_t = Policy::Auto)]
    stats: Policy,

    /// Archives processed at once (default: the number of cores).
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,

    /// Follow symbolic links (loops are detected).
    #[arg(long)]
    follow_links: bool,

    /// Replace existing outputs under OUTDIR.
    #[arg(long)]
    force: bool,

    /// Write the run report to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,

    /// Format of the run report.
    #[arg(long, value_enum, default_value_t = ReportFormat::Json)]
    report_format: ReportFormat,

    /// Print nothing but errors; no progress bar.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ReportFormat {
    Json,
    Md,
}

/// Seconds one call into the HDF5 library may take before krepair gives
/// up on the file (`KREPAIR_HDF5_TIMEOUT` overrides). Reading a Keras
/// weights file's metadata takes milliseconds; the C library can loop
/// forever on a malformed one, and such a call cannot be interrupted.
const HDF5_TIMEOUT_SECS: u64 = 60;

fn start_hdf5_watchdog(what: String) {
    let limit = std::env::var("KREPAIR_HDF5_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map(std::time::Duration::from_secs_f64)
        .unwrap_or(std::time::Duration::from_secs(HDF5_TIMEOUT_SECS));
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_millis(50));
        if krepair::weights::busy_for().is_some_and(|t| t > limit) {
            eprintln!(
                "krepair: {what}: model.weights.h5: the HDF5 library did not finish within {:.0} s (a malformed file?); nothing was written",
                limit.as_secs_f64()
            );
            krepair::cleanup::remove_all();
            std::process::exit(EXIT_FAILURE as i32);
        }
    });
}

fn write_report(path: &Path, text: &str) -> bool {
    let res = if path == Path::new("-") {
        std::io::stdout().write_all(text.as_bytes())
    } else {
        std::fs::write(path, text)
    };
    match res {
        Ok(()) => true,
        Err(e) => {
            eprintln!("krepair: {}: cannot write report: {e}", path.display());
            false
        }
    }
}

fn main() -> ExitCode {
    let version: &'static str = Box::leak(long_version().into_boxed_str());
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
    match args.command {
        Some(Command::Batch(b)) => return ExitCode::from(run_batch(b)),
        Some(c) => return ExitCode::from(print_generated(&c)),
        None => {}
    }
    let input = args.input.clone().expect("clap requires INPUT");
    let opts = krepair::Options {
        input: input.clone(),
        output: if args.dry_run {
            None
        } else {
            args.output.clone()
        },
        policy: args.stats,
        force: args.force,
    };
    start_hdf5_watchdog(input.display().to_string());
    let run = krepair::run(&opts);
    let mut code = match run.report.outcome {
        Outcome::Repaired | Outcome::NothingToRepair => EXIT_OK,
        Outcome::WouldRepair => EXIT_WORK_FOUND,
        Outcome::Refused | Outcome::Failed => EXIT_FAILURE,
    };
    let report_to_stdout = args.report.as_deref() == Some(Path::new("-"));
    if let Some(path) = &args.report {
        if !write_report(path, &run.report.to_json()) {
            code = EXIT_FAILURE;
        }
    }
    if !args.quiet && !report_to_stdout {
        print!("{}", run.report.human());
    }
    if let Some(e) = &run.error {
        eprintln!("krepair: {e}");
    }
    ExitCode::from(code)
}

/// The progress bar: archives done of total, bytes, current file, ETA.
struct Bar {
    bar: indicatif::ProgressBar,
    done: AtomicUsize,
    total: usize,
}

impl batch::Progress for Bar {
    fn start(&self, job: &Job) {
        self.bar.set_message(job.input.display().to_string());
    }
    fn done(&self, job: &Job) {
        let n = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        self.bar.set_prefix(format!("{n}/{}", self.total));
        self.bar.inc(job.size);
    }
}

fn run_batch(b: BatchArgs) -> u8 {
    let mode = if b.dry_run {
        Mode::DryRun
    } else if b.in_place {
        Mode::InPlace {
            backup: b.backup.clone(),
        }
    } else {
        Mode::Out(b.out.clone().expect("clap requires --out"))
    };
    let exclude = match &mode {
        Mode::Out(d) => Some(d.as_path()),
        _ => None,
    };
    let mut walk = batch::walk(&b.paths, b.follow_links, exclude);
    if let Some(suffix) = b.backup.as_deref().filter(|s| !s.is_empty()) {
        // Backups from an earlier run are not archives to repair.
        let (backups, jobs): (Vec<_>, Vec<_>) = walk
            .jobs
            .into_iter()
            .partition(|j| j.input.to_string_lossy().ends_with(suffix));
        walk.jobs = jobs;
        walk.skipped.extend(backups.into_iter().map(|j| j.input));
    }
    for (p, e) in &walk.errors {
        eprintln!("krepair: {}: {e}", p.display());
    }
    let jobs = b
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let opts = BatchOptions {
        mode,
        policy: b.stats,
        jobs,
        force: b.force,
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                // A second Ctrl-C: leave now, without partial files.
                krepair::cleanup::remove_all();
                std::process::exit(EXIT_INTERRUPTED as i32);
            }
            eprintln!("krepair: interrupted: finishing the archives in progress (Ctrl-C again to stop now)");
        });
    }
    start_hdf5_watchdog("batch".into());
    let report_to_stdout = b.report.as_deref() == Some(Path::new("-"));
    let show = !b.quiet && !report_to_stdout && std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(batch::total_bytes(&walk)),
        if show {
            indicatif::ProgressDrawTarget::stderr()
        } else {
            indicatif::ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} archives  {bytes}/{total_bytes}  eta {eta}  {wide_msg}",
        )
        .expect("valid template"),
    );
    bar.set_prefix(format!("0/{}", walk.jobs.len()));
    let progress = Bar {
        bar,
        done: AtomicUsize::new(0),
        total: walk.jobs.len(),
    };
    let report = batch::run(&opts, &walk, &progress, &stop);
    progress.bar.finish_and_clear();
    let mut code = match report.worst() {
        Outcome::Failed | Outcome::Refused => EXIT_FAILURE,
        Outcome::WouldRepair => EXIT_WORK_FOUND,
        _ => EXIT_OK,
    };
    if !walk.errors.is_empty() {
        code = EXIT_FAILURE;
    }
    if let Some(path) = &b.report {
        let text = match b.report_format {
            ReportFormat::Json => report.to_json(),
            ReportFormat::Md => report.to_markdown(),
        };
        if !write_report(path, &text) {
            code = EXIT_FAILURE;
        }
    }
    if !b.quiet && !report_to_stdout {
        print!("{}", report.table());
    }
    for e in &report.entries {
        if let Some(err) = &e.error {
            eprintln!("krepair: {err}");
        }
    }
    if report.interrupted {
        return EXIT_INTERRUPTED;
    }
    code
}
