//! Snoop's part of `pepwrt rules`: which forwarded TCP goes to Snoop's
//! queue, for nft and for iptables.
//!
//! An interface target may be a routed interface or a port of a bridge
//! (a stock OpenWrt access point, `phy0-ap0` in `br-lan`). In the routing
//! layer's forward hook a packet toward a bridged station has the bridge
//! as its output device, never the port, so `oifname "phy0-ap0"` never
//! matches there. Both are written for every interface, whichever it is
//! now (Wi-Fi comes and goes, and the rules are written once):
//! - routed: `oifname`/`iifname` in the forward hook, as before;
//! - bridged: the bridge's own prerouting hook, where the input device is
//!   the port, sets the *station* bit in the packet mark of every frame
//!   that a target port receives. The mark survives the frame's way up
//!   to the routing layer, where the forward hook copies the bit into the
//!   connection's conntrack mark and queues the packet; a packet toward
//!   the station carries no such bit itself and is known by its
//!   connection's mark. A wired host on another port of the same bridge
//!   never gets the bit, so its flows never reach the queue.
//!
//! The kernel does the station bookkeeping per packet: a station that
//! leaves one target port and comes back on another is marked by the
//! first frame it sends there, with no table in pepwrt to keep current.

use std::fmt::Write;

use crate::config::{Config, SnoopConfig, Target};

fn interfaces(s: &SnoopConfig) -> impl Iterator<Item = &str> {
    s.targets.iter().filter_map(|t| match t {
        Target::Interface(i) => Some(i.as_str()),
        Target::Subnet(..) => None,
    })
}

/// Whether the rules need the bridge table (any interface target).
pub fn bridged(s: &SnoopConfig) -> bool {
    interfaces(s).next().is_some()
}

