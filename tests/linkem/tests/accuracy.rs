//! linkem does what it is told: RTT, rate, loss and scheduled events,
//! measured end to end through real namespaces. Tolerances are wide
//! enough for a loaded 2-core machine; they catch a broken emulator,
//! not a percent of drift.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use support::*;

fn ping(w: &Wire, count: u32, interval: &str) -> (Vec<f64>, String) {
    let out = w.exec(
        &w.a,
        &[
            "ping",
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            interval,
            "-W",
            "2",
            B4,
        ],
    );
    (ping_times(&out), out)
}

#[test]
fn ping_rtt_matches_configured_delay() {
    let _g = exclusive();
    for (one_way_ms, expect_ms) in [(25.0, 50.0), (300.0, 600.0)] {
        let mut w = Wire::new();
        let spec = format!("delay={one_way_ms}ms");
        w.start(&spec, &spec);
        let (mut rtts, out) = ping(&w, 10, "0.1");
        assert!(rtts.len() >= 9, "lost pings on a lossless link: {out}");
        let med = median(&mut rtts);
        eprintln!(
            "delay {one_way_ms} ms each way: median RTT {med:.3} ms (expected {expect_ms})\n{}",
            w.stop()
        );
        assert!(
            med >= expect_ms && med <= expect_ms * 1.03 + 1.0,
            "RTT {med} ms, expected {expect_ms}: {out}"
        );
    }
}

#[test]
fn jitter_stays_within_bounds() {
    let _g = exclusive();
    let mut w = Wire::new();
    w.start("delay=20ms,jitter=5ms", "delay=20ms");
    let (mut rtts, out) = ping(&w, 40, "0.05");
    assert!(rtts.len() >= 38, "{out}");
    // Percentiles, not extremes: one late wake-up on a busy host must
    // not fail the test.
    let med = median(&mut rtts);
    let (lo, hi) = (rtts[rtts.len() / 10], rtts[rtts.len() * 9 / 10]);
    eprintln!(
        "jitter 5 ms: RTT p10 {lo:.2}, median {med:.2}, p90 {hi:.2} ms\n{}",
        w.stop()
    );
    assert!(lo >= 35.0 && hi <= 47.0, "RTT range {lo}..{hi}");
    assert!(hi - lo >= 3.0, "no visible jitter: {lo}..{hi}");
}

