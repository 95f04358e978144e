//! A typed view of `config.json`: where the Normalization layers are, and
//! where Keras stored each one's variables.
//!
//! Pure: reads a parsed config through [`crate::view::json_tree::Json`] (the
//! arena tree a repair reads, or the `serde_json::Value` a migration
//! rewrites), does no I/O. The mapping from a
//! config layer to its HDF5 group follows `keras/src/saving/saving_lib.py`
//! (`_save_state`, `_save_container_state`): the layers of a Functional or
//! Sequential model are a list, and list items are named by the snake_case
//! of their class name, numbered `_1`, `_2`, ... in `model.layers` order.
//! Layer names are never used for the mapping (docs/keras-format.md §2).

use std::collections::HashMap;

use serde_json::Value;

use crate::view::json_span::{path_string, Seg};
use crate::view::json_tree::Json;

/// Where a Normalization layer's variables should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Locator {
    /// At `<group>/vars`, by Keras' naming of model layers.
    Group(String),
    /// Somewhere under `<group>` (a custom layer that holds the
    /// Normalization as an attribute); `key_path` is the chain of config
    /// keys under which its config was serialized, a hint for the
    /// attribute name.
    Within {
        /// The custom layer's group.
        group: String,
        /// The config keys leading to the Normalization config.
        key_path: Vec<String>,
    },
}

/// A layer that consumes a Normalization's output in the same Functional
/// model (used to recognise the EfficientNet "imagenet" branch).
#[derive(Clone, Debug, PartialEq)]
pub struct Consumer {
    /// Its class name.
    pub class_name: String,
    /// Its layer name.
    pub name: String,
    /// Its config, kept for a Rescaling only (`scale`, `offset`: the
    /// EfficientNet signature); null for other classes, so a layer feeding
    /// thousands of others does not copy all their configs.
    pub config: Value,
}

/// The two statistics in a Normalization config (for a Discretization:
/// its bin boundaries, adapt or explicit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// `mean` and `variance` are null: the layer depends on finalize_state().
    Adapt,
    /// Both are given: nothing to repair.
    Explicit,
    /// One is null and the other not: Keras itself refuses such a config.
    Inconsistent,
}

/// A Normalization layer found in the config.
#[derive(Clone, Debug, PartialEq)]
pub struct NormSite {
    /// Names from the root's children down to the layer, joined by `/`.
    pub config_path: String,
    /// The path of the layer's entry (the object holding `class_name`)
    /// inside config.json.
    pub pointer: Vec<Seg>,
    /// The layer's name.
    pub name: String,
    /// `axis` as a list (empty for `axis=None`).
    pub axis: Vec<i64>,
    /// `invert` (absent means false).
    pub invert: bool,
    /// Adapt or explicit.
    pub mode: Mode,
    /// The layer's input shape as the config declares it: its
    /// `build_config.input_shape`, or (tf.keras 2.12 writes no build
    /// configs) what [`ShapeFrom`] says; the sizes of kept axes may be
    /// unknown then.
    pub input_shape: Option<Vec<Option<u64>>>,
    /// Where `input_shape` comes from.
    pub shape_from: ShapeFrom,
    /// Where its variables are.
    pub locator: Locator,
    /// Name of the model that directly contains the layer.
    pub container: String,
    /// Layers in the same model fed by this one.
    pub consumers: Vec<Consumer>,
}

/// A Discretization layer found in the config (issue #15).
#[derive(Clone, Debug, PartialEq)]
pub struct DiscSite {
    /// Names from the root's children down to the layer, joined by `/`.
    pub config_path: String,
    /// The path of the layer's entry (the object holding `class_name`)
    /// inside config.json.
    pub pointer: Vec<Seg>,
    /// The layer's name.
    pub name: String,
    /// `num_bins` as written (null, a number, or anything else).
    pub num_bins: Value,
    /// Adapt (`bin_boundaries` null, its bins computed by
    /// finalize_state() from the `summary` variable) or explicit.
    pub mode: Mode,
    /// Does the config have a `bin_boundaries` key (to embed into)?
    pub has_boundaries_key: bool,
    /// Where its variables are.
    pub locator: Locator,
    /// The entry of the CategoryEncoding that `krepair migrate` split off
    /// an encoded adapt-mode Discretization (rule
    /// `discretization-encoding`), whose `num_tokens` waits for the bins.
    pub encoding: Option<Vec<Seg>>,
}

/// Where a Normalization layer's input shape is declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShapeFrom {
    /// `build_config.input_shape` (Keras 3, tf.keras 2.13 and later).
    BuildConfig,
    /// The layer's own `batch_input_shape` (it was given an input shape).
    BatchInputShape,
    /// The `batch_input_shape` of the InputLayer that feeds it, directly
    /// or through layers that keep their input's shape.
    InputLayer,
    /// The shape of the one tensor it is called on, which Keras 3 writes
    /// in the layer's inbound node (`__keras_tensor__`; Keras 3's own
    /// legacy HDF5 files have no build configs).
    InboundTensor,
    /// Nowhere.
    Unknown,
}

