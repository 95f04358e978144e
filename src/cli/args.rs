//! The command line as clap parses it: the raw flags (the first stage;
//! [`super::options`] validates them into the task to run), and the
//! checks of single values clap runs while parsing.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use krepair::run::worker::{Limits, DEFAULT_MEMORY_MIB, DEFAULT_TIMEOUT_SECS};
use krepair::Policy;

const EXAMPLES: &str = "\
Examples:
  krepair model.keras fixed.keras
      Repair model.keras into fixed.keras; print what was done.
  krepair migrate tf215.keras keras3.keras
      Make a tf.keras 2.12-2.15 archive load in Keras 3 (and repair it).
  krepair --dry-run model.keras
      Inspect only: exit 3 if a repair would change something, 0 if not.
  krepair --stats identity --report audit.json model.keras fixed.keras
      Make every adapt-mode Normalization layer compute identity, and
      write the audit report as JSON.
  krepair saved_model_dir out_dir
      Repair an unzipped .keras directory (model.save(..., zipped=False)).
  krepair batch experiments/ --out migrated/ --report run.md --report-format md
      Repair every archive under experiments/ into migrated/.
  krepair inspect model.keras
      Show the layers, their weights and what a repair would change.
  krepair diff model.keras fixed.keras
      Show what a repair changed (exit 0 same, 1 different, 2 trouble).

Exit codes: 0 repaired or nothing to repair, 1 failure (nothing written),
2 usage error, 3 dry run found work, 4 output written but not the report,
130 interrupted.
See docs/exit-codes.md.";

/// Repair Keras .keras archives whose Normalization or Discretization
/// layers depend on finalize_state() (keras #20147).
///
/// For each adapt-mode Normalization layer, krepair reads the stored
/// statistics, chooses what the layer must compute, and embeds it in the
/// layer config, so every Keras version loads the model computing the same
/// normalization it computed when it was saved. For each adapted
/// Discretization (tf.keras 2.12-2.15), it computes the bin boundaries from
/// the stored summary as tf.keras does and embeds them. The input is never
/// written.
#[derive(Parser, Debug)]
#[command(
    name = "krepair",
    version,
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub archive: ArchiveArgs,
}

/// One archive: the arguments of `krepair IN OUT` and `krepair migrate`.
#[derive(clap::Args, Debug)]
pub struct ArchiveArgs {
    /// The .keras archive (zip file or unzipped directory) to repair.
    #[arg(required = true)]
    pub input: Option<PathBuf>,

    /// Where to write the repaired archive (same form as the input).
    /// Required unless --dry-run (which checks it as the real run would,
    /// and writes nothing).
    #[arg(required_unless_present = "dry_run")]
    pub output: Option<PathBuf>,

    /// What repaired layers compute: `auto` (what the model computed when it
    /// was saved), `adapted` (the stored statistics) or `identity` (mean 0,
    /// variance 1).
    #[arg(long, value_enum, default_value_t = Policy::Auto)]
    pub stats: Policy,

    /// Inspect and plan only; create no file (except --report). Takes the
    /// real run's command line: an OUTPUT is checked (not the input, not
    /// existing without --force) but not written.
    #[arg(long)]
    pub dry_run: bool,

    /// Write the audit report as JSON to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Replace OUTPUT if it exists.
    #[arg(long)]
    pub force: bool,

    /// The Keras 3 versions a Keras 3 archive's output must load in: `all`
    /// (every pinned Keras 3 and the pinned pre-release), or versions and
    /// ranges by MAJOR.MINOR, comma-separated (`3.10..`, `..3.15`,
    /// `3.5..3.13`, `3.15,3.16`). What no form serves in all of them is
    /// reported (`not-loadable-in`).
    #[arg(long, value_name = "VERSIONS", default_value = "all", value_parser = load_in)]
    pub load_in: u32,

    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,

    #[command(flatten)]
    pub limits: LimitArgs,
}

