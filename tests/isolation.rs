//! One bad archive never stops a run, never hangs, never eats the machine
//! (docs/security.md, "Isolation"):
//! - hostile HDF5 structures at every depth a walk reaches (top level,
//!   under a nested Sequential, under a custom layer's attribute) are
//!   refused in bounded time and memory: each run gets `--timeout` and a
//!   small `--memory-limit`, and must end with the refusal itself, not with
//!   either limit;
//! - a batch with healthy archives, real hostile ones and workers made to
//!   crash, hang, exhaust their memory and panic (the test-only
//!   `KREPAIR_TEST_FAULT` switch) reports every archive, repairs the
//!   healthy ones, leaves no temporary file, and its peak memory (the
//!   largest of the run and its workers) stays within the budget.

// wait4 (peak memory of a run and its workers) and kill (SIGINT).
#![allow(unsafe_code)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Seconds and MiB every hostile run gets. A refusal must come well within
/// both; hitting either is a failure of the test.
const TIMEOUT: &str = "20";
const MEMORY_MIB: &str = "64";

/// Where the walks reach: a fixture and the group of its Normalization
/// layer (the one whose `vars` holds the statistics).
const SITES: &[(&str, &str, &str)] = &[
    ("top level", "axis_last", "layers/normalization"),
    (
        "under a nested Sequential",
        "nested_sequential",
        "layers/sequential/layers/normalization",
    ),
    ("under a custom layer", "custom_layer", "layers/scaler/norm"),
];

fn zip_to(dir: &Path, name: &str, m: &[(String, Vec<u8>)]) -> PathBuf {
    let p = dir.join(name);
    write_zip(&p, m);
    p
}

/// Run krepair on `input` (repair, or dry run with `out` None) under the
/// test's limits; return (exit code, stderr, seconds).
fn run_bounded(input: &Path, out: Option<&Path>) -> (i32, String, f64) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_krepair"));
    c.args(["-q", "--timeout", TIMEOUT, "--memory-limit", MEMORY_MIB]);
    c.env("TMPDIR", input.parent().unwrap());
    match out {
        Some(o) => c.arg(input).arg(o),
        None => c.arg("--dry-run").arg(input),
    };
    let start = Instant::now();
    let o = c.output().unwrap();
    (code(&o), stderr(&o), start.elapsed().as_secs_f64())
}

/// The archive is refused with one line containing `needle`, in repair
/// and in dry-run mode, without hitting the time or memory limit, and
/// nothing is left behind.
fn refused_in_bounds(input: &Path, needle: &str, what: &str) {
    let dir = input.parent().unwrap();
    let out = dir.join("out.keras");
    for mode in [Some(out.as_path()), None] {
        let (code, err, secs) = run_bounded(input, mode);
        let label = format!(
            "{what} ({})",
            if mode.is_some() { "repair" } else { "dry run" }
        );
        assert_eq!(code, 1, "{label}: {err}");
        assert_eq!(err.lines().count(), 1, "{label}: one line expected: {err}");
        assert!(
            err.contains(needle),
            "{label}: expected `{needle}` in: {err}"
        );
        assert!(
            !err.contains("did not finish within") && !err.contains("memory budget"),
            "{label}: ended by a limit, not refused: {err}"
        );
        assert!(secs < 15.0, "{label}: took {secs:.1} s");
        assert!(!out.exists(), "{label}: an output was written");
        let left = temp_files(dir);
        assert!(left.is_empty(), "{label}: temporary files left: {left:?}");
    }
}

