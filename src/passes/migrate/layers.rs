//! The layer rules: the walk over a config's layer entries (`visit`:
//! models, registered custom layers and the Keras layers inside them,
//! wrapped layers) and what each class in [`KNOWN_LAYERS`] needs rewritten
//! for Keras 3 (`batch_input_shape`, a CategoryEncoding's `sparse`, a
//! one-element axis list, `groups`, `time_major`, Orthogonal initializers,
//! mixed-precision policies, ...). A model's own rules (its module, its
//! nested calls, its encoded Discretizations) run from here too.

use serde_json::{Map, Value};

use super::discretization_encoding::split_encoded_discretizations;
use super::nested_nodes::renumber_nested_calls;
use super::tf_ops::{is_tf_op_lambda, tf_op_arithmetic};
use super::{child_path, Refusal, Rewrite};
use crate::plan::Rule;

/// Layer classes (module `keras.layers`) whose tf.keras 2.15 config Keras
/// 3.0 to 3.15 read as it is, once the rules below have run. Checked by
/// loading real archives (scripts/check_migrate.py).
pub const KNOWN_LAYERS: &[&str] = &[
    "InputLayer",
    "Normalization",
    "Dense",
    "Activation",
    "Flatten",
    "Rescaling",
    "Conv2D",
    "DepthwiseConv2D",
    "BatchNormalization",
    "LayerNormalization",
    "MaxPooling2D",
    "GlobalAveragePooling2D",
    "ReLU",
    "Dropout",
    "Add",
    "Subtract",
    "Multiply",
    "Concatenate",
    "ZeroPadding2D",
    "Reshape",
    "Embedding",
    "LSTM",
    "GRU",
    "Bidirectional",
    "Discretization",
    "CategoryEncoding",
];

/// Model classes: their configs hold `layers`.
pub(super) const MODELS: &[&str] = &["Functional", "Sequential", "Model"];

fn is_engine_module(m: &str) -> bool {
    m.starts_with("keras.engine.") || m.starts_with("keras.src.engine.")
}

