//! The fuzz targets' bodies, shared by the cargo-fuzz crate (tests/fuzz/,
//! by hand, nightly) and the stable harness that `cargo test` runs
//! (tests/fuzz.rs). Each takes arbitrary bytes and must not panic, hang or
//! grow without bound; each asserts the invariants it can check cheaply.
//!
//! The inputs of the stateful targets (admission, nfqueue, snoop) are a
//! sequence of records `[control byte][length: u16 BE][bytes]`, so one
//! input drives an engine through many packets and timer wake-ups.

#![allow(dead_code)]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::time::{Duration, Instant};

use pepwrt::admission::{self, Decision};
use pepwrt::config::{self, Command, Config, SnoopConfig, Target};
use pepwrt::pool::Pool;
use pepwrt::snoop::{self, Snoop};
use pepwrt::wire::{self, tcp};

/// Every target, by the name its corpus directory and cargo-fuzz binary use.
/// A target's name and body.
pub type FuzzTarget = (&'static str, fn(&[u8]));

pub const TARGETS: &[FuzzTarget] = &[
    ("wire_ip", wire_ip),
    ("wire_tcp", wire_tcp),
    ("admission", admission),
    ("nfqueue", nfqueue),
    ("snoop", snoop),
    ("config", config),
    ("control", control),
];

/// Splits an input into records: (control byte, packet bytes). A short
/// last record takes what is left.
pub fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&ctl, rest) = data.split_first()?;
        let len = match rest {
            [a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])),
            _ => rest.len(),
        };
        let rest = rest.get(2..).unwrap_or(&[]);
        let len = len.min(rest.len());
        let (pkt, tail) = rest.split_at(len);
        data = tail;
        Some((ctl, pkt))
    })
}

/// IPv4 and IPv6 headers.
pub fn wire_ip(data: &[u8]) {
    if let Ok(ip) = wire::ip::parse(data) {
        assert!(ip.l4_offset <= data.len(), "TCP header starts past the end");
        assert_eq!(ip.src.is_ipv4(), ip.dst.is_ipv4());
    }
}

/// A whole TCP packet: every accessor, every option, SYN options.
pub fn wire_tcp(data: &[u8]) {
    let Ok((_, seg)) = wire::parse_tcp(data) else {
        return;
    };
    let _ = (seg.src_port(), seg.dst_port(), seg.seq(), seg.ack());
    let _ = (seg.flags(), seg.window(), seg.has(tcp::flags::SYN));
    assert!(seg.header_len() >= 20 && seg.header_len() <= data.len());
    // The options area is at most 40 bytes: an iterator that does not
    // shrink it on every item would loop here.
    let mut items = 0;
    for opt in seg.options() {
        items += 1;
        assert!(items <= 40, "options iterator does not advance");
        if let Ok(tcp::TcpOption::Sack(edges)) = opt {
            assert!(tcp::sack_blocks(edges).count() <= 5);
        }
    }
    let _ = tcp::SynOptions::parse(&seg);
}

fn config_for(variant: u8) -> Config {
    let mut args = vec!["run"];
    if variant & 1 != 0 {
        args.extend(["--no-ipv6"]);
    }
    if variant & 2 != 0 {
        args.extend(["--exclude-port", "22", "--exclude-port", "443"]);
    }
    if variant & 4 != 0 {
        args.extend(["--mark", "256"]);
    }
    let system = config::System::default();
    config::parse(args, &system)
        .unwrap_or_else(|_| config::parse(["run"], &system).expect("run parses"))
}

/// SYN admission over a small pool, with time passing and reservations
/// expiring: the decision for a SYN repeated at once must not change, and
/// a split SYN repeated finds its reservation (passed SYNs never come
/// back: conntrack's mark keeps their decision, see rules.rs).
pub fn admission(data: &[u8]) {
    let Some((&variant, data)) = data.split_first() else {
        return;
    };
    let cfg = config_for(variant);
    let mut pool = Pool::<()>::new(4, 64);
    let mut now = Instant::now();
    for (ctl, pkt) in records(data) {
        now += Duration::from_millis(u64::from(ctl) * 40);
        if ctl == 0xff {
            pool.expire_reservations(now);
        }
        let first = admission::decide(&cfg, &mut pool, pkt, now);
        let again = admission::decide(&cfg, &mut pool, pkt, now);
        assert_eq!(
            first.decision, again.decision,
            "a retransmitted SYN changed its fate"
        );
        if first.decision == Decision::Split {
            assert!(again.repeat, "a retransmitted SYN was counted twice");
        }
        let parsed = wire::parse_tcp(pkt).is_ok();
        assert!(parsed || first.decision == Decision::Malformed);
    }
}

