//! The Keras 3 table (`compat.json`): what each pinned Keras 3 accepts,
//! probed from its own code by `scripts/keras3_table.py` (and checked
//! against every pinned Keras 3 in CI with `write --check`).

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

const COMPAT_JSON: &str = include_str!("compat.json");

/// The table as the probe writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[allow(dead_code)]
    about: String,
    versions: Vec<String>,
    #[allow(dead_code)]
    dtype_object: Vec<bool>,
    node_training_honoured: Vec<bool>,
    roundtrip_fails: Vec<BTreeMap<String, String>>,
    functional_leaf: Vec<bool>,
    classes: HashMap<String, RawClass>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClass {
    #[serde(default)]
    class: BTreeMap<String, String>,
    #[serde(default)]
    as_string: BTreeMap<String, String>,
    #[serde(default)]
    training_default: BTreeMap<String, Value>,
    #[serde(default)]
    params: HashMap<String, Vec<RawVariant>>,
    #[serde(default)]
    inference: BTreeMap<String, Inference>,
    #[serde(default)]
    build_from_json_fails: Vec<usize>,
}

/// What a layer without variables, made with its defaults, computed at
/// inference on the probe's fixed input.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Inference {
    /// The input's shape.
    pub input: Vec<u64>,
    /// The output's shape.
    pub shape: Vec<u64>,
    /// Up to 16 outputs, sampled evenly.
    pub values: Vec<f64>,
    /// The sum of the outputs.
    pub sum: f64,
}

impl Inference {
    /// The same computation, up to float noise (rtol 1e-4)?
    pub fn same(&self, o: &Inference) -> bool {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * b.abs().max(1.0);
        self.input == o.input
            && self.shape == o.shape
            && self.values.len() == o.values.len()
            && self
                .values
                .iter()
                .zip(&o.values)
                .all(|(a, b)| close(*a, *b))
            && close(self.sum, o.sum)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariant {
    #[serde(rename = "in")]
    versions: Vec<usize>,
    spec: Spec,
}

/// One config key of one class in some versions.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The constructor's default (absent when required, or when the
    /// default is no JSON value).
    #[serde(default, deserialize_with = "some_value")]
    pub default: Option<Value>,
    /// What `get_config` writes for the argument left unset, where that
    /// is not the default (`ragged: false` for a default of None).
    #[serde(default, deserialize_with = "some_value")]
    pub written: Option<Value>,
    /// The constructor requires it.
    #[serde(default)]
    pub required: bool,
    /// Its default is an object (no JSON value).
    #[serde(default)]
    pub object: bool,
}

/// `Some(null)` for a present null (serde's default gives `None` only when
/// the key is absent).
fn some_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// One public name of a Keras module (`keras.initializers>Orthogonal`).
#[derive(Debug, Default)]
pub struct Name {
    /// Per version: the class the name resolves to in a serialized
    /// object, if it does.
    pub class: Vec<Option<String>>,
    /// Per version: the class the name resolves to as a plain string.
    pub as_string: Vec<Option<String>>,
    /// Per version: a layer's non-None default of `training` in `call`.
    pub training_default: Vec<Option<Value>>,
    /// Per config key: per version, its spec where the class takes it.
    pub params: HashMap<String, Vec<Option<Spec>>>,
    /// Per version: what the layer computes at inference (layers without
    /// variables the probe could make).
    pub inference: Vec<Option<Inference>>,
    /// Per version: its build from a build_config read back from JSON
    /// fails (3.0.5's Dot).
    pub build_from_json_fails: Vec<bool>,
}

/// The whole table.
#[derive(Debug)]
pub struct Table {
    /// The pinned Keras 3 versions, oldest first (the pre-release last).
    pub versions: Vec<String>,
    /// Per version: does a Functional model honour a node's own
    /// `training` at predict (Keras 3.16), or does the outer call's
    /// override it (3.0 to 3.15)?
    pub node_training_honoured: Vec<bool>,
    /// Per version: the wrapper classes whose own archive it cannot load
    /// back, with why.
    pub roundtrip_fails: Vec<BTreeMap<String, String>>,
    /// Per version: does a Functional config take one bare `[layer, node,
    /// tensor]` as its input_layers or output_layers?
    pub functional_leaf: Vec<bool>,
    /// Per `module>name`.
    pub names: HashMap<String, Name>,
}

fn per_version<T: Clone>(n: usize, m: BTreeMap<String, T>) -> Vec<Option<T>> {
    let mut out = vec![None; n];
    for (k, v) in m {
        if let Some(slot) = k.parse::<usize>().ok().and_then(|i| out.get_mut(i)) {
            *slot = Some(v);
        }
    }
    out
}

impl Table {
    fn from_raw(raw: Raw) -> Table {
        let n = raw.versions.len();
        let names = raw
            .classes
            .into_iter()
            .map(|(key, c)| {
                let mut params = HashMap::new();
                for (k, variants) in c.params {
                    let mut v = vec![None; n];
                    for var in variants {
                        for i in var.versions {
                            if let Some(slot) = v.get_mut(i) {
                                *slot = Some(var.spec.clone());
                            }
                        }
                    }
                    params.insert(k, v);
                }
                let mut fails = vec![false; n];
                for i in c.build_from_json_fails {
                    if let Some(f) = fails.get_mut(i) {
                        *f = true;
                    }
                }
                let name = Name {
                    inference: per_version(n, c.inference),
                    build_from_json_fails: fails,
                    class: per_version(n, c.class),
                    as_string: per_version(n, c.as_string),
                    training_default: per_version(n, c.training_default),
                    params,
                };
                (key, name)
            })
            .collect();
        Table {
            versions: raw.versions,
            node_training_honoured: raw.node_training_honoured,
            roundtrip_fails: raw.roundtrip_fails,
            functional_leaf: raw.functional_leaf,
            names,
        }
    }

