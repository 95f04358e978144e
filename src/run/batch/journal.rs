//! Runs that outlive one process: the streaming journal
//! (`--report-format jsonl`), `--resume`, and `krepair report merge`.
//!
//! A journal is one JSON object per line: one [`Entry`] per archive,
//! written and flushed as the archive finishes, then one summary line (the
//! run report without its entries: it has a `summary` key, entries have a
//! `path`). A run killed at any point leaves every finished archive's line
//! whole; at most the line being written is cut short, and readers drop a
//! last line without its newline.
//!
//! Every entry carries the [`Fingerprint`] of the file at its path when the
//! archive finished: size, modification time and SHA-256 (null where the
//! run did not hash it: dry runs, directory archives). `--resume` skips an
//! archive whose file still has that fingerprint, hashing it again to be
//! sure, and redoes it otherwise.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Entry, Fingerprint, RunReport, Summary};
use crate::report::Outcome;
use crate::source::keras::{CONFIG, METADATA, WEIGHTS};

/// Size and modification time of the archive at `path` now.
pub fn stat(path: &Path) -> Option<(u64, i128)> {
    let m = fs::metadata(path).ok()?;
    let ns = |m: &fs::Metadata| m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128;
    if m.is_dir() {
        let mut size = 0;
        let mut latest = i128::MIN;
        for n in [CONFIG, METADATA, WEIGHTS] {
            let mm = fs::metadata(path.join(n)).ok()?;
            size += mm.len();
            latest = latest.max(ns(&mm));
        }
        Some((size, latest))
    } else {
        Some((m.len(), ns(&m)))
    }
}

/// Does the file at `path` still have fingerprint `f`? Size and mtime
/// first (free); then the SHA-256, read again, if the journal holds one.
pub fn unchanged(path: &Path, f: &Fingerprint) -> bool {
    if stat(path) != Some((f.size, f.mtime_ns)) {
        return false;
    }
    match &f.sha256 {
        None => true,
        Some(want) => {
            let never = std::sync::atomic::AtomicBool::new(false);
            crate::hash::scan_file(path, None, &never)
                .map(|(sha, _)| &sha == want)
                .unwrap_or(false)
        }
    }
}

/// The summary line of a journal: the run report without its entries.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Header {
    /// Same as [`RunReport`].
    pub schema_version: u32,
    /// "out", "in-place" or "dry-run".
    pub mode: String,
    /// `--stats`.
    pub policy: crate::plan::Policy,
    /// `--shard`, if any.
    pub shard: Option<String>,
    /// The run was interrupted.
    pub interrupted: bool,
    /// Counts.
    pub summary: Summary,
    /// Files skipped (not archives), sorted.
    pub skipped: Vec<String>,
}

