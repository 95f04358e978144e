//! krepair: repair Keras archives and migrate them to Keras 3.
//!
//! The pipeline, one room per stage (docs/architecture.md draws it):
//!
//! ```text
//!  input ──► source ──► view ──► passes ──► plan ──► sink ──► output
//!            (format)   (config,  (findings, (typed    (stage, write,
//!                        weights)  edits)     codes)    verify, rename)
//!                                    │
//!                                    └──► report (audit, run, human)
//! ```
//!
//! - [`source`]: one module per input format, each opening its input once
//!   ([`source::keras`]: the `.keras` zip and its unzipped directory).
//! - [`view`]: the typed view of one model, opened once per run: its
//!   metadata, its config tree ([`view::config`] over [`view::json_tree`]
//!   or the `Value` a migration rewrites) and its weights ([`weights`],
//!   the only room that talks to HDF5, through one bounded walker).
//! - [`passes`]: view in, findings and edits out, no files: the
//!   tf.keras 2.x to Keras 3 migration, the Normalization and
//!   Discretization repairs.
//! - [`plan`]: the edits ([`plan::Action`]) and the typed finding codes.
//! - [`sink`]: applies the edits to private copies, writes the output
//!   beside its final path, verifies it, renames it into place.
//! - [`report`]: the audit report (JSON) and every human rendering.
//! - [`run`]: the single-archive pipeline, batches, and the worker
//!   processes that isolate each archive.
//! - [`tools`]: `krepair inspect` and `krepair diff`, read-only views.
//!
//! Below them: [`codes`] (the stable codes of findings and rewrites),
//! [`error`] (what stopped krepair for one file), [`progress`]
//! (what the pipeline is doing now), [`hash`] (whole-file checksums) and
//! [`os`] (system calls, mappings, temporary-file cleanup).
//!
//! The library never prints; `main.rs` does.

pub mod codes;
pub mod error;
pub mod hash;
pub mod os;
pub mod passes;
pub mod plan;
pub mod progress;
pub mod report;
pub mod run;
pub mod sink;
pub mod source;
pub mod tools;
pub mod view;
pub mod weights;

pub use error::{Error, Result};
pub use plan::Policy;
pub use report::{Outcome, Report};
pub use run::single::{run, Options, Run};
