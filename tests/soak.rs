//! Soak, and kill-and-restart under traffic.
//!
//! The soak runs mixed traffic (transfers of random sizes both ways,
//! client resets, connections held idle, status requests) for
//! `PEPWRT_SOAK_SECS` seconds (40 in CI; an hour by hand:
//! `PEPWRT_SOAK_SECS=3600 cargo test --release --test soak -- --nocapture`)
//! and samples pepwrt's RSS and open fds: both flat after warm-up, no
//! slot leak (active back to 0), every byte checked.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// A streaming echo server (writes back as it reads, closes after EOF)
/// until `stop`.
fn stream_echo(l: TcpListener, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    l.set_nonblocking(true).expect("nonblocking");
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((mut s, _)) => {
                    thread::spawn(move || {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                        let mut buf = vec![0u8; 32 * 1024];
                        loop {
                            match s.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if s.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                                Err(_) => return,
                            }
                        }
                    });
                }
                Err(_) => thread::sleep(Duration::from_millis(2)),
            }
        }
    })
}

/// One echo transfer of `len` bytes, written and read at once; Ok if
/// every byte came back and the stream then ended with FIN.
fn echo_transfer(to: SocketAddr, seed: u64, len: usize) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(10))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let writer = thread::spawn(move || {
        send_pattern(&mut w, seed, len, None).and_then(|_| w.shutdown(Shutdown::Write))
    });
    let r = recv_pattern(&mut s, seed, len);
    let sent = writer.join().map_err(|_| "writer panicked".to_string())?;
    sent.map_err(|e| format!("send: {e}"))?;
    if r.mismatch_at.is_some() || r.ending.is_some() {
        return Err(format!("{len} bytes: {r:?}"));
    }
    match read_rest(&mut s) {
        (rest, Ending::Eof) if rest.is_empty() => Ok(()),
        (rest, end) => Err(format!("{len} bytes, then {} more and {end:?}", rest.len())),
    }
}

/// What an in-flight stream saw of the kill: bytes sent, then bytes
/// received intact, the first wrong byte and how the stream ended.
type Cut = (usize, (usize, Option<usize>, Option<Ending>));

struct Sample {
    at: Duration,
    rss: u64,
    fds: usize,
    active: u64,
}

