//! Where a Snoop target interface is on this router, and what stands in
//! Snoop's way: for `pepwrt check`, the start-up log and the daemon's
//! packet classification. Everything is read from sysfs and config files
//! (no netlink), under a root that tests replace.

use std::path::Path;

/// Where an interface is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Missing,
    /// An interface of its own, routed by the router.
    Routed {
        wireless: bool,
    },
    /// A port of a bridge (a stock OpenWrt access point in br-lan).
    BridgePort {
        bridge: String,
        wireless: bool,
        /// Addresses the bridge learned on this port (its stations), when
        /// the bridge says.
        stations: Option<usize>,
    },
    /// A bridge itself: Snoop would take every host on it, wired or not.
    Bridge,
}

/// The place of `name` under a sysfs root (`/sys` on a router). Only
/// whole-file reads: on an 8 MB router every std facility linked in
/// counts (directory walks and symlink reads cost kilobytes).
pub fn place(sys: &str, name: &str) -> Place {
    if !has(sys, name, "") {
        return Place::Missing;
    }
    let wireless = has(sys, name, "phy80211") || has(sys, name, "wireless");
    if has(sys, name, "bridge") {
        return Place::Bridge;
    }
    // brport/bridge links to the bridge's own directory.
    let Ok(uevent) = std::fs::read_to_string(at(sys, name, "brport/bridge/uevent")) else {
        return Place::Routed { wireless };
    };
    let bridge = uevent
        .lines()
        .find_map(|l| l.strip_prefix("INTERFACE="))
        .unwrap_or("")
        .to_string();
    let stations = port_number(sys, name).and_then(|port| {
        let fdb = std::fs::read(at(sys, name, "brport/bridge/brforward")).ok()?;
        Some(learned_on(&fdb, port))
    });
    Place::BridgePort {
        bridge,
        wireless,
        stations,
    }
}

/// `<sys>/class/net/<name>/<leaf>`: one out-of-line path builder, which
/// is smaller on MIPS than a `Path::join` chain at every call.
#[inline(never)]
fn at(sys: &str, name: &str, leaf: &str) -> String {
    let mut p = String::with_capacity(64);
    for part in [sys, "/class/net/", name, "/", leaf] {
        p.push_str(part);
    }
    p
}

#[inline(never)]
fn has(sys: &str, name: &str, leaf: &str) -> bool {
    Path::new(&at(sys, name, leaf)).exists()
}

fn port_number(sys: &str, name: &str) -> Option<u16> {
    let text = std::fs::read_to_string(at(sys, name, "brport/port_no")).ok()?;
    let hex = text.trim();
    u16::from_str_radix(hex.strip_prefix("0x").unwrap_or(hex), 16).ok()
}

/// Size of one `struct __fdb_entry` in a bridge's `brforward` file: the
/// MAC (6), port_no, is_local, ageing timer (4), port_hi, pad, unused (2).
const FDB_ENTRY: usize = 16;

/// Addresses the bridge learned on `port` (its own addresses left out).
fn learned_on(fdb: &[u8], port: u16) -> usize {
    fdb.chunks_exact(FDB_ENTRY)
        .filter(|e| u16::from(e[6]) | (u16::from(e[12]) << 8) == port && e[7] == 0)
        .count()
}

/// Wireless interfaces with OpenWrt's names (`phyN-apM` since 23.05,
/// `wlanN` before), for a hint: looked up by name, not by a directory walk.
pub fn wireless_interfaces(sys: &str) -> Vec<&'static str> {
    const NAMES: [&str; 12] = [
        "phy0-ap0", "phy1-ap0", "phy2-ap0", "phy0-ap1", "phy1-ap1", "phy2-ap1", "wlan0", "wlan1",
        "wlan2", "wlan0-1", "wlan1-1", "wlan2-1",
    ];
    NAMES
        .into_iter()
        .filter(|n| has(sys, n, "phy80211") || has(sys, n, "wireless"))
        .collect()
}

