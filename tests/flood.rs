//! Floods: spoofed SYNs (raw sockets in the client namespace), a burst of
//! 1000 real connects, thousands of idle connections. pepwrt must stay
//! responsive (status latency printed; asserted only to answer at all
//! within 2 s), account for every SYN, keep splitting legitimate
//! connections under a modest flood, and keep its memory flat.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// The floods run one at a time: each measures pepwrt under its own load.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lets this process (and the pepwrt it starts, which inherits it) hold
/// thousands of sockets.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit pointers.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(16384);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// An echo server (read to EOF, write it back, close) until dropped.
struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Echo {
    fn start(tb: &Testbed, port: u16) -> Echo {
        let l: TcpListener = deep_listener(&tb.server, &format!("[::]:{port}"));
        l.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        thread::spawn(move || {
                            let _ = s.set_nonblocking(false);
                            if let Ok(d) = read_all(&mut s, Duration::from_secs(60)) {
                                let _ = s.write_all(&d);
                            }
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Echo {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One echo round trip; true if the bytes came back intact.
fn echo_ok(to: SocketAddr, msg: &[u8]) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(5)) else {
        return false;
    };
    s.write_all(msg).is_ok()
        && s.shutdown(Shutdown::Write).is_ok()
        && read_all(&mut s, Duration::from_secs(10)).is_ok_and(|b| b == msg)
}

fn csum(data: &[u8], mut sum: u32) -> u16 {
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 SYN with an MSS option, checksums right.
fn spoofed_syn(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, seq: u32) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(24);
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0, 0x60, 0x02, 0xfa, 0xf0, 0, 0, 0, 0]);
    tcp.extend_from_slice(&[2, 4, 0x05, 0xb4]);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, 6, 0, tcp.len() as u8]);
    pseudo.extend_from_slice(&tcp);
    let c = csum(&pseudo, 0);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&(20 + tcp.len() as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = csum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&tcp);
    ip
}

/// Sends `count` spoofed SYNs at `rate` per second (0: as fast as
/// possible) from the client namespace, from addresses in 198.18.0.0/24
/// that no host has (their SYN-ACKs go nowhere). Returns how many went.
fn spoof(tb: &Testbed, count: u32, rate: u32, port: u16, salt: u32) -> thread::JoinHandle<u32> {
    tb.in_client(move || {
        // SAFETY: a raw socket we own, sendto with a valid buffer and
        // sockaddr.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        assert!(fd >= 0, "raw socket");
        let _own = unsafe { TcpStream::from_raw_fd(fd) };
        let dst = [198, 18, 1, 2];
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(dst),
            },
            sin_zero: [0; 8],
        };
        let start = Instant::now();
        let mut sent = 0;
        for i in 0..count {
            if rate > 0 {
                let at = start + Duration::from_secs_f64(f64::from(i) / f64::from(rate));
                if let Some(wait) = at.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
            }
            let k = i.wrapping_mul(2_654_435_761) ^ salt;
            let src = [198, 18, 0, 100 + (k % 150) as u8];
            let sport = 20000 + (i % 40000) as u16;
            let pkt = spoofed_syn(src, sport, dst, port, k);
            let r = unsafe {
                libc::sendto(
                    fd,
                    pkt.as_ptr().cast(),
                    pkt.len(),
                    0,
                    (&raw const sin).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if r == pkt.len() as isize {
                sent += 1;
            }
        }
        sent
    })
}

/// Samples status latency every 20 ms until stopped: (samples, worst,
/// how many over 50 ms, how many got no answer).
fn watch_status(
    tb: &Testbed,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<(usize, Duration, usize, usize)> {
    let control = tb.control.clone();
    thread::spawn(move || {
        let (mut n, mut worst, mut slow, mut none) = (0, Duration::ZERO, 0, 0);
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let ok = (|| {
                let mut s = std::os::unix::net::UnixStream::connect(&control).ok()?;
                s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                s.write_all(b"json\n").ok()?;
                let mut out = String::new();
                s.read_to_string(&mut out).ok()?;
                out.contains("\"counters\"").then_some(())
            })();
            let took = t.elapsed();
            n += 1;
            worst = worst.max(took);
            slow += usize::from(took > Duration::from_millis(50));
            none += usize::from(ok.is_none());
            thread::sleep(Duration::from_millis(20));
        }
        (n, worst, slow, none)
    })
}

