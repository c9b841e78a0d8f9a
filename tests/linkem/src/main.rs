//! linkem: a userspace link emulator for the pepwrt test bed. See
//! `linkem --help`; the kernel here has no netem, so this stands in.

mod args;
mod line;
mod model;
mod packet;
mod pump;
mod rng;
mod spec;
mod stats;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use args::{Args, Parsed};
use line::Line;
use model::Link;
use packet::{Receiver, Sender};
use pump::Pump;
use stats::Stats;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

const RCVBUF: usize = 8 << 20;

fn pump<'a>(
    from: i32,
    to: i32,
    spec: spec::Spec,
    seed: u64,
    args: &Args,
    stats: &'a Stats,
) -> std::io::Result<Pump<'a>> {
    Ok(Pump {
        rx: Receiver::open(from, RCVBUF)?,
        tx: Sender::open(to)?,
        link: Link::new(spec, seed, pump::now_ns()),
        line: Line::new(args.max_frames),
        stats,
        realtime: args.realtime,
    })
}

fn run(args: Args) -> Result<(), String> {
    let ia = packet::ifindex(&args.a).map_err(|e| e.to_string())?;
    let ib = packet::ifindex(&args.b).map_err(|e| e.to_string())?;
    let (sab, sba) = (Stats::default(), Stats::default());
    // Different streams per direction, both fixed by the seed.
    let ab = pump(ia, ib, args.ab, args.seed, &args, &sab)
        .map_err(|e| format!("{} -> {}: {e}", args.a, args.b))?;
    let ba = pump(
        ib,
        ia,
        args.ba,
        args.seed ^ 0x5EED_0000_0000_0001,
        &args,
        &sba,
    )
    .map_err(|e| format!("{} -> {}: {e}", args.b, args.a))?;
    install_signal_handlers();
    let deadline = args
        .duration_s
        .map(|s| Instant::now() + Duration::from_secs_f64(s));
    std::thread::scope(|scope| {
        scope.spawn(|| ab.run(&STOP));
        scope.spawn(|| ba.run(&STOP));
        println!("ready");
        let _ = std::io::stdout().flush();
        while !STOP.load(Ordering::Relaxed) {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                STOP.store(true, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    println!("{}", sab.json("ab"));
    println!("{}", sba.json("ba"));
    Ok(())
}

fn main() {
    let result = match args::parse(std::env::args().skip(1)) {
        Ok(Parsed::Help) => {
            print!("{}", args::HELP);
            return;
        }
        Ok(Parsed::Run(a)) => run(*a),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        eprintln!("linkem: {e}");
        std::process::exit(2);
    }
}
