//! tf.keras 2.12's legacy form: layer entries, and the initializers,
//! regularizers, constraints and dtype policies inside a layer config,
//! written without their `module`, and NumPy scalars written as
//! `__numpy__` objects (rules `legacy-module` and `numpy-scalar`).
//! `legacy_modules` gives them what tf.keras 2.13 writes, so that the
//! layer rules read one form.

use serde_json::Value;

use super::layers::MODELS;
use super::tf_ops::is_tf_op_lambda;
use super::{child_path, Refusal, Rewrite};
use crate::plan::Rule;

/// NumPy dtypes whose scalars [`legacy_modules`] writes as JSON numbers
/// (the number is the value itself; Keras casts it to the layer's dtype).
const NUMPY_SCALARS: &[&str] = &[
    "float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
];

/// The module tf.keras 2.13 writes for an object of the legacy form under
/// `key` of a layer config, by the key's kind.
fn legacy_object_module(key: &str, class: &str) -> Option<&'static str> {
    if key.ends_with("_initializer") {
        Some("keras.initializers")
    } else if key.ends_with("_regularizer") {
        Some("keras.regularizers")
    } else if key.ends_with("_constraint") {
        Some("keras.constraints")
    } else if key == "dtype" && class == "Policy" {
        Some("keras.mixed_precision")
    } else {
        None
    }
}

