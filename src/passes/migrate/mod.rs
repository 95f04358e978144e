//! The tf.keras 2.x to Keras 3 migration pass over `config.json` (pure: a
//! JSON tree in, rewrites and a refusal out; no files).
//!
//! `krepair migrate` (issue #10) handles archives written by tf.keras
//! 2.12 to 2.15 (and tf_keras 2.16 to 2.21) whose layers the layer table
//! migrates ([`layer_class`], from `layers.json`; docs/layers.md) (and
//! registered custom classes, which bring their own code). Every rule here
//! was found necessary by loading real tf.keras 2.15 archives in Keras
//! 3.0.5 and 3.15.1 with and without it, and is listed with the Keras
//! source lines behind it in docs/migration.md. Anything else is refused
//! with the reason, never guessed at: an archive that needs a rule this
//! pass does not have would load wrong or not at all.
//!
//! The pass is idempotent: each rule fires only on what tf.keras writes
//! (an `engine` module path, `batch_input_shape` on a layer, a `Policy`
//! dtype, node indices of a model whose own module is tf.keras's), so a
//! migrated config plans nothing.
//!
//! One file per seam, each holding its rules and their tables:
//!
//! - `layers.rs`: the walk over a config's layer entries (models, custom
//!   layers, wrappers, cells) and the rules the layer table gives each
//!   class;
//! - `layer_table.rs`: the layer table, read from `layers.json`;
//! - `keras3_form.rs`: the modules Keras 3's own legacy HDF5 files leave
//!   out of a model's layer entries;
//! - `legacy_form.rs`: tf.keras 2.12's legacy form (entries without a
//!   `module`, NumPy scalars), given what 2.13 writes before the other
//!   rules run;
//! - `nested_nodes.rs`: the node indices of calls to a nested model;
//! - `tf_ops.rs`: `TFOpLambda` arithmetic as exact Keras 3 layers
//!   ([`tf_op_layer`]);
//! - `discretization_encoding.rs`: an encoded Discretization split into an
//!   int-mode Discretization and a CategoryEncoding;
//! - `compile.rs`: the compile config (optimizers, learning-rate
//!   schedules, losses, metrics) and what the optimizer's variables need;
//! - `weights_layout.rs`: the renames that give a tf.keras 2.13 or 2.14
//!   weights file Keras 3's layout ([`legacy_layout`]).
//!
//! This file holds what they share ([`Rewrite`], [`Refusal`], [`Plan`],
//! a layer's config path) and [`plan`], which runs them in order; every
//! public item of the pass is re-exported here.

mod compile;
mod discretization_encoding;
mod h5_layout;
mod h5_training;
mod keras3_form;
mod keyword_tensors;
mod layer_table;
mod layers;
mod legacy_form;
mod nested_nodes;
mod tf_ops;
mod weights_layout;

pub use compile::{
    OptimizerVariables, KNOWN_LOSSES, KNOWN_METRICS, KNOWN_OPTIMIZERS, KNOWN_SCHEDULES,
    SCHEDULE_NAMES, UNMAPPED_OPTIMIZERS,
};
pub use h5_layout::{h5_layout, model_layers, to_snake_case, H5Layout};
pub use h5_training::compile_config_of;
pub use keras3_form::keras3_layers;
pub use layer_table::{layer_class, migrated_classes, Drop, LayerClass, Replacement, When};
pub use tf_ops::tf_op_layer;
pub use weights_layout::{
    join_path, legacy_layout, legacy_path, numbering_of, Numbering, Rename, LEGACY_CONTAINER,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plan::{Rule, Version};

/// One rewrite of the config, with its evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rewrite {
    /// Stable code: the rule that rewrote it.
    pub code: Rule,
    /// The layer's config path (names from the root down, joined by `/`;
    /// empty for the root model).
    pub layer: String,
    /// The key rewritten, inside the layer's entry (`module`,
    /// `config.batch_input_shape`, `inbound_nodes[0][0][1]`, ...).
    pub key: String,
    /// The value before.
    pub old: Value,
    /// The value after; null when the key is removed.
    pub new: Option<Value>,
}

/// The migration of one config: its rewrites, and what the weights need.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// The config rewrites, in config order (the compile config last).
    pub rewrites: Vec<Rewrite>,
    /// The optimizer variables to lay out for Keras 3.
    pub optimizer: Option<OptimizerVariables>,
}

/// Why the archive cannot be migrated (yet): one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The layer's config path (empty for the archive as a whole).
    pub layer: String,
    /// Why.
    pub reason: String,
}

