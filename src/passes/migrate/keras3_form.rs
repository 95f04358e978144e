//! Keras 3's own legacy HDF5 files (`model.save("m.h5")` in Keras 3):
//! their config is Keras 3's, but the layers of a model (and the model
//! itself) are written by the legacy serializer, without `module` and
//! `registered_name` (keras `models/functional.py` and
//! `models/sequential.py`, `get_config` under `use_legacy_config`). Rule
//! `keras3-hdf5` gives each entry what Keras 3 writes in a `.keras`
//! archive; nothing else changes (the objects inside a layer's config,
//! and wrapped layers, are in the full form already).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

use super::h5_layout::model_layers;
use super::{child_path, Refusal, Rewrite};
use crate::plan::Rule;

/// Every Layer class a pinned Keras 3 exports in `keras.layers`, and
/// every operation class of `keras.src.ops` with its module (checked
/// against each by scripts/layer_table.py).
const KERAS3_CLASSES_JSON: &str = include_str!("keras3_classes.json");

/// Classes of `keras.layers` whose saved form is not the model alone.
const NOT_MIGRATED: &[(&str, &str)] = &[
    ("Lambda", "a Lambda layer holds Python bytecode tied to the Python that wrote it, and Keras 3 refuses it in safe mode; rewrite it as a registered custom layer"),
    ("TFSMLayer", "a TFSMLayer calls a TensorFlow SavedModel outside the file"),
    ("JaxLayer", "a JaxLayer wraps a JAX function outside the file"),
    ("FlaxLayer", "a FlaxLayer wraps a Flax module outside the file"),
    ("TorchModuleWrapper", "a TorchModuleWrapper wraps a PyTorch module outside the file"),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Classes {
    #[allow(dead_code)]
    about: String,
    layers: BTreeSet<String>,
    ops: BTreeMap<String, String>,
}

fn classes() -> &'static Classes {
    static LIST: OnceLock<Classes> = OnceLock::new();
    LIST.get_or_init(|| {
        serde_json::from_str::<Classes>(KERAS3_CLASSES_JSON)
            .expect("keras3_classes.json parses (tested)")
    })
}

/// The Layer classes of Keras 3's `keras.layers`.
pub fn keras3_layers() -> &'static BTreeSet<String> {
    &classes().layers
}

/// The module of Keras 3's operation class `class` (`Add` is in
/// `keras.src.ops.numpy`), if it is one.
fn op_module(class: &str) -> Option<&'static str> {
    classes().ops.get(class).map(String::as_str)
}

/// The `module` and `registered_name` Keras 3 writes in a `.keras`
/// archive for a model entry of `class`, or `None` if not a model class.
fn model_module(class: &str) -> Option<(&'static str, Value)> {
    match class {
        "Functional" | "Model" => Some(("keras.src.models.functional", "Functional".into())),
        "Sequential" => Some(("keras", Value::Null)),
        _ => None,
    }
}

/// Is the entry of `class` a layer (not an operation of the same name,
/// such as `Add`)? A layer's config has `trainable` (`Layer.get_config`),
/// an operation's has not (`Operation.get_config`); an InputLayer's has
/// not either.
fn is_layer(entry: &Value, class: &str) -> bool {
    let layers = keras3_layers();
    let trainable = entry
        .get("config")
        .is_some_and(|c| c.get("trainable").is_some());
    layers.contains(class) && (trainable || class == "InputLayer" || op_module(class).is_none())
}

