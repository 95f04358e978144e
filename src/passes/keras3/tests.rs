use serde_json::json;

use super::*;

fn dense_315() -> Value {
    json!({"module": "keras.layers", "class_name": "Dense", "config": {
        "name": "dense", "trainable": true, "units": 3, "activation": "relu", "use_bias": true,
        "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform",
            "config": {"seed": null, "input_axes": null, "output_axes": null}, "registered_name": null},
        "quantization_config": null},
        "registered_name": null, "name": "dense", "inbound_nodes": []})
}

fn functional(layers: Vec<Value>) -> Value {
    json!({"module": "keras.src.models.functional", "class_name": "Functional",
        "config": {"name": "m", "trainable": true, "layers": layers}, "registered_name": "Functional"})
}

fn codes(p: &Plan) -> Vec<(Rule, &str, &str)> {
    p.rewrites
        .iter()
        .map(|r| (r.code, r.layer.as_str(), r.key.as_str()))
        .collect()
}

#[test]
fn keys_older_keras_does_not_take_go_when_they_hold_the_unset_value() {
    let mut c = functional(vec![dense_315()]);
    let p = plan(&mut c, Some("3.15.1"), &Targets::default());
    assert_eq!(
        codes(&p),
        [
            (
                Rule::Keras3DefaultKey,
                "dense",
                "config.quantization_config"
            ),
            (
                Rule::Keras3DefaultKey,
                "dense",
                "config.kernel_initializer.config.input_axes"
            ),
            (
                Rule::Keras3DefaultKey,
                "dense",
                "config.kernel_initializer.config.output_axes"
            ),
        ]
    );
    assert!(p.unreachable.is_empty(), "{:?}", p.unreachable);
    let d = &c["config"]["layers"][0]["config"];
    assert!(d.get("quantization_config").is_none());
    assert_eq!(d["kernel_initializer"]["config"], json!({"seed": null}));
    // Idempotent: the output plans nothing.
    assert_eq!(
        plan(&mut c, Some("3.15.1"), &Targets::default()),
        Plan::default()
    );
}

#[test]
fn a_key_set_to_something_else_is_kept_and_the_versions_that_refuse_it_are_named() {
    let mut d = dense_315();
    d["config"]["quantization_config"] = json!({"mode": "int8"});
    let mut c = functional(vec![d]);
    let p = plan(&mut c, Some("3.15.1"), &Targets::default());
    assert!(c["config"]["layers"][0]["config"]["quantization_config"].is_object());
    let refusing: Vec<&str> = p.unreachable.keys().map(String::as_str).collect();
    assert_eq!(refusing, ["3.0.5", "3.10.0", "3.5.0", "3.6.0"]);
    assert!(p.unreachable["3.0.5"][0].contains("takes no quantization_config"));
    // Asked only for versions that take it: nothing to say.
    let p = plan(&mut c, Some("3.15.1"), &Targets::parse("3.13..").unwrap());
    assert!(p.unreachable.is_empty());
}

fn lstm(init: Value) -> Value {
    json!({"module": "keras.layers", "class_name": "LSTM", "config": {"name": "lstm", "units": 2,
        "recurrent_initializer": init}, "registered_name": null, "name": "lstm", "inbound_nodes": []})
}

#[test]
fn orthogonal_at_its_defaults_becomes_the_name_every_keras_3_resolves() {
    let init = json!({"module": "keras.initializers", "class_name": "OrthogonalInitializer",
        "config": {"gain": 1.0, "seed": null}, "registered_name": null});
    let mut c = functional(vec![lstm(init.clone())]);
    let p = plan(&mut c, Some("3.6.0"), &Targets::default());
    assert_eq!(
        codes(&p),
        [(
            Rule::Keras3ClassName,
            "lstm",
            "config.recurrent_initializer"
        )]
    );
    assert_eq!(p.rewrites[0].old, init);
    assert_eq!(
        c["config"]["layers"][0]["config"]["recurrent_initializer"],
        json!("orthogonal")
    );
    assert!(p.unreachable.is_empty());
}

