//! The second stage of the command line: clap's raw [`Args`] become one
//! validated [`Task`], with every combination that clap cannot check
//! refused here as a usage error (exit 2), before any file is touched.

use std::path::PathBuf;

use krepair::run::batch::{Mode, Shard};
use krepair::run::worker::Limits;
use krepair::{Options, Policy};

use super::args::{
    ArchiveArgs, Args, BatchArgs, Command, DiffArgs, InspectArgs, MergeFormat, ReportCommand,
    ReportFormat, Shell,
};

/// What the command line asks for.
#[derive(Debug)]
pub enum Task {
    /// `krepair IN OUT` (`migrate` false) or `krepair migrate IN OUT`.
    Single(Single),
    /// `krepair inspect FILE`.
    Inspect {
        /// The file.
        file: PathBuf,
        /// `--json`.
        json: bool,
        /// Per-archive bounds.
        limits: Limits,
    },
    /// `krepair diff A B`.
    Diff {
        /// The old file.
        a: PathBuf,
        /// The new one.
        b: PathBuf,
        /// `--json`.
        json: bool,
        /// `--tolerance`.
        tolerance: f64,
        /// Per-archive bounds.
        limits: Limits,
    },
    /// `krepair batch`.
    Batch(Box<Batch>),
    /// `krepair report merge`.
    Merge {
        /// Journals or run reports.
        files: Vec<PathBuf>,
        /// `--format`.
        format: MergeFormat,
        /// Where to write the merged report (`-` for stdout).
        output: PathBuf,
    },
    /// `krepair completions SHELL`.
    Completions(Shell),
    /// `krepair man`.
    Man,
}

/// One archive, repaired or migrated.
#[derive(Debug)]
pub struct Single {
    /// What the library runs (no output for a dry run).
    pub opts: Options,
    /// A dry run's OUTPUT, checked as the real run would check it.
    pub check_output: Option<PathBuf>,
    /// `--report FILE`.
    pub report: Option<PathBuf>,
    /// `--quiet`.
    pub quiet: bool,
    /// Per-archive bounds.
    pub limits: Limits,
}

/// A batch run.
#[derive(Debug)]
pub struct Batch {
    /// Roots to walk.
    pub paths: Vec<PathBuf>,
    /// `--follow-links`.
    pub follow_links: bool,
    /// Where outputs go.
    pub mode: Mode,
    /// A dry run's `--out`, checked as the real run would check it.
    pub check_out: Option<PathBuf>,
    /// `--shard K/N`.
    pub shard: Option<Shard>,
    /// `--backup SUFFIX` (with `--in-place`).
    pub backup: Option<String>,
    /// Archives at once.
    pub jobs: usize,
    /// `--stats`.
    pub policy: Policy,
    /// `--force`.
    pub force: bool,
    /// `--migrate`.
    pub migrate: bool,
    /// `--load-in`, as a mask.
    pub load_in: u32,
    /// `--resume JOURNAL`.
    pub resume: Option<PathBuf>,
    /// The run report's destination and format; a journal (`jsonl`)
    /// always has a destination.
    pub report: Option<PathBuf>,
    /// `--report-format`.
    pub report_format: ReportFormat,
    /// `--quiet`.
    pub quiet: bool,
    /// Per-archive bounds.
    pub limits: Limits,
}

/// A command line that clap accepted but that asks for something krepair
/// cannot do: the one-line message (without the `krepair: ` prefix).
#[derive(Debug, PartialEq, Eq)]
pub struct Usage(pub String);

impl Task {
    /// Validate what clap parsed.
    pub fn from_args(args: Args) -> Result<Task, Usage> {
        Ok(match args.command {
            None => Task::Single(single(args.archive, false)?),
            Some(Command::Migrate(a)) => Task::Single(single(a, true)?),
            Some(Command::Inspect(InspectArgs { file, json, limits })) => Task::Inspect {
                file,
                json,
                limits: limits.limits(),
            },
            Some(Command::Diff(DiffArgs {
                a,
                b,
                json,
                tolerance,
                limits,
            })) => Task::Diff {
                a,
                b,
                json,
                tolerance,
                limits: limits.limits(),
            },
            Some(Command::Batch(b)) => Task::Batch(Box::new(batch(b)?)),
            Some(Command::Report(ReportCommand::Merge {
                files,
                format,
                output,
            })) => Task::Merge {
                files,
                format,
                output: output.unwrap_or_else(|| PathBuf::from("-")),
            },
            Some(Command::Completions { shell }) => Task::Completions(shell),
            Some(Command::Man) => Task::Man,
        })
    }
}

fn single(args: ArchiveArgs, migrate: bool) -> Result<Single, Usage> {
    let Some(input) = args.input else {
        return Err(Usage("no INPUT given (see --help)".into()));
    };
    let (output, check_output) = if args.dry_run {
        (None, args.output)
    } else {
        (args.output, None)
    };
    Ok(Single {
        opts: Options {
            input,
            output,
            policy: args.stats,
            force: args.force,
            migrate,
            load_in: args.load_in,
        },
        check_output,
        report: args.report,
        quiet: args.quiet,
        limits: args.limits.limits(),
    })
}