/// Counters that must add up: split + passed (+ malformed) against the
/// SYNs sent. Prints them with the kernel's queue statistics.
fn accounting(tb: &Testbed, what: &str, syns: u64) -> (u64, u64) {
    // A loaded debug build needs longer than the two ticks.
    let st = tb.status_counting(syns, Duration::from_secs(10));
    let n = |k: &str| json_number(&st, k).unwrap_or(0);
    let (split, passed, malformed) = (n("split"), n("passed"), n("malformed"));
    let unseen = n("syn_dropped");
    eprintln!(
        "{what}: {syns} SYNs sent; pepwrt split {split}, passed {passed}, malformed {malformed}, unseen (queue socket full) {unseen}, total {}; queue rule {} packets; kernel queue (total, queue_dropped, user_dropped, id_sequence) {:?}",
        n("total"),
        tb.queue_rule_packets(),
        tb.kernel_queue_stats()
    );
    (syns_counted(&st), n("total"))
}

/// Defect 6 of issue 11: 30 spoofed SYNs a second must not keep the pool
/// full; at least 75 % of legitimate connections are still split. Then a
/// fast burst of spoofed SYNs (defect 4: SYNs lost at the queue socket
/// are in no counter). Memory is flat across two rounds.
#[test]
fn spoofed_syn_flood_leaves_room_for_legitimate_connections() {
    let _serial = serial();
    let mut tb = testbed!();
    tb.install_rules("iptables", &[]);
    tb.start_pepwrt(&["--log-level", "info"]);
    let pid = tb.pepwrt_pid();
    let _echo = Echo::start(&tb, 7300);
    let to: SocketAddr = "198.18.1.2:7300".parse().expect("addr");
    let stop = Arc::new(AtomicBool::new(false));
    let watch = watch_status(&tb, stop.clone());
    let rss0 = rss_kb(pid);
    let mut rss_rounds = Vec::new();
    let mut sent_total = 0u64;
    let mut legit_total = 0u64;
    let mut share;
    let mut shares = Vec::new();
    for round in 0..2u32 {
        let total0 = tb.counter("total");
        let flood = spoof(&tb, 300, 30, 7300, round * 7777);
        // Legitimate connections every 100 ms while the flood runs (10 s).
        let legit = tb
            .in_client(move || {
                let mut ok = 0;
                for _ in 0..95 {
                    ok += usize::from(echo_ok(to, b"legit"));
                    thread::sleep(Duration::from_millis(100));
                }
                ok
            })
            .join()
            .expect("legit");
        let sent = flood.join().expect("flood");
        let split_legit = tb.counter("total") - total0;
        sent_total += u64::from(sent) + 95;
        legit_total += 95;
        share = split_legit as f64 / 95.0;
        rss_rounds.push(rss_kb(pid));
        eprintln!(
            "spoofed flood round {round}: {sent} SYNs at 30/s, {legit}/95 legitimate connections worked, {split_legit} split ({:.0} %)",
            share * 100.0
        );
        assert_eq!(legit, 95, "legitimate connections failed under the flood");
        let (seen, _) = accounting(&tb, "after the 30/s flood", sent_total);
        assert_eq!(seen, sent_total, "every SYN is split or passed");
        shares.push(share);
    }
    // A fast burst: as many as the raw socket sends in a few seconds.
    let t = Instant::now();
    let burst = spoof(&tb, 5000, 0, 7300, 99).join().expect("burst");
    let burst_s = t.elapsed().as_secs_f64();
    sent_total += u64::from(burst);
    eprintln!(
        "fast burst: {burst} spoofed SYNs in {burst_s:.2} s ({:.0}/s)",
        f64::from(burst) / burst_s
    );
    // No packet follows the burst: what the socket missed at its end is
    // counted by the queue's own id (accounting waits for it).
    let (seen, _) = accounting(&tb, "right after the fast burst", sent_total);
    assert_eq!(
        seen, sent_total,
        "SYNs unaccounted for at the end of a burst"
    );
    let legit_after = tb
        .in_client(move || (0..10).filter(|_| echo_ok(to, b"after")).count())
        .join()
        .expect("c");
    sent_total += 10;
    legit_total += 10;
    stop.store(true, Ordering::Relaxed);
    let (samples, worst, slow, none) = watch.join().expect("watch");
    let rss1 = rss_kb(pid);
    eprintln!(
        "status during the floods: {samples} requests, worst {worst:?}, {slow} over 50 ms, {none} unanswered; pepwrt RSS {rss0} kB at start, {rss_rounds:?} after each round, {rss1} kB at the end; {legit_total} legitimate connections, shares split {shares:.2?}"
    );
    assert_eq!(legit_after, 10, "connections after the burst");
    assert!(
        worst < Duration::from_secs(2) && none == 0,
        "status stopped answering"
    );
    assert!(
        rss_rounds[1] <= rss_rounds[0] + 1024,
        "RSS grew between rounds: {rss_rounds:?}"
    );
    let (seen, _) = accounting(&tb, "after the fast burst", sent_total);
    // Defect 6 of issue 11: reservations of spoofed SYNs fill the pool.
    for share in &shares {
        assert!(
            *share >= 0.75,
            "only {:.0} % of legitimate connections split under 30 spoofed SYN/s",
            share * 100.0
        );
    }
    // Defect 4 of issue 11: SYNs the queue socket could not take were in
    // no counter; now they are `syn_dropped` (from the kernel's packet id
    // gaps) and every SYN is split, passed or counted unseen.
    assert_eq!(seen, sent_total, "SYNs unaccounted for after a burst");
}

