//! The tf.keras 2.x to Keras 3 migration pass over `config.json` (pure: a
//! JSON tree in, rewrites and a refusal out; no files).
//!
//! This is the first slice of `krepair migrate` (issue #10): archives
//! written by tf.keras 2.15 whose layers are in [`KNOWN_LAYERS`] (and
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

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plan::Version;

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
    "Multiply",
    "Concatenate",
];

/// Model classes: their configs hold `layers`.
const MODELS: &[&str] = &["Functional", "Sequential", "Model"];

/// One rewrite of the config, with its evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rewrite {
    /// Stable code (see [`RULES`]).
    #[serde(deserialize_with = "crate::report::intern")]
    pub code: crate::report::StaticStr,
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

/// Every rewrite code, with why it is needed (docs/migration.md has the
/// same list with the Keras source lines; a test keeps them in step).
pub const RULES: &[(&str, &str)] = &[
    ("model-module", "tf.keras writes the module of a model class as keras.src.engine.* (keras.engine.* in 2.12), which no Keras 3 can import; Keras 3 keeps Functional in keras.src.models.functional and Sequential in keras.src.models.sequential"),
    ("batch-input-shape", "tf.keras writes batch_input_shape into the config of a layer that was given an input shape; Keras 3's Layer.__init__ accepts only input_shape and input_dim and raises on any other keyword (InputLayer keeps it: it reads batch_input_shape itself)"),
    ("dtype-policy", "tf.keras serializes a mixed-precision policy as keras.mixed_precision Policy; Keras 3 reads that as a plain string dtype and fails (3.15) or loses the policy; it is a keras DTypePolicy"),
    ("one-element-axis", "tf.keras BatchNormalization normalizes its axis to a list at build time and writes it so ([3]); Keras 3's BatchNormalization takes one int (self.axis = int(axis)) and fails on the list"),
    ("depthwise-groups", "tf.keras DepthwiseConv2D inherits groups from its convolution base and writes groups: 1; Keras 3's DepthwiseConv2D has no groups argument, so Layer.__init__ rejects it"),
    ("nested-node-index", "tf.keras gives a Sequential built on its own InputLayer a node 0 of its own, so its first call inside a Functional is node 1; in Keras 3 it is node 0, and the old index makes Keras 3.15 reject the graph (3.0.5 can loop forever)"),
];

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
/// `keras_version`. Returns the rewrites made, in config order.
pub fn plan(config: &mut Value, keras_version: Option<&str>) -> Result<Vec<Rewrite>, Refusal> {
    let refuse = |layer: &str, reason: String| Refusal {
        layer: layer.to_string(),
        reason,
    };
    match keras_version.and_then(Version::parse) {
        Some(Version(2, 15)) => {}
        Some(Version(2, m)) => {
            return Err(refuse(
                "",
                format!("saved by tf.keras 2.{m}: krepair migrate handles tf.keras 2.15 archives so far (2.12-2.14 number their weights differently, keras #18830)"),
            ))
        }
        _ => return Ok(Vec::new()),
    }
    if config
        .get("compile_config")
        .is_some_and(|c| !c.is_null() && c.as_object().is_none_or(|o| !o.is_empty()))
    {
        return Err(refuse(
            "",
            "the model was saved compiled: migrating its optimizer and losses is not done yet (load it with compile=False after a migration of the uncompiled model)".into(),
        ));
    }
    let mut out = Vec::new();
    visit(config, "", &mut out)?;
    Ok(out)
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

fn is_engine_module(m: &str) -> bool {
    m.starts_with("keras.engine.") || m.starts_with("keras.src.engine.")
}

/// A layer entry (a model, a layer, or a layer config nested in a custom
/// layer's config) at `path`.
fn visit(entry: &mut Value, path: &str, out: &mut Vec<Rewrite>) -> Result<(), Refusal> {
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
        let from_tf_keras = is_engine_module(&module);
        if from_tf_keras {
            let new = if class == "Sequential" {
                "keras.src.models.sequential"
            } else {
                "keras.src.models.functional"
            };
            out.push(Rewrite {
                code: "model-module",
                layer: path.to_string(),
                key: "module".into(),
                old: Value::from(module.clone()),
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
        return Ok(());
    }
    if custom {
        if registered.is_none() {
            return Err(Refusal {
                layer: path.to_string(),
                reason: format!("class `{class}` from module `{module}` is not registered (register_keras_serializable), so no Keras can find it"),
            });
        }
        // Its own code reads its config; the Keras layers it serializes
        // inside are migrated like any other.
        if let Some(cfg) = entry.get_mut("config").and_then(Value::as_object_mut) {
            for (key, v) in cfg.iter_mut() {
                if v.get("class_name").is_some() && v.get("config").is_some() {
                    visit(v, &format!("{path}/{key}"), out)?;
                }
            }
        }
        return Ok(());
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
    if class != "InputLayer" {
        if let Some(old) = cfg.shift_remove("batch_input_shape") {
            out.push(Rewrite {
                code: "batch-input-shape",
                layer: path.to_string(),
                key: "config.batch_input_shape".into(),
                old,
                new: None,
            });
        }
    }
    if class == "BatchNormalization" {
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
                code: "one-element-axis",
                layer: path.to_string(),
                key: "config.axis".into(),
                old,
                new: Some(one),
            });
        }
    }
    if class == "DepthwiseConv2D" {
        match cfg.get("groups") {
            None => {}
            Some(g) if g.as_i64() == Some(1) => {
                let old = cfg.shift_remove("groups").unwrap_or(Value::Null);
                out.push(Rewrite {
                    code: "depthwise-groups",
                    layer: path.to_string(),
                    key: "config.groups".into(),
                    old,
                    new: None,
                });
            }
            Some(g) => {
                return Err(Refusal {
                    layer: path.to_string(),
                    reason: format!(
                        "DepthwiseConv2D with groups {g}: Keras 3 has no such argument"
                    ),
                })
            }
        }
    }
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
                code: "dtype-policy",
                layer: path.to_string(),
                key: "config.dtype".into(),
                old: d.clone(),
                new: Some(new.clone()),
            });
            *d = new;
        }
    }
    Ok(())
}

