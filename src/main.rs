//! pepwrt: a transparent split-TCP performance enhancing proxy for routers.

#![deny(unsafe_code)]

use std::process::ExitCode;

use pepwrt::config::{self, Command, Config};
use pepwrt::{check, control, event_loop, logger, rules, sys};

#[global_allocator]
static ALLOCATOR: sys::alloc_count::Counting = sys::alloc_count::Counting;

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
        Command::Status { json } => {
            let format = if json {
                control::Format::Json
            } else {
                control::Format::Text
            };
            match control::query_status(&cfg.control_path, format) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pepwrt: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Check => check::report(&cfg),
        Command::Run => run(cfg),
    }
}

fn run(cfg: Config) -> ExitCode {
    let user = cfg.user.clone();
    logger::init(cfg.foreground, cfg.log_level);
    let fail = |message: &str, code: u8| {
        logger::fatal(message);
        ExitCode::from(code)
    };
    if let Err(e) = check::preflight(&cfg) {
        return fail(&e.message, e.exit_code);
    }
    let mut proxy = match event_loop::Proxy::start(cfg) {
        Ok(p) => p,
        Err(e) => return fail(&e.message, e.exit_code),
    };
    if let Some(user) = &user {
        if let Err(e) = sys::privileges::drop_to(user) {
            return fail(&e.to_string(), 1);
        }
        log::info!("running as {user} with CAP_NET_ADMIN and CAP_NET_RAW only");
    }
    match proxy.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("event loop failed: {e}"), 1),
    }
}
