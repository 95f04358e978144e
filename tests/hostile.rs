//! Hostile and damaged archives (docs/security.md): every case ends with
//! one line on stderr naming the file and the problem, exit 1, no output,
//! no temporary file left, and the input unchanged.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;

fn base() -> Vec<(String, Vec<u8>)> {
    members(&fixture("3.15", "axis_last").archive())
}

fn zip_bytes(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let t = tempfile::NamedTempFile::new().unwrap();
    write_zip(t.path(), members);
    fs::read(t.path()).unwrap()
}

fn put(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

/// Replace every occurrence of `from` by `to` (same length) in `bytes`.
fn patch(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut hits = 0;
    for i in 0..=bytes.len() - from.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            hits += 1;
        }
    }
    assert!(hits > 0, "pattern not found");
}

/// The central-directory record of member `name`.
fn central_entry(bytes: &[u8], name: &[u8]) -> usize {
    (0..bytes.len() - 46)
        .find(|&i| bytes[i..].starts_with(b"PK\x01\x02") && bytes[i + 46..].starts_with(name))
        .expect("central directory entry")
}

#[test]
fn broken_zip_containers() {
    let t = tempfile::tempdir().unwrap();
    // CRC mismatch: one byte of config.json changed in place.
    let mut b = zip_bytes(&base());
    patch(&mut b, b"\"trainable\": true", b"\"trainable\": trUe");
    refuses_as(&put(t.path(), "crc.keras", &b), "checksum", "container");
    fs::remove_file(t.path().join("crc.keras")).unwrap();

    // A stored weights member whose bytes do not match its CRC-32 (set
    // wrong in both headers): krepair maps those bytes rather than reading
    // them through the zip reader, and checks them while hashing.
    let mut b = zip_bytes(&base());
    let c = central_entry(&b, b"model.weights.h5");
    let local = u32::from_le_bytes(b[c + 42..c + 46].try_into().unwrap()) as usize;
    for at in [c + 16, local + 14] {
        b[at] ^= 0x01;
    }
    refuses_as(&put(t.path(), "wcrc.keras", &b), "checksum", "container");
    fs::remove_file(t.path().join("wcrc.keras")).unwrap();

    // Duplicate member names.
    let mut m = base();
    m.push(("config.jsoX".into(), b"{}".to_vec()));
    let mut b = zip_bytes(&m);
    patch(&mut b, b"config.jsoX", b"config.json");
    refuses_as(
        &put(t.path(), "dup.keras", &b),
        "duplicate member names",
        "container",
    );
    fs::remove_file(t.path().join("dup.keras")).unwrap();

    // Too many members.
    let mut m = base();
    for i in 0..krepair::source::keras::MAX_MEMBERS {
        m.push((format!("assets/{i}"), vec![]));
    }
    refuses_as(
        &put(t.path(), "many.keras", &zip_bytes(&m)),
        "more than the limit",
        "limit",
    );
    fs::remove_file(t.path().join("many.keras")).unwrap();

    // A member declaring a gigantic size from a few stored bytes.
    let mut m = base();
    m.push(("assets/bomb".into(), vec![0u8; 64]));
    let mut b = zip_bytes(&m);
    let at = central_entry(&b, b"assets/bomb");
    b[at + 24..at + 28].copy_from_slice(&u32::MAX.to_le_bytes());
    refuses_as(&put(t.path(), "bomb.keras", &b), "zip bomb", "limit");
    fs::remove_file(t.path().join("bomb.keras")).unwrap();

    // An absurdly large config.json (declared 100 MiB).
    let mut b = zip_bytes(&base());
    let at = central_entry(&b, b"config.json");
    b[at + 24..at + 28].copy_from_slice(&(100u32 << 20).to_le_bytes());
    b[at + 20..at + 24].copy_from_slice(&(100u32 << 20).to_le_bytes());
    refuses_as(
        &put(t.path(), "bigcfg.keras", &b),
        "config.json",
        "container",
    );
}