/// A model nested in a Functional, as far as its node numbering goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Nested {
    /// A Sequential whose first layer is an InputLayer: tf.keras gives it
    /// a node 0 of its own (`_should_skip_first_node`).
    Sequential,
    /// A Sequential without one: tf.keras numbers its calls from 0.
    SequentialWithoutInput,
    /// A Functional.
    Functional,
}

/// Is this layer entry a model, and which kind?
fn nested_kind(l: &Value) -> Option<Nested> {
    let class = l.get("class_name")?.as_str()?;
    let layers = l.get("config")?.get("layers")?.as_array()?;
    match class {
        "Functional" | "Model" => Some(Nested::Functional),
        "Sequential" => Some(
            if layers
                .first()
                .and_then(|f| f.get("class_name"))
                .and_then(Value::as_str)
                == Some("InputLayer")
            {
                Nested::Sequential
            } else {
                Nested::SequentialWithoutInput
            },
        ),
        _ => None,
    }
}

/// In a tf.keras Functional config, shift every reference to the calls of
/// a nested Sequential built on its own InputLayer down by one (node 1
/// becomes node 0, ...). Other nested models are refused for now.
fn renumber_nested_calls(
    model: &mut Value,
    path: &str,
    out: &mut Vec<Rewrite>,
) -> Result<(), Refusal> {
    let cfg = &mut model["config"];
    let mut nested = std::collections::HashMap::new();
    for l in cfg["layers"].as_array().into_iter().flatten() {
        if let (Some(own), Some(name)) = (
            nested_kind(l),
            l.get("config")
                .and_then(|c| c.get("name"))
                .and_then(Value::as_str),
        ) {
            nested.insert(name.to_string(), own);
        }
    }
    if nested.is_empty() {
        return Ok(());
    }
    let fix = |r: &mut Value,
               owner: &str,
               key: String,
               out: &mut Vec<Rewrite>|
     -> Result<(), Refusal> {
        let Some(a) = r.as_array_mut() else {
            return Ok(());
        };
        let Some(target) = a.first().and_then(Value::as_str).map(str::to_string) else {
            return Ok(());
        };
        let Some(&own) = nested.get(&target) else {
            return Ok(());
        };
        match own {
            Nested::Sequential => {}
            Nested::SequentialWithoutInput => {
                return Err(Refusal {
                    layer: owner.to_string(),
                    reason: format!("it calls `{target}`, a Sequential without an InputLayer: how tf.keras numbered its calls is not verified yet"),
                })
            }
            Nested::Functional => {
                return Err(Refusal {
                    layer: owner.to_string(),
                    reason: format!("it calls `{target}`, a nested Functional: Keras 3 versions number its calls differently (3.3+ assume a built-in node, keras/src/models/functional.py:664), not verified yet"),
                })
            }
        }
        let Some(idx) = a.get(1).and_then(Value::as_u64) else {
            return Err(Refusal {
                layer: owner.to_string(),
                reason: format!("a reference to `{target}` without a node index"),
            });
        };
        if idx == 0 {
            return Err(Refusal {
                layer: owner.to_string(),
                reason: format!(
                    "it calls `{target}` at node 0, which tf.keras gives to the model's own inputs"
                ),
            });
        }
        out.push(Rewrite {
            code: "nested-node-index",
            layer: owner.to_string(),
            key,
            old: Value::from(idx),
            new: Some(Value::from(idx - 1)),
        });
        a[1] = Value::from(idx - 1);
        Ok(())
    };
    if let Some(layers) = cfg.get_mut("layers").and_then(Value::as_array_mut) {
        for l in layers.iter_mut() {
            let owner = child_path(path, l);
            let Some(nodes) = l.get_mut("inbound_nodes").and_then(Value::as_array_mut) else {
                continue;
            };
            for (i, node) in nodes.iter_mut().enumerate() {
                let Some(refs) = node.as_array_mut() else {
                    continue;
                };
                for (j, r) in refs.iter_mut().enumerate() {
                    fix(r, &owner, format!("inbound_nodes[{i}][{j}][1]"), out)?;
                }
            }
        }
    }
    for key in ["input_layers", "output_layers"] {
        if let Some(refs) = cfg.get_mut(key).and_then(Value::as_array_mut) {
            for (j, r) in refs.iter_mut().enumerate() {
                fix(r, path, format!("config.{key}[{j}][1]"), out)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dense(name: &str, inbound: Value) -> Value {
        json!({"module": "keras.layers", "class_name": "Dense", "config": {"name": name, "units": 2, "dtype": "float32", "batch_input_shape": [null, 4]}, "registered_name": null, "name": name, "inbound_nodes": inbound})
    }

    fn input(name: &str) -> Value {
        json!({"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_input_shape": [null, 4], "dtype": "float32", "sparse": false, "ragged": false, "name": name}, "registered_name": null, "name": name, "inbound_nodes": []})
    }

    fn tf215_nested() -> Value {
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

    #[test]
    fn a_tf_keras_2_15_model_is_rewritten_by_each_rule_once() {
        let mut c = tf215_nested();
        let rw = plan(&mut c, Some("2.15.0")).unwrap();
        let codes: Vec<(&str, &str, &str)> = rw
            .iter()
            .map(|r| (r.code, r.layer.as_str(), r.key.as_str()))
            .collect();
        assert_eq!(
            codes,
            [
                ("model-module", "", "module"),
                ("nested-node-index", "out", "inbound_nodes[0][0][1]"),
                ("batch-input-shape", "block/d1", "config.batch_input_shape"),
                ("batch-input-shape", "out", "config.batch_input_shape"),
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
    fn mixed_precision_policies_become_dtype_policies() {
        let mut c = tf215_nested();
        c["config"]["layers"][2]["config"]["dtype"] = json!({"module": "keras.mixed_precision", "class_name": "Policy", "config": {"name": "mixed_float16"}, "registered_name": null});
        let rw = plan(&mut c, Some("2.15.0")).unwrap();
        assert!(rw
            .iter()
            .any(|r| r.code == "dtype-policy" && r.layer == "out"));
        assert_eq!(
            c["config"]["layers"][2]["config"]["dtype"],
            json!({"module": "keras", "class_name": "DTypePolicy", "config": {"name": "mixed_float16"}, "registered_name": null})
        );
    }

    #[test]
    fn what_has_no_rule_is_refused_with_the_layer() {
        let mut c = tf215_nested();
        c["config"]["layers"][2]["class_name"] = "Conv3D".into();
        let e = plan(&mut c, Some("2.15.0")).unwrap_err();
        assert_eq!(e.layer, "out");
        assert!(
            e.reason
                .contains("no migration rule for `keras.layers.Conv3D`"),
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

        let mut c = tf215_nested();
        c["config"]["layers"][1]["class_name"] = "Functional".into();
        assert!(plan(&mut c, Some("2.15.0"))
            .unwrap_err()
            .reason
            .contains("nested Functional"));

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
        c["compile_config"] = json!({"optimizer": "adam"});
        assert!(plan(&mut c, Some("2.15.0"))
            .unwrap_err()
            .reason
            .contains("compiled"));

        let mut c = tf215_nested();
        assert!(plan(&mut c, Some("2.13.1"))
            .unwrap_err()
            .reason
            .contains("2.13"));

        let mut c = tf215_nested();
        c["config"]["layers"][2] = json!({"module": "my_layers", "class_name": "Mine", "config": {"name": "out"}, "registered_name": null, "inbound_nodes": []});
        assert!(plan(&mut c, Some("2.15.0"))
            .unwrap_err()
            .reason
            .contains("not registered"));
    }

    #[test]
    fn batch_norm_axes_and_depthwise_groups() {
        let mut c = tf215_nested();
        c["config"]["layers"][2] = json!({"module": "keras.layers", "class_name": "BatchNormalization", "config": {"name": "bn", "axis": [3]}, "registered_name": null, "inbound_nodes": [[["block", 1, 0, {}]]]});
        c["config"]["layers"].as_array_mut().unwrap().push(json!({"module": "keras.layers", "class_name": "DepthwiseConv2D", "config": {"name": "dw", "groups": 1, "kernel_size": [3, 3]}, "registered_name": null, "inbound_nodes": [[["bn", 0, 0, {}]]]}));
        let rw = plan(&mut c, Some("2.15.0")).unwrap();
        assert!(rw.iter().any(|r| r.code == "one-element-axis"
            && r.old == json!([3])
            && r.new == Some(json!(3))));
        assert!(rw
            .iter()
            .any(|r| r.code == "depthwise-groups" && r.layer == "dw"));
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
    fn keras_3_archives_plan_nothing() {
        let mut c = tf215_nested();
        let before = c.clone();
        assert_eq!(plan(&mut c, Some("3.15.1")).unwrap(), vec![]);
        assert_eq!(plan(&mut c, None).unwrap(), vec![]);
        assert_eq!(c, before);
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
            .any(|r| r.code == "batch-input-shape" && r.layer == "scaler/norm"));
    }

    #[test]
    fn every_rule_code_is_listed_once() {
        let mut codes: Vec<&str> = RULES.iter().map(|r| r.0).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), RULES.len());
    }
}