/// Is this archive's config from tf.keras 2.x (by its saving version)?
pub fn is_tf_keras(keras_version: Option<&str>) -> bool {
    keras_version
        .and_then(Version::parse)
        .is_some_and(|v| v.0 == 2)
}

/// Plan the migration of `config` (edited in place) written by tf.keras
/// `keras_version`.
pub fn plan(config: &mut Value, keras_version: Option<&str>) -> Result<Plan, Refusal> {
    plan_from(config, keras_version, false)
}

/// [`plan`] for a config read from a legacy HDF5 model file (`from_h5`):
/// every Keras 2 writes it in the legacy form.
pub fn plan_from(
    config: &mut Value,
    keras_version: Option<&str>,
    from_h5: bool,
) -> Result<Plan, Refusal> {
    let refuse = |layer: &str, reason: String| Refusal {
        layer: layer.to_string(),
        reason,
    };
    // 2.13 and 2.14 weights also need [`legacy_layout`] (by
    // [`numbering_of`] the version), once the weights are open.
    let legacy_form = match keras_version.and_then(Version::parse) {
        Some(Version(2, _)) if from_h5 => true,
        Some(Version(2, 12)) => true,
        // tf_keras 2.16 to 2.21 (TensorFlow's Keras 2 once Keras 3 took
        // its place) write what tf.keras 2.15 writes, the module of a
        // model's class under tf_keras.src.engine.
        Some(Version(2, 13..=21)) => false,
        // An archive krepair migrated from an older Keras 2's HDF5 file
        // keeps that version in metadata.json, and its config is Keras 3's
        // (the model's module is Keras 3's): nothing to do again.
        Some(Version(2, _)) if is_keras3_model(config) => return Ok(Plan::default()),
        Some(Version(2, m)) => {
            return Err(refuse(
                "",
                format!("saved by tf.keras 2.{m}: krepair migrate handles tf.keras 2.12 to 2.15 and tf_keras 2.16 to 2.21 archives (2.11 and older write no .keras archive Keras 3 can read)"),
            ))
        }
        // Keras 3's own legacy HDF5 file: its config is Keras 3's, the
        // layers of its models without their modules.
        Some(Version(3, _)) if from_h5 => {
            let mut rewrites = Vec::new();
            keras3_form::keras3_modules(config, "", &mut rewrites)?;
            return Ok(Plan {
                rewrites,
                optimizer: None,
            });
        }
        _ => return Ok(Plan::default()),
    };
    let mut rewrites = Vec::new();
    if legacy_form {
        legacy_form::legacy_modules(config, "", &mut rewrites)?;
    }
    layers::visit(config, "", &mut rewrites)?;
    let optimizer = match config.get_mut("compile_config") {
        Some(cc) if !cc.is_null() && cc.as_object().is_none_or(|o| !o.is_empty()) => {
            compile::compile_config(cc, &mut rewrites).map_err(|reason| refuse("", reason))?
        }
        _ => None,
    };
    Ok(Plan {
        rewrites,
        optimizer,
    })
}

/// Is `config` a model entry in Keras 3's form (its module one of Keras
/// 3's model modules, as rule `model-module` writes it)?
fn is_keras3_model(config: &Value) -> bool {
    config
        .get("module")
        .and_then(Value::as_str)
        .is_some_and(|m| m.starts_with("keras.src.models."))
}

/// The config path of layer entry `l` inside the model at `path`.
fn child_path(path: &str, l: &Value) -> String {
    let name = l
        .get("config")
        .and_then(|c| c.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}/{name}")
    }
}

#[cfg(test)]
mod fixtures {
    //! Configs the tests of every rule build on.

    use super::*;
    use serde_json::json;

