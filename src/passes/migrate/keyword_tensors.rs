//! Tensors passed to a layer call by keyword (`mha(query, value=v)`):
//! tf.keras writes such a call in the legacy node form, the tensor as a
//! `[layer, node, tensor]` list inside the call's kwargs, which tf.keras's
//! own loader turns back into a tensor (`_deserialize_keras_tensors`).
//! Keras 3 reads the legacy form's kwargs as they are and calls the layer
//! with the list (`deserialize_node`, keras/src/models/functional.py), so
//! the node becomes Keras 3's own form: `{"args": [...], "kwargs": {...}}`
//! with each tensor a `__keras_tensor__` whose `keras_history` Keras 3
//! resolves against the layers it created (`convert_revived_tensor`).

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::{child_path, Refusal, Rewrite};
use crate::plan::Rule;

/// What a tensor a layer of the model outputs needs: its shape when the
/// layer is an InputLayer, its dtype, and whether the layer is a nested
/// model (whose node indices tf.keras counts from 1).
struct Source {
    input_shape: Option<Value>,
    dtype: Value,
    nested: bool,
}

/// Rewrite every node of the Functional `model` at `path` that passes a
/// tensor by keyword (rule `keyword-tensors`).
pub(super) fn keyword_tensors(
    model: &mut Value,
    path: &str,
    out: &mut Vec<Rewrite>,
) -> Result<(), Refusal> {
    let Some(layers) = model["config"]
        .get_mut("layers")
        .and_then(Value::as_array_mut)
    else {
        return Ok(());
    };
    let sources: HashMap<String, Source> = layers.iter().filter_map(source).collect();
    for l in layers.iter_mut() {
        let owner = child_path(path, l);
        let build = l.get("build_config").cloned().unwrap_or(Value::Null);
        let Some(nodes) = l.get_mut("inbound_nodes").and_then(Value::as_array_mut) else {
            continue;
        };
        for (i, node) in nodes.iter_mut().enumerate() {
            if !passes_tensor_by_keyword(node, &sources) {
                continue;
            }
            let new = keras3_node(node, &sources, &build).map_err(|reason| Refusal {
                layer: owner.clone(),
                reason,
            })?;
            out.push(Rewrite {
                code: Rule::KeywordTensors,
                layer: owner.clone(),
                key: format!("inbound_nodes[{i}]"),
                old: node.clone(),
                new: Some(new.clone()),
            });
            *node = new;
        }
    }
    Ok(())
}

/// The name of layer entry `l`, and what a tensor it outputs needs.
fn source(l: &Value) -> Option<(String, Source)> {
    let cfg = l.get("config")?;
    let name = cfg.get("name")?.as_str()?.to_string();
    let is_input = l.get("class_name").and_then(Value::as_str) == Some("InputLayer");
    let input_shape = is_input
        .then(|| {
            cfg.get("batch_input_shape")
                .or_else(|| cfg.get("batch_shape"))
                .cloned()
        })
        .flatten();
    let dtype = cfg
        .get("dtype")
        .filter(|d| d.is_string())
        .cloned()
        .unwrap_or(Value::from("float32"));
    let nested = l.get("config").and_then(|c| c.get("layers")).is_some();
    Some((
        name,
        Source {
            input_shape,
            dtype,
            nested,
        },
    ))
}

/// `v` is tf.keras's reference to a tensor of this model: `[layer, node,
/// tensor]`.
fn tensor_ref<'a>(v: &'a Value, sources: &HashMap<String, Source>) -> Option<(&'a str, &'a Value)> {
    let a = v.as_array()?;
    let name = a.first()?.as_str()?;
    (a.len() == 3 && a[1].is_u64() && a[2].is_u64() && sources.contains_key(name))
        .then_some((name, v))
}

/// A legacy node (a list of `[layer, node, tensor, kwargs]`) whose kwargs
/// hold a tensor reference, or a list of them.
fn passes_tensor_by_keyword(node: &Value, sources: &HashMap<String, Source>) -> bool {
    node.as_array().into_iter().flatten().any(|r| {
        r.get(3).and_then(Value::as_object).is_some_and(|kw| {
            kw.values().any(|v| {
                tensor_ref(v, sources).is_some()
                    || v.as_array().is_some_and(|a| {
                        !a.is_empty() && a.iter().all(|t| tensor_ref(t, sources).is_some())
                    })
            })
        })
    })
}

/// Keras 3's form of the legacy node `node`: its positional tensors (one,
/// or a list of them as Keras 3's legacy reader passes them) and its
/// kwargs, each tensor's shape from the InputLayer it comes from or the
/// layer's `build_config` (`input_shape`, or `{key}_shape` in its
/// `shapes_dict`).
fn keras3_node(
    node: &Value,
    sources: &HashMap<String, Source>,
    build: &Value,
) -> Result<Value, String> {
    let shapes = build.get("shapes_dict").cloned().unwrap_or(Value::Null);
    let refs = node.as_array().expect("checked: a list");
    let mut args = Vec::new();
    let mut kwargs = Map::new();
    for r in refs {
        let a = r
            .as_array()
            .filter(|a| a.len() >= 3)
            .ok_or("a node entry that is not a [layer, node, tensor] list")?;
        let shape = sources
            .get(a.first().and_then(Value::as_str).unwrap_or(""))
            .and_then(|s| s.input_shape.clone())
            .or_else(|| build.get("input_shape").cloned())
            .or_else(|| shapes.get("query_shape").cloned());
        args.push(keras_tensor(
            &Value::Array(a[..3].to_vec()),
            sources,
            shape,
            "the input",
        )?);
        // Keras 3's legacy reader keeps the kwargs of the last entry.
        kwargs = a
            .get(3)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
    }
    for (key, v) in kwargs.iter_mut() {
        let shape = shapes.get(format!("{key}_shape")).cloned();
        if tensor_ref(v, sources).is_some() {
            *v = keras_tensor(v, sources, shape, key)?;
        } else if let Some(list) = v
            .as_array_mut()
            .filter(|a| a.iter().all(|t| tensor_ref(t, sources).is_some()) && !a.is_empty())
        {
            for t in list.iter_mut() {
                *t = keras_tensor(t, sources, None, key)?;
            }
        }
    }
    let args = if args.len() == 1 {
        args
    } else {
        vec![Value::Array(args)]
    };
    Ok(json!({"args": args, "kwargs": kwargs}))
}

