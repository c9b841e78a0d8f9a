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
