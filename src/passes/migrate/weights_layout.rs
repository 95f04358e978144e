//! The weights file layout of tf.keras 2.13 and 2.14, which keep a
//! model's layers under `_layer_checkpoint_dependencies` where 2.15 and
//! Keras 3 write `layers`, and may number them otherwise ([`Numbering`]):
//! [`legacy_layout`] plans the renames, read against the weights through
//! [`WeightsTree`], and [`legacy_path`] maps a Keras 3 path back.

use serde_json::Value;

use super::{child_path, Refusal};
use crate::plan::Version;
use crate::weights::WeightsTree;

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

/// The renames for the model `model` at config path `path`, whose weights
/// group is `old` in tf.keras's layout and `new` in Keras 3's: its
/// container, its layers, then the models inside it.
fn container_layout(
    model: &Value,
    old: &str,
    new: &str,
    path: &str,
    numbering: Numbering,
    tree: &dyn WeightsTree,
    out: &mut Vec<Rename>,
) -> Result<(), Refusal> {
    let old_c = join_path(old, LEGACY_CONTAINER);
    let new_c = join_path(new, "layers");
    let children = container_children(model);
    if !has_container(old, &old_c, children.len(), path, tree)? {
        return Ok(());
    }
    out.push(Rename {
        parent: new.to_string(),
        from: LEGACY_CONTAINER.into(),
        to: "layers".into(),
    });
    let nested = layer_renames(&children, &old_c, &new_c, path, numbering, tree, out)?;
    for m in nested {
        container_layout(m.model, &m.old, &m.new, &m.path, numbering, tree, out)?;
    }
    Ok(())
}

/// The layers of `model` that tf.keras lists in its container: all but a
/// Sequential's InputLayer.
fn container_children(model: &Value) -> Vec<&Value> {
    let sequential = model.get("class_name").and_then(Value::as_str) == Some("Sequential");
    model["config"]["layers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|l| {
            !(sequential && l.get("class_name").and_then(Value::as_str) == Some("InputLayer"))
        })
        .collect()
}

/// Do the weights hold the container `old_c` of the model at `path`
/// (weights group `old`), with one group for each of its `children`
/// layers? False when there is no container and no layer to hold; refused
/// when the container is missing, stands beside a `layers` group, or
/// holds another number of groups.
fn has_container(
    old: &str,
    old_c: &str,
    children: usize,
    path: &str,
    tree: &dyn WeightsTree,
) -> Result<bool, Refusal> {
    let refuse = |reason: String| Refusal {
        layer: path.to_string(),
        reason,
    };
    if !tree.is_group(old_c) {
        if children == 0 {
            return Ok(false);
        }
        return Err(refuse(format!(
            "no `{old_c}` group in the weights, where tf.keras keeps this model's layers"
        )));
    }
    if tree.is_group(&join_path(old, "layers")) {
        return Err(refuse(format!(
            "the weights hold both `{old_c}` and `{}`",
            join_path(old, "layers")
        )));
    }
    if tree.links(old_c) != children {
        return Err(refuse(format!(
            "`{old_c}` holds {} groups, but the config lists {} layers",
            tree.links(old_c),
            children
        )));
    }
    Ok(true)
}

/// A model nested in a container: its config entry, its weights group in
/// tf.keras's layout and in Keras 3's, and its config path.
struct NestedModel<'a> {
    model: &'a Value,
    old: String,
    new: String,
    path: String,
}

/// The renames of the layers `children` of the model at `path`, from
/// their names in the container `old_c` (numbered per class by
/// `numbering`) to their Keras 3 names in `new_c` (numbered per class by
/// ones). Returns the models among them, for their own layout.
fn layer_renames<'a>(
    children: &[&'a Value],
    old_c: &str,
    new_c: &str,
    path: &str,
    numbering: Numbering,
    tree: &dyn WeightsTree,
    out: &mut Vec<Rename>,
) -> Result<Vec<NestedModel<'a>>, Refusal> {
    // Per class: the next tf.keras number and the next Keras 3 number.
    let mut counters: std::collections::HashMap<String, (u32, u32)> = Default::default();
    let mut nested = Vec::new();
    for &l in children {
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
        let old_g = join_path(old_c, &tf_name);
        if !tree.is_group(&old_g) {
            return Err(Refusal {
                layer,
                reason: format!("no weights group `{old_g}`, where tf.keras numbers this layer"),
            });
        }
        *tf_n += match numbering {
            Numbering::Doubled if tree.has_datasets(&old_g) => 2,
            _ => 1,
        };
        *k3_n += 1;
        if tf_name != k3_name {
            out.push(Rename {
                parent: new_c.to_string(),
                from: tf_name,
                to: k3_name.clone(),
            });
        }
        if l.get("config")
            .and_then(|c| c.get("layers"))
            .is_some_and(Value::is_array)
        {
            nested.push(NestedModel {
                model: l,
                old: old_g,
                new: join_path(new_c, &k3_name),
                path: layer,
            });
        }
    }
    Ok(nested)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::migrate::fixtures::{dense, tf215_nested};
    use serde_json::json;

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
}
