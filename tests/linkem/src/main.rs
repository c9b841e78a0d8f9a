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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use args::{Args, Parsed};
use line::Line;
use model::Link;
use packet::{Receiver, Sender};
use pump::{Pump, Reseed};
use stats::Stats;

static STOP: AtomicBool = AtomicBool::new(false);
/// SIGUSR1s received; the main thread reads the seed file for each.
static RESEED_ASKED: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGUSR1 {
        RESEED_ASKED.fetch_add(1, Ordering::Relaxed);
    } else {
        STOP.store(true, Ordering::Relaxed);
    }
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1] {
        // SAFETY: the handler only touches atomics, which is
        // async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// The seed in `path`, for a SIGUSR1; a bad file is reported and ignored.
fn read_seed(path: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| eprintln!("linkem: --seed-file {}: {e}", path.display()))
        .ok()?;
    text.trim()
        .parse()
        .map_err(|_| {
            eprintln!(
                "linkem: --seed-file {}: `{}` is not an integer",
                path.display(),
                text.trim()
            )
        })
        .ok()
}

const RCVBUF: usize = 8 << 20;

fn pump<'a>(
    from: i32,
    to: i32,
    spec: spec::Spec,
    salt: u64,
    args: &Args,
    stats: &'a Stats,
    reseed: &'a Reseed,
) -> std::io::Result<Pump<'a>> {
    Ok(Pump {
        rx: Receiver::open(from, RCVBUF)?,
        tx: Sender::open(to)?,
        link: Link::new(spec, args.seed ^ salt, pump::now_ns()),
        line: Line::new(args.max_frames),
        stats,
        realtime: args.realtime,
        reseed,
        salt,
    })
}

fn run(args: Args) -> Result<(), String> {
    let ia = packet::ifindex(&args.a).map_err(|e| e.to_string())?;
    let ib = packet::ifindex(&args.b).map_err(|e| e.to_string())?;
    let (sab, sba) = (Stats::default(), Stats::default());
    let reseed = Reseed::default();
    // Different streams per direction, both fixed by the seed.
    let ab = pump(ia, ib, args.ab, 0, &args, &sab, &reseed)
        .map_err(|e| format!("{} -> {}: {e}", args.a, args.b))?;
    let ba = pump(ib, ia, args.ba, 0x5EED_0000_0000_0001, &args, &sba, &reseed)
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
        let mut reseeds = 0;
        while !STOP.load(Ordering::Relaxed) {
            let asked = RESEED_ASKED.load(Ordering::Relaxed);
            if asked != reseeds {
                reseeds = asked;
                if let Some(seed) = args.seed_file.as_deref().and_then(read_seed) {
                    reseed.publish(seed);
                }
            }
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
