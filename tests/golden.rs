//! Golden files for everything krepair prints: the human summary, the
//! JSON audit report, the run report (JSON, Markdown, table and journal),
//! `inspect` and `diff` (text and JSON), and a refusal's stderr, each with
//! its exit code, on committed fixtures. `KREPAIR_BLESS=1 cargo test
//! --test golden` rewrites tests/golden/ after a deliberate change; review
//! the diff like code.
//!
//! Each command runs in a fresh folder holding copies of the fixtures
//! under fixed relative names (their modification times fixed too), so
//! every path and fingerprint in the output is the same text on every
//! machine.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use common::{golden, root};

/// The fixtures the goldens use, with the names they get in the folder.
const INPUTS: &[(&str, &str)] = &[
    (
        "testdata/fixtures/keras-3.6/axis_none/model.keras",
        "in/axis_none.keras",
    ),
    (
        "testdata/fixtures/keras-3.5/efficientnet_stem/model.keras",
        "in/stem.keras",
    ),
    (
        "testdata/fixtures/keras-tf2.15/compiled_adam/model.keras",
        "in/adam.keras",
    ),
    (
        "testdata/fixtures/migrate-tf2.13/discretization/model.keras",
        "in/disc.keras",
    ),
    (
        "testdata/fixtures/keras-3.6/no_norm/model.keras",
        "in/no_norm.keras",
    ),
    (
        "testdata/refusals/discretization_renumbering.keras",
        "in/renumbering.keras",
    ),
];

/// A folder with the inputs copied in, each modified at the same instant.
fn workdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (src, dst) in INPUTS {
        let to = d.path().join(dst);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(root().join(src), &to).unwrap();
        let f = fs::File::options().write(true).open(&to).unwrap();
        f.set_modified(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
            .unwrap();
    }
    d
}

/// Run krepair in `dir`; its exit code, stdout and stderr as one text.
fn run(dir: &Path, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_krepair"))
        .args(args)
        .current_dir(dir)
        .env_remove("KREPAIR_TIMINGS")
        .output()
        .unwrap();
    format!(
        "$ krepair {}\nexit: {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn repair_summary_and_audit_report() {
    let d = workdir();
    let p = d.path();
    golden(
        "repair-summary.txt",
        &run(p, &["in/axis_none.keras", "out.keras"]),
    );
    golden(
        "repair-report.json.txt",
        &run(p, &["in/stem.keras", "stem.keras", "--report", "-"]),
    );
    golden(
        "dry-run-report.json.txt",
        &run(p, &["--dry-run", "in/axis_none.keras", "--report", "-"]),
    );
    golden(
        "nothing-to-repair.txt",
        &run(p, &["in/no_norm.keras", "copy.keras"]),
    );
}

#[test]
fn the_human_summary_says_what_and_why() {
    let d = workdir();
    let p = d.path();
    golden(
        "human-summary-stem.txt",
        &run(p, &["in/stem.keras", "stem-fixed.keras"]),
    );
    // --quiet: nothing at all, the same exit code.
    golden(
        "quiet.txt",
        &run(p, &["-q", "--force", "in/stem.keras", "stem-fixed.keras"]),
    );
}

#[test]
fn migrate_summary_and_report() {
    let d = workdir();
    let p = d.path();
    golden(
        "migrate-summary.txt",
        &run(p, &["migrate", "in/adam.keras", "adam3.keras"]),
    );
    golden(
        "migrate-report.json.txt",
        &run(
            p,
            &["migrate", "in/disc.keras", "disc3.keras", "--report", "-"],
        ),
    );
    golden(
        "repair-tf2.13-discretization.txt",
        &run(p, &["in/disc.keras", "disc-repaired.keras"]),
    );
    golden(
        "refused.txt",
        &run(p, &["migrate", "in/renumbering.keras", "renumbered.keras"]),
    );
}

#[test]
fn inspect_and_diff() {
    let d = workdir();
    let p = d.path();
    golden("inspect.txt", &run(p, &["inspect", "in/adam.keras"]));
    golden(
        "inspect.json.txt",
        &run(p, &["inspect", "--json", "in/axis_none.keras"]),
    );
    run(p, &["in/axis_none.keras", "fixed.keras"]);
    golden(
        "diff.txt",
        &run(p, &["diff", "in/axis_none.keras", "fixed.keras"]),
    );
    golden(
        "diff.json.txt",
        &run(p, &["diff", "--json", "in/axis_none.keras", "fixed.keras"]),
    );
}

#[test]
fn batch_run_reports() {
    let d = workdir();
    let p = d.path();
    let bytes = fs::read(p.join("in/stem.keras")).unwrap();
    fs::write(p.join("in/truncated.keras"), &bytes[..bytes.len() / 2]).unwrap();
    let f = fs::File::options()
        .write(true)
        .open(p.join("in/truncated.keras"))
        .unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .unwrap();
    golden(
        "batch-table.txt",
        &run(p, &["batch", "in", "--out", "out", "--jobs", "1"]),
    );
    golden(
        "batch-report.json.txt",
        &run(
            p,
            &["batch", "in", "--dry-run", "--jobs", "1", "--report", "-"],
        ),
    );
    golden(
        "batch-report.md.txt",
        &run(
            p,
            &[
                "batch",
                "in",
                "--dry-run",
                "--jobs",
                "1",
                "--report",
                "-",
                "--report-format",
                "md",
            ],
        ),
    );
    golden(
        "batch-journal.jsonl.txt",
        &run(
            p,
            &[
                "batch",
                "in",
                "--migrate",
                "--dry-run",
                "--jobs",
                "1",
                "--report",
                "-",
                "--report-format",
                "jsonl",
            ],
        ),
    );
}

#[test]
fn usage_errors() {
    let d = workdir();
    let p = d.path();
    golden(
        "usage-jsonl.txt",
        &run(p, &["batch", "in", "--dry-run", "--report-format", "jsonl"]),
    );
    golden("usage-no-output.txt", &run(p, &["in/axis_none.keras"]));
    let bytes = fs::read(p.join("in/stem.keras")).unwrap();
    fs::write(p.join("cut.keras"), &bytes[..bytes.len() - 30]).unwrap();
    golden("malformed.txt", &run(p, &["cut.keras", "cut-out.keras"]));
}
