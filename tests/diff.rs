//! `krepair diff` (issue #13) without Python: the diff of an archive and
//! its repair shows exactly what the repair changed (the repaired layers'
//! statistics or boundaries, the deleted datasets) and nothing else; an
//! edited weight is found with its exact difference; `--tolerance`; exit
//! codes as diff(1). Two real fine-tuning checkpoints are compared in real
//! Keras by scripts/check_inspect.py.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use common::*;
use serde_json::Value;

fn diff(a: &Path, b: &Path, extra: &[&str]) -> (i32, Value) {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"diff", &"--json"];
    for e in extra {
        args.push(e);
    }
    args.push(&a);
    args.push(&b);
    let o = krepair(&args);
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
    (code(&o), serde_json::from_slice(&o.stdout).unwrap())
}

fn strings(v: &Value, key: &str) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x[key].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_repair_changes_its_layers_and_nothing_else() {
    let t = tempfile::tempdir().unwrap();
    let mut repaired_any = 0;
    for (i, f) in fixtures().into_iter().enumerate() {
        let out = t.path().join(format!("{i}.keras"));
        let report = t.path().join(format!("{i}.json"));
        // For the Keras that wrote it: the rewrites between Keras 3
        // versions are tests/keras3.rs's.
        let dir = f
            .dir
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy();
        let writer = dir.strip_prefix("keras-").filter(|v| v.starts_with("3."));
        let load_in = writer.unwrap_or("all").to_string();
        let o = krepair(&[
            &"-q",
            &"--load-in",
            &load_in,
            &f.archive(),
            &out,
            &"--report",
            &report,
        ]);
        if code(&o) != 0 {
            continue; // refused: the repair tests say why
        }
        let report: Value = serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
        let repaired: BTreeSet<String> = ["layers", "discretizations"]
            .iter()
            .flat_map(|k| report[k].as_array().unwrap().clone())
            .filter(|l| l["status"] == "repaired")
            .map(|l| l["config_path"].as_str().unwrap().to_string())
            .collect();
        let (c, d) = diff(&f.archive(), &out, &[]);
        if repaired.is_empty() {
            assert_eq!(c, 0, "{}: {d}", f.tag());
            assert!(d["same"].as_bool().unwrap());
            continue;
        }
        repaired_any += 1;
        assert_eq!(c, 1, "{}", f.tag());
        assert!(d["metadata"].as_array().unwrap().is_empty(), "{}", f.tag());
        let members = strings(&d["members"], "name");
        assert!(
            members.is_subset(&["config.json", "model.weights.h5"].map(String::from).into()),
            "{}: {members:?}",
            f.tag()
        );
        // Each changed layer is a repaired one (or the custom layer that
        // holds it), and only its statistics or boundaries changed.
        let allowed = [
            "mean",
            "variance",
            "bin_boundaries",
            "num_bins",
            "num_tokens",
        ];
        let mut seen = BTreeSet::new();
        for l in d["layers"].as_array().unwrap() {
            assert_eq!(l["change"], "changed", "{}: {l}", f.tag());
            let path = l["path"].as_str().unwrap();
            let hit: Vec<&String> = repaired
                .iter()
                .filter(|r| *r == path || r.starts_with(&format!("{path}/")))
                .collect();
            assert!(
                !hit.is_empty(),
                "{}: `{path}` changed, not repaired",
                f.tag()
            );
            seen.extend(hit.into_iter().cloned());
            for k in l["keys"].as_array().unwrap() {
                let key = k["key"].as_str().unwrap();
                let leaf = key.rsplit('.').next().unwrap();
                assert!(allowed.contains(&leaf), "{}: `{path}` key {key}", f.tag());
            }
        }
        assert_eq!(
            seen,
            repaired,
            "{}: repaired layers missing from the diff",
            f.tag()
        );
        // Only deleted variables, each of a repaired layer.
        for v in d["variables"].as_array().unwrap() {
            assert_eq!(v["change"], "removed", "{}: {v}", f.tag());
            let layer = v["layer"].as_str().unwrap();
            assert!(
                repaired
                    .iter()
                    .any(|r| r == layer || r.starts_with(&format!("{layer}/"))),
                "{}: {v}",
                f.tag()
            );
        }
        assert!(
            !d["variables"].as_array().unwrap().is_empty(),
            "{}",
            f.tag()
        );
    }
    assert!(repaired_any >= 25, "only {repaired_any} repairs compared");
}

