//! Start-up checks: is every kernel piece pepwrt relies on there, and
//! does the configuration fit this system? Each failure names the missing
//! piece and the OpenWrt package that has it, or what to lower; what the
//! system does not tell is left out, not guessed.

mod firewall;
mod snoop;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;

use crate::config::{Backend, Config, human_bytes};
use crate::control;
use crate::error::StartError;
use crate::link::{Congestion, tuning};
use crate::nfqueue::NfQueue;
use crate::sys::socket;

/// Kernel module names (any one suffices) for a piece of the rules, and
/// the packages that provide them on OpenWrt.
const RULE_PIECES: &[(&str, &[&str], &str)] = &[
    (
        "TPROXY",
        &["xt_TPROXY", "nft_tproxy", "nf_tproxy_ipv4"],
        "kmod-nft-tproxy (fw4) or kmod-ipt-tproxy (fw3)",
    ),
    (
        "socket match",
        &["xt_socket", "nft_socket", "nf_socket_ipv4"],
        "kmod-nft-socket (fw4) or kmod-ipt-socket (fw3)",
    ),
    (
        "conntrack mark (a decision sticks to its connection)",
        &["nft_ct", "xt_connmark", "nf_tables"],
        "kmod-nft-core (fw4) or iptables-mod-conntrack-extra (fw3)",
    ),
    (
        "conntrack netlink (free source ports, forgotten decisions)",
        &["nf_conntrack_netlink"],
        "kmod-nf-conntrack-netlink",
    ),
];

/// Whether a module is loaded, built in, or installed to be loaded on
/// demand: the one found, or `Err(())` when none is. `None`: this system
/// does not tell (no module tree at all).
fn module_present<'a>(names: &[&'a str]) -> Option<Result<&'a str, ()>> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let tree = Path::new("/lib/modules").join(release.trim());
    let modules = std::fs::read_to_string("/proc/modules").unwrap_or_default();
    let builtin = std::fs::read_to_string(tree.join("modules.builtin")).unwrap_or_default();
    let mut told = !modules.is_empty() || !builtin.is_empty();
    for name in names {
        if Path::new("/sys/module").join(name).exists()
            || modules.lines().any(|l| l.split(' ').next() == Some(name))
        {
            return Some(Ok(name));
        }
        if builtin.lines().any(|l| l.ends_with(&format!("/{name}.ko"))) {
            return Some(Ok(name));
        }
        // OpenWrt keeps modules flat in /lib/modules/<release>/.
        if tree.join(format!("{name}.ko")).exists() {
            return Some(Ok(name));
        }
        told |= tree.exists();
    }
    told.then_some(Err(()))
}

/// Congestion control is checked by setting it on a scratch socket, which
/// also loads its module when allowed. Names what each leg gets.
fn check_congestion(cfg: &Config) -> Result<String, String> {
    let legs = [
        ("--server-cc", &cfg.server_leg),
        ("--client-cc", &cfg.client_leg),
    ];
    for (flag, leg) in legs {
        let Some(cc) = &leg.congestion else { continue };
        let probe = std::net::TcpListener::bind(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0))
            .map_err(|e| format!("creating a probe socket: {e}"))?;
        use std::os::fd::AsRawFd;
        if let Err(e) = tuning::set_congestion(probe.as_raw_fd(), cc) {
            let avail =
                std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
                    .unwrap_or_default();
            let why = match e.raw_os_error() {
                Some(libc::ENOENT) => "this kernel has no such congestion control".to_string(),
                Some(libc::EPERM) => {
                    "not allowed (add it to net.ipv4.tcp_allowed_congestion_control)".to_string()
                }
                _ => e.to_string(),
            };
            return Err(format!(
                "{flag} {cc}: {why}; it offers: {} (on OpenWrt, bbr comes with kmod-tcp-bbr)",
                avail.trim()
            ));
        }
    }
    Ok(congestion_in_use(cfg, &kernel_default_congestion()))
}

fn kernel_default_congestion() -> String {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control");
    text.unwrap_or_default().trim().to_string()
}

/// "bbr on the server leg, cubic (the kernel's default) on the client
/// leg", or one name for both.
fn congestion_in_use(cfg: &Config, kernel_default: &str) -> String {
    let name = |chosen: &Option<Congestion>| match chosen {
        Some(cc) => cc.to_string(),
        None if kernel_default.is_empty() => "the kernel's default".to_string(),
        None => format!("{kernel_default} (the kernel's default)"),
    };
    let (server, client) = (
        name(&cfg.server_leg.congestion),
        name(&cfg.client_leg.congestion),
    );
    if server == client {
        server
    } else {
        format!("{server} on the server leg, {client} on the client leg")
    }
}

/// Interfaces named in --intercept (`intercept_only`) or also --snoop that this system
/// does not have (yet: a modem's interface may come up later, so this is
/// a warning, never an error).
pub fn absent_interfaces(cfg: &Config) -> Vec<&str> {
    absent(cfg, false)
}

