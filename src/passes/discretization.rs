//! The Discretization repair pass (issue #15): an adapted tf.keras
//! `Discretization(num_bins=...)` keeps its state in a `summary` variable
//! and computes its bin boundaries in `finalize_state()`, which neither
//! tf.keras's `.keras` loader nor Keras 3 calls for it: reloaded, every
//! input falls in bin 0 (or, one-hot, the archive does not load at all).
//! For each such layer this pass reads the summary, computes the
//! boundaries exactly as tf.keras does ([`bin_boundaries`]), and plans
//! their embedding into the config as `bin_boundaries` (with `num_bins`
//! null, which tf.keras requires) and the summary's removal.
//! docs/keras-format.md §7 has the facts.
//!
//! Reads the weights; writes nothing.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::error::Result;
use crate::passes::stats::Tensor;
use crate::plan::{finding, Action, Code};
use crate::report::{DiscretizationReport, Status};
use crate::view::config::{DiscSite, Mode};
use crate::weights::{Elem, Weights};

/// The largest `num_bins` krepair computes boundaries for (tf.keras
/// allocates `num_bins` floats several times over; so does the repair).
pub const MAX_BINS: u64 = 1 << 20;

/// One-dimensional linear interpolation as NumPy's `np.interp` computes it
/// (`arr_interp` in numpy/core/src/multiarray/compiled_base.c) for a
/// non-decreasing `xp`, in float64: below `xp[0]` the first value, above
/// the last the last; otherwise the segment `j` with `xp[j] <= x <
/// xp[j+1]` (the last such `j` among equal `xp`), `fp[j]` where `xp[j] ==
/// x`, else `slope * (x - xp[j]) + fp[j]` (with NumPy's fallbacks for a
/// NaN result).
fn interp(x: f64, xp: &[f64], fp: &[f64]) -> f64 {
    let n = xp.len();
    if x.is_nan() {
        return x;
    }
    if x > xp[n - 1] {
        return fp[n - 1];
    }
    if x < xp[0] {
        return fp[0];
    }
    // The number of xp <= x, less one (xp is sorted).
    let j = xp.partition_point(|&v| v <= x) - 1;
    if j == n - 1 || xp[j] == x {
        return fp[j];
    }
    let slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
    let r = slope * (x - xp[j]) + fp[j];
    if r.is_nan() {
        let r2 = slope * (x - xp[j + 1]) + fp[j + 1];
        if r2.is_nan() && fp[j] == fp[j + 1] {
            return fp[j];
        }
        return r2;
    }
    r
}

/// The bin boundaries tf.keras's `finalize_state()` computes from a
/// summary (`values`, `weights`: the two rows of the `summary` variable)
/// for `num_bins`: `get_bin_boundaries(summary, num_bins)`, which is
/// `_compress_summary_numpy(summary, 1 / num_bins)[0, :-1]`
/// (keras/layers/preprocessing/discretization.py, tf.keras 2.12-2.15),
/// step for step:
///
/// - with `epsilon = 1 / num_bins` (float64), a summary of `n` columns
///   with `n * epsilon < 1` is returned as it is;
/// - otherwise `percents = epsilon + np.arange(0, 1, epsilon)` (NumPy
///   fills a float range as `start + i * step`, `ceil(1 / epsilon)`
///   values: 50 for `num_bins = 49`), the cumulative weights are summed
///   in float32 and divided by their total in float32, and the values are
///   interpolated at the percents in float64 ([`interp`]), then rounded to
///   float32;
/// - the last value is dropped.
///
/// The caller checks the summary first ([`check_summary`]) and that
/// `1 <= num_bins <= MAX_BINS`.
pub fn bin_boundaries(values: &[f32], weights: &[f32], num_bins: u64) -> Vec<f32> {
    let n = values.len();
    let epsilon = 1.0 / num_bins as f64;
    if (n as f64) * epsilon < 1.0 {
        return values[..n.saturating_sub(1)].to_vec();
    }
    let len = (1.0 / epsilon).ceil() as usize;
    let mut cum = Vec::with_capacity(n);
    let mut acc = 0f32;
    for &w in weights {
        acc += w;
        cum.push(acc);
    }
    let total = cum[n - 1];
    let xp: Vec<f64> = cum.iter().map(|&c| (c / total) as f64).collect();
    let fp: Vec<f64> = values.iter().map(|&v| v as f64).collect();
    (0..len.saturating_sub(1))
        .map(|i| interp(epsilon + i as f64 * epsilon, &xp, &fp) as f32)
        .collect()
}

