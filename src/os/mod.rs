//! The operating system, below every stage: [`sys`] (resource limits,
//! signals, writeback hints), [`mapped`] (read-only memory mappings) and
//! [`cleanup`] (temporary files removed on every exit path).

pub mod cleanup;
pub(crate) mod mapped;
pub(crate) mod sys;
