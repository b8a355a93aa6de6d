//! `sheave-proxy --config proxy.toml`: runs the proxy a config describes, until `SIGTERM` or
//! `SIGINT`, then drains; `SIGHUP` reloads the file (see `Proxy::reload`), and with `--watch`
//! so does a change of the file (read every second; the same reload path). `--check`
//! validates the config and exits. Warnings and errors go to stderr.

use sheave_proxy::Proxy;
use sheave_proxy::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

/// Warnings and errors, one line each on stderr.
struct Stderr;

static STDERR: Stderr = Stderr;

impl log::Log for Stderr {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!("sheave-proxy: {}: {}", record.level(), record.args());
        }
    }

    fn flush(&self) {}
}

const USAGE: &str = "usage: sheave-proxy --config FILE [--watch] [--check]";

fn main() -> ExitCode {
    let mut config = None;
    let mut check = false;
    let mut watch = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => config = args.next().map(PathBuf::from),
            "--check" => check = true,
            "--watch" => watch = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("sheave-proxy: unknown argument {other:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(path) = config else {
        eprintln!("sheave-proxy: --config is required\n{USAGE}");
        return ExitCode::from(2);
    };
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("sheave-proxy: {}: refused: {e}", path.display());
            return ExitCode::from(1);
        }
    };
    if check {
        println!("{}: ok", path.display());
        return ExitCode::SUCCESS;
    }
    log::set_logger(&STDERR).expect("the only logger");
    log::set_max_level(log::LevelFilter::Warn);
    let started = match watch {
        true => Proxy::start_watching(config, path.clone(), std::time::Duration::from_secs(1)),
        false => Proxy::start_with_signals(config, Some(path.clone())),
    };
    match started {
        Ok(proxy) => {
            for (name, addr) in proxy.listeners() {
                println!("sheave-proxy: {name} listening on {addr}");
            }
            if let Some(addr) = proxy.admin_addr() {
                println!("sheave-proxy: admin listening on {addr}");
            }
            proxy.wait();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sheave-proxy: {e}");
            ExitCode::from(1)
        }
    }
}
