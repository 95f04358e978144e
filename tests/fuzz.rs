//! A bounded mutation fuzzer over open → inspect → plan.
//!
//! Seeds are the committed real-Keras fixtures. Each round mutates either
//! the whole archive (bit flips, byte overwrites, truncation, insertion,
//! splices from another seed) or one member inside a valid zip (so the
//! JSON and HDF5 parsers, not just the zip reader, see garbage). Each input
//! is repaired by the binary in a child process, so a crash or a hang in
//! the HDF5 C library is caught too: every run must exit 0 with a complete
//! output, or 1 with one line and nothing written. A failure saves the
//! input and names its seed. Inputs that once failed are kept in
//! `testdata/fuzz-regressions/` and replayed first.
//!
//! Runs `KREPAIR_FUZZ_SECONDS` seconds (default 5; CI runs 60), seeded by
//! `KREPAIR_FUZZ_SEED` (default a fixed value, so runs are reproducible).

#![allow(clippy::print_stderr)] // progress of a long test run

mod common;

use std::fs;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// xorshift64*: small, deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    for _ in 0..1 + rng.below(8) {
        if data.is_empty() {
            data.push(rng.next() as u8);
            continue;
        }
        let at = rng.below(data.len());
        match rng.below(6) {
            0 => data[at] ^= 1 << rng.below(8),
            1 => data[at] = [0, 0xff, 0x7f, 0x80, b'"', b'{', b'['][rng.below(7)],
            2 => data.truncate(at),
            3 => {
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                data.splice(at..at, bytes);
            }
            4 => {
                let len = rng.below(64).min(data.len() - at);
                data.drain(at..at + len);
            }
            _ => {
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let len = (1 + rng.below(256)).min(other.len() - from);
                    let end = (at + len).min(data.len());
                    data.splice(at..end, other[from..from + len].iter().copied());
                }
            }
        }
    }
}

/// Seconds the binary allows one archive here (`--timeout`; the default
/// is 600).
const TIMEOUT: &str = "2";
/// Wall-clock limit for one run: a run past it is a hang krepair did not catch.
const RUN_LIMIT: Duration = Duration::from_secs(30);

fn save(bytes: &[u8], label: &str) -> std::path::PathBuf {
    let keep = std::env::temp_dir().join(format!("krepair-fuzz-{label}.keras"));
    fs::write(&keep, bytes).unwrap();
    keep
}

/// Repair `bytes` with the binary. It must exit 0 (and write a complete
/// output) or 1 (with one line on stderr and nothing written); its worker
/// must never die from a signal or panic. Returns whether the archive was
/// stopped by the time limit (a hang in the C library).
fn run_one(bytes: &[u8], label: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("fuzz.keras");
    let out = dir.path().join("out.keras");
    fs::write(&input, bytes).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_krepair"));
    cmd.env("TMPDIR", dir.path())
        .args(["-q", "--stats", "identity", "--timeout", TIMEOUT])
        .arg(&input)
        .arg(&out);
    let (status, err) = bounded(cmd, bytes, label);
    let fail = |why: &str| -> ! {
        panic!(
            "{label}: {why}: {err}; input saved to {}",
            save(bytes, label).display()
        )
    };
    if let Err(why) = judge(status, &err, &out) {
        fail(&why);
    }
    if leftovers(dir.path()) {
        fail("temporary files left behind");
    }
    err.contains("did not finish within")
}

/// The verdict on one run that wrote (or not) `out`: exit 0 with the
/// output written (true), or exit 1 with one line on stderr, no crashed
/// worker and nothing written (false); anything else is what failed.
fn judge(
    status: std::process::ExitStatus,
    err: &str,
    out: &std::path::Path,
) -> Result<bool, String> {
    match status.code() {
        Some(0) if out.exists() => Ok(true),
        Some(0) => Err("exit 0 without an output".into()),
        Some(1) if err.lines().count() != 1 => Err("not exactly one line on stderr".into()),
        // The supervisor turns a dead worker into one clean line; for the
        // fuzzer that is still a crash to find.
        Some(1) if err.contains("killed by") || err.contains("internal error") => {
            Err("the worker process crashed".into())
        }
        Some(1) if out.exists() => Err("an output after a failure".into()),
        Some(1) => Ok(false),
        Some(c) => Err(format!("exit code {c}")),
        None => Err("killed by a signal (a crash)".into()),
    }
}

