//! Torture: thousands of transfers of every shape through pepwrt in
//! namespaces, every byte checked and every close of the kind expected.
//!
//! Shapes: 0 bytes to 4 MB each way, half-closes, both directions at
//! once, pauses, server-closes-first with the client reusing its source
//! ports, resets from either side mid-transfer, refusing and silent
//! servers, clients that vanish, lost SYN-ACKs (every other SYN-ACK from
//! port 7101 dropped in the server's namespace). Three phases: a pool
//! larger than the load, a pool far smaller (pool exhaustion: connections
//! pass unsplit), and outgoing legs with TCP fast open to a server that
//! issues cookies.
//!
//! CI runs `torture_short` (a few hundred transfers). The full run, 10,000
//! transfers (`PEPWRT_TORTURE_SEED=N` varies the mix,
//! `PEPWRT_TORTURE_PHASE=ample|small|fast` runs one phase):
//!
//!     cargo test --release --test torture -- --ignored --nocapture
//!
//! The client sends a 24-byte header (magic, shape, seed, lengths), so the
//! server knows what to expect and what to send; each side checks the
//! other's bytes against the same generator.

mod common;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const PORT: u16 = 7100;
/// Every other SYN-ACK from this port is dropped in the server namespace.
const PORT_SYNACK_LOSS: u16 = 7101;
/// The server namespace drops SYNs to this port.
const PORT_SILENT: u16 = 7198;
/// Nothing listens here.
const PORT_REFUSED: u16 = 7199;
/// The client namespace drops everything its sockets mark so.
const VANISH_MARK: u32 = 0x77;
const CONNECT_TIMEOUT_S: u64 = 8;
const IDLE_TIMEOUT_S: u64 = 5;
const OK_BYTE: u8 = 0x55;
const BAD_BYTE: u8 = 0xee;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Shape {
    /// Client sends, half-closes; server answers, closes.
    HalfClose,
    /// Both directions at once.
    Bidir,
    /// Each side pauses halfway (300 ms).
    Pause,
    /// The server closes first; the client reuses a few source ports.
    PortReuse,
    /// Like HalfClose, to the port whose every other SYN-ACK is lost.
    SynAckLoss,
    /// The server sends half, then resets.
    ServerReset,
    /// The client sends half, then resets.
    ClientReset,
    /// The client sends half, then its packets vanish (pepwrt's idle
    /// timeout must reset the server leg).
    Vanish,
    Refused,
    Silent,
}

impl Shape {
    const ALL: [Shape; 10] = [
        Shape::HalfClose,
        Shape::Bidir,
        Shape::Pause,
        Shape::PortReuse,
        Shape::SynAckLoss,
        Shape::ServerReset,
        Shape::ClientReset,
        Shape::Vanish,
        Shape::Refused,
        Shape::Silent,
    ];

    fn code(self) -> u8 {
        Shape::ALL.iter().position(|s| *s == self).unwrap_or(0) as u8
    }

    fn from_code(c: u8) -> Option<Shape> {
        Shape::ALL.get(usize::from(c)).copied()
    }

    fn port(self) -> u16 {
        match self {
            Shape::SynAckLoss => PORT_SYNACK_LOSS,
            Shape::Refused => PORT_REFUSED,
            Shape::Silent => PORT_SILENT,
            _ => PORT,
        }
    }

