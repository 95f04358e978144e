//! The tf.keras 2.x to Keras 3 migration pass over `config.json` (pure: a
//! JSON tree in, rewrites and a refusal out; no files).
//!
//! `krepair migrate` (issue #10) handles archives written by tf.keras
//! 2.12 to 2.15 whose layers are in [`KNOWN_LAYERS`] (and
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

use crate::plan::{Rule, Version};

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
    "Subtract",
    "Multiply",
    "Concatenate",
    "ZeroPadding2D",
    "Reshape",
    "Embedding",
    "LSTM",
    "GRU",
    "Bidirectional",
    "Discretization",
    "CategoryEncoding",
];

/// Model classes: their configs hold `layers`.
const MODELS: &[&str] = &["Functional", "Sequential", "Model"];

/// One rewrite of the config, with its evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rewrite {
    /// Stable code: the rule that rewrote it.
    pub code: Rule,
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
];

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

/// The migration of one config: its rewrites, and what the weights need.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// The config rewrites, in config order (the compile config last).
    pub rewrites: Vec<Rewrite>,
    /// The optimizer variables to lay out for Keras 3.
    pub optimizer: Option<OptimizerVariables>,
}

/// How tf.keras 2.13 and 2.14 name the weights groups of a model's
/// layers, under `_layer_checkpoint_dependencies` where 2.15 and Keras 3
/// write `layers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Numbering {
    /// tf.keras 2.14: as Keras 3 (`dense`, `dense_1`, ...).
    Plain,
    /// tf.keras 2.12 and 2.13: a layer with weights is listed twice in
    /// `_layer_checkpoint_dependencies` (`layer_with_weights-k` and
    /// `layer-i`), and the second listing uses up a number although it is
    /// skipped (keras #18830): `dense`, `dense_2`, `dense_4`, ...
    Doubled,
}

/// What [`legacy_layout`] needs to know of the weights file, by path.
pub trait WeightsTree {
    /// Is there a group at `path`?
    fn is_group(&self, path: &str) -> bool;
    /// Does the group at `path` hold a dataset anywhere below it?
    fn has_datasets(&self, path: &str) -> bool;
    /// How many links the group at `path` holds.
    fn links(&self, path: &str) -> usize;
}

/// One rename in the weights file: the link `from` in the group `parent`
/// becomes `to`. `parent` is named as it is once the renames before this
/// one are done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rename {
    /// The group holding the link.
    pub parent: String,
    /// Its name now.
    pub from: String,
    /// Its Keras 3 name.
    pub to: String,
}

/// The numbering of a tf.keras version's weights groups, when its layout
/// is not Keras 3's (2.13 and 2.14).
pub fn numbering_of(keras_version: Option<&str>) -> Option<Numbering> {
    match keras_version.and_then(Version::parse) {
        Some(Version(2, 14)) => Some(Numbering::Plain),
        Some(Version(2, 12 | 13)) => Some(Numbering::Doubled),
        _ => None,
    }
}

/// Where a Keras 3 weights path is before `renames` (from
/// [`legacy_layout`]) are applied.
pub fn legacy_path(renames: &[Rename], path: &str) -> String {
    let mut p = path.to_string();
    for r in renames.iter().rev() {
        let to = join_path(&r.parent, &r.to);
        if p == to || p.starts_with(&format!("{to}/")) {
            p = format!("{}{}", join_path(&r.parent, &r.from), &p[to.len()..]);
        }
    }
    p
}

/// The tf.keras 2.13/2.14 container name.
pub const LEGACY_CONTAINER: &str = "_layer_checkpoint_dependencies";

/// `a/b`, or `b` at the root (`a` empty).
pub fn join_path(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}/{b}")
    }
}

/// The renames that give a tf.keras 2.13/2.14 weights file the layout of
/// 2.15 and Keras 3, in the order to apply them (each container first,
/// then its layers, then the models inside). Empty when the root holds no
/// `_layer_checkpoint_dependencies` (the layout is Keras 3's already,
/// which keeps the migration idempotent).
pub fn legacy_layout(
    config: &Value,
    numbering: Numbering,
    tree: &dyn WeightsTree,
) -> Result<Vec<Rename>, Refusal> {
    let mut out = Vec::new();
    if !tree.is_group(LEGACY_CONTAINER) {
        return Ok(out);
    }
    container_layout(config, "", "", "", numbering, tree, &mut out)?;
    Ok(out)
}

