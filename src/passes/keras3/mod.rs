//! Keras 3 to Keras 3 (issue #33): the rewrites that make an archive
//! written by one Keras 3 load, and predict the same, in the others (pure:
//! a config tree in, rewrites and findings out).
//!
//! Every rule is derived from the Keras 3 table ([`table`], `compat.json`,
//! probed from each pinned Keras 3's own code), never from one archive:
//!
//! - `keras3-class-name`: a serialized object whose class name a target
//!   Keras cannot resolve takes a name of the same class that every target
//!   resolves (or, for an initializer, regularizer or constraint left at
//!   its defaults, the plain string every target resolves, such as
//!   `"orthogonal"`);
//! - `keras3-default-key`: a config key a target's constructor does not
//!   take is removed when it holds the value Keras writes for the argument
//!   left unset (what the constructor defaults it to, or what `get_config`
//!   writes then), so that the target computes what the writer computed;
//! - `node-training-default`: the `training` Keras 3.0 to 3.15 write into a
//!   node's `kwargs` for a layer whose `call` defaults it (the random
//!   augmentation layers' `training=True`) is removed where a target
//!   honours a node's own `training` at predict (3.16) while the writer
//!   let the outer call decide.
//!
//! What no form serves in every target is left as the newest targets load
//! it, and reported ([`Plan::unreachable`]). Nothing here changes what the
//! model computes in the writer's Keras.

pub mod table;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::passes::migrate::Rewrite;
use crate::plan::{finding, Code, Finding, Rule};
use table::{table, Name, Spec, Table};

/// The Keras versions an output must load in: indexes into the table's
/// versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Targets(Vec<usize>);

impl Default for Targets {
    /// Every pinned Keras 3, the pre-release included.
    fn default() -> Self {
        Targets((0..table().versions.len()).collect())
    }
}

impl Targets {
    /// Parse `--load-in`: `all`, or versions and ranges by `MAJOR.MINOR`,
    /// comma-separated (`3.10`, `3.10..`, `..3.15`, `3.5..3.13`), over the
    /// pinned versions.
    pub fn parse(spec: &str) -> Result<Targets, String> {
        let t = table();
        let minor = |v: &str| -> Option<(u32, u32)> {
            let mut it = v.split('.');
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        };
        let pinned: Vec<(u32, u32)> = t.versions.iter().filter_map(|v| minor(v)).collect();
        let known = || t.versions.join(", ");
        let mut out = Vec::new();
        for part in spec.split(',').map(str::trim) {
            if part == "all" {
                out.extend(0..pinned.len());
                continue;
            }
            let bound = |s: &str| -> Result<Option<(u32, u32)>, String> {
                if s.is_empty() {
                    return Ok(None);
                }
                minor(s)
                    .map(Some)
                    .ok_or_else(|| format!("{s:?} is not a Keras version (MAJOR.MINOR)"))
            };
            let (lo, hi) = match part.split_once("..") {
                Some((a, b)) => (bound(a)?, bound(b)?),
                None => {
                    let v = bound(part)?;
                    if v.is_none() {
                        return Err("an empty version".into());
                    }
                    (v, v)
                }
            };
            let before = out.len();
            for (i, v) in pinned.iter().enumerate() {
                if lo.is_none_or(|lo| *v >= lo) && hi.is_none_or(|hi| *v <= hi) {
                    out.push(i);
                }
            }
            if out.len() == before {
                return Err(format!(
                    "{part:?} names no pinned Keras 3 (pinned: {})",
                    known()
                ));
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(Targets(out))
    }

    /// Every pinned version, as a mask ([`Targets::mask`]).
    pub const ALL: u32 = u32::MAX;

    /// The targets of a mask (bit `i`: the table's version `i`).
    pub fn from_mask(mask: u32) -> Targets {
        Targets(
            (0..table().versions.len().min(32))
                .filter(|i| mask & (1 << i) != 0)
                .collect(),
        )
    }

    /// The targets as a mask (bit `i`: the table's version `i`).
    pub fn mask(&self) -> u32 {
        self.0.iter().fold(0, |m, &i| m | (1 << i))
    }

    /// The versions, oldest first.
    pub fn versions(&self) -> Vec<&'static str> {
        let t = table();
        self.0.iter().map(|&i| t.versions[i].as_str()).collect()
    }
}

/// The rewrites of one config, and the target versions it still cannot
/// load in, each with why.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// The config rewrites, in config order.
    pub rewrites: Vec<Rewrite>,
    /// Per target version that cannot load the output (or predicts
    /// otherwise): why, one line each.
    pub unreachable: BTreeMap<String, Vec<String>>,
}

