//! `--quic reject`: QUIC (UDP to port 443) forwarded from the intercepted
//! side is answered at once with ICMP port unreachable, so a browser gives
//! up on HTTP/3 and opens HTTP/2 over TCP, which pepwrt splits. Only the
//! forward hook: traffic to the router itself and all other UDP pass.

use std::fmt::Write;

use super::{Family, iptables_cmd, iptables_per_source, nft_per_source};
use crate::config::Config;

/// The nft chain, inside `table inet pepwrt`. `icmpx` answers each family
/// with its own port unreachable.
pub(super) fn nft_chain(cfg: &Config, out: &mut String) {
    if cfg.reject_quic {
        out.push_str(
            "  chain quic {\n    type filter hook forward priority filter; policy accept;\n",
        );
        let reject = "reject with icmpx type port-unreachable";
        nft_per_source(cfg, "udp dport 443", reject, out);
        out.push_str("  }\n");
    }
}

/// The iptables chain PEPWRT_QUIC of the filter table, jumped to from
/// FORWARD (the removal at the top of the script takes it off).
pub(super) fn iptables_chain(cfg: &Config, fam: Family, out: &mut String) {
    if cfg.reject_quic {
        let ipt = iptables_cmd(fam);
        let icmp = if fam == Family::V4 { "" } else { "6" };
        let _ = writeln!(out, "{ipt} -t filter -N PEPWRT_QUIC");
        let head = format!("{ipt} -t filter -A PEPWRT_QUIC -p udp --dport 443");
        let tail = format!("-j REJECT --reject-with icmp{icmp}-port-unreachable");
        iptables_per_source(cfg, fam, &head, &tail, out);
        let _ = writeln!(out, "{ipt} -t filter -I FORWARD -j PEPWRT_QUIC");
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::rules;

    #[test]
    fn quic_is_rejected_only_when_asked_in_both_backends() {
        for backend in ["nft", "iptables"] {
            let r = rules(&["rules", "--backend", backend, "--intercept", "br-lan"]);
            assert!(!r.contains("443"), "{r}");
        }
        let n = rules(&[
            "rules",
            "--part",
            "firewall",
            "--quic",
            "reject",
            "--intercept",
            "br-lan",
            "--intercept",
            "198.18.0.0/24",
            "--intercept",
            "fd00:1::/64",
        ]);
        let chain = "  chain quic {\n    type filter hook forward priority filter; policy accept;\n    \
             udp dport 443 iifname \"br-lan\" reject with icmpx type port-unreachable\n    \
             udp dport 443 ip saddr 198.18.0.0/24 reject with icmpx type port-unreachable\n    \
             udp dport 443 ip6 saddr fd00:1::/64 reject with icmpx type port-unreachable\n  }\n";
        assert!(n.contains(chain), "{n}");
        let i = rules(&[
            "rules",
            "--backend",
            "iptables",
            "--quic",
            "reject",
            "--intercept",
            "br-lan",
        ]);
        for (ipt, icmp) in [("iptables", "icmp"), ("ip6tables", "icmp6")] {
            for line in [
                format!("{ipt} -w -t filter -N PEPWRT_QUIC"),
                format!(
                    "{ipt} -w -t filter -A PEPWRT_QUIC -p udp --dport 443 -i br-lan -j REJECT --reject-with {icmp}-port-unreachable"
                ),
                format!("{ipt} -w -t filter -I FORWARD -j PEPWRT_QUIC"),
            ] {
                assert!(i.lines().any(|l| l == line), "{line}\n{i}");
            }
        }
        // Without IPv6, and intercepting everything: IPv4 alone, all of it.
        let v4 = rules(&[
            "rules",
            "--part",
            "firewall",
            "--quic",
            "reject",
            "--no-ipv6",
        ]);
        assert!(
            v4.contains(
                "    meta nfproto ipv4 udp dport 443 reject with icmpx type port-unreachable\n"
            ),
            "{v4}"
        );
        let v4 = rules(&[
            "rules",
            "--backend",
            "iptables",
            "--quic",
            "reject",
            "--no-ipv6",
        ]);
        assert!(v4.contains("iptables -w -t filter -A PEPWRT_QUIC -p udp --dport 443 -j REJECT"));
        assert!(!v4.contains("ip6tables -w -t filter -N"));
    }

    #[test]
    fn delete_takes_the_quic_chain_off_whatever_the_flags() {
        // nft: the whole table goes; iptables: the chain, both families.
        let d = rules(&["rules", "--backend", "iptables", "--delete"]);
        for ipt in ["iptables", "ip6tables"] {
            for line in [
                format!("{ipt} -w -t filter -D FORWARD -j PEPWRT_QUIC 2>/dev/null"),
                format!("{ipt} -w -t filter -F PEPWRT_QUIC 2>/dev/null"),
                format!("{ipt} -w -t filter -X PEPWRT_QUIC 2>/dev/null"),
            ] {
                assert!(d.lines().any(|l| l == line), "{line}\n{d}");
            }
        }
        let n = rules(&[
            "rules", "--part", "firewall", "--quic", "reject", "--delete",
        ]);
        assert_eq!(n, "table inet pepwrt {}\ndelete table inet pepwrt\n");
    }
}
