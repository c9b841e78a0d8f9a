//! The control socket: `pepwrt status` asks, the daemon answers. The
//! daemon serves it from the loop like every other socket: non-blocking,
//! a few sessions at once, each with a deadline, so a silent or slow
//! client costs a session here and never stalls relaying.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::StartError;
use crate::sys::poll::{self, Events, Poller};

/// Sessions served at once; further clients wait in the listen backlog.
pub const SESSIONS: usize = 4;
/// A session's whole life: the request and the report.
const DEADLINE: Duration = Duration::from_secs(2);
/// `json` or `text` and a newline.
const REQUEST_MAX: usize = 16;

/// The report format a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl Format {
    /// The request line: anything but `json` gets text.
    pub fn parse(request: &[u8]) -> Format {
        if request.starts_with(b"json") {
            Format::Json
        } else {
            Format::Text
        }
    }
}

enum Stage {
    Reading {
        got: usize,
    },
    /// The request is in; the report buffer is someone else's for now.
    Waiting(Format),
    Writing {
        sent: usize,
    },
}

struct Session {
    stream: UnixStream,
    deadline: Instant,
    request: [u8; REQUEST_MAX],
    stage: Stage,
}

impl Session {
    fn interest(&self) -> Events {
        match self.stage {
            Stage::Reading { .. } => poll::IN,
            Stage::Waiting(_) => 0,
            Stage::Writing { .. } => poll::OUT,
        }
    }
}