/// Keras' `to_snake_case` (keras/src/utils/naming.py), rule by rule:
/// drop non-word characters, then `(.)([A-Z][a-z]+)` -> `\1_\2`, then
/// `([a-z])([A-Z])` -> `\1_\2`, then lowercase.
pub fn to_snake_case(name: &str) -> String {
    let c: Vec<char> = name
        .chars()
        .filter(|ch| ch.is_alphanumeric() || *ch == '_')
        .collect();
    let mut s1 = Vec::with_capacity(c.len() + 4);
    let mut p = 0;
    while p < c.len() {
        if p + 2 < c.len()
            && c[p] != '\n'
            && c[p + 1].is_ascii_uppercase()
            && c[p + 2].is_ascii_lowercase()
        {
            let mut e = p + 2;
            while e < c.len() && c[e].is_ascii_lowercase() {
                e += 1;
            }
            s1.push(c[p]);
            s1.push('_');
            s1.extend_from_slice(&c[p + 1..e]);
            p = e;
        } else {
            s1.push(c[p]);
            p += 1;
        }
    }
    let mut s2 = String::with_capacity(s1.len() + 4);
    let mut p = 0;
    while p < s1.len() {
        if p + 1 < s1.len() && s1[p].is_ascii_lowercase() && s1[p + 1].is_ascii_uppercase() {
            s2.push(s1[p]);
            s2.push('_');
            s2.push(s1[p + 1]);
            p += 2;
        } else {
            s2.push(s1[p]);
            p += 1;
        }
    }
    s2.to_lowercase()
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else if b.is_empty() {
        a.to_string()
    } else {
        format!("{a}/{b}")
    }
}

fn unique(used: &mut HashMap<String, u32>, base: String) -> String {
    match used.get_mut(&base) {
        Some(n) => {
            *n += 1;
            format!("{base}_{n}")
        }
        None => {
            used.insert(base.clone(), 0);
            base
        }
    }
}

fn class_name<J: Json>(v: &J) -> Option<&str> {
    v.get("class_name").and_then(J::as_str)
}

/// Member `key` of an entry's `config`.
fn in_config<'v, J: Json>(entry: &'v J, key: &str) -> Option<&'v J> {
    entry.get("config")?.get(key)
}

/// The `layers` list of a model entry's `config`.
fn layers_of<J: Json>(entry: &J) -> Option<&[J]> {
    in_config(entry, "layers").and_then(J::as_array)
}

fn layer_name<J: Json>(v: &J) -> String {
    in_config(v, "name")
        .or_else(|| v.get("name"))
        .and_then(J::as_str)
        .unwrap_or("")
        .to_string()
}

/// True for a Keras Normalization layer entry (not a user class of the
/// same name from another package).
fn is_keras_normalization<J: Json>(v: &J) -> bool {
    is_keras_class(v, "Normalization")
}

/// True for a Keras layer entry of class `class` (not a user class of the
/// same name from another package).
fn is_keras_class<J: Json>(v: &J, class: &str) -> bool {
    if class_name(v) != Some(class) || !v.get("config").is_some_and(J::is_object) {
        return false;
    }
    let module_ok = match v.get("module").and_then(J::as_str) {
        None => true,
        Some(m) => m == "keras" || m.starts_with("keras.") || m.starts_with("tf_keras"),
    };
    let registered_ok = match v.get("registered_name") {
        None => true,
        Some(r) => r.is_null() || r.as_str() == Some(class),
    };
    module_ok && registered_ok
}

/// An entry of a Functional config that is an operation, not a layer (the
/// `Cast` ops Keras 3.6 inserts under mixed precision): it is not in
/// `model.layers` and owns no weights group.
fn is_operation<J: Json>(v: &J) -> bool {
    v.get("module").and_then(J::as_str).is_some_and(|m| {
        m == "keras.ops" || m.starts_with("keras.src.ops") || m.starts_with("keras.ops.")
    })
}

fn is_container<J: Json>(v: &J) -> Option<bool> {
    let class = class_name(v)?;
    let has_layers = layers_of(v).is_some();
    match class {
        "Functional" | "Model" if has_layers => Some(false),
        "Sequential" if has_layers => Some(true),
        _ => None,
    }
}

/// A shape as a config writes it: a list of sizes and nulls.
pub(crate) fn parse_shape<J: Json>(v: &J) -> Option<Vec<Option<u64>>> {
    v.as_array()?
        .iter()
        .map(|d| {
            if d.is_null() {
                Some(None)
            } else {
                d.as_u64().map(Some)
            }
        })
        .collect()
}

fn parse_axis<J: Json>(v: Option<&J>) -> Result<Vec<i64>, String> {
    let Some(v) = v else {
        return Ok(vec![-1]);
    };
    if v.is_null() {
        Ok(vec![])
    } else if v.is_number() {
        v.as_i64()
            .map(|a| vec![a])
            .ok_or("axis is not an integer".into())
    } else if let Some(a) = v.as_array() {
        a.iter()
            .map(|x| {
                x.as_i64()
                    .ok_or_else(|| "axis holds a non-integer".to_string())
            })
            .collect()
    } else {
        Err("axis has the wrong type".into())
    }
}

/// Does `inbound` (a layer's `inbound_nodes`) reference layer `name`?
/// Keras 3 writes `keras_history: [name, node, tensor]`; tf.keras writes
/// `[[name, node, tensor, kwargs]]`. Both contain an array whose first
/// element is the name and whose second is a number.
fn references<J: Json>(inbound: &J, name: &str) -> bool {
    match inbound.as_array() {
        Some(a) => {
            (a.len() >= 2 && a[0].as_str() == Some(name) && a[1].is_number())
                || a.iter().any(|x| references(x, name))
        }
        None => inbound.members().any(|(_, x)| references(x, name)),
    }
}

