//! Where Keras 3 reads each weight of a legacy HDF5 model file (pure:
//! the config and the files' weight names in, paths out).
//!
//! The legacy format keeps a model's weights by layer *name* and weight
//! name: `model_weights/<layer name>/<weight name>`, in the order of
//! each group's `weight_names` (`layer.weights`: trainable, then the
//! rest; tf-keras `legacy/saving/hdf5_format.py`,
//! `save_weights_to_hdf5_group`). A nested model's group holds every
//! weight of its layers, named `<inner layer name>/...`.
//!
//! Keras 3 reads them by *position*: a model's layers are the container
//! `layers`, each named after its class in snake case, numbered from the
//! second of a class on (`dense`, `dense_1`, ...; keras
//! `saving/saving_lib.py`, `_save_container_state`), and a layer's own
//! variables are `vars/0`, `vars/1`, ... in the order of its
//! `_trainable_variables + _non_trainable_variables` (`Layer.save_own_variables`).
//! Layers that hold others keep them under the attribute's name: an RNN
//! its `cell`, `Bidirectional` its `forward_layer` and `backward_layer`,
//! `TimeDistributed` its `layer`, `MultiHeadAttention` its
//! `_query_dense`, `_key_dense`, `_value_dense` and `_output_dense`
//! (the layout tf.keras 2.15 writes in its `.keras` archives, which
//! every pinned Keras 3 loads).

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use super::layers::MODELS;
use super::Refusal;
pub use crate::view::config::to_snake_case;

/// The recurrent layers whose weights are their cell's.
const RNNS: &[&str] = &[
    "SimpleRNN",
    "LSTM",
    "GRU",
    "ConvLSTM1D",
    "ConvLSTM2D",
    "ConvLSTM3D",
    "CuDNNLSTM",
    "CuDNNGRU",
];

/// The cells an `RNN` layer may hold (one cell, not a list or a
/// `StackedRNNCells`).
const CELLS: &[&str] = &["SimpleRNNCell", "LSTMCell", "GRUCell"];

/// `MultiHeadAttention`'s sublayers: the first part of a weight's name
/// (after the layer's own) and the attribute Keras 3 keeps it under.
const ATTENTION_PARTS: &[(&str, &str)] = &[
    ("query", "_query_dense"),
    ("key", "_key_dense"),
    ("value", "_value_dense"),
    ("attention_output", "_output_dense"),
];

/// Where each weight goes: `moves` (legacy dataset path, Keras 3 path),
/// and the groups to create first (parents before children).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct H5Layout {
    /// Every group of the new file, parents first.
    pub groups: Vec<String>,
    /// (`model_weights/...` path, Keras 3 path) of every weight.
    pub moves: Vec<(String, String)>,
    /// Per top-level layer with weights: its name, and its Keras 3 path.
    pub layers: Vec<(String, String)>,
}

