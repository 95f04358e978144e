//! Deciding what each Normalization layer must compute, and how to embed it.
//!
//! Pure: takes the layer as the config describes it, the statistics read
//! from its variables and the saving Keras version; returns the choice with
//! its reason, evidence and findings. No I/O.

use serde::{Deserialize, Serialize};

pub use crate::codes::{Code, Rule, Severity};

use crate::passes::stats::Tensor;
use crate::view::config::{Consumer, NormSite};

/// `--stats`: what repaired layers compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// What the model computed when it was saved (see docs/version-matrix.md).
    Auto,
    /// The stored statistics.
    Adapted,
    /// Mean 0, variance 1.
    Identity,
}

/// The statistics a layer ends up computing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Chosen {
    /// The stored mean and variance.
    Adapted,
    /// Mean 0, variance 1.
    Identity,
}

/// A fact about the archive or a layer, with a stable code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable kebab-case code.
    pub code: Code,
    /// How serious it is.
    pub severity: Severity,
    /// One line for people.
    pub message: String,
}

/// One change to make.
#[derive(Clone, Debug)]
pub enum Action {
    /// Write mean/variance into the layer config (at `pointer`) and delete
    /// the three datasets of `group`.
    EmbedConfig {
        /// The layer entry in config.json.
        pointer: Vec<crate::view::json_span::Seg>,
        /// Its `vars` group.
        group: String,
        /// Mean to embed.
        mean: Tensor,
        /// Variance to embed.
        variance: Tensor,
    },
    /// Lay a tf.keras optimizer's variables (`group/0..count`) out as
    /// Keras 3 reads them: the learning rate inserted as `group/1` (the
    /// slots renumbered after it), or, with `drop_slots`, in place of them.
    OptimizerVariables {
        /// The optimizer's `vars` group.
        group: String,
        /// How many datasets it holds now.
        count: usize,
        /// The learning-rate value (none for a schedule).
        learning_rate: Option<f32>,
        /// Drop the slots (Keras 3 keeps none).
        drop_slots: bool,
    },
    /// Remove an optimizer's saved variables (`group/0..count`), whose
    /// layout krepair does not map: Keras 3 starts it afresh.
    DropOptimizerState {
        /// The optimizer's `vars` group.
        group: String,
        /// How many datasets it holds.
        count: usize,
    },
    /// The weights groups were renamed into Keras 3's layout while
    /// inspecting (see [`crate::passes::migrate::legacy_layout`]): nothing left to
    /// do but write the edited weights.
    Renamed {
        /// How many links were renamed.
        count: usize,
    },
    /// Write a Discretization's bin boundaries into its config (at
    /// `pointer`: `bin_boundaries` set, `num_bins` null) and delete its
    /// summary, `group/0`.
    EmbedBoundaries {
        /// The layer entry in config.json.
        pointer: Vec<crate::view::json_span::Seg>,
        /// Its `vars` group.
        group: String,
        /// The boundaries, float32, shape `[k]`.
        boundaries: Tensor,
        /// The entry of the CategoryEncoding a migration split off the
        /// layer, whose `num_tokens` becomes `k + 1`.
        encoding: Option<Vec<crate::view::json_span::Seg>>,
    },
    /// Overwrite `group/0` and `group/1` (non-trailing kept axes).
    WriteVariables {
        /// Its `vars` group.
        group: String,
        /// Mean to write.
        mean: Tensor,
        /// Variance to write.
        variance: Tensor,
    },
}

/// Build a finding; the severity comes with its [`Code`].
pub fn finding(code: Code, message: impl Into<String>) -> Finding {
    Finding {
        code,
        severity: code.severity(),
        message: message.into(),
    }
}

/// A Keras version, from `metadata.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32);

