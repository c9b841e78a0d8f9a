//! Fuzzing that runs in `cargo test` on stable: each target of
//! tests/fuzz/targets.rs replays the kept corpus (tests/fuzz/corpus/NAME)
//! and built-in seeds, then runs a fixed number of executions of inputs
//! from a small deterministic mutator. No panic, no hang (each execution is
//! timed), no unbounded growth (RSS printed, bounded generously).
//!
//! Longer runs by hand with cargo-fuzz: see tests/fuzz/README.md.
//! `PEPWRT_FUZZ_EXECS=N` sets the executions per target (default below).
//!
//! The control protocol's request line is a target too; its sessions are
//! fuzzed live: random requests, silent and vanishing clients against a
//! running pepwrt, which must keep answering.

mod common;
#[path = "fuzz/targets.rs"]
mod targets;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Executions per target in CI (a few seconds each in a debug build).
const DEFAULT_EXECS: u64 = 200_000;
/// One execution taking this long is a hang.
const HANG: Duration = Duration::from_secs(2);

/// xorshift64*: the same sequence on every run, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: &[u8] = &[
    0, 1, 2, 4, 5, 6, 8, 0x0f, 0x10, 0x20, 0x22, 0x40, 0x45, 0x60, 0x7f, 0x80, 0xff,
];

/// One mutated input from the corpus: a few stacked edits of one entry,
/// sometimes spliced with another, sometimes with a dictionary token.
fn mutate(rng: &mut Rng, corpus: &[Vec<u8>], dict: &[Vec<u8>], max_len: usize) -> Vec<u8> {
    let mut v = corpus[rng.below(corpus.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        let at = rng.below(len + 1);
        match rng.below(10) {
            0 if len > 0 => v[at.min(len - 1)] ^= 1 << rng.below(8),
            1 if len > 0 => v[at.min(len - 1)] = rng.next() as u8,
            2 if len > 0 => v[at.min(len - 1)] = INTERESTING[rng.below(INTERESTING.len())],
            3 => {
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(at..at, bytes);
            }
            4 if len > 0 => {
                let end = (at + 1 + rng.below(16)).min(len);
                v.drain(at.min(len - 1)..end);
            }
            5 if len > 0 => {
                let from = rng.below(len);
                let end = (from + 1 + rng.below(32)).min(len);
                let piece = v[from..end].to_vec();
                v.splice(at..at, piece);
            }
            6 => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len() + 1);
                let tail = other[from..].to_vec();
                v.truncate(at);
                v.extend_from_slice(&tail);
            }
            7 if !dict.is_empty() => {
                let tok = dict[rng.below(dict.len())].clone();
                v.splice(at..at, tok);
            }
            8 => v.truncate(at),
            9 if len >= 2 => {
                // A 16-bit field (lengths, ports, MSS) set to an edge value.
                let at = at.min(len - 2);
                let val: u16 = [0, 1, 20, 40, 60, 0x7fff, 0xffff][rng.below(7)];
                v[at..at + 2].copy_from_slice(&val.to_be_bytes());
            }
            _ => {}
        }
    }
    v.truncate(max_len);
    v
}

fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(name)
}

fn kept_corpus(name: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir(name))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

fn vm_rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    common::json_number(
        &s.replace("VmRSS:", "\"VmRSS\":").replace([' ', '\t'], ""),
        "VmRSS",
    )
    .unwrap_or(0)
}

