//! krepair: repair Keras `.keras` archives whose Normalization layers
//! depend on `finalize_state()`.
//!
//! The pipeline, and the module that owns each stage:
//!
//! 1. [`archive`] opens the container (zip or directory) and checks it;
//! 2. [`model`] finds every Normalization layer in `config.json` and where
//!    Keras stored its variables (pure);
//! 3. [`weights`] reads those variables from `model.weights.h5` (the only
//!    module that talks to HDF5);
//! 4. [`plan`] and [`stats`] decide what each layer must compute and check
//!    the numbers (pure); [`inspect`] ties 1-4 together;
//! 5. [`repair`] applies the plan to private copies, writes the output
//!    beside its final path, verifies it and renames it into place;
//! 6. [`report`] is the audit report (JSON) and the human summary.
//!
//! The library never prints; `main.rs` does.

pub mod archive;
pub mod batch;
pub mod cleanup;
pub mod error;
pub mod inspect;
pub mod json_span;
mod mapped;
pub mod migrate;
pub mod model;
pub mod plan;
pub mod repair;
pub mod report;
pub mod stats;
mod sys;
pub mod weights;
pub mod worker;

pub use error::{Error, Result};
pub use plan::Policy;
pub use repair::{run, Options, Run};
pub use report::{Outcome, Report};