impl Version {
    /// Parse the leading `MAJOR.MINOR` of a version string.
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.split('.');
        let major = it.next()?.parse().ok()?;
        let minor: String = it
            .next()?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        Some(Version(major, minor.parse().ok()?))
    }

    /// Keras 3.0-3.5: legacy `.h5` loads skip finalize_state().
    pub fn skips_finalize_on_legacy_h5(self) -> bool {
        Version(3, 0) <= self && self <= Version(3, 5)
    }
}

/// Where the kept axes put the statistics, and their shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geometry {
    /// Rank of the layer's input.
    pub ndim: usize,
    /// Kept axes, normalized and sorted.
    pub keep: Vec<usize>,
    /// Shape of mean and variance.
    pub stats_shape: Vec<usize>,
    /// Kept axes are the last ones (or none): explicit config works in
    /// every Keras 3 version.
    pub trailing: bool,
}

/// The statistics' shape from `axis` and the build input shape, as
/// Normalization.build() computes it.
pub fn geometry(axis: &[i64], input_shape: &[Option<u64>]) -> Result<Geometry, String> {
    let ndim = input_shape.len();
    let n = ndim as i64;
    let mut keep = Vec::new();
    for &a in axis {
        if a < -n || a >= n {
            return Err(format!("axis {a} is out of range for input rank {ndim}"));
        }
        keep.push(if a < 0 { (a + n) as usize } else { a as usize });
    }
    keep.sort_unstable();
    keep.dedup();
    let mut stats_shape = Vec::new();
    for &d in &keep {
        match input_shape[d] {
            Some(s) => stats_shape.push(s as usize),
            None => return Err(format!("kept axis {d} has unknown size in input shape")),
        }
    }
    let trailing = keep
        .iter()
        .enumerate()
        .all(|(i, &d)| d == ndim - keep.len() + i);
    Ok(Geometry {
        ndim,
        keep,
        stats_shape,
        trailing,
    })
}

/// A Normalization input shape the config does not fully declare (tf.keras
/// 2.12 writes no build configs), completed from the stored statistics,
/// whose shape is that of the kept axes (Normalization.build():
/// `mean_and_var_shape`). `declared` is the shape the layer graph gives
/// (sizes of kept axes may be unknown), or `None`: then only kept axes
/// counted from the end, which every input rank keeps the same way, can
/// be placed, and the rank is taken as theirs plus the batch axis.
pub fn complete_shape(
    axis: &[i64],
    declared: Option<&[Option<u64>]>,
    stats: &[usize],
) -> Result<Vec<Option<u64>>, String> {
    let mut keep: Vec<i64> = axis.to_vec();
    keep.sort_unstable();
    keep.dedup();
    if keep.len() != stats.len() {
        return Err(format!(
            "the stored statistics have shape {stats:?}, but axis {axis:?} keeps {} axes",
            keep.len()
        ));
    }
    let Some(declared) = declared else {
        let m = keep.len() as i64;
        if keep.iter().copied().ne(-m..0) {
            return Err(format!(
                "no input shape in the config (no build_config), and axis {axis:?} does not name the last axes, so the input's rank is needed"
            ));
        }
        return Ok(std::iter::once(None)
            .chain(stats.iter().map(|&d| Some(d as u64)))
            .collect());
    };
    let n = declared.len() as i64;
    let mut shape = declared.to_vec();
    let mut at: Vec<usize> = Vec::new();
    for &a in axis {
        if a < -n || a >= n {
            return Err(format!("axis {a} is out of range for input rank {n}"));
        }
        at.push(if a < 0 { (a + n) as usize } else { a as usize });
    }
    at.sort_unstable();
    at.dedup();
    if at.len() != stats.len() {
        return Err(format!(
            "the stored statistics have shape {stats:?}, but axis {axis:?} keeps {} axes of a rank-{n} input",
            at.len()
        ));
    }
    for (&d, &size) in at.iter().zip(stats) {
        match shape[d] {
            Some(s) if s != size as u64 => {
                return Err(format!(
                    "the input shape {declared:?} gives axis {d} size {s}, but the stored statistics have {size}"
                ))
            }
            _ => shape[d] = Some(size as u64),
        }
    }
    Ok(shape)
}

