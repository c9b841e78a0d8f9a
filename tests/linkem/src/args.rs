//! Command line: two interfaces and one link description per direction.

use crate::spec::Spec;

pub const HELP: &str = "\
linkem - link emulator for pepwrt tests (never shipped)

Bridges two interfaces like a wire, frame by frame (AF_PACKET), and on
each direction applies rate, delay, jitter, random and bursty loss, a
drop-tail queue and scheduled delay steps/outages. Run it in its own
network namespace between two veths with offloads off (ethtool -K DEV
tso off gso off gro off tx off on the veth peers), so frames stay
MTU-sized and carry real checksums.

USAGE:
    linkem --a IFACE --b IFACE [--ab SPEC] [--ba SPEC] [--both SPEC]
           [--seed N] [--seed-file PATH] [--max-frames N]
           [--duration SECONDS] [--no-realtime]

OPTIONS:
    --a IFACE, --b IFACE  the two interfaces bridged
    --ab SPEC             frames read on A and sent out of B
    --ba SPEC             frames read on B and sent out of A
    --both SPEC           the same SPEC for both directions
    --seed N              random seed (default 1); same seed, same losses
    --seed-file PATH      on SIGUSR1, read a seed from PATH and restart
                          both directions' random streams from it: a
                          benchmark gives run k of every setup the same
                          losses, so setups are compared on equal terms
    --max-frames N        frames in flight per direction (default 8192,
                          2 KiB each: the memory bound)
    --duration SECONDS    exit after this long (default: until SIGTERM)
    --no-realtime         keep normal scheduling (by default the two
                          pump threads ask for SCHED_FIFO so a busy host
                          does not add jitter)
    -h, --help            this text

SPEC is a comma-separated list of key=value (all optional):
    rate=50mbit      serialization rate (bit, kbit, mbit, gbit; 0 = none)
    delay=300ms      one-way delay (ns, us, ms, s)
    jitter=5ms       uniform +-jitter added to delay; never reorders
    loss=0.1%        independent loss per frame (or a fraction: 0.001)
    ge=1%/25%/50%[/0%]  Gilbert-Elliott bursty loss: P(good->bad),
                     P(bad->good), loss in bad state[, loss in good]
    limit=1m         drop-tail queue limit, bytes waiting to serialize
                     (k, m; default 1m; only with a rate)
    period=15s       scheduled events every period:
    step=60ms          extra delay, on in every other period
    outage=100ms       link down (frames dropped) at each boundary
                     Periods count from a multiple of 2 x period on
                     CLOCK_MONOTONIC, so runs can start at a known phase.

On exit (SIGINT/SIGTERM/--duration) prints one JSON line of counters
per direction on stdout. Prints `ready` on stdout once bridging.
";

pub struct Args {
    pub a: String,
    pub b: String,
    pub ab: Spec,
    pub ba: Spec,
    pub seed: u64,
    pub seed_file: Option<std::path::PathBuf>,
    pub max_frames: usize,
    pub duration_s: Option<f64>,
    pub realtime: bool,
}

pub enum Parsed {
    Run(Box<Args>),
    Help,
}

pub fn parse(mut argv: impl Iterator<Item = String>) -> Result<Parsed, String> {
    let (mut a, mut b) = (None, None);
    let mut args = Args {
        a: String::new(),
        b: String::new(),
        ab: Spec::default(),
        ba: Spec::default(),
        seed: 1,
        seed_file: None,
        max_frames: 8192,
        duration_s: None,
        realtime: true,
    };
    while let Some(flag) = argv.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(Parsed::Help);
        }
        if flag == "--no-realtime" {
            args.realtime = false;
            continue;
        }
        let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |what: &str| {
            value
                .parse::<f64>()
                .map_err(|_| format!("{flag}: `{value}` is not {what}"))
        };
        match flag.as_str() {
            "--a" => a = Some(value),
            "--b" => b = Some(value),
            "--ab" => args.ab = Spec::parse(&value).map_err(|e| format!("--ab: {e}"))?,
            "--ba" => args.ba = Spec::parse(&value).map_err(|e| format!("--ba: {e}"))?,
            "--both" => {
                args.ab = Spec::parse(&value).map_err(|e| format!("--both: {e}"))?;
                args.ba = args.ab;
            }
            "--seed" => {
                args.seed = value
                    .parse()
                    .map_err(|_| format!("--seed: `{value}` is not an integer"))?
            }
            "--seed-file" => args.seed_file = Some(value.into()),
            "--max-frames" => args.max_frames = number("a count")?.max(1.0) as usize,
            "--duration" => args.duration_s = Some(number("a number of seconds")?),
            _ => return Err(format!("unknown option {flag} (see --help)")),
        }
    }
    args.a = a.ok_or("--a is required")?;
    args.b = b.ok_or("--b is required")?;
    Ok(Parsed::Run(Box::new(args)))
}