/// The listener, its sessions and the one report buffer they take turns
/// at. The socket file goes when pepwrt does.
pub struct Control {
    listener: UnixListener,
    path: PathBuf,
    sessions: [Option<Session>; SESSIONS],
    out: String,
    /// The session whose report is in `out`.
    writer: Option<usize>,
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Control {
    /// Binds the control socket, refusing to steal one a live pepwrt
    /// answers on; a stale file from a crashed run is replaced. `report`
    /// bytes are reserved for the largest report.
    pub fn bind(path: &Path, report: usize) -> Result<Control, StartError> {
        if UnixStream::connect(path).is_ok() {
            return Err(StartError::new(format!(
                "another pepwrt is running (its control socket {} answers)",
                path.display()
            )));
        }
        let failed =
            |e: io::Error| StartError::new(format!("control socket {}: {e}", path.display()));
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(failed)?;
        let control = Control {
            listener,
            path: path.to_path_buf(),
            sessions: Default::default(),
            out: String::with_capacity(report),
            writer: None,
        };
        // Status shows every client's address: root's alone.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
        control.listener.set_nonblocking(true).map_err(failed)?;
        Ok(control)
    }

    pub fn listener_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// Takes new clients while sessions are free.
    pub fn accept(&mut self, now: Instant) {
        while let Some(free) = self.sessions.iter().position(Option::is_none) {
            let Ok((stream, _)) = self.listener.accept() else {
                return;
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            self.sessions[free] = Some(Session {
                stream,
                deadline: now + DEADLINE,
                request: [0; REQUEST_MAX],
                stage: Stage::Reading { got: 0 },
            });
        }
    }

    /// Whether the listener should be watched: only while a session is
    /// free, or its backlog would wake the loop in vain.
    pub fn wants_clients(&self) -> bool {
        self.sessions.iter().any(Option::is_none)
    }

    /// Moves session `i` on: reads its request, or writes its report,
    /// which `render` writes when the report buffer is its turn. A session
    /// that ends leaves `poller` with its socket.
    pub fn on_ready(
        &mut self,
        i: usize,
        poller: &mut Poller,
        render: &mut dyn FnMut(Format, &mut String),
    ) {
        let Some(s) = self.sessions.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let mut done = false;
        match s.stage {
            Stage::Reading { got } => match s.stream.read(&mut s.request[got..]) {
                Ok(n) => {
                    let got = got + n;
                    let line = s.request[..got].contains(&b'\n');
                    if n == 0 || line || got == REQUEST_MAX {
                        s.stage = Stage::Waiting(Format::parse(&s.request[..got]));
                    } else {
                        s.stage = Stage::Reading { got };
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => done = true,
            },
            Stage::Writing { sent } => match s.stream.write(&self.out.as_bytes()[sent..]) {
                Ok(n) if sent + n == self.out.len() => done = true,
                Ok(n) => s.stage = Stage::Writing { sent: sent + n },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => done = true,
            },
            Stage::Waiting(_) => {}
        }
        if done {
            self.end(i, poller);
        }
        self.next_writer(render);
    }

    /// Hands the report buffer to the next waiting session.
    fn next_writer(&mut self, render: &mut dyn FnMut(Format, &mut String)) {
        if self.writer.is_some() {
            return;
        }
        for (i, slot) in self.sessions.iter_mut().enumerate() {
            let Some(s) = slot else { continue };
            if let Stage::Waiting(format) = s.stage {
                self.out.clear();
                render(format, &mut self.out);
                s.stage = Stage::Writing { sent: 0 };
                self.writer = Some(i);
                return;
            }
        }
    }

    fn end(&mut self, i: usize, poller: &mut Poller) {
        if let Some(s) = self.sessions[i].take() {
            poller.forget(s.stream.as_raw_fd());
        }
        if self.writer == Some(i) {
            self.writer = None;
        }
    }

    /// Ends sessions past their deadline, and hands on the report buffer.
    pub fn expire(
        &mut self,
        now: Instant,
        poller: &mut Poller,
        render: &mut dyn FnMut(Format, &mut String),
    ) {
        for i in 0..SESSIONS {
            if self.sessions[i].as_ref().is_some_and(|s| s.deadline <= now) {
                self.end(i, poller);
            }
        }
        self.next_writer(render);
    }

    /// Brings the registrations up to date: every session's, and the
    /// listener's, which is watched only while a session is free (or its
    /// backlog would wake the loop in vain). `token`: a session's, or the
    /// listener's for None.
    pub fn sync(&self, poller: &mut Poller, token: impl Fn(Option<usize>) -> u64) {
        let want = if self.wants_clients() { poll::IN } else { 0 };
        if let Err(e) = poller.set(self.listener_fd(), want, token(None)) {
            log::debug!("control listener: {e}");
        }
        for (i, slot) in self.sessions.iter().enumerate() {
            if let Some(s) = slot {
                let _ = poller.set(s.stream.as_raw_fd(), s.interest(), token(Some(i)));
            }
        }
    }
}

/// `pepwrt status`: asks the running daemon for its report.
pub fn query_status(path: &Path, format: Format) -> Result<String, String> {
    let mut s = UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            format!("not running (no control socket at {})", path.display())
        }
        io::ErrorKind::PermissionDenied => {
            format!("{}: permission denied (run as root)", path.display())
        }
        _ => format!("{}: {e}", path.display()),
    })?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let request: &[u8] = match format {
        Format::Json => b"json\n",
        Format::Text => b"text\n",
    };
    s.write_all(request).map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("reading status: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_their_format() {
        assert_eq!(Format::parse(b"json\n"), Format::Json);
        assert_eq!(Format::parse(b"text\n"), Format::Text);
        assert_eq!(Format::parse(b""), Format::Text);
        assert_eq!(Format::parse(&[0xff; 16]), Format::Text);
    }

    #[test]
    fn silent_and_slow_clients_cost_a_session_never_a_wait() {
        let dir = std::env::temp_dir().join(format!("pepwrt-control-{}", std::process::id()));
        let _ = std::fs::create_dir(&dir);
        let path = dir.join("sock");
        let mut c = Control::bind(&path, 4096).unwrap();
        let mut p = Poller::new(1 << 16, 4).unwrap();
        let now = Instant::now();
        let silent: Vec<UnixStream> = (0..SESSIONS + 2)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        c.accept(now);
        assert!(!c.wants_clients());
        let rendered = std::cell::Cell::new(0);
        let mut render = |_: Format, out: &mut String| {
            rendered.set(rendered.get() + 1);
            out.push_str("report\n");
        };
        // Nothing to read: every call returns at once.
        let t = Instant::now();
        for i in 0..SESSIONS {
            c.on_ready(i, &mut p, &mut render);
        }
        // A blocking read would hang here; seconds allow for qemu and a busy CI.
        assert!(t.elapsed() < Duration::from_secs(5));
        c.expire(now + DEADLINE, &mut p, &mut render);
        assert!(c.wants_clients());
        assert_eq!(rendered.get(), 0);
        // The clients that waited in the backlog are served next.
        c.accept(now + DEADLINE);
        let mut asker = UnixStream::connect(&path).unwrap();
        asker.write_all(b"json\n").unwrap();
        drop(silent);
        c.accept(now + DEADLINE);
        for _ in 0..4 {
            for i in 0..SESSIONS {
                c.on_ready(i, &mut p, &mut render);
            }
        }
        asker
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut got = String::new();
        asker.read_to_string(&mut got).unwrap();
        assert_eq!(got, "report\n");
        drop(c);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
