//! krepair: repair and migrate Keras `.keras` archives.
//!
//! The pipeline, and the module that owns each stage:
//!
//! 1. [`archive`] opens the container (zip or directory) and checks it;
//! 2. [`model`] is the typed view of `config.json`: every Normalization
//!    layer and where Keras stored its variables (pure, over the arena
//!    tree of [`json_tree`], or the `Value` a migration rewrites); [`weights`] is the
//!    view of `model.weights.h5` (the only module that talks to HDF5,
//!    through one bounded walker);
//! 3. [`passes`] read the views and plan findings and edits: the
//!    tf.keras 2.x to Keras 3 migration ([`passes::migrate`], pure) and the
//!    Normalization repair ([`passes::normalization`], with [`plan`] and
//!    [`stats`] deciding what each layer must compute); [`inspect`] runs
//!    the passes a command asks for over one archive;
//! 4. [`repair`] applies the edits ([`plan::Action`], the migration's
//!    rewrites) to private copies, writes the output beside its final
//!    path, verifies it and renames it into place;
//! 5. [`report`] is the audit report (JSON) and the human summary;
//!    [`batch`] and [`worker`] run many archives, each in its own bounded
//!    process.
//!
//! [`manifest`] is `krepair inspect`: the same views, listed; [`diff`]
//! compares two of them.
//!
//! The library never prints; `main.rs` does.

pub mod archive;
pub mod batch;
pub mod cleanup;
pub mod diff;
pub mod error;
pub mod inspect;
pub mod json_span;
pub mod json_tree;
pub mod manifest;
mod mapped;
pub mod model;
pub mod passes;
pub mod plan;
pub mod repair;
pub mod report;
pub mod stats;
mod sys;
pub mod weights;
pub mod worker;

pub use error::{Error, Result};
/// The migration pass, at its old path.
pub use passes::migrate;
pub use plan::Policy;
pub use repair::{run, Options, Run};
pub use report::{Outcome, Report};
