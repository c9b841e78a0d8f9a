//! pepwrt: a transparent split-TCP performance enhancing proxy for routers.

#![deny(unsafe_code)]

use std::process::ExitCode;

use pepwrt::config::{self, Command, Config};
use pepwrt::{check, control, event_loop, logger, rules, sys};

#[global_allocator]
static ALLOCATOR: sys::alloc_count::Counting = sys::alloc_count::Counting;

/// What the configuration depends on in this system (parsing does no I/O).
fn system() -> config::System {
    let tcp_wmem = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").unwrap_or_default();
    config::System::from_tcp_wmem(&tcp_wmem)
}

/// The memory the kernel has available, when it says.
fn mem_available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    check::mem_available_bytes(&meminfo)
}

fn main() -> ExitCode {
    let cfg = match config::parse(std::env::args_os().skip(1), &system()) {
        Ok(cfg) => cfg,
        Err(e) => {
            sys::say(&format!("pepwrt: {e}"));
            return ExitCode::from(2);
        }
    };
    match cfg.command {
        Command::Help(topic) => {
            sys::out(config::help::page(topic));
            ExitCode::SUCCESS
        }
        Command::Version => {
            sys::out(&format!("pepwrt {}\n", config::VERSION));
            ExitCode::SUCCESS
        }
        Command::Rules(req) => {
            // The script goes to a shell; the warning to the person.
            if !req.delete {
                for name in check::absent_interfaces(&cfg) {
                    sys::say(&format!(
                        "pepwrt: warning: interface {name} does not exist (yet)"
                    ));
                }
            }
            sys::out(&rules::render(&cfg, req));
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
                    sys::out(&report);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    sys::say(&format!("pepwrt: {e}"));
                    ExitCode::from(1)
                }
            }
        }
        Command::Check { backend } => check::report(&cfg, backend, mem_available()),
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
    if let Err(e) = check::preflight(&cfg, mem_available()) {
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