/// A copy of `src` whose Dense kernel at `path` holds `f(old values)`.
fn edited(src: &Path, dst: &Path, path: &str, f: impl Fn(f32) -> f32) -> Vec<f32> {
    let mut old = Vec::new();
    derive(src, dst, |m| {
        let w = m.iter_mut().find(|(n, _)| n == "model.weights.h5").unwrap();
        w.1 = edit_weights(&w.1, |weights| {
            let t = weights.read_f32(path, 1 << 20).unwrap();
            old = t.data.clone();
            let new = krepair::passes::stats::Tensor {
                shape: t.shape.clone(),
                data: t.data.iter().map(|&x| f(x)).collect(),
            };
            weights.write_f32(path, &new).unwrap();
        });
    });
    old
}

#[test]
fn an_edited_weight_is_found_with_its_exact_difference() {
    let t = tempfile::tempdir().unwrap();
    let src = fixture("3.15", "two_norms").archive();
    let b = t.path().join("b.keras");
    let old = edited(&src, &b, "layers/dense/vars/0", |_| 0.0);
    let (c, d) = diff(&src, &b, &[]);
    assert_eq!(c, 1);
    let vars = d["variables"].as_array().unwrap();
    assert_eq!(vars.len(), 1, "{d}");
    let v = &vars[0];
    assert_eq!(v["change"], "values");
    assert_eq!(v["layer"], "dense_5");
    assert_eq!(v["name"], "vars/0");
    let max = old.iter().map(|x| f64::from(x.abs())).fold(0.0, f64::max);
    let nonzero = old.iter().filter(|x| **x != 0.0).count() as u64;
    assert_eq!(v["values"]["max_abs_diff"].as_f64().unwrap(), max);
    assert_eq!(v["values"]["max_rel_diff"].as_f64().unwrap(), 1.0);
    assert_eq!(v["values"]["differing"].as_u64().unwrap(), nonzero);
    assert_eq!(v["values"]["elements"].as_u64().unwrap(), old.len() as u64);
    assert!(d["layers"].as_array().unwrap().is_empty(), "{d}");
    assert_eq!(
        strings(&d["members"], "name"),
        ["model.weights.h5".to_string()].into()
    );

    // Within the tolerance the model is the same (exit 0), and says why.
    let (c, d) = diff(&src, &b, &["--tolerance", &format!("{max}")]);
    assert_eq!(c, 0, "{d}");
    assert!(d["variables"].as_array().unwrap().is_empty());
    let (c, _) = diff(&src, &b, &["--tolerance", &format!("{}", max * 0.999)]);
    assert_eq!(c, 1);

    // The human text names the variable and the difference.
    let o = krepair(&[&"diff", &src, &b]);
    assert_eq!(code(&o), 1);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("~ dense_5: vars/0 float32[4,4]: "), "{text}");
    assert!(
        text.contains(&format!("{nonzero} of 16 values differ")),
        "{text}"
    );

    // Bare weights files compare the same way.
    let (wa, wb) = (t.path().join("a.weights.h5"), t.path().join("b.weights.h5"));
    fs::write(&wa, member(&src, "model.weights.h5")).unwrap();
    fs::write(&wb, member(&b, "model.weights.h5")).unwrap();
    let (c, d) = diff(&wa, &wb, &[]);
    assert_eq!(c, 1);
    let vars = d["variables"].as_array().unwrap();
    assert_eq!(vars.len(), 1, "{d}");
    assert!(vars[0]["layer"].is_null());
    assert_eq!(vars[0]["name"], "layers/dense/vars/0");
}

