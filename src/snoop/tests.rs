//! The state machine fed with packet sequences, IPv4 and IPv6.

use std::time::{Duration, Instant};

use super::testpkt::TcpPkt;
use super::*;
use crate::config::Target;
use crate::wire::tcp::flags;

/// Records local retransmissions instead of sending them.
#[derive(Default)]
struct Wire {
    sent: Vec<Vec<u8>>,
    refuse: bool,
}

impl Transmit for Wire {
    fn send(&mut self, ip_packet: &[u8]) -> bool {
        if !self.refuse {
            self.sent.push(ip_packet.to_vec());
        }
        !self.refuse
    }
}

/// A Snoop with its clock and wire, speaking one address family.
struct Bench {
    snoop: Snoop,
    wire: Wire,
    now: Instant,
    v6: bool,
}

const MSS: usize = 1000;

impl Bench {
    fn new(v6: bool, flows: u16, cache_bytes: u32) -> Bench {
        let cfg = SnoopConfig {
            targets: vec![
                Target::Subnet("198.18.0.0".parse().unwrap(), 24),
                Target::Subnet("fd00::".parse().unwrap(), 64),
            ],
            queue: 3136,
            flows,
            cache_bytes,
        };
        Bench {
            snoop: Snoop::new(&cfg).unwrap(),
            wire: Wire::default(),
            now: Instant::now(),
            v6,
        }
    }

    fn both() -> [Bench; 2] {
        [Bench::new(false, 8, 1 << 20), Bench::new(true, 8, 1 << 20)]
    }

    fn send(&mut self, p: TcpPkt) -> SnoopVerdict {
        let bytes = p.v6(self.v6).build();
        self.snoop.on_packet(&bytes, 0, 0, self.now, &mut self.wire)
    }

    /// Segments 0 to `count - 1` of MSS bytes from sequence 0, sent.
    fn sent(mut self, count: u32) -> Bench {
        for n in 0..count {
            self.seg(0, n);
        }
        self
    }

    /// Segment number `n` (from 0) of MSS bytes after `base`.
    fn seg(&mut self, base: u32, n: u32) -> SnoopVerdict {
        self.send(TcpPkt::data(base.wrapping_add(n * MSS as u32), MSS))
    }

    fn ack(&mut self, ack: u32) -> SnoopVerdict {
        self.send(TcpPkt::ack(ack))
    }

    /// Segments `first..end` sent one at a time, each acknowledged
    /// `rtt_ms` after it was sent, the next sent `gap_ms` after that ACK.
    fn acked_one_by_one(&mut self, first: u32, end: u32, rtt_ms: u64, gap_ms: u64) {
        for n in first..end {
            self.seg(0, n);
            self.later(rtt_ms);
            self.ack(at(0, n + 1));
            self.later(gap_ms);
        }
    }

    fn later(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
    }

    fn timer(&mut self) {
        self.snoop.on_timer(self.now, &mut self.wire);
    }