/// A summary krepair cannot compute from, as (finding code, reason).
pub fn check_summary(values: &[f32], weights: &[f32]) -> std::result::Result<(), (Code, String)> {
    if let Some(i) = values.iter().chain(weights).position(|v| !v.is_finite()) {
        let (row, col) = if i < values.len() {
            ("values", i)
        } else {
            ("weights", i - values.len())
        };
        return Err((
            Code::NonFiniteStatistics,
            format!("the summary's {row} hold a non-finite number at column {col}"),
        ));
    }
    if let Some(i) = weights.iter().position(|&w| w < 0.0) {
        return Err((
            Code::BadSummary,
            format!(
                "the summary's weight at column {i} is negative ({})",
                weights[i]
            ),
        ));
    }
    if let Some(i) = values.windows(2).position(|p| p[1] < p[0]) {
        return Err((
            Code::BadSummary,
            format!(
                "the summary's values are not sorted: column {} ({}) is less than column {i} ({})",
                i + 1,
                values[i + 1],
                values[i]
            ),
        ));
    }
    // tf.keras sums the weights in float32 (np.cumsum): a total that
    // overflows is no distribution.
    if !weights.iter().sum::<f32>().is_finite() {
        return Err((
            Code::BadSummary,
            "the summary's weights overflow float32 when summed".into(),
        ));
    }
    if !values.is_empty() && weights.iter().map(|&w| w as f64).sum::<f64>() == 0.0 {
        return Err((
            Code::BadSummary,
            "the summary's weights are all zero: no samples to take quantiles of".into(),
        ));
    }
    Ok(())
}

fn base_report(site: &DiscSite) -> DiscretizationReport {
    DiscretizationReport {
        config_path: site.config_path.clone(),
        name: site.name.clone(),
        weights_group: None,
        mode: match site.mode {
            Mode::Explicit => Mode::Explicit,
            _ => Mode::Adapt,
        },
        num_bins: site.num_bins.as_u64(),
        summary_shape: None,
        total_weight: None,
        bin_boundaries: None,
        status: Status::Unchanged,
        reason: None,
        findings: Vec::new(),
    }
}

fn refuse(
    mut r: DiscretizationReport,
    code: Code,
    reason: String,
) -> (DiscretizationReport, Option<Action>) {
    r.findings.push(finding(code, reason.clone()));
    r.status = Status::Refused;
    r.reason = Some(reason);
    (r, None)
}

/// Analyze one Discretization layer: its report entry, and the edit that
/// repairs it (none when it needs none or cannot be repaired safely).
pub fn analyze(
    site: &DiscSite,
    w: &Weights,
    claimed: &mut HashSet<String>,
    within_counts: &HashMap<String, usize>,
    legacy: &[crate::passes::migrate::Rename],
) -> Result<(DiscretizationReport, Option<Action>)> {
    let mut r = base_report(site);
    if site.mode == Mode::Explicit {
        r.status = Status::AlreadyExplicit;
        r.findings.push(finding(
            Code::AlreadyExplicit,
            "the bin boundaries are in the config",
        ));
        return Ok((r, None));
    }
    let num_bins = match num_bins(&site.num_bins) {
        Ok(n) => n,
        Err((code, reason)) => return Ok(refuse(r, code, reason)),
    };
    if !site.has_boundaries_key {
        return Ok(refuse(
            r,
            Code::InconsistentConfig,
            "the config has no bin_boundaries key (tf.keras always writes one)".into(),
        ));
    }
    r.findings.push(finding(
        Code::AdaptMode,
        "bin_boundaries is null in the config: the layer's bins live in its summary variable, which only finalize_state() turns into boundaries",
    ));
    crate::progress::step(&format!(
        "finding the weights of `{}` in model.weights.h5",
        site.config_path
    ));
    let group = match crate::passes::normalization::resolve(
        &site.name,
        &site.locator,
        w,
        claimed,
        within_counts,
        legacy,
        &["0"],
        "Discretization",
    ) {
        Ok(g) => g,
        Err((code, reason)) => return Ok(refuse(r, code, reason)),
    };
    r.weights_group = Some(group.clone());
    let ds = w.datasets(&group)?;
    let columns = match summary_columns(&group, &ds, &mut r) {
        Ok(c) => c,
        Err((code, reason)) => return Ok(refuse(r, code, reason)),
    };
    crate::progress::step(&format!("reading the summary of `{}`", site.config_path));
    let summary = w.read_f32(&format!("{group}/0"), crate::passes::stats::MAX_VALUES)?;
    let (values, weights) = summary.data.split_at(columns);
    if let Err((code, reason)) = check_summary(values, weights) {
        return Ok(refuse(r, code, reason));
    }
    r.total_weight = Some(weights.iter().map(|&w| w as f64).sum());
    let boundaries = bin_boundaries(values, weights, num_bins);
    if columns == 0 {
        r.findings.push(finding(
            Code::NeverAdapted,
            "the summary is empty: the layer was built but never adapted, so it puts every input in bin 0, as the embedded empty bin_boundaries do",
        ));
    }
    r.findings
        .push(computed(site, columns, num_bins, boundaries.len()));
    r.bin_boundaries = Some(boundaries.iter().map(|&b| b as f64).collect());
    r.status = Status::WouldRepair;
    let action = Action::EmbedBoundaries {
        pointer: site.pointer.clone(),
        group,
        boundaries: Tensor {
            shape: vec![boundaries.len()],
            data: boundaries,
        },
        encoding: site.encoding.clone(),
    };
    Ok((r, Some(action)))
}