/// Give the legacy-form layer entry at `path` (tf.keras 2.12: no
/// `module`), the layers of a model, and the objects in a layer's config
/// the module tf.keras 2.13 writes for them, so that the rules of
/// [`visit`](super::layers::visit) read one form. The root model has its
/// module already.
pub(super) fn legacy_modules(
    entry: &mut Value,
    path: &str,
    out: &mut Vec<Rewrite>,
) -> Result<(), Refusal> {
    let class = entry
        .get("class_name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let has_layers = entry
        .get("config")
        .and_then(|c| c.get("layers"))
        .is_some_and(Value::is_array);
    let is_model = MODELS.contains(&class.as_str()) && has_layers;
    if is_tf_op_lambda(entry) {
        return Ok(());
    }
    if entry.get("module").is_none() {
        entry_module(entry, &class, is_model, path, out)?;
    }
    if is_model {
        for l in entry["config"]["layers"]
            .as_array_mut()
            .expect("checked: an array")
        {
            let child = child_path(path, l);
            legacy_modules(l, &child, out)?;
        }
        return Ok(());
    }
    let Some(cfg) = entry.get_mut("config").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    for (key, v) in cfg.iter_mut() {
        config_object(key, v, path, out)?;
    }
    Ok(())
}

/// The module tf.keras 2.13 writes for the entry at `path` of class
/// `class` (a model when `is_model`), which 2.12 leaves out; refused for a
/// custom class, whose module is not known.
fn entry_module(
    entry: &mut Value,
    class: &str,
    is_model: bool,
    path: &str,
    out: &mut Vec<Rewrite>,
) -> Result<(), Refusal> {
    if class.contains('>') {
        return Err(Refusal {
            layer: path.to_string(),
            reason: format!("the custom class `{class}` is in tf.keras 2.12's legacy form, without its module: no migration rule for it yet"),
        });
    }
    let module = match class {
        "Sequential" if is_model => "keras.engine.sequential",
        _ if is_model => "keras.engine.functional",
        _ => "keras.layers",
    };
    out.push(Rewrite {
        code: Rule::LegacyModule,
        layer: path.to_string(),
        key: "module".into(),
        old: Value::Null,
        new: Some(Value::from(module)),
    });
    entry["module"] = Value::from(module);
    Ok(())
}

/// The value `v` under `key` of the config of the layer at `path`, when
/// it is an object in the legacy form (a `class_name` without a
/// `module`): a wrapped layer, a NumPy scalar, or an object that gets the
/// module of its kind.
fn config_object(
    key: &str,
    v: &mut Value,
    path: &str,
    out: &mut Vec<Rewrite>,
) -> Result<(), Refusal> {
    if let (Value::Array(cells), "cells") = (&mut *v, key) {
        // StackedRNNCells: its cells are layer entries.
        for (i, c) in cells.iter_mut().enumerate() {
            if c.get("class_name").is_some() && c.get("module").is_none() {
                legacy_modules(c, &format!("{path}/cells/{i}"), out)?;
            }
        }
        return Ok(());
    }
    let Some(obj) = v.as_object_mut() else {
        return Ok(());
    };
    if obj.contains_key("module") || !obj.contains_key("class_name") {
        return Ok(());
    }
    let inner = obj
        .get("class_name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if matches!(key, "layer" | "backward_layer" | "cell") {
        return legacy_modules(v, &format!("{path}/{key}"), out);
    }
    if inner == "__numpy__" {
        return numpy_scalar(key, v, path, out);
    }
    let Some(module) = legacy_object_module(key, &inner) else {
        return Err(Refusal {
            layer: path.to_string(),
            reason: format!(
                "`config.{key}` is a `{inner}` in tf.keras 2.12's legacy form: no migration rule for it"
            ),
        });
    };
    out.push(Rewrite {
        code: Rule::LegacyModule,
        layer: path.to_string(),
        key: format!("config.{key}.module"),
        old: Value::Null,
        new: Some(Value::from(module)),
    });
    obj.insert("module".into(), Value::from(module));
    Ok(())
}

/// The NumPy value `v` (`{"class_name": "__numpy__", ...}`) under `key`
/// of the config of the layer at `path` becomes its number (rule
/// `numpy-scalar`); anything but a float or int scalar is refused.
fn numpy_scalar(
    key: &str,
    v: &mut Value,
    path: &str,
    out: &mut Vec<Rewrite>,
) -> Result<(), Refusal> {
    let scalar = v
        .get("config")
        .and_then(|c| c.get("value"))
        .filter(|v| v.is_number())
        .cloned();
    let dtype = v
        .get("config")
        .and_then(|c| c.get("dtype"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let Some(number) = scalar.filter(|_| NUMPY_SCALARS.contains(&dtype)) else {
        return Err(Refusal {
            layer: path.to_string(),
            reason: format!(
                "`config.{key}` is a NumPy value {v} that is not a float or int scalar: no migration rule for it"
            ),
        });
    };
    out.push(Rewrite {
        code: Rule::NumpyScalar,
        layer: path.to_string(),
        key: format!("config.{key}"),
        old: v.clone(),
        new: Some(number.clone()),
    });
    *v = number;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::passes::migrate::fixtures::{plan, tf212};
    use crate::plan::Rule;
    use serde_json::json;

    #[test]
    fn tf212_legacy_form_gets_modules_then_the_other_rules() {
        let mut c = tf212();
        let p = plan(&mut c, Some("2.12.0")).unwrap();
        let legacy: Vec<(&str, &str)> = p
            .iter()
            .filter(|r| r.code == Rule::LegacyModule)
            .map(|r| (r.layer.as_str(), r.key.as_str()))
            .collect();
        assert_eq!(
            legacy,
            [
                ("in", "module"),
                ("seq", "module"),
                ("seq/i2", "module"),
                ("seq/d", "module"),
                ("seq/d", "config.kernel_initializer.module"),
                ("seq/d", "config.kernel_regularizer.module"),
                ("seq/d", "config.bias_constraint.module"),
                ("r", "module"),
            ]
        );
        let layers = &c["config"]["layers"];
        assert_eq!(layers[0]["module"], "keras.layers");
        // The nested model gets tf.keras's module, which model-module then
        // makes Keras 3's (and its calls are renumbered).
        assert_eq!(layers[1]["module"], "keras.src.models.sequential");
        assert_eq!(layers[2]["inbound_nodes"][0][0][1], 0);
        let d = &layers[1]["config"]["layers"][1]["config"];
        assert_eq!(d["kernel_initializer"]["module"], "keras.initializers");
        assert_eq!(d["kernel_regularizer"]["module"], "keras.regularizers");
        assert_eq!(d["bias_constraint"]["module"], "keras.constraints");
        // A NumPy scalar becomes the number.
        assert_eq!(layers[2]["config"]["max_value"], json!(6.0));
        assert!(p.iter().any(|r| r.code == Rule::NumpyScalar
            && r.layer == "r"
            && r.key == "config.max_value"
            && r.new == Some(json!(6.0))));
        // Idempotent: the migrated config, seen as Keras 3's, plans nothing.
        let again = c.clone();
        assert!(plan(&mut c, None).unwrap().is_empty());
        assert_eq!(c, again);
        // Nor is the legacy pass run twice on a 2.12 config it migrated.
        let mut c2 = again.clone();
        let p2 = plan(&mut c2, Some("2.12.0")).unwrap();
        assert!(p2.is_empty(), "{p2:?}");

        let mut c = tf212();
        c["config"]["layers"][1]["config"]["layers"][1]["config"]["activity"] =
            json!({"class_name": "Mystery", "config": {}});
        let r = plan(&mut c, Some("2.12.0")).unwrap_err();
        assert_eq!(r.layer, "seq/d");
        assert!(
            r.reason.contains("`config.activity` is a `Mystery`"),
            "{}",
            r.reason
        );

        let mut c = tf212();
        c["config"]["layers"][2]["config"]["max_value"]["config"]["value"] = json!([6.0, 6.0]);
        let r = plan(&mut c, Some("2.12.0")).unwrap_err();
        assert!(
            r.reason.contains("not a float or int scalar"),
            "{}",
            r.reason
        );

        let mut c = tf212();
        c["config"]["layers"][2]["class_name"] = json!("my_pkg>Mine");
        let r = plan(&mut c, Some("2.12.0")).unwrap_err();
        assert!(
            r.reason.contains("custom class `my_pkg>Mine`"),
            "{}",
            r.reason
        );
    }
}
