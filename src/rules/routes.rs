//! The long legs' routes' initial windows (`ip route change ... initcwnd`),
//! the tunnel's `fastopen_no_cookie`, and the record that lets `--delete`
//! take off exactly those.

use std::fmt::Write;

use super::{Family, families};
use crate::config::{Config, Target};
use crate::link::{LinkLeg, route_windows};

/// Where the script records the routes it gave an initial window, one
/// command a line that takes the window off again: per network namespace,
/// as routes are, in the run directory, which goes at reboot with the
/// routes themselves.
const ROUTE_RECORD: &str = "rec=/var/run/pepwrt/routes.$(readlink /proc/self/ns/net | tr -cd 0-9)";
/// Takes off the windows the record names, and forgets it.
const ROUTE_UNDO: &str = "while read -r c; do $c 2>/dev/null; done < \"$rec\"; rm -f \"$rec\"";

/// The long legs' routes' initial windows, and with the router's
/// zero-round-trip opens the tunnel's `fastopen_no_cookie` (the kernel
/// then sends data in the SYN without a cookie to destinations on those
/// routes only; every other fast open asks for a cookie first). Setting
/// them first takes off what an earlier run set (the settings may have
/// changed since, or gone); removing them takes off exactly what the
/// record names, whatever the flags say now. Without a record (a setup
/// older than it), removal falls back to the routes the flags name.
pub(super) fn windows_script(cfg: &Config, delete: bool, out: &mut String) {
    let _ = writeln!(out, "{ROUTE_RECORD}");
    let mut attrs = String::new();
    if let Some((cwnd, rwnd)) = route_windows(cfg.link, cfg.initcwnd) {
        let _ = write!(attrs, " initcwnd {cwnd} initrwnd {rwnd}");
    }
    // Only the tunnel's routes: --zero-rtt needs --tunnel.
    if cfg.zero_rtt_routes() {
        attrs.push_str(" fastopen_no_cookie 1");
    }
    if delete {
        let _ = writeln!(out, "if [ -f \"$rec\" ]; then {ROUTE_UNDO}; else");
        if !attrs.is_empty() {
            window_routes(cfg, None, out);
        }
        out.push_str("true; fi\n");
        return;
    }
    let _ = writeln!(out, "if [ -f \"$rec\" ]; then {ROUTE_UNDO}; fi");
    if !attrs.is_empty() {
        out.push_str("mkdir -p /var/run/pepwrt\n");
        window_routes(cfg, Some(&attrs), out);
    }
}

/// Gives the long legs' routes the attributes `set`, recording each route
/// it changed, or with None strips them.
fn window_routes(cfg: &Config, set: Option<&str>, out: &mut String) {
    // netifd owns these routes; the service reapplies this on interface
    // changes. Existing settings are stripped first.
    let windows = |ip: &str, dev: &str| match set {
        Some(attrs) => {
            format!("{dev}{attrs} && echo \"{ip} route change $r{dev}\" >> \"$rec\"")
        }
        None => dev.to_string(),
    };
    let strip = "sed -E 's/ (initcwnd|initrwnd|fastopen_no_cookie) [0-9]+//g'";
    let at_gateway = cfg.link.is_some_and(|l| l.leg == LinkLeg::Client);
    for &fam in families(cfg) {
        let ip = if fam == Family::V4 { "ip" } else { "ip -6" };
        if let Some(t) = &cfg.tunnel {
            // Every route through a tunnel crosses the link, at either
            // end, in whatever table (wg-quick keeps its own), and none
            // has a gateway (` via `): a point-to-point device needs none.
            // `table all` lists both families unless told; link-local
            // routes carry no user traffic.
            let show = if fam == Family::V4 { "ip -4" } else { ip };
            let _ = writeln!(
                out,
                "{show} route show table all dev {t} type unicast | grep -v '^fe80:' | {strip} | while read -r r; do {ip} route change $r{}; done",
                windows(ip, &format!(" dev {t}"))
            );
            continue;
        }
        if !at_gateway {
            let _ = writeln!(
                out,
                "{ip} route show default | {strip} | while read -r r; do {ip} route change $r{}; done",
                windows(ip, "")
            );
            continue;
        }
        // At a gateway the long leg is the intercepted one: its packets
        // take the routes back over the link, toward the users' networks
        // behind the router at the other end.
        for t in &cfg.intercept {
            if let Target::Interface(i) = t {
                let _ = writeln!(
                    out,
                    "{ip} route show dev {i} | grep ' via ' | {strip} | while read -r r; do {ip} route change $r{}; done",
                    windows(ip, &format!(" dev {i}"))
                );
            }
        }
    }
}