fn absent(cfg: &Config, intercept_only: bool) -> Vec<&str> {
    let snoop = cfg
        .snoop
        .iter()
        .filter(|_| !intercept_only)
        .flat_map(|s| s.targets.iter());
    cfg.intercept
        .iter()
        .chain(snoop)
        .filter_map(|t| match t {
            crate::config::Target::Interface(name) => Some(name.as_str()),
            crate::config::Target::Subnet(..) => None,
        })
        .filter(|name| !Path::new("/sys/class/net").join(name).exists())
        .collect()
}

fn absent_interface_warning(name: &str) -> String {
    format!(
        "interface {name} does not exist (yet): its traffic is intercepted once it appears; check the name (ip link)"
    )
}

/// MemAvailable in bytes, from the text of /proc/meminfo.
pub fn mem_available_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The buffers a pepwrt running on `cfg`'s control socket holds: a
/// restart frees them, so `check` before a reload counts them available.
fn held_by_running_pepwrt(cfg: &Config) -> u64 {
    let Ok(json) = control::query_status(&cfg.control_path, control::Format::Json) else {
        return 0;
    };
    let field = |name: &str| -> Option<u64> {
        let start = json.find(&format!("\"{name}\":"))? + name.len() + 3;
        let digits = json[start..].split(|c: char| !c.is_ascii_digit()).next()?;
        digits.parse().ok()
    };
    match (field("max_conns"), field("buffer_bytes")) {
        (Some(n), Some(b)) => 2 * n * b,
        _ => 0,
    }
}

/// The checks `run` makes before it binds anything; `mem_available` is
/// the kernel's MemAvailable, read by the caller.
pub fn preflight(cfg: &Config, mem_available: Option<u64>) -> Result<(), StartError> {
    if let Some(user) = &cfg.user {
        crate::sys::privileges::lookup(user).map_err(|message| StartError {
            message,
            exit_code: 2,
        })?;
    }
    if let Some(available) = mem_available {
        cfg.check_memory(available).map_err(|e| StartError {
            message: e.message,
            exit_code: 2,
        })?;
        if let Some(warning) = cfg.memory_warning(available) {
            log::warn!("{warning}");
        }
    }
    check_congestion(cfg).map_err(|message| StartError {
        message,
        exit_code: 3,
    })?;
    for name in absent(cfg, true) {
        log::warn!("{}", absent_interface_warning(name));
    }
    for (piece, names, package) in RULE_PIECES {
        if module_present(names) == Some(Err(())) {
            log::warn!(
                "{piece} support not found in this kernel (install {package}); interception will not work without it"
            );
        }
    }
    Ok(())
}

/// The verdict of one line of `pepwrt check`, and the exit code it
/// leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Ok,
    Warn,
    /// In use or not permitted: exit 1, as `run` would.
    Busy,
    /// The kernel or firewall lacks it: exit 3.
    Missing,
    /// The configuration does not suit this system: exit 2.
    Bad,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "WARN",
            Verdict::Busy => "BUSY",
            Verdict::Missing => "MISSING",
            Verdict::Bad => "BAD",
        }
    }
}

/// The lines `pepwrt check` prints, and the worst verdict among them.
#[derive(Default)]
struct Report {
    worst: Option<Verdict>,
}

impl Report {
    fn say(&mut self, verdict: Verdict, what: &str) {
        crate::sys::out(&format!("{:<7} {what}\n", verdict.word()));
        self.worst = self.worst.max(Some(verdict));
    }

    fn exit_code(&self) -> ExitCode {
        match self.worst {
            Some(Verdict::Bad) => ExitCode::from(2),
            Some(Verdict::Missing) => ExitCode::from(3),
            Some(Verdict::Busy) => ExitCode::from(1),
            _ => ExitCode::SUCCESS,
        }
    }
}