/// `--load-in`: the versions, as a mask.
fn load_in(s: &str) -> Result<u32, String> {
    if s == "all" {
        // The default: no need to read the table for archives that are
        // not Keras 3's.
        return Ok(krepair::passes::keras3::Targets::ALL);
    }
    krepair::passes::keras3::Targets::parse(s).map(|t| t.mask())
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Migrate a tf.keras 2.12-2.15 .keras archive so that Keras 3 (3.0 to
    /// 3.15) loads it, and repair its Normalization layers in the same run.
    ///
    /// Every rewrite of config.json is in the report with its rule, old and
    /// new value (docs/migration.md). What has no verified rule yet
    /// (legacy optimizers, layer classes beyond the known ones, ...) is refused with the layer and the reason, and nothing is
    /// written. A Keras 3 archive is repaired as `krepair IN OUT` would.
    Migrate(ArchiveArgs),

    /// Show what is inside an archive: members, the layer tree with each
    /// layer's weights group and variables, and what `krepair` and
    /// `krepair migrate` would change.
    ///
    /// Takes .keras zips, unzipped .keras directories and bare
    /// .weights.h5 files. Reads headers only, never a variable's values.
    /// `--json` prints the manifest (docs/inspect.md).
    Inspect(InspectArgs),

    /// Show what differs between two archives (or two .weights.h5 files):
    /// config changes by layer and key, variables added, removed or
    /// changed (for equal shapes, the largest absolute and relative
    /// difference), members and metadata.
    ///
    /// Exit codes as diff(1): 0 the same, 1 different, 2 trouble (a file
    /// that cannot be read, a usage error).
    Diff(DiffArgs),

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

    /// Work with run reports and journals of `krepair batch`.
    #[command(subcommand)]
    Report(ReportCommand),

    /// Print the manual page (roff) to stdout: `krepair man | man -l -`.
    Man,
}

/// `krepair inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The .keras archive (zip or directory) or .weights.h5 file.
    pub file: PathBuf,

    /// Print the manifest as JSON (docs/inspect.md) instead of a tree.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub limits: LimitArgs,
}

/// `krepair diff`.
#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// The old archive (zip or directory) or .weights.h5 file.
    pub a: PathBuf,

    /// The new one.
    pub b: PathBuf,

    /// Print the differences as JSON (docs/inspect.md) instead of text.
    #[arg(long)]
    pub json: bool,

    /// Values that differ by at most X (absolutely) count as equal.
    #[arg(long, value_name = "X", default_value_t = 0.0, value_parser = tolerance)]
    pub tolerance: f64,

    #[command(flatten)]
    pub limits: LimitArgs,
}

fn tolerance(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a number of 0 or more")),
    }
}