/// Give the entry at `path` of a Keras 3 legacy-form config (and, for a
/// model, every layer inside it) the `module` and `registered_name` a
/// `.keras` archive has; a class no Keras 3 exports (a custom one, whose
/// module the file does not say) is refused.
pub(super) fn keras3_modules(
    entry: &mut Value,
    path: &str,
    out: &mut Vec<Rewrite>,
) -> Result<(), Refusal> {
    let refuse = |reason: String| Refusal {
        layer: path.to_string(),
        reason,
    };
    let class = entry
        .get("class_name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let is_model = model_layers(entry).is_some() && model_module(&class).is_some();
    if entry.get("module").is_none() {
        let (module, registered) = match model_module(&class) {
            Some(m) if is_model => m,
            _ if class.contains('>') => {
                return Err(refuse(format!(
                    "the custom class `{class}` (registered by the code that saved it): its module is not in the file, so krepair cannot write the entry Keras 3 needs; load the file with that code in Keras 3 and save it as .keras"
                )))
            }
            _ if is_layer(entry, &class) => ("keras.layers", Value::Null),
            _ => match op_module(&class) {
                // An operation on Keras tensors (`x + y`, the mask of an
                // Embedding): Keras 3 saves it as `Add` of
                // `keras.src.ops.numpy`, registered under its class name.
                Some(m) => (m, Value::from(class.as_str())),
                None => {
                    return Err(refuse(format!(
                        "`{class}` is neither a layer of any pinned Keras 3's keras.layers nor one of its operations (a custom class?): its module is not in the file"
                    )))
                }
            },
        };
        if let Some((_, why)) = NOT_MIGRATED.iter().find(|(c, _)| *c == class) {
            return Err(refuse((*why).to_string()));
        }
        let Some(obj) = entry.as_object_mut() else {
            return Err(refuse("the layer entry is not a JSON object".into()));
        };
        for (key, value) in [
            ("module", Value::from(module)),
            ("registered_name", registered),
        ] {
            out.push(Rewrite {
                code: Rule::Keras3Hdf5,
                layer: path.to_string(),
                key: key.into(),
                old: Value::Null,
                new: Some(value.clone()),
            });
            obj.insert(key.into(), value);
        }
    }
    if is_model {
        let Some(layers) = entry
            .get_mut("config")
            .and_then(|c| c.get_mut("layers"))
            .and_then(Value::as_array_mut)
        else {
            return Err(refuse(
                "the model's config keeps its layers outside config.layers".into(),
            ));
        };
        for l in layers {
            let child = child_path(path, l);
            keras3_modules(l, &child, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_list_parses_and_holds_the_common_classes() {
        let l = keras3_layers();
        for c in [
            "Dense",
            "LSTM",
            "MultiHeadAttention",
            "InputLayer",
            "RMSNormalization",
        ] {
            assert!(l.contains(c), "{c}");
        }
        assert!(!l.contains("ThresholdedReLU"), "removed in Keras 3");
        assert_eq!(op_module("NotEqual"), Some("keras.src.ops.numpy"));
        assert_eq!(op_module("Cast"), Some("keras.src.ops.core"));
        assert_eq!(op_module("Dense"), None);
    }

    #[test]
    fn an_operation_gets_its_module_and_a_layer_of_the_same_name_stays_a_layer() {
        let mut c = json!({"class_name": "Functional", "config": {"name": "m", "layers": [
            {"class_name": "Add", "config": {"name": "add_1", "trainable": true, "dtype": "float32"}, "name": "add_1", "inbound_nodes": []},
            {"class_name": "Add", "config": {"name": "add_2"}, "name": "add_2", "inbound_nodes": []},
            {"class_name": "NotEqual", "config": {"name": "not_equal"}, "name": "not_equal", "inbound_nodes": []}]}});
        keras3_modules(&mut c, "", &mut Vec::new()).unwrap();
        let layers = &c["config"]["layers"];
        assert_eq!(layers[0]["module"], "keras.layers");
        assert_eq!(layers[0]["registered_name"], Value::Null);
        assert_eq!(layers[1]["module"], "keras.src.ops.numpy");
        assert_eq!(layers[1]["registered_name"], "Add");
        assert_eq!(layers[2]["module"], "keras.src.ops.numpy");
    }

    #[test]
    fn layers_and_nested_models_get_what_a_keras_archive_has() {
        let mut c = json!({"class_name": "Functional", "config": {"name": "m", "layers": [
            {"class_name": "InputLayer", "config": {"name": "in", "batch_shape": [null, 4]}, "name": "in", "inbound_nodes": []},
            {"class_name": "Sequential", "config": {"name": "inner", "layers": [
                {"class_name": "Dense", "config": {"name": "d", "units": 2,
                    "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {}, "registered_name": null}}}]},
             "name": "inner", "inbound_nodes": []}]}});
        let mut out = Vec::new();
        keras3_modules(&mut c, "", &mut out).unwrap();
        assert_eq!(c["module"], "keras.src.models.functional");
        assert_eq!(c["registered_name"], "Functional");
        let layers = &c["config"]["layers"];
        assert_eq!(layers[0]["module"], "keras.layers");
        assert_eq!(layers[0]["registered_name"], Value::Null);
        assert_eq!(layers[1]["module"], "keras");
        assert_eq!(layers[1]["config"]["layers"][0]["module"], "keras.layers");
        assert_eq!(out.len(), 8, "module and registered_name of 4 entries");
        assert!(out.iter().all(|r| r.code == Rule::Keras3Hdf5));
        assert_eq!(out[6].layer, "inner/d");
        // Idempotent: a second pass has nothing to add.
        let mut again = Vec::new();
        keras3_modules(&mut c, "", &mut again).unwrap();
        assert!(again.is_empty());
    }

    #[test]
    fn custom_and_external_classes_are_refused() {
        for (class, says) in [
            ("my_pkg>Block", "custom class"),
            ("MyBlock", "neither a layer of any pinned Keras 3"),
            ("Lambda", "bytecode"),
            ("TFSMLayer", "SavedModel"),
        ] {
            let mut c = json!({"class_name": "Sequential", "config": {"name": "s", "layers": [
                {"class_name": class, "config": {"name": "x"}}]}});
            let e = keras3_modules(&mut c, "", &mut Vec::new()).unwrap_err();
            assert!(e.reason.contains(says), "{class}: {}", e.reason);
            assert_eq!(e.layer, "x");
        }
    }
}
