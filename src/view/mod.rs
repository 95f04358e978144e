//! The typed view of one model: what every pass reads.
//!
//! - [`open`]: opens an archive once and builds the view (metadata,
//!   config, weights), running the passes a command asks for.
//! - [`config`]: the model config as layers (pure, over either JSON tree).
//! - [`json_tree`]: the read-only config tree, in an arena, borrowing from
//!   the text; [`json_span`]: byte spans of values inside the text, for
//!   edits that keep every other byte.
//!
//! The weights side of the view is [`crate::weights`], the only room that
//! talks to HDF5.

pub mod config;
pub mod json_span;
pub mod json_tree;
pub mod legacy_h5;
pub mod open;
