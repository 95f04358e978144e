//! `krepair migrate` on legacy HDF5 model files (the committed cases of
//! the layer zoo saved by tf.keras 2.15 with `save_format="h5"`): the
//! format is found by content, the weights land where Keras 3 reads
//! them, the report names the file itself, and what is not a whole model
//! is refused with the reason and nothing written. Whether the outputs
//! load and predict right is the real-Keras check's job
//! (scripts/check_migrate.py over the whole HDF5 zoo, in scripts/test.sh).

mod common;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::Value;

fn fixture(case: &str) -> std::path::PathBuf {
    common::root()
        .join("testdata/fixtures/migrate-h5-tf2.15")
        .join(case)
        .join("model.h5")
}

/// The first of a report's rewrites whose `field` is `value`.
fn rewrite<'a>(r: &'a Value, field: &str, value: &str) -> &'a Value {
    r["migration"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x[field] == value)
        .unwrap_or_else(|| panic!("no rewrite with {field} {value}"))
}

/// The codes of a report's rewrites, in order.
fn rule_codes(r: &Value) -> Vec<&str> {
    r["migration"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["code"].as_str().unwrap())
        .collect()
}

fn migrate_report(input: &Path, out: &Path) -> Value {
    let o = krepair(&[&"migrate", &"--report", &"-", &input, &out]);
    assert_eq!(code(&o), 0, "{}: {}", input.display(), stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The names of a zip's members, and the datasets of its weights, as
/// `krepair inspect --json` lists them.
fn weights_paths(archive: &Path) -> Vec<String> {
    let o = krepair(&[&"inspect", &"--json", &archive]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let m: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut out = Vec::new();
    for l in m["layers"].as_array().unwrap() {
        for v in l["variables"].as_array().unwrap() {
            out.push(v["path"].as_str().unwrap().to_string());
        }
    }
    for v in m["other_variables"].as_array().unwrap() {
        out.push(v["path"].as_str().unwrap().to_string());
    }
    out
}

#[test]
fn every_committed_hdf5_case_migrates_to_an_archive_that_migrates_to_itself() {
    let dir = common::root().join("testdata/fixtures/migrate-h5-tf2.15");
    let t = tempfile::tempdir().unwrap();
    let mut n = 0;
    for e in fs::read_dir(&dir).unwrap() {
        let case = e.unwrap().path();
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let out = t.path().join(format!("{name}.keras"));
        let r = migrate_report(&case.join("model.h5"), &out);
        assert_eq!(r["input"]["form"], "hdf5", "{name}");
        assert_eq!(r["output"]["form"], "zip", "{name}");
        assert_eq!(r["keras_version"], "2.15.0", "{name}");
        let input_sha = r["input"]["sha256"].as_str().unwrap();
        assert_eq!(
            input_sha,
            sha(&case.join("model.h5")),
            "{name}: the report hashes the file itself"
        );
        let codes = rule_codes(&r);
        assert!(codes.contains(&"hdf5-model"), "{name}: {codes:?}");
        assert!(codes.contains(&"legacy-module"), "{name}: {codes:?}");
        // The output is a Keras 3 archive: migrating it again copies it.
        let again = t.path().join("again.keras");
        let o = krepair(&[&"migrate", &"-q", &out, &again]);
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        assert_eq!(sha(&again), sha(&out), "{name}: idempotent");
        fs::remove_file(&again).unwrap();
        n += 1;
    }
    assert!(n >= 7, "{n} cases");
}

#[test]
fn weights_go_where_keras_3_reads_them() {
    let t = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str])] = &[
        ("Dense", &["layers/dense/vars/0", "layers/dense/vars/1"]),
        (
            "LSTM",
            &[
                "layers/lstm/cell/vars/0",
                "layers/lstm/cell/vars/1",
                "layers/lstm/cell/vars/2",
            ],
        ),
        (
            "Bidirectional_GRU",
            &[
                "layers/bidirectional/backward_layer/cell/vars/0",
                "layers/bidirectional/forward_layer/cell/vars/2",
            ],
        ),
        (
            "MultiHeadAttention",
            &[
                "layers/multi_head_attention/_key_dense/vars/0",
                "layers/multi_head_attention/_output_dense/vars/1",
                "layers/multi_head_attention/_query_dense/vars/0",
                "layers/multi_head_attention/_value_dense/vars/1",
            ],
        ),
        (
            "RNN_stacked_cells",
            &[
                "layers/rnn/cell/cells/lstm_cell/vars/2",
                "layers/rnn/cell/cells/simple_rnn_cell/vars/0",
            ],
        ),
        (
            "compiled_by_name_adam",
            &["optimizer/vars/0", "optimizer/vars/1"],
        ),
    ];
    for (case, want) in cases {
        let out = t.path().join(format!("{case}.keras"));
        migrate_report(&fixture(case), &out);
        let paths = weights_paths(&out);
        for w in *want {
            assert!(paths.iter().any(|p| p == w), "{case}: no {w} in {paths:?}");
        }
        assert!(
            paths
                .iter()
                .all(|p| !p.starts_with("model_weights") && !p.starts_with("optimizer_weights")),
            "{case}: {paths:?}"
        );
    }
}