/// Does the pass apply to an archive saved by `keras_version` (a Keras 3)?
pub fn applies(keras_version: Option<&str>) -> bool {
    keras_version
        .and_then(crate::plan::Version::parse)
        .is_some_and(|v| v.0 == 3)
}

/// The report's findings: the versions asked for (`load-in`), and one
/// `not-loadable-in` per version that cannot load the output.
pub fn findings(targets: &Targets, unreachable: &BTreeMap<String, Vec<String>>) -> Vec<Finding> {
    let mut out = vec![finding(
        Code::LoadIn,
        format!("made to load in Keras {}", targets.versions().join(", ")),
    )];
    let order = table()
        .versions
        .iter()
        .filter_map(|v| Some((v, unreachable.get(v)?)));
    for (v, why) in order {
        out.push(finding(
            Code::NotLoadableIn,
            format!(
                "Keras {v} cannot load the output as it should: {}",
                why.join("; ")
            ),
        ));
    }
    out
}

/// Plan the rewrites of `config` (edited in place), written by Keras
/// `writer` (`metadata.json`'s `keras_version`), for `targets`.
pub fn plan(config: &mut Value, writer: Option<&str>, targets: &Targets) -> Plan {
    let t = table();
    let mut cx = Cx {
        t,
        targets: &targets.0,
        writer: writer.and_then(|w| nearest_pinned(t, w)),
        writer_honours_node_training: writer.is_some_and(|w| honours_node_training(t, w)),
        plan: Plan::default(),
    };
    visit(config, "", "", true, &mut cx);
    cx.plan
}

/// Does Keras `writer` honour a node's own `training` (the first pinned
/// version that does, and every later one)?
fn honours_node_training(t: &Table, writer: &str) -> bool {
    let key = |v: &str| -> Vec<u64> {
        v.split(['.', 'd', 'e', 'v'])
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap_or(0))
            .collect()
    };
    let w = key(writer);
    t.versions
        .iter()
        .zip(&t.node_training_honoured)
        .find(|(_, h)| **h)
        .is_some_and(|(first, _)| {
            // A pre-release of 3.16 counts as 3.16.
            let f = key(first);
            w[..w.len().min(2)] >= f[..f.len().min(2)]
        })
}

/// The newest pinned version at or below `writer` (by major and minor),
/// whose behaviour stands for the writer's.
fn nearest_pinned(t: &Table, writer: &str) -> Option<usize> {
    let mm = |v: &str| -> Option<(u32, u32)> {
        let mut it = v.split('.');
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    };
    let w = mm(writer)?;
    t.versions
        .iter()
        .enumerate()
        .filter(|(_, v)| mm(v).is_some_and(|v| v <= w))
        .map(|(i, _)| i)
        .next_back()
}

struct Cx<'a> {
    t: &'static Table,
    targets: &'a [usize],
    /// The pinned version that stands for the writer.
    writer: Option<usize>,
    writer_honours_node_training: bool,
    plan: Plan,
}

impl Cx<'_> {
    fn block(&mut self, i: usize, why: String) {
        let v = self.t.versions[i].clone();
        let list = self.plan.unreachable.entry(v).or_default();
        if !list.contains(&why) {
            list.push(why);
        }
    }

    fn rewrite(&mut self, code: Rule, layer: &str, key: String, old: Value, new: Option<Value>) {
        self.plan.rewrites.push(Rewrite {
            code,
            layer: layer.to_string(),
            key,
            old,
            new,
        });
    }
}

