//! The layer rules: the walk over a config's layer entries (`visit`:
//! models, registered custom layers and the Keras layers inside them,
//! wrapped layers) and what each class in [`KNOWN_LAYERS`] needs rewritten
//! for Keras 3 (`batch_input_shape`, a CategoryEncoding's `sparse`, a
//! one-element axis list, `groups`, `time_major`, Orthogonal initializers,
//! mixed-precision policies, ...). A model's own rules (its module, its
//! nested calls, its encoded Discretizations) run from here too.

use serde_json::{Map, Value};

use super::discretization_encoding::split_encoded_discretizations;
use super::keyword_tensors::keyword_tensors;
use super::layer_table::{layer_class, migrated_classes, LayerClass, Replacement};
use super::nested_nodes::renumber_nested_calls;
use super::tf_ops::{is_tf_op_lambda, tf_op_arithmetic};
use super::{child_path, Refusal, Rewrite};
use crate::plan::Rule;

/// Model classes: their configs hold `layers`.
pub(super) const MODELS: &[&str] = &["Functional", "Sequential", "Model"];

fn is_engine_module(m: &str) -> bool {
    m.starts_with("keras.engine.")
        || m.starts_with("keras.src.engine.")
        || m.starts_with("tf_keras.src.engine.")
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
    let known = (module == "keras.layers")
        .then(|| layer_class(&class))
        .flatten();
    let Some(known) = known else {
        return Err(Refusal {
            layer: path.to_string(),
            reason: format!(
                "no migration rule for `{module}.{class}` yet (docs/layers.md lists the {} classes krepair migrate knows)",
                migrated_classes().count()
            ),
        });
    };
    if let Some(why) = &known.refuse {
        return Err(Refusal {
            layer: path.to_string(),
            reason: format!("`{class}` is not migrated: {why}"),
        });
    }
    if let Some(r) = &known.replacement {
        replace_class(entry, &class, r, path, out);
    }
    if known.code_rules.contains(&Rule::AttentionBuildShapes) {
        attention_build_shapes(entry, path, out);
    }
    if known.code_rules.contains(&Rule::DotBuildConfig) {
        if let Some(old) = entry
            .as_object_mut()
            .and_then(|e| e.shift_remove("build_config"))
        {
            out.push(Rewrite {
                code: Rule::DotBuildConfig,
                layer: path.to_string(),
                key: "build_config".into(),
                old,
                new: None,
            });
        }
    }
    let class = entry["class_name"].as_str().unwrap_or("").to_string();
    let Some(cfg) = entry.get_mut("config").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    layer_rules(&class, known, cfg, path, out)
}

/// A MultiHeadAttention's `query_shape`, `value_shape` and `key_shape`
/// leave its config for its `build_config`, as the `shapes_dict` Keras 3
/// builds it from (rule `attention-build-shapes`).
fn attention_build_shapes(entry: &mut Value, path: &str, out: &mut Vec<Rewrite>) {
    let Some(cfg) = entry.get_mut("config").and_then(Value::as_object_mut) else {
        return;
    };
    let mut shapes = Map::new();
    for key in ["query_shape", "value_shape", "key_shape"] {
        if let Some(v) = cfg.shift_remove(key) {
            if !v.is_null() {
                shapes.insert(key.into(), v);
            }
        }
    }
    if shapes.is_empty() {
        return;
    }
    let new = serde_json::json!({ "shapes_dict": shapes });
    let old = entry.get("build_config").cloned().unwrap_or(Value::Null);
    out.push(Rewrite {
        code: Rule::AttentionBuildShapes,
        layer: path.to_string(),
        key: "build_config".into(),
        old,
        new: Some(new.clone()),
    });
    entry["build_config"] = new;
}