/// Keras 3's `__keras_tensor__` for tf.keras's reference `r`. Keras 3
/// replaces it by the tensor its history names; it needs a shape to make
/// the placeholder, taken from `shape` or the InputLayer `r` names.
fn keras_tensor(
    r: &Value,
    sources: &HashMap<String, Source>,
    shape: Option<Value>,
    what: &str,
) -> Result<Value, String> {
    let name = r[0].as_str().unwrap_or("");
    let src = sources
        .get(name)
        .ok_or_else(|| format!("a call on `{name}`, which is no layer of this model"))?;
    if src.nested {
        return Err(format!("a tensor from the nested model `{name}` passed as {what}: how tf.keras numbered that call is not verified yet"));
    }
    let shape = src
        .input_shape
        .clone()
        .or(shape)
        .filter(Value::is_array)
        .ok_or_else(|| {
            format!(
                "a tensor from `{name}` passed as {what}, whose shape the config does not record"
            )
        })?;
    Ok(json!({
        "class_name": "__keras_tensor__",
        "config": {"shape": shape, "dtype": src.dtype, "keras_history": r},
    }))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::plan;
    use super::*;

    /// A Functional calling `mha(q, value=v)` as tf.keras 2.15 writes it.
    fn attention_model(value_from: &str) -> Value {
        let input = |n: &str, shape: Value| json!({"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_input_shape": shape, "dtype": "float32", "name": n}, "registered_name": null, "name": n, "inbound_nodes": []});
        json!({"module": "keras.src.engine.functional", "class_name": "Functional", "config": {
            "name": "m",
            "layers": [
                input("q", json!([null, 4, 6])),
                input("v", json!([null, 5, 6])),
                {"module": "keras.layers", "class_name": "MultiHeadAttention", "config": {"name": "mha", "num_heads": 2, "key_dim": 3, "query_shape": [null, 4, 6], "key_shape": [null, 5, 6], "value_shape": [null, 5, 6]}, "registered_name": null, "build_config": {"input_shape": [null, 4, 6]}, "name": "mha",
                 "inbound_nodes": [[["q", 0, 0, {"value": [value_from, 0, 0], "use_causal_mask": false}]]]}
            ],
            "input_layers": [["q", 0, 0], ["v", 0, 0]],
            "output_layers": [["mha", 0, 0]]
        }, "registered_name": "Functional"})
    }

    #[test]
    fn a_tensor_passed_by_keyword_becomes_a_keras_tensor() {
        let mut c = attention_model("v");
        let rw = plan(&mut c, Some("2.15.0")).unwrap();
        let r = rw.iter().find(|r| r.code == Rule::KeywordTensors).unwrap();
        assert_eq!(
            (r.layer.as_str(), r.key.as_str()),
            ("mha", "inbound_nodes[0]")
        );
        let tensor = |name: &str, shape: Value| json!({"class_name": "__keras_tensor__", "config": {"shape": shape, "dtype": "float32", "keras_history": [name, 0, 0]}});
        assert_eq!(
            c["config"]["layers"][2]["inbound_nodes"][0],
            json!({"args": [tensor("q", json!([null, 4, 6]))], "kwargs": {"value": tensor("v", json!([null, 5, 6])), "use_causal_mask": false}})
        );
        assert_eq!(plan(&mut c, Some("2.15.0")).unwrap(), vec![], "idempotent");
    }

    #[test]
    fn a_malformed_node_is_refused_not_a_panic() {
        let mut c = attention_model("v");
        c["config"]["layers"][2]["inbound_nodes"] =
            json!([[["q", 0], ["v", 0, 0, {"value": ["v", 0, 0]}]]]);
        let e = plan(&mut c, Some("2.15.0")).unwrap_err();
        assert!(e.reason.contains("[layer, node, tensor]"), "{}", e.reason);
        let mut c = attention_model("v");
        c["config"]["layers"][2]["inbound_nodes"] =
            json!([[["nowhere", 0, 0, {"value": ["v", 0, 0]}]]]);
        let e = plan(&mut c, Some("2.15.0")).unwrap_err();
        assert!(e.reason.contains("no layer of this model"), "{}", e.reason);
    }

    #[test]
    fn a_list_that_names_no_layer_is_left_alone() {
        let mut c = attention_model("not_a_layer");
        let before = c["config"]["layers"][2]["inbound_nodes"].clone();
        let rw = plan(&mut c, Some("2.15.0")).unwrap();
        assert!(rw.iter().all(|r| r.code != Rule::KeywordTensors));
        assert_eq!(c["config"]["layers"][2]["inbound_nodes"], before);
    }
}