fn execs() -> u64 {
    std::env::var("PEPWRT_FUZZ_EXECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_EXECS)
}

/// Replays the corpus, then runs the mutator; prints what it did.
fn fuzz(name: &str, target: fn(&[u8]), seeds: Vec<Vec<u8>>, dict: Vec<Vec<u8>>, max_len: usize) {
    let mut corpus = kept_corpus(name);
    let kept = corpus.len();
    corpus.extend(seeds);
    corpus.push(Vec::new());
    let started = Instant::now();
    let rss_before = vm_rss_kb();
    let mut slowest = Duration::ZERO;
    let mut run = |input: &[u8]| {
        let t = Instant::now();
        target(input);
        let took = t.elapsed();
        slowest = slowest.max(took);
        assert!(
            took < HANG,
            "{name}: one execution took {took:?}: {input:02x?}"
        );
    };
    for input in &corpus {
        run(input);
    }
    let mut rng = Rng(0x5eed ^ (name.len() as u64 * 0x9e37_79b9));
    let n = execs();
    for _ in 0..n {
        let input = mutate(&mut rng, &corpus, &dict, max_len);
        run(&input);
    }
    let rss_after = vm_rss_kb();
    eprintln!(
        "fuzz {name}: {} corpus inputs ({kept} kept), {n} mutated executions in {:.1} s, slowest {:?}, RSS {rss_before} -> {rss_after} kB",
        corpus.len(),
        started.elapsed().as_secs_f64(),
        slowest
    );
    // Tests run side by side in this process, so RSS is only a coarse
    // guard against a target that keeps what it is given.
    assert!(
        rss_after < rss_before + 256 * 1024,
        "{name}: RSS grew {rss_before} -> {rss_after} kB"
    );
}

/// Packets to start from: real-looking TCP over IPv4 and IPv6.
mod pkt {
    pub const SYN: u8 = 0x02;
    pub const ACK: u8 = 0x10;
    pub const PSH: u8 = 0x08;
    pub const FIN: u8 = 0x01;
    pub const RST: u8 = 0x04;

    pub struct Tcp<'a> {
        pub v6: bool,
        pub from_client: bool,
        pub seq: u32,
        pub ack: u32,
        pub flags: u8,
        pub opts: &'a [u8],
        pub payload: &'a [u8],
    }

    pub fn build(t: &Tcp<'_>) -> Vec<u8> {
        let mut opts = t.opts.to_vec();
        while !opts.len().is_multiple_of(4) {
            opts.push(1);
        }
        let (sport, dport) = if t.from_client {
            (40000u16, 80u16)
        } else {
            (80, 40000)
        };
        let mut tcp = Vec::new();
        tcp.extend_from_slice(&sport.to_be_bytes());
        tcp.extend_from_slice(&dport.to_be_bytes());
        tcp.extend_from_slice(&t.seq.to_be_bytes());
        tcp.extend_from_slice(&t.ack.to_be_bytes());
        tcp.push((((20 + opts.len()) / 4) << 4) as u8);
        tcp.push(t.flags);
        tcp.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        tcp.extend_from_slice(&opts);
        tcp.extend_from_slice(t.payload);
        let (c4, s4) = ([198, 18, 0, 2], [198, 18, 1, 2]);
        let mut c6 = [0u8; 16];
        c6[0] = 0xfd;
        c6[15] = 2;
        let mut s6 = c6;
        s6[3] = 1;
        let mut p = Vec::new();
        if t.v6 {
            let (src, dst) = if t.from_client { (c6, s6) } else { (s6, c6) };
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
            p.extend_from_slice(&[6, 64]);
            p.extend_from_slice(&src);
            p.extend_from_slice(&dst);
        } else {
            let (src, dst) = if t.from_client { (c4, s4) } else { (s4, c4) };
            p.extend_from_slice(&[0x45, 0]);
            p.extend_from_slice(&(20 + tcp.len() as u16).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
            p.extend_from_slice(&src);
            p.extend_from_slice(&dst);
        }
        p.extend_from_slice(&tcp);
        p
    }

    /// MSS, SACK-permitted, timestamps, window scale: what Linux sends.
    pub const SYN_OPTS: &[u8] = &[
        2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
    ];

    pub fn syn(v6: bool, opts: &[u8]) -> Vec<u8> {
        build(&Tcp {
            v6,
            from_client: true,
            seq: 1000,
            ack: 0,
            flags: SYN,
            opts,
            payload: &[],
        })
    }

    /// One record of the stateful targets' input format.
    pub fn record(ctl: u8, p: &[u8]) -> Vec<u8> {
        let mut r = vec![ctl];
        r.extend_from_slice(&(p.len() as u16).to_be_bytes());
        r.extend_from_slice(p);
        r
    }
}

fn tcp_seeds() -> Vec<Vec<u8>> {
    use pkt::*;
    let mut out = Vec::new();
    for v6 in [false, true] {
        out.push(syn(v6, SYN_OPTS));
        out.push(syn(v6, &[2, 4, 0, 10]));
        out.push(syn(
            v6,
            &[19, 18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ));
        out.push(syn(v6, &[34, 10, 1, 2, 3, 4, 5, 6, 7, 8]));
        out.push(build(&Tcp {
            v6,
            from_client: false,
            seq: 5000,
            ack: 1001,
            flags: ACK | PSH,
            opts: &[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 1],
            payload: b"hello, world",
        }));
        out.push(build(&Tcp {
            v6,
            from_client: true,
            seq: 1001,
            ack: 5000,
            flags: ACK,
            opts: &[
                1, 1, 5, 18, 0, 0, 0x13, 0x88, 0, 0, 0x17, 0x70, 0, 0, 0x1f, 0x40, 0, 0, 0x23, 0x28,
            ],
            payload: &[],
        }));
        out.push(build(&Tcp {
            v6,
            from_client: true,
            seq: 1,
            ack: 0,
            flags: RST,
            opts: &[],
            payload: &[],
        }));
    }
    out
}

/// A handshake, data toward the wireless client, ACKs with a loss (dup
/// ACKs, SACK), a timeout and the close: Snoop's whole path.
fn flow_seed(v6: bool) -> Vec<u8> {
    use pkt::*;
    let mut s = Vec::new();
    let to_w = |ms: u8| (ms / 8) << 1;
    let from_w = |ms: u8| (ms / 8) << 1 | 1;
    s.extend(record(from_w(0), &syn(v6, SYN_OPTS)));
    s.extend(record(
        to_w(8),
        &build(&Tcp {
            v6,
            from_client: false,
            seq: 5000,
            ack: 1001,
            flags: SYN | ACK,
            opts: SYN_OPTS,
            payload: &[],
        }),
    ));
    s.extend(record(
        from_w(16),
        &build(&Tcp {
            v6,
            from_client: true,
            seq: 1001,
            ack: 5001,
            flags: ACK,
            opts: &[],
            payload: &[],
        }),
    ));
    let chunk = [0x55u8; 500];
    for i in 0..6u32 {
        s.extend(record(
            to_w(8),
            &build(&Tcp {
                v6,
                from_client: false,
                seq: 5001 + i * 500,
                ack: 1001,
                flags: ACK,
                opts: &[],
                payload: &chunk,
            }),
        ));
    }
    let ack = |a: u32, opts: &[u8]| {
        build(&Tcp {
            v6,
            from_client: true,
            seq: 1001,
            ack: a,
            flags: ACK,
            opts,
            payload: &[],
        })
    };
    s.extend(record(from_w(16), &ack(5501, &[])));
    let sack: &[u8] = &[1, 1, 5, 10, 0, 0, 0x17, 0x70, 0, 0, 0x1b, 0x58];
    for _ in 0..3 {
        s.extend(record(from_w(8), &ack(5501, sack)));
    }
    s.extend(record(to_w(248), &[]));
    s.extend(record(from_w(248), &ack(8001, &[])));
    s.extend(record(
        to_w(8),
        &build(&Tcp {
            v6,
            from_client: false,
            seq: 8001,
            ack: 1001,
            flags: FIN | ACK,
            opts: &[],
            payload: &[],
        }),
    ));
    s.extend(record(
        from_w(8),
        &build(&Tcp {
            v6,
            from_client: true,
            seq: 1001,
            ack: 8002,
            flags: FIN | ACK,
            opts: &[],
            payload: &[],
        }),
    ));
    s
}

fn admission_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for variant in 0..8u8 {
        let mut s = vec![variant];
        for (i, p) in tcp_seeds().iter().enumerate() {
            s.extend(pkt::record(if i == 5 { 0xff } else { 3 }, p));
        }
        out.push(s);
    }
    out
}

fn nfqueue_seeds() -> Vec<Vec<u8>> {
    tcp_seeds()
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let mut s = vec![0, 0, 0x10, 0, 2, 3, i as u8];
            s.extend(p);
            s
        })
        .collect()
}