#[test]
fn soak_mixed_traffic_keeps_memory_and_fds_flat() {
    let secs: u64 = std::env::var("PEPWRT_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let mut tb = testbed!();
    tb.install_rules("iptables", &[]);
    tb.start_pepwrt(&[
        "--log-level",
        "warn",
        "--max-conns",
        "48",
        "--buffer",
        "16k",
    ]);
    let pid = tb.pepwrt_pid();
    let stop = Arc::new(AtomicBool::new(false));
    let server = stream_echo(deep_listener(&tb.server, "[::]:7400"), stop.clone());
    let transfers = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let workers: Vec<_> = (0..8u64)
        .map(|w| {
            let (transfers, bytes) = (transfers.clone(), bytes.clone());
            tb.in_client(move || {
                let mut fails = Vec::new();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    i += 1;
                    let seed = w * 1_000_000_000 + i;
                    let v6 = i.is_multiple_of(3);
                    let to: SocketAddr = if v6 {
                        "[fd00:1::2]:7400"
                    } else {
                        "198.18.1.2:7400"
                    }
                    .parse()
                    .expect("addr");
                    let len = match (seed.wrapping_mul(2_654_435_761) >> 7) % 10 {
                        0 => 0,
                        1..=5 => (seed % 20_000) as usize,
                        6..=8 => (seed % 400_000) as usize,
                        _ => (seed % 3_000_000) as usize,
                    };
                    match i % 12 {
                        // A client that resets mid-transfer.
                        5 => {
                            if let Ok(mut s) =
                                TcpStream::connect_timeout(&to, Duration::from_secs(10))
                            {
                                let _ = send_pattern(&mut s, seed, 50_000, None);
                                set_linger0(&s);
                            }
                        }
                        // A connection held idle for a while.
                        9 => {
                            if let Ok(s) = TcpStream::connect_timeout(&to, Duration::from_secs(10))
                            {
                                thread::sleep(Duration::from_millis(700));
                                drop(s);
                            }
                        }
                        _ => match echo_transfer(to, seed, len) {
                            Ok(()) => {
                                transfers.fetch_add(1, Ordering::Relaxed);
                                bytes.fetch_add(len as u64, Ordering::Relaxed);
                            }
                            Err(e) => fails.push(format!("worker {w} transfer {i} v6 {v6}: {e}")),
                        },
                    }
                }
                fails
            })
        })
        .collect();
    let started = Instant::now();
    let mut samples = Vec::new();
    while Instant::now() < deadline {
        let lat = tb.status_latency();
        samples.push(Sample {
            at: started.elapsed(),
            rss: rss_kb(pid),
            fds: fd_count(pid),
            active: tb.counter("active"),
        });
        if lat.is_none() {
            panic!("status stopped answering during the soak");
        }
        thread::sleep(Duration::from_secs((secs / 20).clamp(1, 60)));
    }
    let fails: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect();
    let left = tb.wait_idle(Duration::from_secs(20));
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    let (rss_end, fds_end) = (rss_kb(pid), fd_count(pid));
    // Warm-up: the first quarter (ring pages are touched as slots are
    // first used).
    let warm: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at.as_secs() * 4 >= secs)
        .collect();
    let rss_warm = warm.first().map_or(0, |s| s.rss);
    let rss_peak = samples.iter().map(|s| s.rss).max().unwrap_or(0);
    let rss_warm_peak = warm.iter().map(|s| s.rss).max().unwrap_or(0);
    let fds_peak = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    let st = tb.status();
    eprintln!(
        "soak: {secs} s, {} transfers checked ({} MB), {} failures; pepwrt RSS first {} kB, after warm-up {rss_warm} kB, peak {rss_peak} kB, end {rss_end} kB; fds first {}, peak {fds_peak}, end {fds_end}; active at the end {left}; counters total {:?} split {:?} passed {:?}",
        transfers.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed) >> 20,
        fails.len(),
        samples.first().map_or(0, |s| s.rss),
        samples.first().map_or(0, |s| s.fds),
        json_number(&st, "total"),
        json_number(&st, "split"),
        json_number(&st, "passed"),
    );
    for s in &samples {
        eprintln!(
            "  t={:>5.0}s rss {} kB fds {} active {}",
            s.at.as_secs_f64(),
            s.rss,
            s.fds,
            s.active
        );
    }
    for f in fails.iter().take(20) {
        eprintln!("  {f}");
    }
    assert!(fails.is_empty(), "{} transfers failed", fails.len());
    assert_eq!(left, 0, "slots leaked: {st}");
    assert!(
        rss_warm_peak <= rss_warm + 1024,
        "RSS grew after warm-up: {rss_warm} -> {rss_warm_peak} kB"
    );
    let fds_first = samples.first().map_or(0, |s| s.fds);
    assert!(fds_end <= fds_first, "fds leaked: {fds_first} -> {fds_end}");
}

