//! Registry scale (docs/scale.md): `--shard K/N`, the streaming journal
//! (`--report-format jsonl`), `--resume`, and `krepair report merge`.

// kill (SIGKILL) of a run in progress.
#![allow(unsafe_code)]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A tree of `n` archives in nested folders (fixtures of several Keras
/// versions, one broken archive), plus a file that is not a model.
fn tree(dir: &Path, n: usize) -> PathBuf {
    let root = dir.join("registry");
    let sources: Vec<PathBuf> = fixtures()
        .into_iter()
        .filter(|f| f.expected.form == "zip")
        .map(|f| f.archive())
        .collect();
    for i in 0..n {
        let d = root.join(format!("team{}/exp{}", i % 3, i % 5));
        fs::create_dir_all(&d).unwrap();
        fs::copy(
            &sources[i % sources.len()],
            d.join(format!("m{i:03}.keras")),
        )
        .unwrap();
    }
    fs::write(root.join("team0/broken.keras"), b"PK\x03\x04 cut").unwrap();
    fs::write(root.join("notes.txt"), b"not a model").unwrap();
    root
}

fn batch_cmd(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_krepair"));
    c.arg("batch").arg("-q");
    for a in args {
        c.arg(a);
    }
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// `krepair batch ROOT --out OUT --force --resume FROM` with a jsonl
/// journal written to TO.
fn resume(root: &Path, out: &Path, from: &Path, to: &Path) -> std::process::Output {
    batch_cmd(&[
        &root,
        &"--out",
        &out,
        &"--force",
        &"--resume",
        &from,
        &"--report-format",
        &"jsonl",
        &"--report",
        &to,
    ])
    .output()
    .unwrap()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap()
}

fn paths(report: &Value) -> Vec<String> {
    report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect()
}

/// The lines of a journal, parsed; a cut-short last line is dropped.
fn journal_lines(p: &Path) -> Vec<Value> {
    let text = fs::read_to_string(p).unwrap();
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let n = lines.len();
    lines
        .into_iter()
        .enumerate()
        .filter_map(|(i, l)| match serde_json::from_str(l) {
            Ok(v) => Some(v),
            Err(e) if i + 1 == n && !complete => {
                let _ = e;
                None
            }
            Err(e) => panic!("journal line {}: {e}: {l}", i + 1),
        })
        .collect()
}

#[test]
fn shards_in_parallel_cover_the_tree_once_and_merge_to_the_whole_run() {
    let t = tempfile::tempdir().unwrap();
    let root = tree(t.path(), 40);
    let whole_out = t.path().join("whole");
    let whole = t.path().join("whole.json");
    let o = batch_cmd(&[&root, &"--out", &whole_out, &"--report", &whole])
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "the broken archive fails: {}", stderr(&o));
    let whole_report = read_json(&whole);
    assert_eq!(whole_report["summary"]["archives"], 41);

    for n in [1u64, 3, 4] {
        let out = t.path().join(format!("sharded-{n}"));
        // N processes at once, as an Indexed Job or a Slurm array runs them.
        let children: Vec<(PathBuf, Child)> = (1..=n)
            .map(|k| {
                let journal = t.path().join(format!("s{k}-of-{n}.jsonl"));
                let child = batch_cmd(&[
                    &root,
                    &"--out",
                    &out,
                    &"--jobs",
                    &"1",
                    &"--shard",
                    &format!("{k}/{n}"),
                    &"--report-format",
                    &"jsonl",
                    &"--report",
                    &journal,
                ])
                .spawn()
                .unwrap();
                (journal, child)
            })
            .collect();
        let mut journals = Vec::new();
        let mut seen = BTreeSet::new();
        let mut total = 0;
        for (journal, child) in children {
            let o = child.wait_with_output().unwrap();
            assert!(matches!(code(&o), 0 | 1), "{}", stderr(&o));
            let lines = journal_lines(&journal);
            let (summary, entries) = lines.split_last().unwrap();
            assert!(
                summary.get("summary").is_some(),
                "the last line is the summary"
            );
            for e in entries {
                assert!(
                    seen.insert(e["path"].as_str().unwrap().to_string()),
                    "an archive in two shards: {}",
                    e["path"]
                );
            }
            total += entries.len();
            assert_eq!(summary["summary"]["archives"], entries.len());
            journals.push(journal);
        }
        assert_eq!(total, 41, "N={n}: the shards cover the tree");
        let merged = t.path().join(format!("merged-{n}.json"));
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"report", &"merge"];
        for j in &journals {
            args.push(j);
        }
        args.push(&"-o");
        args.push(&merged);
        let o = krepair(&args);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        // The merged report is the whole run's, but for where the outputs
        // went.
        let text = fs::read_to_string(&merged)
            .unwrap()
            .replace(out.to_str().unwrap(), whole_out.to_str().unwrap());
        let merged_report: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(merged_report, whole_report, "N={n}");
        assert_eq!(
            tree_hash(&out),
            tree_hash(&whole_out),
            "N={n}: the same outputs"
        );
    }
}