/// The class Keras 3 builds for a layer entry of the legacy config (what
/// its weights path is named after).
fn keras3_class(entry: &Value) -> String {
    let class = entry
        .get("class_name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let class = class.rsplit('>').next().unwrap_or(class);
    if class == "Model" {
        return "Functional".into();
    }
    // A class Keras 3 does not have becomes the one the layer table says.
    super::layer_class(class)
        .and_then(|c| c.replacement.as_ref())
        .map_or_else(|| class.to_string(), |r| r.class.clone())
}

/// The layer entries of a model entry (a `Sequential` of Keras 2.0 to
/// 2.2 keeps them as its whole config).
pub fn model_layers(entry: &Value) -> Option<&Vec<Value>> {
    let cfg = entry.get("config")?;
    cfg.as_array()
        .or_else(|| cfg.get("layers").and_then(Value::as_array))
}

fn is_model(entry: &Value) -> bool {
    let class = entry
        .get("class_name")
        .and_then(Value::as_str)
        .unwrap_or("");
    (MODELS.contains(&class) || class == "Model") && model_layers(entry).is_some()
}

fn layer_name(entry: &Value) -> &str {
    entry
        .get("config")
        .and_then(|c| c.get("name"))
        .and_then(Value::as_str)
        .or_else(|| entry.get("name").and_then(Value::as_str))
        .unwrap_or("")
}

/// Plan the Keras 3 layout of the legacy weights: `root` is the model
/// config, `groups` each `model_weights` group's `weight_names` by layer
/// name, `top_level` the model's own weights (Keras 3's
/// `top_level_model_weights`), `keras3` whether Keras 3 wrote the file.
///
/// Keras 3 names a weight by its variable's path (`w.path`, Keras 3.5
/// and later; `legacy_h5_format.py:246` at 3.15.1), which starts with the
/// name scope it was built in: a layer of a Sequential or of a nested
/// model is named `<model>/<layer>/...`. That scope is taken off before
/// the names are read. Keras 3.0 wrote the bare variable name (`kernel`,
/// `legacy_h5_format.py:234` at 3.0.5), which names no layer of a nested
/// model (refused there). And since a Keras 3 layer keeps a sublayer's
/// variables under the sublayer, a weight of a Keras 3 file named
/// `<layer>/<sublayer>/...` is refused unless the class is one whose
/// sublayers this module maps.
pub fn h5_layout(
    root: &Value,
    groups: &[(String, Vec<String>)],
    top_level: &[String],
    keras3: bool,
) -> Result<H5Layout, Refusal> {
    let by_name: HashMap<&str, &Vec<String>> =
        groups.iter().map(|(n, w)| (n.as_str(), w)).collect();
    let mut b = Builder {
        keras3,
        ..Builder::default()
    };
    b.group("vars");
    for (i, w) in top_level.iter().enumerate() {
        b.out.moves.push((
            format!("model_weights/{}/{w}", crate::weights::legacy::TOP_LEVEL),
            format!("vars/{i}"),
        ));
    }
    let Some(layers) = model_layers(root) else {
        return Err(refuse("", "the model config lists no layers".into()));
    };
    let mut seen = BTreeSet::new();
    b.group("layers");
    for (name, l, path) in container("layers", layers) {
        seen.insert(name.clone());
        b.group(&path);
        b.group(&format!("{path}/vars"));
        let Some(weights) = by_name.get(name.as_str()).filter(|w| !w.is_empty()) else {
            continue;
        };
        let names = leaf_names(l);
        let named: Vec<(String, String)> = weights
            .iter()
            .map(|w| {
                let w_name = if keras3 { unscoped(w, &names) } else { w };
                (format!("model_weights/{name}/{w}"), w_name.to_string())
            })
            .collect();
        if is_model(l) {
            b.model(l, &path, &named, &name)?;
        } else {
            b.layer(l, &path, &named, &name, &name)?;
        }
        b.out.layers.push((name, path));
    }
    for (name, w) in groups {
        if !w.is_empty() && !seen.contains(name) {
            return Err(refuse(
                name,
                format!("the file holds weights for a layer `{name}` that the model config does not have"),
            ));
        }
    }
    Ok(b.out)
}

fn refuse(layer: &str, reason: String) -> Refusal {
    Refusal {
        layer: layer.to_string(),
        reason,
    }
}

/// The layers of a model kept in the container `at` (`layers`, or
/// `<model>/layers`), each shared layer once: its name, its entry, and
/// its path, named after its Keras 3 class and numbered within the
/// container (`dense`, `dense_1`).
fn container<'a>(at: &str, layers: &'a [Value]) -> Vec<(String, &'a Value, String)> {
    let mut used = HashMap::new();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for l in layers {
        let name = layer_name(l).to_string();
        if seen.insert(name.clone()) {
            let path = format!(
                "{at}/{}",
                unique(&mut used, &to_snake_case(&keras3_class(l)))
            );
            out.push((name, l, path));
        }
    }
    out
}

