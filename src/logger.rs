//! Log records to stderr (foreground) or to syslog's /dev/log with the
//! daemon facility, which is what `logread` shows on OpenWrt. Records are
//! formatted into a fixed buffer: logging allocates nothing.

use std::fmt::Write as _;
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;

const LINE: usize = 1024;
const LOG_DAEMON: u8 = 3 << 3;

enum Sink {
    Stderr,
    Syslog(Option<UnixDatagram>),
}

struct Logger {
    sink: Mutex<Sink>,
    pid: u32,
}

static LOGGER: std::sync::OnceLock<Logger> = std::sync::OnceLock::new();

fn connect_syslog() -> Option<UnixDatagram> {
    let s = UnixDatagram::unbound().ok()?;
    s.connect("/dev/log").ok()?;
    s.set_nonblocking(true).ok()?;
    Some(s)
}

/// Installs the logger; `foreground` sends records to stderr.
pub fn init(foreground: bool, level: log::LevelFilter) {
    let sink = if foreground {
        Sink::Stderr
    } else {
        Sink::Syslog(connect_syslog())
    };
    let logger = LOGGER.get_or_init(|| Logger {
        sink: Mutex::new(sink),
        pid: std::process::id(),
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

/// Logs an error that ends the program, and makes sure it is on stderr
/// once: an admin who ran pepwrt by hand sees why it stopped, whether the
/// record went to syslog or already to stderr.
pub fn fatal(message: &str) {
    log::error!("{message}");
    let on_stderr = LOGGER.get().is_none_or(|l| {
        l.sink
            .lock()
            .map_or(true, |s| !matches!(&*s, Sink::Syslog(Some(_))))
    });
    if !on_stderr {
        crate::sys::say(&format!("pepwrt: {message}"));
    }
}

/// Reconnects to syslog (SIGHUP), e.g. after logd restarted.
pub fn reopen() {
    if let Some(l) = LOGGER.get()
        && let Ok(mut sink) = l.sink.lock()
        && let Sink::Syslog(s) = &mut *sink
    {
        *s = connect_syslog();
    }
}

fn level_name(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "error",
        log::Level::Warn => "warning",
        log::Level::Info => "info",
        log::Level::Debug | log::Level::Trace => "debug",
    }
}

fn severity(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

impl log::Log for Logger {
    fn enabled(&self, meta: &log::Metadata<'_>) -> bool {
        meta.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let Ok(sink) = self.sink.lock() else {
            return;
        };
        let mut line: heapless::String<LINE> = heapless::String::new();
        // A record longer than the buffer is cut, not dropped.
        if let Sink::Syslog(Some(sock)) = &*sink {
            let pri = LOG_DAEMON | severity(record.level());
            let _ = write!(line, "<{pri}>pepwrt[{}]: {}", self.pid, record.args());
            if sock.send(line.as_bytes()).is_ok() {
                return;
            }
            line.clear();
        }
        // Foreground, or no syslog daemon: stderr, as people read it
        // (procd forwards it to the log).
        let _ = writeln!(
            line,
            "pepwrt: {}: {}",
            level_name(record.level()),
            record.args()
        );
        crate::sys::write_std(2, &line);
    }

    fn flush(&self) {}
}