    /// Shapes that end with every byte delivered and a FIN.
    fn completes(self) -> bool {
        matches!(
            self,
            Shape::HalfClose | Shape::Bidir | Shape::Pause | Shape::PortReuse | Shape::SynAckLoss
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct Job {
    seed: u64,
    shape: Shape,
    up: usize,
    down: usize,
    v6: bool,
}

impl Job {
    fn up_seed(&self) -> u64 {
        self.seed * 2 + 1
    }
    fn down_seed(&self) -> u64 {
        self.seed * 2 + 2
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn upto(&mut self, n: usize) -> usize {
        (self.next() % (n as u64 + 1)) as usize
    }
}

/// 0 bytes to 4 MB: mostly small, some large.
fn size(rng: &mut Rng) -> usize {
    let r = rng.unit();
    if r < 0.05 {
        0
    } else if r < 0.30 {
        rng.upto(100)
    } else if r < 0.60 {
        rng.upto(16 << 10)
    } else if r < 0.85 {
        rng.upto(256 << 10)
    } else if r < 0.97 {
        rng.upto(1 << 20)
    } else {
        (1 << 20) + rng.upto(3 << 20)
    }
}

/// The mix; `pool_small` leaves out the shapes whose outcome depends on
/// whether the connection was split (vanish, silent).
fn jobs(seed: u64, n: usize, pool_small: bool) -> Vec<Job> {
    let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
    let weights: &[(Shape, u32)] = &[
        (Shape::HalfClose, 36),
        (Shape::Bidir, 16),
        (Shape::Pause, 3),
        (
            Shape::PortReuse,
            if std::env::var("XNOREUSE").is_ok() {
                0
            } else {
                16
            },
        ),
        (Shape::SynAckLoss, 7),
        (Shape::ServerReset, 6),
        (Shape::ClientReset, 6),
        (Shape::Vanish, if pool_small { 0 } else { 1 }),
        (Shape::Refused, 5),
        (Shape::Silent, if pool_small { 0 } else { 1 }),
    ];
    let total: u32 = weights.iter().map(|w| w.1).sum();
    let mut out: Vec<Job> = (0..n)
        .map(|i| {
            let mut pick = (rng.next() % u64::from(total)) as u32;
            let shape = weights
                .iter()
                .find(|(_, w)| {
                    if pick < *w {
                        true
                    } else {
                        pick -= w;
                        false
                    }
                })
                .map(|w| w.0)
                .unwrap_or(Shape::HalfClose);
            Job {
                seed: seed * 1_000_000 + i as u64,
                shape,
                up: size(&mut rng),
                down: size(&mut rng),
                v6: rng.unit() < 0.3,
            }
        })
        .collect();
    // Every shape at least once, even in a short run.
    for (i, s) in Shape::ALL.iter().enumerate() {
        if !out.iter().any(|j| j.shape == *s) && weights.iter().any(|w| w.0 == *s && w.1 > 0) {
            let at = (i * 7919) % n;
            out[at].shape = *s;
        }
    }
    out
}

fn header(job: &Job) -> [u8; 24] {
    let mut h = [0u8; 24];
    h[..4].copy_from_slice(b"PTRT");
    h[4] = job.shape.code();
    h[8..16].copy_from_slice(&job.seed.to_be_bytes());
    h[16..20].copy_from_slice(&(job.up as u32).to_be_bytes());
    h[20..24].copy_from_slice(&(job.down as u32).to_be_bytes());
    h
}

/// What the server saw of one connection.
#[derive(Debug, Clone)]
struct ServerSaw {
    shape: Shape,
    up_good: usize,
    mismatch_at: Option<usize>,
    /// How the client's side ended (None: all `up` bytes and, for shapes
    /// that half-close, the FIN right after).
    ending: Option<Ending>,
}

#[derive(Default)]
struct ServerLog {
    saw: HashMap<u64, ServerSaw>,
    /// Connections that ended before a whole header arrived.
    headerless: Vec<Ending>,
}

fn serve(mut s: TcpStream, log: Arc<Mutex<ServerLog>>) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(30)));
    let mut h = [0u8; 24];
    if let Err(e) = s.read_exact(&mut h) {
        let end = if e.kind() == ErrorKind::UnexpectedEof {
            Ending::Eof
        } else {
            Ending::of(&e)
        };
        log.lock().expect("log").headerless.push(end);
        return;
    }
    let shape = Shape::from_code(h[4]).filter(|_| &h[..4] == b"PTRT");
    let Some(shape) = shape else {
        log.lock()
            .expect("log")
            .headerless
            .push(Ending::Other(ErrorKind::InvalidData));
        return;
    };
    let be32 = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]) as usize;
    let seed = u64::from_be_bytes(h[8..16].try_into().expect("8 bytes"));
    let job = Job {
        seed,
        shape,
        up: be32(16),
        down: be32(20),
        v6: false,
    };
    let record = |r: &Received, ending: Option<Ending>| {
        log.lock().expect("log").saw.insert(
            seed,
            ServerSaw {
                shape,
                up_good: r.good,
                mismatch_at: r.mismatch_at,
                ending,
            },
        );
    };
    match shape {
        Shape::HalfClose | Shape::SynAckLoss | Shape::Pause => {
            let r = recv_pattern(&mut s, job.up_seed(), job.up);
            let ending = r.ending.or_else(|| {
                let (extra, end) = read_rest(&mut s);
                (!extra.is_empty() || end != Ending::Eof).then_some(end)
            });
            record(&r, ending);
            let pause = (shape == Shape::Pause).then_some(Duration::from_millis(300));
            let ok = r.good == job.up && ending.is_none();
            let _ = send_pattern(&mut s, job.down_seed(), job.down, pause)
                .and_then(|_| s.write_all(&[if ok { OK_BYTE } else { BAD_BYTE }]));
        }
        Shape::Bidir => {
            let writer = s.try_clone().map(|mut w| {
                thread::spawn(move || send_pattern(&mut w, job.down_seed(), job.down, None))
            });
            let r = recv_pattern(&mut s, job.up_seed(), job.up);
            let ending = r.ending.or_else(|| {
                let (extra, end) = read_rest(&mut s);
                (!extra.is_empty() || end != Ending::Eof).then_some(end)
            });
            record(&r, ending);
            let sent = writer
                .ok()
                .and_then(|w| w.join().ok())
                .is_some_and(|r| r.is_ok());
            let ok = r.good == job.up && ending.is_none() && sent;
            let _ = s.write_all(&[if ok { OK_BYTE } else { BAD_BYTE }]);
        }
        Shape::PortReuse => {
            let r = recv_pattern(&mut s, job.up_seed(), job.up);
            record(&r, r.ending);
            let ok = r.good == job.up && r.ending.is_none();
            let _ = send_pattern(&mut s, job.down_seed(), job.down, None)
                .and_then(|_| s.write_all(&[if ok { OK_BYTE } else { BAD_BYTE }]));
            // The server closes first; the client closes after its EOF.
            let _ = s.shutdown(Shutdown::Both);
        }
        Shape::ServerReset => {
            record(&recv_pattern(&mut s, 0, 0), None);
            let _ = send_pattern(&mut s, job.down_seed(), job.down / 2, None);
            // The reset follows every byte (the client checks that it got
            // them all); a fixed pause was too short for a busy machine.
            all_acked(&s, Duration::from_secs(10));
            set_linger0(&s);
        }
        Shape::ClientReset | Shape::Vanish => {
            // The client sends half and stops; what ends the stream is
            // the point (a reset, from the client or from pepwrt).
            let r = recv_pattern(&mut s, job.up_seed(), job.up);
            let ending = r.ending.or_else(|| Some(read_rest(&mut s).1));
            record(&r, ending);
        }
        Shape::Refused | Shape::Silent => {}
    }
}