struct Walker {
    sites: Vec<NormSite>,
    discs: Vec<DiscSite>,
}

impl Walker {
    fn disc<J: Json>(
        &mut self,
        entry: &J,
        pointer: Vec<Seg>,
        config_path: String,
        locator: Locator,
    ) {
        let cfg = |k: &str| in_config(entry, k);
        let boundaries = cfg("bin_boundaries");
        self.discs.push(DiscSite {
            config_path,
            pointer,
            name: layer_name(entry),
            num_bins: cfg("num_bins").map_or(Value::Null, J::to_value),
            mode: if boundaries.is_none_or(J::is_null) {
                Mode::Adapt
            } else {
                Mode::Explicit
            },
            has_boundaries_key: boundaries.is_some(),
            locator,
            encoding: None,
        });
    }

    fn site<J: Json>(
        &mut self,
        entry: &J,
        pointer: Vec<Seg>,
        config_path: String,
        locator: Locator,
        container: &str,
        consumers: Vec<Consumer>,
    ) -> Result<(), String> {
        let cfg = |k: &str| in_config(entry, k);
        let at = || path_string(&pointer);
        let axis = parse_axis(cfg("axis")).map_err(|e| format!("{e} at {}", at()))?;
        let invert = cfg("invert").and_then(J::as_bool).unwrap_or(false);
        let mean_null = cfg("mean").is_none_or(J::is_null);
        let var_null = cfg("variance").is_none_or(J::is_null);
        let mode = match (mean_null, var_null) {
            (true, true) => Mode::Adapt,
            (false, false) => Mode::Explicit,
            _ => Mode::Inconsistent,
        };
        let built = entry
            .get("build_config")
            .and_then(|b| b.get("input_shape"))
            .and_then(parse_shape);
        let own = cfg("batch_input_shape").and_then(parse_shape);
        let (input_shape, shape_from) = match (built, own) {
            (Some(s), _) => (Some(s), ShapeFrom::BuildConfig),
            (None, Some(s)) => (Some(s), ShapeFrom::BatchInputShape),
            (None, None) => (None, ShapeFrom::Unknown),
        };
        self.sites.push(NormSite {
            config_path,
            pointer,
            name: layer_name(entry),
            axis,
            invert,
            mode,
            input_shape,
            shape_from,
            locator,
            container: container.to_string(),
            consumers,
        });
        Ok(())
    }

    fn container<J: Json>(
        &mut self,
        entry: &J,
        pointer: Vec<Seg>,
        group: &str,
        config_path: &str,
        sequential: bool,
    ) -> Result<(), String> {
        let layers = layers_of(entry)
            .ok_or_else(|| format!("`layers` is not a list at {}", path_string(&pointer)))?;
        let container_name = layer_name(entry);
        let mut used = HashMap::new();
        for (i, layer) in layers.iter().enumerate() {
            let mut lp = pointer.clone();
            lp.extend([
                Seg::Key("config".into()),
                Seg::Key("layers".into()),
                Seg::Index(i),
            ]);
            let class = class_name(layer)
                .ok_or_else(|| format!("a layer without `class_name` at {}", path_string(&lp)))?;
            if (sequential && class == "InputLayer") || is_operation(layer) {
                continue;
            }
            let gname = unique(&mut used, to_snake_case(class));
            let lgroup = join(group, &format!("layers/{gname}"));
            let name = layer_name(layer);
            let lpath = join(config_path, &name);
            if is_keras_normalization(layer) {
                let consumers = if sequential {
                    // In a Sequential model the next layer is the consumer.
                    layers[i + 1..]
                        .iter()
                        .find(|l| class_name(*l) != Some("InputLayer"))
                        .map(consumer_of)
                        .into_iter()
                        .collect()
                } else {
                    layers
                        .iter()
                        .filter(|l| l.get("inbound_nodes").is_some_and(|n| references(n, &name)))
                        .map(consumer_of)
                        .collect()
                };
                self.site(
                    layer,
                    lp,
                    lpath,
                    Locator::Group(lgroup),
                    &container_name,
                    consumers,
                )?;
                let site = self.sites.last_mut().expect("just pushed");
                if site.shape_from == ShapeFrom::Unknown {
                    if let Some(s) = inbound_tensor_shape(layer) {
                        (site.input_shape, site.shape_from) = (Some(s), ShapeFrom::InboundTensor);
                    } else if let Some(s) = input_layer_shape(layers, i, &name, sequential) {
                        (site.input_shape, site.shape_from) = (Some(s), ShapeFrom::InputLayer);
                    }
                }
            } else if is_keras_class(layer, "Discretization") {
                self.disc(layer, lp, lpath, Locator::Group(lgroup));
                // The CategoryEncoding a migration put right after it,
                // still without its number of tokens.
                let next = layers.get(i + 1).filter(|n| {
                    is_keras_class(*n, "CategoryEncoding")
                        && in_config(*n, "num_tokens").is_some_and(J::is_null)
                });
                if next.is_some() {
                    let mut np = pointer.clone();
                    np.extend([
                        Seg::Key("config".into()),
                        Seg::Key("layers".into()),
                        Seg::Index(i + 1),
                    ]);
                    self.discs.last_mut().expect("just pushed").encoding = Some(np);
                }
            } else if let Some(seq) = is_container(layer) {
                self.container(layer, lp, &lgroup, &lpath, seq)?;
            } else if let Some(cfg) = layer.get("config") {
                let mut cp = lp;
                cp.push(Seg::Key("config".into()));
                self.nested(
                    cfg,
                    &mut cp,
                    &lgroup,
                    &lpath,
                    &mut Vec::new(),
                    &container_name,
                )?;
            }
        }
        Ok(())
    }

