//! Two ends for real: client – router – link emulator – gateway – server,
//! the router and the gateway joined by real WireGuard (wireguard-go on a
//! TUN device, configured by wg), pepwrt at both ends (tests/net/testbed
//! and tests/net/wg build it). Only pepwrt-to-pepwrt TCP crosses the link,
//! inside the tunnel; with --zero-rtt its opens carry the client's first
//! bytes in the SYN. The link: 20 Mbit/s each way, 200 ms RTT.

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const RTT: Duration = Duration::from_millis(200);
const LINK: [&str; 6] = [
    "--uplink",
    "20mbit",
    "--downlink",
    "20mbit",
    "--rtt",
    "200ms",
];
const SERVER: &str = "198.18.2.2";

fn script(name: &str) -> PathBuf {
    repo().join("tests/net").join(name)
}

/// linkem from the workspace's build (`cargo test --workspace` builds it),
/// else built here.
fn linkem() -> PathBuf {
    for profile in ["release", "debug"] {
        let p = target_dir().join(profile).join("linkem");
        if p.is_file() {
            return p;
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "-q", "-p", "linkem"])
        .current_dir(repo())
        .output()
        .expect("cargo build -p linkem");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target_dir().join("debug/linkem")
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(tool))
        .find(|p| p.is_file())
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Which end a pepwrt runs at.
#[derive(Clone, Copy, PartialEq)]
enum At {
    Router,
    Gateway,
}

struct Pep {
    child: Child,
    ns: String,
    control: PathBuf,
    log: PathBuf,
}

struct TwoEnds {
    prefix: String,
    v: HashMap<String, String>,
    peps: Vec<Pep>,
    /// Namespaces the test made itself (outside the testbed).
    extra_ns: Vec<String>,
}

impl TwoEnds {
    /// The testbed with its tunnel up, or None (a loud skip) without
    /// root or without wireguard-go.
    fn new() -> Option<TwoEnds> {
        if !have_root() {
            return None;
        }
        let how =
            "apt-get install wireguard-go wireguard-tools (userspace WireGuard; CI installs them)";
        optional_tool(which("wireguard-go"), "wireguard-go", how)?;
        optional_tool(which("wg"), "wg (wireguard-tools)", how)?;
        let prefix = format!(
            "t{}x{}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut te = TwoEnds {
            prefix: prefix.clone(),
            v: HashMap::new(),
            peps: Vec::new(),
            extra_ns: Vec::new(),
        };
        for (tool, args) in [
            ("testbed", vec!["up", &prefix, "wg-test"]),
            ("wg", vec!["up", &prefix]),
        ] {
            let out = Command::new(script(tool))
                .args(&args)
                .env("LINKEM", linkem())
                .output()
                .expect(tool);
            assert!(
                out.status.success(),
                "{tool} up: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some((k, v)) = line.split_once('=') {
                    te.v.insert(k.into(), v.into());
                }
            }
        }
        Some(te)
    }

    fn var(&self, k: &str) -> String {
        self.v[k].clone()
    }

    /// Starts pepwrt at one end (its rules first) and waits for status.
    fn start(&mut self, at: At, extra: &[&str]) -> usize {
        let (ns, intercept, tunnel) = match at {
            At::Router => (self.var("NS_R"), self.var("LAN_IF"), self.var("WG_R")),
            At::Gateway => (self.var("NS_G"), self.var("WG_G"), self.var("WG_G")),
        };
        let mut flags: Vec<&str> = vec!["--intercept", &intercept, "--tunnel", &tunnel];
        flags.extend_from_slice(&LINK);
        if at == At::Gateway {
            flags.extend_from_slice(&["--link-leg", "client"]);
        }
        flags.extend_from_slice(extra);
        let mut rules = vec!["rules", "--backend", "iptables"];
        rules.extend_from_slice(&flags);
        install_rules_in(&ns, &rules);
        let n = self.peps.len();
        let control = std::env::temp_dir().join(format!("{}.{n}.sock", self.prefix));
        let log = std::env::temp_dir().join(format!("{}.{n}.log", self.prefix));
        let ctl = control.to_string_lossy().to_string();
        let mut args = vec!["netns", "exec", &ns, PEPWRT, "run", "--foreground"];
        args.extend_from_slice(&["--log-level", "debug", "--control", &ctl]);
        args.extend_from_slice(&flags);
        let child = Command::new("ip")
            .args(&args)
            .stderr(File::create(&log).expect("log"))
            .spawn()
            .expect("pepwrt");
        self.peps.push(Pep {
            child,
            ns,
            control,
            log,
        });
        assert!(
            eventually(Duration::from_secs(10), || self.try_status(n).is_some()),
            "pepwrt did not start: {}",
            self.log(n)
        );
        n
    }

    fn log(&self, n: usize) -> String {
        std::fs::read_to_string(&self.peps[n].log).unwrap_or_default()
    }

    fn try_status(&self, n: usize) -> Option<String> {
        let p = &self.peps[n];
        let ctl = p.control.to_string_lossy().to_string();
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &p.ns,
                PEPWRT,
                "status",
                "--json",
                "--control",
                &ctl,
            ])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }

    fn counter(&self, n: usize, key: &str) -> u64 {
        let st = self
            .try_status(n)
            .unwrap_or_else(|| panic!("status: {}", self.log(n)));
        json_number(&st, key).unwrap_or_else(|| panic!("no {key} in {st}"))
    }

    fn kill(&mut self, n: usize) {
        let _ = self.peps[n].child.kill();
        let _ = self.peps[n].child.wait();
    }

    fn listener(&self, port: u16) -> TcpListener {
        let addr: SocketAddr = format!("{SERVER}:{port}").parse().expect("addr");
        in_netns(&self.var("NS_S"), move || {
            TcpListener::bind(addr).expect("bind")
        })
        .join()
        .expect("thread")
    }

    fn in_client<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        in_netns(&self.var("NS_C"), f)
    }
}