/// Run `cmd` (stdout discarded) to its end, within [`RUN_LIMIT`]: its
/// exit status and stderr. A run past the limit is a hang: the input is
/// saved and the test fails.
fn bounded(mut cmd: Command, bytes: &[u8], label: &str) -> (std::process::ExitStatus, String) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > RUN_LIMIT {
            child.kill().unwrap();
            panic!(
                "{label}: krepair hung; input saved to {}",
                save(bytes, label).display()
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, err)
}

/// Did a run leave a temporary file of krepair's in `dir`?
fn leftovers(dir: &std::path::Path) -> bool {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with(".krepair-"))
}

type Seed = (Vec<u8>, Vec<(String, Vec<u8>)>);

fn seeds() -> Vec<Seed> {
    fixtures()
        .into_iter()
        .filter(|f| f.expected.form == "zip")
        .map(|f| (fs::read(f.archive()).unwrap(), members(&f.archive())))
        .collect()
}

fn fuzz_seconds() -> u64 {
    std::env::var("KREPAIR_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

/// The generator of round `round`: a fresh, reproducible stream.
fn round_rng(round: u64) -> (u64, Rng) {
    let seed: u64 = std::env::var("KREPAIR_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20147);
    let round_seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(round) | 1;
    (round_seed, Rng(round_seed))
}

/// One mutated input: the whole archive mutated, or one member inside a
/// valid zip.
fn generate(rng: &mut Rng, seeds: &[Seed]) -> Vec<u8> {
    let (whole, members) = &seeds[rng.below(seeds.len())];
    let (other, _) = &seeds[rng.below(seeds.len())];
    if rng.below(3) == 0 {
        let mut b = whole.clone();
        mutate(rng, &mut b, other);
        b
    } else {
        let mut m = members.clone();
        let i = rng.below(m.len());
        let donor = &m[rng.below(m.len())].1.clone();
        mutate(rng, &mut m[i].1, donor);
        let t = tempfile::NamedTempFile::new().unwrap();
        write_zip(t.path(), &m);
        fs::read(t.path()).unwrap()
    }
}

#[test]
fn fuzz_open_inspect_plan() {
    let regressions = root().join("testdata/fuzz-regressions");
    if let Ok(rd) = fs::read_dir(&regressions) {
        for e in rd {
            let p = e.unwrap().path();
            run_one(
                &fs::read(&p).unwrap(),
                &p.file_name().unwrap().to_string_lossy(),
            );
        }
    }
    let seeds = seeds();
    let secs = fuzz_seconds();
    let start = Instant::now();
    let mut rounds = 0u64;
    let mut hangs = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        let (round_seed, mut rng) = round_rng(rounds);
        let bytes = generate(&mut rng, &seeds);
        let label = format!("seed-{round_seed}");
        if run_one(&bytes, &label) {
            hangs += 1;
            eprintln!(
                "fuzz: a hang stopped by the time limit: {}",
                save(&bytes, &label).display()
            );
        }
        rounds += 1;
    }
    eprintln!("fuzz: {rounds} inputs in {secs} s, no crash, no panic; {hangs} hang(s) stopped by the time limit");
    assert!(rounds > 0);
}

/// The same inputs, 24 at a time through `krepair batch` with two worker
/// processes: every archive gets a row, healthy outcomes have a complete
/// output, failed ones none, and nothing temporary is left.
#[test]
fn fuzz_batch() {
    let seeds = seeds();
    let secs = (fuzz_seconds() / 2).max(2);
    let start = Instant::now();
    let mut batches = 0u64;
    let mut archives = 0usize;
    while start.elapsed() < Duration::from_secs(secs) {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        let out = dir.path().join("out");
        fs::create_dir(&input).unwrap();
        let mut names = Vec::new();
        let mut first_seed = 0;
        for i in 0..24u64 {
            let (round_seed, mut rng) = round_rng(1_000_000 + batches * 24 + i);
            if i == 0 {
                first_seed = round_seed;
            }
            let name = format!("f{i:02}.keras");
            fs::write(input.join(&name), generate(&mut rng, &seeds)).unwrap();
            names.push(name);
        }
        let report = dir.path().join("run.json");
        let o = Command::new(env!("CARGO_BIN_EXE_krepair"))
            .env("TMPDIR", dir.path())
            .args([
                "batch",
                "-q",
                "--jobs",
                "2",
                "--timeout",
                TIMEOUT,
                "--stats",
                "identity",
            ])
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .arg("--report")
            .arg(&report)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        let label = format!("batch from seed {first_seed}");
        let keep = || {
            let k = std::env::temp_dir().join(format!("krepair-fuzz-batch-{first_seed}"));
            let _ = fs::remove_dir_all(&k);
            fs::rename(&input, &k).unwrap();
            k
        };
        let code = o.status.code();
        if !matches!(code, Some(0) | Some(1)) {
            panic!(
                "{label}: exit {code:?}: {err}; inputs kept in {}",
                keep().display()
            );
        }
        let r: serde_json::Value = serde_json::from_str(&fs::read_to_string(&report).unwrap())
            .unwrap_or_else(|e| panic!("{label}: report: {e}"));
        let entries = r["entries"].as_array().unwrap();
        if entries.len() != names.len() {
            panic!(
                "{label}: {} rows for {} archives; inputs kept in {}",
                entries.len(),
                names.len(),
                keep().display()
            );
        }
        let mut failures = 0;
        for (e, name) in entries.iter().zip(&names) {
            assert!(
                e["path"].as_str().unwrap().ends_with(name.as_str()),
                "{label}: sorted rows"
            );
            let written = out.join(name).exists();
            match e["outcome"].as_str().unwrap() {
                "repaired" | "nothing-to-repair" => {
                    assert!(written, "{label}: {name}: no output");
                }
                "failed" | "refused" => {
                    failures += 1;
                    assert!(!written, "{label}: {name}: output after a failure");
                    let msg = e["error"].as_str().unwrap();
                    assert_eq!(msg.lines().count(), 1, "{label}: {name}: {msg}");
                    if msg.contains("killed by") || msg.contains("internal error") {
                        panic!(
                            "{label}: {name}: {msg}; inputs kept in {}",
                            keep().display()
                        );
                    }
                }
                other => panic!("{label}: {name}: outcome {other}"),
            }
        }
        assert_eq!(
            err.lines().count(),
            failures,
            "{label}: one stderr line per failure: {err}"
        );
        for d in [dir.path(), input.as_path(), out.as_path()] {
            if let Ok(rd) = fs::read_dir(d) {
                for e in rd.flatten() {
                    let n = e.file_name().to_string_lossy().into_owned();
                    assert!(
                        !n.starts_with(".krepair-"),
                        "{label}: temporary file {n} left"
                    );
                }
            }
        }
        archives += names.len();
        batches += 1;
    }
    eprintln!("fuzz batch: {archives} inputs in {batches} batches in {secs} s, every one reported");
    assert!(batches > 0);
}

/// Run the binary with `args` on a mutated input: it must end within
/// [`RUN_LIMIT`] with one of `ok` codes, or `trouble` with exactly one
/// line on stderr; never by a signal, never with a crashed worker.
fn run_look(args: &[&std::ffi::OsStr], ok: &[i32], trouble: i32, bytes: &[u8], label: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_krepair"));
    cmd.env("TMPDIR", dir.path()).args(args);
    let (status, err) = bounded(cmd, bytes, label);
    let fail = |why: &str| -> ! {
        panic!(
            "{label}: {why}: {err}; input saved to {}",
            save(bytes, label).display()
        )
    };
    match status.code() {
        Some(c) if ok.contains(&c) => {}
        Some(c) if c == trouble => {
            if err.lines().count() != 1 {
                fail("not exactly one line on stderr");
            }
            if err.contains("killed by") || err.contains("internal error") {
                fail("the worker process crashed");
            }
        }
        Some(c) => fail(&format!("exit code {c}")),
        None => fail("killed by a signal (a crash)"),
    }
    if leftovers(dir.path()) {
        fail("temporary files left behind");
    }
}

/// `krepair inspect` and `krepair diff` on the same mutated inputs (and
/// on mutated bare weights files): an answer or one line, never a crash
/// or a hang.
#[test]
fn fuzz_inspect_diff() {
    let seeds = seeds();
    let secs = (fuzz_seconds() / 2).max(2);
    let start = Instant::now();
    let mut rounds = 0u64;
    let dir = tempfile::tempdir().unwrap();
    while start.elapsed() < Duration::from_secs(secs) {
        let (round_seed, mut rng) = round_rng(2_000_000 + rounds);
        let label = format!("look-seed-{round_seed}");
        let (bytes, path) = if rng.below(3) == 0 {
            // A bare weights file: one seed's model.weights.h5, mutated.
            let (_, members) = &seeds[rng.below(seeds.len())];
            let mut w = members
                .iter()
                .find(|(n, _)| n == "model.weights.h5")
                .unwrap()
                .1
                .clone();
            let donor = w.clone();
            mutate(&mut rng, &mut w, &donor);
            (w, dir.path().join("fuzz.weights.h5"))
        } else {
            (generate(&mut rng, &seeds), dir.path().join("fuzz.keras"))
        };
        fs::write(&path, &bytes).unwrap();
        let seed_path = dir.path().join("seed.keras");
        fs::write(&seed_path, &seeds[rng.below(seeds.len())].0).unwrap();
        let p = path.as_os_str();
        let t = std::ffi::OsStr::new;
        run_look(
            &[t("inspect"), t("--json"), t("--timeout"), t(TIMEOUT), p],
            &[0],
            1,
            &bytes,
            &label,
        );
        run_look(
            &[
                t("diff"),
                t("--timeout"),
                t(TIMEOUT),
                seed_path.as_os_str(),
                p,
            ],
            &[0, 1],
            2,
            &bytes,
            &label,
        );
        rounds += 1;
    }
    eprintln!("fuzz: inspect and diff of {rounds} inputs in {secs} s, no crash, no panic");
    assert!(rounds > 0);
}

/// Legacy HDF5 model files (the committed `.h5` cases and a weights-only
/// file), mutated as whole files, migrated by the binary: as for
/// archives, exit 0 with a complete output or 1 with one line and nothing
/// written, never a crash, a hang or a leftover (the attribute reader,
/// the mapping of weights and `H5Ocopy` see the garbage).
#[test]
fn fuzz_legacy_h5() {
    // tf.keras's files, and Keras 3's (modules from keras3_classes.json,
    // weight names with their build scope).
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for writer in [
        "migrate-h5-tf2.15",
        "migrate-h5-keras3.15",
        "migrate-h5-keras3.0",
    ] {
        let dir = common::root().join("testdata/fixtures").join(writer);
        for e in fs::read_dir(&dir).unwrap() {
            seeds.push(fs::read(e.unwrap().path().join("model.h5")).unwrap());
        }
    }
    seeds.push(fs::read(common::root().join("testdata/legacy-h5/weights-only.h5")).unwrap());
    assert!(seeds.len() >= 20);
    // The legacy files that crashed HDF5 once (a global heap object past
    // its collection; a header message H5Ocopy crashed on), replayed first.
    let mut exits = [0usize; 2];
    for e in fs::read_dir(common::root().join("testdata/fuzz-regressions")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "h5") {
            let label = p.file_name().unwrap().to_string_lossy().to_string();
            let migrated = migrate_one(&fs::read(&p).unwrap(), &label);
            exits[usize::from(!migrated)] += 1;
        }
    }
    assert!(exits[0] + exits[1] >= 2, "the .h5 regressions are missing");
    let budget = Duration::from_secs(fuzz_seconds().div_ceil(2));
    let start = Instant::now();
    let mut round = 0u64;
    while start.elapsed() < budget {
        let (round_seed, mut rng) = round_rng(round ^ 0x4835);
        let mut bytes = seeds[rng.below(seeds.len())].clone();
        let other = seeds[rng.below(seeds.len())].clone();
        mutate(&mut rng, &mut bytes, &other);
        let label = format!("h5-{round_seed}");
        let migrated = migrate_one(&bytes, &label);
        exits[usize::from(!migrated)] += 1;
        round += 1;
    }
    eprintln!(
        "fuzz_legacy_h5: {round} files: {} migrated, {} refused or malformed",
        exits[0], exits[1]
    );
    assert!(round > 0);
}

/// `krepair migrate` of the file `bytes`, judged ([`judge`]): whether it
/// migrated; a crash, hang, stray line or leftover fails the test.
fn migrate_one(bytes: &[u8], label: &str) -> bool {
    {
        let t = tempfile::tempdir().unwrap();
        let input = t.path().join("fuzz.h5");
        let out = t.path().join("out.keras");
        fs::write(&input, bytes).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_krepair"));
        cmd.env("TMPDIR", t.path())
            .args(["migrate", "-q", "--timeout", TIMEOUT])
            .arg(&input)
            .arg(&out);
        let (status, err) = bounded(cmd, bytes, label);
        let fail = |why: &str| -> ! {
            panic!(
                "{label}: {why}: {err}; input saved to {}",
                save(bytes, label).display()
            )
        };
        let migrated = judge(status, &err, &out).unwrap_or_else(|why| fail(&why));
        if leftovers(t.path()) {
            fail("temporary files left behind");
        }
        migrated
    }
}