fn option_dict() -> Vec<Vec<u8>> {
    vec![
        vec![2, 4, 5, 0xb4],
        vec![3, 3, 14],
        vec![4, 2],
        vec![5, 10, 0, 0, 0, 1, 0, 0, 0, 2],
        vec![8, 10, 0, 0, 0, 1, 0, 0, 0, 0],
        vec![19, 18],
        vec![29, 4, 0, 0],
        vec![34, 2],
        vec![0],
        vec![1],
        vec![0x45, 0],
        vec![0x60, 0, 0, 0],
    ]
}

/// Command lines to start from (spaces become the NULs between arguments).
const COMMAND_LINES: &[&str] = &[
    "run",
    "run --foreground --log-level debug --max-conns 128 --buffer 16k",
    "run --intercept br-lan --intercept 198.18.0.0/15 --no-ipv6",
    "run --snoop wlan0 --snoop-flows 64 --snoop-cache 1m",
    "run --outgoing-source client --server-fastopen --exclude-port 22",
    "rules --backend iptables --intercept br-lan",
    "rules --backend nft --part firewall --intercept fd00::/8 --mark 256",
    "rules --delete --backend iptables --intercept eth0 --table 3135",
    "status --json --control /tmp/x.sock",
    "check",
    "help",
    "--version",
];