/// A class Keras 3 does not have becomes the class `become` names: the
/// keys it keeps, renames and sets (rule `r.rule`).
fn replace_class(
    entry: &mut Value,
    class: &str,
    r: &Replacement,
    path: &str,
    out: &mut Vec<Rewrite>,
) {
    let old_cfg = entry
        .get("config")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut cfg = Map::new();
    for key in &r.keep {
        if let Some(v) = old_cfg.get(key) {
            cfg.insert(key.clone(), v.clone());
        }
    }
    for (from, to) in &r.rename {
        if let Some(v) = old_cfg.get(from) {
            cfg.insert(to.clone(), v.clone());
        }
    }
    for (k, v) in &r.set {
        cfg.insert(k.clone(), v.clone());
    }
    out.push(Rewrite {
        code: r.rule,
        layer: path.to_string(),
        key: "class_name".into(),
        old: serde_json::json!({"class_name": class, "config": Value::Object(old_cfg)}),
        new: Some(serde_json::json!({"class_name": r.class, "config": Value::Object(cfg.clone())})),
    });
    entry["class_name"] = Value::from(r.class.as_str());
    entry["config"] = Value::Object(cfg);
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
        keyword_tensors(entry, path, out)?;
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

/// The rules over the config of a Keras layer of class `class` at `path`
/// (what the table says of it in `known`), in the order their rewrites
/// are listed.
fn layer_rules(
    class: &str,
    known: &LayerClass,
    cfg: &mut Map<String, Value>,
    path: &str,
    out: &mut Vec<Rewrite>,
) -> Result<(), Refusal> {
    if class != "InputLayer" {
        drop_key(cfg, "batch_input_shape", Rule::BatchInputShape, path, out);
    }
    hard_sigmoid(class, cfg, path)?;
    for (key, d) in known.drop.iter() {
        drop_if(cfg, key, |v| d.when.admits(v), d.rule, path, out).map_err(|v| Refusal {
            layer: path.to_string(),
            reason: format!(
                "{class} with {key} {v}: {}",
                d.otherwise
                    .as_deref()
                    .unwrap_or("Keras 3 has no such argument")
            ),
        })?;
    }
    for (from, r) in known.rename.iter() {
        rename_key(cfg, from, &r.to, r.rule, path, out);
    }
    if known.code_rules.contains(&Rule::OneElementAxis) {
        one_element_axis(cfg, path, out)?;
    }
    let int_mode = cfg.get("output_mode").is_none_or(|m| m == "int");
    if known.code_rules.contains(&Rule::DiscretizationDtype) && int_mode {
        drop_if(
            cfg,
            "dtype",
            |d| d == "int64",
            Rule::DiscretizationDtype,
            path,
            out,
        )
        .ok();
    }
    orthogonal_initializers(cfg, path, out);
    nested_layers(cfg, path, out)?;
    dtype_policy(cfg, path, out);
    Ok(())
}

/// tf.keras's `hard_sigmoid` is clip(0.2 x + 0.5, 0, 1) and Keras 3's
/// relu6(x + 3) / 6: a layer that names it as an activation (a ConvLSTM's
/// default recurrent_activation) is refused, no Keras 3 activation
/// computing tf.keras's.
fn hard_sigmoid(class: &str, cfg: &Map<String, Value>, path: &str) -> Result<(), Refusal> {
    let named = cfg
        .iter()
        .find(|(k, v)| k.ends_with("activation") && v.as_str() == Some("hard_sigmoid"));
    match named {
        Some((key, _)) => Err(Refusal {
            layer: path.to_string(),
            reason: format!(
                "{class} with {key} \"hard_sigmoid\": tf.keras's hard_sigmoid is clip(0.2 x + 0.5, 0, 1), Keras 3's is relu6(x + 3) / 6, and no Keras 3 activation computes tf.keras's"
            ),
        }),
        None => Ok(()),
    }
}

/// The layer entries a wrapper or RNN holds in its config (`layer`,
/// `backward_layer`, `cell`, or the list `cells`), each migrated as a
/// layer of its own at `path/key` (`path/cells/i`).
fn nested_layers(
    cfg: &mut Map<String, Value>,
    path: &str,
    out: &mut Vec<Rewrite>,
) -> Result<(), Refusal> {
    let is_entry = |v: &Value| v.get("class_name").is_some() && v.get("config").is_some();
    for key in ["layer", "backward_layer", "cell"] {
        if let Some(inner) = cfg.get_mut(key).filter(|v| is_entry(v)) {
            visit(inner, &format!("{path}/{key}"), out)?;
        }
    }
    if let Some(Value::Array(cells)) = cfg.get_mut("cells") {
        for (i, c) in cells.iter_mut().enumerate().filter(|(_, c)| is_entry(c)) {
            visit(c, &format!("{path}/cells/{i}"), out)?;
        }
    }
    Ok(())
}

/// Rename `from` to `to` in the layer config at `path`, when it is there
/// (rule `rule`); the key keeps its place.
fn rename_key(
    cfg: &mut Map<String, Value>,
    from: &str,
    to: &str,
    rule: Rule,
    path: &str,
    out: &mut Vec<Rewrite>,
) {
    let Some(v) = cfg.get(from).cloned() else {
        return;
    };
    out.push(Rewrite {
        code: rule,
        layer: path.to_string(),
        key: format!("config.{from}"),
        old: serde_json::json!({ from: v.clone() }),
        new: Some(serde_json::json!({ to: v })),
    });
    *cfg = std::mem::take(cfg)
        .into_iter()
        .map(|(k, v)| {
            if k == from {
                (to.to_string(), v)
            } else {
                (k, v)
            }
        })
        .collect();
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

/// Every `Orthogonal` initializer with tf.keras's defaults (gain 1.0, no
/// seed) in the layer config at `path` becomes the name `"orthogonal"`,
/// which every Keras 3 resolves to its orthogonal initializer with those
/// defaults (3.0.5 knows no class `Orthogonal`, keras-nightly 3.16 no
/// `OrthogonalInitializer`). One with other arguments stays as it is.
fn orthogonal_initializers(cfg: &mut Map<String, Value>, path: &str, out: &mut Vec<Rewrite>) {
    for (key, v) in cfg.iter_mut() {
        let orthogonal = v.get("module").and_then(Value::as_str) == Some("keras.initializers")
            && v.get("class_name").and_then(Value::as_str) == Some("Orthogonal");
        let defaults = v.get("config").and_then(Value::as_object).is_some_and(|c| {
            c.iter().all(|(k, a)| match k.as_str() {
                "gain" => a.as_f64() == Some(1.0),
                "seed" => a.is_null(),
                _ => false,
            })
        });
        if orthogonal && defaults {
            let new = Value::from("orthogonal");
            out.push(Rewrite {
                code: Rule::OrthogonalInitializer,
                layer: path.to_string(),
                key: format!("config.{key}"),
                old: v.clone(),
                new: Some(new.clone()),
            });
            *v = new;
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
                    "config.recurrent_initializer"
                ),
                (Rule::RnnTimeMajor, "gru", "config.time_major"),
                (Rule::GruImplementation, "gru", "config.implementation"),
                (Rule::EmbeddingInputLength, "emb", "config.input_length"),
            ]
        );
        let inner = &c["config"]["layers"][2]["config"]["layer"]["config"];
        // An LSTM keeps its implementation (Keras 3 takes it); the
        // initializer with tf.keras's defaults becomes the name.
        assert_eq!(inner["implementation"], 2);
        assert_eq!(inner["recurrent_initializer"], "orthogonal");
        assert_eq!(plan(&mut c, Some("2.15.0")).unwrap(), vec![], "idempotent");

        let mut c = tf215_nested();
        c["config"]["layers"][2] = json!({"module": "keras.layers", "class_name": "GRU", "config": {"name": "gru", "time_major": true}, "registered_name": null, "inbound_nodes": []});
        assert!(plan(&mut c, Some("2.15.0"))
            .unwrap_err()
            .reason
            .contains("batch-major"));
    }

    /// The table's rules for `class` over `cfg` at path `p`.
    fn rules(class: &str, cfg: &mut Value, p: &str, out: &mut Vec<Rewrite>) -> Result<(), Refusal> {
        let known = layer_class(class).expect("in the table");
        layer_rules(class, known, cfg.as_object_mut().unwrap(), p, out)
    }

    #[test]
    fn a_false_flag_is_dropped_and_a_true_one_refused() {
        let mut cfg = json!({"name": "enc", "num_tokens": 3, "sparse": false});
        let mut out = Vec::new();
        rules("CategoryEncoding", &mut cfg, "enc", &mut out).unwrap();
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
        let err = rules("CategoryEncoding", &mut cfg, "enc", &mut out).unwrap_err();
        assert_eq!(err.layer, "enc");
        assert!(err.reason.contains("sparse true"), "{}", err.reason);
        assert_eq!(
            cfg["sparse"],
            json!(true),
            "a refused config is left as it was"
        );
        let mut cfg = json!({"name": "lstm"});
        rules("LSTM", &mut cfg, "lstm", &mut out).unwrap();
        assert_eq!(out.len(), 1, "no key, no rewrite");
        // A transposed convolution's groups: 1 goes, 2 is refused.
        let mut cfg = json!({"name": "up", "filters": 2, "groups": 1});
        rules("Conv2DTranspose", &mut cfg, "up", &mut out).unwrap();
        assert_eq!(cfg, json!({"name": "up", "filters": 2}));
        assert_eq!(out.last().unwrap().code, Rule::ConvGroups);
        let mut cfg = json!({"name": "up", "groups": 2});
        let err = rules("Conv2DTranspose", &mut cfg, "up", &mut out).unwrap_err();
        assert!(
            err.reason.contains("no grouped transposed"),
            "{}",
            err.reason
        );
    }

    #[test]
    fn a_renamed_argument_keeps_its_place() {
        let mut cfg = json!({"name": "lr", "alpha": 0.2, "trainable": true});
        let mut out = Vec::new();
        rules("LeakyReLU", &mut cfg, "lr", &mut out).unwrap();
        let keys: Vec<&str> = cfg
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["name", "negative_slope", "trainable"]);
        assert_eq!(cfg["negative_slope"], 0.2);
        assert_eq!(out[0].code, Rule::RenamedArgument);
    }

    #[test]
    fn a_class_keras_3_lacks_becomes_its_exact_equivalent() {
        let mut c = tf215_nested();
        c["config"]["layers"][2] = json!({"module": "keras.layers", "class_name": "ThresholdedReLU", "config": {"name": "thr", "trainable": true, "dtype": "float32", "theta": 0.3}, "registered_name": null, "inbound_nodes": [[["block", 1, 0, {}]]]});
        let rw = plan(&mut c, Some("2.15.0")).unwrap();
        assert!(rw
            .iter()
            .any(|r| r.code == Rule::ThresholdedRelu && r.layer == "thr"));
        let l = &c["config"]["layers"][2];
        assert_eq!(l["class_name"], "ReLU");
        assert_eq!(
            l["config"],
            json!({"name": "thr", "trainable": true, "dtype": "float32", "threshold": 0.3, "negative_slope": 0.0, "max_value": null})
        );
        assert_eq!(plan(&mut c, Some("2.15.0")).unwrap(), vec![], "idempotent");
        // Augmentation Keras 3 lacks is the identity it is at inference.
        c["config"]["layers"][2] = json!({"module": "keras.layers", "class_name": "RandomWidth", "config": {"name": "rw", "trainable": true, "dtype": "float32", "factor": 0.2, "interpolation": "bilinear", "seed": null}, "registered_name": null, "inbound_nodes": [[["block", 1, 0, {}]]]});
        let rw = plan(&mut c, Some("2.15.0")).unwrap();
        assert!(rw.iter().any(|r| r.code == Rule::AugmentationIdentity));
        assert_eq!(c["config"]["layers"][2]["class_name"], "Identity");
        assert_eq!(
            c["config"]["layers"][2]["config"],
            json!({"name": "rw", "trainable": true, "dtype": "float32"})
        );
    }

    #[test]
    fn refused_classes_and_activations_say_why() {
        let mut c = tf215_nested();
        c["config"]["layers"][2] = json!({"module": "keras.layers", "class_name": "Lambda", "config": {"name": "lam"}, "registered_name": null, "inbound_nodes": []});
        let e = plan(&mut c, Some("2.15.0")).unwrap_err();
        assert_eq!(e.layer, "lam");
        assert!(e.reason.contains("bytecode"), "{}", e.reason);
        c["config"]["layers"][2] = json!({"module": "keras.layers", "class_name": "ConvLSTM2D", "config": {"name": "cl", "activation": "tanh", "recurrent_activation": "hard_sigmoid"}, "registered_name": null, "inbound_nodes": []});
        let e = plan(&mut c, Some("2.15.0")).unwrap_err();
        assert!(
            e.reason.contains("recurrent_activation \"hard_sigmoid\""),
            "{}",
            e.reason
        );
        c["config"]["layers"][2] = json!({"module": "keras.layers", "class_name": "NoSuchLayer", "config": {"name": "x"}, "registered_name": null, "inbound_nodes": []});
        let e = plan(&mut c, Some("2.15.0")).unwrap_err();
        assert!(e.reason.contains("docs/layers.md"), "{}", e.reason);
    }

    #[test]
    fn cells_and_wrapped_layers_are_layers_of_their_own() {
        let orth = json!({"module": "keras.initializers", "class_name": "Orthogonal", "config": {"gain": 1.0, "seed": null}, "registered_name": null});
        let mut cfg = json!({"name": "rnn", "time_major": false, "cell": {"module": "keras.layers", "class_name": "StackedRNNCells", "config": {"name": "s", "cells": [
            {"module": "keras.layers", "class_name": "GRUCell", "config": {"name": "g", "implementation": 2, "recurrent_initializer": orth}, "registered_name": null},
            {"module": "keras.layers", "class_name": "Lambda", "config": {"name": "l"}, "registered_name": null}
        ]}, "registered_name": null}});
        let mut out = Vec::new();
        let mut refused = cfg.clone();
        let e = rules("RNN", &mut refused, "rnn", &mut out).unwrap_err();
        assert_eq!(e.layer, "rnn/cell/cells/1");
        cfg["cell"]["config"]["cells"].as_array_mut().unwrap().pop();
        out.clear();
        rules("RNN", &mut cfg, "rnn", &mut out).unwrap();
        let got: Vec<(Rule, &str)> = out.iter().map(|r| (r.code, r.layer.as_str())).collect();
        assert_eq!(
            got,
            [
                (Rule::RnnTimeMajor, "rnn"),
                (Rule::OrthogonalInitializer, "rnn/cell/cells/0"),
            ]
        );
        assert_eq!(
            cfg["cell"]["config"]["cells"][0]["config"]["recurrent_initializer"],
            "orthogonal"
        );
    }

    #[test]
    fn an_orthogonal_initializer_with_other_arguments_stays() {
        let mut cfg = json!({"name": "d", "kernel_initializer": {"module": "keras.initializers", "class_name": "Orthogonal", "config": {"gain": 2.0, "seed": null}, "registered_name": null}});
        let before = cfg.clone();
        let mut out = Vec::new();
        rules("Dense", &mut cfg, "d", &mut out).unwrap();
        assert_eq!((cfg, out.len()), (before, 0));
    }

    #[test]
    fn attention_shapes_move_to_build_config_and_dot_loses_its_own() {
        let mut c = tf215_nested();
        c["config"]["layers"][2] = json!({"module": "keras.layers", "class_name": "MultiHeadAttention", "config": {"name": "mha", "num_heads": 2, "key_dim": 3, "query_shape": [null, 4, 6], "key_shape": [null, 5, 6], "value_shape": [null, 5, 6], "softmax_robust_masking": false}, "registered_name": null, "build_config": {"input_shape": [null, 4, 6]}, "inbound_nodes": [[["block", 1, 0, {}]]]});
        plan(&mut c, Some("2.15.0")).unwrap();
        let l = &c["config"]["layers"][2];
        assert_eq!(
            l["config"],
            json!({"name": "mha", "num_heads": 2, "key_dim": 3})
        );
        assert_eq!(
            l["build_config"],
            json!({"shapes_dict": {"query_shape": [null, 4, 6], "value_shape": [null, 5, 6], "key_shape": [null, 5, 6]}})
        );
        c["config"]["layers"][2] = json!({"module": "keras.layers", "class_name": "Dot", "config": {"name": "dot", "axes": 1}, "registered_name": null, "build_config": {"input_shape": [[null, 4], [null, 4]]}, "inbound_nodes": [[["block", 1, 0, {}], ["block", 1, 0, {}]]]});
        let rw = plan(&mut c, Some("2.15.0")).unwrap();
        assert!(rw.iter().any(|r| r.code == Rule::DotBuildConfig));
        assert!(c["config"]["layers"][2].get("build_config").is_none());
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
