//! Relay throughput over plain veths, direct and through pepwrt, measured
//! side by side in one run. A benchmark, not a test: it prints ratios and
//! asserts only that every byte arrived.
//!
//!     cargo test --release --test throughput -- --ignored --nocapture

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const BYTES: usize = 1 << 30;

/// Sends BYTES from client to server (or back), returns Gbit/s.
fn transfer(tb: &Testbed, port: u16, download: bool) -> f64 {
    let listener = tb.server_listener(&format!("198.18.1.2:{port}"));
    let srv = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        move_bytes(&mut s, download)
    });
    let start = Instant::now();
    let got = tb
        .in_client(move || {
            let mut s =
                TcpStream::connect("198.18.1.2:".to_string() + &port.to_string()).expect("connect");
            move_bytes(&mut s, !download)
        })
        .join()
        .expect("client");
    let secs = start.elapsed().as_secs_f64();
    let sent = srv.join().expect("server");
    assert_eq!(got.max(sent), BYTES);
    BYTES as f64 * 8.0 / secs / 1e9
}

/// Sender writes BYTES then closes; receiver counts to EOF.
fn move_bytes(s: &mut TcpStream, send: bool) -> usize {
    let mut buf = vec![0x5au8; 256 * 1024];
    let mut total = 0;
    if send {
        while total < BYTES {
            let n = (BYTES - total).min(buf.len());
            s.write_all(&buf[..n]).expect("write");
            total += n;
        }
        s.shutdown(Shutdown::Write).expect("shutdown");
        let _ = s.read(&mut buf);
    } else {
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) => panic!("read: {e}"),
            }
        }
    }
    total
}

fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn relay_throughput_direct_vs_pepwrt() {
    let mut tb = testbed!();
    let mut port = 9000;
    let mut results = Vec::new();
    for round in 0..3 {
        for download in [false, true] {
            port += 1;
            let direct = transfer(&tb, port, download);
            results.push((round, download, "direct", direct));
        }
    }
    tb.install_rules("iptables", &[]);
    tb.start_pepwrt(&["--buffer", "256k", "--log-level", "warn"]);
    let st = tb.status();
    let pid = json_number(&st, "pid").expect("pid").to_string();
    let cpu0 = cpu_seconds(&pid);
    for round in 0..3 {
        for download in [false, true] {
            port += 1;
            let split = transfer(&tb, port, download);
            results.push((round, download, "pepwrt", split));
        }
    }
    let cpu = cpu_seconds(&pid) - cpu0;
    let median = |via: &str, down: bool| {
        let mut v: Vec<f64> = results
            .iter()
            .filter(|r| r.2 == via && r.1 == down)
            .map(|r| r.3)
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!("\n| direction | direct Gbit/s | pepwrt Gbit/s | ratio |");
    println!("|---|---|---|---|");
    for (name, down) in [("upload", false), ("download", true)] {
        let (d, p) = (median("direct", down), median("pepwrt", down));
        println!("| {name} | {d:.2} | {p:.2} | {:.2} |", p / d);
    }
    let gb = 6.0 * BYTES as f64 / 1e9;
    println!(
        "pepwrt CPU: {:.2} s for {gb:.1} GB relayed ({:.2} s/GB)",
        cpu,
        cpu / gb
    );
}

/// Raises this process's open-file limit to its hard limit: the idle
/// connections' both ends live in this process.
fn raise_nofile() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct passed.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        rl.rlim_cur = rl.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
    }
}

/// One bulk transfer alone, then beside 1500 idle split connections: a
/// wake-up must cost what is ready, not what is open (issue 11, defect 8).
///
///     cargo test --release --test throughput -- --ignored --nocapture idle
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn bulk_flow_beside_idle_connections() {
    raise_nofile();
    let mut tb = testbed!();
    tb.install_rules("iptables", &[]);
    tb.start_pepwrt(&["--max-conns", "1600", "--log-level", "warn"]);
    let alone = transfer(&tb, 9100, false);
    let idle_listener = tb.server_listener("198.18.1.2:9101");
    let held = thread::spawn(move || {
        (0..1500)
            .map(|_| idle_listener.accept().expect("accept").0)
            .collect::<Vec<_>>()
    });
    let clients = tb
        .in_client(|| {
            (0..1500)
                .map(|_| TcpStream::connect("198.18.1.2:9101").expect("connect"))
                .collect::<Vec<_>>()
        })
        .join()
        .expect("idle clients");
    let servers = held.join().expect("idle servers");
    eventually(Duration::from_secs(10), || tb.counter("active") == 1500);
    let beside = transfer(&tb, 9102, false);
    println!("\n| bulk upload | Gbit/s |\n|---|---|");
    println!("| alone | {alone:.2} |");
    println!("| beside 1500 idle connections | {beside:.2} |");
    println!("ratio: {:.2}", beside / alone);
    drop((clients, servers));
}