fn batch(b: BatchArgs) -> Result<Batch, Usage> {
    let mode = if b.dry_run {
        Mode::DryRun
    } else if b.in_place {
        Mode::InPlace {
            backup: b.backup.clone(),
        }
    } else if let Some(out) = b.out.clone() {
        Mode::Out(out)
    } else {
        return Err(Usage(
            "batch needs --out OUTDIR, --in-place or --dry-run".into(),
        ));
    };
    if matches!(b.report_format, ReportFormat::Jsonl) && b.report.is_none() {
        return Err(Usage(
            "--report-format jsonl needs --report FILE (or -)".into(),
        ));
    }
    // A dry run takes the real run's command line: given --out, it checks
    // the outputs there as the real run would.
    let check_out = b.out.filter(|_| b.dry_run);
    let jobs = b
        .jobs
        .map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    Ok(Batch {
        paths: b.paths,
        follow_links: b.follow_links,
        mode,
        check_out,
        shard: b.shard,
        backup: b.backup,
        jobs,
        policy: b.stats,
        force: b.force,
        migrate: b.migrate,
        load_in: b.load_in,
        resume: b.resume,
        report: b.report,
        report_format: b.report_format,
        quiet: b.quiet,
        limits: b.limits.limits(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn task(argv: &[&str]) -> Result<Task, Usage> {
        let args = Args::try_parse_from(std::iter::once("krepair").chain(argv.iter().copied()))
            .expect("clap accepts it");
        Task::from_args(args)
    }

    #[test]
    fn a_repair_has_an_output_and_a_dry_run_only_checks_it() {
        let Ok(Task::Single(s)) = task(&["in.keras", "out.keras"]) else {
            panic!("not a single task")
        };
        assert_eq!(s.opts.output, Some(PathBuf::from("out.keras")));
        assert_eq!(s.check_output, None);
        assert!(!s.opts.migrate);
        let Ok(Task::Single(s)) = task(&["--dry-run", "in.keras", "out.keras"]) else {
            panic!("not a single task")
        };
        assert_eq!(s.opts.output, None);
        assert_eq!(s.check_output, Some(PathBuf::from("out.keras")));
        let Ok(Task::Single(s)) = task(&["migrate", "--dry-run", "in.keras"]) else {
            panic!("not a single task")
        };
        assert!(s.opts.migrate);
        assert_eq!((s.opts.output, s.check_output), (None, None));
    }

    #[test]
    fn limits_become_the_library_s_bounds() {
        let Ok(Task::Inspect { limits, .. }) = task(&[
            "inspect",
            "--timeout",
            "2.5",
            "--memory-limit",
            "64",
            "m.keras",
        ]) else {
            panic!("not an inspect task")
        };
        assert_eq!(limits.timeout, std::time::Duration::from_millis(2500));
        assert_eq!(limits.memory, 64 << 20);
    }

    #[test]
    fn batch_modes() {
        let Ok(Task::Batch(b)) = task(&["batch", "d", "--out", "o"]) else {
            panic!("not a batch")
        };
        assert!(matches!(&b.mode, Mode::Out(p) if p == &PathBuf::from("o")));
        assert_eq!(b.check_out, None);
        let Ok(Task::Batch(b)) = task(&["batch", "d", "--out", "o", "--dry-run"]) else {
            panic!("not a batch")
        };
        assert!(matches!(b.mode, Mode::DryRun));
        assert_eq!(b.check_out, Some(PathBuf::from("o")));
        let Ok(Task::Batch(b)) = task(&["batch", "d", "--in-place", "--backup", ".bak", "-j", "3"])
        else {
            panic!("not a batch")
        };
        assert!(matches!(&b.mode, Mode::InPlace { backup: Some(s) } if s == ".bak"));
        assert_eq!(b.jobs, 3);
    }

    #[test]
    fn a_journal_needs_a_destination() {
        assert_eq!(
            task(&["batch", "d", "--dry-run", "--report-format", "jsonl"]).unwrap_err(),
            Usage("--report-format jsonl needs --report FILE (or -)".into())
        );
        assert!(task(&[
            "batch",
            "d",
            "--dry-run",
            "--report-format",
            "jsonl",
            "--report",
            "-"
        ])
        .is_ok());
    }

    #[test]
    fn merge_writes_to_stdout_by_default() {
        let Ok(Task::Merge { output, files, .. }) = task(&["report", "merge", "a.jsonl"]) else {
            panic!("not a merge")
        };
        assert_eq!(output, PathBuf::from("-"));
        assert_eq!(files, vec![PathBuf::from("a.jsonl")]);
    }
}