/// A layer entry (a model, a layer, or a layer config nested in a custom
/// layer's config) at `path`.
pub(super) fn visit(entry: &mut Value, path: &str, out: &mut Vec<Rewrite>) -> Result<(), Refusal> {
    let class = entry
        .get("class_name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let module = entry
        .get("module")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let registered = entry.get("registered_name").and_then(Value::as_str);
    let custom = !module.is_empty() && module != "keras" && !module.starts_with("keras.");
    let is_model = MODELS.contains(&class.as_str())
        && entry
            .get("config")
            .and_then(|c| c.get("layers"))
            .is_some_and(Value::is_array);
    if is_model {
        return visit_model(entry, path, &class, &module, out);
    }
    if is_tf_op_lambda(entry) {
        return tf_op_arithmetic(entry, path, out);
    }
    if custom {
        if registered.is_none() {
            return Err(Refusal {
                layer: path.to_string(),
                reason: format!("class `{class}` from module `{module}` is not registered (register_keras_serializable), so no Keras can find it"),
            });
        }
        return visit_custom(entry, path, out);
    }
    if module != "keras.layers" || !KNOWN_LAYERS.contains(&class.as_str()) {
        return Err(Refusal {
            layer: path.to_string(),
            reason: format!(
                "no migration rule for `{module}.{class}` yet (krepair migrate knows {})",
                KNOWN_LAYERS.join(", ")
            ),
        });
    }
    let Some(cfg) = entry.get_mut("config").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    layer_rules(&class, cfg, path, out)
}

/// A model of class `class` from `module` at `path`: its own module (rule
/// `model-module`), its calls to nested models, each of its layers, then
/// its encoded Discretizations.
fn visit_model(
    entry: &mut Value,
    path: &str,
    class: &str,
    module: &str,
    out: &mut Vec<Rewrite>,
) -> Result<(), Refusal> {
    let from_tf_keras = is_engine_module(module);
    if from_tf_keras {
        let new = if class == "Sequential" {
            "keras.src.models.sequential"
        } else {
            "keras.src.models.functional"
        };
        out.push(Rewrite {
            code: Rule::ModelModule,
            layer: path.to_string(),
            key: "module".into(),
            old: Value::from(module),
            new: Some(Value::from(new)),
        });
        entry["module"] = Value::from(new);
    }
    if class != "Sequential" && from_tf_keras {
        renumber_nested_calls(entry, path, out)?;
    }
    let layers = entry["config"]["layers"]
        .as_array_mut()
        .expect("checked: an array");
    for l in layers.iter_mut() {
        let child = child_path(path, l);
        visit(l, &child, out)?;
    }
    split_encoded_discretizations(entry, path, out)
}

/// A registered custom layer at `path`: its own code reads its config;
/// the Keras layers it serializes inside are migrated like any other.
fn visit_custom(entry: &mut Value, path: &str, out: &mut Vec<Rewrite>) -> Result<(), Refusal> {
    if let Some(cfg) = entry.get_mut("config").and_then(Value::as_object_mut) {
        for (key, v) in cfg.iter_mut() {
            if v.get("class_name").is_some() && v.get("config").is_some() {
                visit(v, &format!("{path}/{key}"), out)?;
            }
        }
    }
    Ok(())
}

/// The rules over the config of a Keras layer of class `class` at `path`,
/// in the order their rewrites are listed.
fn layer_rules(
    class: &str,
    cfg: &mut Map<String, Value>,
    path: &str,
    out: &mut Vec<Rewrite>,
) -> Result<(), Refusal> {
    if class != "InputLayer" {
        drop_key(cfg, "batch_input_shape", Rule::BatchInputShape, path, out);
    }
    if class == "CategoryEncoding" {
        category_encoding_sparse(cfg, path, out)?;
    }
    if class == "Discretization" {
        drop_key(cfg, "trainable", Rule::DiscretizationTrainable, path, out);
    }
    if class == "BatchNormalization" {
        one_element_axis(cfg, path, out)?;
    }
    if class == "DepthwiseConv2D" {
        depthwise_groups(cfg, path, out)?;
    }
    if matches!(class, "LSTM" | "GRU") {
        rnn_time_major(class, cfg, path, out)?;
    }
    for (class_of, key, code) in [
        ("GRU", "implementation", Rule::GruImplementation),
        ("Embedding", "input_length", Rule::EmbeddingInputLength),
    ] {
        if class == class_of {
            drop_key(cfg, key, code, path, out);
        }
    }
    orthogonal_initializers(cfg, path, out);
    if class == "Bidirectional" {
        // The wrapped layers are layer entries of their own.
        for key in ["layer", "backward_layer"] {
            if let Some(inner) = cfg.get_mut(key).filter(|v| v.is_object()) {
                visit(inner, &format!("{path}/{key}"), out)?;
            }
        }
    }
    dtype_policy(cfg, path, out);
    Ok(())
}

/// Remove `key` from the layer config at `path`, when it is there (rule
/// `code`).
fn drop_key(
    cfg: &mut Map<String, Value>,
    key: &str,
    code: Rule,
    path: &str,
    out: &mut Vec<Rewrite>,
) {
    if let Some(old) = cfg.shift_remove(key) {
        out.push(Rewrite {
            code,
            layer: path.to_string(),
            key: format!("config.{key}"),
            old,
            new: None,
        });
    }
}

/// `false`, the one value of a tf.keras flag Keras 3 computes without it.
fn is_false(v: &Value) -> bool {
    *v == Value::Bool(false)
}

/// A CategoryEncoding's `sparse`: false is removed; true is refused.
fn category_encoding_sparse(
    cfg: &mut Map<String, Value>,
    path: &str,
    out: &mut Vec<Rewrite>,
) -> Result<(), Refusal> {
    drop_if(
        cfg,
        "sparse",
        is_false,
        Rule::CategoryEncodingSparse,
        path,
        out,
    )
    .map_err(|v| Refusal {
        layer: path.to_string(),
        reason: format!(
            "CategoryEncoding with sparse {v}: Keras 3.0 has no sparse CategoryEncoding"
        ),
    })
}

/// Remove `key` from the layer config at `path` (a rewrite by `rule`,
/// as [`drop_key`]) when its value passes `droppable`; any other value is
/// handed back, the config untouched, for the caller to refuse.
fn drop_if(
    cfg: &mut Map<String, Value>,
    key: &str,
    droppable: impl Fn(&Value) -> bool,
    rule: Rule,
    path: &str,
    out: &mut Vec<Rewrite>,
) -> Result<(), Value> {
    match cfg.get(key) {
        Some(v) if !droppable(v) => Err(v.clone()),
        _ => {
            drop_key(cfg, key, rule, path, out);
            Ok(())
        }
    }
}

/// A BatchNormalization's `axis` given as a list: one axis becomes the
/// number; more are refused.
fn one_element_axis(
    cfg: &mut Map<String, Value>,
    path: &str,
    out: &mut Vec<Rewrite>,
) -> Result<(), Refusal> {
    if let Some(Value::Array(axes)) = cfg.get("axis") {
        if axes.len() != 1 || !axes[0].is_i64() {
            return Err(Refusal {
                layer: path.to_string(),
                reason: format!(
                    "BatchNormalization over axes {}: Keras 3 takes exactly one",
                    Value::Array(axes.clone())
                ),
            });
        }
        let one = axes[0].clone();
        let old = cfg
            .insert("axis".into(), one.clone())
            .unwrap_or(Value::Null);
        out.push(Rewrite {
            code: Rule::OneElementAxis,
            layer: path.to_string(),
            key: "config.axis".into(),
            old,
            new: Some(one),
        });
    }
    Ok(())
}

/// A DepthwiseConv2D's `groups`: 1 is removed; any other is refused.
fn depthwise_groups(
    cfg: &mut Map<String, Value>,
    path: &str,
    out: &mut Vec<Rewrite>,
) -> Result<(), Refusal> {
    let one = |g: &Value| g.as_i64() == Some(1);
    drop_if(cfg, "groups", one, Rule::DepthwiseGroups, path, out).map_err(|g| Refusal {
        layer: path.to_string(),
        reason: format!("DepthwiseConv2D with groups {g}: Keras 3 has no such argument"),
    })
}

/// An LSTM's or GRU's (`class`) `time_major`: false is removed; true is
/// refused.
fn rnn_time_major(
    class: &str,
    cfg: &mut Map<String, Value>,
    path: &str,
    out: &mut Vec<Rewrite>,
) -> Result<(), Refusal> {
    drop_if(cfg, "time_major", is_false, Rule::RnnTimeMajor, path, out).map_err(|v| Refusal {
        layer: path.to_string(),
        reason: format!("{class} with time_major {v}: Keras 3 RNNs are batch-major only"),
    })
}

/// Every `Orthogonal` initializer in the layer config at `path` becomes
/// Keras 3's `OrthogonalInitializer`.
fn orthogonal_initializers(cfg: &mut Map<String, Value>, path: &str, out: &mut Vec<Rewrite>) {
    for (key, v) in cfg.iter_mut() {
        let orthogonal = v.get("module").and_then(Value::as_str) == Some("keras.initializers")
            && v.get("class_name").and_then(Value::as_str) == Some("Orthogonal");
        if orthogonal {
            out.push(Rewrite {
                code: Rule::OrthogonalInitializer,
                layer: path.to_string(),
                key: format!("config.{key}.class_name"),
                old: Value::from("Orthogonal"),
                new: Some(Value::from("OrthogonalInitializer")),
            });
            v["class_name"] = Value::from("OrthogonalInitializer");
        }
    }
}

/// A mixed-precision `Policy` as the layer's `dtype` becomes Keras 3's
/// `DTypePolicy` of the same name.
fn dtype_policy(cfg: &mut Map<String, Value>, path: &str, out: &mut Vec<Rewrite>) {
    if let Some(d) = cfg.get_mut("dtype") {
        let is_policy = d.get("class_name").and_then(Value::as_str) == Some("Policy")
            && d.get("module").and_then(Value::as_str) == Some("keras.mixed_precision");
        if is_policy {
            let name = d
                .get("config")
                .and_then(|c| c.get("name"))
                .cloned()
                .unwrap_or(Value::Null);
            let new = serde_json::json!({
                "module": "keras",
                "class_name": "DTypePolicy",
                "config": {"name": name},
                "registered_name": null
            });
            out.push(Rewrite {
                code: Rule::DtypePolicy,
                layer: path.to_string(),
                key: "config.dtype".into(),
                old: d.clone(),
                new: Some(new.clone()),
            });
            *d = new;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::migrate::fixtures::{plan, tf215_nested};
    use serde_json::json;

    #[test]
    fn mixed_precision_policies_become_dtype_policies() {
        let mut c = tf215_nested();
        c["config"]["layers"][2]["config"]["dtype"] = json!({"module": "keras.mixed_precision", "class_name": "Policy", "config": {"name": "mixed_float16"}, "registered_name": null});
        let rw = plan(&mut c, Some("2.15.0")).unwrap();
        assert!(rw
            .iter()
            .any(|r| r.code == Rule::DtypePolicy && r.layer == "out"));
        assert_eq!(
            c["config"]["layers"][2]["config"]["dtype"],
            json!({"module": "keras", "class_name": "DTypePolicy", "config": {"name": "mixed_float16"}, "registered_name": null})
        );
    }

    #[test]
    fn batch_norm_axes_and_depthwise_groups() {
        let mut c = tf215_nested();
        c["config"]["layers"][2] = json!({"module": "keras.layers", "class_name": "BatchNormalization", "config": {"name": "bn", "axis": [3]}, "registered_name": null, "inbound_nodes": [[["block", 1, 0, {}]]]});
        c["config"]["layers"].as_array_mut().unwrap().push(json!({"module": "keras.layers", "class_name": "DepthwiseConv2D", "config": {"name": "dw", "groups": 1, "kernel_size": [3, 3]}, "registered_name": null, "inbound_nodes": [[["bn", 0, 0, {}]]]}));
        let rw = plan(&mut c, Some("2.15.0")).unwrap();
        assert!(rw.iter().any(|r| r.code == Rule::OneElementAxis
            && r.old == json!([3])
            && r.new == Some(json!(3))));
        assert!(rw
            .iter()
            .any(|r| r.code == Rule::DepthwiseGroups && r.layer == "dw"));
        assert_eq!(c["config"]["layers"][2]["config"]["axis"], 3);
        assert!(c["config"]["layers"][3]["config"].get("groups").is_none());
        assert_eq!(plan(&mut c, Some("2.15.0")).unwrap(), vec![], "idempotent");

        let mut c = tf215_nested();
        c["config"]["layers"][2] = json!({"module": "keras.layers", "class_name": "BatchNormalization", "config": {"name": "bn", "axis": [1, 2]}, "registered_name": null, "inbound_nodes": []});
        assert!(plan(&mut c, Some("2.15.0"))
            .unwrap_err()
            .reason
            .contains("exactly one"));
    }

    #[test]
    fn recurrent_layers_and_their_wrappers() {
        let orth = json!({"module": "keras.initializers", "class_name": "Orthogonal", "config": {"gain": 1.0, "seed": null}, "registered_name": null, "shared_object_id": 7});
        let lstm = json!({"module": "keras.layers", "class_name": "LSTM", "config": {"name": "lstm", "units": 3, "time_major": false, "implementation": 2, "recurrent_initializer": orth}, "registered_name": null});
        let mut c = tf215_nested();
        c["config"]["layers"][2] = json!({"module": "keras.layers", "class_name": "Bidirectional", "config": {"name": "bi", "layer": lstm, "merge_mode": "concat"}, "registered_name": null, "inbound_nodes": [[["block", 1, 0, {}]]]});
        c["config"]["layers"].as_array_mut().unwrap().push(json!({"module": "keras.layers", "class_name": "GRU", "config": {"name": "gru", "units": 3, "time_major": false, "implementation": 2, "reset_after": true}, "registered_name": null, "inbound_nodes": [[["bi", 0, 0, {}]]]}));
        c["config"]["layers"].as_array_mut().unwrap().push(json!({"module": "keras.layers", "class_name": "Embedding", "config": {"name": "emb", "input_dim": 5, "output_dim": 2, "input_length": null, "mask_zero": true}, "registered_name": null, "inbound_nodes": [[["in", 0, 0, {}]]]}));
        let rw = plan(&mut c, Some("2.15.0")).unwrap();
        let got: Vec<(Rule, &str, &str)> = rw
            .iter()
            .filter(|r| {
                r.code != Rule::ModelModule
                    && r.code != Rule::NestedNodeIndex
                    && r.code != Rule::BatchInputShape
            })
            .map(|r| (r.code, r.layer.as_str(), r.key.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (Rule::RnnTimeMajor, "bi/layer", "config.time_major"),
                (
                    Rule::OrthogonalInitializer,
                    "bi/layer",
                    "config.recurrent_initializer.class_name"
                ),
                (Rule::RnnTimeMajor, "gru", "config.time_major"),
                (Rule::GruImplementation, "gru", "config.implementation"),
                (Rule::EmbeddingInputLength, "emb", "config.input_length"),
            ]
        );
        let inner = &c["config"]["layers"][2]["config"]["layer"]["config"];
        // An LSTM keeps its implementation (Keras 3 takes it); the
        // initializer keeps its arguments and shared_object_id.
        assert_eq!(inner["implementation"], 2);
        assert_eq!(
            inner["recurrent_initializer"]["class_name"],
            "OrthogonalInitializer"
        );
        assert_eq!(inner["recurrent_initializer"]["shared_object_id"], 7);
        assert_eq!(plan(&mut c, Some("2.15.0")).unwrap(), vec![], "idempotent");

        let mut c = tf215_nested();
        c["config"]["layers"][2] = json!({"module": "keras.layers", "class_name": "GRU", "config": {"name": "gru", "time_major": true}, "registered_name": null, "inbound_nodes": []});
        assert!(plan(&mut c, Some("2.15.0"))
            .unwrap_err()
            .reason
            .contains("batch-major"));
    }

    #[test]
    fn a_false_flag_is_dropped_and_a_true_one_refused() {
        let mut cfg = json!({"name": "enc", "num_tokens": 3, "sparse": false});
        let mut out = Vec::new();
        category_encoding_sparse(cfg.as_object_mut().unwrap(), "enc", &mut out).unwrap();
        assert_eq!(cfg, json!({"name": "enc", "num_tokens": 3}));
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].code, out[0].key.as_str(), &out[0].old, &out[0].new),
            (
                Rule::CategoryEncodingSparse,
                "config.sparse",
                &json!(false),
                &None
            )
        );
        let mut cfg = json!({"name": "enc", "sparse": true});
        let err =
            category_encoding_sparse(cfg.as_object_mut().unwrap(), "enc", &mut out).unwrap_err();
        assert_eq!(err.layer, "enc");
        assert!(err.reason.contains("sparse true"), "{}", err.reason);
        assert_eq!(
            cfg["sparse"],
            json!(true),
            "a refused config is left as it was"
        );
        let mut cfg = json!({"name": "lstm"});
        rnn_time_major("LSTM", cfg.as_object_mut().unwrap(), "lstm", &mut out).unwrap();
        assert_eq!(out.len(), 1, "no key, no rewrite");
    }

    #[test]
    fn registered_custom_layers_pass_and_their_inner_keras_layers_migrate() {
        let mut c = tf215_nested();
        c["config"]["layers"][2] = json!({"module": "fixture_layers", "class_name": "Scaler", "config": {
            "name": "scaler",
            "norm": {"module": "keras.layers", "class_name": "Normalization", "config": {"name": "n", "batch_input_shape": [null, 4], "axis": [-1]}, "registered_name": null},
            "factor": 2.0
        }, "registered_name": "krepair_fixtures>Scaler", "inbound_nodes": [[["block", 1, 0, {}]]]});
        let rw = plan(&mut c, Some("2.15.0")).unwrap();
        assert!(rw
            .iter()
            .any(|r| r.code == Rule::BatchInputShape && r.layer == "scaler/norm"));
    }
}
