//! Worker processes: every archive is inspected and repaired in a child
//! process (the same binary, re-executed in a hidden worker mode), so that
//! nothing one archive does can take the run down with it.
//!
//! Why processes, not threads: the HDF5 C library can crash or loop
//! forever on a malformed file, and a call into it cannot be interrupted;
//! a memory bomb must end one archive, not the machine; and the binding
//! serializes every HDF5 call behind one lock, so only processes repair
//! archives side by side.
//!
//! The supervisor side ([`Pool`]) keeps one long-lived worker per slot and
//! sends it one request at a time over a pipe. For each archive it
//! enforces:
//! - a wall-clock limit ([`Limits::timeout`]): past it the worker's
//!   process group is killed;
//! - a memory budget ([`Limits::memory`]), which the worker sets on itself
//!   as `RLIMIT_DATA` before each archive ([`crate::os::sys::set_budget`]);
//! - cleanup: the worker names its temporary files with a prefix the
//!   supervisor chose ([`crate::os::cleanup::set_prefix`]), so whatever way it
//!   dies, the supervisor removes every file it left.
//!
//! A worker that crashed, hung, ran out of memory or failed an archive is
//! replaced by a fresh one before the next archive.
//!
//! The protocol: one JSON [`Request`] per line on the worker's stdin; on
//! its stdout, `{"step": ...}` lines naming what it is doing (for the
//! message if it has to be stopped) and one `{"done": ...}` line with the
//! report. Paths travel as hex-encoded bytes, so any file name works.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, WorkerFault};
use crate::plan::Policy;
use crate::report::Report;
use crate::run::single::{self as repair, Options, Run};

/// The first argument that makes the binary a worker.
pub const WORKER_ARG: &str = "__krepair-worker";
/// The environment variable naming the supervisor's pid.
const PARENT_ENV: &str = "KREPAIR_WORKER_PARENT";
/// Test-only fault injection (docs/security.md): `KIND@SUBSTRING[,...]`
/// makes a worker crash, hang, exhaust its memory or panic on any input
/// whose path contains SUBSTRING. KIND is `crash`, `hang`, `oom` or
/// `panic`. Read by worker processes only.
pub const FAULT_ENV: &str = "KREPAIR_TEST_FAULT";

/// How [`Worker::run`] says the request never reached the worker.
const NOT_SENT: &str = "before it was sent the archive";

/// Default wall-clock limit for one archive, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 600;
/// Default memory budget for one archive, in MiB (beyond the mapped
/// weights; see [`crate::os::sys`]).
pub const DEFAULT_MEMORY_MIB: u64 = 1024;

/// The bounds on one archive.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Wall-clock time for one archive.
    pub timeout: Duration,
    /// Bytes the worker may allocate for one archive.
    pub memory: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            memory: DEFAULT_MEMORY_MIB << 20,
        }
    }
}

fn all_versions() -> u32 {
    crate::passes::keras3::Targets::ALL
}

/// One archive for a worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Request {
    #[serde(with = "hex_path")]
    input: PathBuf,
    #[serde(with = "hex_path_opt")]
    output: Option<PathBuf>,
    policy: Policy,
    force: bool,
    migrate: bool,
    /// `--load-in`, as a [`crate::passes::keras3::Targets`] mask.
    #[serde(default = "all_versions")]
    load_in: u32,
    /// Memory budget in bytes.
    memory: u64,
    /// The prefix of every temporary file the worker creates.
    temp_prefix: String,
    /// `krepair inspect` (a manifest of `input`) or `krepair diff` (of
    /// `input` and the other file): not a report.
    #[serde(default)]
    look: Option<Look>,
}

/// What `krepair inspect` and `krepair diff` ask a worker for.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Look {
    Inspect,
    Diff {
        #[serde(with = "hex_path")]
        other: PathBuf,
        tolerance: f64,
    },
}

/// A worker's answer to an inspect or diff request: the manifest or the
/// diff, or why there is none.
#[derive(Debug, Serialize, Deserialize)]
pub struct Inspected {
    manifest: Option<Box<crate::tools::inspect::Manifest>>,
    #[serde(default)]
    diff: Option<Box<crate::tools::diff::Diff>>,
    error: Option<crate::report::ErrorInfo>,
}

/// What a worker prints, one per line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Event {
    Step(String),
    Done(Box<Report>),
    Inspected(Inspected),
}

/// What a worker answered.
enum Answer {
    Report(Box<Report>),
    Inspected(Inspected),
}

