//! `krepair inspect` (issue #13) on the committed fixtures, without
//! Python: every Normalization layer sits at the weights group real Keras
//! used (recorded by testdata/generate.py), bare weights files and
//! directories are read, nothing is written, and damaged input gives one
//! line and exit 1. Whether the whole tree is what Keras builds is
//! scripts/check_inspect.py's job, in real Keras.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::Value;

fn manifest(path: &Path) -> Value {
    let o = krepair(&[&"inspect", &"--json", &path]);
    assert_eq!(code(&o), 0, "{}: {}", path.display(), stderr(&o));
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn layer<'a>(m: &'a Value, path: &str) -> &'a Value {
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["path"] == path)
        .unwrap_or_else(|| panic!("no layer `{path}` in {}", m["file"]["path"]))
}

#[test]
fn every_normalization_is_at_the_group_real_keras_used() {
    let mut checked = 0;
    for f in fixtures() {
        let m = manifest(&f.archive());
        assert_eq!(m["schema"], "krepair-inspect");
        assert_eq!(m["schema_version"], 1);
        assert_eq!(m["keras_version"], f.expected.keras_version.as_str());
        assert_eq!(m["file"]["form"], f.expected.form.as_str(), "{}", f.tag());
        for e in &f.expected.layers {
            let Some(group) = &e.weights_group else {
                continue;
            };
            // A layer held by a custom layer is listed with it.
            let owner = m["layers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| {
                    l["variables"].as_array().unwrap().iter().any(|v| {
                        v["path"]
                            .as_str()
                            .unwrap()
                            .starts_with(&format!("{group}/"))
                    })
                })
                .unwrap_or_else(|| panic!("{}: no layer holds `{group}`", f.tag()));
            if owner["path"] == e.config_path.as_str() {
                assert_eq!(owner["class_name"], "Normalization", "{}", f.tag());
                assert_eq!(
                    format!("{}/vars", owner["weights_group"].as_str().unwrap()),
                    *group,
                    "{}",
                    f.tag()
                );
            } else {
                assert!(
                    e.config_path
                        .starts_with(&format!("{}/", owner["path"].as_str().unwrap())),
                    "{}: `{}` is held by `{}`",
                    f.tag(),
                    e.config_path,
                    owner["path"]
                );
            }
            // mean, variance, count; the stats have the recorded shape.
            let vars: Vec<&Value> = owner["variables"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| {
                    v["path"]
                        .as_str()
                        .unwrap()
                        .starts_with(&format!("{group}/"))
                })
                .collect();
            if e.mode == "adapt" {
                assert_eq!(vars.len(), 3, "{}: {vars:?}", f.tag());
                let shape: Vec<usize> = serde_json::from_value(vars[0]["shape"].clone()).unwrap();
                assert_eq!(Some(shape), e.stats_shape, "{}", f.tag());
            }
            checked += 1;
        }
        let totals = &m["totals"];
        let sum: u64 = m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["parameters"].as_u64().unwrap())
            .sum();
        assert_eq!(totals["parameters"].as_u64().unwrap(), sum);
        assert!(m["repair"]["dry_run"].as_bool().unwrap());
    }
    assert!(checked >= 40, "only {checked} layers checked");
}

#[test]
fn the_naming_trap_is_resolved_by_class_order_not_by_name() {
    // The second Normalization is *named* `normalization`; Keras stores it
    // at `layers/normalization_1` (docs/keras-format.md §2).
    let m = manifest(&fixture("3.15", "two_norms").archive());
    assert_eq!(
        layer(&m, "stats_a")["weights_group"],
        "layers/normalization"
    );
    assert_eq!(
        layer(&m, "normalization")["weights_group"],
        "layers/normalization_1"
    );
    let root = layer(&m, "");
    assert_eq!(root["depth"], 0);
    assert_eq!(root["class_name"], "Functional");
    assert_eq!(m["repair"]["outcome"], "would-repair");
    assert!(m["migrate"].is_null(), "a Keras 3 archive has no migration");
}

#[test]
fn tf_keras_groups_are_spelled_as_the_file_spells_them() {
    // tf.keras 2.12 numbers layers with weights by twos.
    let f = root().join("testdata/fixtures/migrate-tf2.12/two_norms/model.keras");
    let m = manifest(&f);
    assert_eq!(
        layer(&m, "normalization")["weights_group"],
        "_layer_checkpoint_dependencies/normalization_2"
    );
    assert_eq!(
        layer(&m, "dense_2")["weights_group"],
        "_layer_checkpoint_dependencies/dense_2"
    );
    assert_eq!(m["repair"]["outcome"], "refused");
    assert_eq!(m["migrate"]["outcome"], "would-repair");
    assert!(!m["migrate"]["migration"].as_array().unwrap().is_empty());
}

