//! The relay state machine over real loopback sockets: a user-side client,
//! the leg pepwrt accepted, the leg it opened, and a server. Time is an
//! argument of the state machine, so timeouts are tested without waiting.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::{Conn, End, Ready, Seconds, Step};
use crate::channel::Channel;
use crate::sys::poll::Poller;
use crate::sys::socket;
use crate::tuple::FourTuple;

const LIMIT: Duration = Duration::from_secs(5);
const IDLE: Duration = Duration::from_secs(600);

/// A connection under test and the user's ends of it.
struct Rig {
    conn: Conn,
    up: Channel,
    down: Channel,
    /// The application on the client side.
    user: TcpStream,
    server: TcpListener,
}

fn loopback_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

/// A client leg as pepwrt holds it (the accepted end) and the user's end.
fn client_pair() -> (TcpStream, TcpStream) {
    let l = loopback_listener();
    let user = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (accepted, _) = l.accept().unwrap();
    accepted.set_nonblocking(true).unwrap();
    (accepted, user)
}

fn rig_to(server: TcpListener, dst: SocketAddr, fastopen: bool, now: Instant) -> Rig {
    let (accepted, user) = client_pair();
    let out = socket::connect(dst, None, fastopen, |_| Ok(())).unwrap();
    let tuple = FourTuple {
        client: user.local_addr().unwrap(),
        server: dst,
    };
    Rig {
        conn: Conn::new(
            accepted,
            out,
            tuple,
            now + Duration::from_secs(10),
            // As pepwrt opens with fast open: the SYN waits a moment for
            // the client's first bytes.
            fastopen.then(|| now + Duration::from_millis(100)),
            now,
        ),
        up: Channel::with_pipe(4096),
        down: Channel::with_pipe(4096),
        user,
        server,
    }
}

/// Whether the peer acknowledged every byte written to `s` within 10 s (a
/// reset drops what is still unacknowledged).
fn acked(s: &TcpStream) -> bool {
    (0..2000).any(|_| {
        std::thread::sleep(Duration::from_millis(5));
        socket::unsent_bytes(s.as_raw_fd()).unwrap() == 0
    })
}

fn rig(now: Instant) -> Rig {
    let server = loopback_listener();
    let dst = server.local_addr().unwrap();
    rig_to(server, dst, false, now)
}

impl Rig {
    /// Runs the state machine on real readiness until `done` holds or it
    /// ends, within LIMIT. Returns how it ended, if it did.
    fn drive(&mut self, mut done: impl FnMut(&mut Rig) -> bool) -> Option<End> {
        let mut poller = Poller::new(4096, 8).unwrap();
        let t0 = Instant::now();
        while t0.elapsed() < LIMIT {
            if done(self) {
                return None;
            }
            let (c, s) = self.conn.interest(&self.up, &self.down);
            let (cfd, sfd) = self.conn.fds();
            poller.set(cfd, c, 0).unwrap();
            poller.set(sfd, s, 1).unwrap();
            let mut ready = Ready::default();
            poller.wait(Duration::from_millis(10)).unwrap();
            for ev in poller.events() {
                if ev.token == 0 {
                    ready.client = ev.events;
                } else {
                    ready.server = ev.events;
                }
            }
            let step = self
                .conn
                .run(ready, &mut self.up, &mut self.down, Instant::now());
            if let Step::Done(end) = step {
                return Some(end);
            }
            let step = self
                .conn
                .check_timers(Instant::now(), IDLE, &mut self.up, &mut self.down);
            if let Step::Done(end) = step {
                return Some(end);
            }
        }
        panic!("the connection neither finished nor met its condition in {LIMIT:?}");
    }
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Reads until EOF or an error; returns the bytes and how it ended.
fn read_to_end(s: &mut TcpStream) -> (Vec<u8>, io::Result<()>) {
    s.set_read_timeout(Some(LIMIT)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Err(e)),
        }
    }
}

#[test]
fn bytes_flow_both_ways_and_each_fin_follows_its_bytes() {
    let mut r = rig(Instant::now());
    let up = payload(100_000);
    let down = payload(70_000);
    let (mut server, _) = r.server.accept().unwrap();
    let sender = {
        let up = up.clone();
        let mut user = r.user.try_clone().unwrap();
        std::thread::spawn(move || {
            user.write_all(&up).unwrap();
            user.shutdown(Shutdown::Write).unwrap();
        })
    };
    let srv = std::thread::spawn(move || {
        let (got, end) = read_to_end(&mut server);
        end.unwrap();
        server.write_all(&down).unwrap();
        drop(server);
        got
    });
    let mut user = r.user.try_clone().unwrap();
    let reader = std::thread::spawn(move || read_to_end(&mut user));
    assert_eq!(r.drive(|_| false), Some(End::Closed));
    sender.join().unwrap();
    assert_eq!(srv.join().unwrap(), up);
    let (got, end) = reader.join().unwrap();
    end.unwrap();
    assert_eq!(got, payload(70_000));
    assert_eq!((r.conn.bytes_up(), r.conn.bytes_down()), (100_000, 70_000));
}

