//! The Discretization repair (issue #15) on the committed tf.keras 2.12 to
//! 2.15 fixtures, without Python: the boundaries embedded are the ones the
//! in-memory layer computed (recorded by testdata/generate.py), bit for
//! bit; the summary goes; the output is healthy; `migrate` splits an
//! encoded layer; damaged summaries and configs are refused with one line.
//! Whether the outputs load and predict right is the real-Keras checks'
//! job (scripts/check_keras.py, scripts/check_migrate.py).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

const CASES: &[&str] = &[
    "discretization",
    "discretization_onehot",
    "discretization_large",
];
const FOLDERS: &[&str] = &[
    "keras-tf2.15",
    "migrate-tf2.12",
    "migrate-tf2.13",
    "migrate-tf2.14",
];

fn case(folder: &str, case: &str) -> PathBuf {
    root().join("testdata/fixtures").join(folder).join(case)
}

fn expected(dir: &Path) -> Vec<Value> {
    let e: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    e["discretizations"].as_array().unwrap().clone()
}

fn bits(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| (x.as_f64().unwrap() as f32).to_bits())
        .collect()
}

/// The config entry of the layer named `name`, anywhere in `config`.
fn entry<'a>(config: &'a Value, name: &str) -> Option<&'a Value> {
    match config {
        Value::Object(o) => {
            if o.get("class_name").is_some()
                && o.get("config").and_then(|c| c.get("name")) == Some(&Value::from(name))
            {
                return Some(config);
            }
            o.values().find_map(|v| entry(v, name))
        }
        Value::Array(a) => a.iter().find_map(|v| entry(v, name)),
        _ => None,
    }
}

fn config_of(archive: &Path) -> Value {
    serde_json::from_slice(&member(archive, "config.json")).unwrap()
}

fn has_dataset(archive: &Path, path: &str) -> bool {
    let t = tempfile::NamedTempFile::new().unwrap();
    fs::write(t.path(), member(archive, "model.weights.h5")).unwrap();
    let f = hdf5::File::open(t.path()).unwrap();
    f.dataset(path).is_ok()
}

