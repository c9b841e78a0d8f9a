//! A client — router — server testbed in network namespaces, for tests
//! that run pepwrt for real. Addresses are 198.18.0.0/15 and fd00::/8
//! only; every namespace is removed when the testbed drops.

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

pub const PEPWRT: &str = env!("CARGO_BIN_EXE_pepwrt");
pub const CLIENT4: &str = "198.18.0.2";
pub const SERVER4: &str = "198.18.1.2";
pub const CLIENT6: &str = "fd00::2";
pub const SERVER6: &str = "fd00:1::2";

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "these tests build network namespaces and need root (CI runs them as root)"
    );
}

/// Whether this process may build network namespaces. Without root a
/// namespace test is skipped, and says so on the terminal itself (past
/// the test harness's capture, so the skip is seen); with
/// PEPWRT_REQUIRE_ROOT=1, as CI sets it, it fails instead.
pub fn have_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("PEPWRT_REQUIRE_ROOT").is_none(),
        "these tests build network namespaces and need root"
    );
    skipped("needs root (network namespaces)");
    false
}

/// A testbed, or (without root) a loud skip of the calling test.
#[allow(unused_macros)]
macro_rules! testbed {
    () => {
        match crate::common::have_root() {
            true => crate::common::Testbed::new(),
            false => return,
        }
    };
}
#[allow(unused_imports)]
pub(crate) use testbed;