/// `pepwrt check`: every check, one line each; the exit code of the
/// worst (2 bad configuration, 3 missing support, 1 busy).
pub fn report(cfg: &Config, backend: Option<Backend>, mem_available: Option<u64>) -> ExitCode {
    let mut r = Report::default();
    if let Some(user) = &cfg.user {
        match crate::sys::privileges::lookup(user) {
            Ok(_) => r.say(Verdict::Ok, &format!("user {user}")),
            Err(e) => r.say(Verdict::Bad, &e),
        }
    }
    if let Some(available) = mem_available {
        let available = available + held_by_running_pepwrt(cfg);
        match cfg.check_memory(available) {
            Err(e) => r.say(Verdict::Bad, &e.message),
            Ok(()) => match cfg.memory_warning(available) {
                Some(w) => r.say(Verdict::Warn, &w),
                None => r.say(
                    Verdict::Ok,
                    &format!(
                        "memory for the buffers: {} of the {} available",
                        human_bytes(cfg.buffer_memory_bytes()),
                        human_bytes(available)
                    ),
                ),
            },
        }
    }
    match check_congestion(cfg) {
        Ok(names) => r.say(Verdict::Ok, &format!("congestion control {names}")),
        Err(e) => r.say(Verdict::Missing, &e),
    }
    for name in absent(cfg, true) {
        r.say(Verdict::Warn, &absent_interface_warning(name));
    }
    if cfg.table > 1023 {
        r.say(
            Verdict::Warn,
            &format!(
                "--table {}: busybox's ip (OpenWrt's default) takes tables up to 1023; choose a smaller one or install ip-full",
                cfg.table
            ),
        );
    }
    if let Some(f) = cfg.link_in_force() {
        // The figures were validated when parsed; this shows what they
        // turn into, and flags a send buffer set smaller than the BDP.
        let link = f.link;
        let bdp = link.send_bps().map(|b| link.bdp_bytes(b));
        let mut line = format!(
            "link: RTT {} ms, BDP {} bytes sent over the link",
            crate::duration::millis(link.rtt),
            bdp.map_or("(no rate)".to_string(), |b| b.to_string())
        );
        if let Some(w) = f.route_initcwnd {
            line += &format!(", initial window {w} segments");
        }
        match (bdp, f.sndbuf_bytes) {
            (Some(b), Some(s)) if u64::from(s) < b => r.say(
                Verdict::Warn,
                &format!("{line}; the send buffer ({s} bytes) is smaller than one BDP"),
            ),
            _ => r.say(Verdict::Ok, &line),
        }
    }
    match NfQueue::open(cfg.queue, 128, 16, 64 << 10) {
        Ok(_) => r.say(Verdict::Ok, &format!("NFQUEUE {} can be bound", cfg.queue)),
        Err(e) if e.missing_support => r.say(Verdict::Missing, &e.message),
        Err(e) => r.say(Verdict::Busy, &e.message),
    }
    let addr = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), cfg.port);
    match socket::transparent_listener(addr, 1, |_| Ok(())) {
        Ok(_) => r.say(
            Verdict::Ok,
            &format!("transparent listener on port {}", cfg.port),
        ),
        Err(e) => {
            let why = if e.raw_os_error() == Some(libc::EADDRINUSE) {
                "in use (by a running pepwrt or another program)".to_string()
            } else {
                format!("{e} (needs root or CAP_NET_ADMIN)")
            };
            r.say(
                Verdict::Busy,
                &format!("transparent listener on port {}: {why}", cfg.port),
            );
        }
    }
    for (piece, names, package) in RULE_PIECES {
        match module_present(names) {
            Some(Ok(found)) => r.say(Verdict::Ok, &format!("{piece} ({found})")),
            Some(Err(())) => r.say(Verdict::Missing, &format!("{piece}: install {package}")),
            // This system does not list its modules: nothing to say.
            None => {}
        }
    }
    let mut findings = Vec::new();
    if let Some(backend) = backend {
        findings = firewall::probe(backend, cfg, &mut firewall::dry_run);
    }
    if let Some(s) = &cfg.snoop {
        findings.extend(snoop::findings(cfg, s, backend, &mut firewall::dry_run));
    }
    for finding in findings {
        match finding {
            firewall::Finding::Ok(line) => r.say(Verdict::Ok, &line),
            firewall::Finding::Warn(line) => r.say(Verdict::Warn, &line),
            firewall::Finding::Missing(line) => r.say(Verdict::Missing, &line),
        }
    }
    r.exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_available_is_read_from_meminfo() {
        let meminfo = "MemTotal:  60000 kB\nMemFree:  20000 kB\nMemAvailable:   30000 kB\n";
        assert_eq!(mem_available_bytes(meminfo), Some(30000 * 1024));
        assert_eq!(mem_available_bytes("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn congestion_control_is_named_per_leg() {
        let mut cfg = Config::default();
        assert_eq!(
            congestion_in_use(&cfg, "cubic"),
            "cubic (the kernel's default)"
        );
        assert_eq!(congestion_in_use(&cfg, ""), "the kernel's default");
        cfg.server_leg.congestion = Some(Congestion::Bbr);
        assert_eq!(
            congestion_in_use(&cfg, "cubic"),
            "bbr on the server leg, cubic (the kernel's default) on the client leg"
        );
        cfg.client_leg.congestion = Some(Congestion::Bbr);
        assert_eq!(congestion_in_use(&cfg, "cubic"), "bbr");
    }

    #[test]
    fn the_worst_verdict_sets_the_exit_code() {
        let mut r = Report::default();
        assert_eq!(r.exit_code(), ExitCode::SUCCESS);
        r.worst = Some(Verdict::Busy);
        assert_eq!(r.exit_code(), ExitCode::from(1));
        r.worst = r.worst.max(Some(Verdict::Missing));
        assert_eq!(r.exit_code(), ExitCode::from(3));
        r.worst = r.worst.max(Some(Verdict::Bad));
        assert_eq!(r.exit_code(), ExitCode::from(2));
    }
}