/// SIGKILL pepwrt while transfers run: new connections pass unsplit while
/// it is dead (queue bypass); after a restart the rules are unchanged, no
/// socket of the old process lingers, connections passed meanwhile keep
/// working, and new ones are split again.
#[test]
fn sigkill_under_traffic_fails_open_and_a_restart_leaves_no_stale_state() {
    let mut tb = testbed!();
    tb.install_rules("iptables", &[]);
    let rules = |tb: &Testbed| {
        ["iptables-save", "ip6tables-save"]
            .iter()
            .map(|c| {
                String::from_utf8_lossy(&tb.exec(&[c]).stdout)
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.starts_with(':'))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let rules_before = rules(&tb);
    let first = tb.start_pepwrt(&["--log-level", "info"]);
    let stop = Arc::new(AtomicBool::new(false));
    let server = stream_echo(deep_listener(&tb.server, "[::]:7401"), stop.clone());
    let to: SocketAddr = "198.18.1.2:7401".parse().expect("addr");
    // Slow streams in flight when pepwrt dies: 64 kB every 100 ms for 3 s.
    let streams: Vec<_> = (0..8u64)
        .map(|i| {
            tb.in_client(move || {
                let mut s = TcpStream::connect(to).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                let mut r = s.try_clone().expect("clone");
                let reader = thread::spawn(move || {
                    let got = recv_pattern(&mut r, 100 + i, 30 * 65536);
                    (got.good, got.mismatch_at, got.ending)
                });
                let mut pat = Pattern::new(100 + i);
                let mut buf = vec![0u8; 65536];
                let mut sent = 0;
                for _ in 0..30 {
                    pat.fill(&mut buf);
                    if s.write_all(&buf).is_err() {
                        break;
                    }
                    sent += buf.len();
                    thread::sleep(Duration::from_millis(100));
                }
                let _ = s.shutdown(Shutdown::Write);
                (sent, reader.join().expect("reader"))
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(800));
    let split_before = tb.counter("total");
    tb.signal(first, libc::SIGKILL);
    let _ = tb.wait(first, Duration::from_secs(5));
    // While pepwrt is dead, new connections pass (fail-open); one of them
    // stays open across the restart.
    let dead_ok = tb
        .in_client(move || {
            (0..20)
                .filter(|i| echo_transfer(to, 500 + i, 10_000).is_ok())
                .count()
        })
        .join()
        .expect("dead");
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let across = tb.in_client(move || {
        let mut s = TcpStream::connect(to).expect("connect while dead");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(b"before").expect("write");
        let mut b = [0u8; 6];
        s.read_exact(&mut b).expect("echo before");
        let _ = rx.recv_timeout(Duration::from_secs(30));
        s.write_all(b"after!").expect("write after restart");
        s.read_exact(&mut b).expect("echo after restart");
        &b == b"after!"
    });
    let inflight: Vec<Cut> = streams
        .into_iter()
        .map(|s| s.join().expect("stream"))
        .collect();
    // The old process's sockets are gone with it.
    let ss = String::from_utf8_lossy(&tb.exec(&["ss", "-tanH"]).stdout).to_string();
    let stale: Vec<&str> = ss
        .lines()
        .filter(|l| !l.starts_with("TIME-WAIT") && !l.starts_with("LISTEN"))
        .collect();
    tb.start_pepwrt(&["--log-level", "info"]);
    tx.send(()).ok();
    let across_ok = across.join().expect("across");
    let after_ok = tb
        .in_client(move || {
            (0..20)
                .filter(|i| echo_transfer(to, 900 + i, 10_000).is_ok())
                .count()
        })
        .join()
        .expect("after");
    let split_after = tb.counter("total");
    let left = tb.wait_idle(Duration::from_secs(10));
    let rules_after = rules(&tb);
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    eprintln!(
        "kill: {split_before} split before SIGKILL; in-flight streams (sent, (good, mismatch, ending)): {inflight:?}; {dead_ok}/20 connected while dead; {after_ok}/20 after restart, {split_after} split by the new pepwrt; connection across the restart ok {across_ok}; router sockets after the kill: {stale:?}"
    );
    assert_eq!(dead_ok, 20, "fail-open: connections while pepwrt is dead");
    assert!(
        across_ok,
        "a connection passed while pepwrt was dead broke at its restart"
    );
    assert_eq!(after_ok, 20, "connections after the restart");
    assert_eq!(split_after, 20, "the new pepwrt splits again");
    assert_eq!(left, 0);
    assert!(
        stale.is_empty(),
        "sockets of the killed pepwrt remain: {stale:?}"
    );
    assert_eq!(
        rules_before, rules_after,
        "the rules changed across kill and restart"
    );
    for (sent, (good, mismatch, ending)) in &inflight {
        assert!(mismatch.is_none(), "an in-flight stream got wrong bytes");
        // A stream cut by the kill must not look complete: it ends short
        // with a reset, never with a clean EOF. NEW defect found by this
        // campaign (not in issue 11's list): when pepwrt dies, the kernel
        // closes its sockets, and a socket with nothing unread closes with
        // FIN, so the peer sees a clean but truncated stream (6 of 8 here).
        // SO_LINGER 0 on both legs from the start would make the kernel
        // reset them instead (an orderly close comes only after both FINs,
        // when linger 0 sends no RST).
        if *good < *sent {
            assert_eq!(
                *ending,
                Some(Ending::Reset),
                "a stream cut by SIGKILL ended with {ending:?} after {good} of {sent} bytes"
            );
        }
    }
}