/// What the daemon does with one queued message: its payload through
/// admission, the verdict's mark (pepwrt's bits only), and through Snoop
/// with the message's interface indexes.
pub fn nfqueue(data: &[u8]) {
    let [m0, m1, m2, m3, i0, o0, variant, payload @ ..] = data else {
        return;
    };
    let old_mark = u32::from_be_bytes([*m0, *m1, *m2, *m3]);
    let cfg = config_for(*variant);
    let mut pool = Pool::<()>::new(2, 64);
    let verdict = admission::decide(&cfg, &mut pool, payload, Instant::now());
    let mark = admission::mark_for(&cfg, verdict.decision, old_mark);
    assert_eq!(
        (mark ^ old_mark) & !cfg.mark_mask(),
        0,
        "the verdict changed mark bits pepwrt does not own"
    );
    assert_ne!(
        mark & cfg.decided_mark(),
        0,
        "a decided SYN must carry the decided bit"
    );
    if let Ok(mut sn) = Snoop::new(&snoop_config()) {
        let (indev, outdev) = (u32::from(*i0), u32::from(*o0));
        let _ = sn.on_packet(payload, indev, outdev, Instant::now(), &mut Sink(0));
    }
}

pub fn snoop_config() -> SnoopConfig {
    SnoopConfig {
        targets: vec![
            Target::Subnet("198.18.0.0".parse().expect("v4"), 24),
            Target::Subnet("fd00::".parse().expect("v6"), 64),
        ],
        queue: 1,
        flows: 8,
        cache_bytes: 32 * 1024,
    }
}

/// Counts Snoop's local retransmissions; each must be a packet it could
/// parse when it cached it.
struct Sink(usize);

impl snoop::Transmit for Sink {
    fn send(&mut self, pkt: &[u8]) -> bool {
        assert!(
            wire::parse_tcp(pkt).is_ok(),
            "Snoop sent a packet it cannot parse"
        );
        self.0 += 1;
        !self.0.is_multiple_of(7)
    }
}

/// Snoop's segment and ACK handling with its timers: the control byte
/// advances the clock in 8 ms steps; the targets are subnets, so a
/// packet's addresses give its direction.
pub fn snoop(data: &[u8]) {
    let _ = snoop_run(data);
}

/// The Snoop target; returns the engine's status JSON at the end.
pub fn snoop_run(data: &[u8]) -> String {
    let Ok(mut sn) = Snoop::new(&snoop_config()) else {
        return String::new();
    };
    let mut tx = Sink(0);
    let mut now = Instant::now();
    for (ctl, pkt) in records(data) {
        now += Duration::from_millis(u64::from(ctl) * 8);
        if sn.next_deadline().is_some_and(|d| d <= now) {
            sn.on_timer(now, &mut tx);
        }
        let _ = sn.on_packet(pkt, 0, 0, now, &mut tx);
    }
    let mut out = String::new();
    sn.write_status_json(&mut out);
    let flows = json_u64(&out, "flows").unwrap_or(0);
    let used = json_u64(&out, "cache_bytes_used").unwrap_or(0);
    assert!(flows <= 8, "more flows than the table holds: {out}");
    assert!(used <= 32 * 1024, "cache over its size: {out}");
    out
}

fn json_u64(json: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let at = json.find(&pat)? + pat.len();
    let end = json[at..].find(|c: char| !c.is_ascii_digit())? + at;
    json[at..end].parse().ok()
}

/// The command line: arguments split at NUL bytes (any bytes, not only
/// UTF-8). A parsed `rules` command is rendered too.
pub fn config(data: &[u8]) {
    let args: Vec<OsString> = data
        .split(|&b| b == 0)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    if let Ok(cfg) = config::parse(args, &config::System::default()) {
        // pepwrt's three mark bits must be distinct single bits.
        let bits = [cfg.mark, cfg.decided_mark(), cfg.snoop_mark()];
        assert!(bits.iter().all(|b| b.is_power_of_two()), "marks {bits:x?}");
        assert_eq!(bits[0] | bits[1] | bits[2], cfg.mark * 7, "marks {bits:x?}");
        if let Command::Rules(req) = cfg.command {
            let _ = pepwrt::rules::render(&cfg, req);
        }
    }
}

/// The control socket's request line (the live sessions are fuzzed
/// against a running daemon in tests/fuzz.rs).
pub fn control(data: &[u8]) {
    let f = pepwrt::control::Format::parse(data);
    assert_eq!(
        f == pepwrt::control::Format::Json,
        data.starts_with(b"json"),
        "request {data:?} read as {f:?}"
    );
}