#[test]
fn orthogonal_with_a_gain_takes_the_newest_name_and_3_0_is_named() {
    let init = json!({"module": "keras.initializers", "class_name": "OrthogonalInitializer",
        "config": {"gain": 2.0, "seed": null}, "registered_name": null});
    let mut c = functional(vec![lstm(init)]);
    let p = plan(&mut c, Some("3.6.0"), &Targets::default());
    assert_eq!(
        codes(&p),
        [(
            Rule::Keras3ClassName,
            "lstm",
            "config.recurrent_initializer.class_name"
        )]
    );
    assert_eq!(
        c["config"]["layers"][0]["config"]["recurrent_initializer"]["class_name"],
        "Orthogonal"
    );
    assert_eq!(p.unreachable.keys().collect::<Vec<_>>(), ["3.0.5"]);
    // Without 3.16 among the targets, OrthogonalInitializer serves them all.
    let init = json!({"module": "keras.initializers", "class_name": "OrthogonalInitializer",
        "config": {"gain": 2.0, "seed": null}, "registered_name": null});
    let mut c = functional(vec![lstm(init)]);
    let p = plan(&mut c, Some("3.6.0"), &Targets::parse("..3.15").unwrap());
    assert_eq!(p, Plan::default());
}

fn random_flip(training: Value) -> Value {
    json!({"module": "keras.layers", "class_name": "RandomFlip", "config": {"name": "random_flip",
        "seed": null, "mode": "horizontal_and_vertical"}, "registered_name": null, "name": "random_flip",
        "inbound_nodes": [{"args": [], "kwargs": {"training": training}}]})
}

#[test]
fn the_training_default_keras_recorded_in_a_node_goes_for_3_16() {
    let mut c = functional(vec![random_flip(json!(true))]);
    let p = plan(&mut c, Some("3.15.1"), &Targets::default());
    assert_eq!(
        codes(&p),
        [(
            Rule::NodeTrainingDefault,
            "random_flip",
            "inbound_nodes[0].kwargs.training"
        )]
    );
    assert_eq!(
        c["config"]["layers"][0]["inbound_nodes"][0]["kwargs"],
        json!({})
    );
    // Not for targets that all let the outer call decide.
    let mut c = functional(vec![random_flip(json!(true))]);
    assert_eq!(
        plan(
            &mut c,
            Some("3.15.1"),
            &Targets::parse("3.0..3.15").unwrap()
        ),
        Plan::default()
    );
    // A value that is not the default was passed by hand: kept, and said.
    let mut c = functional(vec![random_flip(json!(false))]);
    let p = plan(&mut c, Some("3.15.1"), &Targets::default());
    assert!(p.rewrites.is_empty());
    assert!(p.unreachable.keys().any(|v| v.starts_with("3.16")));
    // Written by 3.16, which records no default: explicit, and 3.0-3.15
    // would ignore it at predict.
    let mut c = functional(vec![random_flip(json!(true))]);
    let p = plan(&mut c, Some("3.16.0.dev2026102704"), &Targets::default());
    assert!(p.rewrites.is_empty());
    assert!(p.unreachable.contains_key("3.15.1"));
}

#[test]
fn load_in_parses_versions_and_ranges() {
    let all = Targets::default();
    assert_eq!(all.versions().len(), table().versions.len());
    assert_eq!(Targets::parse("all").unwrap(), all);
    assert_eq!(Targets::parse("3.10").unwrap().versions(), ["3.10.0"]);
    assert_eq!(
        Targets::parse("3.13..").unwrap().versions(),
        ["3.13.2", "3.15.1", "3.16.0.dev2026102704"]
    );
    assert_eq!(
        Targets::parse("..3.5, 3.15").unwrap().versions(),
        ["3.0.5", "3.5.0", "3.15.1"]
    );
    assert!(Targets::parse("3.7")
        .unwrap_err()
        .contains("names no pinned Keras 3"));
    assert!(Targets::parse("three").is_err());
    assert!(Targets::parse("").is_err());
}

#[test]
fn unknown_classes_and_custom_objects_are_left_alone() {
    let mut c = functional(vec![json!({"module": "my_pkg", "class_name": "Dense",
        "config": {"name": "x", "quantization_config": null}, "registered_name": "my_pkg>Dense",
        "inbound_nodes": []})]);
    let before = c.clone();
    assert_eq!(
        plan(&mut c, Some("3.15.1"), &Targets::default()),
        Plan::default()
    );
    assert_eq!(c, before);
}

