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

/// The place of `name` under a sysfs root (`/sys` on a router).
pub fn place(sys: &Path, name: &str) -> Place {
    let dev = sys.join("class/net").join(name);
    if !dev.exists() {
        return Place::Missing;
    }
    let wireless = dev.join("phy80211").exists() || dev.join("wireless").exists();
    if dev.join("bridge").exists() {
        return Place::Bridge;
    }
    if !dev.join("brport").exists() {
        return Place::Routed { wireless };
    }
    let bridge = std::fs::read_link(dev.join("master"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let stations = port_number(&dev).and_then(|port| {
        let fdb = std::fs::read(sys.join("class/net").join(&bridge).join("brforward")).ok()?;
        Some(learned_on(&fdb, port))
    });
    Place::BridgePort {
        bridge,
        wireless,
        stations,
    }
}

fn port_number(dev: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(dev.join("brport/port_no")).ok()?;
    u16::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
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

/// Wireless interfaces on this router (the names a Snoop target wants).
pub fn wireless_interfaces(sys: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(sys.join("class/net")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(Result::ok)
        .filter(|e| e.path().join("phy80211").exists() || e.path().join("wireless").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The bridge an interface is a port of, if it is one.
pub fn master_bridge(sys: &Path, name: &str) -> Option<String> {
    match place(sys, name) {
        Place::BridgePort { bridge, .. } if !bridge.is_empty() => Some(bridge),
        _ => None,
    }
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
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["config", kind, ..] => in_defaults = *kind == "defaults",
            ["option", key, value, ..] if in_defaults => {
                let on = matches!(value.trim_matches(['\'', '"']), "1" | "on" | "true" | "yes");
                match *key {
                    "flow_offloading" => sw = on,
                    "flow_offloading_hw" => hw = on,
                    _ => {}
                }
            }
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
pub fn offload(etc: &Path) -> Offload {
    let text = std::fs::read_to_string(etc.join("config/firewall")).unwrap_or_default();
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
            let p = place(Path::new("/sys"), name);
            match p {
                Place::Missing | Place::Bridge => log::warn!("{}", describe(name, &p)),
                _ => log::info!("{}", describe(name, &p)),
            }
        }
    }
    if let Some(w) = offload_warning(offload(Path::new("/etc"))) {
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

    fn fake_sys(tag: &str) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("pepwrt-place-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let net = root.join("class/net");
        for d in [
            "br-lan/bridge",
            "phy0-ap0/brport",
            "phy0-ap0/phy80211",
            "lan1/brport",
            "wwan0/wireless",
            "eth1",
        ] {
            std::fs::create_dir_all(net.join(d)).unwrap();
        }
        std::os::unix::fs::symlink("../br-lan", net.join("phy0-ap0/master")).unwrap();
        std::os::unix::fs::symlink("../br-lan", net.join("lan1/master")).unwrap();
        std::fs::write(net.join("phy0-ap0/brport/port_no"), "0x2\n").unwrap();
        std::fs::write(net.join("lan1/brport/port_no"), "0x1\n").unwrap();
        // Two stations on port 2, one host on port 1, the bridge's own
        // address (local) on port 2.
        let mut fdb = Vec::new();
        for (port, local) in [(2u8, 0u8), (2, 0), (1, 0), (2, 1)] {
            fdb.extend_from_slice(&[2, 0, 0, 0, 0, port, port, local, 0, 0, 0, 0, 0, 0, 0, 0]);
        }
        std::fs::write(net.join("br-lan/brforward"), fdb).unwrap();
        root
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
        assert_eq!(place(&sys, "wwan0"), Place::Routed { wireless: true });
        assert_eq!(place(&sys, "eth1"), Place::Routed { wireless: false });
        assert_eq!(place(&sys, "wlan0"), Place::Missing);
        assert_eq!(master_bridge(&sys, "phy0-ap0").as_deref(), Some("br-lan"));
        assert_eq!(master_bridge(&sys, "eth1"), None);
        assert_eq!(wireless_interfaces(&sys), vec!["phy0-ap0", "wwan0"]);
        let line = describe("phy0-ap0", &place(&sys, "phy0-ap0"));
        assert!(
            line.contains("wireless port of bridge br-lan, 2 stations on it now"),
            "{line}"
        );
        assert!(describe("br-lan", &Place::Bridge).contains("wired ones too"));
        let _ = std::fs::remove_dir_all(&sys);
    }
}
