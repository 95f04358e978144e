//! The compile config: the optimizer (its module, its arguments, its
//! learning-rate schedule, and what its saved variables need, in
//! [`OptimizerVariables`]), the losses, the metrics and the compile
//! arguments, with the tables of the classes and names each rule knows.

use serde_json::Value;

use super::Rewrite;
use crate::plan::Rule;

/// Optimizers (module `keras.optimizers`) whose tf.keras 2.15 config and
/// variables krepair migrates, with the config keys each Keras 3 class
/// takes beyond the base optimizer's.
pub const KNOWN_OPTIMIZERS: &[(&str, &[&str])] = &[
    ("Adam", &["beta_1", "beta_2", "epsilon", "amsgrad"]),
    ("SGD", &["momentum", "nesterov"]),
    ("RMSprop", &["rho", "momentum", "epsilon", "centered"]),
];

/// Optimizers whose tf.keras 2.15 config krepair migrates (each key it
/// writes is an argument of the Keras 3.0 and 3.15 class: checked with
/// `inspect.signature`), but whose variables it does not map: they are
/// removed, with the finding `optimizer-state-dropped`, and Keras 3 starts
/// the optimizer afresh. The keys each class takes beyond the base
/// optimizer's.
pub const UNMAPPED_OPTIMIZERS: &[(&str, &[&str])] = &[
    ("Adadelta", &["rho", "epsilon"]),
    (
        "Adafactor",
        &[
            "beta_2_decay",
            "epsilon_1",
            "epsilon_2",
            "clip_threshold",
            "relative_step",
        ],
    ),
    ("Adagrad", &["initial_accumulator_value", "epsilon"]),
    ("Adamax", &["beta_1", "beta_2", "epsilon"]),
    ("AdamW", &["beta_1", "beta_2", "epsilon", "amsgrad"]),
    (
        "Ftrl",
        &[
            "learning_rate_power",
            "initial_accumulator_value",
            "l1_regularization_strength",
            "l2_regularization_strength",
            "l2_shrinkage_regularization_strength",
            "beta",
        ],
    ),
    ("Lion", &["beta_1", "beta_2"]),
    ("Nadam", &["beta_1", "beta_2", "epsilon"]),
];

/// Config keys of Keras 3's BaseOptimizer (3.0 to 3.15) that tf.keras
/// 2.15 also writes.
const OPTIMIZER_BASE_KEYS: &[&str] = &[
    "name",
    "learning_rate",
    "weight_decay",
    "clipnorm",
    "global_clipnorm",
    "clipvalue",
    "use_ema",
    "ema_momentum",
    "ema_overwrite_frequency",
];

/// Loss classes (module `keras.losses`) and the arguments their Keras 3.0
/// constructors take (keras/losses/losses.py).
pub const KNOWN_LOSSES: &[(&str, &[&str])] = &[
    ("MeanSquaredError", &["reduction", "name"]),
    ("MeanAbsoluteError", &["reduction", "name"]),
    ("MeanAbsolutePercentageError", &["reduction", "name"]),
    ("MeanSquaredLogarithmicError", &["reduction", "name"]),
    ("Huber", &["delta", "reduction", "name"]),
    ("LogCosh", &["reduction", "name"]),
    ("Hinge", &["reduction", "name"]),
    ("SquaredHinge", &["reduction", "name"]),
    ("CategoricalHinge", &["reduction", "name"]),
    ("KLDivergence", &["reduction", "name"]),
    ("Poisson", &["reduction", "name"]),
    ("CosineSimilarity", &["axis", "reduction", "name"]),
    (
        "BinaryCrossentropy",
        &[
            "from_logits",
            "label_smoothing",
            "axis",
            "reduction",
            "name",
        ],
    ),
    (
        "CategoricalCrossentropy",
        &[
            "from_logits",
            "label_smoothing",
            "axis",
            "reduction",
            "name",
        ],
    ),
    (
        "SparseCategoricalCrossentropy",
        &["from_logits", "ignore_class", "reduction", "name"],
    ),
];

/// Loss names both tf.keras and Keras 3.0 resolve to the same function
/// (keras/losses/__init__.py ALL_OBJECTS_DICT).
const KNOWN_LOSS_NAMES: &[&str] = &[
    "mse",
    "mae",
    "mape",
    "msle",
    "bce",
    "kld",
    "mean_squared_error",
    "mean_absolute_error",
    "mean_absolute_percentage_error",
    "mean_squared_logarithmic_error",
    "binary_crossentropy",
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
    "hinge",
    "squared_hinge",
    "categorical_hinge",
    "kl_divergence",
    "poisson",
    "cosine_similarity",
    "log_cosh",
    "huber",
];

/// Metric classes (module `keras.metrics`) and their Keras 3.0 arguments.
pub const KNOWN_METRICS: &[(&str, &[&str])] = &[
    ("Accuracy", &["name", "dtype"]),
    ("BinaryAccuracy", &["name", "dtype", "threshold"]),
    ("CategoricalAccuracy", &["name", "dtype"]),
    ("SparseCategoricalAccuracy", &["name", "dtype"]),
    ("TopKCategoricalAccuracy", &["name", "dtype", "k"]),
    ("SparseTopKCategoricalAccuracy", &["name", "dtype", "k"]),
    ("MeanSquaredError", &["name", "dtype"]),
    ("MeanAbsoluteError", &["name", "dtype"]),
    ("RootMeanSquaredError", &["name", "dtype"]),
];

