//! The Normalization repair pass (keras-team/keras #20147): for each
//! Normalization layer of the config ([`crate::view::config`]), find its
//! variables in the weights, check them against the layer's axis and input
//! shape, decide what the saved model computed ([`crate::plan`]), and plan
//! the edit that makes every Keras compute it without `finalize_state()`.
//! It reads the weights; it never writes anything.

use std::collections::{HashMap, HashSet};

use crate::error::Result;
use crate::passes::stats;
use crate::plan::{self, finding, Action, Chosen, Code, Policy};
use crate::report::{Embedded, LayerReport, Status, Stored};
use crate::view::config::{Locator, Mode, NormSite, ShapeFrom};
use crate::weights::{Elem, Weights};
use serde_json::Value;

/// A dataset's shape for messages, telling a null dataspace from a scalar.
fn shape_text(d: &crate::weights::DatasetInfo) -> String {
    if d.null {
        "with a null dataspace (no values)".into()
    } else {
        format!("{:?}", d.shape)
    }
}

/// How many Normalization sites share each `Within` group (a custom
/// layer holding several).
pub fn count_within(sites: &[NormSite]) -> HashMap<String, usize> {
    count_locators(sites.iter().map(|s| &s.locator))
}

/// How many of `locators` share each `Within` group.
pub fn count_locators<'a>(locators: impl Iterator<Item = &'a Locator>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for l in locators {
        if let Locator::Within { group, .. } = l {
            *m.entry(group.clone()).or_insert(0) += 1;
        }
    }
    m
}

fn base_report(site: &NormSite) -> LayerReport {
    LayerReport {
        config_path: site.config_path.clone(),
        name: site.name.clone(),
        weights_group: None,
        axis: site.axis.clone(),
        invert: site.invert,
        mode: site.mode,
        input_shape: site.input_shape.clone(),
        stats_shape: None,
        stored: None,
        policy: None,
        embedded: None,
        status: Status::Unchanged,
        reason: None,
        findings: Vec::new(),
    }
}

fn refuse(mut r: LayerReport, code: Code, reason: String) -> (LayerReport, Option<Action>) {
    r.findings.push(finding(code, reason.clone()));
    r.status = Status::Refused;
    r.reason = Some(reason);
    (r, None)
}

/// Is there a `vars` group holding exactly the datasets `names`?
fn has_exactly(w: &Weights, group: &str, names: &[&str]) -> bool {
    w.datasets(group)
        .map(|d| d.iter().map(|x| x.name.as_str()).eq(names.iter().copied()))
        .unwrap_or(false)
}

/// Find the `vars` group of the layer `name` at `locator`, whose
/// datasets are `expect` (a layer of class `class`). `Err((code, reason))`
/// if it cannot be found unambiguously.
#[allow(clippy::too_many_arguments)]
pub(crate) fn resolve(
    name: &str,
    locator: &Locator,
    w: &Weights,
    claimed: &mut HashSet<String>,
    within_counts: &HashMap<String, usize>,
    legacy: &[crate::passes::migrate::Rename],
    expect: &[&str],
    class: &str,
) -> std::result::Result<String, (Code, String)> {
    let found = match locator {
        Locator::Group(g) => {
            let primary = format!("{g}/vars");
            if w.is_group(&primary) {
                primary
            } else if w.is_group("_layer_checkpoint_dependencies") {
                // tf.keras 2.12-2.14 spell `layers` as
                // `_layer_checkpoint_dependencies` (Keras' H5Entry falls
                // back to it), and 2.12/2.13 number by twos: the path
                // through the layout renames when they are known.
                let alt = if legacy.is_empty() {
                    format!(
                        "{}/vars",
                        g.replace("layers", "_layer_checkpoint_dependencies")
                    )
                } else {
                    crate::passes::migrate::legacy_path(legacy, &primary)
                };
                if w.is_group(&alt) {
                    alt
                } else {
                    return Err((
                        Code::WeightsNotFound,
                        format!("no weights group at `{primary}` or `{alt}`"),
                    ));
                }
            } else {
                return Err((
                    Code::WeightsNotFound,
                    format!("no weights group at `{primary}`"),
                ));
            }
        }
        Locator::Within { group, key_path } => within(
            name,
            group,
            key_path,
            w,
            claimed,
            within_counts,
            expect,
            class,
        )?,
    };
    if let Some(n) = w.name_attr(&found) {
        if n != name {
            return Err((
                Code::WeightsAmbiguous,
                format!("weights group `{found}` is labelled `{n}`, not `{name}`"),
            ));
        }
    }
    if !claimed.insert(found.clone()) {
        return Err((
            Code::WeightsAmbiguous,
            format!("weights group `{found}` maps to two layers"),
        ));
    }
    Ok(found)
}

