//! `krepair batch`: a generated tree of healthy, repairable and corrupt
//! archives, a directory-form archive, non-model files, a symlink and
//! nested folders, under every mode.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Build the tree; return its root.
fn tree(dir: &Path, corrupt: bool) -> PathBuf {
    let root = dir.join("models");
    fs::create_dir_all(root.join("exp1/run2")).unwrap();
    fs::create_dir_all(root.join("registry")).unwrap();
    fs::copy(
        fixture("3.5", "efficientnet_stem").archive(),
        root.join("exp1/stem.keras"),
    )
    .unwrap();
    fs::copy(
        fixture("3.15", "two_norms").archive(),
        root.join("exp1/run2/two.keras"),
    )
    .unwrap();
    // Healthy for every Keras 3: no_norm as krepair leaves it (Keras
    // 3.15.1's own archive gets the cross-version rewrites of issue #33).
    let healthy = root.join("registry/healthy.keras");
    let o = krepair(&[&"-q", &fixture("3.15", "no_norm").archive(), &healthy]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let d = root.join("registry/unzipped");
    fs::create_dir(&d).unwrap();
    for f in ["config.json", "metadata.json", "model.weights.h5"] {
        fs::copy(
            fixture("3.15", "directory_form").archive().join(f),
            d.join(f),
        )
        .unwrap();
    }
    fs::write(root.join("README.txt"), "not a model").unwrap();
    fs::write(root.join("exp1/weights.h5"), "not a model either").unwrap();
    std::os::unix::fs::symlink(root.join("exp1"), root.join("link-to-exp1")).unwrap();
    if corrupt {
        fs::write(root.join("exp1/broken.keras"), b"PK\x03\x04 truncated").unwrap();
    }
    root
}

fn batch(args: &[&dyn AsRef<std::ffi::OsStr>]) -> (i32, Value, String) {
    let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"batch", &"--report", &"-"];
    all.extend_from_slice(args);
    let o = krepair(&all);
    let report = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (code(&o), report, stderr(&o))
}

fn outcomes(r: &Value) -> Vec<(String, String)> {
    r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let p = e["path"].as_str().unwrap();
            let short = p[p.find("models/").unwrap() + 7..].to_string();
            (short, e["outcome"].as_str().unwrap().to_string())
        })
        .collect()
}

fn no_temp_files(dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let n = e.file_name().into_string().unwrap();
        assert!(
            !n.starts_with(".krepair-"),
            "temporary file left: {}",
            e.path().display()
        );
        if e.file_type().unwrap().is_dir() {
            no_temp_files(&e.path());
        }
    }
}

#[test]
fn out_mode_migrates_the_whole_tree() {
    let t = tempfile::tempdir().unwrap();
    let root = tree(t.path(), true);
    let before = tree_hash(&root);
    let out = t.path().join("migrated");
    let (c, r, err) = batch(&[&"--out", &out, &root]);
    assert_eq!(c, 1, "a corrupt archive makes the run fail: {err}");
    assert_eq!(
        outcomes(&r),
        [
            ("exp1/broken.keras".to_string(), "failed".to_string()),
            ("exp1/run2/two.keras".into(), "repaired".into()),
            ("exp1/stem.keras".into(), "repaired".into()),
            ("registry/healthy.keras".into(), "nothing-to-repair".into()),
            ("registry/unzipped".into(), "repaired".into()),
        ]
    );
    let s = &r["summary"];
    assert_eq!(s["archives"], 5);
    assert_eq!(s["repaired"], 3);
    assert_eq!(s["already_healthy"], 1);
    assert_eq!(s["failed"], 1);
    assert_eq!(s["skipped"], 3, "two non-model files and one symlink");
    assert_eq!(s["legacy_signature_archives"], 1);
    assert_eq!(s["layers_by_policy"]["identity"], 1);
    assert_eq!(s["layers_by_policy"]["adapted"], 3);
    assert!(err.contains("broken.keras"), "{err}");
    // The outputs: same relative paths, repaired ones verified, the healthy one copied exactly.
    assert_eq!(
        sha(&out.join("registry/healthy.keras")),
        sha(&root.join("registry/healthy.keras"))
    );
    for p in [
        "exp1/stem.keras",
        "exp1/run2/two.keras",
        "registry/unzipped",
    ] {
        let o = krepair(&[&"--dry-run", &out.join(p)]);
        assert_eq!(code(&o), 0, "{p} must need no further repair");
    }
    assert!(!out.join("exp1/broken.keras").exists());
    assert!(!out.join("README.txt").exists());
    assert!(
        !out.join("link-to-exp1").exists(),
        "symlinks are not followed by default"
    );
    assert_eq!(tree_hash(&root), before, "inputs must not change");
    no_temp_files(&out);
}

