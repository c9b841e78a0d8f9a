//! pepwrt: a transparent split-TCP performance enhancing proxy for routers.

mod config;
mod wire;
mod rules;

use std::process::ExitCode;

use config::Command;

fn main() -> ExitCode {
    let cfg = match config::parse(std::env::args_os().skip(1)) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("pepwrt: {e}");
            return ExitCode::from(2);
        }
    };
    match cfg.command {
        Command::Help => {
            print!("{}", config::HELP);
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("pepwrt {}", config::VERSION);
            ExitCode::SUCCESS
        }
        Command::Rules(req) => {
            print!("{}", rules::render(&cfg, req));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("pepwrt: not yet implemented");
            ExitCode::from(1)
        }
    }
}