#[test]
fn hostile_structures_at_every_depth_are_refused_in_bounded_time_and_memory() {
    type Edit = fn(&hdf5::File, &str);
    let cases: &[(&str, Edit, &str)] = &[
        (
            "hard-link loop",
            |f, g| f.group(g).unwrap().link_hard("/layers", "loop").unwrap(),
            "reached twice",
        ),
        (
            "deep groups",
            |f, g| {
                let mut p = g.to_string();
                for _ in 0..80 {
                    p.push_str("/d");
                    f.create_group(&p).unwrap();
                }
            },
            "nested deeper than 64",
        ),
        (
            "huge attribute count",
            |f, g| {
                let grp = f.group(g).unwrap();
                for i in 0..1_500 {
                    grp.new_attr::<u8>()
                        .create(format!("a{i}").as_str())
                        .unwrap();
                }
            },
            "more than the limit of 1000",
        ),
        (
            "null dataspace statistic",
            |f, g| {
                let vars = f.group(&format!("{g}/vars")).unwrap();
                vars.unlink("0").unwrap();
                vars.new_dataset::<f32>()
                    .shape(hdf5::Extents::Null)
                    .create("0")
                    .unwrap();
            },
            "null dataspace",
        ),
        (
            "null dataspace count",
            |f, g| {
                let vars = f.group(&format!("{g}/vars")).unwrap();
                vars.unlink("2").unwrap();
                vars.new_dataset::<i64>()
                    .shape(hdf5::Extents::Null)
                    .create("2")
                    .unwrap();
            },
            "null dataspace",
        ),
        (
            "empty dataspace statistic",
            |f, g| {
                let vars = f.group(&format!("{g}/vars")).unwrap();
                vars.unlink("1").unwrap();
                vars.new_dataset::<f32>().shape(0).create("1").unwrap();
            },
            "(variance) is float32 [0]",
        ),
        (
            "string statistic",
            |f, g| {
                let vars = f.group(&format!("{g}/vars")).unwrap();
                vars.unlink("0").unwrap();
                vars.new_dataset::<hdf5::types::VarLenUnicode>()
                    .shape(4)
                    .create("0")
                    .unwrap();
            },
            "(mean) is non-numeric [4]",
        ),
        (
            "wide-int statistic",
            |f, g| {
                let vars = f.group(&format!("{g}/vars")).unwrap();
                vars.unlink("1").unwrap();
                vars.new_dataset::<i64>().shape(4).create("1").unwrap();
            },
            "(variance) is int64 [4]",
        ),
    ];
    let t = tempfile::tempdir().unwrap();
    for (site, case, group) in SITES {
        for (what, edit, needle) in cases {
            let m = edit_h5(members(&fixture("3.15", case).archive()), |f| {
                edit(f, group)
            });
            let p = zip_to(t.path(), "in.keras", &m);
            refused_in_bounds(&p, needle, &format!("{what} {site}"));
        }
    }
}

/// The Normalization layer's `build_config` input shape, widened to
/// `features`, and its statistics replaced by chunked datasets that were
/// never written (they read back as fill values).
fn fill_value_bomb(case: &str, group: &str, features: usize) -> Vec<(String, Vec<u8>)> {
    let mut m = members(&fixture("3.15", case).archive());
    let cfg = m.iter_mut().find(|x| x.0 == "config.json").unwrap();
    let text = String::from_utf8(cfg.1.clone()).unwrap();
    let at = text.find(r#""class_name": "Normalization""#).unwrap();
    let key = r#""build_config": {"input_shape": ["#;
    let start = text[at..].find(key).unwrap() + at + key.len() - 1;
    let end = text[start..].find(']').unwrap() + start + 1;
    cfg.1 = format!("{}[null, {features}]{}", &text[..start], &text[end..]).into_bytes();
    edit_h5(m, |f| {
        let vars = f.group(&format!("{group}/vars")).unwrap();
        for ds in ["0", "1"] {
            vars.unlink(ds).unwrap();
            vars.new_dataset::<f32>()
                .shape(features)
                .chunk(1 << 16)
                .create(ds)
                .unwrap();
        }
    })
}

#[test]
fn fill_value_bombs_are_refused_before_anything_is_read() {
    let t = tempfile::tempdir().unwrap();
    for (site, case, group) in [SITES[0], SITES[2]] {
        let m = fill_value_bomb(case, group, 100_000_000);
        let p = zip_to(t.path(), "bomb.keras", &m);
        assert!(
            fs::metadata(&p).unwrap().len() < 64 << 10,
            "a small file declaring 400 MB of statistics"
        );
        refused_in_bounds(
            &p,
            "hold more than 1048576 values",
            &format!("fill-value bomb {site}"),
        );
    }
}

#[test]
fn chunked_fill_value_statistics_within_the_limit_are_read_exactly() {
    // Never-written chunked datasets are legal HDF5: they read as fill
    // values (0.0), so the variance is 0 and the layer is repaired with
    // those values. 300,000 values a statistic fit a 160 MiB budget (the
    // verification parses the 6 MB output config into a tree again).
    let t = tempfile::tempdir().unwrap();
    let m = fill_value_bomb("axis_last", "layers/normalization", 300_000);
    let budget = "160";
    let p = zip_to(t.path(), "fill.keras", &m);
    let out = t.path().join("out.keras");
    let o = Command::new(env!("CARGO_BIN_EXE_krepair"))
        .args([
            "--memory-limit",
            budget,
            "--timeout",
            TIMEOUT,
            "--stats",
            "adapted",
        ])
        .args(["--report", "-"])
        .arg(&p)
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mean = r["layers"][0]["embedded"]["mean"].as_array().unwrap();
    assert_eq!(mean.len(), 300_000);
    assert!(mean.iter().all(|v| v.as_f64() == Some(0.0)));
}

/// Spawn krepair with stdout and stderr to files; wait for it with wait4
/// and return (exit code, stdout, stderr, peak RSS in KiB of the process
/// and every worker it waited for).
fn run_measured(
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
    dir: &Path,
) -> (i32, String, String, i64) {
    let out_path = dir.join("stdout.txt");
    let err_path = dir.join("stderr.txt");
    let mut c = Command::new(env!("CARGO_BIN_EXE_krepair"));
    c.args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap());
    for (k, v) in env {
        c.env(k, v);
    }
    let child = c.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value; wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child; pointers are to live locals.
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(got, pid);
    std::mem::forget(child);
    assert!(libc::WIFEXITED(status), "krepair died: status {status}");
    (
        libc::WEXITSTATUS(status),
        fs::read_to_string(out_path).unwrap(),
        fs::read_to_string(err_path).unwrap(),
        ru.ru_maxrss,
    )
}