/// Accepts on `port` (both IPv4 and IPv6) until stopped.
struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    ns: String,
    ports: Vec<u16>,
    log: Arc<Mutex<ServerLog>>,
}

impl Server {
    fn start(tb: &Testbed, ports: &[u16]) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(ServerLog::default()));
        let threads = ports
            .iter()
            .map(|&port| {
                let l: TcpListener = deep_listener(&tb.server, &format!("[::]:{port}"));
                // Cookies for pepwrt's fast-open phase.
                let qlen: libc::c_int = 64;
                // SAFETY: a valid fd, pointer and size.
                unsafe {
                    libc::setsockopt(
                        l.as_raw_fd(),
                        libc::IPPROTO_TCP,
                        libc::TCP_FASTOPEN,
                        (&raw const qlen).cast(),
                        4,
                    )
                };
                let (stop, log) = (stop.clone(), log.clone());
                thread::spawn(move || {
                    let mut handlers = Vec::new();
                    for conn in l.incoming() {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let Ok(s) = conn else { continue };
                        let log = log.clone();
                        handlers.push(thread::spawn(move || serve(s, log)));
                        if handlers.len() > 256 {
                            handlers.retain(|h| !h.is_finished());
                        }
                    }
                    for h in handlers {
                        let _ = h.join();
                    }
                })
            })
            .collect();
        Server {
            stop,
            threads,
            ns: tb.server.clone(),
            ports: ports.to_vec(),
            log,
        }
    }

    /// Stops accepting, waits for every handler, returns what they saw.
    fn finish(self) -> ServerLog {
        self.stop.store(true, Ordering::Relaxed);
        for &port in &self.ports {
            let _ = in_netns(&self.ns, move || {
                TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(5))
            })
            .join();
        }
        for t in self.threads {
            let _ = t.join();
        }
        std::mem::take(&mut *self.log.lock().expect("log"))
    }
}

