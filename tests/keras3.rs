//! Keras 3 to Keras 3 (issue #33): the committed archives of Keras 3.0.5
//! and 3.15.1 (testdata/fixtures/cross-keras3.*, written by
//! testdata/zoo.py; every pinned Keras 3's whole zoo is generated and
//! loaded in the others by scripts/test.sh), repaired by `krepair IN OUT`
//! with the rewrites each needs, and reported for what no form serves.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::*;
use serde_json::Value;

fn case(writer: &str, name: &str) -> PathBuf {
    root()
        .join("testdata/fixtures")
        .join(format!("cross-keras{writer}"))
        .join(name)
        .join("model.keras")
}

fn run(args: &[&dyn AsRef<std::ffi::OsStr>]) -> (i32, Value, String) {
    let mut a: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"--report", &"-", &"-q"];
    a.extend_from_slice(args);
    let o = krepair(&a);
    let r = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (code(&o), r, stderr(&o))
}

/// Per finding `not-loadable-in`: the version it names.
fn unreachable(r: &Value) -> Vec<String> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "not-loadable-in")
        .map(|f| {
            let m = f["message"].as_str().unwrap();
            m["Keras ".len()..].split(' ').next().unwrap().to_string()
        })
        .collect()
}

fn key_removed(r: &Value, key_end: &str) -> bool {
    r["migration"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["code"] == "keras3-default-key" && x["key"].as_str().unwrap().ends_with(key_end))
}

#[test]
fn each_archive_gets_the_rewrites_it_needs_and_the_output_plans_nothing() {
    let t = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "3.0",
            "LSTM",
            &["keras3-class-name", "node-training-default"],
        ),
        ("3.0", "RandomFlip", &["node-training-default"]),
        ("3.0", "Dot", &["keras3-build-config"]),
        (
            "3.15",
            "Dense",
            &["keras3-default-key", "keras3-tensor-leaf"],
        ),
        (
            "3.15",
            "RandomFlip",
            &[
                "keras3-default-key",
                "keras3-tensor-leaf",
                "node-training-default",
            ],
        ),
    ];
    let mut seen = BTreeSet::new();
    for (writer, name, want) in cases {
        let input = case(writer, name);
        let before = sha(&input);
        let out = t.path().join(format!("{writer}-{name}.keras"));
        let (c, r, err) = run(&[&input, &out]);
        assert_eq!(c, 0, "{writer}/{name}: {err}");
        assert_eq!(r["outcome"], "repaired", "{writer}/{name}");
        let got = codes(&r);
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, want, "{writer}/{name}");
        seen.extend(got);
        assert!(
            unreachable(&r).is_empty(),
            "{writer}/{name}: {:?}",
            r["findings"]
        );
        let load_in = r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["code"] == "load-in")
            .expect("the report says which Keras the output is for");
        assert!(load_in["message"].as_str().unwrap().contains("3.0.5"));
        assert_eq!(sha(&input), before, "the input is never written");
        // The output needs nothing more: an exact copy.
        let again = t.path().join(format!("{writer}-{name}-again.keras"));
        let (c, r, err) = run(&[&out, &again]);
        assert_eq!(c, 0, "{err}");
        assert_eq!(r["outcome"], "nothing-to-repair", "{writer}/{name}");
        assert_eq!(sha(&again), sha(&out));
    }
    // Keras 3.15.1 writes keys 3.0.5 does not take, at their unset values.
    let (_, r, _) = run(&[&"--dry-run", &case("3.15", "Dense")]);
    for k in ["quantization_config", "optional", "ragged", "input_axes"] {
        assert!(key_removed(&r, k), "{k}");
    }
    assert!(seen.len() >= 5, "{seen:?}");
}

#[test]
fn what_no_form_serves_is_reported_with_the_versions() {
    // Orthogonal(gain=2): 3.0.5 resolves only OrthogonalInitializer, 3.16
    // only Orthogonal: the newest wins and 3.0.5 is named.
    let (c, r, err) = run(&[&"--dry-run", &case("3.0", "keras3_LSTM_orthogonal_gain")]);
    assert_eq!(c, 3, "{err}");
    assert_eq!(unreachable(&r), ["3.0.5"]);
    assert!(r["migration"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["code"] == "keras3-class-name" && x["new"] == "Orthogonal"));
    // RandomCrop computes otherwise at inference from 3.6 on.
    let (_, r, _) = run(&[&"--dry-run", &case("3.0", "refused_RandomCrop")]);
    let named = unreachable(&r);
    assert!(
        named.contains(&"3.15.1".to_string()) && !named.contains(&"3.5.0".to_string()),
        "{named:?}"
    );
    // Keras 3.0.5 cannot load a Bidirectional back at all.
    let (_, r, _) = run(&[&"--dry-run", &case("3.0", "Bidirectional_GRU")]);
    assert_eq!(unreachable(&r), ["3.0.5"]);
    // Keras 3.0.5 has no resolvable Identity initializer.
    let (_, r, _) = run(&[&"--dry-run", &case("3.15", "keras3_every_initializer")]);
    assert_eq!(unreachable(&r), ["3.0.5"]);
}

#[test]
fn load_in_chooses_the_versions() {
    // Only 3.15 and later: nothing 3.0.5 needs is rewritten.
    let (c, r, err) = run(&[
        &"--dry-run",
        &"--load-in",
        &"3.15..",
        &case("3.15", "Dense"),
    ]);
    assert_eq!(c, 0, "{err}");
    assert_eq!(r["outcome"], "nothing-to-repair");
    // The gain-2 Orthogonal for 3.0 to 3.15: the name as written serves all.
    let (_, r, _) = run(&[
        &"--dry-run",
        &"--load-in",
        &"..3.15",
        &case("3.0", "keras3_LSTM_orthogonal_gain"),
    ]);
    assert!(unreachable(&r).is_empty());
    assert!(!codes(&r).contains("keras3-class-name"));
    // The same archive for 3.16 only: renamed, nothing unreachable.
    let (_, r, _) = run(&[
        &"--dry-run",
        &"--load-in",
        &"3.16",
        &case("3.0", "keras3_LSTM_orthogonal_gain"),
    ]);
    assert!(codes(&r).contains("keras3-class-name"));
    assert!(unreachable(&r).is_empty());
    // People read what happened: no migration, other Keras 3 versions.
    let t2 = tempfile::tempdir().unwrap();
    let o = krepair(&[&case("3.15", "Dense"), &t2.path().join("o.keras")]);
    let said = String::from_utf8(o.stdout).unwrap();
    assert!(
        said.contains("made to load in other Keras 3 versions: 7 rewrite(s)"),
        "{said}"
    );
    assert!(
        said.contains("rewritten for other Keras 3 versions, repaired 0 layer(s)"),
        "{said}"
    );
    assert!(!said.contains("migrated"), "{said}");
    // A version krepair has no table for is a usage error.
    let o = krepair(&[&"--load-in", &"3.7", &case("3.15", "Dense"), &"out.keras"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("names no pinned Keras 3"),
        "{}",
        stderr(&o)
    );
    // batch takes it too.
    let t = tempfile::tempdir().unwrap();
    let o = krepair(&[
        &"batch",
        &"-q",
        &"--dry-run",
        &"--load-in",
        &"3.15..",
        &case("3.15", "Dense").parent().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    drop(t);
}