/// Opens `n` sockets toward `to` at once (non-blocking connects in one
/// loop: a burst of SYNs), waits until each connects or fails.
fn burst_connect(to: SocketAddr, n: usize, limit: Duration) -> Vec<Option<TcpStream>> {
    let mut socks: Vec<TcpStream> = Vec::with_capacity(n);
    let (ra, rl) = sockaddr4(to);
    for _ in 0..n {
        // SAFETY: a socket we own; connect with a valid sockaddr.
        unsafe {
            let fd = libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            );
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            socks.push(TcpStream::from_raw_fd(fd));
            libc::connect(fd, (&raw const ra).cast(), rl);
        }
    }
    let deadline = Instant::now() + limit;
    let mut done: Vec<Option<bool>> = vec![None; n];
    while done.iter().any(Option::is_none) && Instant::now() < deadline {
        let mut pfds: Vec<libc::pollfd> = socks
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            })
            .collect();
        // SAFETY: a valid array of pollfds.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 100) };
        for (i, p) in pfds.iter().enumerate() {
            if done[i].is_none() && p.revents != 0 {
                done[i] = Some(
                    socks[i].take_error().ok().flatten().is_none() && socks[i].peer_addr().is_ok(),
                );
            }
        }
    }
    socks
        .into_iter()
        .zip(done)
        .map(|(s, ok)| {
            ok.unwrap_or(false).then(|| {
                let _ = s.set_nonblocking(false);
                s
            })
        })
        .collect()
}

/// A burst of 1000 connects (pool large enough for all): each connects and
/// echoes intact, status keeps answering, and every SYN is split or
/// passed (defect 4 of issue 11: the queue socket overflows and SYNs pass
/// uncounted; defect 3: with the transparent outgoing source some
/// outgoing legs collide with the client's own ports).
#[test]
fn burst_of_1000_connects_is_accounted_and_relayed() {
    let _serial = serial();
    raise_fd_limit();
    let mut tb = testbed!();
    tb.install_rules("iptables", &[]);
    tb.start_pepwrt(&[
        "--log-level",
        "info",
        "--max-conns",
        "1100",
        "--buffer",
        "4k",
    ]);
    let pid = tb.pepwrt_pid();
    let _echo = Echo::start(&tb, 7301);
    let to: SocketAddr = "198.18.1.2:7301".parse().expect("addr");
    let stop = Arc::new(AtomicBool::new(false));
    let watch = watch_status(&tb, stop.clone());
    let rss0 = rss_kb(pid);
    let mut peak = rss0;
    let mut results = Vec::new();
    for round in 0..2 {
        let t = Instant::now();
        let (connected, echoed, slow) = tb
            .in_client(move || {
                let socks = burst_connect(to, 1000, Duration::from_secs(20));
                let connected = socks.iter().filter(|s| s.is_some()).count();
                let mut echoed = 0;
                let mut slow = 0;
                let mut why = Vec::new();
                for (i, s) in socks.into_iter().enumerate() {
                    let Some(mut s) = s else { continue };
                    let msg = format!("burst {i}");
                    let t = Instant::now();
                    let local = s.local_addr().ok();
                    let r = s
                        .write_all(msg.as_bytes())
                        .and_then(|_| s.shutdown(Shutdown::Write))
                        .and_then(|_| read_all(&mut s, Duration::from_secs(10)));
                    let ok = r.as_ref().is_ok_and(|b| b == msg.as_bytes());
                    if !ok {
                        why.push(format!("{local:?}: {:?}", r.map(|b| b.len())));
                    }
                    echoed += usize::from(ok);
                    slow += usize::from(t.elapsed() > Duration::from_millis(500));
                }
                if !why.is_empty() {
                    eprintln!("burst: failed echoes {why:?}");
                }
                (connected, echoed, slow)
            })
            .join()
            .expect("burst");
        peak = peak.max(rss_kb(pid));
        let active = tb.wait_idle(Duration::from_secs(15));
        eprintln!(
            "burst round {round}: 1000 connects, {connected} connected, {echoed} echoed intact ({slow} took over 0.5 s), {:.1} s; active after {active}",
            t.elapsed().as_secs_f64()
        );
        results.push((connected, echoed, active));
    }
    stop.store(true, Ordering::Relaxed);
    let (samples, worst, slow, none) = watch.join().expect("watch");
    let rss1 = rss_kb(pid);
    eprintln!(
        "status during the bursts: {samples} requests, worst {worst:?}, {slow} over 50 ms, {none} unanswered; pepwrt RSS {rss0} -> peak {peak} -> {rss1} kB, fds {}",
        fd_count(pid)
    );
    let (seen, total) = accounting(&tb, "after two bursts of 1000", 2000);
    for (connected, echoed, active) in &results {
        assert_eq!(
            (*connected, *echoed),
            (1000, 1000),
            "burst: connects or echoes failed (defect 3 of issue 11?)"
        );
        assert_eq!(*active, 0, "slots still active after the burst");
    }
    assert!(
        worst < Duration::from_secs(2) && none == 0,
        "status stopped answering"
    );
    // Defect 4 of issue 11 (add the daemon's drop counter to `seen`).
    assert_eq!(seen, 2000, "SYNs unaccounted for in a burst of 1000");
    assert_eq!(
        total, 2000,
        "with room in the pool every connection is split"
    );
}