/// What the client saw; `Err` is a failure to report.
type Outcome = Result<(), String>;

/// Per-worker source ports for PortReuse: four, cycled.
fn reuse_port(worker: usize, k: usize) -> u16 {
    50000 + (worker * 4 + k % 4) as u16
}

struct ClientStats {
    reuse_connects: Vec<Duration>,
    reuse_busy: usize,
}

fn run_client(job: &Job, worker: usize, k: usize, stats: &mut ClientStats) -> Outcome {
    let server = if job.v6 { SERVER6 } else { SERVER4 };
    let to: SocketAddr = format!("{}:{}", bracket(server), job.shape.port())
        .parse()
        .expect("addr");
    let t = Instant::now();
    let mut s = match job.shape {
        Shape::PortReuse => {
            let client = if job.v6 { CLIENT6 } else { CLIENT4 };
            let mut tries = 0;
            loop {
                let port = reuse_port(worker, k + tries);
                let local: SocketAddr = format!("{}:{port}", bracket(client)).parse().expect("a");
                match connect_from(Some(local), to) {
                    Ok(s) => break s,
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EADDRINUSE | libc::EADDRNOTAVAIL)
                        ) && tries < 8 =>
                    {
                        stats.reuse_busy += 1;
                        tries += 1;
                        thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(format!("connect from {local}: {e}")),
                }
            }
        }
        _ => match connect_from(None, to) {
            Ok(s) => s,
            // Split, the client's handshake completes with pepwrt and the
            // RST may come before connect() returns; passed, the server's
            // (or pepwrt's) RST refuses the connect.
            Err(e)
                if matches!(job.shape, Shape::Refused | Shape::Silent)
                    && matches!(
                        e.kind(),
                        ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset
                    ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(format!("connect: {e}")),
        },
    };
    if job.shape == Shape::PortReuse {
        stats.reuse_connects.push(t.elapsed());
    }
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let hdr = header(job);
    let expect_whole = |s: &mut TcpStream| -> Outcome {
        let r = recv_pattern(s, job.down_seed(), job.down);
        if let Some(at) = r.mismatch_at {
            return Err(format!("downstream byte {at} differs"));
        }
        if let Some(end) = r.ending {
            return Err(format!(
                "downstream ended by {end:?} after {} of {} bytes",
                r.good, job.down
            ));
        }
        match read_rest(s) {
            (rest, Ending::Eof) if rest == [OK_BYTE] => Ok(()),
            (rest, end) => Err(format!(
                "after the data: {rest:02x?} then {end:?} (0x55 then FIN expected)"
            )),
        }
    };
    match job.shape {
        Shape::HalfClose | Shape::SynAckLoss | Shape::Pause => {
            let pause = (job.shape == Shape::Pause).then_some(Duration::from_millis(300));
            s.write_all(&hdr)
                .and_then(|_| send_pattern(&mut s, job.up_seed(), job.up, pause))
                .and_then(|_| s.shutdown(Shutdown::Write))
                .map_err(|e| format!("sending: {e}"))?;
            expect_whole(&mut s)
        }
        Shape::Bidir => {
            let mut w = s.try_clone().map_err(|e| e.to_string())?;
            let (seed, up) = (job.up_seed(), job.up);
            let writer = thread::spawn(move || {
                w.write_all(&hdr)
                    .and_then(|_| send_pattern(&mut w, seed, up, None))
                    .and_then(|_| w.shutdown(Shutdown::Write))
            });
            let r = expect_whole(&mut s);
            let sent = writer.join().map_err(|_| "writer panicked".to_string())?;
            sent.map_err(|e| format!("sending: {e}"))?;
            r
        }
        Shape::PortReuse => {
            s.write_all(&hdr)
                .and_then(|_| send_pattern(&mut s, job.up_seed(), job.up, None))
                .map_err(|e| format!("sending: {e}"))?;
            expect_whole(&mut s)
        }
        Shape::ServerReset => {
            s.write_all(&hdr).map_err(|e| format!("sending: {e}"))?;
            let r = recv_pattern(&mut s, job.down_seed(), job.down);
            match (r.mismatch_at, r.ending) {
                (Some(at), _) => Err(format!("downstream byte {at} differs")),
                (None, Some(Ending::Reset)) if r.good == job.down / 2 => Ok(()),
                (None, Some(Ending::Reset)) => Err(format!(
                    "reset after {} bytes, {} were sent before it",
                    r.good,
                    job.down / 2
                )),
                // job.down / 2 == job.down only when both are 0.
                (None, None) if job.down == 0 => match read_rest(&mut s) {
                    (rest, Ending::Reset) if rest.is_empty() => Ok(()),
                    (rest, end) => Err(format!(
                        "{} extra bytes, then {end:?}, RST expected",
                        rest.len()
                    )),
                },
                (None, end) => Err(format!(
                    "{end:?} after {} bytes: the server's RST expected",
                    r.good
                )),
            }
        }
        Shape::ClientReset => {
            let _ = s
                .write_all(&hdr)
                .and_then(|_| send_pattern(&mut s, job.up_seed(), job.up / 2, None));
            thread::sleep(Duration::from_millis(100));
            set_linger0(&s);
            Ok(())
        }
        Shape::Vanish => {
            let _ = s
                .write_all(&hdr)
                .and_then(|_| send_pattern(&mut s, job.up_seed(), job.up / 2, None));
            thread::sleep(Duration::from_millis(100));
            // From now on every packet of this socket is dropped in the
            // client's namespace: its FIN and its retransmissions too.
            let mark = VANISH_MARK;
            // SAFETY: a valid fd, pointer and size.
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_MARK,
                    (&raw const mark).cast(),
                    4,
                )
            };
            Ok(())
        }
        Shape::Refused | Shape::Silent => match read_rest(&mut s) {
            (rest, Ending::Reset) if rest.is_empty() => Ok(()),
            (rest, end) => Err(format!("{} bytes then {end:?}: RST expected", rest.len())),
        },
    }
}