#[test]
fn a_refused_connect_ends_as_connect_failed() {
    let closed = loopback_listener();
    let dst = closed.local_addr().unwrap();
    drop(closed);
    let mut r = rig_to(loopback_listener(), dst, false, Instant::now());
    assert_eq!(
        r.drive(|_| false),
        Some(End::ConnectFailed(libc::ECONNREFUSED))
    );
}

#[test]
fn a_servers_reset_reaches_the_client_only_after_every_byte_before_it() {
    let mut r = rig(Instant::now());
    let (mut server, _) = r.server.accept().unwrap();
    let sent = payload(300_000);
    let srv = {
        let sent = sent.clone();
        std::thread::spawn(move || {
            server.write_all(&sent).unwrap();
            // Wait until the relay's socket has acknowledged it all (a
            // reset drops what the server still holds), then reset.
            assert!(acked(&server), "the relay took 10 s to acknowledge 300 KB");
            socket::set_abortive_close(&server);
        })
    };
    // The user does not read yet: the bytes wait in the relay and in the
    // client leg's buffers when the reset comes.
    let end = r.drive(|r| r.conn.state_name() == "closing");
    assert_eq!(end, None);
    srv.join().unwrap();
    let mut user = r.user.try_clone().unwrap();
    let reader = std::thread::spawn(move || read_to_end(&mut user));
    assert_eq!(r.drive(|_| false), Some(End::ServerReset));
    drop(r.conn);
    let (got, end) = reader.join().unwrap();
    assert_eq!(got.len(), sent.len());
    assert!(got == sent);
    assert_eq!(
        end.unwrap_err().kind(),
        io::ErrorKind::ConnectionReset,
        "the client learns of the reset after its bytes"
    );
}