/// [`resolve`] for a layer nested inside another layer's weights group
/// (`group`): the one unclaimed group holding `expect` identified by its
/// name, its config key path, or (one such layer there) as the only one.
#[allow(clippy::too_many_arguments)]
fn within(
    name: &str,
    group: &String,
    key_path: &[String],
    w: &Weights,
    claimed: &HashSet<String>,
    within_counts: &HashMap<String, usize>,
    expect: &[&str],
    class: &str,
) -> std::result::Result<String, (Code, String)> {
    if !group.is_empty() && !w.is_group(group) {
        return Err((
            Code::WeightsNotFound,
            format!("no weights group at `{group}`"),
        ));
    }
    let candidates: Vec<String> = w
        .vars_groups_under(group)
        .map_err(|e| (Code::WeightsNotFound, e.to_string()))?
        .into_iter()
        .filter(|g| !claimed.contains(g) && has_exactly(w, g, expect))
        .collect();
    let by_name: Vec<&String> = candidates
        .iter()
        .filter(|g| w.name_attr(g).as_deref() == Some(name))
        .collect();
    let hint = format!(
        "{}/vars",
        [group.as_str(), &key_path.join("/")]
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join("/")
    );
    let found = if by_name.len() == 1 {
        by_name[0].clone()
    } else if candidates.contains(&hint) {
        hint
    } else if candidates.len() == 1
        && within_counts.get(group) == Some(&1)
        // Three datasets named 0, 1, 2 under a custom layer that
        // holds one Normalization are its; one dataset could be
        // any layer's (a Dense without a bias), so a
        // Discretization needs its name or its config key.
        && expect.len() > 1
    {
        candidates[0].clone()
    } else if candidates.is_empty() {
        return Err((
            Code::WeightsNotFound,
            format!("no {class} weights under `{group}`"),
        ));
    } else if expect.len() == 1 {
        return Err((
            Code::WeightsNotFound,
            format!(
                "none of the {} groups of one dataset under `{group}` ({}) is identified as the {class}'s by its name or config key",
                candidates.len(),
                candidates.join(", ")
            ),
        ));
    } else {
        return Err((
            Code::WeightsAmbiguous,
            format!(
                "{} candidate weights groups under `{group}` ({}), none identified by name or config key",
                candidates.len(),
                candidates.join(", ")
            ),
        ));
    };
    Ok(found)
}

/// Why the analysis of a layer stopped before planning an edit.
enum Stop {
    /// It cannot be repaired safely: the finding's code and the reason.
    Refused(Code, String),
    /// It needs nothing (the report says why).
    LeftAlone,
    /// krepair could not read what it needed.
    Failed(crate::error::Error),
}

impl From<crate::error::Error> for Stop {
    fn from(e: crate::error::Error) -> Stop {
        Stop::Failed(e)
    }
}