fn sh(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Runs a command and fails the test if it fails.
pub fn run(args: &[&str]) {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique short prefix: interface names must stay under 16 bytes.
fn unique_prefix() -> String {
    format!(
        "p{}x{}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct Testbed {
    pub prefix: String,
    pub client: String,
    pub router: String,
    pub server: String,
    /// The router's client-facing interface.
    pub lan_if: String,
    pub control: PathBuf,
    daemons: Vec<Child>,
}

impl Testbed {
    pub fn new() -> Testbed {
        require_root();
        let p = unique_prefix();
        let tb = Testbed {
            client: format!("{p}c"),
            router: format!("{p}r"),
            server: format!("{p}s"),
            lan_if: format!("{p}l"),
            control: std::env::temp_dir().join(format!("{p}.sock")),
            prefix: p.clone(),
            daemons: Vec::new(),
        };
        for ns in [&tb.client, &tb.router, &tb.server] {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let wan_if = format!("{p}w");
        let (ca, sa) = (format!("{p}a"), format!("{p}z"));
        run(&[
            "ip", "link", "add", &ca, "netns", &tb.client, "type", "veth", "peer", "name",
            &tb.lan_if, "netns", &tb.router,
        ]);
        run(&[
            "ip", "link", "add", &wan_if, "netns", &tb.router, "type", "veth", "peer", "name", &sa,
            "netns", &tb.server,
        ]);
        let addrs = [
            (&tb.client, &ca, "198.18.0.2/24", "fd00::2/64"),
            (&tb.router, &tb.lan_if, "198.18.0.1/24", "fd00::1/64"),
            (&tb.router, &wan_if, "198.18.1.1/24", "fd00:1::1/64"),
            (&tb.server, &sa, "198.18.1.2/24", "fd00:1::2/64"),
        ];
        for (ns, dev, v4, v6) in addrs {
            run(&["ip", "-n", ns, "addr", "add", v4, "dev", dev]);
            run(&["ip", "-n", ns, "-6", "addr", "add", v6, "dev", dev, "nodad"]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        for (ns, v4, v6) in [
            (&tb.client, "198.18.0.1", "fd00::1"),
            (&tb.server, "198.18.1.1", "fd00:1::1"),
        ] {
            run(&["ip", "-n", ns, "route", "add", "default", "via", v4]);
            run(&["ip", "-n", ns, "-6", "route", "add", "default", "via", v6]);
        }
        tb.exec(&[
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
        ]);
        tb
    }

    /// Runs a command in the router namespace and asserts success.
    pub fn exec(&self, args: &[&str]) -> Output {
        exec_in(&self.router, args)
    }

    /// Installs the interception rules pepwrt prints for `flags`.
    pub fn install_rules(&self, backend: &str, flags: &[&str]) {
        let mut args = vec![
            PEPWRT,
            "rules",
            "--backend",
            backend,
            "--intercept",
            &self.lan_if,
        ];
        args.extend_from_slice(flags);
        install_rules_in(&self.router, &args[1..]);
    }

    /// Starts pepwrt in the router with the test's control socket and
    /// waits until it answers status.
    pub fn start_pepwrt(&mut self, flags: &[&str]) -> usize {
        let mut args = vec![
            "netns",
            "exec",
            &self.router,
            PEPWRT,
            "run",
            "--foreground",
            "--log-level",
            "debug",
        ];
        let control = self.control.to_string_lossy().to_string();
        args.extend_from_slice(&["--control", &control, "--intercept", &self.lan_if]);
        args.extend_from_slice(flags);
        let log = File::create(self.log_path()).expect("log");
        let child = Command::new("ip")
            .args(&args)
            .stderr(log)
            .spawn()
            .expect("pepwrt");
        self.daemons.push(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.try_status().is_some() {
                return self.daemons.len() - 1;
            }
            if let Ok(Some(st)) = self.daemons.last_mut().expect("child").try_wait() {
                panic!("pepwrt exited with {st}: {}", self.log());
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("pepwrt did not answer status within 10 s: {}", self.log());
    }

    pub fn log_path(&self) -> PathBuf {
        std::env::temp_dir().join(format!("{}.log", self.prefix))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn signal(&mut self, which: usize, sig: libc::c_int) {
        // `ip netns exec` execs pepwrt, so the child's pid is pepwrt's.
        let pid = self.daemons[which].id() as libc::pid_t;
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(pid, sig) };
    }

    /// Waits for a pepwrt to exit; its exit code.
    pub fn wait(&mut self, which: usize, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.daemons[which].try_wait() {
                return st.code();
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn try_status(&self) -> Option<String> {
        let control = self.control.to_string_lossy().to_string();
        let out = sh(&[
            "ip",
            "netns",
            "exec",
            &self.router,
            PEPWRT,
            "status",
            "--json",
            "--control",
            &control,
        ]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }

    pub fn status(&self) -> String {
        self.try_status()
            .unwrap_or_else(|| panic!("status failed; log: {}", self.log()))
    }

    /// A number from the status JSON, by key (first occurrence).
    pub fn counter(&self, key: &str) -> u64 {
        json_number(&self.status(), key).unwrap_or_else(|| panic!("no {key} in status"))
    }

    pub fn in_client<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        in_netns(&self.client, f)
    }

    pub fn in_server<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        in_netns(&self.server, f)
    }

    /// A listener in the server namespace.
    pub fn server_listener(&self, addr: &str) -> TcpListener {
        let addr: SocketAddr = addr.parse().expect("addr");
        in_netns(&self.server, move || TcpListener::bind(addr).expect("bind"))
            .join()
            .expect("thread")
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
        for ns in [&self.client, &self.router, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = std::fs::remove_file(&self.control);
        if !thread::panicking() {
            let _ = std::fs::remove_file(self.log_path());
        } else {
            eprintln!("pepwrt log:\n{}", self.log());
        }
    }
}

/// Runs `f` on a thread inside namespace `ns` (network namespaces are per
/// thread, so the test's other threads are unaffected).
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns on a namespace fd we hold open; affects this thread.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}");
        f()
    })
}

/// SYNs a status report has decided or lost: split, passed, malformed or
/// unseen (lost at the queue socket). A repeated SYN (`syn_repeats`, a
/// retransmission decided before) is not a connection of its own.
pub fn syns_counted(st: &str) -> u64 {
    ["split", "passed", "malformed", "syn_dropped"]
        .iter()
        .map(|k| json_number(st, k).unwrap_or(0))
        .sum()
}

/// Finds `"key":NUMBER` in a JSON text.
pub fn json_number(json: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let at = json.find(&pat)? + pat.len();
    let digits: String = json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Reads until EOF with an overall time limit.
pub fn read_all(s: &mut TcpStream, limit: Duration) -> std::io::Result<Vec<u8>> {
    s.set_read_timeout(Some(limit))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// An echo server that reads each connection to EOF, then writes it all
/// back and closes (so every transfer relies on the half-close being
/// relayed). Records each client's address. Stops after `conns`.
pub fn echo_after_eof(listener: TcpListener, conns: usize) -> Vec<SocketAddr> {
    let mut peers = Vec::new();
    let mut workers = Vec::new();
    listener.set_nonblocking(false).expect("blocking");
    for _ in 0..conns {
        let Ok((mut s, peer)) = listener.accept() else {
            break;
        };
        peers.push(peer);
        workers.push(thread::spawn(move || {
            if let Ok(data) = read_all(&mut s, Duration::from_secs(30)) {
                let _ = s.write_all(&data);
            }
        }));
    }
    for w in workers {
        let _ = w.join();
    }
    peers
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("pepwrt-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `f` every 20 ms until it holds or `limit` passes; whether it held.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---- Additions for the reliability campaign (torture, flood, soak). ----

/// Runs a command in any namespace and asserts success.
/// Runs `pepwrt <args>` in namespace `ns` and the script it prints
/// with that namespace's sh: the interception rules, installed.
pub fn install_rules_in(ns: &str, args: &[&str]) {
    let mut cmd = vec![PEPWRT];
    cmd.extend_from_slice(args);
    let script = exec_in(ns, &cmd).stdout;
    let mut sh = Command::new("ip")
        .args(["netns", "exec", ns, "sh"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh");
    sh.stdin
        .take()
        .expect("stdin")
        .write_all(&script)
        .expect("script");
    let out = sh.wait_with_output().expect("sh");
    assert!(
        out.status.success(),
        "rules failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An IPv4 socket address as libc takes it, with its length.
pub fn sockaddr4(a: SocketAddr) -> (libc::sockaddr_in, libc::socklen_t) {
    let SocketAddr::V4(v4) = a else {
        panic!("IPv4 only")
    };
    (
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            },
            sin_zero: [0; 8],
        },
        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
    )
}

pub fn exec_in(ns: &str, args: &[&str]) -> Output {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    let out = sh(&full);
    assert!(
        out.status.success(),
        "{ns}: {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One counter from the text of /proc/net/snmp or /proc/net/netstat
/// (`section` "Tcp" or "TcpExt", a line of names above a line of values).
pub fn net_counter(text: &str, section: &str, name: &str) -> u64 {
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if names.split(':').next() != Some(section) {
            continue;
        }
        let pos = names.split_whitespace().position(|n| n == name);
        if let Some(v) = pos.and_then(|p| values.split_whitespace().nth(p)) {
            return v.parse().expect("number");
        }
    }
    panic!("no {section} {name} in the counters");
}

/// `net_counter` of namespace `ns`; `file` "snmp" or "netstat".
pub fn net_counter_in(ns: &str, file: &str, section: &str, name: &str) -> u64 {
    let out = exec_in(ns, &["cat", &format!("/proc/net/{file}")]);
    net_counter(&String::from_utf8_lossy(&out.stdout), section, name)
}

/// The byte stream `payload(seed, n)` produces, generated in pieces so
/// that multi-megabyte transfers need no buffer of their size.
pub struct Pattern(u64);

impl Pattern {
    pub fn new(seed: u64) -> Pattern {
        Pattern(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0 as u8;
        }
    }
}

/// How a read side ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Orderly close (FIN).
    Eof,
    /// Reset by the peer.
    Reset,
    /// Our read timeout passed.
    Timeout,
    Other(std::io::ErrorKind),
}

impl Ending {
    pub fn of(e: &std::io::Error) -> Ending {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => Ending::Reset,
            K::WouldBlock | K::TimedOut => Ending::Timeout,
            k => Ending::Other(k),
        }
    }
}

/// Writes `len` bytes of `Pattern::new(seed)`, optionally pausing once
/// halfway.
pub fn send_pattern(
    s: &mut TcpStream,
    seed: u64,
    len: usize,
    pause: Option<Duration>,
) -> std::io::Result<()> {
    let mut pat = Pattern::new(seed);
    let mut buf = vec![0u8; 64 * 1024];
    let mut put = |s: &mut TcpStream, mut n: usize| -> std::io::Result<()> {
        while n > 0 {
            let k = n.min(buf.len());
            pat.fill(&mut buf[..k]);
            s.write_all(&buf[..k])?;
            n -= k;
        }
        Ok(())
    };
    match pause {
        Some(p) => {
            put(s, len / 2)?;
            thread::sleep(p);
            put(s, len - len / 2)
        }
        None => put(s, len),
    }
}

/// What `recv_pattern` saw: the bytes that matched, where the first
/// mismatch was, and how the stream ended (`None`: `len` bytes arrived,
/// the stream may go on).
#[derive(Debug)]
pub struct Received {
    pub good: usize,
    pub mismatch_at: Option<usize>,
    pub ending: Option<Ending>,
}

/// Reads up to `len` bytes, checking each against `Pattern::new(seed)`.
pub fn recv_pattern(s: &mut TcpStream, seed: u64, len: usize) -> Received {
    let mut pat = Pattern::new(seed);
    let mut buf = vec![0u8; 64 * 1024];
    let mut want = vec![0u8; 64 * 1024];
    let mut r = Received {
        good: 0,
        mismatch_at: None,
        ending: None,
    };
    while r.good < len {
        let cap = buf.len().min(len - r.good);
        let n = match s.read(&mut buf[..cap]) {
            Ok(0) => {
                r.ending = Some(Ending::Eof);
                return r;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                r.ending = Some(Ending::of(&e));
                return r;
            }
        };
        pat.fill(&mut want[..n]);
        if let Some(i) = (0..n).find(|&i| buf[i] != want[i]) {
            r.mismatch_at = Some(r.good + i);
            r.good += i;
            return r;
        }
        r.good += n;
    }
    r
}

/// Reads what is left until the stream ends; the bytes and the ending.
pub fn read_rest(s: &mut TcpStream) -> (Vec<u8>, Ending) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, Ending::Eof),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (out, Ending::of(&e)),
        }
    }
}

/// Waits (bounded by `limit`) until the peer has acknowledged every byte
/// written to `s` (TIOCOUTQ 0): a reset drops what is still unacknowledged,
/// so a test that resets after writing waits for this, not a fixed time.
/// The handshake must be complete too: a fast-open server accepts in
/// SYN_RECV, where the kernel reports 0 unacknowledged bytes whatever it
/// holds.
pub fn all_acked(s: &TcpStream, limit: Duration) -> bool {
    const TCP_SYN_RECV: u8 = 3;
    eventually(limit, || {
        let info = tcp_info_head(s);
        let mut unacked: libc::c_int = 0;
        // SAFETY: TIOCOUTQ writes one int to the pointer given.
        let rc2 = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut unacked) };
        info.is_some_and(|i| i[0] != TCP_SYN_RECV) && rc2 == 0 && unacked == 0
    })
}

/// The first 8 bytes of a socket's TCP_INFO (state, ca_state,
/// retransmits, probes, backoff, options, window scales, ...), or None if
/// the kernel refused.
pub fn tcp_info_head(s: &TcpStream) -> Option<[u8; 8]> {
    let mut info = [0u8; 8];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: TCP_INFO writes at most `len` bytes into the buffer given.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(info)
}

/// SO_LINGER 0: closing the socket sends RST.
pub fn set_linger0(s: &TcpStream) {
    let lg = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid fd, pointer and size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const lg).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// A process's resident set (kB) and open fds, from /proc.
pub fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

impl Testbed {
    /// The pid of the pepwrt that answers status.
    pub fn pepwrt_pid(&self) -> u32 {
        self.counter("pid") as u32
    }

    /// Waits (bounded) until no connection is active; the last count.
    pub fn wait_idle(&self, limit: Duration) -> u64 {
        let deadline = Instant::now() + limit;
        loop {
            let active = self.counter("active");
            if active == 0 || Instant::now() >= deadline {
                return active;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Times one status request (the whole round trip of `pepwrt status`
    /// is dominated by process start-up, so this talks to the socket).
    pub fn status_latency(&self) -> Option<Duration> {
        let t = Instant::now();
        let mut s = std::os::unix::net::UnixStream::connect(&self.control).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"json\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.contains("\"counters\"").then(|| t.elapsed())
    }
}

impl Testbed {
    /// Runs a command in the server namespace and asserts success.
    pub fn exec_server(&self, args: &[&str]) {
        exec_in(&self.server, args);
    }

    /// Packets the iptables NFQUEUE rules (IPv4 and IPv6) have sent to the
    /// queue so far: every SYN that reached admission's rule, including
    /// retransmissions and SYNs the queue then dropped or bypassed.
    pub fn queue_rule_packets(&self) -> u64 {
        ["iptables", "ip6tables"]
            .iter()
            .map(|ipt| {
                let out = self.exec(&[
                    ipt, "-w", "-t", "mangle", "-L", "PEPWRT_Q", "-v", "-x", "-n",
                ]);
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| l.contains("NFQUEUE"))
                    .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
                    .sum::<u64>()
            })
            .sum()
    }

    /// A status report once it counts `syns` SYNs (`syns_counted`), or
    /// the last one after `limit`. SYNs the queue socket missed at the end
    /// of a burst are counted within two of pepwrt's 1 s ticks, after it
    /// has worked through its backlog (nfqueue.rs, IdGaps::settle).
    pub fn status_counting(&self, syns: u64, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let st = self.status();
            if syns_counted(&st) >= syns || Instant::now() >= deadline {
                return st;
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// The kernel's view of the SYN queue (/proc/net/netfilter/
    /// nfnetlink_queue in the router): (waiting, queue_dropped,
    /// user_dropped, last id) of queue 3135.
    pub fn kernel_queue_stats(&self) -> Option<(u64, u64, u64, u64)> {
        let out = self.exec(&["cat", "/proc/net/netfilter/nfnetlink_queue"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines().find_map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            (f.len() >= 8 && f[0] == 3135).then(|| (f[2], f[5], f[6], f[7]))
        })
    }
}

/// A listener in namespace `ns` with a deep accept queue: with the
/// default 128, a burst of connects overflows it, the server answers
/// with SYN cookies, and connections whose final ACK then finds the queue
/// full are lost on the server's side alone (an artifact of the test
/// server, not of what it tests).
pub fn deep_listener(ns: &str, addr: &str) -> TcpListener {
    let addr: SocketAddr = addr.parse().expect("addr");
    in_netns(ns, move || {
        let l = TcpListener::bind(addr).expect("bind");
        // SAFETY: listen on a listening socket we own only changes its
        // backlog.
        unsafe { libc::listen(l.as_raw_fd(), 4096) };
        l
    })
    .join()
    .expect("thread")
}

// ---- cross builds and packages (tests/cross.rs, tests/package/) --------

/// Every OpenWrt architecture pepwrt is built for, as in cross/arch.sh.
pub const ALL_ARCHS: &[&str] = &[
    "mips_24kc",
    "mipsel_24kc",
    "arm_cortex-a7_neon-vfpv4",
    "aarch64_cortex-a53",
    "x86_64",
];

/// What the default test run builds and packages: big-endian MIPS and
/// 32-bit ARM (where byte-order and word-size bugs show) and x86_64 (the
/// package installed and run in the OpenWrt root). `PEPWRT_ARCHS=all` (or
/// a space-separated list) changes it.
pub const DEFAULT_ARCHS: &[&str] = &["mips_24kc", "arm_cortex-a7_neon-vfpv4", "x86_64"];

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

/// The architectures to build and check: $PEPWRT_ARCHS, else the default.
pub fn test_archs() -> Vec<String> {
    let env = std::env::var("PEPWRT_ARCHS").unwrap_or_default();
    let names: Vec<String> = match env.trim() {
        "" => DEFAULT_ARCHS.iter().map(|s| s.to_string()).collect(),
        "all" => ALL_ARCHS.iter().map(|s| s.to_string()).collect(),
        list => list.split_whitespace().map(String::from).collect(),
    };
    for n in &names {
        assert!(
            ALL_ARCHS.contains(&n.as_str()),
            "PEPWRT_ARCHS: unknown architecture {n} (known: {ALL_ARCHS:?}, or all)"
        );
    }
    names
}

/// An optional tool a test needs, or (without it) a loud skip: a line on
/// the terminal, past the harness's capture, saying what is missing and
/// where to get it. With PEPWRT_REQUIRE_TOOLS=1, as CI sets it, a missing
/// tool fails the test instead.
pub fn optional_tool(found: Option<PathBuf>, what: &str, how: &str) -> Option<PathBuf> {
    if found.is_some() {
        return found;
    }
    assert!(
        std::env::var_os("PEPWRT_REQUIRE_TOOLS").is_none(),
        "{what} not found (PEPWRT_REQUIRE_TOOLS is set, as in CI): {how}"
    );
    skipped(&format!("{what} not found: {how}"));
    None
}

/// Says on the terminal itself, past the test harness's capture, that the
/// calling test skips part or all of its work, and why.
pub fn skipped(why: &str) {
    let name = thread::current().name().unwrap_or("a test").to_string();
    let line = format!("pepwrt tests: SKIPPED {name}: {why}\n");
    // SAFETY: writes our own buffer to stderr's fd.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

/// The OpenWrt 18.06 root file system (a tarball): $PEPWRT_OPENWRT_ROOTFS,
/// else `../shared/tools/` next to the checkout; None is a loud skip.
pub fn openwrt_rootfs() -> Option<PathBuf> {
    let found = match std::env::var_os("PEPWRT_OPENWRT_ROOTFS") {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => {
            Some(repo().join("../shared/tools").join(OPENWRT_ROOT_TARBALL)).filter(|p| p.is_file())
        }
    };
    optional_tool(
        found,
        OPENWRT_ROOT_TARBALL,
        "download it from https://downloads.openwrt.org/releases/18.06.1/targets/x86/generic/ \
         and set PEPWRT_OPENWRT_ROOTFS=/path/to/it (or put it in ../shared/tools/ next to the checkout)",
    )
}

pub const OPENWRT_ROOT_TARBALL: &str = "openwrt-18.06.1-x86-generic-rootfs.tar.gz";

/// Runs a command with its stderr passed through (live progress, not
/// captured by the test harness) and returns its stdout, or the failure.
pub fn run_with_progress(cmd: &mut Command) -> Result<String, String> {
    let start = Instant::now();
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(format!("{cmd:?} failed ({}):\n{stdout}", out.status));
    }
    eprintln!("{cmd:?} took {:?}", start.elapsed());
    Ok(stdout)
}

impl Testbed {
    /// pepwrt's nft ruleset as users get it, but for its queue rule: nft's
    /// `queue` is absent from this kernel, so iptables' NFQUEUE target
    /// stands in for it, in a hook that runs just before nft's (`families`:
    /// "ipv4" and/or "ipv6"); then the routing part.
    pub fn install_nft_rules_with_xt_queue(&self, families: &[&str]) {
        let out = self.exec(&[
            PEPWRT,
            "rules",
            "--backend",
            "nft",
            "--part",
            "firewall",
            "--intercept",
            &self.lan_if,
        ]);
        let nft = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(nft.contains("queue num 3135 bypass"), "{nft}");
        let adapted: String = nft
            .lines()
            .filter(|l| !l.contains("queue num"))
            .map(|l| l.replace("priority mangle;", "priority mangle + 1;") + "\n")
            .collect();
        let path = std::env::temp_dir().join(format!("{}.nft", self.prefix));
        std::fs::write(&path, adapted).expect("write");
        self.exec(&["nft", "-f", &path.to_string_lossy()]);
        let _ = std::fs::remove_file(&path);
        let routing = self.exec(&[PEPWRT, "rules", "--part", "routing"]);
        self.exec(&["sh", "-c", &String::from_utf8_lossy(&routing.stdout)]);
        for family in families {
            let ipt = if *family == "ipv6" {
                "ip6tables"
            } else {
                "iptables"
            };
            self.exec(&[
                ipt,
                "-t",
                "mangle",
                "-A",
                "PREROUTING",
                "-i",
                &self.lan_if,
                "-p",
                "tcp",
                "--syn",
                "-m",
                "mark",
                "--mark",
                "0/0x20000",
                "-m",
                "addrtype",
                "!",
                "--dst-type",
                "LOCAL",
                "-j",
                "NFQUEUE",
                "--queue-num",
                "3135",
                "--queue-bypass",
            ]);
        }
    }
}

/// A TCP connect from a chosen local address (SO_REUSEADDR), for port
/// reuse; an ephemeral port when `local` is None.
pub fn connect_from(local: Option<SocketAddr>, to: SocketAddr) -> std::io::Result<TcpStream> {
    let Some(local) = local else {
        return TcpStream::connect_timeout(&to, Duration::from_secs(10));
    };
    let family = if to.is_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    // SAFETY: plain socket calls on a fd we own; the sockaddr buffers are
    // built for their family and sized accordingly.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let s = TcpStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&raw const one).cast(),
            4,
        );
        let (la, ll) = sockaddr(local);
        if libc::bind(fd, (&raw const la).cast(), ll) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (ra, rl) = sockaddr(to);
        if libc::connect(fd, (&raw const ra).cast(), rl) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(s)
    }
}

fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid; it is large enough
    // for either family.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin) };
            (
                ss,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin6) };
            (
                ss,
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}
