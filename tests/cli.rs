//! The command-line contract: exit codes, refusals with one clear line,
//! no partial output, the input never written.

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// Exit codes (docs/exit-codes.md).
const OK: i32 = 0;
const FAILURE: i32 = 1;
const USAGE: i32 = 2;
const WORK_FOUND: i32 = 3;

/// The directory holds nothing but `keep`.
fn only(dir: &std::path::Path, keep: &[&str]) {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut want: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(
        names, want,
        "unexpected files (partial or temporary output?)"
    );
}

fn damaged(
    case: &str,
    f: impl FnOnce(&mut Vec<(String, Vec<u8>)>),
) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("in.keras");
    derive(&fixture("3.15", case).archive(), &p, f);
    (tmp, p)
}

fn set_weights(m: &mut [(String, Vec<u8>)], edit: impl FnOnce(&krepair::weights::Weights)) {
    let w = m.iter_mut().find(|x| x.0 == "model.weights.h5").unwrap();
    w.1 = edit_weights(&w.1, edit);
}

fn set_stat(
    group: &'static str,
    ds: &'static str,
    index: usize,
    value: f32,
) -> impl FnOnce(&krepair::weights::Weights) {
    move |w| {
        let path = format!("{group}/{ds}");
        let mut t = w.read_f32(&path, 1 << 20).unwrap();
        t.data[index] = value;
        w.write_f32(&path, &t).unwrap();
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(code(&krepair(&[])), USAGE);
    let f = fixture("3.5", "axis_last");
    assert_eq!(
        code(&krepair(&[&f.archive()])),
        USAGE,
        "output required without --dry-run"
    );
    assert_eq!(
        code(&krepair(&[&"--stats", &"bogus", &f.archive(), &"/tmp/x"])),
        USAGE
    );
    assert_eq!(code(&krepair(&[&"--no-such-flag", &f.archive()])), USAGE);
}

#[test]
fn help_and_version() {
    let o = krepair(&[&"--help"]);
    assert_eq!(code(&o), OK);
    let help = String::from_utf8(o.stdout).unwrap();
    for needle in [
        "Examples:",
        "--stats",
        "--dry-run",
        "--report",
        "Exit codes",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
    let o = krepair(&[&"--version"]);
    assert_eq!(code(&o), OK);
    let line = String::from_utf8(o.stdout).unwrap();
    // "krepair 0.2.0 (HDF5 1.10.8, system library)"
    let (a, b, c) = hdf5::library_version();
    let want = format!(
        "krepair {} (HDF5 {a}.{b}.{c}, {})\n",
        env!("CARGO_PKG_VERSION"),
        if cfg!(feature = "static") {
            "bundled, statically linked"
        } else {
            "system library"
        }
    );
    assert_eq!(line, want);
    assert!(a >= 1, "a real HDF5 version: {line}");
}

/// The committed completion scripts and man page are what the binary
/// generates from its parser; `KREPAIR_BLESS=1 cargo test` rewrites them.
#[test]
fn completions_and_man_page_match_the_parser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cases: [(&[&str], &str, &[&str]); 4] = [
        (
            &["completions", "bash"],
            "docs/completions/krepair.bash",
            &["--dry-run", "--stats", "batch", "--in-place"],
        ),
        (
            &["completions", "zsh"],
            "docs/completions/_krepair",
            &["--dry-run", "--stats", "batch", "--in-place"],
        ),
        (
            &["completions", "fish"],
            "docs/completions/krepair.fish",
            &["dry-run", "stats", "batch", "in-place"],
        ),
        (
            &["man"],
            "docs/man/krepair.1",
            &[".TH krepair 1", "dry\\-run", "Exit codes"],
        ),
    ];
    for (args, file, needles) in cases {
        let argv: Vec<&dyn AsRef<std::ffi::OsStr>> = args
            .iter()
            .map(|a| a as &dyn AsRef<std::ffi::OsStr>)
            .collect();
        let o = krepair(&argv);
        assert_eq!(code(&o), OK, "{args:?}: {}", stderr(&o));
        let text = String::from_utf8(o.stdout).unwrap();
        for n in needles {
            assert!(text.contains(n), "{args:?} lacks {n}");
        }
        let path = root.join(file);
        if std::env::var_os("KREPAIR_BLESS").is_some() {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, &text).unwrap();
        }
        let committed = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{file}: {e} (KREPAIR_BLESS=1 cargo test writes it)"));
        assert!(
            committed == text,
            "{file} differs from `krepair {}`: run KREPAIR_BLESS=1 cargo test",
            args.join(" ")
        );
    }
    let o = krepair(&[&"completions", &"tcsh"]);
    assert_eq!(code(&o), USAGE);
}