#[test]
fn a_dot_loses_the_build_config_3_0_cannot_build_from() {
    let dot = json!({"module": "keras.layers", "class_name": "Dot", "config": {"name": "dot", "axes": 1},
        "registered_name": null, "build_config": {"input_shape": [[null, 4], [null, 4]]},
        "name": "dot", "inbound_nodes": []});
    let mut c = functional(vec![dot.clone()]);
    let p = plan(&mut c, Some("3.10.0"), &Targets::default());
    assert_eq!(
        codes(&p),
        [(Rule::Keras3BuildConfig, "dot", "build_config")]
    );
    assert!(c["config"]["layers"][0].get("build_config").is_none());
    // Only for targets that need it.
    let mut c = functional(vec![dot]);
    assert_eq!(
        plan(&mut c, Some("3.10.0"), &Targets::parse("3.5..").unwrap()),
        Plan::default()
    );
}

#[test]
fn what_a_target_computes_otherwise_or_cannot_load_back_is_named() {
    let crop = json!({"module": "keras.layers", "class_name": "RandomCrop", "config": {"name": "random_crop",
        "height": 4, "width": 4, "seed": 1}, "registered_name": null, "name": "random_crop", "inbound_nodes": []});
    let mut c = functional(vec![crop]);
    let p = plan(&mut c, Some("3.0.5"), &Targets::default());
    assert!(p.rewrites.is_empty());
    let named: Vec<&str> = p.unreachable.keys().map(String::as_str).collect();
    // 3.0.5 and 3.5 resize at inference; 3.6 otherwise; 3.10 on pass it through.
    assert!(
        !named.contains(&"3.0.5") && !named.contains(&"3.5.0"),
        "{named:?}"
    );
    assert!(
        named.contains(&"3.6.0") && named.contains(&"3.15.1"),
        "{named:?}"
    );
    assert!(
        p.unreachable["3.15.1"][0].contains("computes otherwise at inference than in Keras 3.0.5")
    );
    // An unknown writer: no behaviour to compare with.
    let mut c2 = c.clone();
    assert!(plan(&mut c2, None, &Targets::default())
        .unreachable
        .is_empty());

    let bi = json!({"module": "keras.layers", "class_name": "Bidirectional", "config": {"name": "bi",
        "layer": {"module": "keras.layers", "class_name": "LSTM", "config": {"name": "f", "units": 2}, "registered_name": null}},
        "registered_name": null, "name": "bi", "inbound_nodes": []});
    let mut c = functional(vec![bi]);
    let p = plan(&mut c, Some("3.15.1"), &Targets::default());
    assert_eq!(p.unreachable.keys().collect::<Vec<_>>(), ["3.0.5"]);
    assert!(p.unreachable["3.0.5"][0].contains("cannot load a Bidirectional back"));
}

#[test]
fn the_writer_is_stood_for_by_the_newest_pinned_version_at_or_below_it() {
    let t = table();
    assert_eq!(nearest_pinned(t, "3.0.5"), Some(0));
    assert_eq!(nearest_pinned(t, "3.8.0"), Some(2));
    assert_eq!(nearest_pinned(t, "3.16.0.dev2026102704"), Some(6));
    assert_eq!(nearest_pinned(t, "3.20.1"), Some(6));
    assert_eq!(nearest_pinned(t, "2.15.0"), None);
    assert!(!honours_node_training(t, "3.15.1"));
    assert!(honours_node_training(t, "3.16.0.dev2026102704"));
    assert!(honours_node_training(t, "3.17.0"));
}

#[test]
fn a_bare_tensor_triple_becomes_a_list_of_one_for_3_0() {
    let mut c = functional(vec![dense_315()]);
    c["config"]["input_layers"] = json!(["input_layer", 0, 0]);
    c["config"]["output_layers"] = json!([["dense", 0, 0]]);
    let p = plan(&mut c, Some("3.13.2"), &Targets::parse("3.0").unwrap());
    let leaf: Vec<_> = codes(&p)
        .into_iter()
        .filter(|c| c.0 == Rule::Keras3TensorLeaf)
        .collect();
    assert_eq!(leaf, [(Rule::Keras3TensorLeaf, "", "config.input_layers")]);
    assert_eq!(c["config"]["input_layers"], json!([["input_layer", 0, 0]]));
    assert_eq!(c["config"]["output_layers"], json!([["dense", 0, 0]]));
    // Targets that all take the bare triple keep it.
    let mut c = functional(vec![]);
    c["config"]["input_layers"] = json!(["input_layer", 0, 0]);
    assert_eq!(
        plan(&mut c, Some("3.13.2"), &Targets::parse("3.5..").unwrap()),
        Plan::default()
    );
}
