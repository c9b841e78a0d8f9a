//! Snoop for real: a distant sender, the router running pepwrt with
//! `--snoop` on its wireless-side interface, and a wireless host whose
//! input drops a share of the data packets at random (nft numgen), as a
//! lossy radio would. Local retransmissions must repair those losses
//! before the sender sees the duplicate ACKs.
//!
//! Roles on the common testbed: its "server" namespace is the sender, its
//! "client" namespace the wireless host behind the router's LAN interface.
//! The sender connects to the host, so the connection is forwarded, not
//! split (interception only looks at SYNs that arrive on the LAN side).

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::*;

const TRANSFER_BYTES: usize = 4 << 20;
const LOSS_PERCENT: u32 = 3;

/// Drops `percent` of the TCP data packets from the sender at the host's
/// input (pure ACKs and SYNs, under 200 bytes, pass).
fn lossy_host_input(tb: &Testbed, percent: u32) {
    let nft = |rule: &str| {
        run(&[
            "ip",
            "netns",
            "exec",
            &tb.client,
            "sh",
            "-c",
            &format!("nft {rule}"),
        ])
    };
    nft("add table inet pepwrt_loss");
    nft("'add chain inet pepwrt_loss input { type filter hook input priority 0; policy accept; }'");
    nft(&format!(
        "add rule inet pepwrt_loss input meta l4proto tcp meta length gt 200 numgen random mod 100 lt {percent} counter drop"
    ));
}

/// How many packets the host's loss rule dropped.
fn host_drops(tb: &Testbed) -> u64 {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &tb.client,
            "nft",
            "list",
            "table",
            "inet",
            "pepwrt_loss",
        ])
        .output()
        .expect("nft");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("packets ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The sender pushes `TRANSFER_BYTES` to a listener on the host; returns
/// what the host read.
fn push_to_host(tb: &Testbed, host: &str, seed: u64) -> Vec<u8> {
    let addr: SocketAddr = host.parse().expect("addr");
    let listener = in_netns(&tb.client, move || TcpListener::bind(addr).expect("bind"))
        .join()
        .expect("bind thread");
    let target = listener.local_addr().expect("addr");
    let receiver = tb.in_client(move || {
        let (mut s, _) = listener.accept().expect("accept");
        read_all(&mut s, Duration::from_secs(60)).expect("read")
    });
    let sender = tb.in_server(move || {
        let data = payload(seed, TRANSFER_BYTES);
        let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(10)).expect("connect");
        s.write_all(&data).expect("send");
    });
    sender.join().expect("sender");
    receiver.join().expect("receiver")
}