impl Answer {
    /// Did the job fail (so the worker is replaced before the next)?
    fn failed(&self) -> bool {
        match self {
            Answer::Report(r) => r.outcome == crate::report::Outcome::Failed,
            Answer::Inspected(i) => i.error.is_some(),
        }
    }
}

// ---------------------------------------------------------------------
// The worker side.

/// Where [`step`] writes: the worker's stdout, once [`serve`] runs.
static SINK: Mutex<Option<std::io::Stdout>> = Mutex::new(None);

fn send(event: &Event) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let g = SINK.lock().unwrap_or_else(|p| p.into_inner());
    match g.as_ref() {
        Some(out) => {
            let mut out = out.lock();
            out.write_all(&line)?;
            out.flush()
        }
        None => Ok(()),
    }
}

/// The worker's main loop: serve requests from stdin until it closes.
/// Returns the process exit code.
pub fn serve() -> i32 {
    let parent = std::env::var(PARENT_ENV)
        .ok()
        .and_then(|s| s.parse::<u32>().ok());
    let Some(parent) = parent else {
        return 2;
    };
    if !crate::os::sys::die_with_parent(parent) {
        return 1;
    }
    *SINK.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::io::stdout());
    crate::progress::install(|what| {
        let _ = send(&Event::Step(what.to_string()));
    });
    let fault = std::env::var(FAULT_ENV).ok();
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { return 1 };
        let Ok(req) = serde_json::from_str::<Request>(&line) else {
            return 2;
        };
        let opts = Options {
            input: req.input.clone(),
            output: req.output.clone(),
            policy: req.policy,
            force: req.force,
            migrate: req.migrate,
            load_in: req.load_in,
        };
        crate::os::cleanup::set_prefix(&req.temp_prefix);
        let budget = crate::os::sys::set_budget(req.memory);
        if let Some(look) = &req.look {
            let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if let Some(f) = &fault {
                    inject(f, &req.input);
                }
                match look {
                    Look::Inspect => {
                        crate::tools::inspect::inspect(&req.input).map(|m| Inspected {
                            manifest: Some(Box::new(m)),
                            diff: None,
                            error: None,
                        })
                    }
                    Look::Diff { other, tolerance } => {
                        crate::tools::diff::diff(&req.input, other, *tolerance).map(|d| Inspected {
                            manifest: None,
                            diff: Some(Box::new(d)),
                            error: None,
                        })
                    }
                }
            }))
            .unwrap_or_else(|panic| Err(panicked(&opts, panic)));
            if budget {
                crate::os::sys::clear_budget();
            }
            let answer = match answer {
                Ok(a) => a,
                Err(e) => Inspected {
                    manifest: None,
                    diff: None,
                    error: Some(crate::report::ErrorInfo {
                        code: e.code(),
                        kind: e.kind(),
                        message: e.to_string(),
                    }),
                },
            };
            if send(&Event::Inspected(answer)).is_err() {
                return 1;
            }
            continue;
        }
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if let Some(f) = &fault {
                inject(f, &req.input);
            }
            repair::run(&opts)
        }))
        .unwrap_or_else(|panic| Run::failed(&opts, panicked(&opts, panic)));
        if budget {
            crate::os::sys::clear_budget();
        }
        if send(&Event::Done(Box::new(run.report))).is_err() {
            return 1;
        }
    }
    0
}

/// The error of a job that panicked.
fn panicked(opts: &Options, panic: Box<dyn std::any::Any + Send>) -> Error {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    Error::Internal {
        path: opts.input.clone(),
        problem: format!("internal error (please report it): {what}"),
    }
}

