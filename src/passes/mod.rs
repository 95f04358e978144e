//! The passes over one archive's typed view (its config tree and its
//! weights tree). Each pass reads the view and returns findings and edits
//! ([`crate::plan::Action`], [`migrate::Rewrite`]); it writes nothing.
//! [`crate::view::open`] runs the passes a command asks for, in order: the
//! migration first (it rewrites the config the repair then reads), then
//! the Normalization repair; [`crate::run::single`] applies their edits, writes
//! and verifies.
//!
//! - [`migrate`]: tf.keras 2.12-2.15 to Keras 3 (issue #10); pure, a JSON
//!   tree in, rewrites or a refusal out; its weights rules see the weights
//!   through [`crate::weights::WeightsTree`].
//! - [`normalization`]: the Normalization state repair (keras #20147).
//! - [`discretization`]: the Discretization state repair (issue #15): the
//!   bin boundaries tf.keras computes from the stored summary, embedded.

pub mod discretization;
pub mod keras3;
pub mod migrate;
pub mod normalization;
pub mod stats;