#[derive(Subcommand, Debug)]
pub enum ReportCommand {
    /// Merge the journals or run reports of several shards (or of a run
    /// and its resumptions) into one run report.
    ///
    /// Fails, writing nothing, if the inputs disagree: a different mode or
    /// --stats, or the same archive with two different outcomes.
    Merge {
        /// Journals (`--report-format jsonl`) or JSON run reports.
        #[arg(required = true)]
        files: Vec<PathBuf>,

        /// Format of the merged report.
        #[arg(long, value_enum, default_value_t = MergeFormat::Json)]
        format: MergeFormat,

        /// Write the merged report to FILE (default: stdout).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MergeFormat {
    Json,
    Md,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// The version line: krepair's version and the HDF5 library it runs with
/// (bundled and linked in, or the system's shared library).
pub fn long_version() -> String {
    let (a, b, c) = hdf5::library_version();
    let how = if cfg!(feature = "static") {
        "bundled, statically linked"
    } else {
        "system library"
    };
    format!("{} (HDF5 {a}.{b}.{c}, {how})", env!("CARGO_PKG_VERSION"))
}

#[derive(clap::Args, Debug)]
pub struct BatchArgs {
    /// Files and directories to walk (recursively, in sorted order).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,

    /// Write each archive to the same relative path under OUTDIR
    /// (archives with nothing to repair are copied). With --dry-run, each
    /// output there is checked as the real run would check it.
    #[arg(long, value_name = "OUTDIR", required_unless_present_any = ["in_place", "dry_run"], conflicts_with = "in_place")]
    pub out: Option<PathBuf>,

    /// Replace each archive, once its replacement is verified (with
    /// --dry-run: plan only).
    #[arg(long)]
    pub in_place: bool,

    /// With --in-place: keep each original beside it, named NAME+SUFFIX
    /// (and skip archives whose names end with SUFFIX: they are backups).
    #[arg(long, value_name = "SUFFIX", requires = "in_place", conflicts_with = "out", value_parser = backup_suffix)]
    pub backup: Option<String>,

    /// Write nothing but the report. Takes the real run's command line
    /// (--out, --in-place, --backup).
    #[arg(long)]
    pub dry_run: bool,

    /// Also migrate tf.keras 2.13-2.15 archives to Keras 3 (as `krepair
    /// migrate`).
    #[arg(long)]
    pub migrate: bool,

    /// The Keras 3 versions every output must load in (as `krepair IN
    /// OUT --load-in`).
    #[arg(long, value_name = "VERSIONS", default_value = "all", value_parser = load_in)]
    pub load_in: u32,

    /// What repaired layers compute (as for a single archive).
    #[arg(long, value_enum, default_value_t = Policy::Auto)]
    pub stats: Policy,

    /// Archives processed at once (default: the number of cores).
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,

    /// Follow symbolic links (loops are detected).
    #[arg(long)]
    pub follow_links: bool,

    /// Replace existing outputs under OUTDIR.
    #[arg(long)]
    pub force: bool,

    /// Write the run report to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Format of the run report: `json` and `md` are written at the end;
    /// `jsonl` is a journal, one line per archive written as it finishes,
    /// then a summary line (a killed run leaves every finished line).
    #[arg(long, value_enum, default_value_t = ReportFormat::Json)]
    pub report_format: ReportFormat,

    /// Process only shard K of N (1 <= K <= N): a pure function of each
    /// archive's path relative to its root, so N runs cover every archive
    /// once. Kubernetes Indexed Jobs: K = JOB_COMPLETION_INDEX + 1.
    #[arg(long, value_name = "K/N", value_parser = krepair::run::batch::Shard::parse)]
    pub shard: Option<krepair::run::batch::Shard>,

    /// Skip the archives a journal or run report (of an earlier, perhaps
    /// killed, run) records as finished, if their files are unchanged
    /// (size, modification time and SHA-256); failed ones are done again.
    #[arg(long, value_name = "JOURNAL")]
    pub resume: Option<PathBuf>,

    /// Print nothing but errors; no progress bar.
    #[arg(short, long)]
    pub quiet: bool,

    #[command(flatten)]
    pub limits: LimitArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ReportFormat {
    Json,
    Md,
    Jsonl,
}

/// The per-archive bounds, shared by the single-archive command and batch.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct LimitArgs {
    /// Stop an archive that takes longer than SECS (wall clock), with
    /// nothing written.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT_SECS as f64, value_parser = positive_secs)]
    pub timeout: f64,

    /// Memory budget for one archive, in MiB (beyond the mapped weights):
    /// an archive that needs more is stopped, with nothing written.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_MEMORY_MIB, value_parser = clap::value_parser!(u64).range(16..=1 << 24))]
    pub memory_limit: u64,
}

impl LimitArgs {
    /// The library's limits.
    pub fn limits(&self) -> Limits {
        Limits {
            timeout: Duration::from_secs_f64(self.timeout),
            memory: self.memory_limit << 20,
        }
    }
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1e7 => Ok(v),
        _ => Err(format!("`{s}` is not a number of seconds above 0")),
    }
}

/// `--backup SUFFIX`: a non-empty file-name suffix.
fn backup_suffix(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("the suffix must not be empty (the backup would be the archive itself)".into())
    } else if s.contains('/') || s.contains('\0') {
        Err("the suffix must be part of a file name, with no `/`".into())
    } else {
        Ok(s.to_string())
    }
}
