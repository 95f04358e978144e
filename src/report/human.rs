//! The single-archive report as people read it (`krepair IN OUT`
//! without `--quiet`): one line per layer and finding, and the outcome.

use super::{DiscretizationReport, LayerReport, Outcome, Report, Status};
use crate::plan::{Finding, Severity};

impl Report {
    /// A short summary for people.
    pub fn human(&self) -> String {
        let mut out = self.header();
        // The versions the output was made for stay in the JSON report;
        // people see the ones it cannot load in (`not-loadable-in`).
        for f in self
            .findings
            .iter()
            .filter(|f| f.code != crate::plan::Code::LoadIn)
        {
            out.push_str(&format!(
                "  {}: {} [{}]\n",
                sev(f.severity),
                f.message,
                f.code
            ));
        }
        for l in &self.layers {
            normalization(&mut out, l);
        }
        for l in &self.discretizations {
            discretization(&mut out, l);
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    /// The archive's line (unless it was refused before it was read) and
    /// the migration's rewrites, counted by rule.
    fn header(&self) -> String {
        let mut out = String::new();
        let version = self.keras_version.as_deref().unwrap_or("unknown");
        let n = self.layers.len();
        let d = self.discretizations.len();
        // An archive refused before it was read says nothing of its
        // version or layers: the error line says why.
        let unread = self.error.is_some() && self.keras_version.is_none() && n == 0 && d == 0;
        if !unread {
            out.push_str(&format!(
                "{}: saved by Keras {version}, {n} Normalization layer{}{}\n",
                self.input.path,
                if n == 1 { "" } else { "s" },
                match d {
                    0 => String::new(),
                    1 => ", 1 Discretization layer".into(),
                    _ => format!(", {d} Discretization layers"),
                }
            ));
        }
        if !self.migration.is_empty() {
            let mut by_code: Vec<(crate::plan::Rule, usize)> = Vec::new();
            for r in &self.migration {
                match by_code.iter_mut().find(|(c, _)| *c == r.code) {
                    Some((_, n)) => *n += 1,
                    None => by_code.push((r.code, 1)),
                }
            }
            out.push_str(&format!(
                "  {}: {} rewrite(s): {}\n",
                if self.only_between_keras3() {
                    "made to load in other Keras 3 versions"
                } else {
                    "migrated to Keras 3"
                },
                self.migration.len(),
                by_code
                    .iter()
                    .map(|(c, n)| format!("{c} x{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        out
    }

    /// Are the config's rewrites all between Keras 3 versions (a Keras 3
    /// archive made to load in others, not a migration)?
    fn only_between_keras3(&self) -> bool {
        self.migration.iter().all(|r| r.code.between_keras3())
    }

    /// The closing line: the outcome.
    fn summary(&self) -> String {
        let count = |s: Status| {
            self.layers.iter().filter(|l| l.status == s).count()
                + self
                    .discretizations
                    .iter()
                    .filter(|l| l.status == s)
                    .count()
        };
        match self.outcome {
            Outcome::Repaired => format!(
                "{}repaired {} layer(s); wrote {}",
                if self.migration.is_empty() {
                    ""
                } else if self.only_between_keras3() {
                    "rewritten for other Keras 3 versions, "
                } else {
                    "migrated, "
                },
                count(Status::Repaired),
                self.output.as_ref().map_or("-", |o| o.path.as_str())
            ),
            Outcome::NothingToRepair => match &self.output {
                Some(o) => format!("nothing to repair; wrote an exact copy to {}", o.path),
                None => "nothing to repair".into(),
            },
            Outcome::WouldRepair => format!(
                "dry run: would repair {} layer(s); wrote nothing",
                count(Status::WouldRepair)
            ),
            Outcome::Refused => "refused: no output written".into(),
            Outcome::Failed => "failed: no output written".into(),
        }
    }
}

/// A Normalization layer's lines.
fn normalization(out: &mut String, l: &LayerReport) {
    let group = l.weights_group.as_deref().unwrap_or("-");
    let what = match (&l.status, &l.policy, &l.embedded) {
        (Status::Repaired | Status::WouldRepair, Some(p), Some(e)) => format!(
            "{} {:?} statistics in its {}",
            if l.status == Status::Repaired {
                "repaired: embedded"
            } else {
                "would embed"
            },
            p.chosen,
            e.location
        )
        .to_lowercase(),
        (Status::Unchanged, _, _) => "unchanged".into(),
        (Status::AlreadyExplicit, _, _) => "already explicit, left alone".into(),
        (Status::Refused, _, _) => "REFUSED".into(),
        _ => format!("{:?}", l.status).to_lowercase(),
    };
    out.push_str(&format!("  {} [{group}]: {what}\n", l.config_path));
    if let Some(p) = &l.policy {
        out.push_str(&format!("    why: {}\n", p.reason));
    }
    layer_notes(out, l.reason.as_deref(), &l.findings);
}

/// A Discretization layer's lines (at most eight boundaries shown).
fn discretization(out: &mut String, l: &DiscretizationReport) {
    let group = l.weights_group.as_deref().unwrap_or("-");
    let k = l.bin_boundaries.as_ref().map_or(0, Vec::len);
    let what = match l.status {
        Status::Repaired => format!("repaired: embedded {k} bin boundaries in its config"),
        Status::WouldRepair => format!("would embed {k} bin boundaries in its config"),
        Status::Unchanged => "unchanged".into(),
        Status::AlreadyExplicit => "already explicit, left alone".into(),
        Status::Refused => "REFUSED".into(),
    };
    out.push_str(&format!("  {} [{group}]: {what}\n", l.config_path));
    if let Some(b) = &l.bin_boundaries {
        const SHOWN: usize = 8;
        let mut text: Vec<String> = b.iter().take(SHOWN).map(|x| x.to_string()).collect();
        if b.len() > SHOWN {
            text.push(format!("... ({} more)", b.len() - SHOWN));
        }
        out.push_str(&format!("    bin_boundaries: [{}]\n", text.join(", ")));
    }
    layer_notes(out, l.reason.as_deref(), &l.findings);
}

/// A layer's reason and its findings above info, indented under it.
fn layer_notes(out: &mut String, reason: Option<&str>, findings: &[Finding]) {
    if let Some(r) = reason {
        out.push_str(&format!("    {r}\n"));
    }
    for f in findings.iter().filter(|f| f.severity > Severity::Info) {
        out.push_str(&format!(
            "    {}: {} [{}]\n",
            sev(f.severity),
            f.message,
            f.code
        ));
    }
}

fn sev(s: Severity) -> &'static str {
    match s {
        Severity::Info => "note",
        Severity::Warning => "warning",
        Severity::Error => "error",
    }
}