#[test]
fn a_compiled_model_comes_back_compiled_with_its_optimizer_state() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("adam.keras");
    let r = migrate_report(&fixture("compiled_by_name_adam"), &out);
    let codes = rule_codes(&r);
    for c in ["training-config", "optimizer-variables", "hdf5-model"] {
        assert!(codes.contains(&c), "{codes:?}");
    }
    let saved = rewrite(&r, "key", "optimizer_weights");
    assert_eq!(saved["old"][0], "optimizer_weights/iteration:0");
}

#[test]
fn the_format_is_found_by_content_whatever_the_name() {
    let t = tempfile::tempdir().unwrap();
    for name in ["model.keras", "model.hdf5", "model"] {
        let input = t.path().join(name);
        fs::copy(fixture("Dense"), &input).unwrap();
        let out = t.path().join(format!("{name}-out.keras"));
        let r = migrate_report(&input, &out);
        assert_eq!(r["input"]["form"], "hdf5", "{name}");
        // repair (not migrate) says what the file is, and where to go.
        let o = krepair(&[&input, &t.path().join("repaired.keras")]);
        assert_ne!(code(&o), 0);
        let e = stderr(&o);
        assert!(
            e.contains("HDF5") && e.contains("krepair migrate"),
            "{name}: {e}"
        );
        assert!(!e.contains("Keras 3 refuses it as well"), "{e}");
        assert!(!t.path().join("repaired.keras").exists());
    }
}

