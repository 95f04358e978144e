//! Helpers shared by the integration tests: running the binary, reading
//! fixtures and their real-Keras expectations, and deriving damaged
//! archives from them.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What testdata/generate.py recorded with real Keras.
#[derive(Debug, Deserialize, Clone)]
pub struct Expected {
    pub case: String,
    pub keras_version: String,
    pub archive: String,
    pub form: String,
    pub auto: String,
    pub legacy_signature: bool,
    pub layers: Vec<ExpectedLayer>,
    /// Adapt-mode Discretization layers (tf.keras 2.12-2.15 fixtures).
    #[serde(default)]
    pub discretizations: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize, Clone)]
pub struct ExpectedLayer {
    pub config_path: String,
    pub name: String,
    pub mode: String,
    pub weights_group: Option<String>,
    pub stats_shape: Option<Vec<usize>>,
    pub mean: Option<serde_json::Value>,
    pub variance: Option<serde_json::Value>,
    pub count: Option<i64>,
    pub storage: Option<String>,
}

pub struct Fixture {
    pub dir: PathBuf,
    pub expected: Expected,
}

impl Fixture {
    pub fn archive(&self) -> PathBuf {
        self.dir.join(&self.expected.archive)
    }
    pub fn tag(&self) -> String {
        format!(
            "{}/{}",
            self.dir
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap(),
            self.expected.case
        )
    }
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every committed fixture case.
pub fn fixtures() -> Vec<Fixture> {
    let mut out = Vec::new();
    let base = root().join("testdata/fixtures");
    // keras-<version>: the repair fixtures (migrate-<version>: tf.keras
    // 2.13 and 2.14 archives for `krepair migrate`, tests/migrate.rs).
    let mut versions: Vec<_> = fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("keras-"))
        })
        .collect();
    versions.sort();
    for v in versions {
        let mut cases: Vec<_> = fs::read_dir(&v)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        cases.sort();
        for c in cases {
            let e = c.join("expected.json");
            if e.is_file() {
                let expected = serde_json::from_str(&fs::read_to_string(e).unwrap()).unwrap();
                out.push(Fixture { dir: c, expected });
            }
        }
    }
    assert!(out.len() >= 20, "fixtures missing: found {}", out.len());
    out
}

pub fn fixture(version: &str, case: &str) -> Fixture {
    fixtures()
        .into_iter()
        .find(|f| f.dir.ends_with(format!("keras-{version}/{case}")))
        .unwrap_or_else(|| panic!("no fixture {version}/{case}"))
}

pub fn krepair(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_krepair"));
    for a in args {
        c.arg(a);
    }
    c.output().unwrap()
}

/// [`krepair`] with environment variables set.
pub fn krepair_env(env: &[(&str, &str)], args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_krepair"));
    c.envs(env.iter().copied());
    for a in args {
        c.arg(a);
    }
    c.output().unwrap()
}