/// The testbed's IPv6 path takes a few seconds to come up (neighbour
/// discovery through the fresh router); a SYN sent before then waits for
/// its retransmission timer, so wait for a ping to get through first.
fn wait_for_ipv6(tb: &Testbed) {
    for _ in 0..20 {
        let ok = std::process::Command::new("ip")
            .args([
                "netns", "exec", &tb.server, "ping", "-6", "-c", "1", "-W", "1", "fd00::2",
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return;
        }
    }
    panic!("IPv6 from sender to host never came up");
}

fn snoop_counter(tb: &Testbed, key: &str) -> u64 {
    let status = tb.status();
    let snoop = status
        .split("\"snoop\":")
        .nth(1)
        .unwrap_or_else(|| panic!("no snoop object in status: {status}"));
    json_number(snoop, key).unwrap_or_else(|| panic!("no {key} in snoop status: {status}"))
}

/// The testbed with the snoop rules, pepwrt snooping the LAN side with a
/// `cache` segment cache, and the host dropping LOSS_PERCENT of its data.
fn snooping_testbed(cache: &str) -> Testbed {
    let mut tb = Testbed::new();
    let lan = tb.lan_if.clone();
    tb.install_rules("iptables", &["--snoop", &lan, "--part", "firewall"]);
    tb.start_pepwrt(&["--snoop", &lan, "--snoop-cache", cache]);
    lossy_host_input(&tb, LOSS_PERCENT);
    tb
}

/// A transfer to `host` arrives byte for byte.
fn transfer_intact(tb: &Testbed, host: &str, seed: u64) {
    let got = push_to_host(tb, host, seed);
    assert!(
        got == payload(seed, TRANSFER_BYTES),
        "transfer to {host} differs ({} bytes)",
        got.len()
    );
}

#[test]
fn losses_on_the_wireless_hop_are_repaired_locally_ipv4_and_ipv6() {
    if !have_root() {
        return;
    }
    let tb = snooping_testbed("1m");
    transfer_intact(&tb, "198.18.0.2:7100", 11);
    wait_for_ipv6(&tb);
    transfer_intact(&tb, "[fd00::2]:7100", 12);

    let drops = host_drops(&tb);
    assert!(drops > 0, "the loss rule never fired");
    let local = snoop_counter(&tb, "local_retransmits_dupack")
        + snoop_counter(&tb, "local_retransmits_timeout");
    assert!(
        local > 0,
        "no local retransmission for {drops} losses: {}",
        tb.status()
    );
    assert!(
        snoop_counter(&tb, "dupacks_suppressed") > 0,
        "no dup ACK suppressed: {}",
        tb.status()
    );
    assert!(snoop_counter(&tb, "flows_total") >= 2, "{}", tb.status());
    // Each flow ends with its FIN acknowledged (or a reset), which frees it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while snoop_counter(&tb, "flows") > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(snoop_counter(&tb, "flows"), 0, "{}", tb.status());
    assert_eq!(snoop_counter(&tb, "cached_segments"), 0, "{}", tb.status());
}

#[test]
fn a_full_cache_passes_segments_uncached_and_the_transfer_stays_intact() {
    // 16 KiB holds about ten full-sized segments: most of the window
    // passes uncached, and the sender recovers those losses itself.
    if !have_root() {
        return;
    }
    let tb = snooping_testbed("16k");
    transfer_intact(&tb, "198.18.0.2:7101", 21);
    assert!(snoop_counter(&tb, "passed_full") > 0, "{}", tb.status());
    assert!(
        snoop_counter(&tb, "dupacks_passed") > 0,
        "uncached holes reach the sender: {}",
        tb.status()
    );
    assert_eq!(snoop_counter(&tb, "cached_segments"), 0, "{}", tb.status());
}

/// A stock OpenWrt LAN in the router namespace: bridge `{p}b` holds the
/// LAN addresses, the testbed's LAN interface becomes its Wi-Fi port (the
/// lossy station behind it), and a wired host `{p}h` (198.18.0.3) hangs
/// on another port `{p}e`. The wired host's namespace goes with the guard.
struct BridgedLan {
    tb: Testbed,
    bridge: String,
    wired: String,
    /// A second Wi-Fi port, made when the station moves to it.
    second_port: String,
}

impl Drop for BridgedLan {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.wired])
            .output();
    }
}

fn bridged_lan() -> BridgedLan {
    let tb = Testbed::new();
    let p = tb.prefix.clone();
    let (bridge, wired, port) = (format!("{p}b"), format!("{p}h"), format!("{p}e"));
    let lan = tb.lan_if.clone();
    let r = |args: &[&str]| run(&[&["ip", "-n", &tb.router][..], args].concat());
    run(&["ip", "netns", "add", &wired]);
    run(&["ip", "-n", &wired, "link", "set", "lo", "up"]);
    // A fixed address: a bridge otherwise takes its lowest port's, and
    // changes it as ports come and go, behind its hosts' ARP caches.
    r(&[
        "link",
        "add",
        &bridge,
        "address",
        "02:00:00:00:00:01",
        "type",
        "bridge",
    ]);
    r(&["addr", "flush", "dev", &lan]);
    r(&["link", "set", &lan, "master", &bridge]);
    r(&["addr", "add", "198.18.0.1/24", "dev", &bridge]);
    r(&["-6", "addr", "add", "fd00::1/64", "dev", &bridge, "nodad"]);
    r(&["link", "set", &bridge, "up"]);
    let wired_if = format!("{p}k");
    run(&[
        "ip", "link", "add", &port, "netns", &tb.router, "type", "veth", "peer", "name", &wired_if,
        "netns", &wired,
    ]);
    r(&["link", "set", &port, "master", &bridge]);
    r(&["link", "set", &port, "up"]);
    let w = |args: &[&str]| run(&[&["ip", "-n", &wired][..], args].concat());
    w(&["addr", "add", "198.18.0.3/24", "dev", &wired_if]);
    w(&["link", "set", &wired_if, "up"]);
    w(&["route", "add", "default", "via", "198.18.0.1"]);
    let second_port = format!("{p}y");
    BridgedLan {
        tb,
        bridge,
        wired,
        second_port,
    }
}