fn bracket(a: &str) -> String {
    if a.contains(':') {
        format!("[{a}]")
    } else {
        a.to_string()
    }
}

/// Runs `jobs` on `workers` client threads; the failures, one line each.
fn run_jobs(tb: &Testbed, jobs: &[Job], workers: usize) -> (Vec<String>, ClientStats) {
    let jobs = Arc::new(jobs.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let (jobs, next) = (jobs.clone(), next.clone());
            tb.in_client(move || {
                let mut fails = Vec::new();
                let mut stats = ClientStats {
                    reuse_connects: Vec::new(),
                    reuse_busy: 0,
                };
                let mut k = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    if let Err(e) = run_client(job, w, k, &mut stats) {
                        fails.push(format!(
                            "job {} {:?} up {} down {} v6 {}: {e}",
                            job.seed, job.shape, job.up, job.down, job.v6
                        ));
                    }
                    if job.shape == Shape::PortReuse {
                        k += 1;
                    }
                }
                (fails, stats)
            })
        })
        .collect();
    let mut fails = Vec::new();
    let mut stats = ClientStats {
        reuse_connects: Vec::new(),
        reuse_busy: 0,
    };
    for h in handles {
        let (f, s) = h.join().expect("client worker");
        fails.extend(f);
        stats.reuse_connects.extend(s.reuse_connects);
        stats.reuse_busy += s.reuse_busy;
    }
    (fails, stats)
}

/// The server's view of each job, against what its shape expects.
fn check_server_side(jobs: &[Job], log: &ServerLog, split_all: bool) -> Vec<String> {
    let mut fails = Vec::new();
    for job in jobs {
        let saw = log.saw.get(&job.seed);
        let fail = |m: String| {
            format!(
                "job {} {:?} up {} (server side): {m}",
                job.seed, job.shape, job.up
            )
        };
        match (job.shape, saw) {
            (Shape::Refused | Shape::Silent, None) => {}
            (Shape::Refused | Shape::Silent, Some(_)) => {
                fails.push(fail("reached the server".into()))
            }
            // A reset client may be gone before its header got through.
            (Shape::ClientReset, None) => {}
            (_, None) => fails.push(fail("never reached the server".into())),
            (_, Some(s)) if s.shape != job.shape => {
                fails.push(fail(format!("header said {:?}", s.shape)))
            }
            (
                _,
                Some(ServerSaw {
                    mismatch_at: Some(at),
                    ..
                }),
            ) => fails.push(fail(format!("upstream byte {at} differs"))),
            (shape, Some(s))
                if shape.completes() && (s.up_good != job.up || s.ending.is_some()) =>
            {
                fails.push(fail(format!(
                    "{} of {} bytes, then {:?}",
                    s.up_good, job.up, s.ending
                )));
            }
            (Shape::ClientReset, Some(s)) if s.ending != Some(Ending::Reset) => {
                fails.push(fail(format!(
                    "after {} bytes: {:?}, RST expected",
                    s.up_good, s.ending
                )));
            }
            (Shape::Vanish, Some(s)) => {
                // pepwrt's idle timeout resets the server leg; a passed
                // connection just stays silent until the server's timeout.
                let ok = s.ending == Some(Ending::Reset)
                    || (!split_all && s.ending == Some(Ending::Timeout));
                if !ok {
                    fails.push(fail(format!(
                        "after {} bytes: {:?}, RST expected",
                        s.up_good, s.ending
                    )));
                }
            }
            _ => {}
        }
    }
    for end in &log.headerless {
        if !matches!(end, Ending::Reset | Ending::Eof) {
            fails.push(format!(
                "a connection without a whole header ended by {end:?}"
            ));
        }
    }
    fails
}