#[test]
fn what_is_not_a_whole_model_is_refused_with_nothing_written() {
    let t = tempfile::tempdir().unwrap();
    let bytes = fs::read(fixture("Dense")).unwrap();
    // Truncated anywhere: one line, a non-zero exit, no output.
    for cut in [100usize, 2000, bytes.len() / 2, bytes.len() - 1] {
        let input = t.path().join(format!("cut-{cut}.h5"));
        fs::write(&input, &bytes[..cut]).unwrap();
        let out = t.path().join(format!("cut-{cut}.keras"));
        let o = krepair(&[&"migrate", &input, &out]);
        assert_ne!(code(&o), 0, "cut at {cut}");
        assert!(!out.exists(), "cut at {cut}: an output was written");
        let e = stderr(&o);
        assert!(
            e.lines().any(|l| l.contains(&*input.to_string_lossy())),
            "cut at {cut}: {e}"
        );
    }
    // A weights-only file (model.save_weights) is not a model.
    let weights_only = common::root().join("testdata/legacy-h5/weights-only.h5");
    let out = t.path().join("w.keras");
    let o = krepair(&[&"migrate", &weights_only, &out]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("weights only"), "{}", stderr(&o));
    assert!(!out.exists());
    // A Keras 3.0 file names its weights `kernel`, `bias`: which layer
    // of a nested model each is, it does not say.
    let nested = common::root().join("testdata/fixtures/migrate-h5-keras3.0/model_nested/model.h5");
    let out = t.path().join("nested.keras");
    let o = krepair(&[&"migrate", &nested, &out]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("names no layer of it"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    // The input is never written.
    assert_eq!(fs::read(fixture("Dense")).unwrap(), bytes);
}

#[test]
fn batch_migrate_finds_hdf5_models_by_content_and_refuses_the_rest_row_by_row() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("models");
    fs::create_dir_all(root.join("sub")).unwrap();
    fs::copy(fixture("Dense"), root.join("dense.h5")).unwrap();
    fs::copy(fixture("LSTM"), root.join("sub/lstm.keras")).unwrap();
    fs::copy(fixture("MultiHeadAttention"), root.join("sub/checkpoint")).unwrap();
    fs::copy(
        common::root().join("testdata/legacy-h5/weights-only.h5"),
        root.join("weights.h5"),
    )
    .unwrap();
    fs::write(root.join("notes.txt"), "not a model").unwrap();
    let out = t.path().join("out");
    let o = krepair(&[
        &"batch",
        &"--migrate",
        &"-q",
        &"--report",
        &"-",
        &root,
        &"--out",
        &out,
    ]);
    // One refused file: the run says so, and every other row stands.
    assert_ne!(code(&o), 0, "{}", stderr(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let entries = r["entries"].as_array().unwrap();
    let paths: Vec<&str> = entries
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(entries.len(), 4, "{paths:?}");
    for e in entries {
        let p = e["path"].as_str().unwrap();
        let ok = e["report"]["error"].is_null();
        assert_eq!(
            ok,
            !p.ends_with("weights.h5"),
            "{p}: {}",
            e["report"]["error"]
        );
    }
    for written in ["dense.keras", "sub/lstm.keras", "sub/checkpoint.keras"] {
        let p = out.join(written);
        assert!(p.is_file(), "{written}");
        assert!(
            fs::read(&p).unwrap().starts_with(b"PK\x03\x04"),
            "{written}: a zip"
        );
    }
    assert!(!out.join("weights.keras").exists());
    assert!(!out.join("notes.txt").exists() && !out.join("notes.keras").exists());
    // In place, an HDF5 file is refused: its name would hold a zip.
    let o = krepair(&[
        &"batch",
        &"--migrate",
        &"-q",
        &"--in-place",
        &root.join("dense.h5"),
    ]);
    assert_ne!(code(&o), 0);
    assert!(
        stderr(&o).contains("not migrated in place"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        fs::read(root.join("dense.h5")).unwrap(),
        fs::read(fixture("Dense")).unwrap()
    );
}

#[test]
fn inspect_says_what_a_legacy_model_file_is_and_what_migrate_would_do() {
    let o = krepair(&[&"inspect", &"--json", &fixture("LSTM")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let m: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["file"]["form"], "hdf5-model");
    assert_eq!(m["keras_version"], "2.15.0");
    assert_eq!(m["migrate"]["outcome"], "would-repair", "{}", m["migrate"]);
    assert_eq!(m["migrate"]["input"]["form"], "hdf5");
    // A weights-only file stays a bare weights file.
    let w = common::root().join("testdata/legacy-h5/weights-only.h5");
    let o = krepair(&[&"inspect", &"--json", &w]);
    let m: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["file"]["form"], "weights");
    assert!(m["migrate"].is_null());
}

#[test]
fn what_older_keras_wrote_migrates_too() {
    // tf.keras 2.15's file with the attributes Keras 2.2 to tf.keras 2.10
    // wrote (see its expected.json): the class Model, a legacy Adam with
    // lr and decay.
    let input =
        common::root().join("testdata/fixtures/migrate-h5-edited/old_keras_2_2_style/model.h5");
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("old.keras");
    let r = migrate_report(&input, &out);
    assert_eq!(r["keras_version"], "2.2.4-tf");
    let training = rewrite(&r, "code", "training-config");
    let opt = &training["new"]["optimizer"];
    assert_eq!(opt["module"], "keras.optimizers.legacy");
    assert_eq!(opt["config"]["learning_rate"], 0.001);
    assert!(opt["config"].get("lr").is_none());
    let codes: Vec<&str> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        ["optimizer-state-not-saved"],
        "one finding says the state starts afresh"
    );
    let cfg = String::from_utf8(member(&out, "config.json")).unwrap();
    assert!(cfg.contains("keras.src.models.functional"));
    // The archive keeps the file's version (2.2.4-tf), and migrating it
    // again copies it (CI found the plan refusing a 2.2 archive).
    let again = t.path().join("again.keras");
    let o = krepair(&[&"migrate", &"-q", &out, &again]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(sha(&again), sha(&out));
}

/// The committed cases Keras 3 wrote as HDF5 (testdata/zoo.py run in a
/// Keras 3 venv), but those it refuses on purpose.
fn keras3_cases() -> Vec<(String, std::path::PathBuf)> {
    let mut out = Vec::new();
    for writer in ["migrate-h5-keras3.0", "migrate-h5-keras3.15"] {
        let dir = common::root().join("testdata/fixtures").join(writer);
        for e in fs::read_dir(&dir).unwrap() {
            let case = e.unwrap().path();
            let expected: Value =
                serde_json::from_slice(&fs::read(case.join("expected.json")).unwrap()).unwrap();
            if expected.get("refused").is_none() {
                let name = case.file_name().unwrap().to_string_lossy().to_string();
                out.push((format!("{writer}/{name}"), case.join("model.h5")));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn keras_3_hdf5_files_become_the_archive_that_keras_writes() {
    let t = tempfile::tempdir().unwrap();
    let cases = keras3_cases();
    assert!(cases.len() >= 11, "{} cases", cases.len());
    for (name, input) in &cases {
        let out = t.path().join("out.keras");
        let r = migrate_report(input, &out);
        assert!(
            r["keras_version"].as_str().unwrap().starts_with("3."),
            "{name}"
        );
        let codes = rule_codes(&r);
        assert!(codes.contains(&"hdf5-model"), "{name}: {codes:?}");
        assert!(codes.contains(&"keras3-hdf5"), "{name}: {codes:?}");
        // Keras 3's config is kept: no tf.keras rule fires on it.
        assert!(
            codes.iter().all(
                |c| ["hdf5-model", "keras3-hdf5", "training-config"].contains(c)
                // Between Keras 3 versions (tests/keras3.rs).
                || KERAS3_RULES.contains(c)
            ),
            "{name}: {codes:?}"
        );
        // Every layer and operation entry has its module now.
        let o = krepair(&[&"inspect", &"--json", &out]);
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        let again = t.path().join("again.keras");
        let o = krepair(&[&"migrate", &"-q", &out, &again]);
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        assert_eq!(sha(&again), sha(&out), "{name}: idempotent");
        fs::remove_file(&again).unwrap();
        fs::remove_file(&out).unwrap();
    }
}

#[test]
fn keras_3_weights_and_optimizer_go_where_keras_3_reads_them() {
    let t = tempfile::tempdir().unwrap();
    let k315 = |case: &str| {
        common::root()
            .join("testdata/fixtures/migrate-h5-keras3.15")
            .join(case)
            .join("model.h5")
    };
    let cases: &[(&str, &[&str])] = &[
        // `inner/conv2d_2/kernel`: the nested model's scope taken off.
        (
            "model_nested",
            &[
                "layers/sequential/layers/conv2d/vars/1",
                "layers/sequential/layers/p_re_lu/vars/0",
            ],
        ),
        // `sequential/conv2d_4/kernel` at the root of a Sequential.
        (
            "model_sequential_input_shape",
            &["layers/conv2d/vars/0", "layers/dense/vars/1"],
        ),
        (
            "MultiHeadAttention",
            &[
                "layers/multi_head_attention/_query_dense/vars/0",
                "layers/multi_head_attention/_output_dense/vars/1",
            ],
        ),
        (
            "RNN_stacked_cells",
            &["layers/rnn/cell/cells/lstm_cell/vars/2"],
        ),
        ("TimeDistributed", &["layers/time_distributed/layer/vars/1"]),
    ];
    for (case, want) in cases {
        let out = t.path().join(format!("{case}.keras"));
        migrate_report(&k315(case), &out);
        let paths = weights_paths(&out);
        for w in *want {
            assert!(paths.iter().any(|p| p == w), "{case}: no {w} in {paths:?}");
        }
    }
    // Keras 3's optimizer.variables go to optimizer/vars as they are: 2
    // (iteration, learning rate) + 2 slots of 2 variables.
    let out = t.path().join("adam.keras");
    let r = migrate_report(&k315("compiled_by_name_adam"), &out);
    let saved = rewrite(&r, "key", "optimizer_weights");
    assert_eq!(saved["old"][0], "optimizer_weights/adam/iteration");
    assert_eq!(saved["new"].as_array().unwrap().len(), 6);
    let cc = rewrite(&r, "code", "training-config");
    assert_eq!(cc["new"]["optimizer"]["module"], "keras.optimizers");
    assert_eq!(
        cc["new"]["jit_compile"], true,
        "Keras 3's compile arguments kept"
    );
    let paths = weights_paths(&out);
    assert!(paths.iter().any(|p| p == "optimizer/vars/5"), "{paths:?}");
    assert!(!paths.iter().any(|p| p == "optimizer/vars/6"), "{paths:?}");
    // An Embedding's mask is an operation in Keras 3's graph: it keeps
    // the operation's module.
    let r = migrate_report(&k315("model_embedding_lstm"), &t.path().join("e.keras"));
    let ops: Vec<&Value> = r["migration"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["code"] == "keras3-hdf5" && x["new"] == "keras.src.ops.numpy")
        .collect();
    assert!(!ops.is_empty(), "{}", r["migration"]);
}

#[test]
fn diff_of_a_legacy_file_and_its_migration_shows_the_rewrites_and_every_weight_unchanged() {
    let t = tempfile::tempdir().unwrap();
    let input = fixture("model_nested");
    let out = t.path().join("nested.keras");
    migrate_report(&input, &out);
    let o = krepair(&[&"diff", &"--json", &input, &out]);
    assert_eq!(code(&o), 1, "they differ: {}", stderr(&o));
    let d: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(d["a"]["form"], "hdf5-model");
    assert_eq!(d["a"]["path"], input.display().to_string());
    assert_eq!(d["b"]["form"], "zip");
    assert_eq!(
        d["members"],
        serde_json::json!([]),
        "a legacy file has no members"
    );
    assert_eq!(
        d["variables"],
        serde_json::json!([]),
        "every weight as it was"
    );
    assert_eq!(d["unchanged"]["variables"], 3);
    // The config changes are the migration's rewrites.
    let keys: std::collections::BTreeSet<&str> = d["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["keys"].as_array().unwrap())
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    assert!(keys.contains("module"), "{keys:?}");
    assert!(
        keys.contains("inbound_nodes"),
        "nested-node-index: {keys:?}"
    );
    // A legacy file against itself: the same (exit 0).
    let o = krepair(&[&"diff", &input, &input]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // Against a weight changed in the migrated archive: named.
    let other = fixture("Dense");
    let o = krepair(&[&"diff", &"--json", &other, &out]);
    assert_eq!(code(&o), 1);
}
