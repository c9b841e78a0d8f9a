//! SYN admission against what the router's own sockets leave behind.
//!
//! pepwrt closes the client leg first when the server ends a connection,
//! so the router keeps that leg in TIME_WAIT. A client that reuses the
//! source port for its next connection (sequential connects, a busy
//! NAT) must get a fresh split connection: the old socket must never
//! answer the new SYN (it would send an old ACK, the client a reset,
//! and the connection would wait a SYN retransmission, 1 s).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::Duration;

use common::*;

/// Connections per run, all from the same client port.
const CONNS: usize = 4;
const CLIENT_PORT: u16 = 41000;

/// One `Section: Name` counter of /proc/net/{snmp,netstat} in the calling
/// thread's network namespace.
fn own_counter(file: &str, section: &str, name: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/thread-self/net/{file}")).expect("read");
    net_counter(&text, section, name)
}

/// The client's retransmitted SYNs and sent resets.
fn client_trouble() -> (u64, u64) {
    (
        own_counter("netstat", "TcpExt", "TCPSynRetrans"),
        own_counter("snmp", "Tcp", "OutRsts"),
    )
}

/// The server greets each connection and closes at once, so the router
/// ends up the active closer of the client leg.
fn greeter(listener: TcpListener, conns: usize) {
    for _ in 0..conns {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let _ = s.write_all(b"hello");
    }
}

/// CONNS sequential connections from one client port; the client's SYN
/// retransmissions and resets during them.
fn sequential_connects_from_one_port(tb: &Testbed) -> (u64, u64) {
    let listener = tb.server_listener(&format!("{SERVER4}:7100"));
    let target = listener.local_addr().expect("addr");
    let srv = thread::spawn(move || greeter(listener, CONNS));
    let local: SocketAddr = format!("{CLIENT4}:{CLIENT_PORT}").parse().expect("addr");
    let trouble = tb
        .in_client(move || {
            let before = client_trouble();
            for i in 0..CONNS {
                let mut s = connect_from(Some(local), target).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                let mut got = Vec::new();
                s.read_to_end(&mut got).expect("read");
                assert_eq!(got, b"hello", "connection {i}");
                // The router's FIN came first: closing now leaves the
                // router's client leg in TIME_WAIT, not ours.
                drop(s);
                thread::sleep(Duration::from_millis(50));
            }
            let after = client_trouble();
            (after.0 - before.0, after.1 - before.1)
        })
        .join()
        .expect("client");
    srv.join().expect("server");
    trouble
}

fn assert_clean(tb: &Testbed, trouble: (u64, u64)) {
    assert_eq!(
        trouble,
        (0, 0),
        "the client retransmitted SYNs / sent resets (a TIME_WAIT socket answered a new SYN); status: {}",
        tb.status()
    );
    assert_eq!(tb.counter("total"), CONNS as u64, "{}", tb.status());
    let tw = tb.exec(&["ss", "-Htn", "state", "time-wait"]).stdout;
    assert!(
        !tw.is_empty(),
        "the router should hold the client leg in TIME_WAIT"
    );
}

#[test]
fn iptables_a_reused_client_port_gets_a_fresh_split_connection() {
    let mut tb = testbed!();
    tb.install_rules("iptables", &[]);
    tb.start_pepwrt(&[]);
    let trouble = sequential_connects_from_one_port(&tb);
    assert_clean(&tb, trouble);
}

/// nft's `queue` is absent from this kernel: its queue rule is swapped
/// for iptables' NFQUEUE target in a hook that runs just before (as in
/// tests/relay.rs); the socket rule under test is nft's own.
#[test]
fn nft_a_reused_client_port_gets_a_fresh_split_connection() {
    let mut tb = testbed!();
    tb.install_nft_rules_with_xt_queue(&["ipv4"]);
    tb.start_pepwrt(&[]);
    let trouble = sequential_connects_from_one_port(&tb);
    assert_clean(&tb, trouble);
}