/// `1/sqrt(stddev)` for the ImageNet RGB stddevs, as
/// keras/src/applications/efficientnet.py writes into the Rescaling that
/// follows the Normalization when `weights="imagenet"`.
pub fn imagenet_rescaling_scale() -> [f64; 3] {
    [0.229f64, 0.224, 0.225].map(|s| 1.0 / s.sqrt())
}

fn is_imagenet_rescaling(c: &Consumer) -> bool {
    if c.class_name != "Rescaling" {
        return false;
    }
    let Some(scale) = c.config.get("scale").and_then(|s| s.as_array()) else {
        return false;
    };
    let want = imagenet_rescaling_scale();
    let offset_zero = c
        .config
        .get("offset")
        .is_none_or(|o| o.as_f64() == Some(0.0));
    scale.len() == 3
        && offset_zero
        && scale
            .iter()
            .zip(want)
            .all(|(v, w)| v.as_f64().is_some_and(|v| ((v - w) / w).abs() < 1e-9))
}

/// The policy decision for one adapt-mode layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// What the layer will compute.
    pub chosen: Chosen,
    /// One sentence: why.
    pub reason: String,
    /// The facts the decision rests on.
    pub evidence: Vec<String>,
    /// Findings raised by the decision.
    #[serde(skip)]
    pub findings: Vec<Finding>,
}

/// Decide what an adapt-mode layer computes. `Err` is a refusal reason
/// (auto with an unknown saving version).
pub fn choose(policy: Policy, version: Option<&str>, site: &NormSite) -> Result<Choice, String> {
    match policy {
        Policy::Adapted | Policy::Identity => {
            let chosen = if policy == Policy::Adapted {
                Chosen::Adapted
            } else {
                Chosen::Identity
            };
            let reason = format!(
                "--stats {} was given",
                if chosen == Chosen::Adapted {
                    "adapted"
                } else {
                    "identity"
                }
            );
            Ok(Choice {
                chosen,
                findings: vec![finding(Code::PolicyOverride, reason.clone())],
                reason,
                evidence: vec![],
            })
        }
        Policy::Auto => {
            let Some(vs) = version else {
                return Err("the saving Keras version is unknown (no keras_version in metadata.json), so --stats auto cannot tell what the model computed; pass --stats adapted or --stats identity".into());
            };
            let Some(v) = Version::parse(vs) else {
                return Err(format!(
                    "cannot parse keras_version `{vs}`; pass --stats adapted or --stats identity"
                ));
            };
            let mut evidence = vec![format!("metadata.json: keras_version {vs}")];
            if !v.skips_finalize_on_legacy_h5() {
                return Ok(Choice {
                    chosen: Chosen::Adapted,
                    reason: format!("Keras {vs} applies the stored statistics on every load path, so the saved model computed them"),
                    evidence,
                    findings: vec![],
                });
            }
            let rescaling: Vec<&Consumer> = site
                .consumers
                .iter()
                .filter(|c| is_imagenet_rescaling(c))
                .collect();
            if let Some(r) = rescaling.first() {
                evidence.push(format!(
                    "the layer feeds `{}`, a Rescaling by 1/sqrt([0.229, 0.224, 0.225]): the keras.applications EfficientNet weights=\"imagenet\" branch",
                    r.name
                ));
                evidence.push(format!("it sits in model `{}`", site.container));
                evidence.push("Keras 3.0-3.5 load those weights from a legacy .h5 file without finalize_state(), so the layer computed identity".into());
                let reason = format!(
                    "Keras {vs} with the EfficientNet weights=\"imagenet\" signature: the saved model ran with identity normalization (keras #20147)"
                );
                return Ok(Choice {
                    chosen: Chosen::Identity,
                    findings: vec![finding(
                        Code::LegacyWeightsSignature,
                        "the stored statistics were never applied by the saved model; identity keeps its predictions (--stats adapted applies them instead)",
                    )],
                    reason,
                    evidence,
                });
            }
            evidence.push("no keras.applications legacy-weights signature around the layer".into());
            Ok(Choice {
                chosen: Chosen::Adapted,
                reason: format!("Keras {vs} finalizes adapted statistics on .keras loads; no sign of a legacy .h5 load"),
                evidence,
                findings: vec![finding(
                    Code::AmbiguousLegacyLoad,
                    format!("saved by Keras {vs}: if this layer's weights were loaded from a legacy .h5 file before saving, the model computed identity; pass --stats identity to keep that"),
                )],
            })
        }
    }
}