/// The server answers, sends, and resets before the relay first looks at
/// the connected leg (likely with fast open, where data comes with the
/// handshake): the bytes the router's kernel acknowledged still reach the
/// client, then the reset. It used to end as a failed connect, bytes lost.
#[test]
fn a_reset_before_the_first_look_at_the_connected_leg_loses_no_bytes() {
    let mut r = rig(Instant::now());
    let (mut server, _) = r.server.accept().unwrap();
    server.write_all(b"greeting").unwrap();
    assert!(
        acked(&server),
        "the relay's socket took 10 s to acknowledge 8 bytes"
    );
    socket::set_abortive_close(&server);
    drop(server);
    std::thread::sleep(Duration::from_millis(50));
    let mut user = r.user.try_clone().unwrap();
    let reader = std::thread::spawn(move || read_to_end(&mut user));
    assert_eq!(r.drive(|_| false), Some(End::ServerReset));
    drop(r.conn);
    let (got, end) = reader.join().unwrap();
    assert_eq!(got, b"greeting");
    assert_eq!(end.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
}

#[test]
fn a_connect_has_its_deadline_and_idleness_counts_only_once_connected() {
    let now = Instant::now();
    let mut r = rig(now);
    let (up, down) = (&mut r.up, &mut r.down);
    // Shorter idle timeout than connect timeout: still connecting at 5 s.
    let idle = Duration::from_secs(2);
    let at = now + Duration::from_secs(5);
    assert_eq!(r.conn.check_timers(at, idle, up, down), Step::Continue);
    let at = now + Duration::from_secs(10);
    assert_eq!(
        r.conn.check_timers(at, idle, up, down),
        Step::Done(End::ConnectTimeout)
    );
}

#[test]
fn an_idle_connection_times_out() {
    let now = Instant::now();
    let mut r = rig(now);
    let (_server, _) = r.server.accept().unwrap();
    assert_eq!(r.drive(|r| r.conn.state_name() == "relay"), None);
    let (up, down) = (&mut r.up, &mut r.down);
    let later = Instant::now() + IDLE;
    assert_eq!(
        r.conn.check_timers(later, IDLE, up, down),
        Step::Done(End::IdleTimeout)
    );
}

/// Runs `body` in a private network namespace with client and server
/// fast open on (there only), given a loopback listener that takes data
/// in SYNs. Needs root; says SKIPPED without it (CI runs as root).
fn with_fast_open_server(body: impl FnOnce(TcpListener) + Send + 'static) {
    if !crate::sys::is_root() {
        eprintln!("SKIPPED: needs root for a private network namespace (CI runs it as root)");
        return;
    }
    std::thread::spawn(|| {
        crate::sys::testns::enter_private_netns().unwrap();
        std::fs::write("/proc/sys/net/ipv4/tcp_fastopen", "3").unwrap();
        let server = loopback_listener();
        socket::set_int(
            server.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_FASTOPEN,
            16,
        )
        .unwrap();
        body(server)
    })
    .join()
    .unwrap();
}

/// Fast open with a cookie cached from an earlier connection: connect()
/// returns at once and the SYN waits for the first write. With a server
/// that speaks first there is nothing to write, so the relay sends a bare
/// SYN, which the kernel answers with EINPROGRESS.
#[test]
fn fast_open_with_a_cached_cookie_and_a_server_that_speaks_first() {
    with_fast_open_server(|server| {
        let dst = server.local_addr().unwrap();
        let banner = std::thread::spawn(move || {
            for _ in 0..3 {
                let (mut s, _) = server.accept().unwrap();
                s.write_all(b"220 hello\r\n").unwrap();
            }
        });
        // The first connection fetches the cookie, the next ones use it.
        for round in 0..3 {
            let mut r = rig_to(loopback_listener(), dst, true, Instant::now());
            r.user.set_read_timeout(Some(LIMIT)).unwrap();
            let mut user = r.user.try_clone().unwrap();
            let reader = std::thread::spawn(move || {
                let mut got = [0u8; 11];
                user.read_exact(&mut got).map(|()| got)
            });
            let end = r.drive(|_| reader.is_finished());
            assert_eq!(end, None, "round {round}: the relay ended early");
            assert_eq!(&reader.join().unwrap().unwrap(), b"220 hello\r\n");
        }
        banner.join().unwrap();
    });
}

/// Fast open with a cached cookie and a client that speaks first: the
/// SYN carries a copy of the client's first bytes, which then leave the
/// client's socket; the rest follows through the pipe, every byte once
/// and in order.
#[test]
fn fast_open_with_a_cached_cookie_and_a_client_that_speaks_first() {
    with_fast_open_server(|server| {
        let dst = server.local_addr().unwrap();
        let sent = payload(100_000);
        let sink = std::thread::spawn(move || {
            (0..3)
                .map(|_| read_to_end(&mut server.accept().unwrap().0).0)
                .collect::<Vec<_>>()
        });
        // The first connection fetches the cookie, the next ones use it.
        for round in 0..3 {
            let mut r = rig_to(loopback_listener(), dst, true, Instant::now());
            r.user.write_all(&sent).unwrap();
            r.user.shutdown(Shutdown::Write).unwrap();
            let mut user = r.user.try_clone().unwrap();
            let reader = std::thread::spawn(move || read_to_end(&mut user));
            assert_eq!(r.drive(|_| false), Some(End::Closed), "round {round}");
            assert_eq!(r.conn.bytes_up(), sent.len() as u64, "round {round}");
            if round > 0 {
                assert!(
                    r.conn.opened_with_syn_data(),
                    "round {round}: no data in the SYN"
                );
            }
            reader.join().unwrap().1.unwrap();
        }
        for got in sink.join().unwrap() {
            assert!(
                got == sent,
                "the server got {} bytes, not the ones sent",
                got.len()
            );
        }
    });
}

/// A connection dropped before it ended in order (pepwrt killed: the
/// kernel closes its sockets) resets both peers: a FIN would tell them a
/// stream cut short was complete.
#[test]
fn a_connection_closed_before_its_end_resets_its_peers() {
    let mut r = rig(Instant::now());
    let (mut server, _) = r.server.accept().unwrap();
    assert_eq!(r.drive(|r| r.conn.state_name() == "relay"), None);
    drop(r.conn);
    let (got, end) = read_to_end(&mut r.user);
    assert!(got.is_empty());
    assert_eq!(end.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
    let (_, end) = read_to_end(&mut server);
    assert_eq!(end.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
}

#[test]
fn seconds_print_as_one_decimal_floats_did() {
    for ms in [0, 40, 60, 949, 951, 2_400, 2_449, 2_451, 59_960, 86_400_049] {
        let d = Duration::from_millis(ms);
        let float = format!("{:.1}", d.as_secs_f64());
        assert_eq!(Seconds(d).to_string(), float, "{ms} ms");
        let (s, tenths) = Seconds(d).split();
        assert_eq!(format!("{s:>5}.{tenths}"), format!("{float:>7}"), "{ms} ms");
    }
}