fn join(key: &str, k: &str) -> String {
    if key.is_empty() {
        k.to_string()
    } else {
        format!("{key}.{k}")
    }
}

/// The config path of `v` if it is a layer or model entry inside the layer
/// at `layer` (the root model's path is empty).
fn entry_path(v: &Map<String, Value>, layer: &str) -> Option<String> {
    let module = v.get("module")?.as_str()?;
    let name = v.get("config")?.get("name")?.as_str()?;
    let is_layer = module == "keras.layers"
        || module.starts_with("keras.src.models")
        || v.contains_key("inbound_nodes")
        || (module == "keras" && v.get("class_name")?.as_str()? == "Sequential");
    is_layer.then(|| {
        if layer.is_empty() {
            name.to_string()
        } else {
            format!("{layer}/{name}")
        }
    })
}

fn visit(v: &mut Value, layer: &str, key: &str, root: bool, cx: &mut Cx) {
    match v {
        Value::Array(items) => {
            for (i, x) in items.iter_mut().enumerate() {
                visit(x, layer, &format!("{key}[{i}]"), false, cx);
            }
        }
        Value::Object(map) => {
            let (layer, key) = match entry_path(map, layer).filter(|_| !root) {
                Some(p) => (p, String::new()),
                None => (layer.to_string(), key.to_string()),
            };
            if let Some(s) = object(map, &layer, &key, cx) {
                *v = s;
                return;
            }
            tensor_leaves(map, &layer, &key, cx);
            if let Value::Object(map) = v {
                for (k, x) in map.iter_mut() {
                    visit(x, &layer, &join(&key, k), false, cx);
                }
            }
        }
        _ => {}
    }
}

/// The rules for one serialized object (`{"module", "class_name",
/// "config", ...}`); returns its replacement when it becomes a string.
fn object(map: &mut Map<String, Value>, layer: &str, key: &str, cx: &mut Cx) -> Option<Value> {
    let module = map.get("module")?.as_str()?.to_string();
    let class = map.get("class_name")?.as_str()?.to_string();
    let t = cx.t;
    let entry = t.name(&module, &class)?;
    let name = match class_name(map, entry, &module, &class, layer, key, cx) {
        Resolved::Name(n) => n,
        Resolved::String(s) => return Some(s),
    };
    let entry = t.name(&module, &name).unwrap_or(entry);
    if let Some(Value::Object(conf)) = map.get_mut("config") {
        default_keys(conf, entry, &format!("{module}.{name}"), layer, key, cx);
    }
    if let Some(Value::Array(nodes)) = map.get_mut("inbound_nodes") {
        node_training(nodes, entry, &name, layer, key, cx);
    }
    if module == "keras.layers" {
        behaviour(map, entry, &name, layer, key, cx);
    }
    None
}

/// Rule `keras3-build-config`, and findings for what a target computes
/// otherwise or cannot load back (from the probe's own runs).
fn behaviour(
    map: &mut Map<String, Value>,
    entry: &Name,
    class: &str,
    layer: &str,
    key: &str,
    cx: &mut Cx,
) {
    let t = cx.t;
    let fails = cx
        .targets
        .iter()
        .any(|&i| entry.build_from_json_fails.get(i).copied().unwrap_or(false));
    if fails {
        if let Some(old) = map.shift_remove("build_config") {
            cx.rewrite(
                Rule::Keras3BuildConfig,
                layer,
                join(key, "build_config"),
                old,
                None,
            );
        }
    }
    for &i in cx.targets {
        if let Some(why) = t.roundtrip_fails.get(i).and_then(|f| f.get(class)) {
            cx.block(
                i,
                format!("{layer}: it cannot load a {class} back even from its own archive ({why})"),
            );
        }
    }
    let Some(w) = cx.writer else {
        return;
    };
    let Some(Some(theirs)) = entry.inference.get(w) else {
        return;
    };
    for &i in cx.targets {
        if let Some(Some(ours)) = entry.inference.get(i) {
            if !ours.same(theirs) {
                let vw = &t.versions[w];
                cx.block(
                    i,
                    format!(
                        "{layer}: its {class} computes otherwise at inference than in Keras {vw} (probed on one input: output shape {:?} against {:?})",
                        ours.shape, theirs.shape
                    ),
                );
            }
        }
    }
}