    /// Normalization configs serialized anywhere inside a custom layer's
    /// (or custom model's) config. `pointer` and `keys` are stacks, pushed
    /// and popped on the way down: a site clones them, nothing else does
    /// (a model's config has tens of nodes a layer).
    fn nested<'v, J: Json>(
        &mut self,
        v: &'v J,
        pointer: &mut Vec<Seg>,
        group: &str,
        config_path: &str,
        keys: &mut Vec<&'v str>,
        container: &str,
    ) -> Result<(), String> {
        let within = |keys: &[&str]| Locator::Within {
            group: group.to_string(),
            key_path: keys.iter().map(|k| k.to_string()).collect(),
        };
        if is_keras_normalization(v) {
            let path = join(config_path, &keys.join("/"));
            let locator = within(keys);
            return self.site(v, pointer.clone(), path, locator, container, Vec::new());
        }
        if is_keras_class(v, "Discretization") {
            let path = join(config_path, &keys.join("/"));
            self.disc(v, pointer.clone(), path, within(keys));
            return Ok(());
        }
        if let Some(a) = v.as_array() {
            for (i, x) in a.iter().enumerate() {
                if !(x.is_object() || x.is_array()) {
                    continue;
                }
                pointer.push(Seg::Index(i));
                let r = self.nested(x, pointer, group, config_path, keys, container);
                pointer.pop();
                r?;
            }
        } else {
            for (k, x) in v.members() {
                if !(x.is_object() || x.is_array()) {
                    continue;
                }
                pointer.push(Seg::Key(k.to_string()));
                // `config` wrappers are not attribute names.
                let named = k != "config";
                if named {
                    keys.push(k);
                }
                let r = self.nested(x, pointer, group, config_path, keys, container);
                if named {
                    keys.pop();
                }
                pointer.pop();
                r?;
            }
        }
        Ok(())
    }
}

/// The `batch_input_shape` of the InputLayer that alone feeds layer `i`
/// (named `name`) of a model's `layers`: in a Sequential, the InputLayer
/// before it with no other layer between; in a Functional, the one layer
/// its one call reads from.
pub(crate) fn input_layer_shape<J: Json>(
    layers: &[J],
    i: usize,
    name: &str,
    sequential: bool,
) -> Option<Vec<Option<u64>>> {
    let input = if sequential {
        let before = &layers[..i];
        let (first, rest) = before.split_first()?;
        if class_name(first) != Some("InputLayer") || !rest.iter().all(keeps_shape) {
            return None;
        }
        first
    } else {
        // Back through the layers that keep their input's shape (the
        // Rescaling in front of EfficientNet's Normalization), at most
        // once per layer.
        let mut at = &layers[i];
        let mut seen = vec![name.to_string()];
        loop {
            let source = single_source(at)?;
            if seen.iter().any(|s| s == source) || seen.len() > layers.len() {
                return None;
            }
            seen.push(source.to_string());
            let next = layers.iter().find(|l| layer_name(*l) == source)?;
            if class_name(next) == Some("InputLayer") || !keeps_shape(next) {
                break next;
            }
            at = next;
        }
    };
    if class_name(input) != Some("InputLayer") {
        return None;
    }
    let cfg = input.get("config")?;
    // tf.keras writes batch_input_shape, Keras 3 batch_shape.
    cfg.get("batch_input_shape")
        .or_else(|| cfg.get("batch_shape"))
        .and_then(parse_shape)
}

/// The shape of the one tensor a Functional's layer entry `l` is called
/// on, once, in Keras 3's node form (`{"args": [{"class_name":
/// "__keras_tensor__", "config": {"shape": [...]}}], ...}`).
fn inbound_tensor_shape<J: Json>(l: &J) -> Option<Vec<Option<u64>>> {
    let nodes = l.get("inbound_nodes")?.as_array()?;
    let [node] = nodes else {
        return None;
    };
    let [t] = node.get("args")?.as_array()? else {
        return None;
    };
    if t.get("class_name")?.as_str()? != "__keras_tensor__" {
        return None;
    }
    t.get("config")?.get("shape").and_then(parse_shape)
}

/// The one layer a Functional's layer entry `l` is called on, once.
fn single_source<J: Json>(l: &J) -> Option<&str> {
    let nodes = l.get("inbound_nodes")?.as_array()?;
    let [node] = nodes else {
        return None;
    };
    let [r] = node.as_array()? else {
        return None;
    };
    r.as_array()?.first()?.as_str()
}

/// Layer classes whose output has their input's shape, whatever their
/// config (elementwise maps, dropout and noise, normalizations).
const SHAPE_KEEPING: &[&str] = &[
    "Rescaling",
    "Activation",
    "ReLU",
    "LeakyReLU",
    "ELU",
    "Softmax",
    "Dropout",
    "AlphaDropout",
    "GaussianDropout",
    "GaussianNoise",
    "BatchNormalization",
    "LayerNormalization",
    "UnitNormalization",
    "Normalization",
    "Identity",
    "ActivityRegularization",
];

