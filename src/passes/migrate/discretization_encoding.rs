//! The split of an encoded Discretization (one-hot, multi-hot, count),
//! which Keras 3.0 to 3.13 give the wrong symbolic shape, into an
//! int-mode Discretization and a CategoryEncoding (rule
//! `discretization-encoding`), and the checks that refuse a split that
//! could move another layer's weights.

use std::collections::HashSet;

use serde_json::Value;

use super::{child_path, Refusal, Rewrite};
use crate::plan::Rule;

/// The output modes a Discretization encodes its bin indices in, which
/// Keras 3.0 to 3.13 give the wrong symbolic shape.
const ENCODED_MODES: &[&str] = &["one_hot", "multi_hot", "count"];

/// In a model's `layers`, split every Keras Discretization whose output
/// is encoded (one-hot, multi-hot, count) into an int-mode Discretization
/// and a CategoryEncoding right after it, which takes over every
/// reference to the Discretization's calls (rule
/// `discretization-encoding`). For an adapt-mode layer `num_tokens` is
/// left null for the Discretization pass to fill in.
pub(super) fn split_encoded_discretizations(
    model: &mut Value,
    path: &str,
    out: &mut Vec<Rewrite>,
) -> Result<(), Refusal> {
    let sequential = model.get("class_name").and_then(Value::as_str) == Some("Sequential");
    let cfg = &mut model["config"];
    let Some(layers) = cfg.get_mut("layers").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    let mut names: HashSet<String> = layers
        .iter()
        .filter_map(|l| l.get("config")?.get("name")?.as_str().map(str::to_string))
        .collect();
    let mut renamed: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    while i < layers.len() {
        let Some(mode) = encoded_mode(&layers[i]) else {
            i += 1;
            continue;
        };
        renamed.push(split_at(
            layers, i, &mode, path, sequential, &mut names, out,
        )?);
        i += 2;
    }
    if sequential || renamed.is_empty() {
        return Ok(());
    }
    retarget_references(cfg, &renamed);
    refuse_other_references(cfg, path, &renamed)
}

/// The output mode of a Keras Discretization entry that encodes its bin
/// indices (one of [`ENCODED_MODES`]); None for any other entry.
fn encoded_mode(l: &Value) -> Option<String> {
    let is_disc = l.get("class_name").and_then(Value::as_str) == Some("Discretization")
        && l.get("module").and_then(Value::as_str) == Some("keras.layers");
    let mode = l
        .get("config")
        .and_then(|c| c.get("output_mode"))
        .and_then(Value::as_str)
        .unwrap_or("int")
        .to_string();
    (is_disc && ENCODED_MODES.contains(&mode.as_str())).then_some(mode)
}

/// Split the `mode` Discretization at `layers[i]` of the model at `path`:
/// it becomes int-mode, and its CategoryEncoding is inserted after it,
/// under a name not in `names`. Returns the Discretization's name and
/// its encoding's, or why the split is refused.
fn split_at(
    layers: &mut Vec<Value>,
    i: usize,
    mode: &str,
    path: &str,
    sequential: bool,
    names: &mut HashSet<String>,
    out: &mut Vec<Rewrite>,
) -> Result<(String, String), Refusal> {
    let l = &layers[i];
    let layer = child_path(path, l);
    let refuse = |reason: String| Refusal {
        layer: layer.clone(),
        reason,
    };
    let c = &l["config"];
    if c.get("sparse").is_some_and(|s| s != &Value::Bool(false)) {
        return Err(refuse(format!("a {mode} Discretization with sparse output: Keras 3.0's CategoryEncoding has no sparse output, and 3.0 to 3.13 cannot build the layer's own")));
    }
    let name = c
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let enc_name = encoding_name(&name, names);
    let calls = l
        .get("inbound_nodes")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if !sequential && calls == 0 {
        return Err(refuse(format!(
            "a {mode} Discretization that the model never calls"
        )));
    }
    if !sequential {
        if let Some((x, class)) = renumbered_above(layers, i) {
            return Err(refuse(format!(
                "a {mode} Discretization fed by `{x}` ({class}): splitting it deepens the graph above it, and Keras 3 numbers a Functional model's layers by graph depth, so `{x}` could take the weights of another {class} of the model; krepair refuses rather than risk that swap"
            )));
        }
    }
    let enc_mode = encoding_mode(layers, i, sequential, mode).map_err(refuse)?;
    let enc = encoding_entry(l, &name, &enc_name, enc_mode, calls, sequential);
    to_int_mode(&mut layers[i]);
    out.push(Rewrite {
        code: Rule::DiscretizationEncoding,
        layer: layer.clone(),
        key: "(the layer entry)".into(),
        old: Value::from(mode),
        new: Some(
            serde_json::json!({"output_mode": "int", "then": enc_name, "encoding": enc_mode}),
        ),
    });
    layers.insert(i + 1, enc);
    Ok((name, enc_name))
}