/// Goodput of one cubic TCP flow from B to A over `secs`, skipping
/// slow start's first second.
fn tcp_goodput_bps(a: &str, b: &str, secs: f64) -> f64 {
    let listener = within(b, || {
        let l = TcpListener::bind("198.19.0.2:5001").expect("bind");
        use_cubic(l.as_raw_fd());
        l
    })
    .join()
    .expect("listen");
    let sender = within(b, move || {
        let (mut s, _) = listener.accept().expect("accept");
        let chunk = vec![0x5au8; 64 * 1024];
        let until = Instant::now() + Duration::from_secs_f64(secs + 1.5);
        while Instant::now() < until {
            if s.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let receiver = within(a, move || {
        let addr: SocketAddr = "198.19.0.2:5001".parse().expect("addr");
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        use_cubic(s.as_raw_fd());
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = vec![0u8; 256 * 1024];
        let start = Instant::now();
        let (mut total, mut at_1s) = (0u64, None);
        while start.elapsed().as_secs_f64() < secs + 1.0 {
            let n = s.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            total += n as u64;
            if at_1s.is_none() && start.elapsed() >= Duration::from_secs(1) {
                at_1s = Some((total, Instant::now()));
            }
        }
        let (base, t0) = at_1s.expect("a full second of data");
        (total - base) as f64 * 8.0 / t0.elapsed().as_secs_f64()
    });
    let bps = receiver.join().expect("receiver");
    sender.join().expect("sender");
    bps
}

#[test]
fn tcp_goodput_matches_configured_rate() {
    let _g = exclusive();
    // Ethernet + IP + TCP with timestamps: 1448 payload bytes per 1514.
    let efficiency = 1448.0 / 1514.0;
    for mbit in [20.0, 100.0] {
        let mut w = Wire::new();
        w.start(
            "delay=5ms",
            &format!("rate={mbit}mbit,delay=5ms,limit=512k"),
        );
        let got = tcp_goodput_bps(&w.a, &w.b, 3.0) / 1e6;
        let stats = w.stop();
        let ratio = got / (mbit * efficiency);
        eprintln!(
            "rate {mbit} Mbit/s: TCP goodput {got:.2} Mbit/s = {:.1}% of payload capacity\n{stats}",
            ratio * 100.0
        );
        assert!(
            (0.88..=1.03).contains(&ratio),
            "goodput {got} Mbit/s for {mbit} Mbit/s"
        );
    }
}

/// Sends `n` numbered datagrams A -> B, paced; returns which arrived.
fn udp_arrivals(w: &Wire, n: u32) -> Vec<bool> {
    let rx = w
        .within(&w.b, || {
            let s = UdpSocket::bind("198.19.0.2:5002").expect("bind");
            // Room for every datagram even if linkem delivers a burst
            // after a stall: only linkem may drop.
            let size: libc::c_int = 16 << 20;
            // SAFETY: size is a c_int of the length passed.
            let r = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    &size as *const _ as *const libc::c_void,
                    4,
                )
            };
            assert_eq!(r, 0, "SO_RCVBUFFORCE");
            s
        })
        .join()
        .expect("bind");
    let receiver = w.within(&w.b, move || {
        rx.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let mut seen = vec![false; n as usize];
        let mut buf = [0u8; 64];
        // Ends 0.5 s after the last datagram; at most n + 1 reads.
        while let Ok(len) = rx.recv(&mut buf) {
            if len >= 4 {
                let i = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                if i < n {
                    seen[i as usize] = true;
                }
            }
        }
        seen
    });
    w.within(&w.a, move || {
        let tx = UdpSocket::bind("198.19.0.1:0").expect("bind");
        for i in 0..n {
            tx.send_to(&i.to_be_bytes(), "198.19.0.2:5002")
                .expect("send");
            // 20 000 datagrams/s: well under what linkem and the
            // receiver's buffer take, so only linkem drops.
            if i % 20 == 19 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    })
    .join()
    .expect("sender");
    receiver.join().expect("receiver")
}

/// 20 000 datagrams through a link shaped A -> B by `spec`: the loss
/// fraction, the mean length of loss bursts, and linkem's counters.
fn measure_loss(spec: &str) -> (f64, f64, String) {
    let _g = exclusive();
    let mut w = Wire::new();
    w.start(spec, "");
    let seen = udp_arrivals(&w, 20_000);
    let lost = seen.iter().filter(|s| !**s).count();
    let bursts = seen.windows(2).filter(|p| p[0] && !p[1]).count().max(1);
    (
        lost as f64 / seen.len() as f64,
        lost as f64 / bursts as f64,
        w.stop(),
    )
}

#[test]
fn random_loss_matches_probability() {
    let (lost, _, stats) = measure_loss("loss=5%");
    eprintln!("loss 5%: measured {:.2}%\n{stats}", lost * 100.0);
    assert!((0.043..=0.057).contains(&lost), "loss {lost}");
}

#[test]
fn gilbert_elliott_loss_comes_in_bursts() {
    // Bad 1/11 of the time, losing everything: ~9.1%, bursts of ~10.
    let (rate, mean_burst, stats) = measure_loss("ge=1%/10%/100%");
    eprintln!(
        "Gilbert-Elliott: loss {:.2}%, mean burst {mean_burst:.1} frames\n{stats}",
        rate * 100.0
    );
    assert!((0.06..=0.125).contains(&rate), "loss {rate}");
    assert!(mean_burst >= 5.0, "mean burst {mean_burst}");
}

#[test]
fn scheduled_outage_and_delay_step() {
    let _g = exclusive();
    let mut w = Wire::new();
    // Period 1 s: odd periods add 30 ms one way; 100 ms down at each
    // boundary. 3 s of pings every 20 ms cross two boundaries.
    w.start("delay=10ms,period=1s,step=30ms,outage=100ms", "delay=10ms");
    let (rtts, out) = ping(&w, 150, "0.02");
    let lost = 150 - rtts.len();
    let near = |x: f64, t: f64| (x - t).abs() < 3.0;
    let base = rtts.iter().filter(|r| near(**r, 20.0)).count();
    let stepped = rtts.iter().filter(|r| near(**r, 50.0)).count();
    eprintln!("events: {lost} lost, {base} at 20 ms, {stepped} at 50 ms");
    assert!((5..=30).contains(&lost), "lost {lost}: {out}");
    assert!(
        base >= 30 && stepped >= 30,
        "{base} base, {stepped} stepped: {out}"
    );
}

#[test]
fn queue_limit_bounds_the_standing_queue() {
    let _g = exclusive();
    let mut w = Wire::new();
    // 64 KiB at 10 Mbit/s is ~52 ms of queue: a bulk flow fills it, so
    // a ping alongside sees at most that much extra delay.
    w.start("delay=5ms", "rate=10mbit,delay=5ms,limit=64k");
    let (a, b) = (w.a.clone(), w.b.clone());
    let bulk = std::thread::spawn(move || tcp_goodput_bps(&a, &b, 3.0));
    std::thread::sleep(Duration::from_millis(1500));
    let (mut rtts, out) = ping(&w, 20, "0.05");
    let bps = bulk.join().expect("bulk");
    let stats = w.stop();
    let med = median(&mut rtts);
    eprintln!(
        "queue 64 KiB at 10 Mbit/s under load: ping median {med:.1} ms, bulk {:.2} Mbit/s\n{stats}",
        bps / 1e6
    );
    assert!(med > 20.0 && med < 10.0 + 55.0 + 5.0, "RTT {med}: {out}");
    assert!(
        counter(&stats, "ba", "queue_full") > 0,
        "the queue never overflowed: {stats}"
    );
}