fn command_lines() -> Vec<Vec<u8>> {
    COMMAND_LINES
        .iter()
        .map(|s| s.replace(' ', "\x00").into_bytes())
        .collect()
}

fn config_dict() -> Vec<Vec<u8>> {
    let mut dict: Vec<Vec<u8>> = pepwrt::config::help::RUN
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| format!("\0{w}\0").into_bytes())
        .collect();
    for v in [
        "0",
        "1",
        "-1",
        "65535",
        "65536",
        "0x10000",
        "4294967296",
        "1k",
        "16m",
        "99999999999999999999g",
        "",
        "198.18.0.0/15",
        "fd00::/8",
        "::/0",
        "198.18.0.1/33",
        "br-lan",
        "iptables",
        "nft",
        "client",
        "router",
        "run",
        "rules",
        "status",
        "check",
        "\u{e9}",
        "\u{0}",
    ] {
        dict.push(format!("\0{v}").into_bytes());
    }
    dict.push(vec![0, 0xff, 0xfe]);
    dict
}

#[test]
fn fuzz_wire_ip() {
    fuzz("wire_ip", targets::wire_ip, tcp_seeds(), option_dict(), 128);
}

#[test]
fn fuzz_wire_tcp() {
    fuzz(
        "wire_tcp",
        targets::wire_tcp,
        tcp_seeds(),
        option_dict(),
        256,
    );
}

#[test]
fn fuzz_admission() {
    fuzz(
        "admission",
        targets::admission,
        admission_seeds(),
        option_dict(),
        2048,
    );
}

#[test]
fn fuzz_nfqueue() {
    fuzz(
        "nfqueue",
        targets::nfqueue,
        nfqueue_seeds(),
        option_dict(),
        256,
    );
}

/// The Snoop seeds reach the engine's real work (else its fuzzing only
/// exercises the parser).
#[test]
fn snoop_seeds_cache_segments_and_answer_dup_acks() {
    for v6 in [false, true] {
        let st = targets::snoop_run(&flow_seed(v6));
        let n = |k| common::json_number(&st, k).unwrap_or(0);
        assert!(n("flows_total") >= 1 && n("segments_cached") >= 5, "{st}");
        assert!(
            n("local_retransmits_dupack")
                + n("local_retransmits_timeout")
                + n("dupacks_suppressed")
                >= 1,
            "{st}"
        );
    }
}

#[test]
fn fuzz_snoop() {
    let seeds = vec![flow_seed(false), flow_seed(true)];
    fuzz("snoop", targets::snoop, seeds, option_dict(), 8192);
}

#[test]
fn fuzz_config() {
    fuzz(
        "config",
        targets::config,
        command_lines(),
        config_dict(),
        512,
    );
}

