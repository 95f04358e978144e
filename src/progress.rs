//! What the pipeline is doing now: [`step`] names each stage as it starts,
//! [`trace`] prints timings for profiling. A leaf every stage may call.
//!
//! Outside a worker, a step goes to [`trace`] (printed only with
//! [`TIMINGS_ENV`] set). A worker process installs a sink ([`install`])
//! that sends each step to its supervisor, which names the step if it has
//! to stop the worker.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Instant;

/// Where a worker sends its steps.
type Sink = Box<dyn Fn(&str) + Send + Sync>;

static SINK: OnceLock<Sink> = OnceLock::new();

/// Send every later [`step`] to `sink` (once per process; a second call is
/// ignored).
pub fn install(sink: impl Fn(&str) + Send + Sync + 'static) {
    let _ = SINK.set(Box::new(sink));
}

/// Say what the pipeline is doing now. In a worker it reaches the
/// supervisor, which names the step if it has to stop the worker; anywhere
/// else it goes to [`trace`].
pub fn step(what: &str) {
    let timed;
    let what = if timings().is_some() {
        timed = format!("{what}  [peak {} MiB]", crate::os::sys::peak_rss_mib());
        &timed
    } else {
        what
    };
    match SINK.get() {
        Some(sink) => sink(what),
        None => trace(what),
    }
}

/// When the process started timing, if [`TIMINGS_ENV`] is set: the
/// environment is read once, at the first call.
fn timings() -> Option<Instant> {
    static START: OnceLock<Option<Instant>> = OnceLock::new();
    *START.get_or_init(|| std::env::var_os(TIMINGS_ENV).map(|_| Instant::now()))
}

/// The environment variable that makes every step print the time since
/// the process started to stderr (`KREPAIR_TIMINGS=1`, for profiling:
/// docs/performance.md).
pub const TIMINGS_ENV: &str = "KREPAIR_TIMINGS";

/// With [`TIMINGS_ENV`] set, print `what` and the milliseconds since the
/// first call (made at start-up by `main`) to stderr. A worker's steps are
/// printed by its supervisor as they arrive.
pub fn trace(what: &str) {
    if let Some(t) = timings() {
        let _ = writeln!(
            std::io::stderr(),
            "krepair: {:9.3} ms  {what}",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
}
