//! `sheave-load`: a load generator whose client is sheave's own balanced stack.
//!
//! ```text
//! cargo run --release -p sheave-load -- -c 50 -P 16 -d 10 127.0.0.1:6379
//! cargo run --release -p sheave-load -- --help
//! ```
//!
//! The logic lives in the library (`sheave_load::{cli, run, report}`); this is its front.

use sheave_load::cli::{self, Parsed};
use sheave_load::report;
use std::process::ExitCode;

fn main() -> ExitCode {
    let config = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Parsed::Run(config)) => config,
        Ok(Parsed::Help) => {
            print!("{}", cli::HELP);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("sheave-load: {e}\n(sheave-load --help lists the flags)");
            return ExitCode::from(2);
        }
    };
    let report = match sheave_load::run(&config) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("sheave-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !config.quiet {
        print!("{}", report::table(&report));
    }
    let mut status = ExitCode::SUCCESS;
    let mut write = |what: &str, path: &std::path::Path, result: std::io::Result<()>| {
        if let Err(e) = result {
            eprintln!("sheave-load: writing {what} to {}: {e}", path.display());
            status = ExitCode::FAILURE;
        }
    };
    if let Some(path) = &config.json {
        write(
            "the JSON",
            path,
            std::fs::write(path, report::json(&report)),
        );
    }
    if let Some(path) = &config.hdr {
        write("the histogram", path, report::write_hdr(&report, path));
    }
    if let Some(path) = &config.plot {
        write("the plot", path, report::write_plot(&report, path));
    }
    status
}