impl Drop for TwoEnds {
    fn drop(&mut self) {
        for n in 0..self.peps.len() {
            if thread::panicking() {
                eprintln!("pepwrt {n} log:\n{}", self.log(n));
            }
            self.kill(n);
            let _ = std::fs::remove_file(&self.peps[n].log);
            let _ = std::fs::remove_file(&self.peps[n].control);
        }
        for ns in &self.extra_ns {
            for pid in String::from_utf8_lossy(
                &Command::new("ip")
                    .args(["netns", "pids", ns])
                    .output()
                    .map(|o| o.stdout)
                    .unwrap_or_default(),
            )
            .split_whitespace()
            {
                let _ = Command::new("kill").args(["-KILL", pid]).output();
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new(script("wg"))
            .args(["down", &self.prefix])
            .output();
        let _ = Command::new(script("testbed"))
            .args(["down", &self.prefix])
            .output();
        for tag in ["wan", "lan"] {
            let _ = std::fs::remove_file(format!("/tmp/{}.{tag}.out", self.prefix));
        }
    }
}

/// Uploads `up` bytes, half-closes, and reads back what the server sends
/// after it read everything: `down` bytes of its own pattern; both
/// checked byte for byte.
fn exchange(te: &TwoEnds, port: u16, up: usize, down: usize) {
    let listener = te.listener(port);
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let r = recv_pattern(&mut s, 7, up);
        assert_eq!((r.good, r.mismatch_at), (up, None), "upload at the server");
        let (rest, _) = read_rest(&mut s);
        assert!(rest.is_empty(), "bytes past the upload");
        send_pattern(&mut s, 8, down, None).expect("download");
    });
    let to: SocketAddr = format!("{SERVER}:{port}").parse().expect("addr");
    te.in_client(move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        send_pattern(&mut s, 7, up, None).expect("upload");
        s.shutdown(std::net::Shutdown::Write).expect("half-close");
        let r = recv_pattern(&mut s, 8, down);
        assert_eq!(
            (r.good, r.mismatch_at),
            (down, None),
            "download at the client"
        );
        let (rest, end) = read_rest(&mut s);
        assert!(
            rest.is_empty() && matches!(end, Ending::Eof),
            "the end after the download"
        );
    })
    .join()
    .expect("client");
    server.join().expect("server");
}

