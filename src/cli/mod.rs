//! The binary's side of krepair: the command line in two stages
//! ([`args`]: what clap parses; [`options`]: the validated [`options::Task`]),
//! each command's orchestration ([`commands`]), and the one place that
//! prints ([`output`]).

pub mod args;
pub mod commands;
pub mod options;
pub mod output;

/// Exit codes (docs/exit-codes.md; tests/cli.rs checks each).
pub mod exit {
    /// Repaired, or nothing to repair.
    pub const EXIT_OK: u8 = 0;
    /// krepair could not do its job (bad input, refused layer, I/O).
    pub const EXIT_FAILURE: u8 = 1;
    /// Bad command line (clap's convention).
    pub const EXIT_USAGE: u8 = 2;
    /// A dry run found something to repair.
    pub const EXIT_WORK_FOUND: u8 = 3;
    /// The output was written, but the report could not be.
    pub const EXIT_REPORT_LOST: u8 = 4;
    /// Stopped by Ctrl-C or SIGTERM (128 + SIGINT).
    pub const EXIT_INTERRUPTED: u8 = 130;
}
