//! The `krepair` binary: parse arguments, run the pipeline, print, and map
//! the outcome to an exit code (docs/exit-codes.md). The only place that
//! prints or exits.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use krepair::{Outcome, Policy};

/// Exit code: repaired, or nothing to repair.
const EXIT_OK: u8 = 0;
/// Exit code: krepair could not do its job (bad input, refused layer, I/O).
const EXIT_FAILURE: u8 = 1;
/// Exit code: bad command line (clap's convention).
const EXIT_USAGE: u8 = 2;
/// Exit code: a dry run found something to repair.
const EXIT_WORK_FOUND: u8 = 3;

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

Exit codes: 0 repaired or nothing to repair, 1 failure (nothing written),
2 usage error, 3 dry run found work. See docs/exit-codes.md.";

/// Repair Keras .keras archives whose Normalization layers depend on
/// finalize_state() (keras #20147).
///
/// For each adapt-mode Normalization layer, krepair reads the stored
/// statistics, chooses what the layer must compute, and embeds it in the
/// layer config, so every Keras version loads the model computing the same
/// normalization it computed when it was saved. The input is never written.
#[derive(Parser, Debug)]
#[command(name = "krepair", version, after_help = EXAMPLES)]
struct Args {
    /// The .keras archive (zip file or unzipped directory) to repair.
    input: PathBuf,

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

/// Seconds one call into the HDF5 library may take before krepair gives
/// up on the file (`KREPAIR_HDF5_TIMEOUT` overrides). Reading a Keras
/// weights file's metadata takes milliseconds; the C library can loop
/// forever on a malformed one, and such a call cannot be interrupted.
const HDF5_TIMEOUT_SECS: u64 = 60;

fn start_hdf5_watchdog(input: &std::path::Path) {
    let limit = std::env::var("KREPAIR_HDF5_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map(std::time::Duration::from_secs_f64)
        .unwrap_or(std::time::Duration::from_secs(HDF5_TIMEOUT_SECS));
    let input = input.to_path_buf();
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_millis(50));
        if krepair::weights::busy_for().is_some_and(|t| t > limit) {
            eprintln!(
                "krepair: {}: model.weights.h5: the HDF5 library did not finish within {:.0} s (a malformed file?); nothing was written",
                input.display(),
                limit.as_secs_f64()
            );
            krepair::cleanup::remove_all();
            std::process::exit(EXIT_FAILURE as i32);
        }
    });
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    let opts = krepair::Options {
        input: args.input.clone(),
        output: if args.dry_run {
            None
        } else {
            args.output.clone()
        },
        policy: args.stats,
        force: args.force,
    };
    start_hdf5_watchdog(&args.input);
    let run = krepair::run(&opts);
    let mut code = match run.report.outcome {
        Outcome::Repaired | Outcome::NothingToRepair => EXIT_OK,
        Outcome::WouldRepair => EXIT_WORK_FOUND,
        Outcome::Refused | Outcome::Failed => EXIT_FAILURE,
    };
    let report_to_stdout = args.report.as_deref() == Some(std::path::Path::new("-"));
    if let Some(path) = &args.report {
        let json = run.report.to_json();
        let res = if report_to_stdout {
            std::io::stdout().write_all(json.as_bytes())
        } else {
            std::fs::write(path, json)
        };
        if let Err(e) = res {
            eprintln!("krepair: {}: cannot write report: {e}", path.display());
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