#[test]
fn transfers_cross_both_pepwrts_inside_the_tunnel_checksummed() {
    let Some(mut te) = TwoEnds::new() else { return };
    let router = te.start(At::Router, &["--zero-rtt"]);
    let gateway = te.start(At::Gateway, &["--zero-rtt"]);
    exchange(&te, 7001, 1_000_000, 2_000_000);
    // A server that resets after its bytes: the client gets every byte,
    // then the reset, through both pepwrts.
    let listener = te.listener(7002);
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut hello = [0u8; 5];
        s.read_exact(&mut hello).expect("hello");
        send_pattern(&mut s, 9, 300_000, None).expect("send");
        assert!(all_acked(&s, Duration::from_secs(20)), "acknowledged");
        set_linger0(&s);
    });
    let to: SocketAddr = format!("{SERVER}:7002").parse().expect("addr");
    te.in_client(move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        s.write_all(b"hello").expect("hello");
        let r = recv_pattern(&mut s, 9, 300_000);
        assert_eq!((r.good, r.mismatch_at), (300_000, None), "before the reset");
        let (rest, end) = read_rest(&mut s);
        assert!(
            rest.is_empty() && matches!(end, Ending::Reset),
            "then the reset"
        );
    })
    .join()
    .expect("client");
    server.join().expect("server");
    // Both ends split both connections, and opened them without a round
    // trip (counted as they end).
    for (n, name) in [(router, "router"), (gateway, "gateway")] {
        assert!(
            eventually(Duration::from_secs(5), || te.counter(n, "active") == 0),
            "{name}: connections still live"
        );
        assert_eq!(te.counter(n, "total"), 2, "{name} split");
        assert_eq!(te.counter(n, "zero_rtt_opens"), 2, "{name}: zero-RTT opens");
    }
}

/// Time from the client's connect to the server's accept, and to the
/// first byte of a server that speaks first (the client says nothing).
fn open_times(te: &TwoEnds, port: u16, client_speaks: bool) -> (Duration, Duration) {
    let listener = te.listener(port);
    let to: SocketAddr = format!("{SERVER}:{port}").parse().expect("addr");
    let t0 = Instant::now();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let accepted = t0.elapsed();
        s.write_all(b"220 ready\r\n").expect("banner");
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
        accepted
    });
    let first_byte = te
        .in_client(move || {
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect");
            if client_speaks {
                s.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("request");
            }
            let mut buf = [0u8; 11];
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            s.read_exact(&mut buf).expect("banner");
            let t = t0.elapsed();
            assert_eq!(&buf, b"220 ready\r\n");
            s.write_all(b"QUIT\r\n").expect("quit");
            t
        })
        .join()
        .expect("client");
    (server.join().expect("server"), first_byte)
}

#[test]
fn zero_rtt_opens_reach_the_server_within_one_round_trip() {
    let Some(mut te) = TwoEnds::new() else { return };
    te.start(At::Router, &["--zero-rtt"]);
    let gateway = te.start(At::Gateway, &["--zero-rtt"]);
    // The SYN with the request crosses once (half an RTT) before the
    // gateway opens toward the server; an ordinary open would wait for
    // the handshake first (one and a half RTTs).
    let (accepted, _) = open_times(&te, 7101, true);
    assert!(
        accepted < RTT,
        "server accepted {accepted:?} after connect; gateway: {:?}",
        te.try_status(gateway)
    );
    // A server that speaks first: the router waits two LAN round trips
    // for the client's first bytes, then opens with an empty SYN, which
    // takes the ordinary handshake. The banner comes back as it would
    // without pepwrt (two RTTs), not later.
    let (accepted, banner) = open_times(&te, 7102, false);
    let slack = Duration::from_millis(100);
    assert!(
        accepted < RTT * 3 / 2 + slack,
        "server accepted {accepted:?} after connect"
    );
    assert!(banner < RTT * 2 + slack, "banner after {banner:?}");
    assert!(
        eventually(Duration::from_secs(5), || te
            .counter(gateway, "zero_rtt_opens")
            == 1),
        "the gateway counted the first: {:?}",
        te.try_status(gateway)
    );
}