    /// A tf.keras 2.12 config: layers, nested models and initializers in
    /// the legacy form (as tf.keras 2.12.1 wrote them; see
    /// testdata/fixtures/migrate-tf2.12).
    pub(super) fn tf212() -> Value {
        json!({"module": "keras.engine.functional", "class_name": "Functional", "registered_name": "Functional",
            "build_config": {"input_shape": [null, 4]},
            "config": {"name": "model", "layers": [
                {"class_name": "InputLayer", "config": {"batch_input_shape": [null, 4], "dtype": "float32", "name": "in"}, "name": "in", "inbound_nodes": []},
                {"class_name": "Sequential", "config": {"name": "seq", "layers": [
                    {"class_name": "InputLayer", "config": {"batch_input_shape": [null, 4], "name": "i2"}},
                    {"class_name": "Dense", "config": {"name": "d", "units": 2,
                        "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": null}},
                        "kernel_regularizer": {"class_name": "L2", "config": {"l2": 0.01}},
                        "bias_constraint": {"class_name": "NonNeg", "config": {}}}}]},
                    "name": "seq", "inbound_nodes": [[["in", 0, 0, {}]]]},
                {"class_name": "ReLU", "config": {"name": "r", "max_value": {"class_name": "__numpy__", "config": {"value": 6.0, "dtype": "float32"}}},
                    "name": "r", "inbound_nodes": [[["seq", 1, 0, {}]]]}],
                "input_layers": [["in", 0, 0]], "output_layers": [["r", 0, 0]]}})
    }

    /// The config rewrites alone.
    pub(super) fn plan(c: &mut Value, v: Option<&str>) -> Result<Vec<Rewrite>, Refusal> {
        super::plan(c, v).map(|p| p.rewrites)
    }

    pub(super) fn dense(name: &str, inbound: Value) -> Value {
        json!({"module": "keras.layers", "class_name": "Dense", "config": {"name": name, "units": 2, "dtype": "float32", "batch_input_shape": [null, 4]}, "registered_name": null, "name": name, "inbound_nodes": inbound})
    }

    fn input(name: &str) -> Value {
        json!({"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_input_shape": [null, 4], "dtype": "float32", "sparse": false, "ragged": false, "name": name}, "registered_name": null, "name": name, "inbound_nodes": []})
    }

    pub(super) fn tf215_nested() -> Value {
        let inner = json!({"module": "keras", "class_name": "Sequential", "config": {"name": "block", "layers": [
            {"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_input_shape": [null, 4], "name": "i2"}, "registered_name": null},
            dense("d1", Value::Null)
        ]}, "registered_name": null, "name": "block", "inbound_nodes": [[["in", 0, 0, {}]]]});
        json!({"module": "keras.src.engine.functional", "class_name": "Functional", "config": {
            "name": "m",
            "layers": [input("in"), inner, dense("out", json!([[["block", 1, 0, {}]]]))],
            "input_layers": [["in", 0, 0]],
            "output_layers": [["out", 0, 0]]
        }, "registered_name": "Functional"})
    }

    /// A tf.keras 2.15 compile config as model.save writes it.
    pub(super) fn tf215_compile(optimizer: &str, extra: Value) -> Value {
        let mut cfg = json!({"name": optimizer, "weight_decay": null, "clipnorm": null, "global_clipnorm": null, "clipvalue": null, "use_ema": false, "ema_momentum": 0.99, "ema_overwrite_frequency": null, "jit_compile": false, "is_legacy_optimizer": false, "learning_rate": 0.009999999776482582});
        for (k, v) in extra.as_object().unwrap() {
            cfg[k] = v.clone();
        }
        json!({
            "optimizer": {"module": if optimizer == "SGD" { "keras.optimizers.experimental" } else { "keras.optimizers" }, "class_name": optimizer, "config": cfg, "registered_name": null},
            "loss": {"module": "keras.losses", "class_name": "SparseCategoricalCrossentropy", "config": {"reduction": "auto", "name": "sparse_categorical_crossentropy", "from_logits": true, "ignore_class": null, "fn": "sparse_categorical_crossentropy"}, "registered_name": null},
            "metrics": ["accuracy", {"module": "keras.metrics", "class_name": "SparseTopKCategoricalAccuracy", "config": {"name": "top2", "dtype": "float32", "k": 2}, "registered_name": null}],
            "loss_weights": null, "weighted_metrics": null, "run_eagerly": null, "steps_per_execution": null, "jit_compile": null
        })
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{plan, tf215_nested};
    use super::*;
    use serde_json::json;

    #[test]
    fn a_tf_keras_2_15_model_is_rewritten_by_each_rule_once() {
        let mut c = tf215_nested();
        let rw = plan(&mut c, Some("2.15.0")).unwrap();
        let codes: Vec<(Rule, &str, &str)> = rw
            .iter()
            .map(|r| (r.code, r.layer.as_str(), r.key.as_str()))
            .collect();
        assert_eq!(
            codes,
            [
                (Rule::ModelModule, "", "module"),
                (Rule::NestedNodeIndex, "out", "inbound_nodes[0][0][1]"),
                (
                    Rule::BatchInputShape,
                    "block/d1",
                    "config.batch_input_shape"
                ),
                (Rule::BatchInputShape, "out", "config.batch_input_shape"),
            ]
        );
        assert_eq!(c["module"], "keras.src.models.functional");
        assert_eq!(c["config"]["layers"][2]["inbound_nodes"][0][0][1], 0);
        assert!(c["config"]["layers"][2]["config"]
            .get("batch_input_shape")
            .is_none());
        // The InputLayer keeps its batch_input_shape (it reads it itself).
        assert_eq!(
            c["config"]["layers"][0]["config"]["batch_input_shape"],
            json!([null, 4])
        );
        // Idempotent: the migrated config plans nothing.
        let again = c.clone();
        assert_eq!(plan(&mut c, Some("2.15.0")).unwrap(), vec![]);
        assert_eq!(c, again);
    }

    #[test]
    fn what_has_no_rule_is_refused_with_the_layer() {
        let mut c = tf215_nested();
        c["config"]["layers"][2]["class_name"] = "FancyDense".into();
        let e = plan(&mut c, Some("2.15.0")).unwrap_err();
        assert_eq!(e.layer, "out");
        assert!(
            e.reason
                .contains("no migration rule for `keras.layers.FancyDense`"),
            "{}",
            e.reason
        );

        let mut c = tf215_nested();
        c["config"]["layers"][1]["config"]["layers"][1]["class_name"] = "Lambda".into();
        assert_eq!(plan(&mut c, Some("2.15.0")).unwrap_err().layer, "block/d1");

        let mut c = tf215_nested();
        c["config"]["layers"][2]["inbound_nodes"][0][0][1] = 0.into();
        assert!(plan(&mut c, Some("2.15.0"))
            .unwrap_err()
            .reason
            .contains("node 0"));

        // A nested Functional is renumbered like a Sequential on an
        // InputLayer.
        let mut c = tf215_nested();
        c["config"]["layers"][1]["class_name"] = "Functional".into();
        c["config"]["layers"][1]["module"] = "keras.src.engine.functional".into();
        let rw = plan(&mut c, Some("2.15.0")).unwrap();
        assert!(rw
            .iter()
            .any(|r| r.code == Rule::NestedNodeIndex && r.layer == "out"));
        assert!(rw
            .iter()
            .any(|r| r.code == Rule::ModelModule && r.layer == "block"));

        let mut c = tf215_nested();
        c["config"]["layers"][1]["config"]["layers"]
            .as_array_mut()
            .unwrap()
            .remove(0);
        assert!(plan(&mut c, Some("2.15.0"))
            .unwrap_err()
            .reason
            .contains("without an InputLayer"));

        let mut c = tf215_nested();
        c["compile_config"] = json!({"optimizer": "yogi"});
        assert!(plan(&mut c, Some("2.15.0"))
            .unwrap_err()
            .reason
            .contains("no migration rule for the optimizer \"yogi\""));

        // tf_keras 2.16 to 2.21 are migrated; a later Keras 2 is not.
        let mut c = tf215_nested();
        c["module"] = "tf_keras.src.engine.functional".into();
        let rw = plan(&mut c, Some("2.21.0")).unwrap();
        assert_eq!(rw[0].code, Rule::ModelModule);
        assert_eq!(c["module"], "keras.src.models.functional");
        let mut c = tf215_nested();
        assert!(plan(&mut c, Some("2.22.0"))
            .unwrap_err()
            .reason
            .contains("tf_keras 2.16 to 2.21"));

        let mut c = tf215_nested();
        assert!(plan(&mut c, Some("2.11.0"))
            .unwrap_err()
            .reason
            .contains("2.11"));

        let mut c = tf215_nested();
        c["config"]["layers"][2] = json!({"module": "my_layers", "class_name": "Mine", "config": {"name": "out"}, "registered_name": null, "inbound_nodes": []});
        assert!(plan(&mut c, Some("2.15.0"))
            .unwrap_err()
            .reason
            .contains("not registered"));
    }

    #[test]
    fn keras_3_archives_plan_nothing() {
        let mut c = tf215_nested();
        let before = c.clone();
        assert_eq!(plan(&mut c, Some("3.15.1")).unwrap(), vec![]);
        assert_eq!(plan(&mut c, None).unwrap(), vec![]);
        assert_eq!(c, before);
    }

    #[test]
    fn every_rule_code_is_listed_once_and_reads_back() {
        let mut codes: Vec<&str> = Rule::ALL.iter().map(|r| r.as_str()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Rule::ALL.len());
        for r in Rule::ALL {
            let json = serde_json::to_string(r).unwrap();
            assert_eq!(serde_json::from_str::<Rule>(&json).unwrap(), *r);
        }
    }
}