/// Thousands of idle connections: status still answers, a bulk transfer
/// beside them is intact (its rate is printed: defect 8 of issue 11, the
/// poll set rebuilt on every wake-up, cut it from 500 to 30 MB/s), and
/// every slot is freed when they close.
#[test]
fn thousands_of_idle_connections_leave_pepwrt_responsive() {
    let _serial = serial();
    raise_fd_limit();
    const IDLE: usize = 2000;
    let mut tb = testbed!();
    tb.install_rules("iptables", &[]);
    tb.start_pepwrt(&[
        "--log-level",
        "info",
        "--max-conns",
        "2100",
        "--buffer",
        "4k",
    ]);
    let pid = tb.pepwrt_pid();
    let (rss0, fds0) = (rss_kb(pid), fd_count(pid));
    // The server holds its ends open until told.
    let l = deep_listener(&tb.server, "198.18.1.2:7302");
    l.set_nonblocking(true).expect("nonblocking");
    let held = Arc::new(Mutex::new(Vec::new()));
    let h2 = held.clone();
    let acceptor = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut n = 0;
        while n < IDLE && Instant::now() < deadline {
            match l.accept() {
                Ok((s, _)) => {
                    h2.lock().expect("held").push(s);
                    n += 1;
                }
                Err(_) => thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    let to: SocketAddr = "198.18.1.2:7302".parse().expect("addr");
    let clients = tb
        .in_client(move || {
            let mut v = Vec::new();
            for chunk in 0..IDLE / 200 {
                let _ = chunk;
                v.extend(
                    burst_connect(to, 200, Duration::from_secs(20))
                        .into_iter()
                        .flatten(),
                );
            }
            v
        })
        .join()
        .expect("idle clients");
    acceptor.join().expect("acceptor");
    let mut active = 0;
    for _ in 0..100 {
        active = tb.counter("active");
        if active as usize >= clients.len() {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let lat: Vec<Duration> = (0..20).filter_map(|_| tb.status_latency()).collect();
    let worst = lat.iter().max().copied().unwrap_or(Duration::MAX);
    let (rss_mid, fds_mid) = (rss_kb(pid), fd_count(pid));
    // A bulk transfer beside them.
    let _echo = Echo::start(&tb, 7303);
    let bulk = 8 << 20;
    let t = Instant::now();
    let ok = tb
        .in_client(move || {
            let mut s = TcpStream::connect("198.18.1.2:7303").expect("connect");
            let mut r = s.try_clone().expect("clone");
            let reader = thread::spawn(move || {
                let _ = r.set_read_timeout(Some(Duration::from_secs(60)));
                let got = recv_pattern(&mut r, 5, bulk);
                got.good == bulk && got.mismatch_at.is_none()
            });
            send_pattern(&mut s, 5, bulk, None).expect("send");
            s.shutdown(Shutdown::Write).expect("shutdown");
            reader.join().expect("reader")
        })
        .join()
        .expect("bulk");
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "idle: {} idle connections, {active} active in pepwrt; status {lat:?} (worst {worst:?}); bulk echo of 8 MB beside them: {:.1} MB/s each way, intact {ok}; pepwrt RSS {rss0} -> {rss_mid} kB, fds {fds0} -> {fds_mid}",
        clients.len(),
        8.0 / secs
    );
    drop(clients);
    held.lock().expect("held").clear();
    let left = tb.wait_idle(Duration::from_secs(20));
    let (rss1, fds1) = (rss_kb(pid), fd_count(pid));
    eprintln!("idle: after closing, {left} active; RSS {rss1} kB, fds {fds1}");
    assert_eq!(active as usize, IDLE, "every idle connection split");
    assert!(ok, "the bulk transfer beside idle connections was damaged");
    assert!(worst < Duration::from_secs(2), "status stopped answering");
    assert_eq!(left, 0, "slots leaked");
    assert!(fds1 <= fds0 + 2, "fds leaked: {fds0} -> {fds1}");
}
