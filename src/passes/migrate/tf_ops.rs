//! tf.keras `TFOpLambda` layers (a TensorFlow op applied to Keras
//! tensors), which Keras 3 does not have: [`tf_op_layer`] gives the Keras
//! 3 layer that computes the same float32 values to the bit (rule
//! `tf-op-arithmetic`), or why there is none.

use serde_json::Value;

use super::{Refusal, Rewrite};
use crate::plan::Rule;

/// Is this layer entry a tf.keras `TFOpLambda` (a TensorFlow op applied to
/// Keras tensors)? tf.keras 2.13+ writes its module, 2.12 none.
pub(super) fn is_tf_op_lambda(entry: &Value) -> bool {
    entry.get("class_name").and_then(Value::as_str) == Some("TFOpLambda")
        && entry
            .get("module")
            .and_then(Value::as_str)
            .is_none_or(|m| m.ends_with("layers.core.tf_op_layer"))
}

/// A `TFOpLambda` argument: a Keras tensor (`[layer, node, tensor]`), or a
/// number.
enum OpArg {
    Tensor(Value),
    Number(f64),
}

/// The rule `tf-op-arithmetic`: the `TFOpLambda` entry at `path` becomes
/// the Keras 3 layer [`tf_op_layer`] gives, or is refused with its reason.
pub(super) fn tf_op_arithmetic(
    entry: &mut Value,
    path: &str,
    out: &mut Vec<Rewrite>,
) -> Result<(), Refusal> {
    let new = tf_op_layer(entry).map_err(|reason| Refusal {
        layer: path.to_string(),
        reason,
    })?;
    out.push(Rewrite {
        code: Rule::TfOpArithmetic,
        layer: path.to_string(),
        key: "(the layer entry)".into(),
        old: entry.clone(),
        new: Some(new.clone()),
    });
    *entry = new;
    Ok(())
}