/// `name`, or `name_k` for the k-th repeat in one container.
fn unique(used: &mut HashMap<String, usize>, name: &str) -> String {
    match used.get_mut(name) {
        Some(n) => {
            *n += 1;
            format!("{name}_{n}")
        }
        None => {
            used.insert(name.to_string(), 0);
            name.to_string()
        }
    }
}

/// `w` from its first part that is one of `names` on (the name scope
/// Keras 3 built it in taken off), or `w` when no part is.
fn unscoped<'a>(w: &'a str, names: &BTreeSet<String>) -> &'a str {
    let mut at = 0;
    for part in w.split('/') {
        if names.contains(part) {
            return &w[at..];
        }
        at += part.len() + 1;
    }
    w
}

#[derive(Default)]
struct Builder {
    out: H5Layout,
    made: BTreeSet<String>,
    /// Keras 3 wrote the file (weights named by their variables' paths).
    keras3: bool,
}

/// (dataset path, weight name) pairs.
type Named = [(String, String)];

impl Builder {
    fn group(&mut self, path: &str) {
        if self.made.insert(path.to_string()) {
            self.out.groups.push(path.to_string());
        }
    }

    /// Each weight in order, to `path/vars/0..`.
    fn flat(&mut self, path: &str, named: &Named) {
        self.group(path);
        self.group(&format!("{path}/vars"));
        for (i, (from, _)) in named.iter().enumerate() {
            self.out
                .moves
                .push((from.clone(), format!("{path}/vars/{i}")));
        }
    }

    /// The weights of a nested model entry `m` at `path`: each weight
    /// goes to the layer of `m` (at any depth) whose name starts it.
    fn model(&mut self, m: &Value, path: &str, named: &Named, at: &str) -> Result<(), Refusal> {
        let layers = model_layers(m).expect("a model entry");
        let mut left: Vec<bool> = vec![true; named.len()];
        let inside: BTreeSet<String> = layers.iter().flat_map(leaf_names).collect();
        let named: Vec<(String, String)> = named
            .iter()
            .map(|(p, w)| {
                let w = if self.keras3 { unscoped(w, &inside) } else { w };
                (p.clone(), w.to_string())
            })
            .collect();
        let inner = format!("{path}/layers");
        self.group(&inner);
        for (name, l, sub) in container(&inner, layers) {
            self.group(&sub);
            self.group(&format!("{sub}/vars"));
            let names = leaf_names(l);
            let mine: Vec<(String, String)> = named
                .iter()
                .enumerate()
                .filter(|(_, (_, w))| {
                    let first = w.split('/').next().unwrap_or("");
                    names.contains(first)
                })
                .map(|(i, p)| {
                    left[i] = false;
                    p.clone()
                })
                .collect();
            if mine.is_empty() {
                continue;
            }
            let at = format!("{at}/{name}");
            if is_model(l) {
                self.model(l, &sub, &mine, &at)?;
            } else {
                self.layer(l, &sub, &mine, &name, &at)?;
            }
        }
        if let Some(i) = left.iter().position(|&l| l) {
            return Err(refuse(
                at,
                format!(
                    "the weight `{}` of the nested model names no layer of it: krepair cannot tell which layer it belongs to",
                    named[i].1
                ),
            ));
        }
        Ok(())
    }

