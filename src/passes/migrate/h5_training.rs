//! A legacy HDF5 model file's `training_config` as the `compile_config`
//! of a `.keras` archive (rule `training-config`), which the compile
//! rules ([`super::compile`]) then migrate as they do any tf.keras
//! archive's.
//!
//! tf-keras `legacy/saving/saving_utils.py` (`model_metadata`) writes
//! `{"loss", "metrics", "weighted_metrics", "loss_weights",
//! "optimizer_config"}` (Keras 2.0 to 2.3 also `sample_weight_mode`);
//! the optimizer config is `{"class_name", "config"}` without a module:
//! tf.keras 2.11 and later serialize their optimizers as `Custom>Adam`
//! (registered under the `Custom` package) with `is_legacy_optimizer`,
//! older ones and `keras.optimizers.legacy` as `Adam` with `decay` (and
//! Keras 2.0 to 2.2 with `lr` for the learning rate).
//!
//! Keras 3's own legacy HDF5 files (`keras/src/legacy/saving/saving_utils.py`,
//! `model_metadata`) write the model's compile config as compiled (with
//! `run_eagerly`, `steps_per_execution` and `jit_compile`), its loss and
//! metric objects in the legacy form (no `module`), and the optimizer as
//! `{"class_name": "Adam", "config": ...}`: a Keras 3 optimizer.

use serde_json::{Map, Value};

use super::{Refusal, Rewrite};
use crate::plan::Rule;

/// The keys a legacy `training_config` may hold.
const KEYS: &[&str] = &[
    "loss",
    "metrics",
    "weighted_metrics",
    "loss_weights",
    "optimizer_config",
    "sample_weight_mode",
];

/// The keys Keras 3's `training_config` adds (its compile arguments).
const KERAS3_KEYS: &[&str] = &["run_eagerly", "steps_per_execution", "jit_compile"];

/// The compile config that `training` (a legacy `training_config`, of
/// Keras 3's own legacy HDF5 file when `keras3`) gives, and the rewrite
/// that records it.
pub fn compile_config_of(training: &Value, keras3: bool) -> Result<(Value, Rewrite), Refusal> {
    let refuse = |reason: String| Refusal {
        layer: String::new(),
        reason,
    };
    let Some(t) = training.as_object() else {
        return Err(refuse("training_config is not a JSON object".into()));
    };
    let known = |k: &str| KEYS.contains(&k) || (keras3 && KERAS3_KEYS.contains(&k));
    if let Some(k) = t.keys().find(|k| !known(k)) {
        return Err(refuse(format!(
            "training_config holds `{k}`, which krepair does not know how to carry into compile_config"
        )));
    }
    match t.get("sample_weight_mode") {
        None | Some(Value::Null) => {}
        Some(v) => {
            return Err(refuse(format!(
                "training_config.sample_weight_mode is {v}: Keras 3's compile has no such argument"
            )))
        }
    }
    let optimizer = match t.get("optimizer_config") {
        None | Some(Value::Null) => Value::Null,
        Some(o) => optimizer(o, keras3).map_err(refuse)?,
    };
    let mut cc = Map::new();
    cc.insert("optimizer".into(), optimizer);
    let mut loss = t.get("loss").cloned().unwrap_or(Value::Null);
    if keras3 {
        with_module(&mut loss, "keras.losses");
    }
    cc.insert("loss".into(), loss);
    cc.insert(
        "loss_weights".into(),
        t.get("loss_weights").cloned().unwrap_or(Value::Null),
    );
    for k in ["metrics", "weighted_metrics"] {
        let mut m = t.get(k).cloned().unwrap_or(Value::Null);
        metric_functions(&mut m);
        // tf.keras saves the metrics per output ([[...]] for one output);
        // Keras 3.0.5's compile takes one output's as a flat list only.
        // Keras 3 saves them as compiled.
        if let (Value::Array(a), false) = (&m, keras3) {
            if let [Value::Array(inner)] = a.as_slice() {
                m = Value::Array(inner.clone());
            }
        }
        cc.insert(k.into(), m);
    }
    for k in KERAS3_KEYS {
        let v = if keras3 { t.get(*k).cloned() } else { None };
        cc.insert((*k).into(), v.unwrap_or(Value::Null));
    }
    let cc = Value::Object(cc);
    let rewrite = Rewrite {
        code: Rule::TrainingConfig,
        layer: String::new(),
        key: "compile_config".into(),
        old: training.clone(),
        new: Some(cc.clone()),
    };
    Ok((cc, rewrite))
}

/// tf.keras saves the metrics a model compiled (`_get_compile_args(user_metrics=False)`),
/// a name like "mae" or "accuracy" as the `MeanMetricWrapper` it resolved
/// to, with the function's name as `fn` (`mean_absolute_error`,
/// `binary_accuracy`): each becomes that name, which Keras 3's
/// `metrics.get` resolves to the same function (at any depth of the
/// lists and dicts of a model with several outputs).
fn metric_functions(m: &mut Value) {
    match m {
        Value::Array(a) => a.iter_mut().for_each(metric_functions),
        Value::Object(o) if o.get("class_name") == Some(&Value::from("MeanMetricWrapper")) => {
            if let Some(f) = o
                .get("config")
                .and_then(|c| c.get("fn"))
                .filter(|f| f.is_string())
            {
                *m = f.clone();
            }
        }
        Value::Object(o) if !o.contains_key("class_name") => {
            o.values_mut().for_each(metric_functions);
        }
        Value::Object(o) => {
            o.entry("module")
                .or_insert_with(|| Value::from("keras.metrics"));
        }
        _ => {}
    }
}