/// The statistics a choice stands for.
pub fn target(chosen: Chosen, mean: &Tensor, variance: &Tensor) -> (Tensor, Tensor) {
    match chosen {
        Chosen::Adapted => (mean.clone(), variance.clone()),
        Chosen::Identity => (
            Tensor::filled(&mean.shape, 0.0),
            Tensor::filled(&variance.shape, 1.0),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::config::{Locator, Mode, ShapeFrom};
    use serde_json::json;

    #[test]
    fn shapes_tf_keras_2_12_does_not_declare_are_completed_from_the_statistics() {
        // No shape at all: trailing axes only, rank = theirs + 1.
        assert_eq!(complete_shape(&[-1], None, &[4]), Ok(vec![None, Some(4)]));
        assert_eq!(
            complete_shape(&[-1, -2], None, &[3, 4]),
            Ok(vec![None, Some(3), Some(4)])
        );
        assert_eq!(complete_shape(&[], None, &[]), Ok(vec![None]));
        assert!(complete_shape(&[1], None, &[4])
            .unwrap_err()
            .contains("rank is needed"));
        assert!(complete_shape(&[-2], None, &[4])
            .unwrap_err()
            .contains("rank is needed"));
        assert!(complete_shape(&[-1], None, &[2, 2])
            .unwrap_err()
            .contains("keeps 1 axes"));
        // A declared rank with unknown sizes: the statistics fill them in.
        assert_eq!(
            complete_shape(&[-1], Some(&[None, None, None, None]), &[3]),
            Ok(vec![None, None, None, Some(3)])
        );
        assert_eq!(
            complete_shape(&[1], Some(&[None, None, Some(5)]), &[7]),
            Ok(vec![None, Some(7), Some(5)])
        );
        // ... and must agree with the sizes it gives.
        assert!(complete_shape(&[-1], Some(&[None, Some(4)]), &[3])
            .unwrap_err()
            .contains("size 4"));
        assert!(complete_shape(&[3], Some(&[None, Some(4)]), &[4])
            .unwrap_err()
            .contains("out of range"));
        let g = geometry(
            &[1],
            &complete_shape(&[1], Some(&[None, None, Some(5)]), &[7]).unwrap(),
        )
        .unwrap();
        assert_eq!((g.ndim, g.stats_shape, g.trailing), (3, vec![7], false));
    }

    fn site(consumers: Vec<Consumer>) -> NormSite {
        NormSite {
            config_path: "efficientnetb0/normalization".into(),
            pointer: vec![],
            name: "normalization".into(),
            axis: vec![3],
            invert: false,
            mode: Mode::Adapt,
            input_shape: Some(vec![None, Some(64), Some(64), Some(3)]),
            shape_from: ShapeFrom::BuildConfig,
            locator: Locator::Group("layers/normalization".into()),
            container: "efficientnetb0".into(),
            consumers,
        }
    }

    fn rescaling(scale: serde_json::Value) -> Consumer {
        Consumer {
            class_name: "Rescaling".into(),
            name: "rescaling_1".into(),
            config: json!({"scale": scale, "offset": 0.0}),
        }
    }

    #[test]
    fn versions() {
        assert_eq!(Version::parse("3.5.0"), Some(Version(3, 5)));
        assert_eq!(Version::parse("3.10.0.dev2024"), Some(Version(3, 10)));
        assert_eq!(Version::parse("2.15.0"), Some(Version(2, 15)));
        assert_eq!(Version::parse("x"), None);
        assert!(Version(3, 0).skips_finalize_on_legacy_h5());
        assert!(Version(3, 5).skips_finalize_on_legacy_h5());
        assert!(!Version(3, 6).skips_finalize_on_legacy_h5());
        assert!(!Version(2, 15).skips_finalize_on_legacy_h5());
    }

    #[test]
    fn geometry_follows_build() {
        let g = geometry(&[-1], &[None, Some(4)]).unwrap();
        assert_eq!((g.stats_shape.clone(), g.trailing), (vec![4], true));
        let g = geometry(&[], &[None, Some(4)]).unwrap();
        assert_eq!((g.stats_shape.clone(), g.trailing), (vec![], true));
        let g = geometry(&[2, 3], &[None, Some(4), Some(5), Some(3)]).unwrap();
        assert_eq!((g.stats_shape.clone(), g.trailing), (vec![5, 3], true));
        let g = geometry(&[1, 2], &[None, Some(4), Some(5), Some(3)]).unwrap();
        assert_eq!((g.stats_shape.clone(), g.trailing), (vec![4, 5], false));
        assert!(geometry(&[2], &[None, Some(4)]).is_err());
        assert!(geometry(&[0], &[None, Some(4)]).is_err());
    }

    #[test]
    fn auto_recognises_the_efficientnet_signature() {
        let scale = imagenet_rescaling_scale();
        let s = site(vec![rescaling(json!(scale))]);
        let c = choose(Policy::Auto, Some("3.5.0"), &s).unwrap();
        assert_eq!(c.chosen, Chosen::Identity);
        assert_eq!(c.findings[0].code, Code::LegacyWeightsSignature);
        // Same model saved by 3.6: finalize_state() ran, keep the stats.
        let c = choose(Policy::Auto, Some("3.6.0"), &s).unwrap();
        assert_eq!(c.chosen, Chosen::Adapted);
        assert!(c.findings.is_empty());
    }

    #[test]
    fn auto_without_signature_warns_in_the_legacy_era() {
        let s = site(vec![rescaling(json!([1.0, 2.0, 3.0]))]);
        let c = choose(Policy::Auto, Some("3.0.5"), &s).unwrap();
        assert_eq!(c.chosen, Chosen::Adapted);
        assert_eq!(c.findings[0].code, Code::AmbiguousLegacyLoad);
        assert!(c.findings[0].message.contains("--stats identity"));
    }

    #[test]
    fn auto_needs_a_version_and_overrides_do_not() {
        let s = site(vec![]);
        assert!(choose(Policy::Auto, None, &s)
            .unwrap_err()
            .contains("--stats adapted"));
        assert!(choose(Policy::Auto, Some("garbage"), &s).is_err());
        let c = choose(Policy::Identity, None, &s).unwrap();
        assert_eq!(c.chosen, Chosen::Identity);
        assert_eq!(c.findings[0].code, Code::PolicyOverride);
    }

    #[test]
    fn identity_target_keeps_the_shape() {
        let m = Tensor {
            shape: vec![2],
            data: vec![5.0, 6.0],
        };
        let (tm, tv) = target(Chosen::Identity, &m, &m);
        assert_eq!(
            (tm.data, tv.data, tv.shape),
            (vec![0.0, 0.0], vec![1.0, 1.0], vec![2])
        );
        let (tm, _) = target(Chosen::Adapted, &m, &m);
        assert_eq!(tm.data, vec![5.0, 6.0]);
    }

    #[test]
    fn every_code_is_unique_and_reads_back() {
        let mut codes: Vec<_> = Code::ALL.iter().map(|c| c.as_str()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Code::ALL.len());
        for c in Code::ALL {
            let json = serde_json::to_string(c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert_eq!(serde_json::from_str::<Code>(&json).unwrap(), *c);
        }
        assert!(serde_json::from_str::<Code>("\"no-such-code\"").is_err());
    }
}