enum Resolved {
    Name(String),
    String(Value),
}

fn resolves(n: &Name, i: usize) -> bool {
    n.class.get(i).is_some_and(Option::is_some)
}

/// Is `a` another name of the class `entry` names (the same class in
/// every version both resolve in, and at least one)?
fn same_class(entry: &Name, a: &Name) -> bool {
    let mut shared = false;
    for (x, y) in entry.class.iter().zip(&a.class) {
        if let (Some(x), Some(y)) = (x, y) {
            if x != y {
                return false;
            }
            shared = true;
        }
    }
    shared
}

/// Rule `keras3-class-name`.
fn class_name(
    map: &mut Map<String, Value>,
    entry: &Name,
    module: &str,
    class: &str,
    layer: &str,
    key: &str,
    cx: &mut Cx,
) -> Resolved {
    let targets = cx.targets;
    if targets.iter().all(|&i| resolves(entry, i)) {
        return Resolved::Name(class.to_string());
    }
    let t = cx.t;
    let aliases: Vec<(&str, &Name)> = t
        .names_in(module)
        .into_iter()
        .filter(|(_, a)| same_class(entry, a))
        .collect();
    let cover = |a: &Name| targets.iter().filter(|&&i| resolves(a, i)).count();
    let newest = |a: &Name| targets.iter().rev().position(|&i| resolves(a, i));
    // The class each target resolves one of its names to.
    let class_in = |i: usize| {
        aliases
            .iter()
            .find_map(|(_, a)| a.class.get(i).cloned().flatten())
    };
    let mut best: Option<(&str, &Name)> = None;
    for &(n, a) in &aliases {
        let better = match best {
            None => true,
            Some((bn, b)) => {
                // Ties go to the name as written, then the first in
                // names_in's order (the first found stays).
                (cover(a), std::cmp::Reverse(newest(a)), n == class)
                    > (cover(b), std::cmp::Reverse(newest(b)), bn == class)
            }
        };
        if better {
            best = Some((n, a));
        }
    }
    let (best_name, best_entry) = best.unwrap_or((class, entry));
    if cover(best_entry) < targets.len() && module != "keras.layers" {
        // The plain string, for an object left at its defaults.
        let conf = map.get("config").and_then(Value::as_object);
        let at_defaults = conf.is_some_and(|c| {
            c.iter().all(|(k, v)| {
                entry.params.get(k).is_some_and(|per| {
                    targets
                        .iter()
                        .filter_map(|&i| per.get(i).cloned().flatten())
                        .all(|s| is_unset(v, &s))
                })
            })
        });
        let string = t.names_in(module).into_iter().find(|(_, s)| {
            targets.iter().all(|&i| {
                let want = class_in(i);
                want.is_some() && s.as_string.get(i).cloned().flatten() == want
            })
        });
        if let (true, Some((s, _))) = (at_defaults, string) {
            let old = Value::Object(map.clone());
            let new = Value::String(s.to_string());
            cx.rewrite(
                Rule::Keras3ClassName,
                layer,
                key.to_string(),
                old,
                Some(new.clone()),
            );
            return Resolved::String(new);
        }
    }
    for &i in targets {
        if !resolves(best_entry, i) {
            cx.block(
                i,
                format!("{layer}: it cannot resolve {module}.{class} ({key}), under any name of that class"),
            );
        }
    }
    if best_name != class {
        let old = Value::String(class.to_string());
        let new = Value::String(best_name.to_string());
        map.insert("class_name".into(), new.clone());
        cx.rewrite(
            Rule::Keras3ClassName,
            layer,
            join(key, "class_name"),
            old,
            Some(new),
        );
    }
    Resolved::Name(best_name.to_string())
}