/// The sender pushes `TRANSFER_BYTES` to `addr` in namespace `ns`.
fn push_to(tb: &Testbed, ns: &str, host: &str, seed: u64) -> Vec<u8> {
    let addr: SocketAddr = host.parse().expect("addr");
    let listener = in_netns(ns, move || TcpListener::bind(addr).expect("bind"))
        .join()
        .expect("bind thread");
    let receiver = in_netns(ns, move || {
        let (mut s, _) = listener.accept().expect("accept");
        read_all(&mut s, Duration::from_secs(60)).expect("read")
    });
    let sender = tb.in_server(move || {
        let data = payload(seed, TRANSFER_BYTES);
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
        s.write_all(&data).expect("send");
    });
    sender.join().expect("sender");
    receiver.join().expect("receiver")
}

fn local_copies(tb: &Testbed) -> u64 {
    snoop_counter(tb, "local_retransmits_dupack") + snoop_counter(tb, "local_retransmits_timeout")
}

/// The station leaves its Wi-Fi port and comes back on the second one
/// (another radio), with a new link but its MAC and addresses kept, as a
/// roaming station keeps them.
fn move_station(lan: &BridgedLan) {
    let tb = &lan.tb;
    let p = &tb.prefix;
    let old = format!("/sys/class/net/{p}a/address");
    let mac = exec_in(&tb.client, &["cat", &old]).stdout;
    let mac = String::from_utf8_lossy(&mac).trim().to_string();
    run(&["ip", "-n", &tb.client, "link", "del", &format!("{p}a")]);
    let ca = format!("{p}n");
    run(&[
        "ip",
        "link",
        "add",
        &lan.second_port,
        "netns",
        &tb.router,
        "type",
        "veth",
        "peer",
        "name",
        &ca,
        "netns",
        &tb.client,
    ]);
    let r = |args: &[&str]| run(&[&["ip", "-n", &tb.router][..], args].concat());
    r(&["link", "set", &lan.second_port, "master", &lan.bridge]);
    r(&["link", "set", &lan.second_port, "up"]);
    let c = |args: &[&str]| run(&[&["ip", "-n", &tb.client][..], args].concat());
    c(&["link", "set", &ca, "address", &mac]);
    c(&["addr", "add", "198.18.0.2/24", "dev", &ca]);
    c(&["link", "set", &ca, "up"]);
    c(&["route", "add", "default", "via", "198.18.0.1"]);
}

#[test]
fn bridged_wifi_stations_are_snooped_and_wired_hosts_left_alone() {
    if !have_root() {
        return;
    }
    let mut lan = bridged_lan();
    let (wifi, second) = (lan.tb.lan_if.clone(), lan.second_port.clone());
    let snoop = ["--snoop", &wifi, "--snoop", &second];
    lan.tb
        .install_rules("iptables", &[&snoop[..], &["--part", "firewall"]].concat());
    lan.tb.start_pepwrt(&snoop);
    lossy_host_input(&lan.tb, LOSS_PERCENT);
    let tb = &lan.tb;
    let got = push_to(tb, &tb.client, "198.18.0.2:7102", 31);
    assert!(
        got == payload(31, TRANSFER_BYTES),
        "transfer to the station differs"
    );
    assert!(host_drops(tb) > 0, "the loss rule never fired");
    assert!(
        local_copies(tb) > 0,
        "no local copy for the station: {}",
        tb.status()
    );
    let flows = snoop_counter(tb, "flows_total");
    let cached = snoop_counter(tb, "segments_cached");
    assert!(flows >= 1 && cached > 0, "{}", tb.status());

    // The wired host on the same bridge: its flow gets no Snoop state.
    let got = push_to(tb, &lan.wired, "198.18.0.3:7103", 32);
    assert!(
        got == payload(32, TRANSFER_BYTES),
        "transfer to the wired host differs"
    );
    assert_eq!(snoop_counter(tb, "flows_total"), flows, "{}", tb.status());
    assert_eq!(
        snoop_counter(tb, "segments_cached"),
        cached,
        "{}",
        tb.status()
    );

    // The station leaves and returns on the other Wi-Fi port: followed.
    move_station(&lan);
    let tb = &lan.tb;
    let before = local_copies(tb);
    let got = push_to(tb, &tb.client, "198.18.0.2:7104", 33);
    assert!(
        got == payload(33, TRANSFER_BYTES),
        "transfer after the move differs"
    );
    assert!(snoop_counter(tb, "flows_total") > flows, "{}", tb.status());
    assert!(
        snoop_counter(tb, "segments_cached") > cached,
        "{}",
        tb.status()
    );
    assert!(
        local_copies(tb) > before,
        "no local copy after the move: {}",
        tb.status()
    );
}
