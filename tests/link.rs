//! Link settings reach the kernel: the long leg's socket is paced at the
//! link's rate with a BDP-sized send buffer, and its route carries a BDP
//! initial window. (Whether that makes transfers faster is the bench's
//! business: tests/bench/run, ratios in one run.)

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const LINK: [&str; 6] = [
    "--uplink",
    "50mbit",
    "--downlink",
    "10mbit",
    "--rtt",
    "600ms",
];

#[test]
fn link_settings_pace_the_long_leg_and_window_its_route() {
    let mut tb = testbed!();
    // The testbed's router has connected routes only; a default route is
    // what `pepwrt rules` puts the initial window on.
    tb.exec(&["ip", "route", "add", "default", "via", SERVER4]);
    // Autotuning may give a socket 4 MB: two BDPs (7.5 MB) need a fixed
    // send buffer.
    tb.exec(&["sysctl", "-qw", "net.ipv4.tcp_wmem=4096 16384 4194304"]);
    // A server whose window opens past half the BDP (1.9 MB), as one
    // behind a 600 ms link would: otherwise the leg goes over to cubic
    // (the next test) before its BBR is due to start afresh.
    exec_in(
        &tb.server,
        &["sysctl", "-qw", "net.ipv4.tcp_rmem=4096 8388608 16777216"],
    );
    tb.install_rules("iptables", &LINK);
    let route =
        String::from_utf8_lossy(&tb.exec(&["ip", "route", "show", "default"]).stdout).to_string();
    // 50 Mbit/s x 600 ms = 3,750,000 bytes: 2590 segments out, 518 in.
    assert!(
        route.contains("initcwnd 2590") && route.contains("initrwnd 518"),
        "{route}"
    );
    tb.start_pepwrt(&LINK);

    let listener = tb.server_listener(&format!("{SERVER4}:7300"));
    let target = listener.local_addr().expect("addr");
    // The client uploads until the test is done looking at the sockets
    // (at most 20 s): the leg sends at its pacing cap, 50 Mbit/s, which
    // these veths carry. The server reads everything.
    let srv = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(35)))
            .expect("timeout");
        let mut buf = [0u8; 65536];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let cli = tb.in_client(move || {
        let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(5)).expect("connect");
        s.set_write_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let block = [7u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(30);
        while done_rx.try_recv().is_err() && Instant::now() < deadline {
            let _ = s.write(&block);
        }
    });
    // The outgoing leg is the router's socket toward the server port.
    let deadline = Instant::now() + Duration::from_secs(5);
    let leg = loop {
        let ss = String::from_utf8_lossy(
            &tb.exec(&["ss", "-tinmH", "state", "established", "dport", "= :7300"])
                .stdout,
        )
        .to_string();
        if ss.contains("7300") || Instant::now() > deadline {
            break ss;
        }
        thread::sleep(Duration::from_millis(50));
    };
    // Every 7 s the paced BBR leg, delivering at its cap, starts its BBR
    // afresh, so BBR's RTT probe (due after 10 s) never comes; it stays
    // BBR, paced as before. Two chances (7 s and 14 s after the leg is
    // first seen): at the first BBR may not yet deliver at its cap.
    let fresh = eventually(Duration::from_secs(20), || {
        tb.counter("rtt_probes_skipped") >= 1
    });
    let later = String::from_utf8_lossy(
        &tb.exec(&["ss", "-tinmH", "state", "established", "dport", "= :7300"])
            .stdout,
    )
    .to_string();
    let _ = done_tx.send(());
    cli.join().expect("client");
    srv.join().expect("server");
    // ss prints the pacing rate as current/cap, and the send buffer as tb
    // (the kernel doubles what was asked for: 2 x 7,500,000). The
    // initial window is not visible here: the testbed's server is on the
    // router's own subnet, so that socket takes the connected route.
    assert!(leg.contains("/50000000bps"), "{leg}");
    assert!(leg.contains("tb15000000"), "{leg}");
    assert!(leg.contains(" bbr "), "long link, BBR: {leg}");
    assert!(fresh, "no fresh BBR; log: {}", tb.log());
    assert!(
        later.contains(" bbr ") && later.contains("/50000000bps"),
        "{later}"
    );
    tb.install_rules("iptables", &[&LINK[..], &["--delete"]].concat());
    let route =
        String::from_utf8_lossy(&tb.exec(&["ip", "route", "show", "default"]).stdout).to_string();
    assert!(!route.contains("initcwnd"), "{route}");
}

