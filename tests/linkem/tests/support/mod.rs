//! Two hosts, A and B, joined through linkem in a third namespace:
//!
//!   A a0 (198.19.0.1, fd00:19::1) ── ea [linkem] eb ── b0 (198.19.0.2, fd00:19::2) B
//!
//! Namespaces are named after the pid and a counter, and are deleted
//! (and linkem stopped) when the `Wire` drops, even on a failed assert.

#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

pub const LINKEM: &str = env!("CARGO_BIN_EXE_linkem");
pub const A4: &str = "198.19.0.1";
pub const B4: &str = "198.19.0.2";
const MAC_A: &str = "02:00:00:00:19:01";
const MAC_B: &str = "02:00:00:00:19:02";

static SEQ: AtomicU32 = AtomicU32::new(0);

pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct Wire {
    pub a: String,
    pub b: String,
    pub e: String,
    linkem: Option<(Child, ChildStdout)>,
}

impl Wire {
    /// The namespaces and veths, linkem not yet running.
    pub fn new() -> Wire {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "linkem tests build network namespaces: run as root"
        );
        let p = format!(
            "lk{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let w = Wire {
            a: format!("{p}a"),
            b: format!("{p}b"),
            e: format!("{p}e"),
            linkem: None,
        };
        // From here on Drop cleans up whatever was made.
        for ns in [&w.a, &w.b, &w.e] {
            run(&["ip", "netns", "add", ns]);
            w.exec(ns, &["ip", "link", "set", "lo", "up"]);
        }
        w.exec(
            &w.e,
            &[
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        );
        for (ns, dev, mac, peer) in [(&w.a, "a0", MAC_A, "ea"), (&w.b, "b0", MAC_B, "eb")] {
            run(&[
                "ip", "link", "add", dev, "address", mac, "netns", ns, "type", "veth", "peer",
                "name", peer, "netns", &w.e,
            ]);
            // MTU-sized frames with real checksums must reach linkem.
            w.exec(
                ns,
                &[
                    "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off", "tx", "off",
                ],
            );
            w.exec(
                &w.e,
                &[
                    "ethtool", "-K", peer, "tso", "off", "gso", "off", "gro", "off", "tx", "off",
                ],
            );
            w.exec(&w.e, &["ip", "link", "set", peer, "up"]);
        }
        for (ns, dev, v4, v6, peer4, peer6, peer_mac) in [
            (
                &w.a,
                "a0",
                "198.19.0.1/24",
                "fd00:19::1/64",
                B4,
                "fd00:19::2",
                MAC_B,
            ),
            (
                &w.b,
                "b0",
                "198.19.0.2/24",
                "fd00:19::2/64",
                A4,
                "fd00:19::1",
                MAC_A,
            ),
        ] {
            w.exec(ns, &["ip", "addr", "add", v4, "dev", dev]);
            w.exec(ns, &["ip", "-6", "addr", "add", v6, "dev", dev, "nodad"]);
            w.exec(ns, &["ip", "link", "set", dev, "up"]);
            // No ARP across a lossy emulated link skews a measurement.
            for (family, peer) in [("-4", peer4), ("-6", peer6)] {
                let args = ["ip", family, "neigh", "replace", peer, "lladdr", peer_mac];
                w.exec(ns, &[&args[..], &["dev", dev, "nud", "permanent"]].concat());
            }
        }
        w
    }

    pub fn exec(&self, ns: &str, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Starts linkem: `ab` shapes A -> B, `ba` shapes B -> A.
    pub fn start(&mut self, ab: &str, ba: &str) {
        let mut child = Command::new("ip")
            .args([
                "netns", "exec", &self.e, LINKEM, "--a", "ea", "--b", "eb", "--ab", ab, "--ba", ba,
                "--seed", "42",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("linkem");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        // Ends at "ready" or at EOF if linkem exits.
        reader.read_line(&mut line).expect("linkem output");
        assert_eq!(line.trim(), "ready", "linkem did not start");
        self.linkem = Some((child, reader.into_inner()));
    }

    /// Stops linkem and returns its final counters (two JSON lines).
    pub fn stop(&mut self) -> String {
        let Some((mut child, mut out)) = self.linkem.take() else {
            return String::new();
        };
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    }

    /// Runs `f` on a thread that lives in namespace `ns`.
    pub fn within<T: Send + 'static>(
        &self,
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        within(ns, f)
    }
}

/// Runs `f` on a new thread moved into network namespace `ns`.
pub fn within<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    thread::spawn(move || {
        let file = File::open(&path).expect("netns file");
        // SAFETY: setns only moves this thread into the namespace.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}");
        f()
    })
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.stop();
        for ns in [&self.a, &self.b, &self.e] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Root may pick any available algorithm per socket even when the
/// namespace default is restricted; the tests want plain cubic.
pub fn use_cubic(fd: i32) {
    let name = b"cubic";
    // SAFETY: name is valid for its length.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_ptr() as *const libc::c_void,
            name.len() as u32,
        )
    };
    assert_eq!(
        r,
        0,
        "TCP_CONGESTION cubic: {}",
        std::io::Error::last_os_error()
    );
}

/// Round-trip times in ms from `ping` output lines.
pub fn ping_times(output: &str) -> Vec<f64> {
    output
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect()
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|x, y| x.partial_cmp(y).expect("no NaN"));
    v[v.len() / 2]
}

static EXCLUSIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Accuracy tests run one at a time: on two cores a parallel 100 Mbit/s
/// transfer would skew the others' timing.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    EXCLUSIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// A number from linkem's final counters: `dir` is "ab" or "ba".
pub fn counter(stats: &str, dir: &str, key: &str) -> u64 {
    let line = stats
        .lines()
        .find(|l| l.contains(&format!("\"dir\":\"{dir}\"")))
        .unwrap_or_else(|| panic!("no {dir} in {stats}"));
    let at = line
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + key.len()
        + 3;
    line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("number")
}