/// Bytes the kernel copied from the input into the output, from the
/// `KREPAIR_TIMINGS` lines of a run.
pub fn kernel_copied(o: &Output) -> u64 {
    stderr(o)
        .lines()
        .filter(|l| l.contains("bytes copied from the input by the kernel"))
        .filter_map(|l| {
            l.split(" of ")
                .next()?
                .rsplit(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally, not by a signal")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn sha(path: &Path) -> String {
    let mut h = Sha256::new();
    h.update(fs::read(path).unwrap());
    format!("{:x}", h.finalize())
}

/// Hash of a whole tree: every path and every file's bytes, sorted.
pub fn tree_hash(path: &Path) -> String {
    let mut entries = Vec::new();
    fn walk(p: &Path, base: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        let rel = p.strip_prefix(base).unwrap().display().to_string();
        if p.is_dir() {
            out.push((rel + "/", vec![]));
            for e in fs::read_dir(p).unwrap() {
                walk(&e.unwrap().path(), base, out);
            }
        } else {
            out.push((rel, fs::read(p).unwrap()));
        }
    }
    walk(path, path, &mut entries);
    entries.sort();
    let mut h = Sha256::new();
    for (n, b) in entries {
        h.update(n.as_bytes());
        h.update([0]);
        h.update(&b);
    }
    format!("{:x}", h.finalize())
}

/// The members of a zip (or files of a directory-form archive), in order.
pub fn members(path: &Path) -> Vec<(String, Vec<u8>)> {
    if path.is_dir() {
        let mut names = vec![];
        for n in ["config.json", "metadata.json", "model.weights.h5"] {
            if path.join(n).exists() {
                names.push((n.to_string(), fs::read(path.join(n)).unwrap()));
            }
        }
        return names;
    }
    let mut z = zip::ZipArchive::new(fs::File::open(path).unwrap()).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut b = Vec::new();
            f.read_to_end(&mut b).unwrap();
            (f.name().unwrap().to_string(), b)
        })
        .collect()
}

pub fn member(path: &Path, name: &str) -> Vec<u8> {
    members(path)
        .into_iter()
        .find(|m| m.0 == name)
        .unwrap_or_else(|| panic!("no member {name} in {}", path.display()))
        .1
}

/// Write a stored zip holding these members in this order.
pub fn write_zip(path: &Path, members: &[(String, Vec<u8>)]) {
    let mut w = zip::ZipWriter::new(fs::File::create(path).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (n, b) in members {
        w.start_file(n.as_str(), opts).unwrap();
        w.write_all(b).unwrap();
    }
    w.finish().unwrap();
}

/// Apply `edit` to a copy of the weights file's bytes through the HDF5
/// module, and return the new bytes.
pub fn edit_weights(bytes: &[u8], edit: impl FnOnce(&krepair::weights::Weights)) -> Vec<u8> {
    let t = tempfile::NamedTempFile::new().unwrap();
    fs::write(t.path(), bytes).unwrap();
    let f = fs::File::open(t.path()).unwrap();
    let w = krepair::weights::Weights::open_at(&f, 0, bytes.len() as u64, "test", true).unwrap();
    edit(&w);
    let mut image = w.finish().unwrap();
    let mut out = Vec::new();
    image
        .drain(|chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        })
        .unwrap();
    out
}

/// A copy of a fixture's zip with `f` applied to its members.
pub fn derive(src: &Path, dst: &Path, f: impl FnOnce(&mut Vec<(String, Vec<u8>)>)) {
    let mut m = members(src);
    f(&mut m);
    write_zip(dst, &m);
}

/// Flatten a nested JSON array of numbers to float32 values.
pub fn flat_f32(v: &serde_json::Value) -> Vec<f32> {
    match v {
        serde_json::Value::Array(a) => a.iter().flat_map(flat_f32).collect(),
        x => vec![x.as_f64().unwrap() as f32],
    }
}

/// Run on a damaged input: exit 1, one line on stderr naming the input
/// and containing `needle`, no output, input unchanged.
/// [`refuses`], and the report's `error` says malformed input of `kind`
/// ([`krepair::error::Malformed`]).
#[allow(dead_code)]
pub fn refuses_as(input: &std::path::Path, needle: &str, kind: &str) {
    refuses(input, &[], needle);
    let t = tempfile::tempdir().unwrap();
    let (report, out) = (t.path().join("report.json"), t.path().join("out.keras"));
    let o = krepair(&[&"-q", &"--report", &report, &input, &out]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(!out.exists());
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["error"]["code"], "malformed-input", "{}", r["error"]);
    assert_eq!(
        r["error"]["kind"],
        kind,
        "{}: {}",
        input.display(),
        r["error"]
    );
}

pub fn refuses(input: &std::path::Path, extra: &[&str], needle: &str) {
    let dir = input.parent().unwrap();
    let out = dir.join("out.keras");
    let before = tree_hash(input);
    // `extra` first: it may name a subcommand (`migrate`).
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = Vec::new();
    for e in extra {
        args.push(e);
    }
    args.push(&"-q");
    args.push(&input);
    args.push(&out);
    let o = krepair(&args);
    let err = stderr(&o);
    assert_eq!(code(&o), 1, "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(
        err.contains(&input.display().to_string()),
        "must name the file: {err}"
    );
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
    assert!(!out.exists(), "no output may be written");
    assert_eq!(tree_hash(input), before, "input changed");
    let leftovers = temp_files(dir);
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// The names in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// krepair's temporary files (`.krepair-*`) in `dir`.
pub fn temp_files(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.starts_with(".krepair-"))
        .collect()
}

/// `members` with the bytes of `model.weights.h5` edited through the hdf5
/// crate (which can build what Keras never writes: links, odd dataspaces).
pub fn edit_h5(
    mut m: Vec<(String, Vec<u8>)>,
    edit: impl FnOnce(&hdf5::File),
) -> Vec<(String, Vec<u8>)> {
    let w = m.iter_mut().find(|x| x.0 == "model.weights.h5").unwrap();
    let t = tempfile::NamedTempFile::new().unwrap();
    fs::write(t.path(), &w.1).unwrap();
    {
        let f = hdf5::File::open_rw(t.path()).unwrap();
        edit(&f);
        f.close().unwrap();
    }
    w.1 = fs::read(t.path()).unwrap();
    m
}

/// Compare `actual` with the committed golden file `tests/golden/NAME`;
/// `KREPAIR_BLESS=1 cargo test` writes it instead. The message names the
/// first line that differs.
pub fn golden(name: &str, actual: &str) {
    let path = root().join("tests/golden").join(name);
    if std::env::var_os("KREPAIR_BLESS").is_some() {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, actual).unwrap();
    }
    let want = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (KREPAIR_BLESS=1 cargo test writes it)",
            path.display()
        )
    });
    if want != actual {
        let line = want
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| want.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs at line {}:\n  golden: {:?}\n  actual: {:?}\n(KREPAIR_BLESS=1 cargo test rewrites it)",
            path.display(),
            line + 1,
            want.lines().nth(line),
            actual.lines().nth(line)
        );
    }
}

/// The rules a report's `migration` names (none when it has none).
#[allow(dead_code)]
pub fn codes(r: &serde_json::Value) -> std::collections::BTreeSet<String> {
    r["migration"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["code"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The rules between Keras 3 versions (issue #33; tests/keras3.rs
/// exercises them).
#[allow(dead_code)]
pub const KERAS3_RULES: &[&str] = &[
    "keras3-class-name",
    "keras3-default-key",
    "node-training-default",
    "keras3-build-config",
    "keras3-tensor-leaf",
];