/// Analyze one Normalization layer: its report entry, and the edit that
/// repairs it (none when it needs none or cannot be repaired safely).
pub fn analyze(
    site: &NormSite,
    w: &Weights,
    version: Option<&str>,
    policy: Policy,
    claimed: &mut HashSet<String>,
    within_counts: &HashMap<String, usize>,
    legacy: &[crate::passes::migrate::Rename],
) -> Result<(LayerReport, Option<Action>)> {
    let mut r = base_report(site);
    match site.mode {
        Mode::Explicit => {
            r.status = Status::AlreadyExplicit;
            r.findings.push(finding(
                Code::AlreadyExplicit,
                "mean and variance are in the config",
            ));
            return Ok((r, None));
        }
        Mode::Inconsistent => {
            return Ok(refuse(
                r,
                Code::InconsistentConfig,
                "only one of mean and variance is set in the config".into(),
            ));
        }
        Mode::Adapt => {}
    }
    r.findings.push(finding(
        Code::AdaptMode,
        "mean and variance are null in the config: the layer depends on finalize_state()",
    ));
    crate::progress::step(&format!(
        "finding the weights of `{}` in model.weights.h5",
        site.config_path
    ));
    let found = resolve(
        &site.name,
        &site.locator,
        w,
        claimed,
        within_counts,
        legacy,
        &["0", "1", "2"],
        "Normalization",
    )
    .map_err(|(code, reason)| Stop::Refused(code, reason))
    .and_then(|group| adapted(site, w, version, policy, group, &mut r));
    match found {
        Ok(action) => {
            r.status = if action.is_some() {
                Status::WouldRepair
            } else {
                Status::Unchanged
            };
            Ok((r, action))
        }
        Err(Stop::Refused(code, reason)) => Ok(refuse(r, code, reason)),
        Err(Stop::LeftAlone) => Ok((r, None)),
        Err(Stop::Failed(e)) => Err(e),
    }
}

/// An adapt-mode layer whose variables are in `group`: check them, read
/// the statistics, choose what the layer computes, and plan the edit.
fn adapted(
    site: &NormSite,
    w: &Weights,
    version: Option<&str>,
    policy: Policy,
    group: String,
    r: &mut LayerReport,
) -> std::result::Result<Option<Action>, Stop> {
    r.weights_group = Some(group.clone());
    let ds = w.datasets(&group)?;
    let shape = input_shape(site, &group, &ds, r)?;
    let geo =
        plan::geometry(&site.axis, &shape).map_err(|e| Stop::Refused(Code::ShapeUnknown, e))?;
    r.stats_shape = Some(geo.stats_shape.clone());
    check_variables(site, &group, &ds, &geo)?;
    crate::progress::step(&format!("reading the statistics of `{}`", site.config_path));
    let mean = w.read_f32(&format!("{group}/0"), stats::MAX_VALUES)?;
    let variance = w.read_f32(&format!("{group}/1"), stats::MAX_VALUES)?;
    let count = w.read_int_scalar(&format!("{group}/2"))?;
    r.stored = Some(Stored {
        mean: mean.clone(),
        variance: variance.clone(),
        std: stats::std(&variance),
        count,
    });
    stats::check(&mean, &variance).map_err(|p| Stop::Refused(p.code(), p.to_string()))?;
    let choice = plan::choose(policy, version, site)
        .map_err(|reason| Stop::Refused(Code::UnknownKerasVersion, reason))?;
    Ok(embed(site, group, &geo, choice, &mean, &variance, r))
}

/// The layer's input shape: its build config's, or (tf.keras 2.12, no
/// build config) completed from the stored statistics' shape.
fn input_shape(
    site: &NormSite,
    group: &str,
    ds: &[crate::weights::DatasetInfo],
    r: &mut LayerReport,
) -> std::result::Result<Vec<Option<u64>>, Stop> {
    let (from, declared) = match (site.shape_from, &site.input_shape) {
        (ShapeFrom::BuildConfig, Some(s)) => return Ok(s.clone()),
        other => other,
    };
    if ds.is_empty() {
        // Never built: no variables to lose, nothing to embed.
        r.findings.push(finding(
            Code::NoVariables,
            format!("`{group}` holds no variables and the config has no build_config: the layer was never built"),
        ));
        r.reason = Some("never built; left alone".into());
        return Err(Stop::LeftAlone);
    }
    // tf.keras 2.12 writes no build configs: the statistics' own shape
    // says the sizes of the kept axes.
    let stats = &ds[0];
    let completed = if stats.name != "0" || stats.null {
        Err(format!(
            "no build_config.input_shape in the config, and `{group}` holds no mean to take the shape from"
        ))
    } else {
        plan::complete_shape(&site.axis, declared.as_deref(), &stats.shape)
    };
    let s = completed.map_err(|e| Stop::Refused(Code::ShapeUnknown, e))?;
    let source = match from {
        ShapeFrom::BatchInputShape => "the layer's batch_input_shape".to_string(),
        ShapeFrom::InputLayer => "the InputLayer that feeds it".to_string(),
        ShapeFrom::InboundTensor => "the tensor it is called on".to_string(),
        _ => "the kept axes, which are the last ones".to_string(),
    };
    r.findings.push(finding(
        Code::InputShapeDerived,
        format!(
            "no build_config in the config: input shape {} from {source} and the stored statistics' shape {:?}",
            Value::from(
                s.iter()
                    .map(|d| d.map_or(Value::Null, Value::from))
                    .collect::<Vec<_>>()
            ),
            stats.shape
        ),
    ));
    r.input_shape = Some(s.clone());
    Ok(s)
}