fn firewall(tb: &Testbed) {
    // The server issues fast-open cookies; the router asks for them.
    exec_in(&tb.server, &["sysctl", "-qw", "net.ipv4.tcp_fastopen=3"]);
    tb.exec(&["sysctl", "-qw", "net.ipv4.tcp_fastopen=1"]);
    for ipt in ["iptables", "ip6tables"] {
        let p = PORT_SYNACK_LOSS.to_string();
        exec_in(
            &tb.server,
            &[
                ipt,
                "-A",
                "OUTPUT",
                "!",
                "-o",
                "lo",
                "-p",
                "tcp",
                "--sport",
                &p,
                "--tcp-flags",
                "SYN,ACK",
                "SYN,ACK",
                "-m",
                "statistic",
                "--mode",
                "nth",
                "--every",
                "2",
                "--packet",
                "0",
                "-j",
                "DROP",
            ],
        );
        let p = PORT_SILENT.to_string();
        exec_in(
            &tb.server,
            &[ipt, "-A", "INPUT", "-p", "tcp", "--dport", &p, "-j", "DROP"],
        );
        let m = VANISH_MARK.to_string();
        exec_in(
            &tb.client,
            &[
                ipt, "-A", "OUTPUT", "-m", "mark", "--mark", &m, "-j", "DROP",
            ],
        );
    }
}

struct Phase<'a> {
    name: &'a str,
    max_conns: u16,
    workers: usize,
    jobs: usize,
    flags: &'a [&'a str],
}