/// The chains inside `table inet pepwrt`.
pub fn nft_chains(cfg: &Config, s: &SnoopConfig, out: &mut String) {
    let sm = cfg.snoop_mark();
    let w = cfg.station_mark();
    let q = s.queue;
    out.push_str("  chain snoop {\n    type filter hook forward priority mangle; policy accept;\n");
    for t in &s.targets {
        let (toward, from) = match t {
            Target::Interface(i) => (format!("oifname \"{i}\""), format!("iifname \"{i}\"")),
            Target::Subnet(a, l) if a.is_ipv4() => {
                (format!("ip daddr {a}/{l}"), format!("ip saddr {a}/{l}"))
            }
            Target::Subnet(a, l) => (format!("ip6 daddr {a}/{l}"), format!("ip6 saddr {a}/{l}")),
        };
        let _ = writeln!(out, "    meta l4proto tcp {toward} queue num {q} bypass");
        let _ = writeln!(out, "    meta l4proto tcp {from} queue num {q} bypass");
    }
    if bridged(s) {
        let _ = write!(
            out,
            "    meta mark & {w:#x} == {w:#x} ct mark & {w:#x} == 0 ct mark set ct mark | {w:#x}
    meta l4proto tcp meta mark & {w:#x} == {w:#x} queue num {q} bypass
    meta l4proto tcp ct mark & {w:#x} == {w:#x} queue num {q} bypass
"
        );
    }
    // Local retransmissions are copies of packets conntrack already saw
    // forwarded; untracked, they leave unchanged and create no state.
    let _ = write!(
        out,
        "  }}
  chain snoop_out {{
    type filter hook output priority raw; policy accept;
    meta mark & {sm:#x} == {sm:#x} notrack
  }}
"
    );
}

/// `table bridge pepwrt`, after `table inet pepwrt`; declared before its
/// delete like that table, so loading it is idempotent. Only written when
/// there is an interface target: a kernel without nft's bridge family
/// (kmod-nft-bridge) then fails only setups that need it.
pub fn nft_bridge_table(cfg: &Config, s: &SnoopConfig, delete: bool, out: &mut String) {
    if !bridged(s) {
        return;
    }
    out.push_str("table bridge pepwrt {}\ndelete table bridge pepwrt\n");
    if delete {
        return;
    }
    let w = cfg.station_mark();
    out.push_str("table bridge pepwrt {\n  chain stations {\n    type filter hook prerouting priority -200; policy accept;\n");
    for i in interfaces(s) {
        let _ = writeln!(out, "    iifname \"{i}\" meta mark set meta mark | {w:#x}");
    }
    out.push_str("  }\n}\n");
}

/// The iptables commands of one family (`ipt` is `iptables -w` or
/// `ip6tables -w`), interface targets for both, subnets for their own.
pub fn iptables_chain(cfg: &Config, s: &SnoopConfig, ipt: &str, v4: bool, out: &mut String) {
    let w = cfg.station_mark();
    let q = s.queue;
    let _ = writeln!(out, "{ipt} -t mangle -N PEPWRT_SNOOP");
    let add = format!("{ipt} -t mangle -A PEPWRT_SNOOP");
    let queue = format!("-j NFQUEUE --queue-num {q} --queue-bypass");
    for t in &s.targets {
        let (toward, from) = match t {
            Target::Interface(i) => (format!("-o {i}"), format!("-i {i}")),
            Target::Subnet(a, l) if a.is_ipv4() == v4 => {
                (format!("-d {a}/{l}"), format!("-s {a}/{l}"))
            }
            Target::Subnet(..) => continue,
        };
        for dir in [toward, from] {
            let _ = writeln!(out, "{add} -p tcp {dir} {queue}");
        }
    }
    if bridged(s) {
        let _ = write!(
            out,
            "{add} -m mark --mark {w:#x}/{w:#x} -j CONNMARK --set-xmark {w:#x}/{w:#x}
{add} -p tcp -m mark --mark {w:#x}/{w:#x} {queue}
{add} -p tcp -m connmark --mark {w:#x}/{w:#x} {queue}
"
        );
    }
    let _ = writeln!(out, "{ipt} -t mangle -I FORWARD -j PEPWRT_SNOOP");
}

/// The bridge half for fw3: ebtables marks frames from the target ports.
/// Without ebtables only bridged stations go unsnooped, so its absence is
/// said and the rest of the rules stay.
pub fn ebtables(cfg: &Config, s: &SnoopConfig, delete: bool, out: &mut String) {
    const EB: &str = "ebtables --concurrent -t nat";
    out.push_str(
        "ebtables --concurrent -t nat -D PREROUTING -j PEPWRT_SNOOP 2>/dev/null
ebtables --concurrent -t nat -F PEPWRT_SNOOP 2>/dev/null
ebtables --concurrent -t nat -X PEPWRT_SNOOP 2>/dev/null
",
    );
    if delete || !bridged(s) {
        return;
    }
    let w = cfg.station_mark();
    out.push_str("if command -v ebtables >/dev/null; then\n  ebtables --concurrent -t nat -N PEPWRT_SNOOP -P RETURN\n");
    for i in interfaces(s) {
        let _ = writeln!(
            out,
            "  {EB} -A PEPWRT_SNOOP -i {i} -j mark --mark-or {w:#x} --mark-target CONTINUE"
        );
    }
    out.push_str(
        "  ebtables --concurrent -t nat -I PREROUTING -j PEPWRT_SNOOP
else
  echo 'pepwrt: no ebtables: Snoop cannot see Wi-Fi stations behind a bridge (install ebtables and kmod-ebtables)' >&2
fi
",
    );
}

/// The notrack rule for Snoop's own copies, iptables flavour.
pub fn iptables_raw(cfg: &Config, ipt: &str, out: &mut String) {
    let sm = cfg.snoop_mark();
    let _ = write!(
        out,
        "{ipt} -t raw -N PEPWRT_RAW
{ipt} -t raw -A PEPWRT_RAW -m mark --mark {sm:#x}/{sm:#x} -j CT --notrack
{ipt} -t raw -I OUTPUT -j PEPWRT_RAW
"
    );
}

#[cfg(test)]
mod tests {
    use crate::config::{Command, parse};

    fn rules(args: &[&str]) -> String {
        let cfg = parse(args.iter().copied(), &Default::default()).unwrap();
        match cfg.command {
            Command::Rules(req) => crate::rules::render(&cfg, req),
            _ => panic!("not a rules command"),
        }
    }

    #[test]
    fn an_interface_is_snooped_routed_and_as_a_bridge_port() {
        let r = rules(&["rules", "--snoop", "phy0-ap0", "--part", "firewall"]);
        assert!(
            r.contains("oifname \"phy0-ap0\" queue num 3136 bypass"),
            "{r}"
        );
        assert!(
            r.contains("table bridge pepwrt {\n  chain stations {"),
            "{r}"
        );
        assert!(r.contains("iifname \"phy0-ap0\" meta mark set meta mark | 0x80000"));
        assert!(r.contains("ct mark set ct mark | 0x80000"));
        assert!(r.contains("meta l4proto tcp ct mark & 0x80000 == 0x80000 queue num 3136 bypass"));
        // The bridge table comes after the inet one and goes with it.
        let d = rules(&[
            "rules", "--snoop", "phy0-ap0", "--part", "firewall", "--delete",
        ]);
        assert!(
            d.ends_with("table bridge pepwrt {}\ndelete table bridge pepwrt\n"),
            "{d}"
        );
    }

    #[test]
    fn subnets_alone_need_no_bridge_table() {
        let r = rules(&["rules", "--snoop", "198.18.0.0/24", "--part", "firewall"]);
        assert!(!r.contains("bridge"), "{r}");
        assert!(!r.contains("0x80000"), "{r}");
        let i = rules(&["rules", "--backend", "iptables", "--snoop", "198.18.0.0/24"]);
        assert!(!i.contains("ebtables --concurrent -t nat -A"), "{i}");
        assert!(
            !i.contains("ip6tables -w -t mangle -A PEPWRT_SNOOP -p tcp -d"),
            "{i}"
        );
    }

    #[test]
    fn iptables_marks_stations_with_ebtables_and_connmark() {
        let i = rules(&["rules", "--backend", "iptables", "--snoop", "wlan0"]);
        assert!(i.contains(
            "ebtables --concurrent -t nat -A PEPWRT_SNOOP -i wlan0 -j mark --mark-or 0x80000 --mark-target CONTINUE"
        ));
        assert!(i.contains(
            "iptables -w -t mangle -A PEPWRT_SNOOP -p tcp -m connmark --mark 0x80000/0x80000 -j NFQUEUE --queue-num 3136 --queue-bypass"
        ));
        assert!(i.contains("no ebtables: Snoop cannot see Wi-Fi stations"));
        let d = rules(&["rules", "--backend", "iptables", "--delete"]);
        assert!(d.contains("ebtables --concurrent -t nat -X PEPWRT_SNOOP 2>/dev/null"));
        assert!(!d.contains(" -A "));
    }
}