/// Test-only faults (see [`FAULT_ENV`]): a comma-separated list of
/// `KIND@SUBSTRING`.
fn inject(specs: &str, input: &Path) {
    let path = input.to_string_lossy();
    for spec in specs.split(',') {
        let Some((kind, needle)) = spec.split_once('@') else {
            continue;
        };
        if needle.is_empty() || !path.contains(needle) {
            continue;
        }
        match kind {
            "crash" => crate::os::sys::crash(),
            "hang" => loop {
                std::thread::sleep(Duration::from_secs(1));
            },
            "oom" => {
                let mut hog: Vec<Vec<u8>> = Vec::new();
                loop {
                    hog.push(vec![1u8; 16 << 20]);
                }
            }
            "panic" => panic!("injected panic"),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------
// The supervisor side.

/// Process groups of the live workers, for [`kill_all`].
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// Temporary-file prefixes and directories of the archives in flight.
static IN_FLIGHT: Mutex<Vec<(String, Vec<PathBuf>)>> = Mutex::new(Vec::new());
/// Makes each archive's temporary prefix unique within the run.
static NEXT_JOB: AtomicU64 = AtomicU64::new(0);

/// Kill every live worker and remove the temporary files of every archive
/// in flight (Ctrl-C).
pub fn kill_all() {
    for pid in LIVE.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        crate::os::sys::kill_group(*pid);
    }
    let jobs = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for (prefix, dirs) in jobs {
        remove_prefixed(&prefix, &dirs);
    }
}

/// Remove every entry of `dirs` whose name starts with `prefix`.
fn remove_prefixed(prefix: &str, dirs: &[PathBuf]) {
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(prefix) {
                let p = e.path();
                if p.is_dir() {
                    let _ = std::fs::remove_dir_all(&p);
                } else {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
    }
}

/// What the reader thread passes on.
enum Msg {
    Event(Event),
    /// A line that is not the protocol.
    Garbage(String),
    /// The worker closed its stdout (it exited or died).
    Closed,
}

/// The last bytes a worker wrote on stderr (a panic message, Rust's
/// "memory allocation of N bytes failed").
#[derive(Default)]
struct Tail(Vec<u8>);

const TAIL_BYTES: usize = 4096;

impl Tail {
    fn push(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
        if self.0.len() > TAIL_BYTES {
            let cut = self.0.len() - TAIL_BYTES;
            self.0.drain(..cut);
        }
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

/// One worker process.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    rx: Receiver<Msg>,
    tail: Arc<Mutex<Tail>>,
    /// The stderr reader; it ends when the worker is gone.
    tail_reader: Option<std::thread::JoinHandle<()>>,
    pid: u32,
    /// Waited for: its pid may belong to another process now.
    reaped: bool,
}

impl Worker {
    fn spawn(exe: &Path) -> std::io::Result<Worker> {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(exe)
            .arg(WORKER_ARG)
            .env(PARENT_ENV, std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: Ctrl-C at a terminal reaches the
            // supervisor only, which decides what happens to the workers.
            .process_group(0)
            .spawn()?;
        let pid = child.id();
        LIVE.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let msg = match serde_json::from_slice::<Event>(&line) {
                            Ok(e) => Msg::Event(e),
                            Err(_) => Msg::Garbage(
                                String::from_utf8_lossy(&line[..line.len().min(200)]).into(),
                            ),
                        };
                        if tx.send(msg).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(Msg::Closed);
        });
        let tail = Arc::new(Mutex::new(Tail::default()));
        let t = tail.clone();
        let tail_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                t.lock().unwrap_or_else(|p| p.into_inner()).push(&buf[..n]);
            }
        });
        Ok(Worker {
            child,
            stdin,
            rx,
            tail,
            tail_reader: Some(tail_reader),
            pid,
            reaped: false,
        })
    }

    /// Kill the worker (its whole process group) and reap it.
    fn kill(&mut self) -> Option<std::process::ExitStatus> {
        if self.reaped {
            return None;
        }
        crate::os::sys::kill_group(self.pid);
        let st = self.child.wait().ok();
        self.reaped = true;
        LIVE.lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|p| *p != self.pid);
        st
    }

    /// Run one request. `Err` is how the worker failed to answer.
    fn run(&mut self, req: &Request, timeout: Duration) -> Result<Answer, (WorkerFault, String)> {
        let mut line =
            serde_json::to_vec(req).map_err(|e| (WorkerFault::Protocol, e.to_string()))?;
        line.push(b'\n');
        if let Err(e) = self
            .stdin
            .write_all(&line)
            .and_then(|()| self.stdin.flush())
        {
            return Err(self.died(format!("{NOT_SENT}: {e}")));
        }
        let deadline = Instant::now() + timeout;
        let mut last_step = String::from("starting");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Msg::Event(Event::Step(s))) => {
                    crate::progress::trace(&s);
                    last_step = s;
                }
                Ok(Msg::Event(Event::Done(report))) => return Ok(Answer::Report(report)),
                Ok(Msg::Event(Event::Inspected(i))) => return Ok(Answer::Inspected(i)),
                Ok(Msg::Garbage(g)) => {
                    self.kill();
                    return Err((
                        WorkerFault::Protocol,
                        format!("the worker process wrote `{}`", g.trim()),
                    ));
                }
                Ok(Msg::Closed) | Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.died(format!("while {last_step}")));
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.kill();
                    return Err((
                        WorkerFault::TimedOut,
                        format!(
                            "did not finish within {} s (while {last_step}); it was stopped",
                            fmt_secs(timeout)
                        ),
                    ));
                }
            }
        }
    }

    /// The worker ended without an answer: say how.
    fn died(&mut self, context: String) -> (WorkerFault, String) {
        use std::os::unix::process::ExitStatusExt;
        let status = self.kill();
        // The worker is gone, so its stderr is closed: take its last words.
        if let Some(h) = self.tail_reader.take() {
            let _ = h.join();
        }
        let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner()).text();
        if tail.contains("memory allocation of") {
            return (
                WorkerFault::OutOfMemory,
                format!("ran out of its memory budget {context}"),
            );
        }
        let how = match status {
            Some(st) => match st.signal() {
                Some(sig) => format!("was killed by {}", crate::os::sys::signal_name(sig)),
                None => format!("exited with code {}", st.code().unwrap_or(-1)),
            },
            None => "vanished".into(),
        };
        let last = tail
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| format!(": {}", l.trim()))
            .unwrap_or_default();
        (
            WorkerFault::Crashed,
            format!("the worker process {how} {context}{last}"),
        )
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s}")
    }
}