/// `{name}_encoding`, or `{name}_encoding_1`, ... : the first that is not
/// in `names`, which then holds it.
fn encoding_name(name: &str, names: &mut HashSet<String>) -> String {
    let mut enc_name = format!("{name}_encoding");
    let mut n = 1;
    while names.contains(&enc_name) {
        enc_name = format!("{name}_encoding_{n}");
        n += 1;
    }
    names.insert(enc_name.clone());
    enc_name
}

/// The CategoryEncoding mode for the `mode` Discretization at
/// `layers[i]`, or why there is none.
///
/// tf.keras one-hot encodes a (batch, 1) input as multi-hot does (it
/// expands the last axis only when it is not 1, and then counts); Keras
/// 3.0's CategoryEncoding one-hot keeps that axis at run time, so such a
/// layer is encoded multi-hot.
fn encoding_mode<'a>(
    layers: &[Value],
    i: usize,
    sequential: bool,
    mode: &'a str,
) -> Result<&'a str, String> {
    if mode != "one_hot" {
        return Ok(mode);
    }
    match discretization_input_shape(layers, i, sequential).as_deref() {
        Some([_, Some(1)]) => Ok("multi_hot"),
        Some([_]) => Ok("one_hot"),
        Some(s) => Err(format!(
            "a one-hot Discretization on inputs of shape {}: tf.keras encodes only (batch,) and (batch, 1)",
            Value::from(s.iter().map(|d| d.map_or(Value::Null, Value::from)).collect::<Vec<_>>())
        )),
        None => Err(
            "a one-hot Discretization whose input shape the config does not say (no build_config, no InputLayer feeding it)".into(),
        ),
    }
}

/// The CategoryEncoding entry `enc_name` (mode `enc_mode`) that follows
/// the Discretization entry `l` named `name`: its dtype and build config,
/// its tokens when the bin boundaries are known, and in a Functional one
/// node per call of the Discretization (`calls`).
fn encoding_entry(
    l: &Value,
    name: &str,
    enc_name: &str,
    enc_mode: &str,
    calls: usize,
    sequential: bool,
) -> Value {
    let c = &l["config"];
    let tokens = match c.get("bin_boundaries") {
        Some(Value::Array(b)) => Value::from(b.len() + 1),
        _ => Value::Null,
    };
    let dtype = c.get("dtype").cloned().unwrap_or(Value::from("float32"));
    let mut enc = serde_json::json!({
        "module": "keras.layers",
        "class_name": "CategoryEncoding",
        "config": {
            "name": enc_name,
            "trainable": true,
            "dtype": dtype,
            "num_tokens": tokens,
            "output_mode": enc_mode,
        },
        "registered_name": null,
        "name": enc_name,
    });
    if let Some(b) = l.get("build_config") {
        enc["build_config"] = b.clone();
    }
    if !sequential {
        enc["inbound_nodes"] = Value::Array(
            (0..calls)
                .map(|k| serde_json::json!([[name, k, 0, {}]]))
                .collect(),
        );
    }
    enc
}

/// The Discretization entry `d` in int mode (without a dtype: each Keras
/// 3 its own int-mode default, as `discretization-dtype` leaves a tf.keras
/// int-mode layer; not sparse).
fn to_int_mode(d: &mut Value) {
    let d = d["config"].as_object_mut().expect("checked: an object");
    d.insert("output_mode".into(), Value::from("int"));
    d.shift_remove("dtype");
    d.shift_remove("sparse");
    d.insert("sparse".into(), Value::Bool(false));
}