    /// The weights of the layer entry `l` (named `name`) at `path`.
    fn layer(
        &mut self,
        l: &Value,
        path: &str,
        named: &Named,
        name: &str,
        at: &str,
    ) -> Result<(), Refusal> {
        let class = keras3_class(l);
        let cfg = l.get("config").unwrap_or(&Value::Null);
        let rest = |w: &str| -> String {
            w.strip_prefix(name)
                .and_then(|r| r.strip_prefix('/'))
                .unwrap_or(w)
                .to_string()
        };
        match class.as_str() {
            c if RNNS.contains(&c) => self.flat(&format!("{path}/cell"), named),
            "RNN" => {
                let cell = cfg.get("cell").map(keras3_class).unwrap_or_default();
                if cell == "StackedRNNCells" {
                    let stacked = cfg.get("cell").expect("a cell");
                    return self.stacked(stacked, path, named, &rest, at);
                }
                if !CELLS.contains(&cell.as_str()) {
                    return Err(refuse(
                        at,
                        format!("an RNN over `{cell}`: krepair maps the weights of an RNN over one SimpleRNNCell, LSTMCell or GRUCell only"),
                    ));
                }
                self.flat(&format!("{path}/cell"), named);
            }
            "TimeDistributed" => {
                let inner = cfg.get("layer").cloned().unwrap_or(Value::Null);
                let iname = layer_name(&inner).to_string();
                let sub = format!("{path}/layer");
                // The wrapped layer's weights are named after the
                // wrapper (`time_distributed/kernel:0`).
                let stripped: Vec<(String, String)> =
                    named.iter().map(|(p, w)| (p.clone(), rest(w))).collect();
                self.layer(&inner, &sub, &stripped, &iname, &format!("{at}/layer"))?;
            }
            "Bidirectional" => self.bidirectional(cfg, path, named, &rest, at)?,
            "MultiHeadAttention" => {
                for (part, attr) in ATTENTION_PARTS {
                    let mine: Vec<(String, String)> = named
                        .iter()
                        .filter(|(_, w)| rest(w).split('/').next() == Some(part))
                        .cloned()
                        .collect();
                    self.flat(&format!("{path}/{attr}"), &mine);
                }
                let placed: usize = self
                    .out
                    .moves
                    .iter()
                    .filter(|(_, to)| to.starts_with(&format!("{path}/")))
                    .count();
                if placed != named.len() {
                    return Err(refuse(
                        at,
                        "a MultiHeadAttention weight is not named query, key, value or attention_output".into(),
                    ));
                }
            }
            _ if is_model(l) => unreachable!("models are mapped by `model`"),
            _ => {
                if let Some((_, w)) = named
                    .iter()
                    .find(|(_, w)| self.keras3 && rest(w).contains('/'))
                {
                    return Err(refuse(
                        at,
                        format!("the weight `{w}` of a `{class}` belongs to a sublayer of it: krepair maps the sublayers of RNN layers, Bidirectional, TimeDistributed and MultiHeadAttention only"),
                    ));
                }
                self.flat(path, named)
            }
        }
        Ok(())
    }

