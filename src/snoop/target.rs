//! Which packets are Snoop's: the `--snoop` targets, with interface names
//! resolved to the ifindex NFQUEUE reports. A target that is a bridge port
//! is seen in the routing layer as its bridge: the rules queue only its
//! stations' packets (`rules.rs`), so the bridge's index stands for it.

use std::cell::Cell;
use std::net::IpAddr;

use crate::config::Target;
use crate::sys::raw::interface_index;
use crate::wire::ip::IpRepr;

use super::Crossing;

#[derive(Debug, Clone)]
enum Resolved {
    /// `index` 0 while the interface does not exist (Wi-Fi may come up
    /// after the daemon). A `Cell` so that `classify` can look again.
    Interface {
        name: String,
        index: Cell<u32>,
        /// The bridge's index when the interface is a bridge port, else 0.
        master: Cell<u32>,
    },
    Subnet(IpAddr, u8),
}

#[derive(Debug, Clone)]
pub struct Targets {
    list: Vec<Resolved>,
}

impl Targets {
    pub fn new(targets: &[Target]) -> Targets {
        let list = targets
            .iter()
            .map(|t| match t {
                Target::Interface(name) => {
                    let index = interface_index(name).unwrap_or(0);
                    if index == 0 {
                        log::warn!("snoop: interface {name} does not exist yet; will look again");
                    }
                    Resolved::Interface {
                        name: name.clone(),
                        index: Cell::new(index),
                        master: Cell::new(master_index(name)),
                    }
                }
                Target::Subnet(a, len) => Resolved::Subnet(*a, *len),
            })
            .collect();
        Targets { list }
    }

    /// Resolves interface names again: an interface that was recreated
    /// (Wi-Fi restart) has a new index. No allocation.
    fn refresh(&self) {
        for t in &self.list {
            if let Resolved::Interface {
                name,
                index,
                master,
            } = t
            {
                master.set(master_index(name));
                let now = interface_index(name).unwrap_or(0);
                if now != index.get() {
                    log::info!(
                        "snoop: interface {name} has index {now} (was {})",
                        index.get()
                    );
                    index.set(now);
                }
            }
        }
    }

    /// Toward wins when a packet matches both ways (wireless to wireless):
    /// its data is what Snoop can cache.
    ///
    /// Only the snoop rules feed the queue, and they match interfaces by
    /// name; a queued packet that matches no target therefore means an
    /// index went stale (the interface was created or recreated since).
    /// Resolving again then, and only then, costs one lookup per change.
    pub fn classify(&self, ip: &IpRepr, indev: u32, outdev: u32) -> Option<Crossing> {
        self.match_once(ip, indev, outdev).or_else(|| {
            if !self
                .list
                .iter()
                .any(|t| matches!(t, Resolved::Interface { .. }))
            {
                return None;
            }
            self.refresh();
            self.match_once(ip, indev, outdev)
        })
    }

    fn match_once(&self, ip: &IpRepr, indev: u32, outdev: u32) -> Option<Crossing> {
        let on = |index: &Cell<u32>, dev: u32| index.get() != 0 && index.get() == dev;
        let toward = self.list.iter().any(|t| match t {
            Resolved::Interface { index, master, .. } => on(index, outdev) || on(master, outdev),
            Resolved::Subnet(net, len) => in_subnet(ip.dst, *net, *len),
        });
        if toward {
            return Some(Crossing::ToWireless);
        }
        let from = self.list.iter().any(|t| match t {
            Resolved::Interface { index, master, .. } => on(index, indev) || on(master, indev),
            Resolved::Subnet(net, len) => in_subnet(ip.src, *net, *len),
        });
        from.then_some(Crossing::FromWireless)
    }
}

/// The index of the bridge `name` is a port of, or 0.
fn master_index(name: &str) -> u32 {
    super::place::master_index("/sys", name)
}

fn in_subnet(addr: IpAddr, net: IpAddr, len: u8) -> bool {
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr(src: &str, dst: &str) -> IpRepr {
        IpRepr {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            tos: 0,
            l4_offset: 20,
            l4_len: 20,
        }
    }

    #[test]
    fn subnets_match_by_prefix_in_both_families() {
        let t = Targets::new(&[
            Target::Subnet("198.18.0.0".parse().unwrap(), 24),
            Target::Subnet("fd00:5::".parse().unwrap(), 64),
        ]);
        assert_eq!(
            t.classify(&repr("198.18.1.2", "198.18.0.7"), 0, 0),
            Some(Crossing::ToWireless)
        );
        assert_eq!(
            t.classify(&repr("198.18.0.7", "198.18.1.2"), 0, 0),
            Some(Crossing::FromWireless)
        );
        assert_eq!(t.classify(&repr("198.18.1.2", "198.18.2.7"), 0, 0), None);
        assert_eq!(
            t.classify(&repr("fd00:1::2", "fd00:5::9"), 0, 0),
            Some(Crossing::ToWireless)
        );
        assert_eq!(t.classify(&repr("fd00:6::9", "fd00:1::2"), 0, 0), None);
        assert!(in_subnet(
            "198.19.2.3".parse().unwrap(),
            "0.0.0.0".parse().unwrap(),
            0
        ));
    }

    #[test]
    fn interfaces_match_by_index_and_missing_ones_never() {
        let t = Targets::new(&[
            Target::Interface("lo".into()),
            Target::Interface("pepwrt-nosuch".into()),
        ]);
        let lo = interface_index("lo").unwrap();
        assert_eq!(
            t.classify(&repr("198.18.1.2", "198.18.0.7"), 99, lo),
            Some(Crossing::ToWireless)
        );
        assert_eq!(
            t.classify(&repr("198.18.0.7", "198.18.1.2"), lo, 99),
            Some(Crossing::FromWireless)
        );
        assert_eq!(t.classify(&repr("198.18.0.7", "198.18.1.2"), 0, 0), None);
    }

    #[test]
    fn a_stale_index_is_resolved_again_on_a_miss() {
        let t = Targets {
            list: vec![Resolved::Interface {
                name: "lo".into(),
                index: Cell::new(0),
                master: Cell::new(0),
            }],
        };
        let lo = interface_index("lo").unwrap();
        assert_eq!(
            t.classify(&repr("198.18.1.2", "198.18.0.7"), 99, lo),
            Some(Crossing::ToWireless)
        );
    }
}