/// The layer's variables are what Keras writes for it: mean and variance
/// of the statistics' shape (at most [`stats::MAX_VALUES`] values), and an
/// integer count.
fn check_variables(
    site: &NormSite,
    group: &str,
    ds: &[crate::weights::DatasetInfo],
    geo: &plan::Geometry,
) -> std::result::Result<(), Stop> {
    let values = geo
        .stats_shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if values.is_none_or(|n| n > stats::MAX_VALUES) {
        return Err(Stop::Refused(
            Code::StatsTooLarge,
            format!(
                "statistics of shape {:?} hold more than {} values, the most krepair embeds",
                geo.stats_shape,
                stats::MAX_VALUES
            ),
        ));
    }
    let mismatch = |reason: String| Stop::Refused(Code::WeightsMismatch, reason);
    let names: Vec<&str> = ds.iter().map(|d| d.name.as_str()).collect();
    if names != ["0", "1", "2"] {
        return Err(mismatch(format!("`{group}` holds datasets {names:?}, expected [\"0\", \"1\", \"2\"] (mean, variance, count)")));
    }
    for (d, what) in ds[..2].iter().zip(["mean", "variance"]) {
        if d.null
            || !matches!(d.elem, Elem::Float(4) | Elem::Float(2))
            || d.shape != geo.stats_shape
        {
            return Err(mismatch(format!(
                "`{group}/{}` ({what}) is {} {}, expected float32 (or float16) {:?} from axis {:?} and input shape",
                d.name, d.elem, shape_text(d), geo.stats_shape, site.axis
            )));
        }
    }
    if ds[2].null || !matches!(ds[2].elem, Elem::Int(_)) || !ds[2].shape.is_empty() {
        return Err(mismatch(format!(
            "`{group}/2` (count) is {} {}, expected an integer scalar",
            ds[2].elem,
            shape_text(&ds[2])
        )));
    }
    Ok(())
}

/// What the layer computes from now on (`choice`), embedded: in its config
/// when the kept axes are the trailing ones, else in its variables.
fn embed(
    site: &NormSite,
    group: String,
    geo: &plan::Geometry,
    choice: plan::Choice,
    mean: &stats::Tensor,
    variance: &stats::Tensor,
    r: &mut LayerReport,
) -> Option<Action> {
    r.findings.extend(choice.findings.iter().cloned());
    let (tm, tv) = plan::target(choice.chosen, mean, variance);
    let location = if geo.trailing {
        crate::report::Location::Config
    } else {
        crate::report::Location::Variables
    };
    r.embedded = Some(Embedded {
        location,
        mean: tm.clone(),
        variance: tv.clone(),
    });
    let chosen = choice.chosen;
    r.policy = Some(choice);
    if geo.trailing {
        return Some(Action::EmbedConfig {
            pointer: site.pointer.clone(),
            group,
            mean: tm,
            variance: tv,
        });
    }
    r.findings.push(finding(
        Code::KeptInVariables,
        format!(
            "kept axes {:?} of a rank-{} input are not the trailing ones: no explicit config loads in every Keras 3 version, so the layer keeps adapt mode and the {} statistics stay in its variables, which every .keras loader finalizes",
            geo.keep,
            geo.ndim,
            if chosen == Chosen::Adapted { "adapted" } else { "identity" }
        ),
    ));
    if tm.bits_eq(mean) && tv.bits_eq(variance) {
        r.reason = Some("the variables already hold the chosen statistics".into());
        None
    } else {
        Some(Action::WriteVariables {
            group,
            mean: tm,
            variance: tv,
        })
    }
}
