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
/// output) or 1 (with one line on stderr and nothing written); never die
/// from a signal, panic or hang. Returns whether the HDF5 watchdog fired.
fn run_one(bytes: &[u8], label: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("fuzz.keras");
    let out = dir.path().join("out.keras");
    fs::write(&input, bytes).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_krepair"))
        .env("TMPDIR", dir.path())
        .args(["-q", "--stats", "identity", "--timeout", TIMEOUT])
        .arg(&input)
        .arg(&out)
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
    let fail = |why: &str| -> ! {
        panic!(
            "{label}: {why}: {err}; input saved to {}",
            save(bytes, label).display()
        )
    };
    match status.code() {
        Some(0) => {
            if !out.exists() {
                fail("exit 0 without an output");
            }
        }
        Some(1) => {
            if err.lines().count() != 1 {
                fail("not exactly one line on stderr");
            }
            if out.exists() {
                fail("an output after a failure");
            }
        }
        Some(c) => fail(&format!("exit code {c}")),
        None => fail("killed by a signal (a crash)"),
    }
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".krepair-"))
        .collect();
    if !left.is_empty() {
        fail("temporary files left behind");
    }
    err.contains("did not finish within")
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
    type Seed = (Vec<u8>, Vec<(String, Vec<u8>)>);
    let seeds: Vec<Seed> = fixtures()
        .into_iter()
        .filter(|f| f.expected.form == "zip")
        .map(|f| (fs::read(f.archive()).unwrap(), members(&f.archive())))
        .collect();
    let secs: u64 = std::env::var("KREPAIR_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("KREPAIR_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20147);
    let start = Instant::now();
    let mut rounds = 0u64;
    let mut watchdog = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        let round_seed = seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(rounds)
            | 1;
        let mut rng = Rng(round_seed);
        let (whole, members) = &seeds[rng.below(seeds.len())];
        let (other, _) = &seeds[rng.below(seeds.len())];
        let bytes = if rng.below(3) == 0 {
            let mut b = whole.clone();
            mutate(&mut rng, &mut b, other);
            b
        } else {
            let mut m = members.clone();
            let i = rng.below(m.len());
            let donor = &m[rng.below(m.len())].1.clone();
            mutate(&mut rng, &mut m[i].1, donor);
            let t = tempfile::NamedTempFile::new().unwrap();
            write_zip(t.path(), &m);
            fs::read(t.path()).unwrap()
        };
        let label = format!("seed-{round_seed}");
        if run_one(&bytes, &label) {
            watchdog += 1;
            eprintln!(
                "fuzz: HDF5 hang caught by the watchdog: {}",
                save(&bytes, &label).display()
            );
        }
        rounds += 1;
    }
    eprintln!("fuzz: {rounds} inputs in {secs} s, no crash, no panic; {watchdog} HDF5 hang(s) ended by the watchdog");
    assert!(rounds > 0);
}