#[test]
fn dry_run_writes_nothing_and_tells_work_found() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fixture("3.5", "axis_last");
    let input = tmp.path().join("m.keras");
    fs::copy(f.archive(), &input).unwrap();
    let o = krepair(&[&"--dry-run", &input]);
    assert_eq!(code(&o), WORK_FOUND, "{}", stderr(&o));
    assert!(String::from_utf8(o.stdout)
        .unwrap()
        .contains("would repair 1 layer"));
    only(tmp.path(), &["m.keras"]);
    for case in ["explicit", "no_norm"] {
        let o = krepair(&[&"--dry-run", &fixture("3.5", case).archive()]);
        assert_eq!(code(&o), OK, "{case}");
    }
    // --report with --dry-run writes only the report.
    let r = tmp.path().join("r.json");
    assert_eq!(
        code(&krepair(&[&"--dry-run", &"--report", &r, &input])),
        WORK_FOUND
    );
    only(tmp.path(), &["m.keras", "r.json"]);
}

#[test]
fn a_dry_run_takes_the_real_command_line_and_checks_output() {
    // People add --dry-run to the command they are about to run.
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("m.keras");
    fs::copy(fixture("3.5", "axis_last").archive(), &input).unwrap();
    let out = tmp.path().join("fixed.keras");
    let o = krepair(&[&"--dry-run", &input, &out]);
    assert_eq!(code(&o), WORK_FOUND, "{}", stderr(&o));
    only(tmp.path(), &["m.keras"]);
    let o = krepair(&[&"migrate", &"--dry-run", &input, &out]);
    assert_eq!(code(&o), WORK_FOUND, "{}", stderr(&o));
    only(tmp.path(), &["m.keras"]);
    // It fails where the real run would: an existing OUTPUT without
    // --force, or the input itself; and it still writes nothing.
    fs::write(&out, b"old").unwrap();
    let o = krepair(&[&"--dry-run", &input, &out]);
    assert_eq!(code(&o), FAILURE, "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("already exists (pass --force to replace it)"),
        "{err}"
    );
    assert_eq!(fs::read(&out).unwrap(), b"old");
    let o = krepair(&[&"--dry-run", &"--force", &input, &out]);
    assert_eq!(code(&o), WORK_FOUND, "{}", stderr(&o));
    assert_eq!(fs::read(&out).unwrap(), b"old", "a dry run never writes");
    let o = krepair(&[&"--dry-run", &input, &input]);
    assert_eq!(code(&o), FAILURE);
    assert!(
        stderr(&o).contains("the output is the input"),
        "{}",
        stderr(&o)
    );
    only(tmp.path(), &["fixed.keras", "m.keras"]);
}

#[test]
fn nothing_to_repair_writes_an_exact_copy() {
    let tmp = tempfile::tempdir().unwrap();
    for case in ["explicit", "no_norm"] {
        let f = fixture("3.15", case);
        let out = tmp.path().join(format!("{case}.keras"));
        // For Keras 3.15 and later (for older ones, Keras 3.15.1's archive
        // has keys to remove: tests/keras3.rs).
        let o = krepair(&[&"--load-in", &"3.15..", &f.archive(), &out]);
        assert_eq!(code(&o), OK);
        assert_eq!(sha(&out), sha(&f.archive()), "{case}");
        assert!(String::from_utf8(o.stdout)
            .unwrap()
            .contains("nothing to repair"));
    }
}