/// Every object in the legacy form in `v` (a loss or a structure of
/// them) gets `module` and `registered_name`, as `.keras` archives keep
/// them.
fn with_module(v: &mut Value, module: &str) {
    match v {
        Value::Array(a) => a.iter_mut().for_each(|x| with_module(x, module)),
        Value::Object(o) if !o.contains_key("class_name") => {
            o.values_mut().for_each(|x| with_module(x, module));
        }
        Value::Object(o) if !o.contains_key("module") => {
            o.insert("module".into(), Value::from(module));
            o.entry("registered_name").or_insert(Value::Null);
        }
        _ => {}
    }
}

/// The optimizer entry of a `.keras` compile config for the legacy
/// `optimizer_config` `o` (of Keras 3 when `keras3`).
fn optimizer(o: &Value, keras3: bool) -> Result<Value, String> {
    let class = o.get("class_name").and_then(Value::as_str).unwrap_or("");
    let Some(cfg) = o.get("config").and_then(Value::as_object) else {
        return Err(format!(
            "the optimizer `{class}` in training_config has no config"
        ));
    };
    let mut cfg = cfg.clone();
    let (class, module) = match class.strip_prefix("Custom>") {
        _ if keras3 => (class, "keras.optimizers"),
        Some(c) => (c, "keras.optimizers"),
        None if cfg.get("is_legacy_optimizer") == Some(&Value::Bool(false)) => {
            (class, "keras.optimizers")
        }
        None => (class, "keras.optimizers.legacy"),
    };
    if class.is_empty() || class.contains('>') {
        return Err(format!(
            "the optimizer `{}` in training_config is a custom class: no migration rule for it",
            o.get("class_name").unwrap_or(&Value::Null)
        ));
    }
    if module == "keras.optimizers.legacy" {
        // Keras 2.0 to 2.2 wrote the learning rate as `lr`.
        if let Some(lr) = cfg.remove("lr") {
            if cfg.contains_key("learning_rate") {
                return Err(format!(
                    "the optimizer `{class}` in training_config has both lr and learning_rate"
                ));
            }
            cfg.insert("learning_rate".into(), lr);
        }
        cfg.entry("name").or_insert_with(|| Value::from(class));
    }
    let mut out = Map::new();
    out.insert("module".into(), Value::from(module));
    out.insert("class_name".into(), Value::from(class));
    out.insert("config".into(), Value::Object(cfg));
    out.insert("registered_name".into(), Value::Null);
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_new_optimizer_keeps_its_class_and_an_old_one_is_a_legacy_one() {
        let t = json!({"loss": "mse", "metrics": [[{"class_name": "MeanMetricWrapper", "config": {"name": "mae", "fn": "mean_absolute_error"}}]], "weighted_metrics": null, "loss_weights": null,
            "optimizer_config": {"class_name": "Custom>Adam", "config": {"name": "Adam", "is_legacy_optimizer": false, "learning_rate": 0.001}}});
        let (cc, rw) = compile_config_of(&t, false).unwrap();
        assert_eq!(cc["optimizer"]["module"], "keras.optimizers");
        assert_eq!(cc["optimizer"]["class_name"], "Adam");
        assert_eq!(cc["loss"], "mse");
        assert_eq!(cc["metrics"], json!(["mean_absolute_error"]));
        assert_eq!(cc["steps_per_execution"], Value::Null);
        assert_eq!(rw.code, Rule::TrainingConfig);
        let old = json!({"loss": "mse", "optimizer_config": {"class_name": "SGD", "config": {"lr": 0.01, "decay": 0.0, "momentum": 0.0, "nesterov": false}}});
        let (cc, _) = compile_config_of(&old, false).unwrap();
        assert_eq!(cc["optimizer"]["module"], "keras.optimizers.legacy");
        assert_eq!(cc["optimizer"]["config"]["learning_rate"], 0.01);
        assert!(cc["optimizer"]["config"].get("lr").is_none());
    }

    #[test]
    fn what_compile_cannot_take_is_refused() {
        let e = compile_config_of(
            &json!({"loss": "mse", "sample_weight_mode": "temporal"}),
            false,
        )
        .unwrap_err();
        assert!(e.reason.contains("sample_weight_mode"), "{}", e.reason);
        let e = compile_config_of(&json!({"loss": "mse", "optimizer_config": {"class_name": "Custom>MyOpt>X", "config": {}}}), false).unwrap_err();
        assert!(e.reason.contains("custom class"), "{}", e.reason);
    }

    #[test]
    fn keras3_keeps_its_compile_arguments_and_gives_objects_their_module() {
        let t = json!({"loss": {"class_name": "MeanSquaredError", "config": {"name": "mse", "reduction": "sum_over_batch_size"}},
            "loss_weights": null, "metrics": [["mae"]], "weighted_metrics": null,
            "run_eagerly": false, "steps_per_execution": 1, "jit_compile": true,
            "optimizer_config": {"class_name": "Adam", "config": {"name": "adam", "learning_rate": 0.001}}});
        let (cc, _) = compile_config_of(&t, true).unwrap();
        assert_eq!(cc["optimizer"]["module"], "keras.optimizers");
        assert_eq!(cc["loss"]["module"], "keras.losses");
        assert_eq!(cc["loss"]["registered_name"], Value::Null);
        assert_eq!(cc["metrics"], json!([["mae"]]), "as compiled");
        assert_eq!(cc["steps_per_execution"], 1);
        assert_eq!(cc["jit_compile"], true);
        // The same keys are refused in a Keras 2 file, whose compile never took them.
        let e = compile_config_of(&t, false).unwrap_err();
        assert!(e.reason.contains("run_eagerly"), "{}", e.reason);
    }
}
