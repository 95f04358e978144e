//! The node indices of calls to a model nested in a tf.keras Functional
//! (rule `nested-node-index`): tf.keras gives a nested Functional, or a
//! Sequential built on its own InputLayer, a node 0 of its own; Keras 3
//! does not, so every reference to its calls moves down by one.

use serde_json::Value;

use super::{child_path, Refusal, Rewrite};
use crate::plan::Rule;

/// A model nested in a Functional, as far as its node numbering goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Nested {
    /// A Sequential whose first layer is an InputLayer: tf.keras gives it
    /// a node 0 of its own (`_should_skip_first_node`).
    Sequential,
    /// A Sequential without one: tf.keras numbers its calls from 0.
    SequentialWithoutInput,
    /// A Functional: always built on InputLayers, so tf.keras gives it a
    /// node 0 of its own too.
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
/// a nested Functional, or of a nested Sequential built on its own
/// InputLayer, down by one (node 1 becomes node 0, ...). A nested
/// Sequential without an InputLayer is refused for now.
pub(super) fn renumber_nested_calls(
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
            // Verified for both in Keras 3.0.5, 3.13.2 and 3.15.1: the old
            // index hangs 3.0.5 and 3.13.2 and is refused by 3.15.1.
            Nested::Sequential | Nested::Functional => {}
            Nested::SequentialWithoutInput => {
                return Err(Refusal {
                    layer: owner.to_string(),
                    reason: format!("it calls `{target}`, a Sequential without an InputLayer: how tf.keras numbered its calls is not verified yet"),
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
            code: Rule::NestedNodeIndex,
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