#[test]
fn the_output_is_guarded() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fixture("3.5", "axis_last");
    let input = tmp.path().join("in.keras");
    fs::copy(f.archive(), &input).unwrap();
    let before = sha(&input);

    // The output is the input, under any spelling, even with --force.
    for out in [input.clone(), tmp.path().join(".").join("in.keras")] {
        let o = krepair(&[&"--force", &input, &out]);
        assert_eq!(code(&o), FAILURE);
        assert!(
            stderr(&o).contains("the output is the input"),
            "{}",
            stderr(&o)
        );
        assert_eq!(sha(&input), before);
    }
    // An existing output needs --force, and is left alone without it.
    let out = tmp.path().join("out.keras");
    fs::write(&out, b"precious").unwrap();
    let o = krepair(&[&input, &out]);
    assert_eq!(code(&o), FAILURE);
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(fs::read(&out).unwrap(), b"precious");
    let o = krepair(&[&"-q", &"--force", &input, &out]);
    assert_eq!(code(&o), OK, "{}", stderr(&o));
    assert!(members(&out).len() == 3);
    // A missing output directory.
    let o = krepair(&[&input, &tmp.path().join("no/such/dir/out.keras")]);
    assert_eq!(code(&o), FAILURE);
    assert_eq!(stderr(&o).lines().count(), 1);
    only(tmp.path(), &["in.keras", "out.keras"]);
    assert_eq!(sha(&input), before);
}

#[test]
fn directory_form_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fixture("3.15", "directory_form");
    let out = tmp.path().join("repaired");
    let o = krepair(&[&"-q", &f.archive(), &out]);
    assert_eq!(code(&o), OK, "{}", stderr(&o));
    assert!(out.is_dir());
    let mut names: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["config.json", "metadata.json", "model.weights.h5"]);
    // Existing directory output: refused without --force, replaced with it.
    assert_eq!(code(&krepair(&[&"-q", &f.archive(), &out])), FAILURE);
    assert_eq!(code(&krepair(&[&"-q", &"--force", &f.archive(), &out])), OK);
    only(tmp.path(), &["repaired"]);
}

#[test]
fn refuses_non_finite_and_negative_statistics() {
    for (ds, value, needle) in [
        ("0", f32::NAN, "stored mean is not finite"),
        ("1", f32::INFINITY, "stored variance is not finite"),
        ("1", -0.5, "variance is negative"),
    ] {
        let (_t, p) = damaged("axis_last", |m| {
            set_weights(m, set_stat("layers/normalization/vars", ds, 1, value))
        });
        refuses(&p, &[], needle);
        // Even an explicit policy does not embed garbage.
        refuses(&p, &["--stats", "identity"], needle);
    }
}

#[test]
fn refuses_missing_or_mismatched_datasets() {
    let (_t, p) = damaged("axis_last", |m| {
        set_weights(m, |w| w.unlink("layers/normalization/vars", "2").unwrap())
    });
    refuses(&p, &[], "holds datasets");
    // A config whose input shape contradicts the stored statistics.
    let (_t, p) = damaged("axis_last", |m| {
        let c = m.iter_mut().find(|x| x.0 == "config.json").unwrap();
        let text = String::from_utf8(c.1.clone()).unwrap();
        let needle = "\"build_config\": {\"input_shape\": [64, 4]}";
        assert!(text.contains(needle), "fixture layout changed");
        c.1 = text
            .replacen(needle, "\"build_config\": {\"input_shape\": [64, 5]}", 1)
            .into_bytes();
    });
    refuses(&p, &[], "expected float32 (or float16) [5]");
    // The weights group is missing altogether.
    let (_t, p) = damaged("two_norms", |m| {
        set_weights(m, |w| {
            for d in ["0", "1", "2"] {
                w.unlink("layers/normalization_1/vars", d).unwrap();
            }
        })
    });
    refuses(&p, &["--stats", "adapted"], "holds datasets []");
}

#[test]
fn a_mislabelled_weights_group_is_not_trusted() {
    // Keras >= 3.6 labels each vars group with its layer's name; krepair
    // cross-checks it. Swap the two layers' labels: refuse, never guess.
    let (_t, p) = damaged("two_norms", |m| {
        let c = m.iter_mut().find(|x| x.0 == "config.json").unwrap();
        let text = String::from_utf8(c.1.clone()).unwrap();
        c.1 = text.replace("\"stats_a\"", "\"stats_tmp\"").into_bytes();
    });
    refuses(&p, &[], "labelled `stats_a`");
}