#[test]
fn fail_open_when_either_pepwrt_is_killed() {
    let Some(mut te) = TwoEnds::new() else { return };
    let router = te.start(At::Router, &["--zero-rtt"]);
    let gateway = te.start(At::Gateway, &["--zero-rtt"]);
    te.kill(gateway);
    // The router still opens with data in its SYN; the server is no
    // pepwrt and takes only the SYN: the kernel sends the bytes again
    // after the handshake, none lost, none twice.
    exchange(&te, 7201, 200_000, 200_000);
    let (accepted, _) = open_times(&te, 7202, true);
    assert!(
        accepted >= RTT / 2,
        "an ordinary open at the server: {accepted:?}"
    );
    assert_eq!(te.counter(router, "total"), 2);
    assert!(
        eventually(Duration::from_secs(5), || te.counter(router, "active") == 0),
        "router: connections still live"
    );
    assert_eq!(
        te.counter(router, "zero_rtt_opens"),
        0,
        "nothing took the SYN's data"
    );
    te.kill(router);
    // Neither end splits: the tunnel still carries everything.
    exchange(&te, 7203, 200_000, 200_000);
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &te.var("NS_C"),
            "ping",
            "-c1",
            "-W3",
            SERVER,
        ])
        .output()
        .expect("ping");
    assert!(ping.status.success(), "ICMP through the tunnel");
}

#[test]
fn the_gateway_relays_nothing_from_outside_the_tunnel() {
    let Some(mut te) = TwoEnds::new() else { return };
    let gateway = te.start(At::Gateway, &["--zero-rtt"]);
    // A host on the gateway's public side (the internet).
    let outside = format!("{}o", te.prefix);
    let ns_g = te.var("NS_G");
    te.extra_ns.push(outside.clone());
    let ip = |ns: &str, args: &[&str]| {
        let mut all = vec!["ip", "-n", ns];
        all.extend_from_slice(args);
        run(&all);
    };
    run(&["ip", "netns", "add", &outside]);
    ip(&outside, &["link", "set", "lo", "up"]);
    let (o_if, g_if) = (format!("{}oo", te.prefix), format!("{}og", te.prefix));
    run(&[
        "ip", "link", "add", &o_if, "netns", &outside, "type", "veth", "peer", "name", &g_if,
        "netns", &ns_g,
    ]);
    ip(&outside, &["addr", "add", "198.18.4.2/24", "dev", &o_if]);
    ip(&ns_g, &["addr", "add", "198.18.4.1/24", "dev", &g_if]);
    ip(&outside, &["link", "set", &o_if, "up"]);
    ip(&ns_g, &["link", "set", &g_if, "up"]);
    ip(&outside, &["route", "add", "default", "via", "198.18.4.1"]);

    let listener = te.listener(7301);
    listener.set_nonblocking(true).expect("nonblocking");
    // TCP to any port of the gateway, pepwrt's own among them, with data
    // in a cookieless SYN; and to the server through the gateway.
    let targets = [
        "198.18.4.1:3135",
        "198.18.4.1:7301",
        "198.18.1.2:3135",
        "198.18.2.2:7301",
    ];
    let relayed = in_netns(&outside, move || {
        let mut got = Vec::new();
        for t in targets {
            let to: SocketAddr = t.parse().expect("addr");
            if let Ok(mut s) = fast_open_connect(to, b"GET / HTTP/1.0\r\n\r\n") {
                s.set_read_timeout(Some(Duration::from_secs(1)))
                    .expect("timeout");
                let mut buf = [0u8; 16];
                if matches!(s.read(&mut buf), Ok(n) if n > 0) {
                    got.push(t);
                }
            }
        }
        got
    })
    .join()
    .expect("outside");
    assert!(relayed.is_empty(), "answered from outside: {relayed:?}");

    // A forged WireGuard peer: a key the gateway does not know, claiming
    // a LAN address behind the router.
    let forged = format!("w{}f", te.prefix);
    let key = Command::new("wg")
        .arg("genkey")
        .output()
        .expect("wg genkey")
        .stdout;
    let keyfile = std::env::temp_dir().join(format!("{}.forged", te.prefix));
    std::fs::write(&keyfile, &key).expect("key");
    let gw_pub = std::fs::read_to_string(format!("/tmp/{}.wg/g.pub", te.prefix)).expect("g.pub");
    let mut wg = Command::new("ip")
        .args(["netns", "exec", &outside, "wireguard-go", &forged])
        .env("WG_PROCESS_FOREGROUND", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("wireguard-go");
    assert!(
        eventually(Duration::from_secs(5), || {
            std::path::Path::new(&format!("/var/run/wireguard/{forged}.sock")).exists()
        }),
        "forged peer's wireguard-go"
    );
    let k = keyfile.to_string_lossy().to_string();
    run(&[
        "ip",
        "netns",
        "exec",
        &outside,
        "wg",
        "set",
        &forged,
        "private-key",
        &k,
        "peer",
        gw_pub.trim(),
        "endpoint",
        "198.18.4.1:51820",
        "allowed-ips",
        "198.18.2.0/24",
    ]);
    ip(&outside, &["addr", "add", "198.18.0.99/24", "dev", &forged]);
    ip(&outside, &["link", "set", &forged, "up"]);
    ip(&outside, &["route", "add", "198.18.2.0/24", "dev", &forged]);
    let through_forged = in_netns(&outside, || {
        let to: SocketAddr = "198.18.2.2:7301".parse().expect("addr");
        TcpStream::connect_timeout(&to, Duration::from_secs(3)).is_ok()
    })
    .join()
    .expect("forged");
    let _ = wg.kill();
    let _ = wg.wait();
    let _ = std::fs::remove_file(&keyfile);
    let _ = std::fs::remove_file(format!("/var/run/wireguard/{forged}.sock"));
    assert!(!through_forged, "a connection through the forged peer");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the server saw a connection from outside"
    );
    assert_eq!(te.counter(gateway, "total"), 0, "the gateway split nothing");
}