fn container_layout(
    model: &Value,
    old: &str,
    new: &str,
    path: &str,
    numbering: Numbering,
    tree: &dyn WeightsTree,
    out: &mut Vec<Rename>,
) -> Result<(), Refusal> {
    let refuse = |layer: &str, reason: String| Refusal {
        layer: layer.to_string(),
        reason,
    };
    let old_c = join_path(old, LEGACY_CONTAINER);
    let new_c = join_path(new, "layers");
    let sequential = model.get("class_name").and_then(Value::as_str) == Some("Sequential");
    let layers = model["config"]["layers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let children: Vec<&Value> = layers
        .iter()
        .filter(|l| {
            !(sequential && l.get("class_name").and_then(Value::as_str) == Some("InputLayer"))
        })
        .collect();
    if !tree.is_group(&old_c) {
        if children.is_empty() {
            return Ok(());
        }
        return Err(refuse(
            path,
            format!("no `{old_c}` group in the weights, where tf.keras keeps this model's layers"),
        ));
    }
    if tree.is_group(&join_path(old, "layers")) {
        return Err(refuse(
            path,
            format!(
                "the weights hold both `{old_c}` and `{}`",
                join_path(old, "layers")
            ),
        ));
    }
    if tree.links(&old_c) != children.len() {
        return Err(refuse(
            path,
            format!(
                "`{old_c}` holds {} groups, but the config lists {} layers",
                tree.links(&old_c),
                children.len()
            ),
        ));
    }
    out.push(Rename {
        parent: new.to_string(),
        from: LEGACY_CONTAINER.into(),
        to: "layers".into(),
    });
    // Per class: the next tf.keras number and the next Keras 3 number.
    let mut counters: std::collections::HashMap<String, (u32, u32)> = Default::default();
    let mut nested = Vec::new();
    for l in children {
        let class = l.get("class_name").and_then(Value::as_str).unwrap_or("");
        let base = crate::view::config::to_snake_case(class);
        let (tf_n, k3_n) = counters.entry(base.clone()).or_insert((0, 0));
        let name = |n: u32| {
            if n == 0 {
                base.clone()
            } else {
                format!("{base}_{n}")
            }
        };
        let (tf_name, k3_name) = (name(*tf_n), name(*k3_n));
        let layer = child_path(path, l);
        let old_g = join_path(&old_c, &tf_name);
        if !tree.is_group(&old_g) {
            return Err(refuse(
                &layer,
                format!("no weights group `{old_g}`, where tf.keras numbers this layer"),
            ));
        }
        *tf_n += match numbering {
            Numbering::Doubled if tree.has_datasets(&old_g) => 2,
            _ => 1,
        };
        *k3_n += 1;
        if tf_name != k3_name {
            out.push(Rename {
                parent: new_c.clone(),
                from: tf_name,
                to: k3_name.clone(),
            });
        }
        if l.get("config")
            .and_then(|c| c.get("layers"))
            .is_some_and(Value::is_array)
        {
            nested.push((l, old_g, join_path(&new_c, &k3_name), layer));
        }
    }
    for (l, old_g, new_g, layer) in nested {
        container_layout(l, &old_g, &new_g, &layer, numbering, tree, out)?;
    }
    Ok(())
}

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
/// `keras_version`.
pub fn plan(config: &mut Value, keras_version: Option<&str>) -> Result<Plan, Refusal> {
    let refuse = |layer: &str, reason: String| Refusal {
        layer: layer.to_string(),
        reason,
    };
    // 2.13 and 2.14 weights also need [`legacy_layout`] (by
    // [`numbering_of`] the version), once the weights are open.
    let legacy_form = match keras_version.and_then(Version::parse) {
        Some(Version(2, 12)) => true,
        Some(Version(2, 13..=15)) => false,
        Some(Version(2, m)) => {
            return Err(refuse(
                "",
                format!("saved by tf.keras 2.{m}: krepair migrate handles tf.keras 2.12 to 2.15 archives (2.11 and older write no .keras archive Keras 3 can read)"),
            ))
        }
        _ => return Ok(Plan::default()),
    };
    let mut rewrites = Vec::new();
    if legacy_form {
        legacy_modules(config, "", &mut rewrites)?;
    }
    visit(config, "", &mut rewrites)?;
    let optimizer = match config.get_mut("compile_config") {
        Some(cc) if !cc.is_null() && cc.as_object().is_none_or(|o| !o.is_empty()) => {
            compile_config(cc, &mut rewrites).map_err(|reason| refuse("", reason))?
        }
        _ => None,
    };
    Ok(Plan {
        rewrites,
        optimizer,
    })
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
fn compile_config(
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
        Some(o) => optimizer(o, out)?,
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
    let drop_state = mapped.is_none();
    let legacy = module == "keras.optimizers.legacy";
    match module.as_str() {
        "keras.optimizers" => {}
        "keras.optimizers.legacy" => {
            out.push(compile_rewrite(
                Rule::LegacyOptimizer,
                "optimizer.module".into(),
                Value::from(module.clone()),
                Some(Value::from("keras.optimizers")),
            ));
            o["module"] = Value::from("keras.optimizers");
        }
        "keras.optimizers.experimental" => {
            out.push(compile_rewrite(
                Rule::OptimizerModule,
                "optimizer.module".into(),
                Value::from(module.clone()),
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
    let Some(cfg) = o.get_mut("config").and_then(Value::as_object_mut) else {
        return Err(format!("the optimizer `{class}` has no config"));
    };
    if legacy {
        // OptimizerV2.get_config: name, decay, the hyperparameters, and
        // clipnorm, global_clipnorm, clipvalue when set.
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
    }
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
    let learning_rate = match cfg.get_mut("learning_rate") {
        Some(Value::Number(n)) => Some(n.as_f64().unwrap_or(f64::NAN) as f32),
        Some(v) if v.is_object() => {
            schedule(v, out).map_err(|e| format!("the optimizer `{class}`: {e}"))?;
            None
        }
        other => {
            return Err(format!(
                "the optimizer `{class}` has learning_rate {}",
                other.map_or("missing".to_string(), |v| v.to_string())
            ))
        }
    };
    let flag = |k: &str| cfg.get(k).and_then(Value::as_bool).unwrap_or(false);
    let positive = |k: &str| cfg.get(k).and_then(Value::as_f64).is_some_and(|m| m > 0.0);
    let (own_slots, drop_slots) = match class.as_str() {
        "Adam" => (2 + usize::from(flag("amsgrad")), false),
        // tf.keras's SGD keeps a momentum slot even without momentum (and
        // never reads it); Keras 3's keeps none.
        "SGD" => (1, !positive("momentum")),
        _ => (
            1 + usize::from(positive("momentum")) + usize::from(flag("centered")),
            false,
        ),
    };
    Ok(Some(OptimizerVariables {
        class,
        learning_rate,
        slots_per_variable: own_slots + usize::from(flag("use_ema")),
        drop_slots,
        legacy,
        drop_state: drop_state && !legacy,
    }))
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
/// [`visit`] read one form. The root model has its module already.
fn legacy_modules(entry: &mut Value, path: &str, out: &mut Vec<Rewrite>) -> Result<(), Refusal> {
    let refuse = |reason: String| Refusal {
        layer: path.to_string(),
        reason,
    };
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
        if class.contains('>') {
            return Err(refuse(format!("the custom class `{class}` is in tf.keras 2.12's legacy form, without its module: no migration rule for it yet")));
        }
        let module = match class.as_str() {
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
        let Some(obj) = v.as_object_mut() else {
            continue;
        };
        if obj.contains_key("module") || !obj.contains_key("class_name") {
            continue;
        }
        let inner = obj
            .get("class_name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if matches!(key.as_str(), "layer" | "backward_layer") {
            legacy_modules(v, &format!("{path}/{key}"), out)?;
            continue;
        }
        if inner == "__numpy__" {
            let scalar = obj
                .get("config")
                .and_then(|c| c.get("value"))
                .filter(|v| v.is_number())
                .cloned();
            let dtype = obj
                .get("config")
                .and_then(|c| c.get("dtype"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let Some(number) = scalar.filter(|_| NUMPY_SCALARS.contains(&dtype)) else {
                return Err(refuse(format!(
                    "`config.{key}` is a NumPy value {} that is not a float or int scalar: no migration rule for it",
                    Value::Object(obj.clone())
                )));
            };
            out.push(Rewrite {
                code: Rule::NumpyScalar,
                layer: path.to_string(),
                key: format!("config.{key}"),
                old: v.clone(),
                new: Some(number.clone()),
            });
            *v = number;
            continue;
        }
        let Some(module) = legacy_object_module(key, &inner) else {
            return Err(refuse(format!(
                "`config.{key}` is a `{inner}` in tf.keras 2.12's legacy form: no migration rule for it"
            )));
        };
        out.push(Rewrite {
            code: Rule::LegacyModule,
            layer: path.to_string(),
            key: format!("config.{key}.module"),
            old: Value::Null,
            new: Some(Value::from(module)),
        });
        obj.insert("module".into(), Value::from(module));
    }
    Ok(())
}

/// Is this layer entry a tf.keras `TFOpLambda` (a TensorFlow op applied to
/// Keras tensors)? tf.keras 2.13+ writes its module, 2.12 none.
fn is_tf_op_lambda(entry: &Value) -> bool {
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
    match (function, &first, &second) {
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
                code: Rule::ModelModule,
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
        split_encoded_discretizations(entry, path, out)?;
        return Ok(());
    }
    if is_tf_op_lambda(entry) {
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
                code: Rule::BatchInputShape,
                layer: path.to_string(),
                key: "config.batch_input_shape".into(),
                old,
                new: None,
            });
        }
    }
    if class == "CategoryEncoding" {
        match cfg.get("sparse") {
            None => {}
            Some(Value::Bool(false)) => {
                let old = cfg.shift_remove("sparse").unwrap_or(Value::Null);
                out.push(Rewrite {
                    code: Rule::CategoryEncodingSparse,
                    layer: path.to_string(),
                    key: "config.sparse".into(),
                    old,
                    new: None,
                });
            }
            Some(v) => {
                return Err(Refusal {
                    layer: path.to_string(),
                    reason: format!(
                    "CategoryEncoding with sparse {v}: Keras 3.0 has no sparse CategoryEncoding"
                ),
                })
            }
        }
    }
    if class == "Discretization" {
        if let Some(old) = cfg.shift_remove("trainable") {
            out.push(Rewrite {
                code: Rule::DiscretizationTrainable,
                layer: path.to_string(),
                key: "config.trainable".into(),
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
                code: Rule::OneElementAxis,
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
                    code: Rule::DepthwiseGroups,
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
    if matches!(class.as_str(), "LSTM" | "GRU") {
        match cfg.get("time_major") {
            None => {}
            Some(Value::Bool(false)) => {
                let old = cfg.shift_remove("time_major").unwrap_or(Value::Null);
                out.push(Rewrite {
                    code: Rule::RnnTimeMajor,
                    layer: path.to_string(),
                    key: "config.time_major".into(),
                    old,
                    new: None,
                });
            }
            Some(v) => {
                return Err(Refusal {
                    layer: path.to_string(),
                    reason: format!(
                        "{class} with time_major {v}: Keras 3 RNNs are batch-major only"
                    ),
                })
            }
        }
    }
    for (class_of, key, code) in [
        ("GRU", "implementation", Rule::GruImplementation),
        ("Embedding", "input_length", Rule::EmbeddingInputLength),
    ] {
        if class == class_of {
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
    }
    for (key, v) in cfg.iter_mut() {
        let orthogonal = v.get("module").and_then(Value::as_str) == Some("keras.initializers")
            && v.get("class_name").and_then(Value::as_str) == Some("Orthogonal");
        if orthogonal {
            out.push(Rewrite {
                code: Rule::OrthogonalInitializer,
                layer: path.to_string(),
                key: format!("config.{key}.class_name"),
                old: Value::from("Orthogonal"),
                new: Some(Value::from("OrthogonalInitializer")),
            });
            v["class_name"] = Value::from("OrthogonalInitializer");
        }
    }
    if class == "Bidirectional" {
        // The wrapped layers are layer entries of their own.
        for key in ["layer", "backward_layer"] {
            if let Some(inner) = cfg.get_mut(key).filter(|v| v.is_object()) {
                visit(inner, &format!("{path}/{key}"), out)?;
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
                code: Rule::DtypePolicy,
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

/// The output modes a Discretization encodes its bin indices in, which
/// Keras 3.0 to 3.13 give the wrong symbolic shape.
const ENCODED_MODES: &[&str] = &["one_hot", "multi_hot", "count"];

/// In a model's `layers`, split every Keras Discretization whose output
/// is encoded (one-hot, multi-hot, count) into an int-mode Discretization
/// and a CategoryEncoding right after it, which takes over every
/// reference to the Discretization's calls (rule
/// `discretization-encoding`). For an adapt-mode layer `num_tokens` is
/// left null for the Discretization pass to fill in.
fn split_encoded_discretizations(
    model: &mut Value,
    path: &str,
    out: &mut Vec<Rewrite>,
) -> Result<(), Refusal> {
    let sequential = model.get("class_name").and_then(Value::as_str) == Some("Sequential");
    let cfg = &mut model["config"];
    let Some(layers) = cfg.get_mut("layers").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    let mut names: std::collections::HashSet<String> = layers
        .iter()
        .filter_map(|l| l.get("config")?.get("name")?.as_str().map(str::to_string))
        .collect();
    let mut renamed: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    while i < layers.len() {
        let l = &layers[i];
        let is_disc = l.get("class_name").and_then(Value::as_str) == Some("Discretization")
            && l.get("module").and_then(Value::as_str) == Some("keras.layers");
        let mode = l
            .get("config")
            .and_then(|c| c.get("output_mode"))
            .and_then(Value::as_str)
            .unwrap_or("int")
            .to_string();
        if !is_disc || !ENCODED_MODES.contains(&mode.as_str()) {
            i += 1;
            continue;
        }
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
        let mut enc_name = format!("{name}_encoding");
        let mut n = 1;
        while names.contains(&enc_name) {
            enc_name = format!("{name}_encoding_{n}");
            n += 1;
        }
        names.insert(enc_name.clone());
        let tokens = match c.get("bin_boundaries") {
            Some(Value::Array(b)) => Value::from(b.len() + 1),
            _ => Value::Null,
        };
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
        // tf.keras one-hot encodes a (batch, 1) input as multi-hot does
        // (it expands the last axis only when it is not 1, and then
        // counts); Keras 3.0's CategoryEncoding one-hot keeps that axis
        // at run time, so such a layer is encoded multi-hot.
        let enc_mode = if mode == "one_hot" {
            match discretization_input_shape(layers, i, sequential).as_deref() {
                Some([_, Some(1)]) => "multi_hot",
                Some([_]) => "one_hot",
                Some(s) => {
                    return Err(refuse(format!(
                        "a one-hot Discretization on inputs of shape {}: tf.keras encodes only (batch,) and (batch, 1)",
                        Value::from(s.iter().map(|d| d.map_or(Value::Null, Value::from)).collect::<Vec<_>>())
                    )))
                }
                None => {
                    return Err(refuse(
                        "a one-hot Discretization whose input shape the config does not say (no build_config, no InputLayer feeding it)".into(),
                    ))
                }
            }
        } else {
            mode.as_str()
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
        let d = layers[i]["config"]
            .as_object_mut()
            .expect("checked: an object");
        d.insert("output_mode".into(), Value::from("int"));
        d.insert("dtype".into(), Value::from("int64"));
        d.shift_remove("sparse");
        d.insert("sparse".into(), Value::Bool(false));
        out.push(Rewrite {
            code: Rule::DiscretizationEncoding,
            layer: layer.clone(),
            key: "(the layer entry)".into(),
            old: Value::from(mode.clone()),
            new: Some(
                serde_json::json!({"output_mode": "int", "then": enc_name, "encoding": enc_mode}),
            ),
        });
        layers.insert(i + 1, enc);
        renamed.push((name, enc_name));
        i += 2;
    }
    if sequential || renamed.is_empty() {
        return Ok(());
    }
    // Every reference to a split Discretization now reads its encoding.
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
    // Anything still naming a split layer (a Keras 3 style node, a
    // reference inside call arguments) is not a form this rule rewrites.
    for (d, _) in &renamed {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A tf.keras 2.12 config: layers, nested models and initializers in
    /// the legacy form (as tf.keras 2.12.1 wrote them; see
    /// testdata/fixtures/migrate-tf2.12).
    fn tf212() -> Value {
        json!({"module": "keras.engine.functional", "class_name": "Functional", "registered_name": "Functional",
            "build_config": {"input_shape": [null, 4]},
            "config": {"name": "model", "layers": [
                {"class_name": "InputLayer", "config": {"batch_input_shape": [null, 4], "dtype": "float32", "name": "in"}, "name": "in", "inbound_nodes": []},
                {"class_name": "Sequential", "config": {"name": "seq", "layers": [
                    {"class_name": "InputLayer", "config": {"batch_input_shape": [null, 4], "name": "i2"}},
                    {"class_name": "Dense", "config": {"name": "d", "units": 2,
                        "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": null}},
                        "kernel_regularizer": {"class_name": "L2", "config": {"l2": 0.01}},
                        "bias_constraint": {"class_name": "NonNeg", "config": {}}}}]},
                    "name": "seq", "inbound_nodes": [[["in", 0, 0, {}]]]},
                {"class_name": "ReLU", "config": {"name": "r", "max_value": {"class_name": "__numpy__", "config": {"value": 6.0, "dtype": "float32"}}},
                    "name": "r", "inbound_nodes": [[["seq", 1, 0, {}]]]}],
                "input_layers": [["in", 0, 0]], "output_layers": [["r", 0, 0]]}})
    }

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

    #[test]
    fn legacy_optimizers_become_keras_3_ones_without_state() {
        let mut c = tf212();
        c["compile_config"] = json!({"optimizer": {"module": "keras.optimizers.legacy", "class_name": "Adam",
            "config": {"name": "Adam", "learning_rate": 0.02, "decay": 0.0, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07, "amsgrad": false},
            "registered_name": null}, "loss": "mse", "metrics": ["mae"], "loss_weights": null,
            "weighted_metrics": null, "run_eagerly": null, "steps_per_execution": null, "jit_compile": null});
        let p = super::plan(&mut c, Some("2.12.0")).unwrap();
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
        let r = super::plan(&mut c, Some("2.12.0")).unwrap_err();
        assert!(r.reason.contains("decay 0.01"), "{}", r.reason);
    }

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

    /// The config rewrites alone.
    fn plan(c: &mut Value, v: Option<&str>) -> Result<Vec<Rewrite>, Refusal> {
        super::plan(c, v).map(|p| p.rewrites)
    }

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
        let codes: Vec<(Rule, &str, &str)> = rw
            .iter()
            .map(|r| (r.code, r.layer.as_str(), r.key.as_str()))
            .collect();
        assert_eq!(
            codes,
            [
                (Rule::ModelModule, "", "module"),
                (Rule::NestedNodeIndex, "out", "inbound_nodes[0][0][1]"),
                (
                    Rule::BatchInputShape,
                    "block/d1",
                    "config.batch_input_shape"
                ),
                (Rule::BatchInputShape, "out", "config.batch_input_shape"),
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
            .any(|r| r.code == Rule::DtypePolicy && r.layer == "out"));
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

        // A nested Functional is renumbered like a Sequential on an
        // InputLayer.
        let mut c = tf215_nested();
        c["config"]["layers"][1]["class_name"] = "Functional".into();
        c["config"]["layers"][1]["module"] = "keras.src.engine.functional".into();
        let rw = plan(&mut c, Some("2.15.0")).unwrap();
        assert!(rw
            .iter()
            .any(|r| r.code == Rule::NestedNodeIndex && r.layer == "out"));
        assert!(rw
            .iter()
            .any(|r| r.code == Rule::ModelModule && r.layer == "block"));

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
            .contains("no migration rule for the optimizer \"adam\""));

        let mut c = tf215_nested();
        assert!(plan(&mut c, Some("2.11.0"))
            .unwrap_err()
            .reason
            .contains("2.11"));

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
                    "config.recurrent_initializer.class_name"
                ),
                (Rule::RnnTimeMajor, "gru", "config.time_major"),
                (Rule::GruImplementation, "gru", "config.implementation"),
                (Rule::EmbeddingInputLength, "emb", "config.input_length"),
            ]
        );
        let inner = &c["config"]["layers"][2]["config"]["layer"]["config"];
        // An LSTM keeps its implementation (Keras 3 takes it); the
        // initializer keeps its arguments and shared_object_id.
        assert_eq!(inner["implementation"], 2);
        assert_eq!(
            inner["recurrent_initializer"]["class_name"],
            "OrthogonalInitializer"
        );
        assert_eq!(inner["recurrent_initializer"]["shared_object_id"], 7);
        assert_eq!(plan(&mut c, Some("2.15.0")).unwrap(), vec![], "idempotent");

        let mut c = tf215_nested();
        c["config"]["layers"][2] = json!({"module": "keras.layers", "class_name": "GRU", "config": {"name": "gru", "time_major": true}, "registered_name": null, "inbound_nodes": []});
        assert!(plan(&mut c, Some("2.15.0"))
            .unwrap_err()
            .reason
            .contains("batch-major"));
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
            .any(|r| r.code == Rule::BatchInputShape && r.layer == "scaler/norm"));
    }

    /// A tf.keras 2.15 compile config as model.save writes it.
    fn tf215_compile(optimizer: &str, extra: Value) -> Value {
        let mut cfg = json!({"name": optimizer, "weight_decay": null, "clipnorm": null, "global_clipnorm": null, "clipvalue": null, "use_ema": false, "ema_momentum": 0.99, "ema_overwrite_frequency": null, "jit_compile": false, "is_legacy_optimizer": false, "learning_rate": 0.009999999776482582});
        for (k, v) in extra.as_object().unwrap() {
            cfg[k] = v.clone();
        }
        json!({
            "optimizer": {"module": if optimizer == "SGD" { "keras.optimizers.experimental" } else { "keras.optimizers" }, "class_name": optimizer, "config": cfg, "registered_name": null},
            "loss": {"module": "keras.losses", "class_name": "SparseCategoricalCrossentropy", "config": {"reduction": "auto", "name": "sparse_categorical_crossentropy", "from_logits": true, "ignore_class": null, "fn": "sparse_categorical_crossentropy"}, "registered_name": null},
            "metrics": ["accuracy", {"module": "keras.metrics", "class_name": "SparseTopKCategoricalAccuracy", "config": {"name": "top2", "dtype": "float32", "k": 2}, "registered_name": null}],
            "loss_weights": null, "weighted_metrics": null, "run_eagerly": null, "steps_per_execution": null, "jit_compile": null
        })
    }

    #[test]
    fn a_compile_config_is_migrated_with_its_optimizer_layout() {
        let mut c = tf215_nested();
        c["compile_config"] = tf215_compile(
            "Adam",
            json!({"beta_1": 0.9, "beta_2": 0.99, "epsilon": 1e-7, "amsgrad": false}),
        );
        let p = super::plan(&mut c, Some("2.15.0")).unwrap();
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
        let again = super::plan(&mut c, Some("2.15.0")).unwrap();
        assert_eq!(again, Plan::default());
    }

    #[test]
    fn optimizer_layouts_follow_each_class() {
        let layout = |class: &str, extra: Value| {
            let mut c = tf215_nested();
            c["compile_config"] = tf215_compile(class, extra);
            super::plan(&mut c, Some("2.15.0")).map(|p| {
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
        let p = super::plan(&mut c, Some("2.15.0")).unwrap();
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
            let p = super::plan(&mut c, Some("2.15.0")).unwrap();
            let o = p.optimizer.unwrap();
            assert!(o.drop_state && !o.legacy, "{class}");
            assert!(c["compile_config"]["optimizer"]["config"]
                .get("jit_compile")
                .is_none());
        }
        let mut c = tf215_nested();
        c["compile_config"] = tf215_compile("Adam", json!({}));
        assert!(
            !super::plan(&mut c, Some("2.15.0"))
                .unwrap()
                .optimizer
                .unwrap()
                .drop_state
        );
        // SGD's module moves.
        let mut c = tf215_nested();
        c["compile_config"] = tf215_compile("SGD", json!({"momentum": 0.9}));
        let p = super::plan(&mut c, Some("2.15.0")).unwrap();
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

    /// A weights tree given by its groups, and which hold datasets.
    struct Tree(Vec<(&'static str, bool)>);

    impl WeightsTree for Tree {
        fn is_group(&self, path: &str) -> bool {
            self.0.iter().any(|(p, _)| *p == path)
        }
        fn has_datasets(&self, path: &str) -> bool {
            self.0.iter().any(|(p, d)| *d && p.starts_with(path))
        }
        fn links(&self, path: &str) -> usize {
            self.0
                .iter()
                .filter(|(p, _)| {
                    p.strip_prefix(path)
                        .and_then(|r| r.strip_prefix('/'))
                        .is_some_and(|r| !r.is_empty() && !r.contains('/'))
                })
                .count()
        }
    }

    #[test]
    fn tf_keras_2_13_numbers_weighted_layers_by_twos() {
        // Input -> Dense -> Sequential(Input, Dense, Dropout, Dense) -> Dense,
        // as tf.keras 2.13 lays it out.
        let mut c = tf215_nested();
        c["config"]["layers"][1]["config"]["layers"]
            .as_array_mut()
            .unwrap()
            .extend([
                json!({"module": "keras.layers", "class_name": "Dropout", "config": {"name": "drop"}}),
                dense("d2", Value::Null),
            ]);
        let l = "_layer_checkpoint_dependencies";
        let tree = Tree(vec![
            (l, false),
            ("_layer_checkpoint_dependencies/input_layer", false),
            ("_layer_checkpoint_dependencies/sequential", false),
            (
                "_layer_checkpoint_dependencies/sequential/_layer_checkpoint_dependencies",
                false,
            ),
            (
                "_layer_checkpoint_dependencies/sequential/_layer_checkpoint_dependencies/dense",
                true,
            ),
            (
                "_layer_checkpoint_dependencies/sequential/_layer_checkpoint_dependencies/dropout",
                false,
            ),
            (
                "_layer_checkpoint_dependencies/sequential/_layer_checkpoint_dependencies/dense_2",
                true,
            ),
            ("_layer_checkpoint_dependencies/dense", true),
        ]);
        let r = legacy_layout(&c, Numbering::Doubled, &tree).unwrap();
        let got: Vec<(&str, &str, &str)> = r
            .iter()
            .map(|r| (r.parent.as_str(), r.from.as_str(), r.to.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("", l, "layers"),
                ("layers/sequential", l, "layers"),
                ("layers/sequential/layers", "dense_2", "dense_1"),
            ]
        );
        // Keras 3 paths back to where tf.keras 2.13 keeps them.
        assert_eq!(
            legacy_path(&r, "layers/sequential/layers/dense_1/vars"),
            "_layer_checkpoint_dependencies/sequential/_layer_checkpoint_dependencies/dense_2/vars"
        );
        assert_eq!(
            legacy_path(&r, "layers/dense/vars"),
            "_layer_checkpoint_dependencies/dense/vars"
        );
        assert_eq!(legacy_path(&r, "vars"), "vars");
        // 2.14 numbers by ones: the same tree is one group short.
        let e = legacy_layout(&c, Numbering::Plain, &tree).unwrap_err();
        assert!(e.reason.contains("dense_1"), "{}", e.reason);
        // A layer without its group, and groups the config does not list.
        let mut short = Tree(tree.0.clone());
        short.0.retain(|(p, _)| !p.ends_with("dense_2"));
        assert!(legacy_layout(&c, Numbering::Doubled, &short)
            .unwrap_err()
            .reason
            .contains("groups, but the config lists"));
        let mut extra = Tree(tree.0.clone());
        extra
            .0
            .push(("_layer_checkpoint_dependencies/stray", false));
        assert!(legacy_layout(&c, Numbering::Doubled, &extra).is_err());
        // Already in Keras 3's layout: nothing to do.
        let done = Tree(vec![("layers", false), ("layers/dense", true)]);
        assert_eq!(
            legacy_layout(&c, Numbering::Doubled, &done).unwrap(),
            vec![]
        );
    }

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
        assert_eq!(layers[1]["config"]["dtype"], "int64");
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

    #[test]
    fn every_rule_code_is_listed_once_and_reads_back() {
        let mut codes: Vec<&str> = Rule::ALL.iter().map(|r| r.as_str()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Rule::ALL.len());
        for r in Rule::ALL {
            let json = serde_json::to_string(r).unwrap();
            assert_eq!(serde_json::from_str::<Rule>(&json).unwrap(), *r);
        }
    }
}