    /// An RNN over `StackedRNNCells`: each cell's weights (named
    /// `<stacked cells>/<cell>/...`) under `cell/cells/<cell class>[_k]`.
    fn stacked(
        &mut self,
        stacked: &Value,
        path: &str,
        named: &Named,
        rest: &dyn Fn(&str) -> String,
        at: &str,
    ) -> Result<(), Refusal> {
        let cells = stacked
            .get("config")
            .and_then(|c| c.get("cells"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        self.group(&format!("{path}/cell"));
        self.group(&format!("{path}/cell/vars"));
        self.group(&format!("{path}/cell/cells"));
        let mut used = HashMap::new();
        let mut placed = 0;
        for c in &cells {
            let class = keras3_class(c);
            if !CELLS.contains(&class.as_str()) {
                return Err(refuse(
                    at,
                    format!("a StackedRNNCells over `{class}`: krepair maps SimpleRNNCell, LSTMCell and GRUCell cells only"),
                ));
            }
            let name = layer_name(c);
            let mine: Vec<(String, String)> = named
                .iter()
                .filter(|(_, w)| rest(w).split('/').nth(1) == Some(name))
                .cloned()
                .collect();
            placed += mine.len();
            let sub = format!(
                "{path}/cell/cells/{}",
                unique(&mut used, &to_snake_case(&class))
            );
            self.flat(&sub, &mine);
        }
        if placed != named.len() {
            return Err(refuse(
                at,
                "a weight of the StackedRNNCells names none of its cells".into(),
            ));
        }
        Ok(())
    }

    /// `Bidirectional`: the forward layer's weights (named
    /// `forward_<layer>/...`), then the backward one's.
    fn bidirectional(
        &mut self,
        cfg: &Value,
        path: &str,
        named: &Named,
        rest: &dyn Fn(&str) -> String,
        at: &str,
    ) -> Result<(), Refusal> {
        let forward = cfg.get("layer").cloned().unwrap_or(Value::Null);
        let backward = cfg
            .get("backward_layer")
            .cloned()
            .unwrap_or(forward.clone());
        let mut placed = 0;
        for (side, entry, attr) in [
            ("forward_", &forward, "forward_layer"),
            ("backward_", &backward, "backward_layer"),
        ] {
            let mine: Vec<(String, String)> = named
                .iter()
                .filter(|(_, w)| rest(w).starts_with(side))
                .map(|(p, w)| {
                    let r = rest(w);
                    let inner = r.split_once('/').map_or(r.as_str(), |x| x.1).to_string();
                    (p.clone(), inner)
                })
                .collect();
            placed += mine.len();
            let iname = layer_name(entry).to_string();
            self.layer(
                entry,
                &format!("{path}/{attr}"),
                &mine,
                &iname,
                &format!("{at}/{attr}"),
            )?;
        }
        if placed != named.len() {
            return Err(refuse(
                at,
                "a Bidirectional weight is named neither forward_... nor backward_...".into(),
            ));
        }
        Ok(())
    }
}

/// The names a weight of the layer entry `l` may start with inside a
/// nested model: its own, and, for a model, every layer's inside it.
fn leaf_names(l: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    out.insert(layer_name(l).to_string());
    if is_model(l) {
        for sub in model_layers(l).into_iter().flatten() {
            out.extend(leaf_names(sub));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn snake_case_is_keras_own() {
        for (class, want) in [
            ("Dense", "dense"),
            ("BatchNormalization", "batch_normalization"),
            ("Conv2D", "conv2d"),
            ("Conv2DTranspose", "conv2d_transpose"),
            ("LSTM", "lstm"),
            ("MultiHeadAttention", "multi_head_attention"),
            ("PReLU", "p_re_lu"),
            ("ReLU", "re_lu"),
            ("GRU", "gru"),
            ("SeparableConv1D", "separable_conv1d"),
            ("GlobalAveragePooling2D", "global_average_pooling2d"),
            ("ConvLSTM2D", "conv_lstm2d"),
            ("Functional", "functional"),
            ("EinsumDense", "einsum_dense"),
        ] {
            assert_eq!(to_snake_case(class), want, "{class}");
        }
    }

    #[test]
    fn layers_are_numbered_by_class_and_nested_weights_follow_their_layer() {
        let root = json!({"class_name": "Functional", "config": {"name": "m", "layers": [
            {"class_name": "InputLayer", "config": {"name": "in"}},
            {"class_name": "Dense", "config": {"name": "a"}},
            {"class_name": "Dense", "config": {"name": "b"}},
            {"class_name": "LSTM", "config": {"name": "l"}},
            {"class_name": "Sequential", "config": {"name": "inner", "layers": [
                {"class_name": "Dense", "config": {"name": "x"}},
                {"class_name": "BatchNormalization", "config": {"name": "bn"}}]}}]}});
        let groups = vec![
            ("in".to_string(), vec![]),
            ("a".into(), vec!["a/kernel:0".into(), "a/bias:0".into()]),
            ("b".into(), vec!["b/kernel:0".into()]),
            ("l".into(), vec!["l/lstm_cell/kernel:0".into()]),
            (
                "inner".into(),
                vec![
                    "x/kernel:0".into(),
                    "bn/gamma:0".into(),
                    "bn/moving_mean:0".into(),
                ],
            ),
        ];
        let lay = h5_layout(&root, &groups, &[], false).unwrap();
        assert_eq!(
            lay.moves,
            [
                ("model_weights/a/a/kernel:0", "layers/dense/vars/0"),
                ("model_weights/a/a/bias:0", "layers/dense/vars/1"),
                ("model_weights/b/b/kernel:0", "layers/dense_1/vars/0"),
                (
                    "model_weights/l/l/lstm_cell/kernel:0",
                    "layers/lstm/cell/vars/0"
                ),
                (
                    "model_weights/inner/x/kernel:0",
                    "layers/sequential/layers/dense/vars/0"
                ),
                (
                    "model_weights/inner/bn/gamma:0",
                    "layers/sequential/layers/batch_normalization/vars/0"
                ),
                (
                    "model_weights/inner/bn/moving_mean:0",
                    "layers/sequential/layers/batch_normalization/vars/1"
                ),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert!(
            lay.groups.iter().position(|g| g == "layers").unwrap()
                < lay.groups.iter().position(|g| g == "layers/dense").unwrap()
        );
    }

    #[test]
    fn wrappers_put_weights_under_their_attributes() {
        let bi = json!({"class_name": "Bidirectional", "config": {"name": "bi",
            "layer": {"class_name": "GRU", "config": {"name": "g"}}}});
        let mha = json!({"class_name": "MultiHeadAttention", "config": {"name": "mha"}});
        let root =
            json!({"class_name": "Sequential", "config": {"name": "s", "layers": [bi, mha]}});
        let groups = vec![
            (
                "bi".to_string(),
                vec![
                    "bi/forward_g/gru_cell/kernel:0".into(),
                    "bi/backward_g/gru_cell/kernel:0".into(),
                ],
            ),
            (
                "mha".into(),
                vec![
                    "mha/query/kernel:0".into(),
                    "mha/attention_output/bias:0".into(),
                ],
            ),
        ];
        let to: Vec<String> = h5_layout(&root, &groups, &[], false)
            .unwrap()
            .moves
            .into_iter()
            .map(|m| m.1)
            .collect();
        assert_eq!(
            to,
            [
                "layers/bidirectional/forward_layer/cell/vars/0",
                "layers/bidirectional/backward_layer/cell/vars/0",
                "layers/multi_head_attention/_query_dense/vars/0",
                "layers/multi_head_attention/_output_dense/vars/0",
            ]
        );
    }

    #[test]
    fn a_replaced_class_is_named_after_its_keras_3_class() {
        let e = |c: &str| json!({"class_name": c, "config": {"name": "x"}});
        assert_eq!(keras3_class(&e("ThresholdedReLU")), "ReLU");
        assert_eq!(keras3_class(&e("RandomHeight")), "Identity");
        assert_eq!(keras3_class(&e("Model")), "Functional");
        assert_eq!(keras3_class(&e("Dense")), "Dense");
        assert_eq!(keras3_class(&e("Custom>Dense")), "Dense");
    }

    #[test]
    fn weights_no_layer_owns_are_refused() {
        let root = json!({"class_name": "Sequential", "config": {"name": "s", "layers": [
            {"class_name": "Sequential", "config": {"name": "inner", "layers": [
                {"class_name": "Dense", "config": {"name": "x"}}]}}]}});
        let e = h5_layout(
            &root,
            &[("inner".into(), vec!["y/kernel:0".into()])],
            &[],
            false,
        )
        .unwrap_err();
        assert!(e.reason.contains("names no layer"), "{}", e.reason);
        let e = h5_layout(
            &root,
            &[("ghost".into(), vec!["g/kernel:0".into()])],
            &[],
            false,
        )
        .unwrap_err();
        assert!(e.reason.contains("does not have"), "{}", e.reason);
    }
}