/// A Discretization's `num_bins`, when tf.keras could have adapted it.
fn num_bins(v: &Value) -> std::result::Result<u64, (Code, String)> {
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(b) if (1..=MAX_BINS).contains(&b) => Ok(b),
            _ => Err((
                Code::BadNumBins,
                format!("num_bins is {n}: tf.keras adapts only a whole number of bins from 1 (krepair computes at most {MAX_BINS})"),
            )),
        },
        other => Err((
            Code::BadNumBins,
            format!("bin_boundaries and num_bins are both {other}: the layer has no bins to compute"),
        )),
    }
}

/// The number of columns of the summary `group/0` (float32 `[2, n]`, the
/// only dataset of `group`, at most [`crate::passes::stats::MAX_VALUES`]
/// values); its shape goes to the report.
fn summary_columns(
    group: &str,
    ds: &[crate::weights::DatasetInfo],
    r: &mut DiscretizationReport,
) -> std::result::Result<usize, (Code, String)> {
    let names: Vec<&str> = ds.iter().map(|d| d.name.as_str()).collect();
    if names != ["0"] {
        return Err((
            Code::WeightsMismatch,
            format!("`{group}` holds datasets {names:?}, expected [\"0\"] (the summary)"),
        ));
    }
    let d = &ds[0];
    let columns = match d.shape.as_slice() {
        [2, n] if !d.null && d.elem == Elem::Float(4) => *n,
        _ => {
            return Err((
                Code::WeightsMismatch,
                format!(
                    "`{group}/0` (the summary) is {} {}, expected float32 of shape [2, n]",
                    d.elem,
                    if d.null {
                        "with a null dataspace (no values)".to_string()
                    } else {
                        format!("{:?}", d.shape)
                    }
                ),
            ))
        }
    };
    r.summary_shape = Some(d.shape.clone());
    if columns.saturating_mul(2) > crate::passes::stats::MAX_VALUES {
        return Err((
            Code::StatsTooLarge,
            format!(
                "the summary has {columns} columns, more than the {} values krepair reads",
                crate::passes::stats::MAX_VALUES
            ),
        ));
    }
    Ok(columns)
}