/// Worker processes, one per slot, each running one archive at a time.
pub struct Pool {
    exe: PathBuf,
    limits: Limits,
    slots: Vec<Mutex<Option<Worker>>>,
}

impl Pool {
    /// A pool of `slots` workers running `exe` (started on first use).
    pub fn new(exe: PathBuf, limits: Limits, slots: usize) -> Pool {
        Pool {
            exe,
            limits,
            slots: (0..slots.max(1)).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// A pool running this very binary.
    pub fn current(limits: Limits, slots: usize) -> std::io::Result<Pool> {
        Ok(Pool::new(std::env::current_exe()?, limits, slots))
    }

    /// Run one archive in the worker of `slot`. Never panics: a worker
    /// that cannot be started, dies or overruns its limits makes a failed
    /// run with one line saying what happened.
    pub fn run(&self, slot: usize, opts: &Options) -> Run {
        match self.ask(slot, opts, None) {
            Ok(Answer::Report(report)) => Run::from_report(*report),
            Ok(Answer::Inspected(_)) => Run::failed(opts, protocol(opts, "a manifest")),
            Err(e) => Run::failed(opts, e),
        }
    }

    /// `krepair inspect` of `path` in the worker of `slot`, with the same
    /// bounds as a repair. Never panics.
    pub fn inspect(
        &self,
        slot: usize,
        path: &Path,
    ) -> Result<crate::tools::inspect::Manifest, Error> {
        let opts = Options {
            input: path.to_path_buf(),
            output: None,
            policy: Policy::Auto,
            force: false,
            migrate: false,
            load_in: crate::passes::keras3::Targets::ALL,
        };
        match self.ask(slot, &opts, Some(Look::Inspect))? {
            Answer::Inspected(Inspected {
                manifest: Some(m), ..
            }) => Ok(*m),
            Answer::Inspected(Inspected { error: Some(e), .. }) => Err(reported(e)),
            _ => Err(protocol(&opts, "something else")),
        }
    }

    /// `krepair diff` of `a` and `b` in the worker of `slot`, with the
    /// same bounds as a repair. Never panics.
    pub fn diff(
        &self,
        slot: usize,
        a: &Path,
        b: &Path,
        tolerance: f64,
    ) -> Result<crate::tools::diff::Diff, Error> {
        let opts = Options {
            input: a.to_path_buf(),
            output: None,
            policy: Policy::Auto,
            force: false,
            migrate: false,
            load_in: crate::passes::keras3::Targets::ALL,
        };
        let look = Look::Diff {
            other: b.to_path_buf(),
            tolerance,
        };
        match self.ask(slot, &opts, Some(look))? {
            Answer::Inspected(Inspected { diff: Some(d), .. }) => Ok(*d),
            Answer::Inspected(Inspected { error: Some(e), .. }) => Err(reported(e)),
            _ => Err(protocol(&opts, "something else")),
        }
    }

    /// Send one request to the worker of `slot` and take its answer; how
    /// the worker failed to answer is the error.
    fn ask(&self, slot: usize, opts: &Options, look: Option<Look>) -> Result<Answer, Error> {
        let mut guard = self.slots[slot % self.slots.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let prefix = format!(
            ".krepair-{}-{}-",
            std::process::id(),
            NEXT_JOB.fetch_add(1, Ordering::SeqCst)
        );
        let mut dirs = vec![std::env::temp_dir()];
        if let Some(out) = &opts.output {
            dirs.push(match out.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            });
        }
        let req = Request {
            input: opts.input.clone(),
            output: opts.output.clone(),
            policy: opts.policy,
            force: opts.force,
            migrate: opts.migrate,
            load_in: opts.load_in,
            memory: self.limits.memory,
            temp_prefix: prefix.clone(),
            look,
        };
        if guard.is_none() {
            match Worker::spawn(&self.exe) {
                Ok(w) => *guard = Some(w),
                Err(e) => {
                    return Err(Error::Worker {
                        path: opts.input.clone(),
                        fault: WorkerFault::Crashed,
                        problem: format!("cannot start a worker process: {e}"),
                    })
                }
            }
        }
        IN_FLIGHT
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((prefix.clone(), dirs.clone()));
        let mut res = match guard.as_mut() {
            Some(w) => w.run(&req, self.limits.timeout),
            None => Err((WorkerFault::Crashed, "no worker".into())),
        };
        if matches!(&res, Err((WorkerFault::Crashed, p)) if p.contains(NOT_SENT)) {
            // The worker died while idle (killed from outside): the archive
            // never reached it, so it gets one fresh worker.
            *guard = Worker::spawn(&self.exe).ok();
            if let Some(w) = guard.as_mut() {
                res = w.run(&req, self.limits.timeout);
            }
        }
        let answer = match res {
            Ok(answer) => {
                if answer.failed() {
                    // A fresh worker for the next archive, whatever this
                    // one left behind in the C library.
                    *guard = None;
                }
                Ok(answer)
            }
            Err((fault, problem)) => {
                *guard = None;
                remove_prefixed(&prefix, &dirs);
                let problem = if fault == WorkerFault::OutOfMemory {
                    format!(
                        "{problem} ({} MiB; --memory-limit sets it); nothing was written",
                        self.limits.memory >> 20
                    )
                } else {
                    format!("{problem}; nothing was written")
                };
                Err(Error::Worker {
                    path: opts.input.clone(),
                    fault,
                    problem,
                })
            }
        };
        IN_FLIGHT
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(p, _)| *p != prefix);
        answer
    }
}

/// A worker's error, as the supervisor's.
fn reported(e: crate::report::ErrorInfo) -> Error {
    Error::Reported {
        code: e.code,
        kind: e.kind,
        message: e.message,
    }
}

/// A worker answered with `what` where it was asked for the other.
fn protocol(opts: &Options, what: &str) -> Error {
    Error::Worker {
        path: opts.input.clone(),
        fault: WorkerFault::Protocol,
        problem: format!("the worker process answered with {what}"),
    }
}

/// Paths as hex-encoded bytes (any Unix file name survives).
mod hex_path {
    use std::os::unix::ffi::OsStrExt;
    use std::path::{Path, PathBuf};

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn encode(p: &Path) -> String {
        p.as_os_str()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn decode(s: &str) -> Option<PathBuf> {
        if s.len() % 2 != 0 {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
            .collect();
        Some(PathBuf::from(std::ffi::OsStr::from_bytes(&bytes?)))
    }

    pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(p))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        let s = String::deserialize(d)?;
        decode(&s).ok_or_else(|| serde::de::Error::custom("bad hex path"))
    }
}

mod hex_path_opt {
    use std::path::PathBuf;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        match p {
            Some(p) => s.serialize_some(&super::hex_path::encode(p)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => super::hex_path::decode(&s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom("bad hex path")),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_as_hex_whatever_their_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let p = PathBuf::from(std::ffi::OsStr::from_bytes(b"a/\xff\n\tb.keras"));
        assert_eq!(hex_path::decode(&hex_path::encode(&p)), Some(p));
        assert_eq!(hex_path::decode("zz"), None);
        assert_eq!(hex_path::decode("abc"), None);
    }

    #[test]
    fn the_stderr_tail_keeps_the_last_bytes() {
        let mut t = Tail::default();
        t.push(&vec![b'a'; TAIL_BYTES]);
        t.push(b"memory allocation of 8 bytes failed\n");
        assert_eq!(t.0.len(), TAIL_BYTES);
        assert!(t.text().ends_with("memory allocation of 8 bytes failed\n"));
    }
}
