# Link profiles for the testbed, sourced by tests/net/testbed.
# A profile sets linkem specs per direction ("down" = server -> client)
# for the wide-area link (WAN_*) and optionally the client's last hop
# (LAN_*), plus the numbers the benchmark's "theoretical limit" uses.
# shellcheck shell=bash

profile_load() {
    WAN_DOWN="" WAN_UP="" LAN_DOWN="" LAN_UP="" END_RMEM="" PERIOD_S=0
    case "$1" in
    geo | geo-lossy | geo-small-window)
        local loss=0.1%
        if [ "$1" = geo-lossy ]; then loss=1%; fi
        # Satellite modems queue a lot; ~170 ms at the downlink rate and
        # ~400 ms at the uplink rate.
        WAN_DOWN="rate=50mbit,delay=300ms,loss=$loss,limit=1m"
        WAN_UP="rate=5mbit,delay=300ms,loss=$loss,limit=256k"
        DOWN_BPS=50000000 UP_BPS=5000000 RTT_MS=600
        # 64 KB receive window on both end hosts.
        if [ "$1" = geo-small-window ]; then END_RMEM="4096 65536 65536"; fi
        ;;
    geo-clean | geo-clean-lossy)
        # A clean GEO link, symmetric: 10 Mbit/s each way, 600 ms RTT, a
        # drop-tail queue of one BDP (750 kB), no random loss; or the same
        # link with 1 % random loss each way (issue 13's lossy link).
        local loss=""
        if [ "$1" = geo-clean-lossy ]; then loss=",loss=1%"; fi
        WAN_DOWN="rate=10mbit,delay=300ms,limit=750k$loss"
        WAN_UP="rate=10mbit,delay=300ms,limit=750k$loss"
        DOWN_BPS=10000000 UP_BPS=10000000 RTT_MS=600
        ;;
    leo)
        # Every 15 s the path changes: RTT steps by 60 ms (30 ms each
        # way, on for one period, off the next) and the link is down
        # for 100 ms. LEO_PERIOD_S shortens the cycle for experiments
        # (the bench waits for the same phase each run: 15 s is slow).
        local ev="jitter=2ms,period=${LEO_PERIOD_S:-15}s,step=30ms,outage=100ms"
        WAN_DOWN="rate=100mbit,delay=20ms,$ev,limit=512k"
        WAN_UP="rate=15mbit,delay=20ms,$ev,limit=256k"
        DOWN_BPS=100000000 UP_BPS=15000000 RTT_MS=40 PERIOD_S=${LEO_PERIOD_S:-15}
        ;;
    wifi-lossy)
        # Lossy last hop between router and client; a clean ~100 ms
        # RTT wide-area path between router and server.
        LAN_DOWN="rate=20mbit,delay=2500us,loss=2%,limit=256k"
        LAN_UP="rate=20mbit,delay=2500us,loss=2%,limit=256k"
        WAN_DOWN="rate=100mbit,delay=50ms,limit=2m"
        WAN_UP="rate=100mbit,delay=50ms,limit=2m"
        DOWN_BPS=20000000 UP_BPS=20000000 RTT_MS=105
        ;;
    wg-test)
        # For the namespace tests through WireGuard (tests/twoends.rs):
        # a clean 20 Mbit/s link with a 200 ms RTT, long enough to tell
        # a zero-round-trip open from an ordinary one, short enough to
        # keep the tests quick.
        WAN_DOWN="rate=20mbit,delay=100ms,limit=1m"
        WAN_UP="rate=20mbit,delay=100ms,limit=1m"
        DOWN_BPS=20000000 UP_BPS=20000000 RTT_MS=200
        ;;
    *)
        echo "unknown profile '$1' (geo, geo-clean, geo-clean-lossy, geo-lossy, leo, wifi-lossy, geo-small-window, wg-test)" >&2
        return 1
        ;;
    esac
}

PROFILES="geo geo-clean geo-clean-lossy geo-lossy leo wifi-lossy geo-small-window"