/// The finding that says how the boundaries (`count` of them) were
/// computed from a summary of `columns` columns.
fn computed(site: &DiscSite, columns: usize, num_bins: u64, count: usize) -> crate::plan::Finding {
    let compressed = (columns as f64) * (1.0 / num_bins as f64) >= 1.0;
    finding(
        Code::BoundariesComputed,
        format!(
            "{} boundaries for num_bins={num_bins} from a summary of {columns} columns ({}), as tf.keras's finalize_state() computes them{}",
            count,
            if compressed {
                "interpolated at the bin quantiles"
            } else {
                "fewer columns than bins: its values less the last"
            },
            if site.encoding.is_some() {
                format!(
                    "; the CategoryEncoding the migration put after it (rule discretization-encoding) gets num_tokens {}",
                    count + 1
                )
            } else {
                String::new()
            }
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Vector {
        name: String,
        summary: [Vec<f64>; 2],
        bin_boundaries: std::collections::BTreeMap<String, Vec<f64>>,
    }

    #[derive(serde::Deserialize)]
    struct Vectors {
        keras_version: String,
        vectors: Vec<Vector>,
    }

    /// Every vector tf.keras computed (testdata/discretization_vectors.py):
    /// compressed and uncompressed summaries, ties, a summary of two
    /// columns, values from 1e-6 to 1e6, and num_bins 49 (whose NumPy
    /// range has 50 points), bit for bit.
    #[test]
    fn boundaries_equal_tf_keras_bit_for_bit() {
        let v: Vectors =
            serde_json::from_str(include_str!("../../testdata/discretization-vectors.json"))
                .unwrap();
        assert!(v.keras_version.starts_with("2."));
        let mut checked = 0;
        let mut uncompressed = 0;
        for vec in &v.vectors {
            let values: Vec<f32> = vec.summary[0].iter().map(|&x| x as f32).collect();
            let weights: Vec<f32> = vec.summary[1].iter().map(|&x| x as f32).collect();
            check_summary(&values, &weights).unwrap();
            for (bins, want) in &vec.bin_boundaries {
                let bins: u64 = bins.parse().unwrap();
                let got = bin_boundaries(&values, &weights, bins);
                let want: Vec<u32> = want.iter().map(|&x| (x as f32).to_bits()).collect();
                let got: Vec<u32> = got.iter().map(|x| x.to_bits()).collect();
                assert_eq!(got, want, "{} with num_bins={bins}", vec.name);
                checked += 1;
                if (values.len() as f64) * (1.0 / bins as f64) < 1.0 {
                    uncompressed += 1;
                }
            }
        }
        assert!(checked >= 60, "{checked}");
        assert!(uncompressed >= 5, "{uncompressed}");
    }

    #[test]
    fn interp_matches_numpy_on_edges() {
        let xp = [0.25, 0.5, 0.5, 1.0];
        let fp = [1.0, 2.0, 3.0, 4.0];
        // Below, above, on a point, on a repeated point (the last wins),
        // between points.
        assert_eq!(interp(0.0, &xp, &fp), 1.0);
        assert_eq!(interp(2.0, &xp, &fp), 4.0);
        assert_eq!(interp(0.25, &xp, &fp), 1.0);
        assert_eq!(interp(0.5, &xp, &fp), 3.0);
        assert_eq!(interp(0.75, &xp, &fp), 3.5);
        assert_eq!(interp(1.0, &xp, &fp), 4.0);
        assert!(interp(f64::NAN, &xp, &fp).is_nan());
    }

    #[test]
    fn small_summaries_are_their_values_less_the_last() {
        assert_eq!(bin_boundaries(&[1.0, 2.0, 3.0], &[1.0; 3], 10), [1.0, 2.0]);
        assert_eq!(bin_boundaries(&[], &[], 4), Vec::<f32>::new());
        // num_bins = 1: one bin, no boundaries.
        assert_eq!(bin_boundaries(&[1.0, 2.0], &[1.0; 2], 1), Vec::<f32>::new());
    }

    #[test]
    fn bad_summaries_are_refused() {
        let code = |v: &[f32], w: &[f32]| check_summary(v, w).unwrap_err().0;
        assert_eq!(
            code(&[1.0, f32::NAN], &[1.0, 1.0]),
            Code::NonFiniteStatistics
        );
        assert_eq!(
            code(&[1.0, 2.0], &[1.0, f32::INFINITY]),
            Code::NonFiniteStatistics
        );
        assert_eq!(code(&[2.0, 1.0], &[1.0, 1.0]), Code::BadSummary);
        assert_eq!(code(&[1.0, 2.0], &[1.0, -1.0]), Code::BadSummary);
        assert_eq!(code(&[1.0, 2.0], &[0.0, 0.0]), Code::BadSummary);
        assert_eq!(code(&[1.0, 2.0], &[3e38, 3e38]), Code::BadSummary);
        assert!(check_summary(&[1.0, 1.0], &[0.0, 3.0]).is_ok());
        assert!(check_summary(&[], &[]).is_ok());
    }
}
