//! The run report of `krepair batch`: one entry per archive (its audit
//! report inside), the counts, and its renderings (JSON, Markdown for
//! reviews, the table printed at the end of a run). docs/batch.md has the
//! schema.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Outcome, Report, Status, Tool};
use crate::plan::{Chosen, Policy};

/// What a file was when its archive finished.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Bytes (the sum of the three members for a directory archive).
    pub size: u64,
    /// Modification time in nanoseconds since the epoch (the latest of the
    /// members for a directory archive).
    pub mtime_ns: i128,
    /// SHA-256 of the file, when the run computed it.
    pub sha256: Option<String>,
}

/// One archive's outcome in the run report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// The archive.
    pub path: String,
    /// Where the result went (null for a dry run, or on failure).
    pub output: Option<String>,
    /// What happened.
    pub outcome: Outcome,
    /// The one-line error, if any.
    pub error: Option<String>,
    /// The file at `path` when the archive finished (after an in-place
    /// swap, the new file), for `--resume`.
    #[serde(default)]
    pub fingerprint: Option<Fingerprint>,
    /// Taken from the `--resume` journal, not processed again.
    #[serde(default)]
    pub resumed: bool,
    /// The single-archive audit report.
    pub report: Report,
}

/// Counts for the summary.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Archives found (in this shard, with `--shard`).
    pub archives: usize,
    /// Archives repaired (or, in a dry run, that would be).
    pub repaired: usize,
    /// Archives with nothing to repair.
    pub already_healthy: usize,
    /// Archives refused (a layer could not be repaired safely).
    pub refused: usize,
    /// Archives krepair could not process.
    pub failed: usize,
    /// Files that are not archives, and links not followed.
    pub skipped: usize,
    /// Archives not processed because the run was interrupted.
    pub not_processed: usize,
    /// Archives taken from the `--resume` journal (counted in their
    /// outcomes too).
    #[serde(default)]
    pub resumed: usize,
    /// Layers repaired, by chosen statistics.
    pub layers_by_policy: BTreeMap<String, usize>,
    /// Findings, by code, over all archives and layers.
    pub findings_by_code: BTreeMap<String, usize>,
    /// Archives with at least one layer carrying the Keras 3.0-3.5
    /// legacy-weights signature.
    pub legacy_signature_archives: usize,
    /// Bytes of the archives read.
    pub bytes_read: u64,
    /// Bytes written (outputs).
    pub bytes_written: u64,
}

/// How a batch wrote its outputs, in the run report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunMode {
    /// Into `--out OUTDIR`.
    Out,
    /// Over the inputs (`--in-place`).
    InPlace,
    /// Nothing written (`--dry-run`).
    DryRun,
}

impl std::fmt::Display for RunMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunMode::Out => "out",
            RunMode::InPlace => "in-place",
            RunMode::DryRun => "dry-run",
        })
    }
}

/// The run report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    /// Same as the single-archive report.
    pub schema_version: u32,
    /// The tool.
    pub tool: Tool,
    /// `--stats`.
    pub policy: Policy,
    /// "out", "in-place" or "dry-run".
    pub mode: RunMode,
    /// `--shard K/N`, or null for the whole tree.
    #[serde(default)]
    pub shard: Option<String>,
    /// True if Ctrl-C stopped the run early.
    pub interrupted: bool,
    /// Counts.
    pub summary: Summary,
    /// One entry per archive, sorted by path.
    pub entries: Vec<Entry>,
    /// Files skipped (not archives), sorted.
    pub skipped: Vec<String>,
}

impl RunReport {
    /// The exit outcome: the worst over all entries.
    pub fn worst(&self) -> Outcome {
        let has = |o: Outcome| self.entries.iter().any(|e| e.outcome == o);
        if has(Outcome::Failed) || has(Outcome::Refused) {
            Outcome::Failed
        } else if has(Outcome::WouldRepair) {
            Outcome::WouldRepair
        } else if has(Outcome::Repaired) {
            Outcome::Repaired
        } else {
            Outcome::NothingToRepair
        }
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("report serializes");
        s.push('\n');
        s
    }