/// The windows `pepwrt rules` set come off on `--delete` even when the
/// flags no longer name the link (the user removed the settings), and a
/// setup without them takes off what an earlier one set.
#[test]
fn rules_delete_takes_off_the_windows_it_set_whatever_the_flags() {
    let tb = testbed!();
    tb.exec(&["ip", "route", "add", "default", "via", SERVER4]);
    let route = |tb: &Testbed| {
        String::from_utf8_lossy(&tb.exec(&["ip", "route", "show", "default"]).stdout).to_string()
    };
    tb.install_rules("iptables", &LINK);
    assert!(route(&tb).contains("initcwnd 2590"), "{}", route(&tb));
    tb.install_rules("iptables", &["--delete"]);
    let r = route(&tb);
    assert!(!r.contains("initcwnd") && !r.contains("initrwnd"), "{r}");
    // Set again, then a restart without link settings.
    tb.install_rules("iptables", &LINK);
    assert!(route(&tb).contains("initrwnd 518"), "{}", route(&tb));
    tb.install_rules("iptables", &[]);
    let r = route(&tb);
    assert!(!r.contains("initcwnd") && !r.contains("initrwnd"), "{r}");
    tb.install_rules("iptables", &["--delete"]);
}

#[test]
fn a_leg_held_back_by_a_small_receive_window_leaves_bbr_for_cubic() {
    let mut tb = testbed!();
    tb.exec(&["ip", "route", "add", "default", "via", SERVER4]);
    // A server whose receive window stays a few KB, far below half the
    // link's BDP (50 Mbit/s x 600 ms / 2 = 1.9 MB), and that reads slowly:
    // the router's leg has data to send and the window holds it back.
    exec_in(
        &tb.server,
        &["sysctl", "-qw", "net.ipv4.tcp_rmem=4096 8192 8192"],
    );
    tb.install_rules("iptables", &LINK);
    tb.start_pepwrt(&LINK);
    let listener = tb.server_listener(&format!("{SERVER4}:7301"));
    let target = listener.local_addr().expect("addr");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_srv = stop.clone();
    let srv = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(20);
        while !stop_srv.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
            if matches!(s.read(&mut buf), Ok(0) | Err(_)) {
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
    });
    let stop_cli = stop.clone();
    let cli = tb.in_client(move || {
        let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(5)).expect("connect");
        s.set_write_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let block = [7u8; 16384];
        let deadline = Instant::now() + Duration::from_secs(20);
        while !stop_cli.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
            let _ = s.write(&block);
        }
    });
    // Judged after four RTTs (2.4 s) of sending and two ticks more.
    let handed = eventually(Duration::from_secs(12), || {
        tb.counter("handed_to_cubic") >= 1
    });
    // Past the 7 s at which a BBR leg would start its BBR afresh: a leg
    // handed to cubic stays cubic.
    let started = Instant::now();
    while handed && started.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(100));
    }
    let ss = String::from_utf8_lossy(
        &tb.exec(&["ss", "-tinH", "state", "established", "dport", "= :7301"])
            .stdout,
    )
    .to_string();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    cli.join().expect("client");
    srv.join().expect("server");
    assert!(handed, "not handed over; log: {}", tb.log());
    assert!(ss.contains(" cubic "), "{ss}");
    assert_eq!(tb.counter("handed_to_cubic"), 1);
    assert_eq!(tb.counter("rtt_probes_skipped"), 0);
    assert!(
        tb.log().contains("BBR handed over to cubic"),
        "{}",
        tb.log()
    );
}
