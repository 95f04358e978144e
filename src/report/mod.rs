//! The audit report: its JSON schema (docs/report.md) and the short human
//! summary printed when no JSON report is asked for.

mod human;
pub mod run;

use serde::{Deserialize, Serialize};

use crate::passes::stats::Tensor;
use crate::plan::{Choice, Finding, Policy};
use crate::source::keras::Form;

/// Version of the report schema; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 2;

/// The whole report for one archive.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The tool that wrote it.
    pub tool: Tool,
    /// `--stats`.
    pub policy: Policy,
    /// `--dry-run`.
    pub dry_run: bool,
    /// The input archive.
    pub input: FileInfo,
    /// The output archive, once written.
    pub output: Option<FileInfo>,
    /// `keras_version` from metadata.json.
    pub keras_version: Option<String>,
    /// What happened.
    pub outcome: Outcome,
    /// Why the job failed, if it did.
    pub error: Option<ErrorInfo>,
    /// Every member, in archive order.
    pub members: Vec<MemberReport>,
    /// Every Normalization layer, in config order.
    pub layers: Vec<LayerReport>,
    /// Every Discretization layer, in config order (absent from reports
    /// of krepair 0.x before issue #15, read as none).
    #[serde(default)]
    pub discretizations: Vec<DiscretizationReport>,
    /// Findings about the archive as a whole.
    pub findings: Vec<Finding>,
    /// `krepair migrate`: every rewrite of config.json, in config order
    /// (absent from repair reports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migration: Vec<crate::passes::migrate::Rewrite>,
}

/// Tool name and version.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tool {
    /// "krepair".
    pub name: String,
    /// The crate version.
    pub version: String,
}

impl Tool {
    /// This krepair.
    pub fn current() -> Tool {
        Tool {
            name: "krepair".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// A file or directory the report is about.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileInfo {
    /// As given on the command line.
    pub path: String,
    /// Zip file or directory.
    pub form: Form,
    /// Bytes (the sum of member sizes for a directory).
    pub size: u64,
    /// sha256 of the zip file; null for a directory and in a dry run
    /// (which reads only what it needs).
    pub sha256: Option<String>,
}

/// The outcome for one archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Output written with at least one layer changed.
    Repaired,
    /// Nothing needed changing; the output (if any) is an exact copy.
    NothingToRepair,
    /// Dry run: a repair would change something.
    WouldRepair,
    /// A layer cannot be repaired safely; no output written.
    Refused,
    /// krepair could not do its job (unreadable input, I/O error).
    Failed,
}

/// An error, in the report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Stable kind.
    pub code: crate::error::ErrorCode,
    /// For `malformed-input`: which part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<crate::error::Malformed>,
    /// The one-line message.
    pub message: String,
}

/// One archive member.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberReport {
    /// Its name.
    pub name: String,
    /// Uncompressed size before.
    pub size_before: u64,
    /// CRC-32 of its content before, as 8 hex digits: the zip's own
    /// (checked when read); null for a directory's file a dry run did not
    /// read.
    pub crc32_before: Option<String>,
    /// Uncompressed size after (null without output).
    pub size_after: Option<u64>,
    /// CRC-32 of its content after (null without output).
    pub crc32_after: Option<String>,
    /// Whether the content changed.
    pub changed: bool,
}

/// What happened to one Normalization layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Statistics embedded (in the output).
    Repaired,
    /// Dry run: would be repaired.
    WouldRepair,
    /// Needs no change (already computing the chosen statistics from a
    /// place every loader reads).
    Unchanged,
    /// Explicit mode: nothing to repair.
    AlreadyExplicit,
    /// Cannot be repaired safely.
    Refused,
}

/// The stored statistics of an adapt-mode layer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stored {
    /// `vars/0`.
    #[serde(with = "crate::passes::stats::nested_json")]
    pub mean: Tensor,
    /// `vars/1`.
    #[serde(with = "crate::passes::stats::nested_json")]
    pub variance: Tensor,
    /// sqrt(variance), float32.
    #[serde(with = "crate::passes::stats::nested_json")]
    pub std: Tensor,
    /// `vars/2`.
    pub count: i64,
}

/// Where a repaired layer's statistics went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Location {
    /// In the layer config (its variables deleted).
    Config,
    /// Written into the layer's variables (`vars/0` and `vars/1`).
    Variables,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Location::Config => "config",
            Location::Variables => "variables",
        })
    }
}

/// Where and what was embedded.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Embedded {
    /// "config" (mean/variance in the layer config, variables deleted) or
    /// "variables" (written into vars/0 and vars/1).
    pub location: Location,
    /// The mean the layer now computes with.
    #[serde(with = "crate::passes::stats::nested_json")]
    pub mean: Tensor,
    /// The variance the layer now computes with.
    #[serde(with = "crate::passes::stats::nested_json")]
    pub variance: Tensor,
}

/// One Normalization layer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerReport {
    /// Names from the root's children down, joined by `/`.
    pub config_path: String,
    /// The layer's name.
    pub name: String,
    /// Its `vars` group in model.weights.h5.
    pub weights_group: Option<String>,
    /// `axis` (empty for None).
    pub axis: Vec<i64>,
    /// `invert`.
    pub invert: bool,
    /// "adapt", "explicit" or "inconsistent".
    pub mode: crate::view::config::Mode,
    /// `build_config.input_shape`.
    pub input_shape: Option<Vec<Option<u64>>>,
    /// Shape of mean and variance.
    pub stats_shape: Option<Vec<usize>>,
    /// What the variables hold.
    pub stored: Option<Stored>,
    /// The policy decision.
    pub policy: Option<Choice>,
    /// What was (or would be) embedded.
    pub embedded: Option<Embedded>,
    /// What happened.
    pub status: Status,
    /// Why, when refused or unchanged.
    pub reason: Option<String>,
    /// Findings about this layer.
    pub findings: Vec<Finding>,
}

/// One Discretization layer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DiscretizationReport {
    /// Names from the root's children down, joined by `/`.
    pub config_path: String,
    /// The layer's name.
    pub name: String,
    /// Its `vars` group in model.weights.h5.
    pub weights_group: Option<String>,
    /// "adapt" (`bin_boundaries` null) or "explicit".
    pub mode: crate::view::config::Mode,
    /// `num_bins` from the config (null when it is not a whole number).
    pub num_bins: Option<u64>,
    /// The shape of the stored summary (`[2, n]`).
    pub summary_shape: Option<Vec<usize>>,
    /// The summary's total weight (the samples adapt() saw).
    pub total_weight: Option<f64>,
    /// The boundaries finalize_state() computes, which the repair embeds
    /// (exact float32 values).
    pub bin_boundaries: Option<Vec<f64>>,
    /// What happened.
    pub status: Status,
    /// Why, when refused.
    pub reason: Option<String>,
    /// Findings about this layer.
    pub findings: Vec<Finding>,
}

impl Report {
    /// The report as pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("report serializes");
        s.push('\n');
        s
    }
}