#[test]
fn unknown_saving_version() {
    let (_t, p) = damaged("axis_last", |m| m.retain(|x| x.0 != "metadata.json"));
    refuses(&p, &[], "saving Keras version is unknown");
    let out = p.with_file_name("out.keras");
    let o = krepair(&[&"--stats", &"adapted", &"--report", &"-", &p, &out]);
    assert_eq!(code(&o), OK, "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["findings"][0]["code"], "unknown-keras-version");
    assert_eq!(report["outcome"], "repaired");
}

#[test]
fn inputs_that_are_not_keras_archives() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.keras", vec![], "empty file"),
        ("text.keras", b"hello, world".to_vec(), "no zip signature"),
        (
            "legacy.keras",
            b"\x89HDF\r\n\x1a\n\0\0\0\0".to_vec(),
            "an HDF5 file (a legacy Keras model",
        ),
        (
            "truncated.keras",
            fs::read(fixture("3.5", "axis_last").archive()).unwrap()[..3000].to_vec(),
            "zip",
        ),
    ];
    for (name, bytes, needle) in cases {
        let p = tmp.path().join(name);
        fs::write(&p, bytes).unwrap();
        refuses(&p, &[], needle);
        fs::remove_file(&p).unwrap();
    }
    let (_t, p) = damaged("axis_last", |m| m.retain(|x| x.0 != "config.json"));
    refuses(&p, &[], "no config.json");
    let (_t, p) = damaged("axis_last", |m| m[1].1 = b"{not json".to_vec());
    refuses(&p, &[], "config.json is not valid JSON");
    let (_t, p) = damaged("axis_last", |m| m[2].1 = b"not hdf5 at all".to_vec());
    refuses(&p, &[], "not an HDF5 file");
    let (_t, p) = damaged("axis_last", |m| {
        let w = m.iter_mut().find(|x| x.0 == "model.weights.h5").unwrap();
        w.0 = "model.weights.npz".into();
    });
    refuses(&p, &[], "never loads");
}

#[test]
fn timings_name_every_step_with_its_time_and_peak_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fixture("3.5", "axis_last");
    let out = tmp.path().join("out.keras");
    // Off by default: a repair prints nothing on stderr.
    let o = krepair(&[&"-q", &f.archive(), &out]);
    assert_eq!(code(&o), OK, "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
    fs::remove_file(&out).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_krepair"))
        .env("KREPAIR_TIMINGS", "1")
        .args(["-q".as_ref(), f.archive().as_os_str(), out.as_os_str()])
        .output()
        .unwrap();
    assert_eq!(code(&o), OK, "{}", stderr(&o));
    let lines: Vec<(f64, String)> = stderr(&o)
        .lines()
        .map(|l| {
            let rest = l.strip_prefix("krepair: ").expect(l);
            let (ms, what) = rest.trim_start().split_once(" ms  ").expect(l);
            (ms.parse().expect(l), what.to_string())
        })
        .collect();
    let steps: Vec<&str> = lines.iter().map(|(_, w)| w.as_str()).collect();
    assert_eq!(steps.first(), Some(&"start"));
    assert_eq!(steps.last(), Some(&"exit"));
    // The worker's steps reach the supervisor, each with the worker's
    // peak memory so far, in the order the pipeline runs them.
    let order = [
        "reading config.json",
        "walking the HDF5 structure",
        "writing the output",
        "syncing the output",
        "verifying the output",
        "renaming the output into place",
    ];
    let mut at = 0;
    for want in order {
        let i = steps[at..]
            .iter()
            .position(|s| s.starts_with(want))
            .unwrap_or_else(|| panic!("no `{want}` after step {at}: {steps:?}"));
        at += i;
        let (peak, _) = steps[at]
            .rsplit_once("[peak ")
            .and_then(|(_, p)| p.strip_suffix(" MiB]"))
            .map(|p| (p.parse::<u64>().unwrap(), ()))
            .unwrap_or_else(|| panic!("no peak memory on `{}`", steps[at]));
        assert!(peak > 0, "{}", steps[at]);
    }
    assert!(
        lines.windows(2).all(|w| w[0].0 <= w[1].0),
        "times go back: {lines:?}"
    );
    assert!(out.exists());
}