fn report(args: &[&dyn AsRef<std::ffi::OsStr>], want: i32) -> Value {
    let mut a: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"--report", &"-"];
    a.extend_from_slice(args);
    let o = krepair(&a);
    assert_eq!(code(&o), want, "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn every_fixture_gets_the_in_memory_boundaries_bit_for_bit() {
    let t = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for folder in FOLDERS {
        for c in CASES {
            let dir = case(folder, c);
            let input = dir.join("model.keras");
            let out = t.path().join(format!("{folder}-{c}.keras"));
            let before = sha(&input);
            let r = report(&[&"-q", &input, &out], 0);
            assert_eq!(r["outcome"], "repaired", "{folder}/{c}");
            assert_eq!(sha(&input), before, "the input is never written");
            let config = config_of(&out);
            for d in expected(&dir) {
                let name = d["name"].as_str().unwrap();
                let rep = r["discretizations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|x| x["name"] == name)
                    .unwrap_or_else(|| panic!("{folder}/{c}: {name} not reported"));
                assert_eq!(rep["status"], "repaired");
                assert_eq!(rep["mode"], "adapt");
                assert_eq!(rep["summary_shape"], d["summary_shape"]);
                assert_eq!(bits(&rep["bin_boundaries"]), bits(&d["bin_boundaries"]));
                let codes: Vec<&str> = rep["findings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["code"].as_str().unwrap())
                    .collect();
                assert_eq!(codes, ["adapt-mode", "boundaries-computed"], "{folder}/{c}");
                // In the output's config, as float32 bits; num_bins null
                // (tf.keras refuses both), and the summary gone.
                let e = entry(&config, name).unwrap();
                assert_eq!(
                    bits(&e["config"]["bin_boundaries"]),
                    bits(&d["bin_boundaries"])
                );
                assert!(e["config"]["num_bins"].is_null());
                let group = rep["weights_group"].as_str().unwrap();
                assert!(has_dataset(&input, &format!("{group}/0")), "{group}");
                assert!(!has_dataset(&out, &format!("{group}/0")), "{group}");
                checked += 1;
            }
            // The output needs nothing: an exact copy, every
            // Discretization explicit.
            let again = t.path().join("again.keras");
            let r2 = report(&[&"-q", &out, &again], 0);
            assert_eq!(r2["outcome"], "nothing-to-repair", "{folder}/{c}");
            assert_eq!(sha(&again), sha(&out));
            for d in r2["discretizations"].as_array().unwrap() {
                assert_eq!(d["status"], "already-explicit", "{folder}/{c}");
            }
            fs::remove_file(&again).unwrap();
        }
    }
    assert_eq!(checked, FOLDERS.len() * CASES.len());
}

#[test]
fn a_dry_run_shows_the_layers_and_the_boundaries() {
    let dir = case("keras-tf2.15", "discretization");
    let o = krepair(&[&"--dry-run", &dir.join("model.keras")]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("1 Discretization layer"), "{text}");
    assert!(
        text.contains("discretization [layers/discretization/vars]: would embed 3 bin boundaries"),
        "{text}"
    );
    let want: Vec<String> = expected(&dir)[0]["bin_boundaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap().to_string())
        .collect();
    assert!(
        text.contains(&format!("bin_boundaries: [{}]", want.join(", "))),
        "{text}"
    );
    assert!(text.contains("would repair 1 layer(s)"), "{text}");
}

#[test]
fn migrate_splits_an_encoded_discretization_and_fills_in_its_bins() {
    let t = tempfile::tempdir().unwrap();
    for folder in FOLDERS {
        let dir = case(folder, "discretization_onehot");
        let out = t.path().join(format!("{folder}.keras"));
        let o = krepair(&[
            &"migrate",
            &"-q",
            &"--report",
            &"-",
            &dir.join("model.keras"),
            &out,
        ]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        let split: Vec<&Value> = r["migration"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["code"] == "discretization-encoding")
            .collect();
        assert_eq!(split.len(), 1, "{folder}: {}", r["migration"]);
        let d = &expected(&dir)[0];
        let name = d["name"].as_str().unwrap();
        let config = config_of(&out);
        let disc = entry(&config, name).unwrap();
        assert_eq!(disc["config"]["output_mode"], "int");
        assert!(disc["config"].get("trainable").is_none(), "{folder}");
        let enc_name = format!("{name}_encoding");
        let enc = entry(&config, &enc_name).unwrap();
        assert_eq!(enc["class_name"], "CategoryEncoding");
        // One-hot on (batch, 1) inputs is multi-hot in every Keras.
        assert_eq!(enc["config"]["output_mode"], "multi_hot");
        let bins = d["bin_boundaries"].as_array().unwrap().len() as u64;
        assert_eq!(enc["config"]["num_tokens"], bins + 1, "{folder}");
        assert_eq!(enc["inbound_nodes"][0][0][0], name);
        // The Concatenate now reads the encoding, and the user's own
        // CategoryEncoding lost its `sparse: false` (Keras 3.0 rejects it).
        let concat = entry(&config, "concatenate").unwrap();
        let inputs: Vec<&str> = concat["inbound_nodes"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x[0].as_str().unwrap())
            .collect();
        assert!(inputs.contains(&enc_name.as_str()), "{inputs:?}");
        assert!(!inputs.contains(&name), "{inputs:?}");
        let own = entry(&config, "category_encoding").unwrap();
        assert!(own["config"].get("sparse").is_none(), "{folder}");
        // Migrating the output again changes nothing.
        let again = t.path().join("again.keras");
        let o = krepair(&[&"migrate", &"-q", &out, &again]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(sha(&again), sha(&out), "{folder}");
        fs::remove_file(&again).unwrap();
    }
}

/// The lone fixture with `edit` applied to its config text (as JSON).
fn with_config(dst: &Path, edit: impl FnOnce(&mut Value)) {
    derive(
        &case("keras-tf2.15", "discretization").join("model.keras"),
        dst,
        |m| {
            let c = m.iter_mut().find(|x| x.0 == "config.json").unwrap();
            let mut v: Value = serde_json::from_slice(&c.1).unwrap();
            edit(&mut v);
            c.1 = serde_json::to_vec(&v).unwrap();
        },
    );
}

/// The lone fixture with its summary replaced by `make`.
fn with_summary(dst: &Path, make: impl FnOnce(&hdf5::Group)) {
    let m = edit_h5(
        members(&case("keras-tf2.15", "discretization").join("model.keras")),
        |f| {
            let g = f.group("layers/discretization/vars").unwrap();
            g.unlink("0").unwrap();
            make(&g);
        },
    );
    write_zip(dst, &m);
}

fn summary_f32(g: &hdf5::Group, shape: &[usize], data: &[f32]) {
    g.new_dataset::<f32>()
        .shape(shape)
        .create("0")
        .unwrap()
        .write_raw(data)
        .unwrap();
}

#[test]
fn damaged_summaries_and_configs_are_refused_with_one_line() {
    let t = tempfile::tempdir().unwrap();
    type Make = Box<dyn FnOnce(&Path)>;
    let sorted: Vec<f32> = (0..8).map(|i| i as f32).collect();
    let ones = [1f32; 8];
    let row = |v: &[f32], w: &[f32]| [v, w].concat();
    let cases: Vec<(&str, Make, &str)> = vec![
        (
            "non-finite-statistics",
            Box::new(move |p| {
                let mut v = sorted.clone();
                v[3] = f32::NAN;
                with_summary(p, |g| summary_f32(g, &[2, 8], &row(&v, &ones)))
            }),
            "non-finite number at column 3",
        ),
        (
            "bad-summary",
            Box::new(move |p| {
                let mut v: Vec<f32> = (0..8).map(|i| i as f32).collect();
                v.swap(2, 5);
                with_summary(p, |g| summary_f32(g, &[2, 8], &row(&v, &ones)))
            }),
            "not sorted",
        ),
        (
            "bad-summary",
            Box::new(move |p| {
                let v: Vec<f32> = (0..8).map(|i| i as f32).collect();
                with_summary(p, |g| summary_f32(g, &[2, 8], &row(&v, &[0.0; 8])))
            }),
            "weights are all zero",
        ),
        (
            "bad-summary",
            Box::new(move |p| {
                let v: Vec<f32> = (0..8).map(|i| i as f32).collect();
                let mut w = [1f32; 8];
                w[6] = -2.0;
                with_summary(p, |g| summary_f32(g, &[2, 8], &row(&v, &w)))
            }),
            "weight at column 6 is negative",
        ),
        (
            "weights-mismatch",
            Box::new(|p| {
                with_summary(p, |g| {
                    g.new_dataset::<f64>()
                        .shape([2, 4])
                        .create("0")
                        .unwrap()
                        .write_raw(&[0f64, 1.0, 2.0, 3.0, 1.0, 1.0, 1.0, 1.0])
                        .unwrap();
                })
            }),
            "expected float32 of shape [2, n]",
        ),
        (
            "weights-mismatch",
            Box::new(|p| with_summary(p, |g| summary_f32(g, &[3, 2], &[0.0; 6]))),
            "expected float32 of shape [2, n]",
        ),
        (
            "weights-mismatch",
            Box::new(|p| {
                with_summary(p, |g| {
                    summary_f32(g, &[2, 2], &[0.0, 1.0, 1.0, 1.0]);
                    g.new_dataset::<f32>().shape([1]).create("1").unwrap();
                })
            }),
            "expected [\"0\"] (the summary)",
        ),
        (
            "weights-not-found",
            Box::new(|p| {
                let m = edit_h5(
                    members(&case("keras-tf2.15", "discretization").join("model.keras")),
                    |f| f.unlink("layers/discretization").unwrap(),
                );
                write_zip(p, &m);
            }),
            "no weights group at `layers/discretization/vars`",
        ),
        (
            "bad-num-bins",
            Box::new(|p| {
                with_config(p, |c| {
                    entry_mut(c, "discretization")["config"]["num_bins"] = Value::from(0)
                })
            }),
            "num_bins is 0",
        ),
        (
            "bad-num-bins",
            Box::new(|p| {
                with_config(p, |c| {
                    entry_mut(c, "discretization")["config"]["num_bins"] = Value::from("4")
                })
            }),
            "num_bins are both \"4\"",
        ),
        (
            "inconsistent-config",
            Box::new(|p| {
                with_config(p, |c| {
                    entry_mut(c, "discretization")["config"]
                        .as_object_mut()
                        .unwrap()
                        .shift_remove("bin_boundaries");
                })
            }),
            "no bin_boundaries key",
        ),
    ];
    for (i, (want, make, needle)) in cases.into_iter().enumerate() {
        let d = t.path().join(format!("case{i}"));
        fs::create_dir(&d).unwrap();
        let p = d.join("in.keras");
        make(&p);
        refuses(&p, &[], needle);
        // The report names the layer's finding; the dry run says so too.
        let r = report(&[&"--dry-run", &"-q", &p], 1);
        assert_eq!(r["outcome"], "refused", "{needle}");
        let l = &r["discretizations"][0];
        assert_eq!(l["status"], "refused", "{needle}");
        assert!(
            l["findings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["code"] == want && f["severity"] == "error"),
            "{needle}: {}",
            l["findings"]
        );
    }
}

fn entry_mut<'a>(config: &'a mut Value, name: &str) -> &'a mut Value {
    let layers = config["config"]["layers"].as_array_mut().unwrap();
    layers
        .iter_mut()
        .find(|l| l["config"]["name"] == name)
        .unwrap()
}

#[test]
fn an_empty_summary_embeds_no_boundaries_with_a_warning() {
    // Built, never adapted: tf.keras puts every input in bin 0, and so do
    // empty boundaries.
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("in.keras");
    with_summary(&p, |g| {
        g.new_dataset::<f32>().shape([2, 0]).create("0").unwrap();
    });
    let out = t.path().join("out.keras");
    let r = report(&[&"-q", &p, &out], 0);
    let l = &r["discretizations"][0];
    assert_eq!(l["status"], "repaired");
    assert_eq!(l["bin_boundaries"], serde_json::json!([]));
    assert!(l["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["code"] == "never-adapted" && f["severity"] == "warning"));
    let e = entry(&config_of(&out), "discretization").unwrap().clone();
    assert_eq!(e["config"]["bin_boundaries"], serde_json::json!([]));
}

#[test]
fn boundaries_already_in_the_config_are_left_alone() {
    // The Keras 3 form: bin_boundaries and num_bins both set, no summary.
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("in.keras");
    let m = edit_h5(
        members(&case("keras-tf2.15", "discretization").join("model.keras")),
        |f| {
            f.group("layers/discretization/vars")
                .unwrap()
                .unlink("0")
                .unwrap()
        },
    );
    write_zip(&p, &m);
    let q = t.path().join("k3.keras");
    derive(&p, &q, |m| {
        let c = m.iter_mut().find(|x| x.0 == "config.json").unwrap();
        let mut v: Value = serde_json::from_slice(&c.1).unwrap();
        entry_mut(&mut v, "discretization")["config"]["bin_boundaries"] =
            serde_json::json!([2.5, 5.0, 7.5]);
        c.1 = serde_json::to_vec(&v).unwrap();
    });
    let out = t.path().join("out.keras");
    let r = report(&[&"-q", &q, &out], 0);
    assert_eq!(r["outcome"], "nothing-to-repair");
    assert_eq!(r["discretizations"][0]["status"], "already-explicit");
    assert_eq!(sha(&out), sha(&q));
}

#[test]
fn a_keras_3_archive_is_left_alone() {
    // Keras 3.15 writes the boundaries it computed, and num_bins, into the
    // config, and keeps no summary.
    let t = tempfile::tempdir().unwrap();
    let input = case("keras-3.15", "discretization").join("model.keras");
    let e = entry(&config_of(&input), "discretization").unwrap().clone();
    assert!(e["config"]["bin_boundaries"].is_array());
    assert_eq!(e["config"]["num_bins"], 4);
    let out = t.path().join("out.keras");
    // For the Keras that wrote it and later (older ones need rewrites of
    // other keys: tests/keras3.rs).
    let r = report(&[&"-q", &"--load-in", &"3.15..", &input, &out], 0);
    assert_eq!(r["outcome"], "nothing-to-repair");
    let d = &r["discretizations"][0];
    assert_eq!(d["status"], "already-explicit");
    assert_eq!(d["mode"], "explicit");
    assert_eq!(sha(&out), sha(&input));
}
