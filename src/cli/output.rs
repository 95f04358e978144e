//! Where the binary's output goes: stdout and stderr (a closed pipe is
//! not an error), the `--report` file (written atomically, its temporary
//! sibling created before any work), the `--report-format jsonl` journal,
//! and the batch progress bar.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use krepair::run::batch::{self, Job};

/// Print to stdout. A closed pipe (`krepair ... | head`) is not an error:
/// the rest is dropped quietly, as ripgrep does, and the exit code stays
/// the one the work earned. Returns false on any other write error.
pub fn print_out(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => true,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "krepair: cannot write to stdout: {e}");
            false
        }
    }
}

/// Print one line to stderr, ignoring a closed stderr.
pub fn print_err(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Where a report goes: stdout, or a file written atomically at the end.
/// The file's temporary sibling is created before any work, so a report
/// path that cannot be written fails the run before anything is written.
pub enum ReportSink {
    /// No report.
    None,
    /// `--report -`.
    Stdout,
    /// `--report FILE`: the path, its temporary sibling, and that
    /// sibling's cleanup registration.
    File(
        PathBuf,
        tempfile::NamedTempFile,
        krepair::os::cleanup::Registered,
    ),
}

impl ReportSink {
    pub fn open(path: Option<&Path>) -> Result<ReportSink, String> {
        let Some(path) = path else {
            return Ok(ReportSink::None);
        };
        if path == Path::new("-") {
            return Ok(ReportSink::Stdout);
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let t = tempfile::Builder::new()
            .prefix(&krepair::os::cleanup::prefix())
            .suffix(".report")
            .tempfile_in(&dir)
            .map_err(|e| format!("krepair: {}: cannot write the report: {e}", path.display()))?;
        let g = krepair::os::cleanup::register(t.path());
        Ok(ReportSink::File(path.to_path_buf(), t, g))
    }

    pub fn to_stdout(&self) -> bool {
        matches!(self, ReportSink::Stdout)
    }

    /// Write `text`; false (with one line on stderr) if it failed.
    pub fn write(self, text: &str) -> bool {
        match self {
            ReportSink::None => true,
            ReportSink::Stdout => print_out(text),
            ReportSink::File(path, mut t, _guard) => {
                let res = t
                    .write_all(text.as_bytes())
                    .and_then(|()| t.as_file().sync_all())
                    .and_then(|()| t.persist(&path).map(drop).map_err(|e| e.error));
                match res {
                    Ok(()) => true,
                    Err(e) => {
                        print_err(&format!(
                            "krepair: {}: cannot write the report: {e}",
                            path.display()
                        ));
                        false
                    }
                }
            }
        }
    }
}

/// The progress bar: archives done of total, bytes, current file, ETA.
pub struct Bar {
    /// The bar.
    pub bar: indicatif::ProgressBar,
    /// Archives done.
    pub done: AtomicUsize,
    /// Archives in all.
    pub total: usize,
}

impl batch::Progress for Bar {
    fn start(&self, job: &Job) {
        self.bar.set_message(job.input.display().to_string());
    }
    fn done(&self, job: &Job) {
        let n = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        self.bar.set_prefix(format!("{n}/{}", self.total));
        self.bar.inc(job.size);
    }
}

/// The `--report-format jsonl` journal: one line per archive, written and
/// flushed as it finishes, then the summary line.
pub struct Journal {
    out: std::sync::Mutex<Box<dyn Write + Send>>,
    /// `--report-format jsonl --report -`: the journal is stdout.
    pub stdout: bool,
    /// Appending to the `--resume` journal itself: its resumed entries are
    /// in it already.
    appending: bool,
    ok: AtomicBool,
}

impl Journal {
    pub fn open(path: &Path, resume: Option<&Path>) -> std::io::Result<Journal> {
        if path == Path::new("-") {
            return Ok(Journal {
                out: std::sync::Mutex::new(Box::new(std::io::stdout())),
                stdout: true,
                appending: false,
                ok: AtomicBool::new(true),
            });
        }
        let same = resume
            .is_some_and(|r| std::fs::canonicalize(r).ok() == std::fs::canonicalize(path).ok());
        let file = if same {
            batch::journal::open_append(path)?
        } else {
            std::fs::File::create(path)?
        };
        Ok(Journal {
            out: std::sync::Mutex::new(Box::new(file)),
            stdout: false,
            appending: same,
            ok: AtomicBool::new(true),
        })
    }

    fn write(&self, line: &str) {
        let mut g = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let res = g.write_all(line.as_bytes()).and_then(|()| g.flush());
        if let Err(e) = res {
            if e.kind() != std::io::ErrorKind::BrokenPipe && self.ok.swap(false, Ordering::SeqCst) {
                print_err(&format!("krepair: cannot write the journal: {e}"));
            }
        }
    }

    pub fn entry(&self, e: &batch::Entry) {
        if !(self.appending && e.resumed) {
            self.write(&batch::journal::entry_line(e));
        }
    }

    /// Write the summary line; false if any line could not be written.
    pub fn finish(&self, report: &batch::RunReport) -> bool {
        self.write(&report.summary_line());
        self.ok.load(Ordering::SeqCst)
    }
}