/// Rule `keras3-tensor-leaf`: a Functional config's one bare `[layer,
/// node, tensor]` (Keras 3.13 and later, for one tensor) becomes a list of
/// it (what 3.10 writes for one tensor) where a target takes only lists.
fn tensor_leaves(map: &mut Map<String, Value>, layer: &str, key: &str, cx: &mut Cx) {
    if !map.contains_key("layers") {
        return;
    }
    let t = cx.t;
    if cx.targets.iter().all(|&i| t.functional_leaf[i]) {
        return;
    }
    for k in ["input_layers", "output_layers"] {
        let Some(v) = map.get_mut(k) else { continue };
        let leaf = v
            .as_array()
            .is_some_and(|a| a.len() == 3 && a[0].is_string() && a[1].is_u64() && a[2].is_u64());
        if leaf {
            let old = v.clone();
            *v = Value::Array(vec![old.clone()]);
            cx.rewrite(
                Rule::Keras3TensorLeaf,
                layer,
                join(key, k),
                old,
                Some(v.clone()),
            );
        }
    }
}

/// Is `v` what Keras writes for an argument left unset (its default, or
/// what `get_config` writes for it)?
fn is_unset(v: &Value, s: &Spec) -> bool {
    s.default.as_ref().is_some_and(|d| same(v, d)) || s.written.as_ref().is_some_and(|w| same(v, w))
}

/// JSON equality with numbers compared as numbers (`1` and `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

/// Rule `keras3-default-key`.
fn default_keys(
    conf: &mut Map<String, Value>,
    entry: &Name,
    class: &str,
    layer: &str,
    key: &str,
    cx: &mut Cx,
) {
    let keys: Vec<String> = conf.keys().cloned().collect();
    for k in keys {
        // A key no version's constructor takes is its from_config's own.
        let Some(per) = entry.params.get(&k) else {
            continue;
        };
        let refused: Vec<usize> = cx
            .targets
            .iter()
            .copied()
            .filter(|&i| resolves(entry, i) && per.get(i).is_none_or(Option::is_none))
            .collect();
        if refused.is_empty() {
            continue;
        }
        let v = &conf[&k];
        if per.iter().flatten().all(|s| is_unset(v, s)) {
            let old = conf.remove(&k).unwrap_or(Value::Null);
            cx.rewrite(
                Rule::Keras3DefaultKey,
                layer,
                join(key, &format!("config.{k}")),
                old,
                None,
            );
        } else {
            let shown = short(v);
            for i in refused {
                cx.block(
                    i,
                    format!("{layer}: its {class} takes no {k} (here {shown})"),
                );
            }
        }
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!("{}...", s.chars().take(57).collect::<String>())
    } else {
        s
    }
}

/// Rule `node-training-default`, and a finding for a `training` passed
/// by hand that the targets treat otherwise than the writer.
fn node_training(
    nodes: &mut [Value],
    entry: &Name,
    class: &str,
    layer: &str,
    key: &str,
    cx: &mut Cx,
) {
    let t = cx.t;
    let honouring: Vec<usize> = cx
        .targets
        .iter()
        .copied()
        .filter(|&i| t.node_training_honoured[i] != cx.writer_honours_node_training)
        .collect();
    if honouring.is_empty() {
        return;
    }
    let default = entry.training_default.iter().flatten().next();
    for (n, node) in nodes.iter_mut().enumerate() {
        let Some(kwargs) = node.get_mut("kwargs").and_then(Value::as_object_mut) else {
            continue;
        };
        let Some(v) = kwargs.get("training").cloned() else {
            continue;
        };
        if !cx.writer_honours_node_training && default.is_some_and(|d| same(&v, d)) {
            kwargs.remove("training");
            let at = join(key, &format!("inbound_nodes[{n}].kwargs.training"));
            cx.rewrite(Rule::NodeTrainingDefault, layer, at, v, None);
        } else {
            for &i in &honouring {
                let how = if t.node_training_honoured[i] {
                    "honours"
                } else {
                    "ignores"
                };
                cx.block(
                    i,
                    format!("{layer}: the {class} was called with training={v}, which it {how} at predict, unlike the writer"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