#[test]
fn a_batch_survives_crashes_hangs_memory_bombs_and_panics() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("models");
    fs::create_dir_all(&root).unwrap();
    let healthy = ["a-ok.keras", "m-ok.keras", "z-ok.keras"];
    for n in healthy {
        fs::copy(fixture("3.5", "efficientnet_stem").archive(), root.join(n)).unwrap();
    }
    for n in ["crash.keras", "hang.keras", "oom.keras", "panic.keras"] {
        fs::copy(fixture("3.15", "axis_last").archive(), root.join(n)).unwrap();
    }
    write_zip(
        &root.join("fill-bomb.keras"),
        &fill_value_bomb("custom_layer", "layers/scaler/norm", 100_000_000),
    );
    write_zip(
        &root.join("loop.keras"),
        &edit_h5(members(&fixture("3.15", "custom_layer").archive()), |f| {
            f.group("layers/scaler/norm")
                .unwrap()
                .link_hard("/layers", "loop")
                .unwrap()
        }),
    );
    fs::copy(
        root_dir().join("testdata/fuzz-regressions/hdf5-global-heap-hang.keras"),
        root.join("heap-hang.keras"),
    )
    .unwrap();
    let out = t.path().join("out");
    let report = t.path().join("run.json");
    let budget_mib = 256i64;
    let args: Vec<&std::ffi::OsStr> = vec![
        "batch".as_ref(),
        root.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--jobs".as_ref(),
        "2".as_ref(),
        "--timeout".as_ref(),
        "8".as_ref(),
        "--memory-limit".as_ref(),
        "256".as_ref(),
        "--report".as_ref(),
        report.as_os_str(),
        "-q".as_ref(),
    ];
    let start = Instant::now();
    let (code, _, err, peak_kib) = run_measured(
        &args,
        &[
            (
                "KREPAIR_TEST_FAULT",
                "crash@crash.keras,hang@hang.keras,oom@oom.keras,panic@panic.keras",
            ),
            ("TMPDIR", t.path().to_str().unwrap()),
        ],
        t.path(),
    );
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(code, 1, "{err}");
    let r: Value = serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
    let entries = r["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 10, "every archive has a row");
    assert_eq!(r["summary"]["archives"], 10);
    assert_eq!(r["summary"]["not_processed"], 0);
    let row = |name: &str| {
        entries
            .iter()
            .find(|e| e["path"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("no row for {name}"))
    };
    for n in healthy {
        assert_eq!(row(n)["outcome"], "repaired", "{n}");
        assert!(out.join(n).is_file(), "{n} written");
    }
    let expect = [
        ("crash.keras", "failed", "killed by SIGSEGV"),
        ("hang.keras", "failed", "did not finish within 8 s"),
        ("oom.keras", "failed", "ran out of its memory budget"),
        (
            "panic.keras",
            "failed",
            "internal error (please report it): injected panic",
        ),
        (
            "fill-bomb.keras",
            "refused",
            "hold more than 1048576 values",
        ),
        ("loop.keras", "failed", "reached twice"),
        ("heap-hang.keras", "failed", "did not finish within 8 s"),
    ];
    for (n, outcome, needle) in expect {
        let e = row(n);
        assert_eq!(e["outcome"], outcome, "{n}: {e}");
        let msg = e["error"].as_str().unwrap();
        assert!(msg.contains(needle), "{n}: expected `{needle}` in `{msg}`");
        assert_eq!(msg.lines().count(), 1);
        assert!(!out.join(n).exists(), "{n}: no output");
    }
    // Every failed archive is one line on stderr.
    assert_eq!(err.lines().count(), expect.len(), "{err}");
    for dir in [&root, &out, &t.path().to_path_buf()] {
        let left = temp_files(dir);
        assert!(
            left.is_empty(),
            "temporary files left in {}: {left:?}",
            dir.display()
        );
    }
    // The memory bomb was stopped at its budget: nothing in the run, the
    // workers included, grew past it (plus the binary's own few MiB).
    assert!(
        peak_kib < (budget_mib + 48) * 1024,
        "peak RSS {} MiB over a {budget_mib} MiB budget",
        peak_kib / 1024
    );
    // Two hangs of 8 s each, on two workers: bounded, not stuck.
    assert!(secs < 60.0, "the run took {secs:.1} s");
}

#[test]
fn a_single_archive_gets_the_same_isolation() {
    let t = tempfile::tempdir().unwrap();
    for (kind, code_want, needle) in [
        ("crash", 1, "killed by SIGSEGV"),
        ("oom", 1, "ran out of its memory budget"),
        ("panic", 1, "internal error"),
        ("hang", 1, "did not finish within 1 s"),
    ] {
        // Only the hang needs a short limit; the others must end on their
        // own, however loaded the machine.
        let timeout = if kind == "hang" { "1" } else { "60" };
        let input = t.path().join(format!("{kind}.keras"));
        fs::copy(fixture("3.15", "axis_last").archive(), &input).unwrap();
        let out = t.path().join("out.keras");
        let o = Command::new(env!("CARGO_BIN_EXE_krepair"))
            .env("KREPAIR_TEST_FAULT", format!("{kind}@{kind}.keras"))
            .env("TMPDIR", t.path())
            .args(["-q", "--timeout", timeout, "--memory-limit", "128"])
            .arg(&input)
            .arg(&out)
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(code(&o), code_want, "{kind}: {err}");
        assert_eq!(err.lines().count(), 1, "{kind}: {err}");
        assert!(err.contains(needle), "{kind}: {err}");
        assert!(err.contains(&input.display().to_string()), "{kind}: {err}");
        assert!(!out.exists());
        let left = names(t.path());
        assert_eq!(left, [format!("{kind}.keras")], "{kind}: files left");
        fs::remove_file(&input).unwrap();
    }
}

#[test]
fn ctrl_c_on_a_single_archive_removes_the_temporary_file() {
    // The worker hangs (the test-only fault), with a leftover under the
    // run's own temporary prefix as a dying worker could leave it; SIGINT
    // must kill the worker, remove the file and exit 130.
    let t = tempfile::tempdir().unwrap();
    let input = t.path().join("slow.keras");
    fs::copy(fixture("3.15", "axis_last").archive(), &input).unwrap();
    let out = t.path().join("out.keras");
    let mut child = Command::new(env!("CARGO_BIN_EXE_krepair"))
        .env("KREPAIR_TEST_FAULT", "hang@slow.keras")
        .env("TMPDIR", t.path())
        .args(["-q"])
        .arg(&input)
        .arg(&out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Make a leftover as a dead worker would, under the run's own prefix.
    std::thread::sleep(Duration::from_millis(500));
    let prefix = format!(".krepair-{}-0-", child.id());
    fs::write(t.path().join(format!("{prefix}abc.tmp")), b"partial").unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(130));
    let left = names(t.path());
    assert_eq!(left, ["slow.keras"], "temporary files left behind");
}

#[test]
fn a_closed_stdout_is_not_a_crash() {
    let f = fixture("3.5", "efficientnet_stem");
    for args in [vec!["--dry-run"], vec!["--dry-run", "--report", "-"]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_krepair"))
            .args(&args)
            .arg(f.archive())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(3), "{args:?}: {}", stderr(&o));
        assert!(o.stderr.is_empty(), "{args:?}: {}", stderr(&o));
    }
}

fn root_dir() -> PathBuf {
    root()
}