/// In a Functional's config `cfg`, every reference to a split
/// Discretization (`renamed`: its name, its encoding's) now reads its
/// encoding, except the encoding's own.
fn retarget_references(cfg: &mut Value, renamed: &[(String, String)]) {
    let retarget = |r: &mut Value, skip: &str| {
        if let Some(a) = r.as_array_mut() {
            if let Some(target) = a.first().and_then(Value::as_str) {
                if let Some((_, enc)) = renamed.iter().find(|(d, e)| d == target && e != skip) {
                    if a.get(1).is_some_and(Value::is_u64) {
                        a[0] = Value::from(enc.clone());
                    }
                }
            }
        }
    };
    let layers = cfg["layers"].as_array_mut().expect("checked: an array");
    for l in layers.iter_mut() {
        let own = l
            .get("config")
            .and_then(|c| c.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if renamed.iter().any(|(_, e)| *e == own) {
            continue;
        }
        for node in l
            .get_mut("inbound_nodes")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            for r in node.as_array_mut().into_iter().flatten() {
                retarget(r, &own);
            }
        }
    }
    if let Some(refs) = cfg.get_mut("output_layers").and_then(Value::as_array_mut) {
        for r in refs {
            retarget(r, "");
        }
    }
}

/// Anything still naming a split layer (a Keras 3 style node, a
/// reference inside call arguments) is not a form this rule rewrites:
/// the first layer of the model at `path` that does, refused.
fn refuse_other_references(
    cfg: &Value,
    path: &str,
    renamed: &[(String, String)],
) -> Result<(), Refusal> {
    for (d, _) in renamed {
        let layers = cfg["layers"].as_array().expect("checked: an array");
        for l in layers {
            let own = l.get("config").and_then(|c| c.get("name"));
            if own
                .and_then(Value::as_str)
                .is_some_and(|o| renamed.iter().any(|(_, e)| e == o))
            {
                continue;
            }
            if let Some(nodes) = l.get("inbound_nodes") {
                if mentions(nodes, d) {
                    return Err(Refusal {
                        layer: child_path(path, l),
                        reason: format!("it reads the encoded Discretization `{d}` in a form the discretization-encoding rule does not rewrite"),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Layer classes that own no variables in tf.keras or Keras 3 (a
/// Discretization's summary and a CategoryEncoding's nothing are gone
/// after the repair): their place in Keras 3's depth order may change.
const WEIGHTLESS: &[&str] = &[
    "InputLayer",
    "Rescaling",
    "Reshape",
    "Flatten",
    "Concatenate",
    "Add",
    "Subtract",
    "Multiply",
    "Average",
    "Maximum",
    "Minimum",
    "Dropout",
    "Activation",
    "ReLU",
    "LeakyReLU",
    "ELU",
    "Softmax",
    "Permute",
    "RepeatVector",
    "CategoryEncoding",
    "Discretization",
    "Hashing",
    "Cropping1D",
    "Cropping2D",
    "Cropping3D",
    "ZeroPadding1D",
    "ZeroPadding2D",
    "ZeroPadding3D",
    "UpSampling1D",
    "UpSampling2D",
    "UpSampling3D",
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAveragePooling3D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "GlobalMaxPooling3D",
    "GaussianNoise",
    "GaussianDropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
];

/// The layer names an `inbound_nodes` value reads (tf.keras's
/// `[name, node, tensor, kwargs]` references).
fn inbound_names(v: &Value, out: &mut Vec<String>) {
    if let Value::Array(a) = v {
        match (a.first().and_then(Value::as_str), a.get(1)) {
            (Some(name), Some(n)) if n.is_u64() => out.push(name.to_string()),
            _ => a.iter().for_each(|x| inbound_names(x, out)),
        }
    } else if let Value::Object(o) = v {
        o.values().for_each(|x| inbound_names(x, out));
    }
}

/// Inserting a layer after layer `i` of a Functional model's `layers`
/// deepens every layer above it. Keras 3 orders `model.layers` (and so
/// numbers the weights groups) by depth, then by traversal order, which
/// the insertion keeps: only a layer above `i` can move. One that owns
/// variables, with another of its class in the model, could move past it
/// and take its weights group. The first such layer, with its class.
fn renumbered_above(layers: &[Value], i: usize) -> Option<(String, String)> {
    let name_of = |l: &Value| {
        l.get("config")
            .and_then(|c| c.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    fn class_of(l: &Value) -> &str {
        l.get("class_name").and_then(Value::as_str).unwrap_or("")
    }
    let by_name: std::collections::HashMap<String, &Value> =
        layers.iter().map(|l| (name_of(l), l)).collect();
    let mut seen = std::collections::HashSet::new();
    let mut stack = Vec::new();
    inbound_names(layers[i].get("inbound_nodes")?, &mut stack);
    while let Some(n) = stack.pop() {
        if !seen.insert(n.clone()) {
            continue;
        }
        let Some(l) = by_name.get(&n) else { continue };
        let class = class_of(l);
        if !WEIGHTLESS.contains(&class)
            && layers.iter().filter(|x| class_of(x) == class).count() > 1
        {
            return Some((n, class.to_string()));
        }
        if let Some(nodes) = l.get("inbound_nodes") {
            inbound_names(nodes, &mut stack);
        }
    }
    None
}

/// The input shape of layer `i` of a model's `layers`: its
/// `build_config.input_shape`, or (tf.keras 2.12 writes no build configs)
/// the `batch_input_shape` of the InputLayer that alone feeds it.
fn discretization_input_shape(
    layers: &[Value],
    i: usize,
    sequential: bool,
) -> Option<Vec<Option<u64>>> {
    if let Some(s) = layers[i]
        .get("build_config")
        .and_then(|b| b.get("input_shape"))
    {
        return crate::view::config::parse_shape(s);
    }
    let name = layers[i]
        .get("config")
        .and_then(|c| c.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    crate::view::config::input_layer_shape(layers, i, name, sequential)
}

/// Does `v` hold the string `name` anywhere?
fn mentions(v: &Value, name: &str) -> bool {
    match v {
        Value::String(s) => s == name,
        Value::Array(a) => a.iter().any(|x| mentions(x, name)),
        Value::Object(o) => o.values().any(|x| mentions(x, name)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use crate::passes::migrate::layers::visit;
    use crate::plan::Rule;
    use serde_json::{json, Value};

    fn disc(name: &str, mode: &str, extra: Value) -> Value {
        let mut d = json!({"module": "keras.layers", "class_name": "Discretization",
            "config": {"name": name, "trainable": true, "dtype": "float32", "bin_boundaries": null,
                "num_bins": 4, "epsilon": 0.01, "output_mode": mode, "sparse": false},
            "build_config": {"input_shape": [null, 1]}, "name": name});
        if let Value::Object(e) = extra {
            d.as_object_mut().unwrap().extend(e);
        }
        d
    }

    #[test]
    fn encoded_discretizations_become_int_and_a_category_encoding() {
        let dense = |name: &str, from: &str, node: u64| {
            json!({"module": "keras.layers", "class_name": "Dense", "config": {"name": name, "units": 2},
                "name": name, "inbound_nodes": [[[from, node, 0, {}]]]})
        };
        let mut c = json!({"module": "keras.src.engine.functional", "class_name": "Functional",
            "config": {"name": "m", "layers": [
                {"module": "keras.layers", "class_name": "InputLayer", "config": {"name": "in", "batch_input_shape": [null, 1]}, "name": "in", "inbound_nodes": []},
                disc("d", "one_hot", json!({"inbound_nodes": [[["in", 0, 0, {}]], [["in", 0, 0, {}]]]})),
                dense("a", "d", 0),
                dense("b", "d", 1),
                disc("plain", "int", json!({"inbound_nodes": [[["in", 0, 0, {}]]]})),
            ], "input_layers": [["in", 0, 0]], "output_layers": [["a", 0, 0], ["d", 1, 0]]}});
        let mut out = Vec::new();
        visit(&mut c, "", &mut out).unwrap();
        let layers = c["config"]["layers"].as_array().unwrap();
        let names: Vec<&str> = layers
            .iter()
            .map(|l| l["config"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["in", "d", "d_encoding", "a", "b", "plain"]);
        assert_eq!(layers[1]["config"]["output_mode"], "int");
        assert!(layers[1]["config"].get("dtype").is_none());
        let enc = &layers[2];
        assert_eq!(enc["class_name"], "CategoryEncoding");
        assert_eq!(enc["config"]["output_mode"], "multi_hot");
        assert_eq!(enc["config"]["dtype"], "float32");
        assert!(
            enc["config"]["num_tokens"].is_null(),
            "filled in by the repair"
        );
        // One node per call of the Discretization, each taking over the
        // references to that call.
        assert_eq!(
            enc["inbound_nodes"],
            json!([[["d", 0, 0, {}]], [["d", 1, 0, {}]]])
        );
        assert_eq!(layers[3]["inbound_nodes"][0][0][0], "d_encoding");
        assert_eq!(
            layers[4]["inbound_nodes"][0][0],
            json!(["d_encoding", 1, 0, {}])
        );
        assert_eq!(
            c["config"]["output_layers"],
            json!([["a", 0, 0], ["d_encoding", 1, 0]])
        );
        assert_eq!(layers[5]["config"]["output_mode"], "int");
        assert_eq!(
            out.iter()
                .filter(|r| r.code == Rule::DiscretizationEncoding)
                .count(),
            1
        );
        // Idempotent.
        let before = c.clone();
        let mut again = Vec::new();
        visit(&mut c, "", &mut again).unwrap();
        assert_eq!(c, before);
        assert!(again.iter().all(|r| r.code != Rule::DiscretizationEncoding));
        // Known boundaries give the tokens at once; a Sequential needs no
        // rewiring; count stays count.
        let mut b = disc("e", "count", json!({}));
        b["config"]["bin_boundaries"] = json!([1.0, 2.0]);
        let mut s = json!({"module": "keras", "class_name": "Sequential", "config": {"name": "s",
            "layers": [{"module": "keras.layers", "class_name": "InputLayer", "config": {"name": "i", "batch_input_shape": [null, 1]}}, b]}});
        visit(&mut s, "", &mut Vec::new()).unwrap();
        let enc = &s["config"]["layers"][2];
        assert_eq!(enc["config"]["num_tokens"], 3);
        assert_eq!(enc["config"]["output_mode"], "count");
        assert!(enc.get("inbound_nodes").is_none());
    }

    #[test]
    fn encoded_discretizations_that_cannot_be_split_are_refused() {
        let model = |d: Value| json!({"module": "keras", "class_name": "Sequential", "config": {"name": "s", "layers": [d]}});
        let mut sparse = disc("d", "multi_hot", json!({}));
        sparse["config"]["sparse"] = json!(true);
        let mut wide = disc("d", "one_hot", json!({}));
        wide["build_config"] = json!({"input_shape": [null, 3]});
        let mut unknown = disc("d", "one_hot", json!({}));
        unknown
            .as_object_mut()
            .unwrap()
            .shift_remove("build_config");
        for (d, needle) in [
            (sparse, "sparse output"),
            (wide, "inputs of shape [null,3]"),
            (unknown, "input shape the config does not say"),
        ] {
            let e = visit(&mut model(d), "", &mut Vec::new()).unwrap_err();
            assert!(e.reason.contains(needle), "{}", e.reason);
            assert_eq!(e.layer, "d");
        }
    }

    #[test]
    fn a_split_that_could_renumber_layers_with_weights_is_refused() {
        // in -> a (Dense) -> d (one-hot) -> cat; in -> b (Dense) -> cat:
        // the encoding after `d` makes `a` deeper than `b`, and Keras 3
        // would then number them the other way round.
        let layer = |class: &str, name: &str, from: &[&str]| {
            let refs: Vec<Value> = from.iter().map(|f| json!([f, 0, 0, {}])).collect();
            json!({"module": "keras.layers", "class_name": class, "config": {"name": name},
                "name": name, "inbound_nodes": if from.is_empty() { json!([]) } else { json!([refs]) }})
        };
        let functional = |layers: Vec<Value>| {
            json!({"module": "keras.src.engine.functional", "class_name": "Functional",
                "config": {"name": "m", "layers": layers, "input_layers": [["in", 0, 0]],
                    "output_layers": [["cat", 0, 0]]}})
        };
        let input = json!({"module": "keras.layers", "class_name": "InputLayer",
            "config": {"name": "in", "batch_input_shape": [null, 1]}, "name": "in", "inbound_nodes": []});
        let d = |from: &str| {
            disc(
                "d",
                "one_hot",
                json!({"inbound_nodes": [[[from, 0, 0, {}]]]}),
            )
        };
        let mut risky = functional(vec![
            input.clone(),
            layer("Dense", "a", &["in"]),
            d("a"),
            layer("Dense", "b", &["in"]),
            layer("Concatenate", "cat", &["d", "b"]),
        ]);
        let e = visit(&mut risky, "", &mut Vec::new()).unwrap_err();
        assert_eq!(e.layer, "d");
        assert!(e.reason.contains("fed by `a` (Dense)"), "{}", e.reason);
        // One Dense only, or weightless layers above: nothing can swap.
        let mut alone = functional(vec![
            input.clone(),
            layer("Dense", "a", &["in"]),
            d("a"),
            layer("Concatenate", "cat", &["d", "in"]),
        ]);
        visit(&mut alone, "", &mut Vec::new()).unwrap();
        let mut weightless = functional(vec![
            input,
            layer("Rescaling", "r", &["in"]),
            d("r"),
            layer("Dense", "b", &["in"]),
            layer("Dense", "c", &["b"]),
            layer("Concatenate", "cat", &["d", "c"]),
        ]);
        visit(&mut weightless, "", &mut Vec::new()).unwrap();
    }
}