    /// A Markdown rendering for reviews.
    pub fn to_markdown(&self) -> String {
        let s = &self.summary;
        let mut out = format!(
            "# krepair batch report\n\nkrepair {}, `--stats {}`, mode `{}`{}.\n\n",
            self.tool.version,
            policy_name(self.policy),
            self.mode,
            if self.interrupted {
                ", **interrupted**"
            } else {
                ""
            }
        );
        out.push_str("| archives | repaired | already healthy | refused | failed | skipped | legacy signature |\n|---:|---:|---:|---:|---:|---:|---:|\n");
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n\n",
            s.archives,
            s.repaired,
            s.already_healthy,
            s.refused,
            s.failed,
            s.skipped,
            s.legacy_signature_archives
        ));
        out.push_str("| archive | Keras | outcome | layers | detail |\n|---|---|---|---|---|\n");
        for e in &self.entries {
            let layers =
                e.report
                    .layers
                    .iter()
                    .map(|l| {
                        let chosen = l.policy.as_ref().map(|p| match p.chosen {
                            Chosen::Adapted => " (adapted)",
                            Chosen::Identity => " (identity)",
                        });
                        format!(
                            "`{}`: {}{}",
                            l.config_path,
                            status_name(l.status),
                            chosen.unwrap_or("")
                        )
                    })
                    .chain(
                        e.report.discretizations.iter().map(|l| {
                            format!("`{}`: {} (bins)", l.config_path, status_name(l.status))
                        }),
                    )
                    .collect::<Vec<_>>()
                    .join("<br>");
            let detail = e.error.clone().unwrap_or_else(|| {
                let mut codes: Vec<&str> = e
                    .report
                    .layers
                    .iter()
                    .flat_map(|l| l.findings.iter())
                    .chain(
                        e.report
                            .discretizations
                            .iter()
                            .flat_map(|l| l.findings.iter()),
                    )
                    .chain(e.report.findings.iter())
                    .filter(|f| f.severity > crate::plan::Severity::Info)
                    .map(|f| f.code.as_str())
                    .collect();
                codes.sort_unstable();
                codes.dedup();
                codes.join(", ")
            });
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | {} |\n",
                e.path,
                e.report.keras_version.as_deref().unwrap_or("?"),
                e.outcome_text(),
                if layers.is_empty() {
                    "-".into()
                } else {
                    layers
                },
                detail.replace('|', "\\|")
            ));
        }
        out
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let w = self
            .entries
            .iter()
            .map(|e| e.path.len())
            .max()
            .unwrap_or(7)
            .max(7);
        out.push_str(&format!(
            "{:<w$}  {:<18}  {}\n",
            "archive", "outcome", "layers repaired / detail"
        ));
        for e in &self.entries {
            let n = e
                .report
                .layers
                .iter()
                .map(|l| l.status)
                .chain(e.report.discretizations.iter().map(|l| l.status))
                .filter(|s| matches!(s, Status::Repaired | Status::WouldRepair))
                .count();
            let detail = e.error.clone().unwrap_or_else(|| n.to_string());
            out.push_str(&format!(
                "{:<w$}  {:<18}  {}\n",
                e.path,
                e.outcome_text(),
                detail
            ));
        }
        let s = &self.summary;
        out.push_str(&format!(
            "{} archive(s){}: {} repaired, {} already healthy, {} refused, {} failed; {} file(s) skipped{}{}\n",
            s.archives,
            self.shard.as_ref().map(|k| format!(" in shard {k}")).unwrap_or_default(),
            s.repaired,
            s.already_healthy,
            s.refused,
            s.failed,
            s.skipped,
            if s.resumed > 0 { format!("; {} resumed from the journal", s.resumed) } else { String::new() },
            if self.interrupted { format!("; interrupted, {} not processed", s.not_processed) } else { String::new() }
        ));
        out
    }
}

fn policy_name(p: Policy) -> &'static str {
    match p {
        Policy::Auto => "auto",
        Policy::Adapted => "adapted",
        Policy::Identity => "identity",
    }
}

impl Entry {
    /// The outcome for people, marked when it came from `--resume`.
    pub fn outcome_text(&self) -> String {
        let o = outcome_name(self.outcome);
        if self.resumed {
            format!("{o} (resumed)")
        } else {
            o.to_string()
        }
    }
}

pub(crate) fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Repaired => "repaired",
        Outcome::NothingToRepair => "already healthy",
        Outcome::WouldRepair => "would repair",
        Outcome::Refused => "refused",
        Outcome::Failed => "failed",
    }
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Repaired => "repaired",
        Status::WouldRepair => "would repair",
        Status::Unchanged => "unchanged",
        Status::AlreadyExplicit => "already explicit",
        Status::Refused => "refused",
    }
}