/// A connect whose SYN carries `data` without a cookie (as the router's
/// pepwrt sends them), from any host.
fn fast_open_connect(to: SocketAddr, data: &[u8]) -> std::io::Result<TcpStream> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: a fresh socket we own; options take an int each.
    let s = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        TcpStream::from_raw_fd(fd)
    };
    for opt in [libc::TCP_FASTOPEN_CONNECT, libc::TCP_FASTOPEN_NO_COOKIE] {
        let one: libc::c_int = 1;
        // SAFETY: `one` lives across the call; its size is passed.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_TCP,
                opt,
                (&raw const one).cast(),
                4,
            )
        };
    }
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    // connect() returns at once; the first write sends SYN and data.
    let (sa, len) = sockaddr4(to);
    // SAFETY: sa is a sockaddr_in of the size passed.
    let r = unsafe { libc::connect(s.as_raw_fd(), (&raw const sa).cast(), len) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    (&s).write_all(data)?;
    Ok(s)
}

/// The accepted socket's SYN carried data it took (TCP_INFO's
/// tcpi_options, TCPI_OPT_SYN_DATA).
fn took_syn_data(s: &TcpStream) -> bool {
    const TCPI_OPT_SYN_DATA: u8 = 32;
    let info = common::tcp_info_head(s).expect("TCP_INFO");
    info[5] & TCPI_OPT_SYN_DATA != 0
}