fn keeps_shape<J: Json>(l: &J) -> bool {
    class_name(l).is_some_and(|c| SHAPE_KEEPING.contains(&c))
}

fn consumer_of<J: Json>(l: &J) -> Consumer {
    let class = class_name(l).unwrap_or("");
    Consumer {
        class_name: class.to_string(),
        name: layer_name(l),
        config: match class {
            "Rescaling" => l.get("config").map_or(Value::Null, J::to_value),
            _ => Value::Null,
        },
    }
}

/// Classes whose config carries code that Keras would run on load.
const CODE_CLASSES: &[&str] = &["Lambda", "TorchModuleWrapper", "TFSMLayer"];

/// Findings about layers whose configs hold code or come from outside
/// Keras. krepair only reads configs as JSON: nothing is ever evaluated,
/// and none of this stops a Normalization repair.
pub fn code_findings<J: Json>(config: &J) -> Vec<(crate::codes::Code, String)> {
    let mut out = Vec::new();
    // Only containers go on the stack: most nodes are strings and numbers.
    let container = |x: &&J| x.is_object() || x.is_array();
    let mut stack = vec![config];
    while let Some(v) = stack.pop() {
        if let Some(a) = v.as_array() {
            stack.extend(a.iter().rev().filter(container));
        } else if v.is_object() {
            if let Some(class) = v.get("class_name").and_then(J::as_str) {
                let name = in_config(v, "name").and_then(J::as_str).unwrap_or("?");
                let module = v.get("module").and_then(J::as_str);
                if CODE_CLASSES.contains(&class) {
                    out.push((
                        crate::codes::Code::CodeInConfig,
                        format!("layer `{name}` ({class}) carries code that Keras would run on load; krepair never evaluates it"),
                    ));
                } else if let Some(m) = module.filter(|m| {
                    *m != "builtins"
                        && *m != "keras"
                        && !m.starts_with("keras.")
                        && !m.starts_with("tf_keras")
                }) {
                    out.push((
                        crate::codes::Code::CustomClass,
                        format!("`{name}` is a {class} from module `{m}`; loading it needs that code, krepair does not"),
                    ));
                }
            }
            stack.extend(v.members().rev().map(|(_, x)| x).filter(container));
        }
    }
    out
}

/// One layer of the model as Keras builds it from config.json, for
/// `krepair inspect`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeLayer {
    /// Layer names from the root's children down to it, joined by `/`
    /// (empty for the model itself).
    pub path: String,
    /// 0 for the model, 1 for its layers, 2 for a nested model's, ...
    pub depth: usize,
    /// Its `class_name`.
    pub class_name: String,
    /// Its name.
    pub name: String,
    /// Its `module`, when the config names one.
    pub module: Option<String>,
    /// Its weights group in Keras 3's layout (`""` for the model itself,
    /// whose own variables are in `vars`); None for what owns none (an
    /// operation, a Sequential model's InputLayer).
    pub group: Option<String>,
    /// A Functional or Sequential model: its layers are the next entries,
    /// and its own variables are only those in `<group>/vars`.
    pub container: bool,
    /// Where its entry is in config.json ([`at`] finds it).
    pub pointer: Vec<Seg>,
}

/// The value at `pointer` inside `v`, if there is one.
pub fn at<'v, J: Json>(v: &'v J, pointer: &[Seg]) -> Option<&'v J> {
    pointer.iter().try_fold(v, |v, seg| match seg {
        Seg::Key(k) => v.get(k.as_str()),
        Seg::Index(i) => v.as_array().and_then(|a| a.get(*i)),
    })
}

/// The model's layers as Keras builds them, in config order, each with
/// the weights group Keras 3 gives it (the same naming as
/// [`find_layers`]: the snake_case of the class, numbered in
/// `model.layers` order).
pub fn layer_tree<J: Json>(config: &J) -> Result<Vec<TreeLayer>, String> {
    if !config.is_object() || class_name(config).is_none() {
        return Err("config.json is not a serialized Keras model (no `class_name`)".into());
    }
    let mut out = Vec::new();
    tree_entry(
        config,
        &mut Vec::new(),
        String::new(),
        0,
        Some(String::new()),
        &mut out,
    )?;
    Ok(out)
}