    /// The entry of `name` in `module`.
    pub fn name(&self, module: &str, name: &str) -> Option<&Name> {
        self.names.get(&format!("{module}>{name}"))
    }

    /// The public names of `module` (for aliases), in a fixed order:
    /// lower-case names (the plain-string form Keras documents) first,
    /// then by name.
    pub fn names_in<'a>(&'a self, module: &'a str) -> Vec<(&'a str, &'a Name)> {
        let mut out: Vec<(&str, &Name)> = self
            .names
            .iter()
            .filter_map(move |(k, v)| {
                let (m, n) = k.split_once('>')?;
                (m == module).then_some((n, v))
            })
            .collect();
        out.sort_by_key(|(n, _)| (!n.chars().all(|c| !c.is_uppercase()), *n));
        out
    }
}

/// The table, parsed once.
pub fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        Table::from_raw(serde_json::from_str(COMPAT_JSON).expect("compat.json parses (tested)"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_parses_and_knows_every_pinned_keras_3() {
        let t = table();
        assert_eq!(t.versions.first().map(String::as_str), Some("3.0.5"));
        assert!(t
            .versions
            .last()
            .is_some_and(|v| v.starts_with("3.16.0.dev")));
        assert_eq!(t.node_training_honoured.len(), t.versions.len());
        // 3.0.5 resolves OrthogonalInitializer only; 3.16 Orthogonal only.
        let oi = t
            .name("keras.initializers", "OrthogonalInitializer")
            .unwrap();
        assert!(oi.class[0].is_some() && oi.class[t.versions.len() - 1].is_none());
        let o = t.name("keras.initializers", "Orthogonal").unwrap();
        assert!(o.class[0].is_none() && o.class[t.versions.len() - 1].is_some());
        let dense = t.name("keras.layers", "Dense").unwrap();
        assert!(dense.params["quantization_config"][0].is_none());
        assert!(dense.params["units"][0].as_ref().unwrap().required);
        // Probed behaviour: 3.0.5's Dot does not build from JSON lists,
        // 3.0.5 cannot load its own Bidirectional, and RandomCrop
        // computes otherwise at inference in 3.0.5 and 3.15.1.
        let dot = t.name("keras.layers", "Dot").unwrap();
        assert!(dot.build_from_json_fails[0] && !dot.build_from_json_fails[5]);
        assert!(t.roundtrip_fails[0].contains_key("Bidirectional"));
        assert!(t.roundtrip_fails[5].is_empty());
        let crop = t.name("keras.layers", "RandomCrop").unwrap();
        let (a, b) = (
            crop.inference[0].as_ref().unwrap(),
            crop.inference[5].as_ref().unwrap(),
        );
        assert!(!a.same(b) && a.same(a));
    }
}
