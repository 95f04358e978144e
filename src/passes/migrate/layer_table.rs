//! The layer table: which `keras.layers` classes `krepair migrate`
//! migrates and by which rules, read from `layers.json` (compiled in).
//! That file is the one source of truth: scripts/layer_table.py checks it
//! against what each pinned tf.keras writes and each pinned Keras 3
//! accepts, and writes docs/layers.md from it.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::plan::Rule;

/// The table's text, as committed.
pub const LAYER_TABLE_JSON: &str = include_str!("layers.json");

/// What the table says of one class.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerClass {
    /// Keys tf.keras writes that Keras 3 does not take, in the order their
    /// rewrites are listed.
    #[serde(default)]
    pub drop: ordered::Ordered<Drop>,
    /// Keys Keras 3 takes under another name.
    #[serde(default)]
    pub rename: ordered::Ordered<RenameKey>,
    /// The Keras 3 class that replaces one Keras 3 does not have.
    #[serde(default, rename = "become")]
    pub replacement: Option<Replacement>,
    /// Rules of this class written in Rust (documentation: the walk calls
    /// them by class).
    #[serde(default)]
    pub code_rules: Vec<Rule>,
    /// Why the class is refused.
    #[serde(default)]
    pub refuse: Option<String>,
    /// What else the migrated layer needs where it loads (`tensorflow`:
    /// Keras 3 runs it through TensorFlow whatever its backend).
    #[serde(default)]
    pub needs: Option<String>,
    /// A remark for docs/layers.md.
    #[serde(default)]
    pub note: Option<String>,
}

/// A key removed when its value is one of `when` (or any value).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drop {
    /// The values Keras 3 computes without the key; `"any"`: every value.
    pub when: When,
    /// The rule that removes it.
    pub rule: Rule,
    /// Why any other value is refused.
    #[serde(default)]
    pub otherwise: Option<String>,
}

/// The values a [`Drop`] removes.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum When {
    /// These values only.
    Values(Vec<Value>),
    /// `"any"`: whatever the value.
    Any(AnyValue),
}

/// The string `"any"`.
#[derive(Clone, Copy, Debug, Deserialize)]
pub enum AnyValue {
    /// Any value.
    #[serde(rename = "any")]
    Any,
}

impl When {
    /// The value is one this drop removes.
    pub fn admits(&self, v: &Value) -> bool {
        match self {
            When::Any(_) => true,
            When::Values(vs) => vs.contains(v),
        }
    }
}

/// A key renamed.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameKey {
    /// The Keras 3 name.
    pub to: String,
    /// The rule.
    pub rule: Rule,
}

/// A class replaced by a Keras 3 class that computes the same.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replacement {
    /// The Keras 3 class (module `keras.layers`).
    pub class: String,
    /// The config keys kept as they are.
    pub keep: Vec<String>,
    /// Config keys kept under a new name.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Config keys set to a value.
    #[serde(default)]
    pub set: Map<String, Value>,
    /// The rule.
    pub rule: Rule,
}

/// The table: class name to entry.
#[derive(Debug, Deserialize)]
struct Table {
    #[allow(dead_code)]
    about: String,
    classes: BTreeMap<String, LayerClass>,
}

/// The parsed table (parsed once; a unit test proves it parses).
fn table() -> &'static BTreeMap<String, LayerClass> {
    static TABLE: OnceLock<BTreeMap<String, LayerClass>> = OnceLock::new();
    TABLE.get_or_init(|| {
        serde_json::from_str::<Table>(LAYER_TABLE_JSON)
            .expect("layers.json parses (tested)")
            .classes
    })
}

/// What the table says of `class`, if it lists it.
pub fn layer_class(class: &str) -> Option<&'static LayerClass> {
    table().get(class)
}

/// The classes `krepair migrate` migrates (listed without `refuse`), in
/// name order.
pub fn migrated_classes() -> impl Iterator<Item = &'static str> {
    table()
        .iter()
        .filter(|(_, c)| c.refuse.is_none())
        .map(|(k, _)| k.as_str())
}

/// Maps that keep the order of their keys in the file (serde_json's
/// `preserve_order` keeps `Map` in insertion order).
pub mod ordered {
    use serde::de::{Deserialize, Deserializer};
    use serde_json::{Map, Value};

    /// `(key, value)` pairs in file order.
    #[derive(Clone, Debug)]
    pub struct Ordered<T>(pub Vec<(String, T)>);

    impl<T> Default for Ordered<T> {
        fn default() -> Self {
            Ordered(Vec::new())
        }
    }

    impl<T> Ordered<T> {
        /// The pairs in file order.
        pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
            self.0.iter().map(|(k, v)| (k.as_str(), v))
        }
    }

    impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Ordered<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let m = Map::<String, Value>::deserialize(d)?;
            m.into_iter()
                .map(|(k, v)| {
                    serde_json::from_value(v)
                        .map(|t| (k, t))
                        .map_err(serde::de::Error::custom)
                })
                .collect::<Result<_, _>>()
                .map(Ordered)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_parses_and_names_known_rules() {
        let t: Table = serde_json::from_str(LAYER_TABLE_JSON).unwrap();
        assert!(t.classes.len() > 90, "{} classes", t.classes.len());
        let lstm = &t.classes["LSTM"];
        let (key, drop) = lstm.drop.iter().next().unwrap();
        assert_eq!((key, drop.rule), ("time_major", Rule::RnnTimeMajor));
        assert!(drop.when.admits(&Value::Bool(false)));
        assert!(!drop.when.admits(&Value::Bool(true)));
        assert!(t.classes["Lambda"].refuse.is_some());
        let thr = t.classes["ThresholdedReLU"].replacement.as_ref().unwrap();
        assert_eq!(thr.class, "ReLU");
        assert_eq!(thr.rename["theta"], "threshold");
        // Every class a drop refuses has the reason to say.
        for (class, c) in &t.classes {
            for (key, d) in c.drop.iter() {
                if matches!(d.when, When::Values(_)) {
                    assert!(d.otherwise.is_some(), "{class}.{key}: no reason to refuse");
                }
            }
        }
    }

    #[test]
    fn an_unknown_field_or_rule_is_an_error() {
        let bad = r#"{"about": "", "classes": {"X": {"drop": {"k": {"when": "any", "rule": "no-such-rule"}}}}}"#;
        assert!(serde_json::from_str::<Table>(bad).is_err());
        let bad = r#"{"about": "", "classes": {"X": {"dorp": {}}}}"#;
        assert!(serde_json::from_str::<Table>(bad).is_err());
    }
}