/// The index of the bridge `name` is a port of, or 0 (the daemon's
/// classification; one file read).
pub fn master_index(sys: &str, name: &str) -> u32 {
    std::fs::read_to_string(at(sys, name, "brport/bridge/ifindex"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// One line on a target for `check` and the log.
pub fn describe(name: &str, place: &Place) -> String {
    match place {
        Place::Missing => format!(
            "snoop: interface {name} does not exist (yet); Snoop takes it once it appears, routed or as a bridge port; check the name (ip link)"
        ),
        Place::Routed { wireless } => format!(
            "snoop: {name} is a routed interface{}: flows through it are snooped",
            if *wireless { " (wireless)" } else { "" }
        ),
        Place::BridgePort {
            bridge,
            wireless,
            stations,
        } => {
            let count = stations.map_or(String::new(), |n| {
                format!(", {n} station{} on it now", if n == 1 { "" } else { "s" })
            });
            let kind = if *wireless { "a wireless" } else { "a" };
            format!(
                "snoop: {name} is {kind} port of bridge {bridge}{count}: flows of the hosts behind it are snooped, other ports' hosts are left alone"
            )
        }
        Place::Bridge => format!(
            "snoop: {name} is a bridge: Snoop takes every host on it, wired ones too; name its Wi-Fi ports instead (e.g. phy0-ap0)"
        ),
    }
}

/// Whether the firewall offloads forwarded flows past the forward hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offload {
    Off,
    Software,
    Hardware,
}

/// Flow offloading from the text of /etc/config/firewall (its `defaults`
/// section, fw3 and fw4 alike).
pub fn offload_in_uci(text: &str) -> Offload {
    let mut in_defaults = false;
    let (mut sw, mut hw) = (false, false);
    for line in text.lines() {
        let line = line.trim();
        if let Some(kind) = line.strip_prefix("config") {
            in_defaults = kind.trim_start().starts_with("defaults");
            continue;
        }
        let Some(option) = line.strip_prefix("option").filter(|_| in_defaults) else {
            continue;
        };
        let mut words = option.split_whitespace();
        let (key, value) = (words.next(), words.next().unwrap_or(""));
        let on = matches!(
            value,
            "1" | "'1'" | "\"1\"" | "on" | "'on'" | "true" | "'true'" | "yes"
        );
        match key {
            Some("flow_offloading") => sw = on,
            Some("flow_offloading_hw") => hw = on,
            _ => {}
        }
    }
    match (sw, hw) {
        (false, _) => Offload::Off,
        (true, false) => Offload::Software,
        (true, true) => Offload::Hardware,
    }
}

/// Offloading as the router is set up (`etc` is `/etc`).
pub fn offload(firewall_config: &str) -> Offload {
    let text = std::fs::read_to_string(firewall_config).unwrap_or_default();
    offload_in_uci(&text)
}

/// What to tell the admin when offloading is on, or None.
pub fn offload_warning(o: Offload) -> Option<&'static str> {
    match o {
        Offload::Off => None,
        Offload::Software | Offload::Hardware => Some(
            "snoop: the firewall's flow offloading is on: it forwards an established flow past the forward hook, so Snoop sees only its first packets and repairs nothing; turn it off (uci set firewall.@defaults[0].flow_offloading=0; uci commit firewall; /etc/init.d/firewall restart)",
        ),
    }
}

/// The start-up log: where each interface target is, and offloading.
pub fn log_start(s: &crate::config::SnoopConfig) {
    for t in &s.targets {
        if let crate::config::Target::Interface(name) = t {
            let p = place("/sys", name);
            match p {
                Place::Missing | Place::Bridge => log::warn!("{}", describe(name, &p)),
                _ => log::info!("{}", describe(name, &p)),
            }
        }
    }
    if let Some(w) = offload_warning(offload("/etc/config/firewall")) {
        log::warn!("{w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offloading_is_read_from_the_defaults_section_only() {
        let on = "config defaults\n\toption input 'REJECT'\n\toption flow_offloading '1'\n\nconfig zone\n\toption flow_offloading '0'\n";
        assert_eq!(offload_in_uci(on), Offload::Software);
        let hw = "config defaults\n\toption flow_offloading '1'\n\toption flow_offloading_hw '1'\n";
        assert_eq!(offload_in_uci(hw), Offload::Hardware);
        assert_eq!(
            offload_in_uci("config defaults\n\toption flow_offloading '0'\n"),
            Offload::Off
        );
        assert_eq!(
            offload_in_uci("config zone\n\toption flow_offloading '1'\n"),
            Offload::Off
        );
        assert_eq!(offload_in_uci(""), Offload::Off);
        assert!(
            offload_warning(Offload::Software)
                .unwrap()
                .contains("flow_offloading=0")
        );
        assert!(offload_warning(Offload::Off).is_none());
    }

    fn fake_sys(tag: &str) -> String {
        let root = std::env::temp_dir().join(format!("pepwrt-place-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let net = root.join("class/net");
        for d in [
            "br-lan/bridge",
            "phy0-ap0/brport",
            "phy0-ap0/phy80211",
            "lan1/brport",
            "wlan1/wireless",
            "eth1",
        ] {
            std::fs::create_dir_all(net.join(d)).unwrap();
        }
        let uevent = "DEVTYPE=bridge\nINTERFACE=br-lan\nIFINDEX=7\n";
        std::fs::write(net.join("br-lan/uevent"), uevent).unwrap();
        std::fs::write(net.join("br-lan/ifindex"), "7\n").unwrap();
        for port in ["phy0-ap0", "lan1"] {
            let link = net.join(port).join("brport/bridge");
            std::os::unix::fs::symlink("../../br-lan", link).unwrap();
        }
        std::fs::write(net.join("phy0-ap0/brport/port_no"), "0x2\n").unwrap();
        std::fs::write(net.join("lan1/brport/port_no"), "0x1\n").unwrap();
        // Two stations on port 2, one host on port 1, the bridge's own
        // address (local) on port 2.
        let mut fdb = Vec::new();
        for (port, local) in [(2u8, 0u8), (2, 0), (1, 0), (2, 1)] {
            fdb.extend_from_slice(&[2, 0, 0, 0, 0, port, port, local, 0, 0, 0, 0, 0, 0, 0, 0]);
        }
        std::fs::write(net.join("br-lan/brforward"), fdb).unwrap();
        root.to_string_lossy().into_owned()
    }

    #[test]
    fn a_wifi_port_of_a_bridge_counts_its_stations() {
        let sys = fake_sys("port");
        assert_eq!(
            place(&sys, "phy0-ap0"),
            Place::BridgePort {
                bridge: "br-lan".into(),
                wireless: true,
                stations: Some(2)
            }
        );
        let lan = place(&sys, "lan1");
        assert!(matches!(
            lan,
            Place::BridgePort {
                stations: Some(1),
                wireless: false,
                ..
            }
        ));
        assert_eq!(place(&sys, "br-lan"), Place::Bridge);
        assert_eq!(place(&sys, "wlan1"), Place::Routed { wireless: true });
        assert_eq!(place(&sys, "eth1"), Place::Routed { wireless: false });
        assert_eq!(place(&sys, "wlan0"), Place::Missing);
        assert_eq!(master_index(&sys, "phy0-ap0"), 7);
        assert_eq!(master_index(&sys, "eth1"), 0);
        assert_eq!(wireless_interfaces(&sys), vec!["phy0-ap0", "wlan1"]);
        let line = describe("phy0-ap0", &place(&sys, "phy0-ap0"));
        assert!(
            line.contains("wireless port of bridge br-lan, 2 stations on it now"),
            "{line}"
        );
        assert!(describe("br-lan", &Place::Bridge).contains("wired ones too"));
        let _ = std::fs::remove_dir_all(&sys);
    }
}
