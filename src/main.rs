//! The `krepair` binary, orchestration only: parse the arguments in two
//! stages ([`cli::args`], then [`cli::options`]), dispatch the task
//! ([`cli::commands`]), and exit with its status (docs/exit-codes.md).
//! The binary is the only place that prints or exits.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use cli::args::Args;
use cli::exit::{EXIT_OK, EXIT_USAGE};
use cli::options::{Task, Usage};
use krepair::run::worker;

fn main() -> ExitCode {
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(worker::WORKER_ARG)) {
        return ExitCode::from(worker::serve().clamp(0, 255) as u8);
    }
    krepair::progress::trace("start");
    let code = match parse() {
        Ok(task) => cli::commands::run(task),
        Err(code) => code,
    };
    krepair::progress::trace("exit");
    ExitCode::from(code)
}

/// The task the command line asks for, or the exit code once clap (help,
/// version, a bad flag) or the second stage (a usage error) has said why
/// there is none.
fn parse() -> Result<Task, u8> {
    let version: &'static str = Box::leak(cli::args::long_version().into_boxed_str());
    let parsed = Args::command()
        .version(version)
        .try_get_matches()
        .and_then(|m| Args::from_arg_matches(&m));
    let args = match parsed {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return Err(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    Task::from_args(args).map_err(|Usage(line)| {
        cli::output::print_err(&format!("krepair: {line}"));
        EXIT_USAGE
    })
}