fn control_seeds() -> Vec<Vec<u8>> {
    [
        &b"json\n"[..],
        b"text\n",
        b"json",
        b"jso",
        b"JSON\n",
        b"\0json",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect()
}

#[test]
fn fuzz_control_request() {
    fuzz(
        "control",
        targets::control,
        control_seeds(),
        vec![b"json".to_vec(), b"text".to_vec()],
        64,
    );
}

/// Writes the built-in seeds into the kept corpus (run by hand after
/// changing them): `cargo test --test fuzz write_seed_corpus -- --ignored`.
#[test]
#[ignore]
fn write_seed_corpus() {
    let all: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("wire_ip", tcp_seeds()),
        ("wire_tcp", tcp_seeds()),
        ("admission", admission_seeds()),
        ("nfqueue", nfqueue_seeds()),
        ("snoop", vec![flow_seed(false), flow_seed(true)]),
        ("config", command_lines()),
        ("control", control_seeds()),
    ];
    for (name, seeds) in all {
        let dir = corpus_dir(name);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), s).expect("write seed");
        }
    }
}

/// Every target has a corpus directory and a cargo-fuzz binary.
#[test]
fn every_target_has_a_corpus_and_a_cargo_fuzz_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    for (name, _) in targets::TARGETS {
        assert!(corpus_dir(name).is_dir(), "no corpus for {name}");
        let bin = root.join("fuzz_targets").join(format!("{name}.rs"));
        assert!(bin.is_file(), "no cargo-fuzz target {}", bin.display());
    }
}

/// Random requests on the control socket of a running pepwrt: garbage,
/// huge writes, silent clients, clients that leave without reading. It
/// must keep answering well-formed requests with a whole report.
#[test]
fn fuzz_control_socket_live() {
    let mut tb = common::testbed!();
    tb.install_rules("iptables", &[]);
    tb.start_pepwrt(&["--max-conns", "32"]);
    let path = tb.control.clone();
    let mut rng = Rng(0xc0de);
    let words: &[&[u8]] = &[
        b"json",
        b"json\n",
        b"text\n",
        b"jso",
        b"JSON\n",
        b"\0",
        b"json\njson\n",
        b"",
    ];
    let n = 300;
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    // A few clients that connect and stay silent, held across requests.
    let mut silent: Vec<UnixStream> = Vec::new();
    for i in 0..n {
        let Ok(mut s) = UnixStream::connect(&path) else {
            panic!("connect {i} failed; log: {}", tb.log());
        };
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.set_write_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let mut req = words[rng.below(words.len())].to_vec();
        for _ in 0..rng.below(3) {
            let at = rng.below(req.len() + 1);
            req.insert(at, rng.next() as u8);
        }
        match rng.below(8) {
            // Silent: connect and leave, or stay (the daemon must not
            // wait long for either).
            0 => {
                if silent.len() < 4 {
                    silent.push(s);
                } else {
                    silent.clear();
                }
            }
            // Vanish after writing, never reading.
            1 => {
                let _ = s.write_all(&req);
                drop(s);
            }
            // A large request (more than the daemon reads).
            2 => {
                let big: Vec<u8> = (0..64 * 1024).map(|_| rng.next() as u8).collect();
                let _ = s.write_all(&big);
            }
            // Ask, then read the whole answer.
            _ => {
                let t = Instant::now();
                let _ = s.write_all(&req);
                let _ = s.shutdown(std::net::Shutdown::Write);
                let mut out = String::new();
                let r = s.read_to_string(&mut out);
                slowest = slowest.max(t.elapsed());
                if req.starts_with(b"json") && r.is_ok() {
                    assert!(
                        out.starts_with('{') && out.trim_end().ends_with('}'),
                        "request {i} {req:?}: not a whole JSON report: {out:?}"
                    );
                }
            }
        }
    }
    let st = tb.status();
    assert!(st.contains("\"counters\""), "{st}");
    eprintln!(
        "fuzz control: {n} requests in {:.1} s, slowest answered request {:?}",
        started.elapsed().as_secs_f64(),
        slowest
    );
}