#[test]
fn a_killed_run_leaves_a_journal_and_resume_does_exactly_the_rest() {
    let t = tempfile::tempdir().unwrap();
    let root = tree(t.path(), 24);
    let out = t.path().join("out");
    let journal = t.path().join("run.jsonl");
    // One worker; the 13th archive in walk order hangs (a test-only
    // fault), so the run is killed with exactly 12 archives finished.
    let mut all = Vec::new();
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "keras") {
                out.push(p);
            }
        }
    }
    walk(&root, &mut all);
    all.sort();
    assert_eq!(all.len(), 25);
    let hung = all[12].strip_prefix(&root).unwrap().display().to_string();
    let broken = root.join("team0/broken.keras").display().to_string();
    assert!(all[..12].iter().any(|p| p.display().to_string() == broken));
    let mut child = batch_cmd(&[
        &root,
        &"--out",
        &out,
        &"--jobs",
        &"1",
        &"--report-format",
        &"jsonl",
        &"--report",
        &journal,
    ])
    .env("KREPAIR_TEST_FAULT", format!("hang@{hung}"))
    .spawn()
    .unwrap();
    let start = Instant::now();
    loop {
        let n = fs::read_to_string(&journal).map_or(0, |s| s.lines().count());
        if n >= 12 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the run made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    child.wait().unwrap();
    let lines = journal_lines(&journal);
    assert_eq!(lines.len(), 12, "every finished archive, no summary line");
    let done: BTreeSet<String> = lines
        .iter()
        .map(|l| l["path"].as_str().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = all[..12].iter().map(|p| p.display().to_string()).collect();
    assert_eq!(done, want);

    // Resume into a new journal: the 12 come back as resumed, the rest
    // (the hung one included) are processed.
    let journal2 = t.path().join("run2.jsonl");
    let o = resume(&root, &out, &journal, &journal2);
    assert_eq!(code(&o), 1, "the broken archive fails: {}", stderr(&o));
    let lines2 = journal_lines(&journal2);
    let (summary, entries) = lines2.split_last().unwrap();
    assert_eq!(entries.len(), 25);
    // The failed one is done again.
    assert_eq!(summary["summary"]["resumed"], 11);
    for e in entries {
        let p = e["path"].as_str().unwrap();
        assert_eq!(e["resumed"], done.contains(p) && p != broken, "{p}");
    }

    // A modified input is done again, the rest resumed.
    let victim = entries
        .iter()
        .find(|e| e["resumed"] == true)
        .map(|e| PathBuf::from(e["path"].as_str().unwrap()))
        .unwrap();
    fs::copy(fixture("3.6", "no_norm").archive(), &victim).unwrap();
    // And one changed in place with its size and modification time kept:
    // only the SHA-256 tells.
    let sly = entries
        .iter()
        .filter(|e| e["resumed"] == true)
        .map(|e| PathBuf::from(e["path"].as_str().unwrap()))
        .find(|p| *p != victim)
        .unwrap();
    let mtime = fs::metadata(&sly).unwrap().modified().unwrap();
    let mut bytes = fs::read(&sly).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    fs::write(&sly, &bytes).unwrap();
    fs::File::options()
        .write(true)
        .open(&sly)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let journal3 = t.path().join("run3.jsonl");
    let o = resume(&root, &out, &journal2, &journal3);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let lines3 = journal_lines(&journal3);
    let (summary, entries) = lines3.split_last().unwrap();
    // Everything but the two changed files and the broken (failed) one.
    assert_eq!(summary["summary"]["resumed"], 22);
    let row = |p: &Path| {
        entries
            .iter()
            .find(|e| e["path"] == p.display().to_string())
            .unwrap()
    };
    assert_eq!(
        row(&victim)["resumed"],
        false,
        "the modified input was done again"
    );
    assert_eq!(
        row(&victim)["outcome"],
        "nothing-to-repair",
        "it is the new content"
    );
    assert_eq!(
        row(&sly)["resumed"],
        false,
        "same size and mtime, other bytes"
    );

    // Resuming into the journal itself appends; merged, it is one run.
    let o = resume(&root, &out, &journal, &journal);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let merged = t.path().join("merged.json");
    let o = krepair(&[&"report", &"merge", &journal, &"-o", &merged]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(paths(&read_json(&merged)).len(), 25);
}

#[test]
fn merge_refuses_inputs_that_disagree() {
    let t = tempfile::tempdir().unwrap();
    let root = tree(t.path(), 6);
    let a = t.path().join("a.jsonl");
    let o = batch_cmd(&[
        &root,
        &"--dry-run",
        &"--report-format",
        &"jsonl",
        &"--report",
        &a,
    ])
    .output()
    .unwrap();
    assert!(matches!(code(&o), 1 | 3), "{}", stderr(&o));
    // The same archive with another outcome.
    let text = fs::read_to_string(&a).unwrap();
    let mut e: Value = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v.get("path").is_some() && v["outcome"] != "failed")
        .unwrap();
    e["outcome"] = "failed".into();
    let b = t.path().join("b.jsonl");
    fs::write(&b, format!("{e}\n")).unwrap();
    let o = krepair(&[&"report", &"merge", &a, &b]);
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("and failed in"), "{err}");
    // Runs made with different --stats.
    let c = t.path().join("c.jsonl");
    let o = batch_cmd(&[
        &root,
        &"--dry-run",
        &"--stats",
        &"identity",
        &"--report-format",
        &"jsonl",
        &"--report",
        &c,
    ])
    .output()
    .unwrap();
    assert!(matches!(code(&o), 1 | 3));
    let o = krepair(&[&"report", &"merge", &a, &c]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("--stats"), "{}", stderr(&o));
    // Not a journal at all.
    let d = t.path().join("d.jsonl");
    fs::write(&d, "hello\n").unwrap();
    let o = krepair(&[&"report", &"merge", &d]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("not a krepair journal line"),
        "{}",
        stderr(&o)
    );
    // A shard value out of range is a usage error.
    let o = krepair(&[&"batch", &"--dry-run", &"--shard", &"5/4", &root]);
    assert_eq!(code(&o), 2);
}