fn tree_entry<J: Json>(
    entry: &J,
    pointer: &mut Vec<Seg>,
    path: String,
    depth: usize,
    group: Option<String>,
    out: &mut Vec<TreeLayer>,
) -> Result<(), String> {
    if depth > MAX_TREE_DEPTH {
        return Err(format!(
            "models nested deeper than {MAX_TREE_DEPTH} at {}",
            path_string(pointer)
        ));
    }
    let container = is_container(entry);
    out.push(TreeLayer {
        path: path.clone(),
        depth,
        class_name: class_name(entry).unwrap_or("").to_string(),
        name: layer_name(entry),
        module: entry.get("module").and_then(J::as_str).map(str::to_string),
        group: group.clone(),
        container: container.is_some(),
        pointer: pointer.clone(),
    });
    let Some(sequential) = container else {
        return Ok(());
    };
    let layers = layers_of(entry)
        .ok_or_else(|| format!("`layers` is not a list at {}", path_string(pointer)))?;
    let mut used = HashMap::new();
    for (i, layer) in layers.iter().enumerate() {
        pointer.extend([
            Seg::Key("config".into()),
            Seg::Key("layers".into()),
            Seg::Index(i),
        ]);
        let class = class_name(layer)
            .ok_or_else(|| format!("a layer without `class_name` at {}", path_string(pointer)))?;
        let owns = !(is_operation(layer) || (sequential && class == "InputLayer"));
        let lgroup = match (&group, owns) {
            (Some(g), true) => Some(join(
                g,
                &format!("layers/{}", unique(&mut used, to_snake_case(class))),
            )),
            _ => None,
        };
        let lpath = join(&path, &layer_name(layer));
        tree_entry(layer, pointer, lpath, depth + 1, lgroup, out)?;
        pointer.truncate(pointer.len() - 3);
    }
    Ok(())
}

/// Deepest nesting of models [`layer_tree`] follows (the JSON parser
/// already stops at 128 levels).
const MAX_TREE_DEPTH: usize = 64;

/// Every Normalization layer in a model config, in config order.
pub fn find_normalizations<J: Json>(config: &J) -> Result<Vec<NormSite>, String> {
    find_layers(config).map(|(n, _)| n)
}

