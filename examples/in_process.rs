//! One repair, migration or dry run in this process, for profilers that
//! cannot follow krepair's worker process (callgrind, heaptrack):
//!
//!     cargo build --release --example in_process
//!     valgrind --tool=callgrind target/release/examples/in_process IN [OUT] [--migrate]
//!
//! Without OUT it is a dry run. Prints the outcome and the error, if any.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let migrate = args.iter().any(|a| a == "--migrate");
    let paths: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let Some(input) = paths.first() else {
        eprintln!("usage: in_process IN [OUT] [--migrate]");
        std::process::exit(2);
    };
    let opts = krepair::run::single::Options {
        input: PathBuf::from(input),
        output: paths.get(1).map(PathBuf::from),
        policy: krepair::plan::Policy::Auto,
        force: true,
        migrate,
        load_in: krepair::passes::keras3::Targets::ALL,
    };
    let run = krepair::run::single::run(&opts);
    println!("{:?}", run.report.outcome);
    if let Some(e) = run.error {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
