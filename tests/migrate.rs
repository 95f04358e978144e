//! `krepair migrate` on the committed tf.keras 2.15 fixtures: the rewrites
//! each one needs, the guarantees `repair` has (dry run, idempotence,
//! refusals with nothing written), and `batch --migrate`. Whether the
//! outputs load and predict right is the real-Keras check's job
//! (scripts/check_migrate.py, Keras 3.0 to 3.15).

mod common;

use std::collections::BTreeSet;
use std::fs;

use common::*;
use serde_json::Value;

fn migrate_report(input: &std::path::Path, out: &std::path::Path) -> Value {
    let o = krepair(&[&"migrate", &"--report", &"-", &input, &out]);
    assert_eq!(code(&o), 0, "{}: {}", input.display(), stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The committed cases of the layer zoo (testdata/zoo.py; the whole zoo
/// is generated and loaded in real Keras by scripts/test.sh): each
/// migrates, with the table's rules, to an archive that migrates to an
/// exact copy of itself. Their codes.
fn zoo_codes(work: &std::path::Path) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for writer in ["migrate-zoo-tf2.15", "migrate-zoo-tfk2.21"] {
        let dir = common::root().join("testdata/fixtures").join(writer);
        let mut cases: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        cases.sort();
        assert!(cases.len() >= 2, "{writer}: cases missing");
        for case in cases {
            let name = case.file_name().unwrap().to_string_lossy().to_string();
            let out = work.join(format!("{writer}-{name}.keras"));
            let r = migrate_report(&case.join("model.keras"), &out);
            let c = codes(&r);
            assert!(c.contains("model-module"), "{writer}/{name}: {c:?}");
            let again = work.join("zoo-again.keras");
            let o = krepair(&[&"migrate", &"-q", &out, &again]);
            assert_eq!(code(&o), 0, "{}", stderr(&o));
            assert_eq!(sha(&again), sha(&out), "{writer}/{name}: idempotent");
            fs::remove_file(&again).unwrap();
            seen.extend(c);
        }
    }
    seen
}

#[test]
fn every_tf_keras_2_15_fixture_migrates_with_the_rules_it_needs() {
    let t = tempfile::tempdir().unwrap();
    let mut seen = BTreeSet::new();
    for f in fixtures()
        .into_iter()
        .filter(|f| f.dir.to_string_lossy().contains("keras-tf2.15"))
    {
        let out = t.path().join(format!("{}.keras", f.expected.case));
        let r = migrate_report(&f.archive(), &out);
        let c = codes(&r);
        // A tf.keras Sequential names its module `keras`, which Keras 3
        // reads; every other model needs its module moved.
        assert!(
            c.contains("model-module") || f.expected.case == "compiled_sgd",
            "{}: {c:?}",
            f.tag()
        );
        if f.expected.case == "nested_sequential" {
            assert!(c.contains("nested-node-index"), "{c:?}");
            let m: Value = serde_json::from_slice(&member(&out, "config.json")).unwrap();
            let dense = &m["config"]["layers"][3];
            assert_eq!(dense["inbound_nodes"][0][0][0], "block");
            assert_eq!(
                dense["inbound_nodes"][0][0][1], 0,
                "node 1 of tf.keras is node 0"
            );
        }
        if f.expected.case == "nested_functional" {
            assert!(c.contains("nested-node-index"), "{c:?}");
            let m: Value = serde_json::from_slice(&member(&out, "config.json")).unwrap();
            let dense = &m["config"]["layers"][3];
            assert_eq!(dense["inbound_nodes"][0][0][0], "inner");
            assert_eq!(dense["inbound_nodes"][0][0][1], 0);
            assert_eq!(
                m["config"]["layers"][2]["module"],
                "keras.src.models.functional"
            );
        }
        if f.expected.case == "compiled_schedule" {
            // A schedule: no learning-rate variable, the layouts agree.
            assert!(c.contains("schedule-name"), "{c:?}");
            assert!(!c.contains("optimizer-variables"), "{c:?}");
        }
        if f.expected.case == "mixed_float16" {
            assert!(c.contains("dtype-policy"), "{c:?}");
        }
        if f.expected.case == "compiled_adamw" {
            // Not mapped: the variables go, with a warning, and the
            // optimizer keeps its class.
            assert!(c.contains("unmapped-optimizer"), "{c:?}");
            assert!(!c.contains("optimizer-variables"), "{c:?}");
            let warned = r["findings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["code"] == "optimizer-state-dropped" && x["severity"] == "warning");
            assert!(warned, "{}", r["findings"]);
            assert_eq!(datasets_under(&f.archive(), "optimizer/vars"), 9);
            assert_eq!(datasets_under(&out, "optimizer/vars"), 0);
            let m: Value = serde_json::from_slice(&member(&out, "config.json")).unwrap();
            assert_eq!(m["compile_config"]["optimizer"]["class_name"], "AdamW");
        }
        // Every rewrite carries its evidence.
        for rw in r["migration"].as_array().unwrap() {
            assert!(rw["key"].as_str().is_some_and(|k| !k.is_empty()));
            assert!(rw.get("old").is_some() && rw.get("new").is_some());
        }
        let cfg: Value = serde_json::from_slice(&member(&out, "config.json")).unwrap();
        let text = cfg.to_string();
        assert!(!text.contains("keras.src.engine"), "{}", f.tag());
        assert_eq!(
            member(&out, "metadata.json"),
            member(&f.archive(), "metadata.json"),
            "metadata.json is kept"
        );
        // Normalization repaired in the same run (or, for kept axes that
        // are not the trailing ones, kept in variables every loader
        // finalizes, and said so).
        for l in r["layers"].as_array().unwrap() {
            let kept = l["findings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["code"] == "kept-in-variables");
            assert!(
                matches!(l["status"].as_str(), Some("repaired" | "already-explicit"))
                    || (l["status"] == "unchanged" && kept),
                "{}: {}",
                f.tag(),
                l["status"]
            );
        }
        // Idempotent: a migrated archive migrates to an exact copy.
        let again = t.path().join("again.keras");
        let o = krepair(&[&"migrate", &"-q", &out, &again]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(sha(&again), sha(&out), "{}", f.tag());
        fs::remove_file(&again).unwrap();
        // The kernel's copy of the unwritten pages and a write of every
        // byte give the same archive.
        let streamed = t.path().join("streamed.keras");
        let o = krepair_env(
            &[("KREPAIR_STREAM_WRITES", "1")],
            &[&"migrate", &"-q", &f.archive(), &streamed],
        );
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(sha(&streamed), sha(&out), "{}: streamed", f.tag());
        fs::remove_file(&streamed).unwrap();
        seen.extend(c);
    }
    seen.extend(zoo_codes(t.path()));
    assert_eq!(
        seen,
        krepair::plan::Rule::ALL
            .iter()
            .map(|r| r.to_string())
            // The 2.12-2.14 fixtures exercise these (below), and the
            // legacy HDF5 files the last two (tests/migrate_h5.rs).
            .filter(|r| !KERAS3_RULES.contains(&r.as_str()))
            .filter(|r| {
                ![
                    "hdf5-model",
                    "training-config",
                    "keras3-hdf5",
                    "weights-layout",
                    "legacy-module",
                    "numpy-scalar",
                    "legacy-optimizer",
                ]
                .contains(&r.as_str())
            })
            .collect::<BTreeSet<_>>(),
        "every rule is exercised by a real fixture"
    );
}

#[test]
fn a_dry_run_plans_and_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let f = fixture("tf2.15", "nested_sequential");
    let o = krepair(&[&"migrate", &"--dry-run", &"--report", &"-", &f.archive()]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["outcome"], "would-repair");
    assert!(codes(&r).contains("model-module"));
    assert!(fs::read_dir(t.path()).unwrap().next().is_none());
}

#[test]
fn what_has_no_rule_is_refused_and_nothing_is_written() {
    let t = tempfile::tempdir().unwrap();
    // A layer class without a migration rule.
    let p = t.path().join("conv.keras");
    derive(&fixture("tf2.15", "axis_last").archive(), &p, |m| {
        let c = m.iter_mut().find(|x| x.0 == "config.json").unwrap();
        let text = String::from_utf8(c.1.clone()).unwrap();
        c.1 = text
            .replacen(
                r#""class_name": "Dense""#,
                r#""class_name": "FancyDense""#,
                1,
            )
            .into_bytes();
    });
    refuses(&p, &["migrate"], "refusing to migrate: layer `dense");
    // An asset under tf.keras 2.13's weights layout (an adapted lookup's
    // vocabulary), which Keras 3 would not find.
    let p = t.path().join("assets.keras");
    derive(
        &root().join("testdata/fixtures/migrate-tf2.13/axis_last/model.keras"),
        &p,
        |m| {
            m.push((
                "assets/_layer_checkpoint_dependencies/string_lookup/vocabulary.txt".into(),
                b"a\nb\n".to_vec(),
            ))
        },
    );
    refuses(&p, &["migrate"], "is an asset in tf.keras 2.13.1's layout");
    // tf.keras 2.11 wrote no archive Keras 3 can read.
    let p = t.path().join("old.keras");
    derive(&fixture("tf2.15", "axis_last").archive(), &p, |m| {
        let meta = m.iter_mut().find(|x| x.0 == "metadata.json").unwrap();
        let text = String::from_utf8(meta.1.clone()).unwrap();
        meta.1 = text.replace("2.15.0", "2.11.0").into_bytes();
    });
    refuses(&p, &["migrate"], "saved by tf.keras 2.11");
    // A compiled model.
    let p = t.path().join("compiled.keras");
    derive(&fixture("tf2.15", "axis_last").archive(), &p, |m| {
        let c = m.iter_mut().find(|x| x.0 == "config.json").unwrap();
        let mut v: Value = serde_json::from_slice(&c.1).unwrap();
        v["compile_config"] = serde_json::json!({"optimizer": "yogi", "loss": "mse"});
        c.1 = v.to_string().into_bytes();
    });
    refuses(
        &p,
        &["migrate"],
        "no migration rule for the optimizer \"yogi\"",
    );
    // Optimizer variables that do not fit the optimizer's layout.
    let p = t.path().join("slots.keras");
    let m = edit_h5(
        members(&fixture("tf2.15", "compiled_adam").archive()),
        |f| {
            f.group("optimizer/vars").unwrap().unlink("12").unwrap();
        },
    );
    write_zip(&p, &m);
    refuses(&p, &["migrate"], "keeps 2 slot(s) per variable");
    // A one-hot Discretization fed by a Dense, beside another Dense
    // (made by tf.keras 2.15, testdata/refusals): the split would make
    // Keras 3 load the other Dense's weights into it.
    let p = root().join("testdata/refusals/discretization_renumbering.keras");
    refuses(
        &p,
        &["migrate"],
        "a one_hot Discretization fed by `a` (Dense): splitting it deepens the graph above it",
    );
}

/// The datasets of the group `path` in an archive's weights, by index:
/// (shape, values widened to f64).
fn vars_of(archive: &std::path::Path, path: &str) -> Vec<(Vec<usize>, Vec<f64>)> {
    let t = tempfile::NamedTempFile::new().unwrap();
    fs::write(t.path(), member(archive, "model.weights.h5")).unwrap();
    let f = hdf5::File::open(t.path()).unwrap();
    let g = f.group(path).unwrap();
    (0..g.len())
        .map(|i| {
            let d = g.dataset(&i.to_string()).unwrap();
            (d.shape(), d.read_raw::<f64>().unwrap())
        })
        .collect()
}

#[test]
fn a_compiled_model_keeps_its_optimizer_state_in_keras_3_layout() {
    let t = tempfile::tempdir().unwrap();
    for (case, dropped) in [
        ("compiled_adam", false),
        ("compiled_sgd", false),
        ("compiled_rmsprop", false),
        ("compiled_sgd_plain", true),
    ] {
        let f = fixture("tf2.15", case);
        let out = t.path().join(format!("{case}.keras"));
        let r = migrate_report(&f.archive(), &out);
        let before = vars_of(&f.archive(), "optimizer/vars");
        let after = vars_of(&out, "optimizer/vars");
        let cfg: Value = serde_json::from_slice(&member(&out, "config.json")).unwrap();
        let opt = &cfg["compile_config"]["optimizer"];
        let lr = opt["config"]["learning_rate"].as_f64().unwrap() as f32;
        // Iterations first, the learning rate second (as float32), then
        // tf.keras's slots in their order, or none.
        assert_eq!(after[0], before[0], "{case}: iterations");
        assert_eq!(
            after[1],
            (vec![], vec![f64::from(lr)]),
            "{case}: learning rate"
        );
        if dropped {
            assert_eq!(after.len(), 2, "{case}");
        } else {
            assert_eq!(&after[2..], &before[1..], "{case}: slots");
        }
        let rw = r["migration"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["code"] == "optimizer-variables")
            .unwrap_or_else(|| panic!("{case}: no optimizer-variables rewrite"));
        assert_eq!(rw["old"]["variables"], before.len());
        assert_eq!(rw["new"]["variables"], after.len());
        assert_eq!(opt["module"], "keras.optimizers", "{case}");
        assert!(opt["config"].get("jit_compile").is_none());
        assert!(opt["config"].get("is_legacy_optimizer").is_none());
        assert_eq!(cfg["compile_config"]["steps_per_execution"], 1);
        // The added dataset grows the file by a few hundred bytes; the
        // core driver rounds the image up to its 4 KiB increment, no more.
        let (a, b) = (
            member(&f.archive(), "model.weights.h5").len(),
            member(&out, "model.weights.h5").len(),
        );
        assert!(b <= a + 8192, "{case}: weights grew from {a} to {b} bytes");
        // The model's own weights are the same datasets.
        assert_eq!(
            vars_of(&out, "layers/dense/vars"),
            vars_of(&f.archive(), "layers/dense/vars"),
            "{case}"
        );
    }
}

#[test]
fn an_optimizer_that_never_took_a_step_is_noted_and_left_as_it_is() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("unbuilt.keras");
    let m = edit_h5(members(&fixture("tf2.15", "compiled_sgd").archive()), |f| {
        let g = f.group("optimizer/vars").unwrap();
        for i in 1..5 {
            g.unlink(&i.to_string()).unwrap();
        }
    });
    write_zip(&p, &m);
    let out = t.path().join("out.keras");
    let r = migrate_report(&p, &out);
    assert!(!codes(&r).contains("optimizer-variables"));
    assert!(r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["code"] == "optimizer-not-built"));
    assert_eq!(vars_of(&out, "optimizer/vars").len(), 1);
}

#[test]
fn a_keras_3_archive_is_repaired_as_repair_would() {
    let t = tempfile::tempdir().unwrap();
    let f = fixture("3.5", "efficientnet_stem");
    let (a, b) = (t.path().join("a.keras"), t.path().join("b.keras"));
    let r = migrate_report(&f.archive(), &a);
    assert!(codes(&r).is_empty());
    let o = krepair(&[&"-q", &f.archive(), &b]);
    assert_eq!(code(&o), 0);
    assert_eq!(sha(&a), sha(&b), "migrate of a Keras 3 archive is a repair");
}

#[test]
fn batch_migrate_covers_a_tree() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("models");
    fs::create_dir_all(&root).unwrap();
    for case in ["axis_last", "nested_sequential", "two_norms"] {
        fs::copy(
            fixture("tf2.15", case).archive(),
            root.join(format!("{case}.keras")),
        )
        .unwrap();
    }
    fs::copy(fixture("3.15", "no_norm").archive(), root.join("k3.keras")).unwrap();
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
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    for e in r["entries"].as_array().unwrap() {
        let p = e["path"].as_str().unwrap();
        // The Keras 3 archive gets only the rewrites between Keras 3
        // versions (tests/keras3.rs).
        let c = codes(&e["report"]);
        let migrated = c.iter().any(|r| !KERAS3_RULES.contains(&r.as_str()));
        assert_eq!(migrated, !p.ends_with("k3.keras"), "{p}: {c:?}");
    }
    for case in ["axis_last", "nested_sequential", "two_norms"] {
        let cfg =
            String::from_utf8(member(&out.join(format!("{case}.keras")), "config.json")).unwrap();
        assert!(cfg.contains("keras.src.models.functional"), "{case}");
    }
    // The Keras 3 archive, made to load in every Keras 3, needs nothing
    // more.
    let again = t.path().join("k3-again.keras");
    let o = krepair(&[&"-q", &out.join("k3.keras"), &again]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(sha(&again), sha(&out.join("k3.keras")));
}

/// Every group path of an archive's weights, sorted.
/// How many datasets the group `path` of an archive's weights holds.
fn datasets_under(archive: &std::path::Path, path: &str) -> usize {
    let t = tempfile::NamedTempFile::new().unwrap();
    fs::write(t.path(), member(archive, "model.weights.h5")).unwrap();
    let f = hdf5::File::open(t.path()).unwrap();
    let g = f.group(path).unwrap();
    g.member_names()
        .unwrap()
        .iter()
        .filter(|n| g.dataset(n).is_ok())
        .count()
}

fn groups_of(archive: &std::path::Path) -> Vec<String> {
    let t = tempfile::NamedTempFile::new().unwrap();
    fs::write(t.path(), member(archive, "model.weights.h5")).unwrap();
    let f = hdf5::File::open(t.path()).unwrap();
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(p) = stack.pop() {
        let g = f.group(if p.is_empty() { "/" } else { &p }).unwrap();
        for name in g.member_names().unwrap() {
            let full = if p.is_empty() {
                name.clone()
            } else {
                format!("{p}/{name}")
            };
            if g.group(&name).is_ok() {
                out.push(full.clone());
                stack.push(full);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn tf_keras_2_12_to_2_14_archives_get_keras_3_weight_paths() {
    let t = tempfile::tempdir().unwrap();
    let mut doubled = 0;
    let mut numpy_scalars = 0;
    let mut legacy_optimizers = 0;
    for v in ["2.12", "2.13", "2.14"] {
        let dir = root().join(format!("testdata/fixtures/migrate-tf{v}"));
        for case in names(&dir) {
            let input = dir.join(&case).join("model.keras");
            let out = t.path().join(format!("{v}-{case}.keras"));
            let r = migrate_report(&input, &out);
            assert!(
                groups_of(&input)
                    .iter()
                    .any(|g| g.starts_with("_layer_checkpoint_dependencies")),
                "{v}/{case}: the input has tf.keras's layout"
            );
            let after = groups_of(&out);
            assert!(
                !after
                    .iter()
                    .any(|g| g.contains("_layer_checkpoint_dependencies")),
                "{v}/{case}: {after:?}"
            );
            assert!(after.iter().any(|g| g == "layers"), "{v}/{case}");
            let renames: Vec<&Value> = r["migration"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|x| x["code"] == "weights-layout")
                .collect();
            assert!(!renames.is_empty(), "{v}/{case}");
            // Each rename names its group before and after.
            for x in &renames {
                assert!(x["old"].as_str().is_some() && x["new"].as_str().is_some());
            }
            // 2.13 numbers weighted layers of one class by twos.
            doubled += renames
                .iter()
                .filter(|x| x["old"].as_str().unwrap().ends_with("_2"))
                .count();
            if v == "2.14" {
                assert_eq!(
                    renames.len(),
                    1 + case.contains("nested") as usize,
                    "{case}"
                );
            }
            // Idempotent, and Normalization repaired in the same run.
            let again = t.path().join("again.keras");
            let o = krepair(&[&"migrate", &"-q", &out, &again]);
            assert_eq!(code(&o), 0, "{}", stderr(&o));
            assert_eq!(sha(&again), sha(&out), "{v}/{case}");
            fs::remove_file(&again).unwrap();
            for l in r["layers"].as_array().unwrap() {
                assert_eq!(l["status"], "repaired", "{v}/{case}");
                // 2.12 writes no build_config: the shape is derived.
                let derived = l["findings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|f| f["code"] == "input-shape-derived");
                assert_eq!(derived, v == "2.12", "{v}/{case}: {l}");
            }
            // 2.12's legacy-form configs get modules; no other version's.
            let all = codes(&r);
            assert_eq!(all.contains("legacy-module"), v == "2.12", "{v}/{case}");
            if case == "compiled_legacy_adam" {
                assert!(all.contains("legacy-optimizer"), "{all:?}");
                assert!(!all.contains("optimizer-variables"), "{all:?}");
                let warned = r["findings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|f| f["code"] == "optimizer-state-not-saved");
                assert!(warned, "{}", r["findings"]);
                legacy_optimizers += 1;
            }
            numpy_scalars += r["migration"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|x| x["code"] == "numpy-scalar")
                .count();
        }
    }
    assert!(
        doubled >= 6,
        "the 2.12 and 2.13 fixtures exercise the doubled numbering ({doubled})"
    );
    // The 2.12 CNN's ReLU: max_value, negative_slope, threshold.
    assert_eq!(numpy_scalars, 3);
    assert_eq!(legacy_optimizers, 1);
    // A dry run renames in memory only: it plans, and writes nothing.
    let input = root().join("testdata/fixtures/migrate-tf2.13/two_norms/model.keras");
    let before = sha(&input);
    let o = krepair(&[&"migrate", &"--dry-run", &"--report", &"-", &input]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(codes(&r).contains("weights-layout"));
    assert_eq!(sha(&input), before);
}

#[test]
fn repairing_a_tf_keras_2_12_or_2_13_archive_keeps_its_numbering_or_refuses() {
    let t = tempfile::tempdir().unwrap();
    for v in ["2.12", "2.13"] {
        let dir = root().join(format!("testdata/fixtures/migrate-tf{v}"));
        // One Normalization per container: found through the doubled
        // numbering and repaired in place, the layout kept.
        for case in ["axis_last", "nested_sequential", "cnn"] {
            let input = dir.join(case).join("model.keras");
            let out = t.path().join(format!("{v}-{case}.keras"));
            let o = krepair(&[&"-q", &"--report", &"-", &input, &out]);
            assert_eq!(code(&o), 0, "{v}/{case}: {}", stderr(&o));
            assert_eq!(
                groups_of(&input),
                groups_of(&out),
                "{v}/{case}: layout kept"
            );
            let r: Value = serde_json::from_slice(&o.stdout).unwrap();
            let derived = r["layers"].as_array().unwrap().iter().any(|l| {
                l["findings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|f| f["code"] == "input-shape-derived")
            });
            assert_eq!(derived, v == "2.12", "{v}/{case}");
        }
        // Two in one container: embedding the first would renumber the
        // second.
        let p = t.path().join(format!("{v}-two_norms.keras"));
        fs::copy(dir.join("two_norms").join("model.keras"), &p).unwrap();
        refuses(&p, &[], "numbers layers with weights by twos");
        refuses(&p, &[], &format!("tf.keras {v}."));
    }
}