/// Metric names Keras 3's compile resolves as tf.keras does.
const KNOWN_METRIC_NAMES: &[&str] = &[
    "accuracy",
    "acc",
    "mse",
    "mae",
    "mape",
    "msle",
    "binary_accuracy",
    "categorical_accuracy",
    "sparse_categorical_accuracy",
    "top_k_categorical_accuracy",
    "sparse_top_k_categorical_accuracy",
    // The functions a legacy HDF5 file's MeanMetricWrapper names (rule
    // training-config); Keras 3's metrics.get resolves each to the
    // metric class of that snake-case name.
    "mean_squared_error",
    "mean_absolute_error",
    "mean_absolute_percentage_error",
    "mean_squared_logarithmic_error",
];

/// The optimizer names tf.keras's `optimizers.get` resolves (their case
/// ignored: it lowercases a name that matches a class), with the class
/// and the arguments that class's get_config writes beyond the base
/// optimizer's, at their defaults. Read off tf.keras 2.12 to 2.15 and
/// tf_keras 2.21 (`optimizers.get(name).get_config()`: the same in each;
/// AdamW has a name in tf_keras only, and its default weight_decay).
const OPTIMIZER_NAMES: &[(&str, &str, &str)] = &[
    ("adadelta", "Adadelta", r#"{"rho": 0.95, "epsilon": 1e-07}"#),
    (
        "adagrad",
        "Adagrad",
        r#"{"initial_accumulator_value": 0.1, "epsilon": 1e-07}"#,
    ),
    (
        "adam",
        "Adam",
        r#"{"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07, "amsgrad": false}"#,
    ),
    (
        "adamw",
        "AdamW",
        r#"{"weight_decay": 0.004, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07, "amsgrad": false}"#,
    ),
    (
        "adamax",
        "Adamax",
        r#"{"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07}"#,
    ),
    (
        "ftrl",
        "Ftrl",
        r#"{"learning_rate_power": -0.5, "initial_accumulator_value": 0.1, "l1_regularization_strength": 0.0, "l2_regularization_strength": 0.0, "l2_shrinkage_regularization_strength": 0.0, "beta": 0.0}"#,
    ),
    (
        "nadam",
        "Nadam",
        r#"{"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07}"#,
    ),
    (
        "rmsprop",
        "RMSprop",
        r#"{"ema_overwrite_frequency": 100, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-07, "centered": false}"#,
    ),
    ("sgd", "SGD", r#"{"momentum": 0.0, "nesterov": false}"#),
];

/// The config tf.keras's optimizer of `name` writes with its defaults
/// (tf.keras's base keys first, then the learning rate, then the
/// class's own, as get_config orders them), or None for a name tf.keras
/// does not resolve.
fn optimizer_by_name(name: &str) -> Option<Value> {
    let lower = name.to_ascii_lowercase();
    let &(_, class, own) = OPTIMIZER_NAMES.iter().find(|n| n.0 == lower)?;
    let own: serde_json::Map<String, Value> = serde_json::from_str(own).expect("a JSON object");
    // tf.keras stores the learning rate as a float32 variable and writes
    // its value widened to a double.
    let lr = if class == "SGD" { 0.01f32 } else { 0.001f32 };
    let mut cfg = serde_json::json!({
        "name": class, "weight_decay": null, "clipnorm": null, "global_clipnorm": null,
        "clipvalue": null, "use_ema": false, "ema_momentum": 0.99,
        "ema_overwrite_frequency": null, "jit_compile": false, "is_legacy_optimizer": false,
        "learning_rate": f64::from(lr),
    });
    let map = cfg.as_object_mut().expect("an object");
    for (k, v) in own {
        map.insert(k, v);
    }
    Some(serde_json::json!({
        "module": "keras.optimizers", "class_name": class, "config": cfg, "registered_name": null,
    }))
}

/// What the optimizer's saved variables need (`optimizer/vars` in
/// model.weights.h5), planned from the config alone.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerVariables {
    /// The optimizer class.
    pub class: String,
    /// The learning rate, for Keras 3's `learning_rate` variable (vars/1);
    /// None for a schedule (Keras 3 then tracks no such variable).
    pub learning_rate: Option<f32>,
    /// Slot variables per trainable variable in tf.keras's layout.
    pub slots_per_variable: usize,
    /// Keras 3 keeps no slots (SGD without momentum): drop tf.keras's.
    pub drop_slots: bool,
    /// A tf.keras legacy optimizer (`keras.optimizers.legacy`), whose
    /// variables tf.keras 2.12 to 2.15 never save in a `.keras` archive:
    /// there is no state to lay out.
    pub legacy: bool,
    /// An optimizer of [`UNMAPPED_OPTIMIZERS`]: its saved variables are
    /// removed rather than laid out.
    pub drop_state: bool,
}

/// A rewrite of the compile config (layer path empty: the root model).
fn compile_rewrite(code: Rule, key: String, old: Value, new: Option<Value>) -> Rewrite {
    Rewrite {
        code,
        layer: String::new(),
        key: format!("compile_config.{key}"),
        old,
        new,
    }
}

/// The keys of `cfg` not in `allowed`, for a refusal.
fn unknown_keys(cfg: &serde_json::Map<String, Value>, allowed: &[&str]) -> Option<String> {
    let extra: Vec<&str> = cfg
        .keys()
        .map(String::as_str)
        .filter(|k| !allowed.contains(k))
        .collect();
    (!extra.is_empty()).then(|| extra.join(", "))
}

/// Migrate a tf.keras 2.15 `compile_config` (optimizer, losses, metrics,
/// compile arguments). Returns what the optimizer's variables need, or why
/// it cannot be migrated.
pub(super) fn compile_config(
    cc: &mut Value,
    out: &mut Vec<Rewrite>,
) -> Result<Option<OptimizerVariables>, String> {
    let Some(cc) = cc.as_object_mut() else {
        return Err("compile_config is not a JSON object".into());
    };
    const KEYS: &[&str] = &[
        "optimizer",
        "loss",
        "metrics",
        "loss_weights",
        "weighted_metrics",
        "run_eagerly",
        "steps_per_execution",
        "jit_compile",
    ];
    if let Some(extra) = unknown_keys(cc, KEYS) {
        return Err(format!(
            "compile_config holds {extra}, which Keras 3's compile does not take"
        ));
    }
    let optimizer = match cc.get_mut("optimizer") {
        None | Some(Value::Null) => None,
        Some(o) => {
            if let Value::String(name) = o {
                let config = optimizer_by_name(name).ok_or_else(|| {
                    format!(
                        "no migration rule for the optimizer {o} (krepair migrate knows the names {})",
                        OPTIMIZER_NAMES.iter().map(|n| n.0).collect::<Vec<_>>().join(", ")
                    )
                })?;
                out.push(compile_rewrite(
                    Rule::OptimizerByName,
                    "optimizer".into(),
                    o.clone(),
                    Some(config.clone()),
                ));
                *o = config;
            }
            optimizer(o, out)?
        }
    };
    if let Some(loss) = cc.get_mut("loss") {
        losses(loss, "loss", out)?;
    }
    for key in ["metrics", "weighted_metrics"] {
        if let Some(m) = cc.get(key) {
            check_metrics(m, key)?;
        }
    }
    match cc.get("loss_weights") {
        None | Some(Value::Null | Value::Number(_)) => {}
        Some(Value::Array(a)) if a.iter().all(Value::is_number) => {}
        Some(Value::Object(o)) if o.values().all(Value::is_number) => {}
        Some(other) => {
            return Err(format!(
                "compile_config.loss_weights {other} is not a number, list or dict of numbers"
            ))
        }
    }
    for (key, default) in [
        ("run_eagerly", Value::from(false)),
        ("steps_per_execution", Value::from(1)),
        ("jit_compile", Value::from("auto")),
    ] {
        if cc.get(key).is_some_and(Value::is_null) {
            out.push(compile_rewrite(
                Rule::CompileDefaults,
                key.into(),
                Value::Null,
                Some(default.clone()),
            ));
            cc.insert(key.into(), default);
        }
    }
    Ok(optimizer)
}

/// A tf.keras optimizer `o` (edited in place): its module, its arguments,
/// and what its saved variables need (None when they are in Keras 3's
/// layout already), or why it cannot be migrated.
fn optimizer(o: &mut Value, out: &mut Vec<Rewrite>) -> Result<Option<OptimizerVariables>, String> {
    let class = o
        .get("class_name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let module = o
        .get("module")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let (own_keys, mapped) = optimizer_class(o, &class, &module)?;
    let drop_state = !mapped;
    let legacy = module == "keras.optimizers.legacy";
    optimizer_module(o, &class, &module, out)?;
    let Some(cfg) = o.get_mut("config").and_then(Value::as_object_mut) else {
        return Err(format!("the optimizer `{class}` has no config"));
    };
    if legacy {
        legacy_decay(cfg, &class, out)?;
    }
    let tf_layout = tf_keras_arguments(cfg, &class, out)?;
    let allowed: Vec<&str> = OPTIMIZER_BASE_KEYS
        .iter()
        .chain(own_keys)
        .copied()
        .collect();
    if let Some(extra) = unknown_keys(cfg, &allowed) {
        return Err(format!(
            "the optimizer `{class}` has arguments Keras 3 does not take: {extra}"
        ));
    }
    if !tf_layout && !legacy {
        return Ok(None);
    }
    let learning_rate = learning_rate(cfg, &class, out)?;
    let (slots_per_variable, drop_slots) = slots(&class, cfg);
    Ok(Some(OptimizerVariables {
        class,
        learning_rate,
        slots_per_variable,
        drop_slots,
        legacy,
        drop_state: drop_state && !legacy,
    }))
}

/// The optimizer `o` of `class` is in [`KNOWN_OPTIMIZERS`] (its variables
/// mapped: true) or [`UNMAPPED_OPTIMIZERS`] (false): the keys its Keras 3
/// class takes beyond the base optimizer's, and which table it is in.
fn optimizer_class(
    o: &Value,
    class: &str,
    module: &str,
) -> Result<(&'static [&'static str], bool), String> {
    let mapped = KNOWN_OPTIMIZERS.iter().find(|(c, _)| *c == class);
    let unmapped = UNMAPPED_OPTIMIZERS.iter().find(|(c, _)| *c == class);
    let Some(&(_, own_keys)) = mapped.or(unmapped) else {
        return Err(format!(
            "no migration rule for the optimizer {} (krepair migrate knows {})",
            if o.is_string() {
                o.to_string()
            } else {
                format!("`{module}.{class}`")
            },
            KNOWN_OPTIMIZERS
                .iter()
                .chain(UNMAPPED_OPTIMIZERS)
                .map(|k| k.0)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    Ok((own_keys, mapped.is_some()))
}

/// The optimizer's `module` becomes Keras 3's `keras.optimizers` (rules
/// `legacy-optimizer` and `optimizer-module`); any other is refused.
fn optimizer_module(
    o: &mut Value,
    class: &str,
    module: &str,
    out: &mut Vec<Rewrite>,
) -> Result<(), String> {
    match module {
        "keras.optimizers" => {}
        "keras.optimizers.legacy" => {
            out.push(compile_rewrite(
                Rule::LegacyOptimizer,
                "optimizer.module".into(),
                Value::from(module),
                Some(Value::from("keras.optimizers")),
            ));
            o["module"] = Value::from("keras.optimizers");
        }
        "keras.optimizers.experimental" => {
            out.push(compile_rewrite(
                Rule::OptimizerModule,
                "optimizer.module".into(),
                Value::from(module),
                Some(Value::from("keras.optimizers")),
            ));
            o["module"] = Value::from("keras.optimizers");
        }
        _ => {
            return Err(format!(
                "no migration rule for the optimizer `{module}.{class}` (legacy optimizers keep other variables)"
            ))
        }
    }
    Ok(())
}

/// A legacy optimizer's config (OptimizerV2.get_config: name, decay, the
/// hyperparameters, and clipnorm, global_clipnorm, clipvalue when set):
/// a `decay` of 0 is removed; any other is refused.
fn legacy_decay(
    cfg: &mut serde_json::Map<String, Value>,
    class: &str,
    out: &mut Vec<Rewrite>,
) -> Result<(), String> {
    match cfg.get("decay") {
        None => {}
        Some(d) if d.as_f64() == Some(0.0) => {
            let old = cfg.shift_remove("decay").unwrap_or(Value::Null);
            out.push(compile_rewrite(
                Rule::LegacyOptimizer,
                "optimizer.config.decay".into(),
                old,
                None,
            ));
        }
        Some(d) => {
            return Err(format!(
                "the legacy optimizer `{class}` has decay {d}: Keras 3 optimizers take no decay (a schedule would stand for it; not verified)"
            ))
        }
    }
    Ok(())
}

/// Remove the arguments tf.keras writes and Keras 3 does not take
/// (`jit_compile`, `is_legacy_optimizer`: rule `optimizer-arguments`).
/// True when the variables are still in tf.keras's layout.
fn tf_keras_arguments(
    cfg: &mut serde_json::Map<String, Value>,
    class: &str,
    out: &mut Vec<Rewrite>,
) -> Result<bool, String> {
    // tf.keras always writes is_legacy_optimizer; Keras 3 never does. Its
    // presence is what marks the variables as still in tf.keras's layout.
    let tf_layout = match cfg.get("is_legacy_optimizer") {
        None => false,
        Some(Value::Bool(false)) => true,
        Some(v) => return Err(format!("the optimizer `{class}` is a legacy optimizer (is_legacy_optimizer {v}): its variables are laid out differently")),
    };
    for key in ["jit_compile", "is_legacy_optimizer"] {
        if let Some(old) = cfg.shift_remove(key) {
            out.push(compile_rewrite(
                Rule::OptimizerArguments,
                format!("optimizer.config.{key}"),
                old,
                None,
            ));
        }
    }
    Ok(tf_layout)
}

/// The learning rate, for Keras 3's `learning_rate` variable; None for a
/// schedule (checked by [`schedule`]), for which Keras 3 tracks no such
/// variable.
fn learning_rate(
    cfg: &mut serde_json::Map<String, Value>,
    class: &str,
    out: &mut Vec<Rewrite>,
) -> Result<Option<f32>, String> {
    match cfg.get_mut("learning_rate") {
        Some(Value::Number(n)) => Ok(Some(n.as_f64().unwrap_or(f64::NAN) as f32)),
        Some(v) if v.is_object() => {
            schedule(v, out).map_err(|e| format!("the optimizer `{class}`: {e}"))?;
            Ok(None)
        }
        other => Err(format!(
            "the optimizer `{class}` has learning_rate {}",
            other.map_or("missing".to_string(), |v| v.to_string())
        )),
    }
}

/// The slot variables per trainable variable in tf.keras's layout of an
/// optimizer of `class` with config `cfg` (its EMA copy included), and
/// whether Keras 3 keeps none of them (SGD without momentum).
fn slots(class: &str, cfg: &serde_json::Map<String, Value>) -> (usize, bool) {
    let flag = |k: &str| cfg.get(k).and_then(Value::as_bool).unwrap_or(false);
    let positive = |k: &str| cfg.get(k).and_then(Value::as_f64).is_some_and(|m| m > 0.0);
    let (own_slots, drop_slots) = match class {
        "Adam" => (2 + usize::from(flag("amsgrad")), false),
        // tf.keras's SGD keeps a momentum slot even without momentum (and
        // never reads it); Keras 3's keeps none.
        "SGD" => (1, !positive("momentum")),
        _ => (
            1 + usize::from(positive("momentum")) + usize::from(flag("centered")),
            false,
        ),
    };
    (own_slots + usize::from(flag("use_ema")), drop_slots)
}

/// The name each learning-rate schedule takes when none is given
/// (tf.keras: `self.name or "ExponentialDecay"` at call time; Keras 3: the
/// constructor default).
pub const SCHEDULE_NAMES: &[(&str, &str)] = &[
    ("ExponentialDecay", "ExponentialDecay"),
    ("PiecewiseConstantDecay", "PiecewiseConstant"),
    ("PolynomialDecay", "PolynomialDecay"),
    ("InverseTimeDecay", "InverseTimeDecay"),
    ("CosineDecay", "CosineDecay"),
];

/// Learning-rate schedules (module `keras.optimizers.schedules`) and the
/// arguments of their Keras 3.0 constructors, which tf.keras 2.15 writes
/// alike (keras/optimizers/schedules/learning_rate_schedule.py).
pub const KNOWN_SCHEDULES: &[(&str, &[&str])] = &[
    (
        "ExponentialDecay",
        &[
            "initial_learning_rate",
            "decay_steps",
            "decay_rate",
            "staircase",
            "name",
        ],
    ),
    ("PiecewiseConstantDecay", &["boundaries", "values", "name"]),
    (
        "PolynomialDecay",
        &[
            "initial_learning_rate",
            "decay_steps",
            "end_learning_rate",
            "power",
            "cycle",
            "name",
        ],
    ),
    (
        "InverseTimeDecay",
        &[
            "initial_learning_rate",
            "decay_steps",
            "decay_rate",
            "staircase",
            "name",
        ],
    ),
    (
        "CosineDecay",
        &[
            "initial_learning_rate",
            "decay_steps",
            "alpha",
            "name",
            "warmup_target",
            "warmup_steps",
        ],
    ),
];

/// A serialized Keras object (a loss, a metric, a schedule: `what`) whose
/// class must be one of `table` in `module`, with a config: its class
/// name and the arguments Keras 3 takes, or why not.
fn known_class(
    v: &Value,
    module: &str,
    table: &[(&str, &'static [&'static str])],
    what: &str,
) -> Result<(String, &'static [&'static str]), String> {
    let class = v.get("class_name").and_then(Value::as_str).unwrap_or("");
    let m = v.get("module").and_then(Value::as_str).unwrap_or("");
    let known = table
        .iter()
        .find(|(c, _)| *c == class)
        .filter(|_| m == module);
    let Some(&(_, args)) = known else {
        return Err(format!("no migration rule for the {what} `{m}.{class}`"));
    };
    if !v.get("config").is_some_and(Value::is_object) {
        return Err(format!("the {what} `{class}` has no config"));
    }
    Ok((class.to_string(), args))
}

/// The config of an object [`known_class`] accepted.
fn config_of(v: &mut Value) -> &mut serde_json::Map<String, Value> {
    v["config"].as_object_mut().expect("checked by known_class")
}

/// Refuse the arguments of `cfg` that Keras 3's `class` does not take.
fn check_arguments(
    cfg: &serde_json::Map<String, Value>,
    args: &[&str],
    what: &str,
    class: &str,
) -> Result<(), String> {
    match unknown_keys(cfg, args) {
        Some(extra) => Err(format!(
            "the {what} `{class}` has arguments Keras 3 does not take: {extra}"
        )),
        None => Ok(()),
    }
}

/// Is this a learning-rate schedule Keras 3 reads as tf.keras wrote it
/// (once a null name has its default)?
fn schedule(v: &mut Value, out: &mut Vec<Rewrite>) -> Result<(), String> {
    let what = "learning-rate schedule";
    let (class, args) = known_class(v, "keras.optimizers.schedules", KNOWN_SCHEDULES, what)?;
    let cfg = config_of(v);
    check_arguments(cfg, args, what, &class)?;
    if cfg.get("name").is_some_and(Value::is_null) {
        let default = SCHEDULE_NAMES
            .iter()
            .find(|(c, _)| *c == class)
            .map_or(class.as_str(), |n| n.1);
        out.push(compile_rewrite(
            Rule::ScheduleName,
            "optimizer.config.learning_rate.config.name".into(),
            Value::Null,
            Some(Value::from(default)),
        ));
        cfg.insert("name".into(), Value::from(default));
    }
    Ok(())
}

/// A loss: a name, a loss class, or a list or dict of them (one per output).
fn losses(l: &mut Value, key: &str, out: &mut Vec<Rewrite>) -> Result<(), String> {
    match l {
        Value::Null => Ok(()),
        Value::String(name) => {
            if KNOWN_LOSS_NAMES.contains(&name.as_str()) {
                Ok(())
            } else {
                Err(format!("no migration rule for the loss `{name}`"))
            }
        }
        Value::Array(a) => a
            .iter_mut()
            .enumerate()
            .try_for_each(|(i, l)| losses(l, &format!("{key}[{i}]"), out)),
        Value::Object(o) if o.get("class_name").is_none() => o
            .iter_mut()
            .try_for_each(|(k, l)| losses(l, &format!("{key}.{k}"), out)),
        Value::Object(_) => {
            let (class, args) = known_class(l, "keras.losses", KNOWN_LOSSES, "loss")?;
            let cfg = config_of(l);
            if let Some(old) = cfg.shift_remove("fn") {
                out.push(compile_rewrite(
                    Rule::LossArguments,
                    format!("{key}.config.fn"),
                    old,
                    None,
                ));
            }
            if cfg.get("reduction").and_then(Value::as_str) == Some("auto") {
                let new = Value::from("sum_over_batch_size");
                out.push(compile_rewrite(
                    Rule::LossReduction,
                    format!("{key}.config.reduction"),
                    Value::from("auto"),
                    Some(new.clone()),
                ));
                cfg.insert("reduction".into(), new);
            }
            match cfg.get("reduction").and_then(Value::as_str) {
                None | Some("sum_over_batch_size" | "sum" | "none") => {}
                Some(r) => {
                    return Err(format!(
                        "the loss `{class}` has reduction `{r}`, which Keras 3 does not have"
                    ))
                }
            }
            check_arguments(cfg, args, "loss", &class)
        }
        other => Err(format!("compile_config.{key} {other} is not a loss")),
    }
}

/// Metrics: names, metric classes, or lists or dicts of them. Keras 3
/// reads what tf.keras writes for the known ones; nothing is rewritten.
fn check_metrics(m: &Value, key: &str) -> Result<(), String> {
    match m {
        Value::Null => Ok(()),
        Value::String(name) => {
            if KNOWN_METRIC_NAMES.contains(&name.as_str()) {
                Ok(())
            } else {
                Err(format!("no migration rule for the metric `{name}`"))
            }
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .try_for_each(|(i, m)| check_metrics(m, &format!("{key}[{i}]"))),
        Value::Object(o) if o.get("class_name").is_none() => o
            .iter()
            .try_for_each(|(k, m)| check_metrics(m, &format!("{key}.{k}"))),
        Value::Object(o) => {
            let (class, args) = known_class(m, "keras.metrics", KNOWN_METRICS, "metric")?;
            check_arguments(
                o["config"].as_object().expect("checked by known_class"),
                args,
                "metric",
                &class,
            )
        }
        other => Err(format!("compile_config.{key} {other} is not a metric")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::migrate::fixtures::{plan, tf212, tf215_compile, tf215_nested};
    use crate::passes::migrate::{self, Plan};

    fn plan_full(c: &mut serde_json::Value, v: Option<&str>) -> Result<Plan, migrate::Refusal> {
        migrate::plan(c, v)
    }
    use serde_json::json;

    #[test]
    fn an_optimizer_given_by_name_is_tf_kerass_optimizer_with_its_defaults() {
        let mut c = tf215_nested();
        c["compile_config"] = json!({"optimizer": "Adam", "loss": "mse", "metrics": ["mae"], "loss_weights": null, "weighted_metrics": null, "run_eagerly": null, "steps_per_execution": null, "jit_compile": null});
        let mut want_c = tf215_nested();
        want_c["compile_config"] = tf215_compile(
            "Adam",
            json!({"learning_rate": 0.0010000000474974513, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07, "amsgrad": false}),
        );
        let by_name = plan_full(&mut c, Some("2.15.0")).unwrap();
        let explicit = plan_full(&mut want_c, Some("2.15.0")).unwrap();
        assert!(by_name
            .rewrites
            .iter()
            .any(|r| r.code == Rule::OptimizerByName));
        assert_eq!(
            by_name.optimizer, explicit.optimizer,
            "the same variables' layout"
        );
        assert_eq!(
            c["compile_config"]["optimizer"],
            want_c["compile_config"]["optimizer"]
        );
        let sgd = optimizer_by_name("sgd").unwrap();
        assert_eq!(sgd["config"]["learning_rate"], 0.009999999776482582);
        let rms = optimizer_by_name("RMSprop").unwrap();
        assert_eq!(rms["config"]["ema_overwrite_frequency"], 100);
        c["compile_config"]["optimizer"] = json!("yogi");
        let e = plan_full(&mut c, Some("2.15.0")).unwrap_err();
        assert!(e.reason.contains("\"yogi\""), "{}", e.reason);
    }

    #[test]
    fn legacy_optimizers_become_keras_3_ones_without_state() {
        let mut c = tf212();
        c["compile_config"] = json!({"optimizer": {"module": "keras.optimizers.legacy", "class_name": "Adam",
            "config": {"name": "Adam", "learning_rate": 0.02, "decay": 0.0, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07, "amsgrad": false},
            "registered_name": null}, "loss": "mse", "metrics": ["mae"], "loss_weights": null,
            "weighted_metrics": null, "run_eagerly": null, "steps_per_execution": null, "jit_compile": null});
        let p = migrate::plan(&mut c, Some("2.12.0")).unwrap();
        let o = &c["compile_config"]["optimizer"];
        assert_eq!(o["module"], "keras.optimizers");
        assert!(o["config"].get("decay").is_none());
        let legacy: Vec<&str> = p
            .rewrites
            .iter()
            .filter(|r| r.code == Rule::LegacyOptimizer)
            .map(|r| r.key.as_str())
            .collect();
        assert_eq!(
            legacy,
            [
                "compile_config.optimizer.module",
                "compile_config.optimizer.config.decay"
            ]
        );
        let v = p.optimizer.unwrap();
        assert!(v.legacy && v.class == "Adam");
        // A decay has no exact Keras 3 equivalent verified.
        let mut c = tf212();
        c["compile_config"] = json!({"optimizer": {"module": "keras.optimizers.legacy", "class_name": "SGD",
            "config": {"name": "SGD", "learning_rate": 0.1, "decay": 0.01, "momentum": 0.0, "nesterov": false}}});
        let r = migrate::plan(&mut c, Some("2.12.0")).unwrap_err();
        assert!(r.reason.contains("decay 0.01"), "{}", r.reason);
    }

    #[test]
    fn a_compile_config_is_migrated_with_its_optimizer_layout() {
        let mut c = tf215_nested();
        c["compile_config"] = tf215_compile(
            "Adam",
            json!({"beta_1": 0.9, "beta_2": 0.99, "epsilon": 1e-7, "amsgrad": false}),
        );
        let p = migrate::plan(&mut c, Some("2.15.0")).unwrap();
        let compile: Vec<(Rule, &str)> = p
            .rewrites
            .iter()
            .filter(|r| r.key.starts_with("compile_config."))
            .map(|r| (r.code, r.key.as_str()))
            .collect();
        assert_eq!(
            compile,
            [
                (
                    Rule::OptimizerArguments,
                    "compile_config.optimizer.config.jit_compile"
                ),
                (
                    Rule::OptimizerArguments,
                    "compile_config.optimizer.config.is_legacy_optimizer"
                ),
                (Rule::LossArguments, "compile_config.loss.config.fn"),
                (Rule::LossReduction, "compile_config.loss.config.reduction"),
                (Rule::CompileDefaults, "compile_config.run_eagerly"),
                (Rule::CompileDefaults, "compile_config.steps_per_execution"),
                (Rule::CompileDefaults, "compile_config.jit_compile"),
            ]
        );
        assert_eq!(
            p.optimizer,
            Some(OptimizerVariables {
                class: "Adam".into(),
                learning_rate: Some(0.01),
                slots_per_variable: 2,
                drop_slots: false,
                legacy: false,
                drop_state: false,
            })
        );
        let cc = &c["compile_config"];
        assert!(cc["optimizer"]["config"].get("jit_compile").is_none());
        assert_eq!(cc["loss"]["config"]["reduction"], "sum_over_batch_size");
        assert_eq!(cc["steps_per_execution"], 1);
        // Idempotent: the optimizer layout is planned once, with the
        // config rewrite that marks it done.
        let again = migrate::plan(&mut c, Some("2.15.0")).unwrap();
        assert_eq!(again, Plan::default());
    }

    #[test]
    fn optimizer_layouts_follow_each_class() {
        let layout = |class: &str, extra: Value| {
            let mut c = tf215_nested();
            c["compile_config"] = tf215_compile(class, extra);
            migrate::plan(&mut c, Some("2.15.0")).map(|p| {
                let o = p.optimizer.unwrap();
                (o.slots_per_variable, o.drop_slots)
            })
        };
        assert_eq!(
            layout("SGD", json!({"momentum": 0.9, "nesterov": true})),
            Ok((1, false))
        );
        assert_eq!(
            layout("SGD", json!({"momentum": 0.0, "nesterov": false})),
            Ok((1, true))
        );
        assert_eq!(
            layout(
                "RMSprop",
                json!({"rho": 0.9, "momentum": 0.5, "epsilon": 1e-7, "centered": true})
            ),
            Ok((3, false))
        );
        assert_eq!(
            layout(
                "RMSprop",
                json!({"rho": 0.9, "momentum": 0.0, "epsilon": 1e-7, "centered": false})
            ),
            Ok((1, false))
        );
        assert_eq!(
            layout("Adam", json!({"amsgrad": true, "use_ema": true})),
            Ok((4, false))
        );
        // A schedule: Keras 3 tracks no learning-rate variable.
        let mut c = tf215_nested();
        c["compile_config"] = tf215_compile(
            "Adam",
            json!({"learning_rate": {"module": "keras.optimizers.schedules", "class_name": "ExponentialDecay", "config": {"initial_learning_rate": 0.05, "decay_steps": 1, "decay_rate": 0.5, "staircase": false, "name": null}, "registered_name": null}}),
        );
        let p = migrate::plan(&mut c, Some("2.15.0")).unwrap();
        assert_eq!(p.optimizer.unwrap().learning_rate, None);
        assert!(p
            .rewrites
            .iter()
            .any(|r| r.code == Rule::ScheduleName && r.new == Some(json!("ExponentialDecay"))));
        // Unmapped optimizers keep their config; their state is dropped.
        for (class, extra) in [
            (
                "AdamW",
                json!({"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": false}),
            ),
            (
                "Adagrad",
                json!({"initial_accumulator_value": 0.1, "epsilon": 1e-7}),
            ),
            (
                "Nadam",
                json!({"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}),
            ),
        ] {
            let mut c = tf215_nested();
            c["compile_config"] = tf215_compile(class, extra);
            let p = migrate::plan(&mut c, Some("2.15.0")).unwrap();
            let o = p.optimizer.unwrap();
            assert!(o.drop_state && !o.legacy, "{class}");
            assert!(c["compile_config"]["optimizer"]["config"]
                .get("jit_compile")
                .is_none());
        }
        let mut c = tf215_nested();
        c["compile_config"] = tf215_compile("Adam", json!({}));
        assert!(
            !migrate::plan(&mut c, Some("2.15.0"))
                .unwrap()
                .optimizer
                .unwrap()
                .drop_state
        );
        // SGD's module moves.
        let mut c = tf215_nested();
        c["compile_config"] = tf215_compile("SGD", json!({"momentum": 0.9}));
        let p = migrate::plan(&mut c, Some("2.15.0")).unwrap();
        assert!(p.rewrites.iter().any(|r| r.code == Rule::OptimizerModule));
        assert_eq!(
            c["compile_config"]["optimizer"]["module"],
            "keras.optimizers"
        );

        for (class, extra, needle) in [
            (
                "Adagrad",
                json!({"amsgrad": false}),
                "the optimizer `Adagrad` has arguments Keras 3 does not take: amsgrad",
            ),
            (
                "Yogi",
                json!({}),
                "no migration rule for the optimizer `keras.optimizers.Yogi`",
            ),
            (
                "Adam",
                json!({"is_legacy_optimizer": true}),
                "legacy optimizer",
            ),
            (
                "Adam",
                json!({"learning_rate": {"module": "keras.optimizers.schedules", "class_name": "PowerDecay", "config": {}}}),
                "schedule `keras.optimizers.schedules.PowerDecay`",
            ),
            (
                "Adam",
                json!({"learning_rate": {"module": "keras.optimizers.schedules", "class_name": "ExponentialDecay", "config": {"initial_learning_rate": 0.1, "warmup": 1}}}),
                "does not take: warmup",
            ),
            (
                "Adam",
                json!({"decay": 0.1}),
                "arguments Keras 3 does not take: decay",
            ),
        ] {
            let e = layout(class, extra).unwrap_err();
            assert!(e.reason.contains(needle), "{class}: {}", e.reason);
        }
    }

    #[test]
    fn losses_and_metrics_without_a_rule_are_refused() {
        for (key, value, needle) in [
            ("loss", json!("huber_loss"), "the loss `huber_loss`"),
            (
                "loss",
                json!({"module": "keras.losses", "class_name": "BinaryFocalCrossentropy", "config": {}}),
                "BinaryFocalCrossentropy",
            ),
            (
                "loss",
                json!({"module": "keras.losses", "class_name": "MeanSquaredError", "config": {"reduction": "sum_over_batch_size", "name": "m", "extra": 1}}),
                "does not take: extra",
            ),
            ("metrics", json!(["auc"]), "the metric `auc`"),
            (
                "metrics",
                json!([{"module": "keras.metrics", "class_name": "AUC", "config": {}}]),
                "keras.metrics.AUC",
            ),
            ("loss_weights", json!("x"), "loss_weights"),
        ] {
            let mut c = tf215_nested();
            c["compile_config"] = tf215_compile("Adam", json!({}));
            c["compile_config"][key] = value;
            let e = plan(&mut c, Some("2.15.0")).unwrap_err();
            assert!(e.reason.contains(needle), "{key}: {}", e.reason);
        }
        // Per-output losses and metrics are each migrated.
        let mut c = tf215_nested();
        c["compile_config"] = tf215_compile("Adam", json!({}));
        c["compile_config"]["loss"] = json!({"a": "mse", "b": {"module": "keras.losses", "class_name": "MeanAbsoluteError", "config": {"reduction": "auto", "name": "mae", "fn": "mean_absolute_error"}, "registered_name": null}});
        c["compile_config"]["metrics"] = json!({"a": ["mae"], "b": [["accuracy"]]});
        let rw = plan(&mut c, Some("2.15.0")).unwrap();
        assert!(rw
            .iter()
            .any(|r| r.key == "compile_config.loss.b.config.fn"));
    }
}