/// Every Normalization and every Discretization layer in a model config,
/// each in config order.
pub fn find_layers<J: Json>(config: &J) -> Result<(Vec<NormSite>, Vec<DiscSite>), String> {
    if !config.is_object() || class_name(config).is_none() {
        return Err("config.json is not a serialized Keras model (no `class_name`)".into());
    }
    let mut w = Walker {
        sites: Vec::new(),
        discs: Vec::new(),
    };
    if let Some(seq) = is_container(config) {
        w.container(config, Vec::new(), "", "", seq)?;
    } else if is_keras_normalization(config) {
        return Err("config.json is a bare Normalization layer, not a model".into());
    } else {
        if let Some(cfg) = config.get("config") {
            w.nested(
                cfg,
                &mut vec![Seg::Key("config".into())],
                "",
                "",
                &mut Vec::new(),
                &layer_name(config),
            )?;
        }
    }
    Ok((w.sites, w.discs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn snake_case_matches_keras() {
        // Expected values printed by keras.src.utils.naming.to_snake_case.
        let cases = [
            ("Normalization", "normalization"),
            ("InputLayer", "input_layer"),
            ("Functional", "functional"),
            ("GlobalAveragePooling2D", "global_average_pooling2d"),
            ("BatchNormalization", "batch_normalization"),
            ("Conv2D", "conv2d"),
            ("DepthwiseConv2D", "depthwise_conv2d"),
            ("ReLU", "re_lu"),
            ("PReLU", "p_re_lu"),
            ("MyHTTPLayer", "my_http_layer"),
            ("TFSMLayer", "tfsm_layer"),
            ("Scaler", "scaler"),
            ("already_snake", "already_snake"),
            ("ABC", "abc"),
            ("Weird-Name.X", "weird_name_x"),
            ("aB", "a_b"),
        ];
        for (input, want) in cases {
            assert_eq!(to_snake_case(input), want, "{input}");
        }
    }

    fn layer(class: &str, name: &str, extra: Value) -> Value {
        let mut cfg = json!({"name": name});
        if let Value::Object(e) = extra {
            cfg.as_object_mut().unwrap().extend(e);
        }
        json!({"module": "keras.layers", "class_name": class, "config": cfg, "name": name})
    }

    fn norm(name: &str) -> Value {
        let mut l = layer(
            "Normalization",
            name,
            json!({"axis": [-1], "mean": null, "variance": null}),
        );
        l["build_config"] = json!({"input_shape": [null, 4]});
        l
    }

    fn groups(sites: &[NormSite]) -> Vec<(String, Locator)> {
        sites
            .iter()
            .map(|s| (s.config_path.clone(), s.locator.clone()))
            .collect()
    }

    #[test]
    fn shapes_without_a_build_config_come_from_the_graph() {
        // tf.keras 2.12 writes no build_config.
        let legacy = |name: &str, extra: Value| {
            let mut l = layer(
                "Normalization",
                name,
                json!({"axis": [-1], "mean": null, "variance": null}),
            );
            if let Value::Object(e) = extra {
                l.as_object_mut().unwrap().extend(e);
            }
            l
        };
        let called = |class: &str, name: &str, source: &str| {
            let mut l = layer(class, name, json!({}));
            l["inbound_nodes"] = json!([[[source, 0, 0, {}]]]);
            l
        };
        let mut own = legacy("own", json!({}));
        own["config"]["batch_input_shape"] = json!([null, null, 3]);
        let cfg = json!({"class_name": "Functional", "config": {"name": "m", "layers": [
            layer("InputLayer", "in", json!({"batch_input_shape": [null, 5]})),
            legacy("fed", json!({"inbound_nodes": [[["in", 0, 0, {}]]]})),
            layer("Dense", "d", json!({})),
            legacy("after_dense", json!({"inbound_nodes": [[["d", 0, 0, {}]]]})),
            own,
            legacy("built", json!({"build_config": {"input_shape": [null, 7]}, "inbound_nodes": [[["in", 0, 0, {}]]]})),
            // EfficientNet's stem: Input -> Rescaling -> Normalization.
            layer("InputLayer", "img", json!({"batch_input_shape": [null, 8, 8, 3]})),
            called("Rescaling", "scale", "img"),
            legacy("stem", json!({"inbound_nodes": [[["scale", 0, 0, {}]]]})),
            // Keras 3's node form names the tensor's shape.
            legacy("keras3", json!({"inbound_nodes": [{"args": [{"class_name": "__keras_tensor__",
                "config": {"shape": [null, 4, 3], "dtype": "float32", "keras_history": ["d", 0, 0]}}], "kwargs": {}}]})),
            // A cycle of shape-keeping layers leads nowhere.
            called("Activation", "a1", "a2"),
            called("Activation", "a2", "a1"),
            legacy("looped", json!({"inbound_nodes": [[["a1", 0, 0, {}]]]})),
            {"class_name": "Sequential", "config": {"name": "s", "layers": [
                layer("InputLayer", "i2", json!({"batch_input_shape": [null, 2, 6]})),
                legacy("first", json!({})),
                layer("Dense", "d2", json!({})),
                legacy("second", json!({})),
            ]}},
        ]}});
        type Row = (String, Option<Vec<Option<u64>>>, ShapeFrom);
        let got: Vec<Row> = find_normalizations(&cfg)
            .unwrap()
            .into_iter()
            .map(|s| (s.config_path, s.input_shape, s.shape_from))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "fed".into(),
                    Some(vec![None, Some(5)]),
                    ShapeFrom::InputLayer
                ),
                ("after_dense".into(), None, ShapeFrom::Unknown),
                (
                    "own".into(),
                    Some(vec![None, None, Some(3)]),
                    ShapeFrom::BatchInputShape
                ),
                (
                    "built".into(),
                    Some(vec![None, Some(7)]),
                    ShapeFrom::BuildConfig
                ),
                (
                    "stem".into(),
                    Some(vec![None, Some(8), Some(8), Some(3)]),
                    ShapeFrom::InputLayer
                ),
                (
                    "keras3".into(),
                    Some(vec![None, Some(4), Some(3)]),
                    ShapeFrom::InboundTensor
                ),
                ("looped".into(), None, ShapeFrom::Unknown),
                (
                    "s/first".into(),
                    Some(vec![None, Some(2), Some(6)]),
                    ShapeFrom::InputLayer
                ),
                ("s/second".into(), None, ShapeFrom::Unknown),
            ]
        );
    }

    #[test]
    fn functional_numbers_by_class_not_name() {
        let cfg = json!({"class_name": "Functional", "config": {"name": "m", "layers": [
            layer("InputLayer", "in", json!({})),
            norm("stats_a"),
            layer("Dense", "d", json!({})),
            norm("normalization"),
        ]}});
        let sites = find_normalizations(&cfg).unwrap();
        assert_eq!(
            groups(&sites),
            vec![
                (
                    "stats_a".into(),
                    Locator::Group("layers/normalization".into())
                ),
                (
                    "normalization".into(),
                    Locator::Group("layers/normalization_1".into())
                ),
            ]
        );
        assert_eq!(sites[0].mode, Mode::Adapt);
        assert_eq!(sites[0].input_shape, Some(vec![None, Some(4)]));
        assert_eq!(
            sites[1].pointer,
            vec![
                Seg::Key("config".into()),
                Seg::Key("layers".into()),
                Seg::Index(3)
            ]
        );
    }

    #[test]
    fn sequential_skips_its_input_layer_and_nests() {
        let seq = json!({"class_name": "Sequential", "config": {"name": "block", "layers": [
            layer("InputLayer", "in", json!({})), norm("inner"), layer("Dense", "d", json!({})),
        ]}});
        let cfg = json!({"class_name": "Functional", "config": {"name": "m", "layers": [
            layer("InputLayer", "in", json!({})), norm("outer"), seq,
        ]}});
        let sites = find_normalizations(&cfg).unwrap();
        assert_eq!(
            groups(&sites),
            vec![
                (
                    "outer".into(),
                    Locator::Group("layers/normalization".into())
                ),
                (
                    "block/inner".into(),
                    Locator::Group("layers/sequential/layers/normalization".into())
                ),
            ]
        );
        assert_eq!(sites[1].consumers[0].class_name, "Dense");
    }

    #[test]
    fn custom_layer_holds_a_normalization() {
        let custom = json!({"module": "krepair_fixtures", "class_name": "Scaler",
            "registered_name": "krepair_fixtures>Scaler",
            "config": {"name": "scaler", "norm": norm("ignored-name"), "factor": 2.0}});
        let cfg = json!({"class_name": "Functional", "config": {"name": "m", "layers": [
            layer("InputLayer", "in", json!({})), custom,
        ]}});
        let sites = find_normalizations(&cfg).unwrap();
        assert_eq!(
            groups(&sites),
            vec![(
                "scaler/norm".into(),
                Locator::Within {
                    group: "layers/scaler".into(),
                    key_path: vec!["norm".into()]
                }
            )]
        );
    }

    #[test]
    fn operations_and_foreign_normalizations_are_not_layers() {
        let cast = json!({"module": "keras.src.ops.core", "class_name": "Cast", "config": {"name": "cast"}});
        let mut foreign = norm("mine");
        foreign["module"] = json!("my_package");
        let cfg = json!({"class_name": "Functional", "config": {"name": "m", "layers": [
            cast, foreign, norm("n"),
        ]}});
        let sites = find_normalizations(&cfg).unwrap();
        // The foreign class still takes its snake_case name in the list.
        assert_eq!(
            groups(&sites),
            vec![("n".into(), Locator::Group("layers/normalization_1".into()))]
        );
    }

    #[test]
    fn consumers_are_found_by_inbound_nodes() {
        let mut resc = layer(
            "Rescaling",
            "rescaling_1",
            json!({"scale": [2.0], "offset": 0.0}),
        );
        resc["inbound_nodes"] = json!([{"args": [{"class_name": "__keras_tensor__",
            "config": {"keras_history": ["n", 0, 0]}}], "kwargs": {}}]);
        let mut other = layer("Dense", "d", json!({}));
        other["inbound_nodes"] = json!([[["rescaling_1", 0, 0, {}]]]);
        let cfg = json!({"class_name": "Functional", "config": {"name": "efficientnetb0", "layers": [
            norm("n"), resc, other,
        ]}});
        let sites = find_normalizations(&cfg).unwrap();
        assert_eq!(sites[0].consumers.len(), 1);
        assert_eq!(sites[0].consumers[0].name, "rescaling_1");
        assert_eq!(sites[0].container, "efficientnetb0");
    }

    #[test]
    fn discretizations_are_found_with_their_pending_encoding() {
        let disc = |name: &str, boundaries: Value| {
            layer(
                "Discretization",
                name,
                json!({"bin_boundaries": boundaries, "num_bins": 4, "output_mode": "int"}),
            )
        };
        let enc = |tokens: Value| {
            layer(
                "CategoryEncoding",
                "e",
                json!({"num_tokens": tokens, "output_mode": "multi_hot"}),
            )
        };
        let custom = json!({"module": "pkg", "class_name": "Holder", "registered_name": "pkg>Holder",
            "config": {"name": "h", "inner": disc("x", Value::Null)}});
        let cfg = json!({"class_name": "Functional", "config": {"name": "m", "layers": [
            disc("a", Value::Null), enc(Value::Null),
            disc("b", json!([1.0])), enc(json!(2)),
            norm("n"), custom,
        ]}});
        let (norms, discs) = find_layers(&cfg).unwrap();
        assert_eq!(norms.len(), 1);
        let got: Vec<(&str, Mode, Option<Locator>, bool)> = discs
            .iter()
            .map(|d| {
                (
                    d.config_path.as_str(),
                    d.mode,
                    Some(d.locator.clone()),
                    d.encoding.is_some(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "a",
                    Mode::Adapt,
                    Some(Locator::Group("layers/discretization".into())),
                    true
                ),
                (
                    "b",
                    Mode::Explicit,
                    Some(Locator::Group("layers/discretization_1".into())),
                    false
                ),
                (
                    "h/inner",
                    Mode::Adapt,
                    Some(Locator::Within {
                        group: "layers/holder".into(),
                        key_path: vec!["inner".into()]
                    }),
                    false
                ),
            ]
        );
        assert_eq!(
            discs[0].encoding,
            Some(vec![
                Seg::Key("config".into()),
                Seg::Key("layers".into()),
                Seg::Index(1)
            ])
        );
        assert_eq!(discs[0].num_bins, json!(4));
    }

    #[test]
    fn modes_and_axes() {
        let mut n = norm("n");
        n["config"]["axis"] = Value::Null;
        n["config"]["mean"] = json!(1.0);
        let cfg = json!({"class_name": "Sequential", "config": {"name": "s", "layers": [n]}});
        let sites = find_normalizations(&cfg).unwrap();
        assert_eq!(sites[0].axis, Vec::<i64>::new());
        assert_eq!(sites[0].mode, Mode::Inconsistent);
    }

    #[test]
    fn code_is_reported_never_run() {
        let lambda = json!({"module": "keras.layers", "class_name": "Lambda",
            "config": {"name": "lam", "function": {"class_name": "__lambda__", "config": {"code": "4wEAAAAA"}}}});
        let custom = json!({"module": "evil_pkg", "class_name": "Thing", "config": {"name": "t"}});
        let cfg = json!({"class_name": "Functional", "config": {"name": "m", "layers": [lambda, custom, norm("n")]}});
        let f = code_findings(&cfg);
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(f[0].0, crate::codes::Code::CodeInConfig);
        assert!(f[0].1.contains("`lam`"));
        assert_eq!(f[1].0, crate::codes::Code::CustomClass);
        assert!(f[1].1.contains("evil_pkg"));
        // The Normalization next to them is still found.
        assert_eq!(find_normalizations(&cfg).unwrap().len(), 1);
    }

    #[test]
    fn malformed_configs_are_errors() {
        assert!(find_normalizations(&json!([1, 2])).is_err());
        let bad = json!({"class_name": "Functional", "config": {"layers": [{"config": {}}]}});
        assert!(find_normalizations(&bad)
            .unwrap_err()
            .contains("class_name"));
        let bad = json!({"class_name": "Functional", "config": {"layers": [norm("n")]}});
        let mut bad2 = bad.clone();
        bad2["config"]["layers"][0]["config"]["axis"] = json!("x");
        assert!(find_normalizations(&bad2).is_err());
    }
}