/// Unicast routes of namespace `ns` (every table) but link-local ones,
/// one a line.
fn routes(ns: &str) -> String {
    let out = exec_in(
        ns,
        &["ip", "route", "show", "table", "all", "type", "unicast"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines = text.lines().filter(|l| !l.starts_with("fe80:"));
    lines.map(|l| format!("{l}\n")).collect()
}

#[test]
fn zero_rtt_puts_data_in_the_syn_only_into_the_tunnel() {
    let Some(mut te) = TwoEnds::new() else { return };
    let ns_r = te.var("NS_R");
    let wg_r = te.var("WG_R");
    // A server the router reaches beside the tunnel, on a route of its
    // own, made before the rules. It takes data in a SYN without a
    // cookie, as the gateway's pepwrt does: any data in the router's SYN
    // would be taken, and seen on its socket.
    let side = format!("{}d", te.prefix);
    te.extra_ns.push(side.clone());
    run(&["ip", "netns", "add", &side]);
    let (r_if, d_if) = (format!("{}dr", te.prefix), format!("{}dd", te.prefix));
    run(&[
        "ip", "link", "add", &r_if, "netns", &ns_r, "type", "veth", "peer", "name", &d_if, "netns",
        &side,
    ]);
    for (ns, dev, addr) in [
        (&ns_r, &r_if, "198.18.9.1/24"),
        (&side, &d_if, "198.18.9.2/24"),
    ] {
        run(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
        run(&["ip", "-n", ns, "link", "set", dev, "up"]);
    }
    run(&["ip", "-n", &side, "link", "set", "lo", "up"]);
    run(&[
        "ip",
        "-n",
        &side,
        "route",
        "add",
        "default",
        "via",
        "198.18.9.1",
    ]);
    exec_in(&side, &["sysctl", "-qw", "net.ipv4.tcp_fastopen=3"]);
    let side_listener = || {
        in_netns(&side, || {
            let l = TcpListener::bind("198.18.9.2:7401").expect("bind");
            for (opt, v) in [(libc::TCP_FASTOPEN, 16), (libc::TCP_FASTOPEN_NO_COOKIE, 1)] {
                let v: libc::c_int = v;
                // SAFETY: `v` lives across the call; its size is passed.
                let r = unsafe {
                    libc::setsockopt(
                        std::os::fd::AsRawFd::as_raw_fd(&l),
                        libc::IPPROTO_TCP,
                        opt,
                        (&raw const v).cast(),
                        4,
                    )
                };
                assert_eq!(r, 0, "fast open listener");
            }
            l
        })
        .join()
        .expect("listener")
    };
    let to: SocketAddr = "198.18.9.2:7401".parse().expect("addr");

    // The method sees data in a SYN: a cookieless fast open from the
    // router's namespace itself is taken.
    let listener = side_listener();
    let control = in_netns(&ns_r, move || {
        fast_open_connect(to, b"hello").expect("connect")
    })
    .join()
    .expect("control");
    let (s, _) = listener.accept().expect("accept");
    assert!(took_syn_data(&s), "a SYN with data, taken");
    drop((s, control, listener));

    let router = te.start(At::Router, &["--zero-rtt"]);
    let gateway = te.start(At::Gateway, &["--zero-rtt"]);
    // The tunnel's routes say cookieless fast open; the side's does not.
    let table = routes(&ns_r);
    let tunnel: Vec<&str> = table.lines().filter(|l| l.contains(&wg_r)).collect();
    let defaults = tunnel.iter().filter(|l| l.starts_with("default ")).count();
    assert_eq!(defaults, 2, "IPv4 and IPv6 into the tunnel: {table}");
    for l in &tunnel {
        assert!(l.contains("fastopen_no_cookie 1"), "{l}");
    }
    for l in table.lines().filter(|l| !l.contains(&wg_r)) {
        assert!(!l.contains("fastopen_no_cookie"), "{l}");
    }

    // A split connection to the side server: its SYN carries no data
    // (the kernel asks for a cookie instead), and every byte arrives.
    let listener = side_listener();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let syn_data = took_syn_data(&s);
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let r = recv_pattern(&mut s, 11, 100_000);
        send_pattern(&mut s, 12, 100_000, None).expect("send");
        (syn_data, r.good, r.mismatch_at)
    });
    te.in_client(move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        send_pattern(&mut s, 11, 100_000, None).expect("upload");
        let r = recv_pattern(&mut s, 12, 100_000);
        assert_eq!((r.good, r.mismatch_at), (100_000, None), "at the client");
    })
    .join()
    .expect("client");
    let (syn_data, good, mismatch) = server.join().expect("server");
    assert_eq!((good, mismatch), (100_000, None), "at the side server");
    assert!(!syn_data, "the router's SYN beside the tunnel carried data");
    assert!(
        eventually(Duration::from_secs(5), || te.counter(router, "active") == 0),
        "router: connection still live"
    );
    assert_eq!(te.counter(router, "total"), 1, "the router split it");
    assert_eq!(te.counter(router, "zero_rtt_opens"), 0, "beside the tunnel");

    // Into the tunnel, in the same run: data in the SYN, taken by the
    // gateway, the server reached within one round trip.
    let (accepted, _) = open_times(&te, 7402, true);
    assert!(accepted < RTT, "server accepted {accepted:?} after connect");
    for (n, name) in [(router, "router"), (gateway, "gateway")] {
        assert!(
            eventually(Duration::from_secs(5), || te.counter(n, "zero_rtt_opens")
                == 1),
            "{name}: one zero-RTT open"
        );
    }

    // Removal takes the attribute off the tunnel's routes again.
    let lan = te.var("LAN_IF");
    let mut del = vec!["rules", "--backend", "iptables", "--delete"];
    del.extend_from_slice(&["--intercept", &lan, "--tunnel", &wg_r, "--zero-rtt"]);
    del.extend_from_slice(&LINK);
    install_rules_in(&ns_r, &del);
    let table = routes(&ns_r);
    assert!(table.contains(&format!("default dev {wg_r}")), "{table}");
    assert!(!table.contains("fastopen_no_cookie"), "{table}");
}