/// One pepwrt, one batch of jobs; returns how many transfers were checked.
fn phase(tb: &mut Testbed, seed: u64, p: &Phase<'_>) -> (usize, Vec<String>) {
    let started = Instant::now();
    let small = usize::from(p.max_conns) < p.workers;
    let max = p.max_conns.to_string();
    let (ct, it) = (CONNECT_TIMEOUT_S.to_string(), IDLE_TIMEOUT_S.to_string());
    let mut flags = vec![
        "--log-level",
        "info",
        "--max-conns",
        &max,
        "--buffer",
        "16k",
        "--connect-timeout",
        &ct,
        "--idle-timeout",
        &it,
    ];
    flags.extend_from_slice(p.flags);
    let d = tb.start_pepwrt(&flags);
    let pid = tb.pepwrt_pid();
    let rss0 = rss_kb(pid);
    let queued0 = tb.queue_rule_packets();
    let rsts0 = net_counter_in(&tb.client, "snmp", "Tcp", "OutRsts");
    let server = Server::start(tb, &[PORT, PORT_SYNACK_LOSS]);
    let jobs = jobs(seed, p.jobs, small);
    let (mut fails, stats) = run_jobs(tb, &jobs, p.workers);
    // Vanished clients' connections end at pepwrt's idle timeout.
    let active = tb.wait_idle(Duration::from_secs(IDLE_TIMEOUT_S + 10));
    let log = server.finish();
    fails.extend(check_server_side(&jobs, &log, !small));
    let queued = tb.queue_rule_packets() - queued0;
    let st = tb.status_counting(queued, Duration::from_secs(3));
    let n = |k: &str| json_number(&st, k).unwrap_or(u64::MAX);
    let attempts = jobs.len() as u64;
    let (split, passed, malformed) = (n("split"), n("passed"), n("malformed"));
    let rss1 = rss_kb(pid);
    // The client's own resets: ClientReset jobs send one each; more are
    // resets its kernel sent on its own (defect 2 of issue 11: answering
    // a stale ACK from the router's TIME_WAIT socket on a reused port).
    let rsts = net_counter_in(&tb.client, "snmp", "Tcp", "OutRsts") - rsts0;
    let client_resets = jobs
        .iter()
        .filter(|j| j.shape == Shape::ClientReset)
        .count();
    let mut count = HashMap::new();
    for j in &jobs {
        *count.entry(format!("{:?}", j.shape)).or_insert(0) += 1;
    }
    let slow = stats
        .reuse_connects
        .iter()
        .filter(|d| **d > Duration::from_millis(5))
        .count();
    let bytes: usize = jobs.iter().map(|j| j.up + j.down).sum();
    eprintln!(
        "torture {}: {} transfers ({} MB) in {:.1} s, --max-conns {} with {} clients; {attempts} connects, {queued} SYNs queued (with retransmissions), split {split}, passed {passed}, malformed {malformed}, total {}, connect_failed {}, refused {}; {} failures; port reuse: {} connects, {slow} over 5 ms, {} busy ports; client RSTs {rsts} ({client_resets} jobs reset on purpose); pepwrt RSS {rss0} -> {rss1} kB; shapes {count:?}",
        p.name,
        jobs.len(),
        bytes >> 20,
        started.elapsed().as_secs_f64(),
        p.max_conns,
        p.workers,
        n("total"),
        n("connect_failed"),
        n("refused"),
        fails.len(),
        stats.reuse_connects.len(),
        stats.reuse_busy,
    );
    for f in fails.iter().take(30) {
        eprintln!("  {f}");
    }
    // Every check of the phase; all are reported, then the test fails if
    // any did (so one defect does not hide the next phase's).
    let mut problems = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            problems.push(format!("{}: {what}", p.name));
        }
    };
    check(
        fails.is_empty(),
        format!(
            "{} transfers failed (first: {:?})",
            fails.len(),
            fails.first()
        ),
    );
    check(active == 0, format!("{active} connections still active"));
    check(
        n("refused") == 0,
        "pepwrt refused a connection it admitted".into(),
    );
    check(malformed == 0, "malformed SYNs".into());
    // Every SYN the queue rule saw is accounted for: split, passed, or
    // unseen because the queue socket was full (defect 4 of issue 11: in
    // no counter before). A retransmitted SYN of the same connection never
    // comes back to the queue (the decision sticks in conntrack; defect 1
    // split such retransmissions), but a SYN that conntrack counts as a
    // new connection does: after a reset (the client's answer to a server
    // TIME_WAIT's stale ACK, say) the same connect() is decided afresh.
    // One queued again before conntrack held the first copy's decision is
    // decided the same way and counted as a repeat (seen: 252 queued, 250
    // split, the kernel's ids all delivered).
    let dropped = n("syn_dropped");
    let repeats = n("syn_repeats");
    check(
        split + passed + dropped + repeats == queued,
        format!(
            "{queued} SYNs queued, split + passed + unseen + repeats = {}; kernel queue (waiting, queue_dropped, user_dropped, last id) {:?}",
            split + passed + dropped + repeats,
            tb.kernel_queue_stats()
        ),
    );
    // Every connect was decided at least once (fewer: a SYN missed the
    // queue, defect 2: the router's TIME_WAIT socket matched the socket
    // rule; or it inherited an ended connection's decision).
    check(
        split + passed + dropped >= attempts,
        format!(
            "{attempts} connects, split + passed + unseen = {}",
            split + passed + dropped
        ),
    );
    // Every split SYN became a relayed connection (defect 1: a split
    // retransmission whose connection the server's SYN-ACK already won).
    check(
        n("total") == split,
        format!("split {split} but {} relayed", n("total")),
    );
    if !small {
        check(
            passed == 0,
            format!("a pool larger than the load passed {passed} connections"),
        );
        // Defect 8 of issue 11: a connecting slot hits the idle timeout
        // (5 s) before the connect timeout (8 s), so silent servers end as
        // "idle timeout", not as failed connects.
        let failing = jobs
            .iter()
            .filter(|j| matches!(j.shape, Shape::Refused | Shape::Silent))
            .count() as u64;
        check(
            n("connect_failed") == failing,
            format!(
                "connect_failed {} for {failing} refusing or silent servers",
                n("connect_failed")
            ),
        );
    }
    tb.signal(d, libc::SIGTERM);
    check(
        tb.wait(d, Duration::from_secs(10)) == Some(0),
        "pepwrt did not stop cleanly".into(),
    );
    if !problems.is_empty() {
        eprintln!("  counters: {st}");
    }
    for pr in &problems {
        eprintln!("  PROBLEM {pr}");
    }
    (jobs.len(), problems)
}

