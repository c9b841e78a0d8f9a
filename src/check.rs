//! Start-up checks: is every kernel piece pepwrt relies on there? Each
//! failure names the missing piece and the OpenWrt package that has it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;
use crate::error::StartError;
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
/// demand. `None`: this system does not tell (no module tree at all).
fn module_present(names: &[&str]) -> Option<bool> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let tree = Path::new("/lib/modules").join(release.trim());
    let modules = std::fs::read_to_string("/proc/modules").unwrap_or_default();
    let builtin = std::fs::read_to_string(tree.join("modules.builtin")).unwrap_or_default();
    let mut told = !modules.is_empty() || !builtin.is_empty();
    for name in names {
        if Path::new("/sys/module").join(name).exists()
            || modules.lines().any(|l| l.split(' ').next() == Some(name))
        {
            return Some(true);
        }
        if builtin.lines().any(|l| l.ends_with(&format!("/{name}.ko"))) {
            return Some(true);
        }
        // OpenWrt keeps modules flat in /lib/modules/<release>/.
        if tree.join(format!("{name}.ko")).exists() {
            return Some(true);
        }
        told |= tree.exists();
    }
    told.then_some(false)
}

/// Congestion control is checked by setting it on a scratch socket, which
/// also loads its module when allowed.
fn check_congestion(cfg: &Config) -> Result<(), String> {
    let legs = [
        ("--server-cc", &cfg.server_leg),
        ("--client-cc", &cfg.client_leg),
    ];
    for (flag, leg) in legs {
        let Some(cc) = &leg.congestion else { continue };
        let probe = std::net::TcpListener::bind(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0))
            .map_err(|e| format!("creating a probe socket: {e}"))?;
        use std::os::fd::AsRawFd;
        if let Err(e) = socket::set_congestion(probe.as_raw_fd(), cc) {
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
    Ok(())
}

/// Interfaces named in --intercept or --snoop-target that this system
/// does not have (yet: a modem's interface may come up later, so this is
/// a warning, never an error).
pub fn absent_interfaces(cfg: &Config) -> Vec<&str> {
    let snoop = cfg.snoop.iter().flat_map(|s| s.targets.iter());
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

/// The checks `run` makes before it binds anything.
pub fn preflight(cfg: &Config) -> Result<(), StartError> {
    if let Some(user) = &cfg.user {
        crate::sys::privileges::lookup(user).map_err(|message| StartError {
            message,
            exit_code: 2,
        })?;
    }
    check_congestion(cfg).map_err(|message| StartError {
        message,
        exit_code: 3,
    })?;
    for name in absent_interfaces(cfg) {
        log::warn!("{}", absent_interface_warning(name));
    }
    for (piece, names, package) in RULE_PIECES {
        if module_present(names) == Some(false) {
            log::warn!(
                "{piece} support not found in this kernel (install {package}); interception will not work without it"
            );
        }
    }
    Ok(())
}

/// `pepwrt check`: every check, one line each; exit 3 if any fails.
pub fn report(cfg: &Config) -> ExitCode {
    // Exit 3 when the kernel lacks something, 1 when something is only in
    // use or not permitted, as `run` would exit.
    let mut missing = false;
    let mut busy = false;
    let say = |status: &str, what: &str| println!("{status:<7} {what}");
    let mut bad_config = false;
    if let Some(user) = &cfg.user {
        match crate::sys::privileges::lookup(user) {
            Ok(_) => say("ok", &format!("user {user}")),
            Err(e) => {
                bad_config = true;
                say("BAD", &e);
            }
        }
    }
    match check_congestion(cfg) {
        Ok(()) => say("ok", "congestion control"),
        Err(e) => {
            missing = true;
            say("MISSING", &e);
        }
    }
    for name in absent_interfaces(cfg) {
        say("WARN", &absent_interface_warning(name));
    }
    if cfg.table > 1023 {
        say(
            "WARN",
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
            link.rtt.as_millis(),
            bdp.map_or("(no rate)".to_string(), |b| b.to_string())
        );
        if let Some(w) = f.route_initcwnd {
            line += &format!(", initial window {w} segments");
        }
        match (bdp, f.sndbuf_bytes) {
            (Some(b), Some(s)) if u64::from(s) < b => say(
                "WARN",
                &format!("{line}; the send buffer ({s} bytes) is smaller than one BDP"),
            ),
            _ => say("ok", &line),
        }
    }
    match NfQueue::open(cfg.queue, 128, 16, 64 << 10) {
        Ok(_) => say("ok", &format!("NFQUEUE {} can be bound", cfg.queue)),
        Err(e) => {
            missing |= e.missing_support;
            busy |= !e.missing_support;
            say(
                if e.missing_support { "MISSING" } else { "BUSY" },
                &e.message,
            );
        }
    }
    let addr = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), cfg.port);
    match socket::transparent_listener(addr, 1, |_| Ok(())) {
        Ok(_) => say("ok", &format!("transparent listener on port {}", cfg.port)),
        Err(e) => {
            busy = true;
            let why = if e.raw_os_error() == Some(libc::EADDRINUSE) {
                "in use (by a running pepwrt or another program)".to_string()
            } else {
                format!("{e} (needs root or CAP_NET_ADMIN)")
            };
            say(
                "BUSY",
                &format!("transparent listener on port {}: {why}", cfg.port),
            );
        }
    }
    for (piece, names, package) in RULE_PIECES {
        match module_present(names) {
            Some(true) => say("ok", piece),
            Some(false) => {
                missing = true;
                say("MISSING", &format!("{piece}: install {package}"));
            }
            None => say(
                "?",
                &format!(
                    "{piece}: this system does not list its kernel modules; assuming built in"
                ),
            ),
        }
    }
    match (missing, busy) {
        _ if bad_config => ExitCode::from(2),
        (true, _) => ExitCode::from(3),
        (false, true) => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    }
}