#[test]
fn unsafe_member_names() {
    let t = tempfile::tempdir().unwrap();
    for (i, (bad, needle)) in [
        ("../evil.txt", "leaves the archive"),
        ("/etc/evil.tx", "absolute path"),
        ("assets\\evil1", "backslash"),
        ("assets/../config.json", "leaves the archive"),
        ("./assets/x.bin", "leaves the archive"),
    ]
    .into_iter()
    .enumerate()
    {
        let placeholder: String = "q".repeat(bad.len());
        let mut m = base();
        m.push((placeholder.clone(), b"x".to_vec()));
        let mut b = zip_bytes(&m);
        patch(&mut b, placeholder.as_bytes(), bad.as_bytes());
        let p = put(t.path(), &format!("name{i}.keras"), &b);
        refuses_as(&p, needle, "container");
        fs::remove_file(p).unwrap();
    }
    // A symbolic-link entry.
    let p = t.path().join("link.keras");
    let mut w = zip::ZipWriter::new(fs::File::create(&p).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (n, b) in base() {
        w.start_file(n.as_str(), opts).unwrap();
        w.write_all(&b).unwrap();
    }
    w.add_symlink("assets/passwd", "/etc/passwd", opts).unwrap();
    w.finish().unwrap();
    refuses_as(&p, "symbolic link", "container");
}

#[test]
fn bad_json_members() {
    let t = tempfile::tempdir().unwrap();
    type Edit = Box<dyn Fn(&mut Vec<(String, Vec<u8>)>)>;
    let cases: Vec<(&str, Edit, &str, &str)> = vec![
        (
            "metadata not json",
            Box::new(|m| m[0].1 = b"nope".to_vec()),
            "metadata.json is not valid JSON",
            "metadata",
        ),
        (
            "metadata shape",
            Box::new(|m| m[0].1 = b"[1, 2]".to_vec()),
            "metadata.json is not a JSON object",
            "metadata",
        ),
        (
            "version type",
            Box::new(|m| m[0].1 = br#"{"keras_version": 3}"#.to_vec()),
            "keras_version is not a string",
            "metadata",
        ),
        (
            "config shape",
            Box::new(|m| m[1].1 = br#"{"layers": []}"#.to_vec()),
            "not a serialized Keras model",
            "config",
        ),
        (
            "config not utf8",
            Box::new(|m| m[1].1 = vec![0xff, 0xfe]),
            "config.json is not UTF-8",
            "config",
        ),
        (
            "config missing",
            Box::new(|m| m.retain(|x| x.0 != "config.json")),
            "no config.json",
            "missing-member",
        ),
        (
            "weights missing",
            Box::new(|m| m.retain(|x| x.0 != "model.weights.h5")),
            "no model.weights.h5",
            "missing-member",
        ),
        (
            "weights not hdf5",
            Box::new(|m| m[2].1 = vec![7u8; 4096]),
            "not an HDF5 file",
            "weights",
        ),
        (
            "weights truncated",
            Box::new(|m| m[2].1.truncate(600)),
            "not a readable HDF5 file",
            "weights",
        ),
        (
            "weights empty",
            Box::new(|m| m[2].1.clear()),
            "not an HDF5 file (0 bytes",
            "weights",
        ),
        (
            "weights shorter than the signature",
            Box::new(|m| m[2].1.truncate(5)),
            "not an HDF5 file (5 bytes",
            "weights",
        ),
    ];
    for (_what, edit, needle, kind) in cases {
        let mut m = base();
        edit(&mut m);
        let p = put(t.path(), "in.keras", &zip_bytes(&m));
        refuses_as(&p, needle, kind);
    }
    // Explicit-mode and no-Normalization archives are checked as strictly.
    let mut m = members(&fixture("3.15", "no_norm").archive());
    m[2].1 = vec![7u8; 4096];
    refuses(
        &put(t.path(), "in.keras", &zip_bytes(&m)),
        &[],
        "not an HDF5 file",
    );
}

/// The fixture's weights with `edit` applied through the hdf5 crate.
fn hostile_weights(edit: impl FnOnce(&hdf5::File)) -> Vec<(String, Vec<u8>)> {
    edit_h5(base(), edit)
}

#[test]
fn hostile_hdf5() {
    let t = tempfile::tempdir().unwrap();
    type Edit = Box<dyn FnOnce(&hdf5::File)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "soft link",
            Box::new(|f| f.link_soft("/layers", "layers/loop").unwrap()),
            "is a soft link",
        ),
        (
            "external link",
            Box::new(|f| f.link_external("/etc/passwd.h5", "/", "stolen").unwrap()),
            "is an external link",
        ),
        (
            "external dataset",
            Box::new(|f| {
                f.new_dataset::<f32>()
                    .shape(4)
                    .with_dcpl(|p| p.external("/etc/passwd", 0, 16))
                    .create("ext")
                    .unwrap();
            }),
            "external file",
        ),
        (
            "virtual dataset",
            Box::new(|f| {
                f.new_dataset::<f32>()
                    .shape(4)
                    .with_dcpl(|p| p.virtual_map("/etc/passwd.h5", "/data", 4, .., 4, ..))
                    .create("vds")
                    .unwrap();
            }),
            "is a virtual dataset",
        ),
        (
            "absurd dataset",
            Box::new(|f| {
                f.new_dataset::<f32>()
                    .shape([1usize << 22, 1 << 12])
                    .chunk([1, 1 << 12])
                    .create("huge")
                    .unwrap();
            }),
            "declares 68719476736 bytes",
        ),
    ];
    for (_what, edit, needle) in cases {
        let p = put(t.path(), "in.keras", &zip_bytes(&hostile_weights(edit)));
        refuses_as(&p, needle, "weights");
    }
}

#[test]
fn configs_that_hold_code_are_reported_not_run() {
    let t = tempfile::tempdir().unwrap();
    let mut m = base();
    let text = String::from_utf8(m[1].1.clone()).unwrap();
    // Put a Lambda with marshalled bytecode beside the Normalization.
    let lambda = r#"{"module": "keras.layers", "class_name": "Lambda", "config": {"name": "lam", "function": {"class_name": "__lambda__", "config": {"code": "4wEAAAAAAAAAAAAAAAEAAAADAAAA8wwAAACXAHQAAAAAAAAAAAB5AA==", "defaults": null, "closure": null}}}, "registered_name": null, "name": "lam", "inbound_nodes": []}"#;
    let at = text
        .find(r#"{"module": "keras.layers", "class_name": "Normalization""#)
        .unwrap();
    m[1].1 = format!("{}{lambda}, {}", &text[..at], &text[at..]).into_bytes();
    let p = put(t.path(), "in.keras", &zip_bytes(&m));
    let out = t.path().join("out.keras");
    let o = krepair(&[&"--report", &"-", &p, &out]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let codes: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["load-in", "code-in-config"]);
    assert_eq!(report["outcome"], "repaired");
    assert_eq!(report["layers"][0]["status"], "repaired");
}

#[test]
fn an_hdf5_hang_found_by_the_fuzzer_ends_cleanly() {
    // tests/fuzz.rs found this input: HDF5 1.10 loops forever reading the
    // corrupt global heap behind a vars group's `name` attribute.
    let t = tempfile::tempdir().unwrap();
    let input = t.path().join("hang.keras");
    fs::copy(
        root().join("testdata/fuzz-regressions/hdf5-global-heap-hang.keras"),
        &input,
    )
    .unwrap();
    let out = t.path().join("out.keras");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_krepair"))
        .env("TMPDIR", t.path())
        .args(["--timeout", "1"])
        .arg(&input)
        .arg(&out)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(code(&o), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("did not finish within 1 s (while finding the weights of"),
        "{err}"
    );
    assert!(!out.exists());
    let mut left: Vec<String> = fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["hang.keras"], "temporary files left behind");
}