#[test]
fn config_changes_are_listed_by_layer_and_key() {
    let t = tempfile::tempdir().unwrap();
    let src = fixture("3.15", "two_norms").archive();
    let b = t.path().join("b.keras");
    derive(&src, &b, |m| {
        let c = m.iter_mut().find(|(n, _)| n == "config.json").unwrap();
        let mut v: Value = serde_json::from_slice(&c.1).unwrap();
        let layers = v["config"]["layers"].as_array_mut().unwrap();
        let dense = layers
            .iter_mut()
            .find(|l| l["class_name"] == "Dense")
            .unwrap();
        dense["config"]["activation"] = Value::from("relu");
        dense["config"].as_object_mut().unwrap().remove("use_bias");
        c.1 = serde_json::to_vec(&v).unwrap();
    });
    let (c, d) = diff(&src, &b, &[]);
    assert_eq!(c, 1);
    let layers = d["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{d}");
    let keys: Vec<(String, String)> = layers[0]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["key"].as_str().unwrap().to_string(),
                k["change"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        vec![
            ("config.activation".to_string(), "changed".to_string()),
            ("config.use_bias".to_string(), "removed".to_string()),
        ]
    );
    assert!(d["variables"].as_array().unwrap().is_empty());
}

#[test]
fn trouble_is_exit_2_with_one_line() {
    let t = tempfile::tempdir().unwrap();
    let src = fixture("3.15", "two_norms").archive();
    let bytes = fs::read(&src).unwrap();
    let half = t.path().join("half.keras");
    fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    for (a, b) in [(&src, &half), (&half, &src)] {
        let o = krepair(&[&"diff", a, b]);
        assert_eq!(code(&o), 2);
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("half.keras") && err.contains("truncated zip"),
            "{err}"
        );
        assert!(o.stdout.is_empty());
    }
    assert_eq!(code(&krepair(&[&"diff", &src])), 2);
    assert_eq!(
        code(&krepair(&[&"diff", &"--tolerance", &"-1", &src, &src])),
        2
    );
    // The fuzz regressions: an answer or one line, never a crash or hang.
    for e in fs::read_dir(root().join("testdata/fuzz-regressions")).unwrap() {
        let path = e.unwrap().path();
        let o = krepair(&[&"diff", &"--timeout", &"5", &path, &src]);
        let c = code(&o);
        assert!(c == 1 || c == 2, "{}: exit {c}", path.display());
        if c == 2 {
            assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
        }
    }
}

#[test]
fn docs_name_every_field_of_the_diff() {
    let doc = fs::read_to_string(root().join("docs/inspect.md")).unwrap();
    let t = tempfile::tempdir().unwrap();
    let src = fixture("3.15", "two_norms").archive();
    let b = t.path().join("b.keras");
    edited(&src, &b, "layers/dense/vars/0", |x| x * 2.0);
    let (_, d) = diff(&src, &b, &[]);
    let mut fields: Vec<String> = d.as_object().unwrap().keys().cloned().collect();
    fields.extend(d["unchanged"].as_object().unwrap().keys().cloned());
    let v = &d["variables"][0];
    fields.extend(v.as_object().unwrap().keys().cloned());
    fields.extend(v["values"].as_object().unwrap().keys().cloned());
    fields.extend(d["members"][0].as_object().unwrap().keys().cloned());
    for f in fields {
        assert!(
            doc.contains(&format!("`{f}`")) || doc.contains(&format!("`{f}[]`")),
            "docs/inspect.md does not name `{f}`"
        );
    }
}

#[test]
fn values_are_compared_a_slab_at_a_time() {
    // One 48 MiB dataset (96 MiB as float64 on each side) compared within
    // a 40 MiB memory budget: only a streamed comparison fits.
    let t = tempfile::tempdir().unwrap();
    let n = 12usize << 20;
    let make = |path: &Path, last: f32| {
        let f = hdf5::File::create(path).unwrap();
        let mut v: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.5).collect();
        v[n - 1] = last;
        let g = f.create_group("layers").unwrap();
        g.new_dataset_builder()
            .with_data(&ndarray::Array2::from_shape_vec((n / 1024, 1024), v).unwrap())
            .create("big")
            .unwrap();
    };
    let (a, b) = (t.path().join("a.weights.h5"), t.path().join("b.weights.h5"));
    make(&a, 1.0);
    make(&b, 3.5);
    let o = krepair(&[&"diff", &"--json", &"--memory-limit", &"40", &a, &b]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let d: Value = serde_json::from_slice(&o.stdout).unwrap();
    let v = &d["variables"][0]["values"];
    assert_eq!(v["elements"].as_u64().unwrap(), n as u64);
    assert_eq!(v["differing"], 1);
    assert_eq!(v["max_abs_diff"].as_f64().unwrap(), 2.5);
}