#[test]
fn dry_run_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let root = tree(t.path(), false);
    let before = tree_hash(t.path());
    let (c, r, _) = batch(&[&"--dry-run", &root]);
    assert_eq!(c, 3, "work found");
    assert_eq!(r["mode"], "dry-run");
    assert_eq!(r["summary"]["repaired"], 3);
    assert_eq!(tree_hash(t.path()), before, "a dry run changed the tree");
    // Deterministic: the same run gives the same report.
    let (_, r2, _) = batch(&[&"--dry-run", &root]);
    assert_eq!(r, r2);
    // The Markdown report.
    let md = t.path().join("run.md");
    let o = krepair(&[
        &"batch",
        &"-q",
        &"--dry-run",
        &"--report",
        &md,
        &"--report-format",
        &"md",
        &root,
    ]);
    assert_eq!(code(&o), 3);
    let text = fs::read_to_string(&md).unwrap();
    assert!(text.contains("| archives | repaired |"), "{text}");
    assert!(text.contains("legacy-weights-signature"), "{text}");
}

#[test]
fn in_place_with_and_without_backup() {
    for backup in [None, Some(".orig")] {
        let t = tempfile::tempdir().unwrap();
        let root = tree(t.path(), false);
        let stem = root.join("exp1/stem.keras");
        let healthy = root.join("registry/healthy.keras");
        let (stem_before, healthy_before) = (sha(&stem), sha(&healthy));
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"--in-place"];
        let b;
        if let Some(s) = backup {
            b = s;
            args.push(&"--backup");
            args.push(&b);
        }
        args.push(&root);
        let (c, r, err) = batch(&args);
        assert_eq!(c, 0, "{err}");
        assert_eq!(r["summary"]["repaired"], 3);
        assert_ne!(sha(&stem), stem_before, "repaired in place");
        assert_eq!(code(&krepair(&[&"--dry-run", &stem])), 0);
        assert_eq!(
            code(&krepair(&[&"--dry-run", &root.join("registry/unzipped")])),
            0
        );
        assert_eq!(
            sha(&healthy),
            healthy_before,
            "nothing to repair: untouched"
        );
        match backup {
            Some(s) => {
                let kept = root.join(format!("exp1/stem.keras{s}"));
                assert_eq!(sha(&kept), stem_before, "backup holds the original");
                assert!(root.join(format!("registry/unzipped{s}")).is_dir());
                assert!(!root.join(format!("registry/healthy.keras{s}")).exists());
            }
            None => assert!(!root.join("exp1/stem.keras.orig").exists()),
        }
        no_temp_files(&root);
        // A second pass (with the same flags) finds nothing to do.
        let (c, r, _) = batch(&args);
        assert_eq!(c, 0);
        assert_eq!(r["summary"]["repaired"], 0);
    }
}

#[test]
fn links_are_followed_only_when_asked_and_loops_end() {
    let t = tempfile::tempdir().unwrap();
    let root = tree(t.path(), false);
    std::os::unix::fs::symlink(&root, root.join("exp1/loop")).unwrap();
    let (c, r, err) = batch(&[&"--dry-run", &"--follow-links", &root]);
    assert_eq!(c, 3, "{err}");
    // exp1 is reached once, directly or through the link, never twice.
    let paths: Vec<String> = outcomes(&r).into_iter().map(|x| x.0).collect();
    assert_eq!(paths.len(), 4, "{paths:?}");
}