#[test]
fn bare_weights_files_and_directories_are_read() {
    let t = tempfile::tempdir().unwrap();
    let f = fixture("3.15", "custom_layer");
    let whole = manifest(&f.archive());
    let h5 = t.path().join("model.weights.h5");
    fs::write(&h5, member(&f.archive(), "model.weights.h5")).unwrap();
    let bare = manifest(&h5);
    assert_eq!(bare["file"]["form"], "weights");
    assert!(bare["layers"].as_array().unwrap().is_empty());
    assert!(bare["repair"].is_null());
    let mut all: Vec<Value> = whole["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["variables"].as_array().unwrap().clone())
        .chain(whole["other_variables"].as_array().unwrap().clone())
        .collect();
    all.sort_by_key(|v| v["path"].as_str().unwrap().to_string());
    let mut got = bare["other_variables"].as_array().unwrap().clone();
    got.sort_by_key(|v| v["path"].as_str().unwrap().to_string());
    assert_eq!(all, got);
    // The custom layer owns the Normalization it holds.
    let scaler = layer(&whole, "scaler");
    assert_eq!(scaler["weights_group"], "layers/scaler");
    assert_eq!(scaler["parameters"], 9);
    assert_eq!(scaler["variables"][2]["dtype"], "int32");

    let dir = fixture("3.15", "directory_form");
    let m = manifest(&dir.archive());
    assert_eq!(m["file"]["form"], "directory");
    assert!(m["members"][0]["crc32"].is_null());
    assert!(!m["layers"].as_array().unwrap().is_empty());
}

#[test]
fn the_tree_is_printed_for_people() {
    let f = fixture("3.15", "nested_sequential");
    let o = krepair(&[&"inspect", &f.archive()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("saved by Keras 3.15.1"), "{text}");
    assert!(text.contains("members:\n  metadata.json"), "{text}");
    assert!(
        text.contains("[layers/sequential/layers/normalization]"),
        "{text}"
    );
    assert!(text.contains("krepair (dry run) would change it"), "{text}");
    // A nested layer is indented under its model.
    let outer = text.lines().find(|l| l.contains("Sequential `")).unwrap();
    let inner = text
        .lines()
        .find(|l| l.contains("[layers/sequential/layers/normalization]"))
        .unwrap();
    let indent = |l: &str| l.len() - l.trim_start().len();
    assert!(indent(inner) > indent(outer), "{text}");
}

#[test]
fn nothing_is_written_and_the_input_is_untouched() {
    let t = tempfile::tempdir().unwrap();
    let f = fixture("3.5", "efficientnet_stem");
    let input = t.path().join("model.keras");
    fs::copy(f.archive(), &input).unwrap();
    let before = sha(&input);
    let m = manifest(&input);
    assert_eq!(m["repair"]["outcome"], "would-repair");
    assert_eq!(sha(&input), before);
    assert_eq!(names(t.path()), vec!["model.keras".to_string()]);
}

#[test]
fn damaged_input_is_one_line_and_exit_1() {
    let t = tempfile::tempdir().unwrap();
    let src = fixture("3.15", "two_norms").archive();
    let bytes = fs::read(&src).unwrap();
    let truncated = t.path().join("half.keras");
    fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let not_h5 = t.path().join("x.weights.h5");
    fs::write(&not_h5, b"\x89HDF\r\n\x1a\ngarbage").unwrap();
    let cases: Vec<(std::path::PathBuf, &str)> = vec![
        (truncated, "truncated zip"),
        (not_h5, "HDF5"),
        (t.path().join("missing.keras"), "cannot read"),
    ];
    for (path, needle) in cases {
        let o = krepair(&[&"inspect", &path]);
        assert_eq!(code(&o), 1, "{}", path.display());
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
        assert!(o.stdout.is_empty());
    }
    // The fuzz regressions: an answer or one line, never a crash or hang.
    for e in fs::read_dir(root().join("testdata/fuzz-regressions")).unwrap() {
        let path = e.unwrap().path();
        let o = krepair(&[&"inspect", &"--timeout", &"5", &path]);
        let c = code(&o);
        assert!(c == 0 || c == 1, "{}: exit {c}", path.display());
        if c == 1 {
            assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
        }
    }
    // No FILE is a usage error.
    assert_eq!(code(&krepair(&[&"inspect"])), 2);
}

#[test]
fn docs_name_every_field_of_the_manifest() {
    let doc = fs::read_to_string(root().join("docs/inspect.md")).unwrap();
    let m = manifest(&fixture("3.15", "custom_layer").archive());
    let mut fields: Vec<String> = m.as_object().unwrap().keys().cloned().collect();
    for (key, inner) in [("file", &m["file"]), ("totals", &m["totals"])] {
        fields.extend(
            inner
                .as_object()
                .unwrap()
                .keys()
                .map(|k| format!("{key}.{k}")),
        );
    }
    let l = layer(&m, "scaler");
    fields.extend(l.as_object().unwrap().keys().cloned());
    fields.extend(l["variables"][0].as_object().unwrap().keys().cloned());
    fields.extend(m["members"][0].as_object().unwrap().keys().cloned());
    for f in fields {
        let leaf = f.rsplit('.').next().unwrap();
        assert!(
            doc.contains(&format!("`{f}`"))
                || doc.contains(&format!("`{leaf}`"))
                || doc.contains(&format!("`{f}."))
                || doc.contains(&format!("`{f}[]"))
                || doc.contains(&format!(".{leaf}`")),
            "docs/inspect.md does not name `{f}`"
        );
    }
}