/// The Keras 3 layer entry that computes a tf.keras `TFOpLambda`'s
/// arithmetic exactly, or why there is none (pure: the entry in, the new
/// entry out).
///
/// With a constant `c`, the op becomes a `Rescaling` (`x * scale +
/// offset`, in float32 as the op was): `x * c` is `(c, 0)`, `x + c` is
/// `(1, c)`, `x - c` is `(1, -c)`, `c - x` is `(-1, c)`, `-x` is `(-1,
/// 0)`, and `x / c` is `(1 / c, 0)` only when `c` is a power of two, for
/// which `x * (1 / c)` is `x / c` to the bit. Between two tensors, `Add`,
/// `Subtract` and `Multiply`; `tf.concat`, `Concatenate`. Anything else
/// (other ops, `c / x`,
/// non-scalar constants, another dtype, several calls) is refused.
pub fn tf_op_layer(entry: &Value) -> Result<Value, String> {
    let cfg = entry.get("config").and_then(Value::as_object);
    let function = cfg
        .and_then(|c| c.get("function"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = cfg
        .and_then(|c| c.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let what = format!("TFOpLambda `tf.{function}`");
    match cfg.and_then(|c| c.get("dtype")) {
        Some(Value::String(d)) if d == "float32" => {}
        other => {
            return Err(format!(
                "{what} computes in dtype {}: only float32 ops are migrated",
                other.map_or("(none)".to_string(), Value::to_string)
            ))
        }
    }
    let nodes = entry
        .get("inbound_nodes")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let [node] = nodes else {
        return Err(format!(
            "{what} is called {} times: only single calls are migrated",
            nodes.len()
        ));
    };
    if function == "concat" {
        return tf_concat(entry, name, node, &what);
    }
    let (first, second) = op_arguments(node, &what)?;
    arithmetic_layer(entry, name, function, &what, &first, second.as_ref())
}

/// The arguments of the call `node` of the op `what` (any but
/// `tf.concat`): its first argument and its `y`, each a tensor or a
/// number.
fn op_arguments(node: &Value, what: &str) -> Result<(OpArg, Option<OpArg>), String> {
    // tf.keras writes the call as [first argument (3 items), kwargs].
    let parts = node.as_array().map(Vec::as_slice).unwrap_or(&[]);
    let [a0, a1, a2, kwargs] = parts else {
        return Err(format!("{what}: its call {node} is not [argument, kwargs]"));
    };
    let first = match (a0.as_str(), a1.as_i64(), a2) {
        (Some("_CONSTANT_VALUE"), Some(-1), Value::Number(n)) => {
            OpArg::Number(n.as_f64().unwrap_or(f64::NAN))
        }
        (Some(l), Some(_), Value::Number(t)) if l != "_CONSTANT_VALUE" && t.is_u64() => {
            OpArg::Tensor(Value::Array(vec![a0.clone(), a1.clone(), a2.clone()]))
        }
        _ => {
            return Err(format!(
                "{what}: its first argument {node} is not a tensor or a number"
            ))
        }
    };
    let Some(kw) = kwargs.as_object() else {
        return Err(format!("{what}: its call {node} has no keyword arguments"));
    };
    if kw.get("name").is_some_and(|n| !n.is_null()) || kw.keys().any(|k| k != "name" && k != "y") {
        return Err(format!("{what}: keyword arguments {kwargs} other than y"));
    }
    let second = match kw.get("y") {
        None => None,
        Some(Value::Number(n)) => Some(OpArg::Number(n.as_f64().unwrap_or(f64::NAN))),
        Some(Value::Array(r))
            if r.len() == 3 && r[0].is_string() && r[1].is_u64() && r[2].is_u64() =>
        {
            Some(OpArg::Tensor(Value::Array(r.clone())))
        }
        Some(other) => {
            return Err(format!(
                "{what}: its argument y {other} is not a tensor or a number"
            ))
        }
    };
    Ok((first, second))
}

/// The Keras 3 layer entry named `name` that computes `function` of the
/// op `what` (the `TFOpLambda` entry `entry`) on `first` and `second`
/// exactly, or why there is none.
fn arithmetic_layer(
    entry: &Value,
    name: &str,
    function: &str,
    what: &str,
    first: &OpArg,
    second: Option<&OpArg>,
) -> Result<Value, String> {
    let finite = |c: f64| c.is_finite();
    let rescaling = |x: &Value, scale: f64, offset: f64| -> Result<Value, String> {
        if !finite(scale) || !finite(offset) {
            return Err(format!("{what}: a constant that is not a finite number"));
        }
        Ok(keras3_entry(
            entry,
            name,
            "Rescaling",
            serde_json::json!({"scale": scale, "offset": offset}),
            &[x],
        ))
    };
    let merge = |class: &str, x: &Value, y: &Value| {
        Ok(keras3_entry(
            entry,
            name,
            class,
            serde_json::json!({}),
            &[x, y],
        ))
    };
    use OpArg::{Number as N, Tensor as T};
    match (function, first, second) {
        ("math.multiply", T(x), Some(N(c))) | ("math.multiply", N(c), Some(T(x))) => {
            rescaling(x, *c, 0.0)
        }
        ("__operators__.add" | "math.add", T(x), Some(N(c)))
        | ("__operators__.add" | "math.add", N(c), Some(T(x))) => rescaling(x, 1.0, *c),
        ("math.subtract", T(x), Some(N(c))) => rescaling(x, 1.0, -*c),
        ("math.subtract", N(c), Some(T(x))) => rescaling(x, -1.0, *c),
        ("math.negative", T(x), None) => rescaling(x, -1.0, 0.0),
        ("math.truediv", T(x), Some(N(c))) => {
            if !power_of_two(*c) {
                return Err(format!(
                    "{what}: division by {c}, which is not a power of two, has no exact Keras 3 layer (x * (1 / c) rounds differently)"
                ));
            }
            rescaling(x, 1.0 / *c, 0.0)
        }
        ("__operators__.add" | "math.add", T(x), Some(T(y))) => merge("Add", x, y),
        ("math.subtract", T(x), Some(T(y))) => merge("Subtract", x, y),
        ("math.multiply", T(x), Some(T(y))) => merge("Multiply", x, y),
        _ => Err(format!(
            "{what} with these arguments has no exact Keras 3 layer (krepair migrates arithmetic with a constant, negation, adding, subtracting or multiplying two tensors, and tf.concat)"
        )),
    }
}

/// `tf.concat(values, axis)` on Keras tensors: tf.keras writes the call
/// as one reference per tensor, each carrying the keyword arguments
/// (`[["a", 0, 0, {"axis": -1}], ["b", 0, 0, {"axis": -1}]]`). It is a
/// Keras 3 `Concatenate(axis)` of the same tensors in the same order: a
/// copy, exact.
fn tf_concat(entry: &Value, name: &str, node: &Value, what: &str) -> Result<Value, String> {
    let refs = node.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if refs.len() < 2 {
        return Err(format!(
            "{what} joins {} tensors: Keras 3's Concatenate takes at least two",
            refs.len()
        ));
    }
    let mut inputs = Vec::new();
    let mut axis = None;
    for r in refs {
        let parts = r.as_array().map(Vec::as_slice).unwrap_or(&[]);
        let [l, n, t, kwargs] = parts else {
            return Err(format!(
                "{what}: its input {r} is not [layer, node, tensor, kwargs]"
            ));
        };
        if !(l.is_string() && l.as_str() != Some("_CONSTANT_VALUE") && n.is_u64() && t.is_u64()) {
            return Err(format!("{what}: its input {r} is not a Keras tensor"));
        }
        let kw = kwargs.as_object();
        let a = kw.and_then(|k| k.get("axis")).and_then(Value::as_i64);
        let others = kw.is_none_or(|k| {
            k.iter()
                .any(|(key, v)| key != "axis" && !(key == "name" && v.is_null()))
        });
        let Some(a) = a.filter(|_| !others) else {
            return Err(format!(
                "{what}: keyword arguments {kwargs}, not one integer axis"
            ));
        };
        if axis.is_some_and(|x| x != a) {
            return Err(format!("{what}: its inputs disagree on the axis"));
        }
        axis = Some(a);
        inputs.push(Value::Array(vec![l.clone(), n.clone(), t.clone()]));
    }
    let refs: Vec<&Value> = inputs.iter().collect();
    Ok(keras3_entry(
        entry,
        name,
        "Concatenate",
        serde_json::json!({"axis": axis}),
        &refs,
    ))
}

/// Is `c` a power of two (a float whose mantissa is 1), so that `1 / c`
/// is exact in float32 as well?
fn power_of_two(c: f64) -> bool {
    let f = c.abs() as f32;
    f.is_normal() && f as f64 == c.abs() && f.to_bits() & 0x7f_ffff == 0 && (1.0 / f).is_normal()
}

/// A Keras 3 layer entry named `name` (the tf.keras op's name, so the
/// layers it feeds still find it) of class `class` in `keras.layers`,
/// called once on `inputs`, keeping `trainable`, `dtype` and the build
/// config of `old`.
fn keras3_entry(old: &Value, name: &str, class: &str, extra: Value, inputs: &[&Value]) -> Value {
    let mut config = serde_json::Map::new();
    config.insert("name".into(), Value::from(name));
    config.insert(
        "trainable".into(),
        old["config"]
            .get("trainable")
            .cloned()
            .unwrap_or(Value::Bool(true)),
    );
    config.insert("dtype".into(), Value::from("float32"));
    if let Value::Object(e) = extra {
        config.extend(e);
    }
    let refs: Vec<Value> = inputs
        .iter()
        .map(|r| {
            let mut r = r.as_array().cloned().unwrap_or_default();
            r.push(serde_json::json!({}));
            Value::Array(r)
        })
        .collect();
    let mut e = serde_json::json!({
        "module": "keras.layers",
        "class_name": class,
        "config": Value::Object(config),
        "registered_name": null,
    });
    if let Some(b) = old.get("build_config").filter(|_| inputs.len() == 1) {
        e["build_config"] = b.clone();
    }
    e["name"] = Value::from(name);
    e["inbound_nodes"] = serde_json::json!([refs]);
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(function: &str, node: Value) -> Value {
        json!({"module": "keras.src.layers.core.tf_op_layer", "class_name": "TFOpLambda",
            "config": {"name": "tf.op", "trainable": true, "dtype": "float32", "function": function},
            "registered_name": "TFOpLambda", "build_config": {"input_shape": [null, 4]},
            "name": "tf.op", "inbound_nodes": [node]})
    }

    #[test]
    fn tf_op_arithmetic_becomes_exact_keras_3_layers() {
        let c = |v: f64| json!(["_CONSTANT_VALUE", -1, v, {"y": ["d", 0, 0], "name": null}]);
        let y = |v: Value| json!(["d", 0, 0, {"y": v, "name": null}]);
        let rescaling = |e: &Value| {
            assert_eq!(e["class_name"], "Rescaling", "{e}");
            assert_eq!(e["module"], "keras.layers");
            assert_eq!(e["config"]["name"], "tf.op");
            assert_eq!(e["inbound_nodes"], json!([[["d", 0, 0, {}]]]));
            assert_eq!(e["build_config"], json!({"input_shape": [null, 4]}));
            (
                e["config"]["scale"].as_f64().unwrap(),
                e["config"]["offset"].as_f64().unwrap(),
            )
        };
        let cases = [
            (op("math.multiply", y(json!(2.0))), (2.0, 0.0)),
            (op("math.multiply", c(3.0)), (3.0, 0.0)),
            (op("__operators__.add", y(json!(1))), (1.0, 1.0)),
            (op("__operators__.add", c(1.5)), (1.0, 1.5)),
            (op("math.subtract", y(json!(0.5))), (1.0, -0.5)),
            (op("math.subtract", c(3.0)), (-1.0, 3.0)),
            (op("math.truediv", y(json!(4.0))), (1.0, 0.0)),
            (op("math.truediv", y(json!(-0.5))), (-2.0, 0.0)),
            (
                op("math.negative", json!(["d", 0, 0, {"name": null}])),
                (-1.0, 0.0),
            ),
        ];
        for (i, (entry, want)) in cases.iter().enumerate() {
            let got = rescaling(&tf_op_layer(entry).unwrap());
            let want = if i == 6 { (0.25, 0.0) } else { *want };
            assert_eq!(got, want, "{entry}");
        }
        for (function, class) in [
            ("__operators__.add", "Add"),
            ("math.subtract", "Subtract"),
            ("math.multiply", "Multiply"),
        ] {
            let e = tf_op_layer(&op(function, y(json!(["e", 1, 0])))).unwrap();
            assert_eq!(e["class_name"], class);
            assert_eq!(
                e["inbound_nodes"],
                json!([[["d", 0, 0, {}], ["e", 1, 0, {}]]])
            );
            assert!(e.get("build_config").is_none());
        }
        // No exact Keras 3 layer: refused, saying why.
        for (entry, why) in [
            (op("math.truediv", y(json!(3.0))), "not a power of two"),
            (op("math.truediv", c(2.0)), "no exact Keras 3 layer"),
            (
                op("math.truediv", y(json!(["e", 0, 0]))),
                "no exact Keras 3 layer",
            ),
            (op("math.pow", y(json!(2.0))), "no exact Keras 3 layer"),
            (
                op("math.multiply", y(json!([1.0, 2.0]))),
                "not a tensor or a number",
            ),
            (
                op(
                    "math.multiply",
                    json!(["d", 0, 0, {"y": 2.0, "name": "mul"}]),
                ),
                "other than y",
            ),
        ] {
            let e = tf_op_layer(&entry).unwrap_err();
            assert!(e.contains(why), "{entry}: {e}");
        }
        let mut half = op("math.multiply", y(json!(2.0)));
        half["config"]["dtype"] = json!("float16");
        assert!(tf_op_layer(&half).unwrap_err().contains("only float32"));
        let mut twice = op("math.multiply", y(json!(2.0)));
        twice["inbound_nodes"] = json!([y(json!(2.0)), y(json!(2.0))]);
        assert!(tf_op_layer(&twice).unwrap_err().contains("called 2 times"));
        // tf.concat: one reference per tensor, each with the axis.
        let mut cat = op("concat", json!(null));
        cat["inbound_nodes"] = json!([[["d", 0, 0, {"axis": -1}], ["e", 1, 0, {"axis": -1}]]]);
        let e = tf_op_layer(&cat).unwrap();
        assert_eq!(e["class_name"], "Concatenate");
        assert_eq!(e["config"]["axis"], -1);
        assert_eq!(
            e["inbound_nodes"],
            json!([[["d", 0, 0, {}], ["e", 1, 0, {}]]])
        );
        cat["inbound_nodes"] = json!([[["d", 0, 0, {"axis": 1}], ["e", 1, 0, {"axis": 2}]]]);
        assert!(tf_op_layer(&cat).unwrap_err().contains("disagree"));
        cat["inbound_nodes"] = json!([[["d", 0, 0, {"axis": 1}]]]);
        assert!(tf_op_layer(&cat).unwrap_err().contains("at least two"));
        cat["inbound_nodes"] =
            json!([[["d", 0, 0, {"axis": 1, "name": "x"}], ["e", 0, 0, {"axis": 1}]]]);
        assert!(tf_op_layer(&cat)
            .unwrap_err()
            .contains("not one integer axis"));
        assert!(power_of_two(1.0) && power_of_two(0.125) && power_of_two(-1024.0));
        assert!(!power_of_two(3.0) && !power_of_two(0.0) && !power_of_two(f64::INFINITY));
        assert!(!power_of_two(1e-45), "1/c would overflow float32");
    }
}