#[test]
fn usage() {
    let t = tempfile::tempdir().unwrap();
    assert_eq!(
        code(&krepair(&[&"batch", &t.path()])),
        2,
        "needs --out, --in-place or --dry-run"
    );
    assert_eq!(
        code(&krepair(&[
            &"batch",
            &"--in-place",
            &"--out",
            &"x",
            &t.path()
        ])),
        2
    );
    assert_eq!(
        code(&krepair(&[
            &"batch",
            &"--backup",
            &".b",
            &"--dry-run",
            &t.path()
        ])),
        2
    );
}

#[test]
fn backup_suffixes_are_checked_by_the_parser() {
    let t = tempfile::tempdir().unwrap();
    for bad in ["", "a/b"] {
        let o = krepair(&[&"batch", &"--in-place", &"--backup", &bad, &t.path()]);
        assert_eq!(code(&o), 2, "--backup {bad:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("suffix"), "{}", stderr(&o));
    }
}

#[test]
fn roots_that_share_a_name_never_share_outputs() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a/models"), t.path().join("b/models"));
    for d in [&a, &b] {
        fs::create_dir_all(d).unwrap();
        fs::copy(fixture("3.15", "axis_last").archive(), d.join("m.keras")).unwrap();
    }
    let out = t.path().join("out");
    let o = krepair(&[&"batch", &a, &b, &"--out", &out]);
    let err = stderr(&o);
    assert_eq!(code(&o), 2, "{err}");
    assert!(
        err.contains("would both be written to OUTDIR/models/m.keras"),
        "{err}"
    );
    assert!(!out.exists(), "nothing may be written before the refusal");
    // With --force too: it never silently overwrites one with the other.
    let o = krepair(&[&"batch", &"--force", &a, &b, &"--out", &out]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    // Two single files of the same name, likewise.
    let o = krepair(&[
        &"batch",
        &a.join("m.keras"),
        &b.join("m.keras"),
        &"--out",
        &out,
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(!out.exists());
}

#[test]
fn a_dot_dot_root_stays_inside_outdir() {
    let t = tempfile::tempdir().unwrap();
    let work = t.path().join("proj/work");
    fs::create_dir_all(&work).unwrap();
    fs::copy(
        fixture("3.15", "axis_last").archive(),
        t.path().join("proj/m.keras"),
    )
    .unwrap();
    let other = t.path().join("other");
    fs::create_dir_all(&other).unwrap();
    fs::copy(
        fixture("3.15", "two_norms").archive(),
        other.join("n.keras"),
    )
    .unwrap();
    let out = t.path().join("out");
    // Run from proj/work: `..` is proj, and must land under out/proj.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_krepair"))
        .current_dir(&work)
        .args(["batch", "..", "../../other", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(out.join("proj/m.keras").is_file());
    assert!(out.join("other/n.keras").is_file());
    let top = names(t.path());
    assert_eq!(
        top,
        ["other", "out", "proj"],
        "nothing written outside OUTDIR"
    );
}

#[test]
fn a_report_that_cannot_be_written_after_the_outputs_exits_4() {
    let t = tempfile::tempdir().unwrap();
    let input = t.path().join("in.keras");
    fs::copy(fixture("3.15", "axis_last").archive(), &input).unwrap();
    // The report path is a directory: it cannot be replaced by a file,
    // which only the final rename finds out.
    let report = t.path().join("report");
    fs::create_dir(&report).unwrap();
    let out = t.path().join("out.keras");
    let o = krepair(&[&"-q", &"--report", &report, &input, &out]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot write the report"),
        "{}",
        stderr(&o)
    );
    assert!(out.is_file(), "the output was written");
    let o = krepair(&[
        &"batch",
        &"-q",
        &"--report",
        &report,
        &input,
        &"--out",
        &t.path().join("o"),
    ]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    // A report in a directory that does not exist fails before any work.
    let out2 = t.path().join("out2.keras");
    let o = krepair(&[
        &"-q",
        &"--report",
        &t.path().join("no/such/r.json"),
        &input,
        &out2,
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(!out2.exists(), "nothing written when the report cannot be");
    let left = temp_files(t.path());
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn ctrl_c_keeps_finished_archives_and_leaves_nothing_partial() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("many");
    fs::create_dir(&root).unwrap();
    let mut m = members(&fixture("3.15", "axis_last").archive());
    m.push(("assets/padding.bin".into(), vec![0x33; 24 << 20]));
    let first = root.join("m000.keras");
    write_zip(&first, &m);
    for i in 1..40 {
        fs::copy(&first, root.join(format!("m{i:03}.keras"))).unwrap();
    }
    let out = t.path().join("out");
    let child = Command::new(env!("CARGO_BIN_EXE_krepair"))
        .args(["batch", "--jobs", "1", "--out"])
        .arg(&out)
        .arg(&root)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !out.join("m001.keras").exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(table.contains("interrupted"), "{table}");
    let done: Vec<PathBuf> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(done.len() >= 2 && done.len() < 40, "{} outputs", done.len());
    for p in &done {
        let n = p.file_name().unwrap().to_str().unwrap();
        assert!(!n.starts_with(".krepair-"), "temporary file left: {n}");
        assert_eq!(
            code(&krepair(&[&"--dry-run", p])),
            0,
            "{n} is not a complete repair"
        );
    }
}

/// `batch --dry-run` takes the real run's command line: with `--out` it
/// fails an archive whose output exists (without `--force`) as the real
/// run would, creating nothing; `--in-place` (and `--backup`) plan only.
#[test]
fn dry_run_takes_the_real_run_command_line() {
    let t = tempfile::tempdir().unwrap();
    let root = tree(t.path(), false);
    let (_, plain, _) = batch(&[&"--dry-run", &root]);
    let first = plain["entries"][0]["path"].as_str().unwrap().to_string();
    let rel = Path::new(&first).strip_prefix(&root).unwrap().to_path_buf();
    let out = t.path().join("out");
    fs::create_dir_all(out.join(&rel).parent().unwrap()).unwrap();
    fs::write(out.join(&rel), b"an earlier output").unwrap();
    let before = tree_hash(t.path());
    let (c, r, err) = batch(&[&"--dry-run", &root, &"--out", &out]);
    assert_eq!(c, 1, "{err}");
    assert_eq!(tree_hash(t.path()), before, "a dry run changed the tree");
    let entries = r["entries"].as_array().unwrap();
    assert_eq!(entries.len(), plain["entries"].as_array().unwrap().len());
    for (e, p) in entries.iter().zip(plain["entries"].as_array().unwrap()) {
        if e["path"] == first.as_str() {
            assert_eq!(e["outcome"], "failed");
            assert!(
                e["error"].as_str().unwrap().contains("already exists"),
                "{e}"
            );
        } else {
            assert_eq!(e["outcome"], p["outcome"], "{}", e["path"]);
        }
    }
    assert_eq!(
        err.lines().filter(|l| l.contains("already exists")).count(),
        1,
        "{err}"
    );
    // --force: the real run would replace it.
    let (c, r, _) = batch(&[&"--dry-run", &"--force", &root, &"--out", &out]);
    assert_eq!(c, 3);
    assert_eq!(r["summary"]["failed"], plain["summary"]["failed"]);
    // --in-place, with or without --backup: a plan, nothing written.
    for extra in [&[][..], &["--backup", ".orig"][..]] {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"--dry-run", &"--in-place"];
        for a in extra {
            args.push(a);
        }
        args.push(&root);
        let (c, r, _) = batch(&args);
        assert_eq!(c, 3);
        assert_eq!(r["mode"], "dry-run");
        assert_eq!(tree_hash(t.path()), before);
    }
}