fn torture(jobs_ample: usize, jobs_small: usize, jobs_fastopen: usize) {
    let seed = std::env::var("PEPWRT_TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    let mut tb = testbed!();
    tb.install_rules("iptables", &[]);
    firewall(&tb);
    let phases = [
        Phase {
            name: "ample pool",
            max_conns: 64,
            workers: 16,
            jobs: jobs_ample,
            flags: &[],
        },
        Phase {
            name: "small pool",
            max_conns: 6,
            workers: 20,
            jobs: jobs_small,
            flags: &[],
        },
        // The outgoing legs with TCP fast open, to a server that issues
        // cookies: defect 7 of issue 11 (once a cookie is cached, the
        // first write finds the connect in progress and both legs are
        // reset).
        Phase {
            name: "fast open",
            max_conns: 64,
            workers: 8,
            jobs: jobs_fastopen,
            flags: &["--server-fastopen"],
        },
    ];
    // PEPWRT_TORTURE_PHASE=ample, small or fast runs one phase alone.
    let only = std::env::var("PEPWRT_TORTURE_PHASE").unwrap_or_default();
    let mut n = 0;
    let mut problems = Vec::new();
    for (i, p) in phases.iter().enumerate() {
        if only.is_empty() || p.name.starts_with(&only) {
            let (count, pr) = phase(&mut tb, seed + i as u64, p);
            n += count;
            problems.extend(pr);
        }
    }
    eprintln!("torture: {n} transfers checked, seed {seed}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The CI share: a few hundred transfers of every shape.
#[test]
fn torture_short() {
    torture(250, 150, 100);
}

/// 10,000 transfers; see the top of this file for the command.
#[test]
#[ignore]
fn torture_full() {
    torture(6000, 3000, 1000);
}

/// Client ports reused at once, connection after connection, the server
/// closing first (so the router's client leg ends in TIME_WAIT): every new
/// connection's SYN must reach admission and be counted, none may be
/// relayed on a decision it did not get (the full run once relayed 14 of
/// 6000 connections whose SYNs never reached the queue; this narrower
/// mix has not shown it). The connect times it prints show defect 2 of
/// issue 11 (most over 5 ms while the router's TIME_WAIT socket answers).
#[test]
fn a_port_reused_at_once_is_admitted_afresh_each_time() {
    let mut tb = testbed!();
    tb.install_rules("iptables", &[]);
    tb.start_pepwrt(&["--log-level", "info"]);
    let server = Server::start(&tb, &[PORT]);
    let queued0 = tb.queue_rule_packets();
    // Sixteen clients, four ports each, all at once.
    let jobs: Vec<Job> = (0..480)
        .map(|i| Job {
            seed: 77_000_000 + i as u64,
            shape: Shape::PortReuse,
            up: 100 + i % 5000,
            down: 100 + (i * 7) % 5000,
            v6: i % 4 == 3,
        })
        .collect();
    let n = jobs.len();
    let (fails, stats) = run_jobs(&tb, &jobs, 16);
    let _ = server.finish();
    let left = tb.wait_idle(Duration::from_secs(10));
    let st = tb.status();
    let c = |k: &str| json_number(&st, k).unwrap_or(u64::MAX);
    let queued = tb.queue_rule_packets() - queued0;
    let slow = stats
        .reuse_connects
        .iter()
        .filter(|d| **d > Duration::from_millis(5))
        .count();
    eprintln!(
        "port reuse at once: {n} connections from 16 clients with 4 ports each, {} failed, {queued} SYNs queued, split {} passed {} total {}, {slow} connects over 5 ms, {} busy",
        fails.len(),
        c("split"),
        c("passed"),
        c("total"),
        stats.reuse_busy
    );
    assert!(fails.is_empty(), "{fails:?}");
    assert_eq!(left, 0);
    assert_eq!(
        c("split") + c("passed"),
        n as u64,
        "every SYN admitted: {st}"
    );
    assert_eq!(
        c("total"),
        c("split"),
        "relayed without being admitted: {st}"
    );
}