    fn counter(&self, key: &str) -> u64 {
        let mut s = String::new();
        self.snoop.write_status_json(&mut s);
        let pat = format!("\"{key}\":");
        let at = s
            .find(&pat)
            .unwrap_or_else(|| panic!("{key} missing in {s}"))
            + pat.len();
        s[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    }

    /// The sequence number of each local retransmission, in order.
    fn resent_seqs(&self) -> Vec<u32> {
        self.wire
            .sent
            .iter()
            .map(|p| {
                let (_, s) = wire::parse_tcp(p).unwrap();
                s.seq()
            })
            .collect()
    }
}

fn at(base: u32, n: u32) -> u32 {
    base.wrapping_add(n * MSS as u32)
}

#[test]
fn loss_then_dup_acks_bring_one_local_copy_and_are_suppressed() {
    for mut b in Bench::both() {
        let base = 1000;
        for n in 0..5 {
            assert_eq!(b.seg(base, n), SnoopVerdict::Accept);
        }
        b.later(20);
        assert_eq!(b.ack(at(base, 1)), SnoopVerdict::Accept);
        // Segment 1 was lost on the wireless hop; 2, 3, 4 arrive.
        for _ in 0..3 {
            assert_eq!(b.ack(at(base, 1)), SnoopVerdict::Drop);
        }
        assert_eq!(b.resent_seqs(), vec![at(base, 1)]);
        let original = TcpPkt::data(at(base, 1), MSS).v6(b.v6).build();
        assert_eq!(
            b.wire.sent[0], original,
            "the copy is the packet as forwarded"
        );
        assert_eq!(b.counter("local_retransmits_dupack"), 1);
        assert_eq!(b.counter("dupacks_suppressed"), 3);
        b.later(20);
        assert_eq!(b.ack(at(base, 5)), SnoopVerdict::Accept);
        assert_eq!(b.counter("cached_segments"), 0);
        assert_eq!(b.counter("cache_bytes_used"), 0);
    }
}

#[test]
fn with_sack_a_lost_local_copy_is_sent_again_until_its_retries_are_spent() {
    for mut b in Bench::both().map(|b| b.sent(8)) {
        let v6 = b.v6;
        // A dup ACK for the hole at 1 that SACKs 2 up to segment `n`.
        let dup = move |n: u32| {
            TcpPkt::ack(at(0, 1))
                .sack(&[(at(0, 2), at(0, n + 1))])
                .v6(v6)
        };
        b.later(30);
        b.ack(at(0, 1)); // RTT sample 30 ms
        assert_eq!(b.send(dup(2)), SnoopVerdict::Drop);
        assert_eq!(b.resent_seqs().len(), 1);
        // Dup ACKs for data sent before the copy: it is on its way,
        // however late they come.
        b.later(100);
        assert_eq!(b.send(dup(3)), SnoopVerdict::Drop);
        assert_eq!(b.resent_seqs().len(), 1);
        // The host SACKs a segment sent after the copy: the copy was lost.
        // The queue is short and copies are rarely lost, so the radio did
        // it: another copy goes, and the dup ACKs stay suppressed.
        for (n, copies) in [(8, 2), (9, 3)] {
            b.later(5);
            b.seg(0, n);
            assert_eq!(b.send(dup(n)), SnoopVerdict::Drop);
            assert_eq!(b.resent_seqs(), vec![at(0, 1); copies]);
        }
        // The third copy lost as well: retries spent, the sender hears
        // from now on rather than running into its retransmission timer.
        b.later(5);
        b.seg(0, 10);
        assert_eq!(b.send(dup(10)), SnoopVerdict::Accept);
        assert_eq!(b.send(dup(10)), SnoopVerdict::Accept);
        assert_eq!(b.resent_seqs().len(), 3);
        assert!(b.counter("dupacks_passed") >= 2);
        // Nor does the sender's fast retransmit bring suppression back:
        // its fast recovery needs these dup ACKs.
        b.seg(0, 1);
        assert_eq!(b.send(dup(10)), SnoopVerdict::Accept);
    }
}

#[test]
fn without_sack_a_lost_local_copy_is_sent_again_and_then_the_sender_hears() {
    for mut b in Bench::both().map(|b| b.sent(8)) {
        b.later(30);
        b.ack(at(0, 1)); // RTT sample 30 ms
        b.ack(at(0, 1));
        b.later(5);
        assert_eq!(b.ack(at(0, 1)), SnoopVerdict::Drop);
        assert_eq!(b.resent_seqs().len(), 1);
        // A round trip later the copy is lost too: another goes, but each
        // retry would stall the sender's ACK clock once more, so it hears.
        b.later(100);
        assert_eq!(b.ack(at(0, 1)), SnoopVerdict::Accept);
        assert_eq!(b.resent_seqs(), vec![at(0, 1), at(0, 1)]);
        assert_eq!(b.ack(at(0, 1)), SnoopVerdict::Accept);
        assert_eq!(b.resent_seqs().len(), 2);
        // The local timer still repairs it, without suppressing again.
        b.now = b.snoop.next_deadline().unwrap();
        b.timer();
        assert_eq!(b.resent_seqs().len(), 3);
        assert_eq!(b.ack(at(0, 1)), SnoopVerdict::Accept);
    }
}

#[test]
fn reordered_segments_are_cached_in_order_and_freed_together() {
    for mut b in Bench::both() {
        b.seg(0, 0);
        b.seg(0, 2);
        b.seg(0, 1); // late: fills the gap
        b.seg(0, 3);
        assert_eq!(b.counter("cached_segments"), 4);
        b.ack(at(0, 3));
        assert_eq!(b.counter("cached_segments"), 1);
        // The hole at segment 3 is found among reordered segments.
        b.ack(at(0, 3));
        assert_eq!(b.resent_seqs(), vec![at(0, 3)]);
    }
}

#[test]
fn sender_retransmissions_are_forwarded_and_counted() {
    for mut b in Bench::both() {
        b.seg(0, 0);
        b.seg(0, 1);
        assert_eq!(b.seg(0, 1), SnoopVerdict::Accept);
        assert_eq!(b.counter("sender_retransmits"), 1);
        assert_eq!(b.counter("cached_segments"), 2, "not cached twice");
        b.ack(at(0, 2));
        assert_eq!(b.seg(0, 0), SnoopVerdict::Accept);
        assert_eq!(b.counter("sender_retransmits_acked"), 1);
        assert_eq!(b.counter("cached_segments"), 0);
    }
}

#[test]
fn sender_retransmission_restarts_dup_ack_counting() {
    let mut b = Bench::new(false, 4, 1 << 20).sent(4);
    b.ack(at(0, 1));
    assert_eq!(b.ack(at(0, 1)), SnoopVerdict::Drop);
    b.seg(0, 1); // the sender's own fast retransmit or timeout
    assert_eq!(b.ack(at(0, 1)), SnoopVerdict::Drop);
    assert_eq!(b.resent_seqs(), vec![at(0, 1), at(0, 1)]);
}

#[test]
fn sequence_numbers_wrap() {
    for mut b in Bench::both() {
        let base = u32::MAX - 2500;
        for n in 0..6 {
            b.seg(base, n);
        }
        b.ack(at(base, 3)); // past the wrap
        assert_eq!(b.counter("cached_segments"), 3);
        assert_eq!(b.ack(at(base, 3)), SnoopVerdict::Drop);
        assert_eq!(b.resent_seqs(), vec![at(base, 3)]);
        // An ACK from before the wrap is old news, not a new ACK.
        assert_eq!(b.ack(at(base, 1)), SnoopVerdict::Accept);
        b.ack(at(base, 6));
        assert_eq!(b.counter("cached_segments"), 0);
    }
}

#[test]
fn sack_blocks_name_every_hole_below_the_highest_edge() {
    for mut b in Bench::both().map(|b| b.sent(7)) {
        b.ack(at(0, 1));
        // Lost: 1 and 3. Received: 2, 4, 5. 6 is still in flight.
        let dup = TcpPkt::ack(at(0, 1)).sack(&[(at(0, 4), at(0, 6)), (at(0, 2), at(0, 3))]);
        assert_eq!(b.send(dup.clone()), SnoopVerdict::Drop);
        assert_eq!(b.resent_seqs(), vec![at(0, 1), at(0, 3)]);
        // The next SACK dup ACK within a round trip sends nothing new.
        assert_eq!(b.send(dup), SnoopVerdict::Drop);
        assert_eq!(b.resent_seqs().len(), 2);
        // Hole 1 repaired; the new ACK stops at hole 3, whose copy is on
        // its way: held back like its dup ACKs, nothing sent again.
        let partial = TcpPkt::ack(at(0, 3)).sack(&[(at(0, 4), at(0, 6))]);
        assert_eq!(b.send(partial), SnoopVerdict::Drop);
        assert_eq!(b.resent_seqs().len(), 2);
        assert_eq!(b.counter("partial_acks_held"), 1);
        assert_eq!(b.counter("cached_segments"), 4);
        // The copy of 3 arrives: the ACK covers everything and passes.
        assert_eq!(b.ack(at(0, 6)), SnoopVerdict::Accept);
    }
}

/// A copy fills the first hole and the host's new ACK stops at a second
/// one that no earlier ACK had named: the sender would take the ACK's
/// blocks for a loss to recover, so it is held and the hole repaired from
/// here. The host's own data, and a hole that is not cached, pass.
#[test]
fn a_new_ack_that_stops_at_a_second_hole_is_held_while_it_is_repaired() {
    for mut b in Bench::both().map(|b| b.sent(12)) {
        b.ack(at(0, 1));
        // Lost: 1 and 8 (8 not yet known: only 2-3 have arrived).
        let dup = TcpPkt::ack(at(0, 1)).sack(&[(at(0, 2), at(0, 4))]);
        assert_eq!(b.send(dup), SnoopVerdict::Drop);
        assert_eq!(b.resent_seqs(), vec![at(0, 1)]);
        b.later(5);
        // The copy of 1 arrived, and 2-7 and 9-10: the ACK stops at 8.
        let partial = TcpPkt::ack(at(0, 8)).sack(&[(at(0, 9), at(0, 11))]);
        assert_eq!(b.send(partial.clone()), SnoopVerdict::Drop);
        assert_eq!(b.resent_seqs(), vec![at(0, 1), at(0, 8)]);
        // Its dup ACKs are held as ever, and send nothing more.
        assert_eq!(b.send(partial), SnoopVerdict::Drop);
        assert_eq!(b.resent_seqs().len(), 2);
        assert_eq!(b.counter("partial_acks_held"), 1);
        b.later(5);
        assert_eq!(b.ack(at(0, 11)), SnoopVerdict::Accept);
    }
    // The host's own data is never held, whatever its ACK says.
    for mut b in Bench::both().map(|b| b.sent(12)) {
        b.ack(at(0, 1));
        b.send(TcpPkt::ack(at(0, 1)).sack(&[(at(0, 2), at(0, 4))]));
        let data = TcpPkt {
            payload: 100,
            ..TcpPkt::ack(at(0, 8)).sack(&[(at(0, 9), at(0, 11))])
        };
        assert_eq!(b.send(data), SnoopVerdict::Accept);
        assert_eq!(b.counter("partial_acks_held"), 0);
    }
    // A hole the cache does not hold is the sender's to fill: the ACK
    // passes. 4 KiB holds four segment records (cache.rs).
    for v6 in [false, true] {
        let mut b = Bench::new(v6, 4, 4096);
        for n in 0..6 {
            b.send(TcpPkt::data(n * 100, 100));
        }
        assert_eq!(b.counter("passed_full"), 2);
        b.ack(100);
        assert_eq!(
            b.send(TcpPkt::ack(100).sack(&[(200, 300)])),
            SnoopVerdict::Drop
        );
        b.later(5);
        let partial = TcpPkt::ack(400).sack(&[(500, 600)]);
        assert_eq!(b.send(partial), SnoopVerdict::Accept);
        assert_eq!(b.resent_seqs(), vec![100]);
        assert_eq!(b.counter("partial_acks_held"), 0);
    }
}

#[test]
fn sacked_data_stays_sacked_when_later_acks_no_longer_name_it() {
    let mut b = Bench::new(false, 4, 1 << 20).sent(10);
    b.ack(at(0, 1));
    // Lost: 1, 3, 5, 7. Each arrival above a hole adds a block, most
    // recent first, three at most.
    let blocks = [(2, 3), (4, 5), (6, 7), (8, 9)].map(|(l, r)| (at(0, l), at(0, r)));
    for k in 1..=blocks.len() {
        let named: Vec<_> = blocks[..k].iter().rev().take(3).copied().collect();
        assert_eq!(
            b.send(TcpPkt::ack(at(0, 1)).sack(&named)),
            SnoopVerdict::Drop
        );
    }
    // Segment 2 was named only in earlier ACKs: it is not resent.
    assert_eq!(
        b.resent_seqs(),
        vec![at(0, 1), at(0, 3), at(0, 5), at(0, 7)]
    );
}

/// A dup ACK whose only block is a D-SACK below the ACK reports a
/// duplicate arrival: nothing is missing, so no copy of segment 2 (still on
/// its way) goes out, and the sender hears of the duplicate.
#[test]
fn dsack_below_the_ack_names_no_hole() {
    for mut b in Bench::both().map(|b| b.sent(4)) {
        b.ack(at(0, 2));
        let dup = || TcpPkt::ack(at(0, 2)).sack(&[(at(0, 0), at(0, 1))]);
        for _ in 0..3 {
            assert_eq!(b.send(dup()), SnoopVerdict::Accept);
        }
        assert!(b.wire.sent.is_empty());
        assert_eq!(b.counter("dupacks_suppressed"), 0);
        // A real hole after it is repaired as ever.
        let hole = TcpPkt::ack(at(0, 2)).sack(&[(at(0, 3), at(0, 4)), (at(0, 0), at(0, 1))]);
        assert_eq!(b.send(hole), SnoopVerdict::Drop);
        assert_eq!(b.resent_seqs(), vec![at(0, 2)]);
    }
}

#[test]
fn window_updates_data_and_fin_are_not_duplicate_acks() {
    for mut b in Bench::both().map(|b| b.sent(3)) {
        b.ack(at(0, 1));
        assert_eq!(
            b.send(TcpPkt::ack(at(0, 1)).window(2000)),
            SnoopVerdict::Accept
        );
        let mut with_data = TcpPkt::ack(at(0, 1)).window(2000);
        with_data.payload = 10;
        assert_eq!(b.send(with_data), SnoopVerdict::Accept);
        assert_eq!(
            b.send(TcpPkt::ack(at(0, 1)).window(2000).with_flags(flags::FIN)),
            SnoopVerdict::Accept
        );
        assert!(b.wire.sent.is_empty());
        // Same window as the last update: a true duplicate.
        assert_eq!(
            b.send(TcpPkt::ack(at(0, 1)).window(2000)),
            SnoopVerdict::Drop
        );
    }
}

#[test]
fn nothing_outstanding_means_no_duplicate() {
    let mut b = Bench::new(false, 4, 1 << 20);
    b.seg(0, 0);
    b.ack(at(0, 1));
    assert_eq!(b.ack(at(0, 1)), SnoopVerdict::Accept);
    assert!(b.wire.sent.is_empty());
}

#[test]
fn acked_fin_frees_the_flow() {
    for mut b in Bench::both() {
        b.seg(0, 0);
        b.send(TcpPkt::data(at(0, 1), 0).with_flags(flags::FIN));
        assert_eq!(b.counter("cached_segments"), 2, "a bare FIN is cached too");
        b.ack(at(0, 1));
        assert_eq!(b.counter("flows"), 1);
        b.ack(at(0, 1) + 1);
        assert_eq!((b.counter("flows"), b.counter("cached_segments")), (0, 0));
    }
}

#[test]
fn host_fin_with_everything_acked_frees_the_flow() {
    for mut b in Bench::both() {
        b.seg(0, 0);
        b.seg(0, 1);
        // The host closes while data is outstanding: the flow stays.
        b.send(TcpPkt::ack(at(0, 1)).with_flags(flags::FIN));
        assert_eq!(b.counter("flows"), 1);
        // Everything acked (the sender's FIN passed unseen): done.
        b.send(TcpPkt::ack(at(0, 2)).with_flags(flags::FIN));
        assert_eq!((b.counter("flows"), b.counter("cached_segments")), (0, 0));
    }
}

#[test]
fn a_finished_flow_lingers_so_late_retransmissions_start_nothing() {
    for mut b in Bench::both() {
        b.seg(0, 0);
        b.send(TcpPkt::data(at(0, 1), 0).with_flags(flags::FIN));
        b.ack(at(0, 1) + 1);
        assert_eq!((b.counter("flows"), b.counter("flows_lingering")), (0, 1));
        // The sender's retransmission, in flight when the host acked all.
        b.later(200);
        assert_eq!(b.seg(0, 0), SnoopVerdict::Accept);
        b.ack(at(0, 1) + 1);
        assert_eq!(b.counter("flows_total"), 1);
        assert_eq!(b.counter("cached_segments"), 0);
        assert_eq!(b.counter("sender_retransmits_acked"), 1);
        // The sender's last ACK does not renew it: its memory goes after
        // LINGER, counted from the close.
        b.send(TcpPkt::data(at(0, 1) + 1, 0));
        b.later(9_800);
        b.timer();
        assert_eq!(b.counter("flows_lingering"), 0);
        assert_eq!(b.snoop.next_deadline(), None);
    }
}

#[test]
fn new_data_after_the_host_closed_starts_a_new_flow() {
    let mut b = Bench::new(false, 4, 1 << 20);
    b.seg(0, 0);
    b.send(TcpPkt::ack(at(0, 1)).with_flags(flags::FIN));
    assert_eq!(b.counter("flows_lingering"), 1);
    b.seg(0, 1);
    assert_eq!((b.counter("flows"), b.counter("flows_lingering")), (1, 0));
    assert_eq!(
        (b.counter("flows_total"), b.counter("cached_segments")),
        (2, 1)
    );
}

#[test]
fn a_full_table_reuses_a_lingering_slot() {
    let mut b = Bench::new(false, 1, 1 << 20);
    b.seg(0, 0);
    b.ack(at(0, 1));
    b.send(TcpPkt::ack(at(0, 1)).with_flags(flags::FIN));
    b.send(TcpPkt::data(0, MSS).port(40001));
    assert_eq!((b.counter("flows"), b.counter("flows_lingering")), (1, 0));
    assert_eq!(b.counter("passed_full"), 0);
}

#[test]
fn reset_from_either_side_frees_the_flow() {
    for mut b in Bench::both() {
        b.seg(0, 0);
        b.send(TcpPkt::ack(0).with_flags(flags::RST));
        assert_eq!((b.counter("flows"), b.counter("cached_segments")), (0, 0));
        assert_eq!(b.counter("flows_lingering"), 1);
        // A new connection on the same ports starts afresh.
        b.send(TcpPkt::data(at(0, 1), 0).with_flags(flags::SYN));
        b.seg(0, 1);
        b.send(TcpPkt::data(at(0, 2), 0).with_flags(flags::RST));
        assert_eq!((b.counter("flows"), b.counter("cached_segments")), (0, 0));
        assert_eq!(b.counter("flows_total"), 2);
    }
}

/// After a reset the sender's data still in flight arrives, and the host
/// answers each segment with another reset: one flow, one log line, not
/// one per segment.
#[test]
fn segments_in_flight_after_a_reset_start_nothing() {
    for mut b in Bench::both() {
        b.seg(0, 0);
        b.ack(at(0, 1));
        b.send(TcpPkt::ack(at(0, 1)).with_flags(flags::RST));
        for n in 1..20 {
            assert_eq!(b.seg(0, n), SnoopVerdict::Accept);
            b.send(TcpPkt::ack(at(0, 1)).with_flags(flags::RST));
        }
        assert_eq!(b.counter("flows_total"), 1);
        assert_eq!(b.counter("cached_segments"), 0);
        assert_eq!(b.counter("flows_lingering"), 1);
        // Forgotten after LINGER.
        b.later(10_100);
        b.timer();
        assert_eq!(b.counter("flows_lingering"), 0);
    }
}

#[test]
fn new_syn_on_a_known_four_tuple_starts_afresh() {
    let mut b = Bench::new(false, 4, 1 << 20);
    b.seg(0, 0);
    let mut syn = TcpPkt::data(5_000_000, 0);
    syn.flags = flags::SYN;
    b.send(syn);
    assert_eq!(b.counter("flows"), 0);
}

#[test]
fn full_arena_passes_packets_uncached_and_their_dup_acks_through() {
    for v6 in [false, true] {
        // Four 256-byte chunks: a single 1040-byte packet does not fit.
        let mut b = Bench::new(v6, 4, 1024);
        assert_eq!(b.seg(0, 0), SnoopVerdict::Accept);
        assert_eq!(b.counter("passed_full"), 1);
        assert_eq!(b.counter("cached_segments"), 0);
        b.send(TcpPkt::data(at(0, 1), 100));
        assert_eq!(b.counter("cached_segments"), 1);
        b.ack(0);
        // The hole is not cached: the sender must hear about it.
        assert_eq!(b.ack(0), SnoopVerdict::Accept);
        assert_eq!(b.ack(0), SnoopVerdict::Accept);
        assert!(b.wire.sent.is_empty());
        assert_eq!(b.counter("dupacks_passed"), 2);
    }
}

/// A flow whose acks come back `late_ms` late after a 5 ms start, and
/// 20 ms later still before that: the queue toward the host stands, below
/// the deepest it reached. Segments 12 and 13 are cached, unacked, and
/// have had `late_ms` to cross.
fn standing_queue(late_ms: u64) -> Bench {
    queue_history(late_ms + 20, late_ms)
}

/// `standing_queue` whose acks came back `first_ms` late, one at least
/// every 100 ms for 0.7 s (the queue's view takes the smallest of each
/// 100 ms), then `late_ms` late.
fn queue_history(first_ms: u64, late_ms: u64) -> Bench {
    let mut b = Bench::new(false, 4, 1 << 20);
    b.acked_one_by_one(0, 1, 5, 0);
    b.acked_one_by_one(1, 8, first_ms, 100u64.saturating_sub(first_ms));
    b.acked_one_by_one(8, 12, late_ms, 0);
    b.seg(0, 12);
    b.seg(0, 13);
    // As long again for whatever the host says about them.
    b.later(late_ms);
    b
}

#[test]
fn a_standing_queue_lets_dup_acks_without_sack_through() {
    let mut b = standing_queue(60);
    assert_eq!(b.counter("cached_segments"), 2);
    assert_eq!(b.ack(at(0, 12)), SnoopVerdict::Accept);
    assert!(b.wire.sent.is_empty());
    assert_eq!(b.counter("dupacks_passed_congestion"), 1);
}

#[test]
fn with_sack_a_shallow_standing_queue_is_still_repaired_locally() {
    let mut b = standing_queue(40);
    let dup = TcpPkt::ack(at(0, 12)).sack(&[(at(0, 13), at(0, 14))]);
    assert_eq!(b.send(dup), SnoopVerdict::Drop);
    assert_eq!(b.resent_seqs(), vec![at(0, 12)]);
}

/// A short queue that stands at the deepest it has been: the segment
/// behind the hole found it full, so the hole is a tail drop and goes to
/// the sender, without a copy into that queue.
#[test]
fn with_sack_a_loss_at_the_top_of_a_shallow_queue_is_the_senders() {
    let mut b = queue_history(40, 40);
    b.seg(0, 14);
    b.seg(0, 15);
    let dup = TcpPkt::ack(at(0, 12)).sack(&[(at(0, 13), at(0, 14))]);
    assert_eq!(b.send(dup), SnoopVerdict::Accept);
    assert!(b.wire.sent.is_empty());
    assert_eq!(b.counter("losses_congestion"), 1);
    // While the sender recovers, the ACKs its retransmissions bring pass
    // even when they stop at the next hole: they clock its recovery, and
    // that hole (14) is the same overflow's.
    let partial = TcpPkt::ack(at(0, 14)).sack(&[(at(0, 15), at(0, 16))]);
    assert_eq!(b.send(partial), SnoopVerdict::Accept);
    assert!(b.wire.sent.is_empty());
    assert_eq!(b.counter("partial_acks_held"), 0);
}

/// A copy repairs a radio loss, and the host's next ACK stops at another
/// hole. If the segment right behind that hole crossed the queue at its
/// deepest, the hole is the queue's tail drop: the ACK passes. If it
/// crossed a short queue, the hole is the radio's: the ACK is held.
#[test]
fn a_partial_ack_passes_when_the_segment_behind_its_hole_crossed_a_full_queue() {
    for (behind_ms, verdict) in [(45, SnoopVerdict::Accept), (6, SnoopVerdict::Drop)] {
        let mut b = Bench::new(false, 4, 1 << 20);
        // The hop's base RTT is 5 ms; then a queue of 40 ms stands.
        b.acked_one_by_one(0, 8, 5, 95);
        b.acked_one_by_one(8, 16, 45, 0);
        // 16 is lost on the radio (17 and 18 crossed at once): repaired.
        for n in 16..22 {
            b.seg(0, n);
        }
        b.later(5);
        let dup = TcpPkt::ack(at(0, 16)).sack(&[(at(0, 17), at(0, 19))]);
        assert_eq!(b.send(dup), SnoopVerdict::Drop);
        // 19 is lost; 20 and 21 arrive `behind_ms` after they were sent,
        // and the next dup ACK names the hole (its copy goes out).
        b.later(behind_ms - 5);
        let dup = TcpPkt::ack(at(0, 16)).sack(&[(at(0, 20), at(0, 22)), (at(0, 17), at(0, 19))]);
        assert_eq!(b.send(dup), SnoopVerdict::Drop);
        assert_eq!(b.resent_seqs(), vec![at(0, 16), at(0, 19)]);
        // The copy of 16 arrives: the ACK stops at 19.
        b.later(5);
        let partial = TcpPkt::ack(at(0, 19)).sack(&[(at(0, 20), at(0, 22))]);
        assert_eq!(b.send(partial), verdict, "behind {behind_ms} ms");
        let held = u64::from(verdict == SnoopVerdict::Drop);
        assert_eq!(b.counter("partial_acks_held"), held);
        assert_eq!(b.counter("losses_congestion"), 1 - held);
    }
}

/// Congestion reaches the sender: with SACK too, a loss behind a deep
/// queue (a tail drop) passes with every dup ACK, and neither the dup ACKs
/// nor the local timer send a copy into that queue.
#[test]
fn a_loss_behind_a_deep_queue_is_the_senders_even_with_sack() {
    let mut b = standing_queue(120);
    let dup = || TcpPkt::ack(at(0, 12)).sack(&[(at(0, 13), at(0, 14))]);
    for _ in 0..3 {
        assert_eq!(b.send(dup()), SnoopVerdict::Accept);
    }
    assert_eq!(b.counter("losses_congestion"), 1);
    assert_eq!(b.counter("dupacks_passed_congestion"), 3);
    assert_eq!(b.counter("dupacks_suppressed"), 0);
    // Past any local timeout.
    b.later(4000);
    b.timer();
    assert!(b.wire.sent.is_empty(), "no local copy into a full queue");
    // The sender's fast retransmit; if the radio loses it (the host SACKs
    // data sent after it), a copy from here spares the sender its
    // timeout: it has backed off already.
    b.seg(0, 12);
    assert_eq!(b.send(dup()), SnoopVerdict::Accept);
    assert!(
        b.wire.sent.is_empty(),
        "not before data sent after it arrives"
    );
    b.later(10);
    b.seg(0, 14);
    let after = TcpPkt::ack(at(0, 12)).sack(&[(at(0, 13), at(0, 15))]);
    assert_eq!(b.send(after), SnoopVerdict::Accept);
    assert_eq!(b.resent_seqs(), vec![at(0, 12)]);
    // The ACK that follows ends it; the next hole is judged afresh.
    assert_eq!(b.ack(at(0, 15)), SnoopVerdict::Accept);
    assert_eq!(b.counter("cached_segments"), 0);
}

/// A short queue never reaches the standing limit, but local copies lost
/// as well, one after another, show where it overflows; the next hole at
/// that queue delay is congestion.
#[test]
fn lost_local_copies_teach_where_a_short_queue_overflows() {
    let mut b = standing_queue(20);
    // A dup ACK for `hole` that SACKs what follows it, up to `top`.
    let dup = |hole: u32, top: u32| TcpPkt::ack(at(0, hole)).sack(&[(at(0, hole + 1), at(0, top))]);
    let (mut hole, mut next) = (12, 14);
    let mut learned_after = None;
    for round in 0..10 {
        let sent = b.wire.sent.len();
        if b.send(dup(hole, next)) == SnoopVerdict::Accept {
            assert_eq!(b.wire.sent.len(), sent, "no copy for congestion");
            learned_after = Some(round);
            break;
        }
        assert_eq!(b.wire.sent.len(), sent + 1);
        // Segments sent after the copy arrive, the copy does not: each
        // copy in turn is lost, until the sender hears.
        let heard = (0..4).any(|_| {
            b.later(5);
            b.seg(0, next);
            next += 1;
            b.later(20);
            b.send(dup(hole, next)) == SnoopVerdict::Accept
        });
        assert!(heard, "the lost copies were never noticed");
        // The sender repairs it; the next segment is lost, one more
        // arrives.
        b.seg(0, hole);
        assert_eq!(b.ack(at(0, next)), SnoopVerdict::Accept);
        hole = next;
        b.seg(0, next);
        b.seg(0, next + 1);
        next += 2;
        b.later(20);
    }
    // The first hole's three copies were all lost before the sender heard
    // (one lost copy alone could be the radio); within the next hole or
    // two the queue's overflow level is known.
    assert_eq!(
        b.resent_seqs().iter().filter(|&&q| q == at(0, 12)).count(),
        3
    );
    assert!(
        matches!(learned_after, Some(1..=3)),
        "learned after {learned_after:?} holes"
    );
    let queue_delay = b.snoop.flows.get(0).unwrap().congestion.queue_delay(b.now);
    assert!(queue_delay < congestion::STANDING_SACK);
    assert!(b.counter("losses_congestion") >= 1);
}

/// While a hole holds the cumulative ACK, SACK blocks tell when the
/// segments above it arrived: the queue's view keeps up.
#[test]
fn sack_blocks_feed_the_queue_delay_while_a_hole_stands() {
    let mut b = Bench::new(false, 4, 1 << 20);
    b.seg(0, 0);
    b.later(5);
    b.ack(at(0, 1));
    // Segment 1 is lost; each later one is SACKed 80 ms after it went.
    b.seg(0, 1);
    for n in 2..40 {
        b.seg(0, n);
        b.later(80);
        b.send(TcpPkt::ack(at(0, 1)).sack(&[(at(0, 2), at(0, n + 1))]));
    }
    let flow = b.snoop.flows.get(0).unwrap();
    assert!(flow.congestion.queue_delay(b.now) > Duration::from_millis(70));
}

#[test]
fn full_flow_table_passes_new_flows_untracked() {
    for v6 in [false, true] {
        let mut b = Bench::new(v6, 1, 1 << 20);
        b.seg(0, 0);
        assert_eq!(
            b.send(TcpPkt::data(0, MSS).port(40001)),
            SnoopVerdict::Accept
        );
        assert_eq!((b.counter("flows"), b.counter("passed_full")), (1, 1));
        assert_eq!(b.send(TcpPkt::ack(0).port(40001)), SnoopVerdict::Accept);
        assert_eq!(b.send(TcpPkt::ack(0).port(40001)), SnoopVerdict::Accept);
        // Once the first flow ends, the second gets a slot.
        b.send(TcpPkt::ack(0).with_flags(flags::RST));
        b.send(TcpPkt::data(at(0, 1), MSS).port(40001));
        assert_eq!(b.counter("flows"), 1);
    }
}

#[test]
fn timer_resends_the_oldest_segment_with_backoff_then_gives_up() {
    for mut b in Bench::both() {
        b.seg(0, 0);
        b.later(40);
        b.ack(at(0, 1)); // sample 40 ms: srtt 40, rttvar 20, RTO 120 ms
        b.seg(0, 1);
        b.seg(0, 2);
        assert_eq!(b.counter("cached_segments"), 2);
        b.later(119);
        b.timer();
        assert!(b.wire.sent.is_empty());
        b.later(1);
        b.timer();
        assert_eq!(b.resent_seqs(), vec![at(0, 1)]);
        let mut sends = Vec::new();
        let mut gaps = Vec::new();
        for _ in 0..3 {
            let before = b.now;
            b.now = b.snoop.next_deadline().unwrap();
            gaps.push((b.now - before).as_millis());
            b.timer();
            sends.push(b.wire.sent.len());
        }
        // Doubling: 240 and 480 ms, then retries are spent and only the
        // idle timer is left.
        assert_eq!(gaps, vec![240, 480, 960]);
        assert_eq!(sends, vec![2, 3, 3]);
        assert!(b.snoop.next_deadline().unwrap() > b.now + Duration::from_secs(50));
        assert_eq!(b.resent_seqs(), vec![at(0, 1); 3]);
        assert_eq!(b.counter("local_retransmits_timeout"), 3);
        assert_eq!(b.counter("local_recovery_given_up"), 1);
        // Given up: dup ACKs go to the sender.
        assert_eq!(b.ack(at(0, 1)), SnoopVerdict::Accept);
    }
}

/// A copy of the hole at the cumulative ACK that goes unanswered is sent
/// again after about a round trip of the hop, not the local RTO's 100 ms
/// floor: with no data behind it to show the copy lost, the sender's
/// window waits for it.
#[test]
fn an_unanswered_copy_goes_again_after_the_hops_round_trip() {
    for mut b in Bench::both() {
        b.acked_one_by_one(0, 20, 5, 0);
        // 20 is lost; 21 and 22 arrive, and nothing follows them.
        for n in 20..23 {
            b.seg(0, n);
        }
        b.later(5);
        let dup = TcpPkt::ack(at(0, 20)).sack(&[(at(0, 21), at(0, 23))]);
        assert_eq!(b.send(dup), SnoopVerdict::Drop);
        assert_eq!(b.resent_seqs(), vec![at(0, 20)]);
        b.later(15);
        b.timer();
        assert_eq!(
            b.resent_seqs().len(),
            1,
            "a hop's round trip is 5 ms, the floor 20 ms"
        );
        b.later(10);
        b.timer();
        assert_eq!(b.resent_seqs(), vec![at(0, 20), at(0, 20)]);
        assert_eq!(b.counter("local_retransmits_timeout"), 1);
        // The timer's own copy backs off from the local RTO.
        b.later(150);
        b.timer();
        assert_eq!(b.resent_seqs().len(), 2);
    }
}

#[test]
fn timer_does_not_push_into_a_closed_window() {
    let mut b = Bench::new(false, 4, 1 << 20).sent(2);
    b.send(TcpPkt::ack(at(0, 1)).window(0));
    for _ in 0..5 {
        b.now = b.snoop.next_deadline().unwrap();
        b.timer();
    }
    assert!(b.wire.sent.is_empty());
}

#[test]
fn karn_rule_keeps_retransmitted_segments_out_of_the_rtt() {
    let mut b = Bench::new(false, 4, 1 << 20).sent(2);
    b.later(10);
    b.ack(at(0, 1)); // sample 10 ms: RTO at its 100 ms floor
    b.ack(at(0, 1)); // local copy of 1
    b.later(3000);
    b.ack(at(0, 2)); // would be a 3 s sample if taken
    b.seg(0, 2);
    b.later(100);
    b.timer();
    assert_eq!(b.resent_seqs(), vec![at(0, 1), at(0, 2)]);
}

#[test]
fn idle_flows_are_forgotten_and_their_cache_freed() {
    for mut b in Bench::both() {
        b.seg(0, 0);
        b.later(30_000);
        b.timer();
        assert_eq!(b.counter("flows"), 1);
        b.later(31_000);
        for _ in 0..10 {
            b.timer();
        }
        assert_eq!((b.counter("flows"), b.counter("cached_segments")), (0, 0));
        assert_eq!(b.snoop.next_deadline(), None);
    }
}

#[test]
fn refused_send_lets_the_dup_ack_through() {
    let mut b = Bench::new(false, 4, 1 << 20).sent(2);
    b.ack(0);
    b.wire.refuse = true;
    assert_eq!(b.ack(0), SnoopVerdict::Accept);
    assert_eq!(b.counter("transmit_failed"), 1);
}

#[test]
fn truncated_capture_is_forwarded_but_not_cached() {
    let mut b = Bench::new(false, 4, 1 << 20);
    let pkt = TcpPkt::data(0, MSS).build();
    assert_eq!(
        b.snoop.on_packet(&pkt[..200], 0, 0, b.now, &mut b.wire),
        SnoopVerdict::Accept
    );
    assert_eq!(b.counter("cached_segments"), 0);
}

#[test]
fn status_lists_every_counter() {
    let mut b = Bench::new(false, 64, 1 << 20);
    b.seg(0, 0);
    let mut s = String::new();
    b.snoop.write_status_json(&mut s);
    assert!(s.starts_with(
        "{\"flows\":1,\"flows_lingering\":0,\"max_flows\":64,\"cached_segments\":1,\"cache_bytes_used\":1040,\"cache_bytes\":1048576,\
         \"flows_total\":1,\"local_retransmits_dupack\":0,\"local_retransmits_timeout\":0,\
         \"dupacks_suppressed\":0,\"partial_acks_held\":0,\"passed_full\":0,"
    ));
    assert!(s.ends_with('}') && !s.ends_with('\n'));
}

#[test]
fn garbage_never_panics() {
    let mut b = Bench::new(true, 2, 4096);
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let templates = [
        TcpPkt::data(0, 300).build(),
        TcpPkt::ack(300).sack(&[(1, 2), (3, 4)]).build(),
        TcpPkt::data(0, 300).v6(true).build(),
        TcpPkt::ack(300).v6(true).sack(&[(5, 9)]).build(),
    ];
    for i in 0..20_000 {
        let mut p = templates[i % 4].clone();
        for _ in 0..(rnd() % 4) {
            let at = (rnd() as usize) % p.len();
            p[at] = rnd() as u8;
        }
        let cut = (rnd() as usize) % (p.len() + 1);
        // Interfaces match no target: the (corrupted) addresses decide.
        let (indev, outdev) = ((rnd() % 3) as u32, (rnd() % 3) as u32);
        b.snoop.on_packet(
            &p[..cut.max(p.len() / 2)],
            indev,
            outdev,
            b.now,
            &mut b.wire,
        );
        b.snoop
            .on_packet(&p[..cut], indev, outdev, b.now, &mut b.wire);
        if i % 100 == 0 {
            b.later(150);
            b.timer();
        }
    }
}