impl RunReport {
    /// The journal's summary line (with its newline).
    pub fn summary_line(&self) -> String {
        let h = Header {
            schema_version: self.schema_version,
            mode: self.mode.to_string(),
            policy: self.policy,
            shard: self.shard.clone(),
            interrupted: self.interrupted,
            summary: self.summary.clone(),
            skipped: self.skipped.clone(),
        };
        let mut s = serde_json::to_string(&h).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// One entry as a journal line (with its newline).
pub fn entry_line(e: &Entry) -> String {
    let mut s = serde_json::to_string(e).unwrap_or_default();
    s.push('\n');
    s
}

/// A run read back: from a journal or a JSON run report.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The file.
    pub path: PathBuf,
    /// Its entries, in file order.
    pub entries: Vec<Entry>,
    /// Its summary line, or the report's own header.
    pub header: Option<Header>,
}

/// Read a journal (`.jsonl`) or a JSON run report.
pub fn load(path: &Path) -> Result<Loaded, String> {
    let bad = |what: String| format!("{}: {what}", path.display());
    let f = fs::File::open(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let mut r = BufReader::new(f);
    let mut first = Vec::new();
    r.read_until(b'\n', &mut first)
        .map_err(|e| bad(format!("cannot read: {e}")))?;
    let text_start = String::from_utf8_lossy(&first).trim().to_string();
    let mut out = Loaded {
        path: path.to_path_buf(),
        ..Loaded::default()
    };
    if text_start == "{" {
        // A pretty-printed run report.
        let mut rest = first;
        std::io::Read::read_to_end(&mut r, &mut rest).map_err(|e| bad(e.to_string()))?;
        let report: RunReport = serde_json::from_slice(&rest)
            .map_err(|e| bad(format!("not a krepair run report: {e}")))?;
        out.header = Some(Header {
            schema_version: report.schema_version,
            mode: report.mode.to_string(),
            policy: report.policy,
            shard: report.shard.clone(),
            interrupted: report.interrupted,
            summary: report.summary.clone(),
            skipped: report.skipped.clone(),
        });
        out.entries = report.entries;
        return Ok(out);
    }
    let mut line = first;
    let mut n = 0usize;
    loop {
        if line.is_empty() {
            break;
        }
        n += 1;
        let complete = line.ends_with(b"\n");
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if !text.is_empty() {
            let v: Result<serde_json::Value, _> = serde_json::from_str(text);
            match v {
                Ok(v) if v.get("summary").is_some() => {
                    out.header = Some(
                        serde_json::from_value(v)
                            .map_err(|e| bad(format!("line {n}: not a summary line: {e}")))?,
                    );
                }
                Ok(v) if v.get("path").is_some() => out.entries.push(
                    serde_json::from_value(v)
                        .map_err(|e| bad(format!("line {n}: not an archive entry: {e}")))?,
                ),
                // The line a killed run was writing.
                Err(_) if !complete => break,
                _ => return Err(bad(format!("line {n} is not a krepair journal line"))),
            }
        }
        line = Vec::new();
        r.read_until(b'\n', &mut line)
            .map_err(|e| bad(format!("cannot read: {e}")))?;
    }
    if out.entries.is_empty() && out.header.is_none() {
        return Err(bad("holds no krepair journal lines".into()));
    }
    // A journal appended to by `--resume` can hold an archive twice (it
    // failed, then was done again): the later line is the one that counts.
    let mut last: HashMap<String, usize> = HashMap::new();
    for (i, e) in out.entries.iter().enumerate() {
        last.insert(e.path.clone(), i);
    }
    let mut i = 0;
    out.entries.retain(|e| {
        let keep = last.get(&e.path) == Some(&i);
        i += 1;
        keep
    });
    Ok(out)
}

/// Open a journal for appending: a cut-short last line (a killed run's) is
/// cut off first, so the next line starts on a line of its own.
pub fn open_append(path: &Path) -> std::io::Result<fs::File> {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    let bytes = fs::read(path)?;
    if !bytes.is_empty() && !bytes.ends_with(b"\n") {
        let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        f.set_len(keep as u64)?;
    }
    f.flush()?;
    Ok(f)
}

/// What `--resume` knows: the last finished entry of each archive.
#[derive(Debug, Default)]
pub struct Resume {
    entries: HashMap<String, Entry>,
}

impl Resume {
    /// From a loaded journal or report. Failed archives are not finished:
    /// they are done again.
    pub fn new(loaded: Loaded) -> Resume {
        let mut entries = HashMap::new();
        for e in loaded.entries {
            if e.outcome != Outcome::Failed && e.fingerprint.is_some() {
                entries.insert(e.path.clone(), e);
            }
        }
        Resume { entries }
    }

    /// The finished entry for the archive at `path`, if its file is as the
    /// journal recorded it and it was made under the same `--stats` and
    /// dry-run setting.
    pub fn finished(
        &self,
        path: &Path,
        policy: crate::plan::Policy,
        dry_run: bool,
    ) -> Option<Entry> {
        let e = self.entries.get(&path.display().to_string())?;
        if e.report.policy != policy || e.report.dry_run != dry_run {
            return None;
        }
        let f = e.fingerprint.as_ref()?;
        unchanged(path, f).then(|| {
            let mut e = e.clone();
            e.resumed = true;
            e
        })
    }
}

/// Merge shard journals or run reports into one run report. Fails on
/// inputs that disagree: a different mode, `--stats` or schema, or the
/// same archive with two different outcomes.
pub fn merge(inputs: Vec<Loaded>) -> Result<RunReport, String> {
    let mut by_path: BTreeMap<String, (Entry, PathBuf)> = BTreeMap::new();
    let mut skipped = BTreeSet::new();
    let mut mode: Option<(String, PathBuf)> = None;
    let mut policy: Option<(crate::plan::Policy, PathBuf)> = None;
    let mut interrupted = false;
    let mut not_processed = 0;
    for l in inputs {
        if let Some(h) = &l.header {
            if h.schema_version != crate::report::SCHEMA_VERSION {
                return Err(format!(
                    "{}: schema version {} (this krepair writes {})",
                    l.path.display(),
                    h.schema_version,
                    crate::report::SCHEMA_VERSION
                ));
            }
            if let Some((m, from)) = &mode {
                if *m != h.mode {
                    return Err(format!(
                        "{} is a `{}` run and {} a `{m}` run",
                        l.path.display(),
                        h.mode,
                        from.display()
                    ));
                }
            } else {
                mode = Some((h.mode.clone(), l.path.clone()));
            }
            interrupted |= h.interrupted;
            not_processed += h.summary.not_processed;
            skipped.extend(h.skipped.iter().cloned());
        }
        for e in l.entries {
            match &policy {
                Some((p, from)) if *p != e.report.policy => {
                    return Err(format!(
                        "{}: `{}` was made with --stats {:?}, {} with --stats {p:?}",
                        l.path.display(),
                        e.path,
                        e.report.policy,
                        from.display()
                    ))
                }
                None => policy = Some((e.report.policy, l.path.clone())),
                _ => {}
            }
            match by_path.get(&e.path) {
                Some((old, from)) if old.outcome != e.outcome || old.output != e.output => {
                    return Err(format!(
                        "`{}` is {} in {} and {} in {}",
                        e.path,
                        crate::report::run::outcome_name(old.outcome),
                        from.display(),
                        crate::report::run::outcome_name(e.outcome),
                        l.path.display()
                    ));
                }
                Some(_) => {}
                None => {
                    by_path.insert(e.path.clone(), (e, l.path.clone()));
                }
            }
        }
    }
    let entries: Vec<Entry> = by_path.into_values().map(|(e, _)| e).collect();
    let skipped: Vec<String> = skipped.into_iter().collect();
    let summary = super::summarize(&entries, skipped.len(), not_processed);
    Ok(RunReport {
        schema_version: crate::report::SCHEMA_VERSION,
        tool: crate::report::Tool::current(),
        policy: policy.map(|p| p.0).unwrap_or(crate::plan::Policy::Auto),
        mode: match mode.as_ref().map(|m| m.0.as_str()) {
            Some("in-place") => super::RunMode::InPlace,
            Some("dry-run") => super::RunMode::DryRun,
            _ => super::RunMode::Out,
        },
        shard: None,
        interrupted,
        summary,
        entries,
        skipped,
    })
}
