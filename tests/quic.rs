//! `--quic reject` for real: client – router – server namespaces, the
//! router holding the rules `pepwrt rules` prints (iptables, and nft's
//! ruleset loaded for real but for its `queue` rule, which this kernel's
//! nft lacks; no pepwrt runs, so SYNs bypass the queue). A client's UDP
//! to the server's port 443 gets ICMP port unreachable at once; UDP to
//! other ports, and TCP to 443, reach the server; with `--quic pass` (the
//! default) and after `rules --delete`, UDP 443 does too.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::*;

/// What became of one datagram the client sent to the server's `port`.
#[derive(Debug, PartialEq)]
enum Fate {
    /// The client's connected socket was told ECONNREFUSED (an ICMP port
    /// unreachable) within a second, and the server got nothing.
    Refused,
    /// The server received it.
    Arrived,
    /// Neither within a second.
    Lost,
}

/// Sends one datagram from the client to `server:port` over a connected
/// UDP socket, with the server bound there, and says what became of it.
fn datagram(tb: &Testbed, server: &str, port: u16) -> Fate {
    datagram_to(tb, &tb.server, server, port)
}

/// The same toward an address bound in namespace `ns`.
fn datagram_to(tb: &Testbed, ns: &str, server: &str, port: u16) -> Fate {
    let at: SocketAddr = SocketAddr::new(server.parse().unwrap(), port);
    let rx = in_netns(ns, move || {
        let s = UdpSocket::bind(at).expect("bind");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    })
    .join()
    .unwrap();
    let client = in_netns(&tb.client, move || {
        let any: SocketAddr = if at.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        let s = UdpSocket::bind(any).expect("bind");
        s.connect(at).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let started = Instant::now();
        s.send(b"quic initial?").expect("send");
        let mut buf = [0u8; 64];
        match s.recv(&mut buf) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                Some(started.elapsed() < Duration::from_secs(1))
            }
            _ => None,
        }
    })
    .join()
    .unwrap();
    let mut buf = [0u8; 64];
    rx.set_nonblocking(true).unwrap();
    // Refused already: whatever was forwarded is there by now.
    let wait = Duration::from_millis(if client.is_some() { 200 } else { 1000 });
    let arrived = eventually(wait, || {
        rx.recv(&mut buf)
            .is_ok_and(|n| &buf[..n] == b"quic initial?")
    });
    match (client, arrived) {
        (Some(true), false) => Fate::Refused,
        (_, true) => Fate::Arrived,
        _ => Fate::Lost,
    }
}

/// A TCP connection from the client to `server:443` carries bytes both ways.
fn tcp_443_works(tb: &Testbed, server: &str) -> bool {
    let at = SocketAddr::new(server.parse().unwrap(), 443);
    let listener = tb.server_listener(&at.to_string());
    let srv = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut b = [0u8; 5];
        s.read_exact(&mut b).expect("read");
        s.write_all(b"world").expect("write");
    });
    let ok = in_netns(&tb.client, move || {
        let mut s = TcpStream::connect_timeout(&at, Duration::from_secs(3)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        s.write_all(b"hello").ok()?;
        let mut b = [0u8; 5];
        s.read_exact(&mut b).ok()?;
        Some(&b == b"world")
    })
    .join()
    .unwrap();
    let _ = srv.join();
    ok == Some(true)
}

fn assert_fates(tb: &Testbed, quic: Fate, what: &str) {
    for server in [SERVER4, SERVER6] {
        assert_eq!(datagram(tb, server, 443), quic, "{what}: UDP {server}:443");
        for port in [444, 53] {
            assert_eq!(
                datagram(tb, server, port),
                Fate::Arrived,
                "{what}: UDP {server}:{port}"
            );
        }
    }
}

#[test]
fn iptables_quic_reject_refuses_udp_443_at_once_and_nothing_else() {
    let tb = testbed!();
    tb.install_rules("iptables", &["--quic", "reject"]);
    assert_fates(&tb, Fate::Refused, "iptables, --quic reject");
    assert!(tcp_443_works(&tb, SERVER4), "TCP 443 with --quic reject");
    assert!(
        tcp_443_works(&tb, SERVER6),
        "TCP [::]:443 with --quic reject"
    );
    // UDP 443 to the router itself is not forwarded: not refused either.
    for router in ["198.18.0.1", "fd00::1"] {
        let fate = datagram_to(&tb, &tb.router, router, 443);
        assert_eq!(fate, Fate::Arrived, "UDP {router}:443, the router's own");
    }
    // Removal takes the rule off.
    install_rules_in(
        &tb.router,
        &[
            "rules",
            "--backend",
            "iptables",
            "--delete",
            "--intercept",
            &tb.lan_if,
        ],
    );
    assert_fates(&tb, Fate::Arrived, "iptables, after --delete");
    // The default, and pass said outright: QUIC passes.
    tb.install_rules("iptables", &[]);
    assert_fates(&tb, Fate::Arrived, "iptables, default");
    tb.install_rules("iptables", &["--quic", "pass"]);
    assert_eq!(datagram(&tb, SERVER4, 443), Fate::Arrived, "--quic pass");
}

/// nft's ruleset as `pepwrt rules --part firewall` prints it for `flags`,
/// loaded into the router but for the queue rule (see the module comment).
fn load_nft(tb: &Testbed, flags: &[&str]) {
    let mut args = vec![PEPWRT, "rules", "--part", "firewall", "--intercept"];
    args.push(&tb.lan_if);
    args.extend_from_slice(flags);
    let text = String::from_utf8(tb.exec(&args).stdout).unwrap();
    let loadable: String = text
        .lines()
        .filter(|l| !l.contains("queue num"))
        .map(|l| format!("{l}\n"))
        .collect();
    let path = std::env::temp_dir().join(format!("{}-quic.nft", tb.prefix));
    std::fs::write(&path, loadable).unwrap();
    let out = tb.exec(&["nft", "-f", &path.to_string_lossy()]);
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "nft -f: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn nft_quic_reject_refuses_udp_443_at_once_and_nothing_else() {
    let tb = testbed!();
    load_nft(&tb, &["--quic", "reject"]);
    let table = String::from_utf8(tb.exec(&["nft", "list", "table", "inet", "pepwrt"]).stdout);
    assert!(table.unwrap().contains("hook forward"));
    assert_fates(&tb, Fate::Refused, "nft, --quic reject");
    assert!(tcp_443_works(&tb, SERVER4), "TCP 443 with --quic reject");
    // --delete's ruleset takes the table, and the rule with it, away.
    load_nft(&tb, &["--quic", "reject", "--delete"]);
    assert_fates(&tb, Fate::Arrived, "nft, after --delete");
    load_nft(&tb, &[]);
    assert_eq!(datagram(&tb, SERVER4, 443), Fate::Arrived, "nft, default");
}
