"""Turns benchmark results into the Markdown report and the plots."""

import os
import statistics
import subprocess
import sys

EFFICIENCY = 1448 / 1514
NAMES = {"put": "upload", "get": "download", "web": "web", "shared": "2 uploads", "rr": "first byte of"}
# Through WireGuard (MTU 1420): payload per full frame on the emulated
# link, 1420 - 20 (IP) - 32 (TCP with timestamps) = 1368 bytes, in a frame
# of 1420 + 32 (WireGuard header and tag) + 8 (UDP) + 20 (IP) + 14
# (Ethernet) = 1494 bytes.
WG_EFFICIENCY = 1368 / 1494


def human(n):
    for unit, scale in (("MB", 1_000_000), ("KB", 1_000)):
        if n >= scale:
            v = n / scale
            return f"{v:g} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n} B"


def link(run, op):
    """(rate bit/s, RTT s) of the bottleneck in the direction of `op`."""
    v = run["vars"]
    rate = int(v["UP_BPS"] if op in ("put", "shared") else v["DOWN_BPS"])
    return rate, int(v["RTT_MS"]) / 1000


def first_byte_rtts(op, setup=""):
    """Round trips before the first payload byte can arrive: an upload's
    data leaves after the handshake (1.5 RTT to the server); a download
    waits for its request to reach the server (2 RTT to the client). With
    zero-round-trip opens the data leaves with the SYN: one RTT less."""
    rtts = 1.5 if op in ("put", "shared") else 2.0
    return rtts - 1 if "0rtt" in setup else rtts


def limit_s(run, op, size, setup=""):
    """Physics: the first byte's round trips plus serialization of the
    payload at the bottleneck's TCP payload rate (through WireGuard, less
    its per-packet overhead). A request/response's time is to the first
    byte: round trips only."""
    rate, rtt = link(run, op)
    eff = WG_EFFICIENCY if setup.startswith("wg") else EFFICIENCY
    serial = 0 if op == "rr" else size * 8 / (rate * eff)
    return first_byte_rtts(op, setup) * rtt + serial


def elapsed(r):
    """connect() to the last byte's arrival (uploads: at the server)."""
    if "done" not in r:
        return None
    return r.get("delivered_at", r["done"]) - r["start"]


def cell_time(rs):
    times = [elapsed(r) for r in rs]
    done = [t for t in times if t is not None]
    if len(done) < len(rs):
        worst = max(r["end"] - r["start"] for r in rs)
        frac = min(r["delivered"] / max(1, r["size"]) for r in rs)
        return None, f"incomplete {len(rs) - len(done)}/{len(rs)} (> {worst:.0f} s, {frac:.0%} delivered)"
    med = statistics.median(done)
    if len(done) == 1:
        return med, f"{med:.2f} s"
    return med, f"{med:.2f} s ({min(done):.2f}–{max(done):.2f})"


def paired(direct_rs, rs):
    """Run k against direct's run k (the same losses, see tests/bench/run):
    (median, worst, best) of those speedups, or None. On lossy links this
    tells setups apart where the medians' spread does not."""
    ratios = sorted(elapsed(d) / elapsed(r) for d, r in zip(direct_rs, rs)
                    if elapsed(d) is not None and elapsed(r) is not None)
    if len(ratios) < 2:
        return None
    return statistics.median(ratios), ratios[0], ratios[-1]


def paired_text(direct_rs, rs):
    p = paired(direct_rs, rs)
    return f"{p[0]:.2f}× ({p[1]:.2f}–{p[2]:.2f})" if p else "–"


def profile_table(run, setups):
    vs = [s for s in ("link", "wg") if s in setups]
    lines = [
        "| Test | Limit | Setup | Time, median (min–max) | Goodput | Of limit | Speedup vs direct "
        "| Run by run, median (min–max) |" + "".join(f" vs {s} |" for s in vs),
        "|---|---|---|---|---|---|---|---|" + "---|" * len(vs),
    ]
    for (op, size), by_setup in run["results"].items():
        base = cell_time(by_setup.get("direct", []))[0] if "direct" in by_setup else None
        others = {s: cell_time(by_setup.get(s, []))[0] if by_setup.get(s) else None for s in vs}
        # An unfinished direct run still bounds the speedup from below.
        floor = (min(r["end"] - r["start"] for r in by_setup["direct"])
                 if base is None and by_setup.get("direct") else None)
        for setup in setups:
            rs = by_setup.get(setup)
            if not rs:
                continue
            lim = limit_s(run, op, size, setup)
            med, text = cell_time(rs)
            if med is not None:
                goodput = f"{size * 8 / med / 1e6:.2f} Mbit/s"
                of_limit = f"{med / lim:.2f}×"
                speedup = f"{base / med:.2f}×" if base else (f"> {floor / med:.1f}×" if floor else "–")
            else:
                best = max(r["delivered"] * 8 / max(1e-9, r["end"] - r["start"]) for r in rs)
                goodput, of_limit, speedup = f"{best / 1e6:.2f} Mbit/s (partial)", "–", "–"
            pair = paired_text(by_setup.get("direct", []), rs) if setup != "direct" else "–"
            rel = "".join(f" {others[s] / med:.2f}× |" if med and others[s] else " – |" for s in vs)
            lines.append(f"| {NAMES[op]} {human(size)} | {lim:.2f} s | {setup} | {text} | {goodput} | {of_limit} "
                         f"| {speedup} | {pair} |{rel}")
    return "\n".join(lines)


def ratios(direct_rs, rs):
    """Run k's speedup over direct's run k, sorted, for the runs that both finished."""
    return sorted(elapsed(d) / elapsed(r) for d, r in zip(direct_rs, rs)
                  if elapsed(d) is not None and elapsed(r) is not None)


def aa_table(run, setups):
    """With setup direct2 (the direct path measured a second time, with
    the same losses): the spread of direct against direct2 run by run is
    what the emulator and the machine alone make of identical setups. A
    setup whose speedups fall inside it is not told apart from direct."""
    lines = [
        "| Test | Setup | Runs | Speedup over direct run by run: median (min–max) "
        "| A/A, direct over direct2: median (min–max) | Median inside the A/A range (both ways) "
        "| Runs below it |",
        "|---|---|---|---|---|---|---|",
    ]
    for (op, size), by_setup in run["results"].items():
        direct = by_setup.get("direct", [])
        aa = ratios(direct, by_setup.get("direct2", []))
        if len(aa) < 2:
            continue
        # Identical setups: direct over direct2 and direct2 over direct
        # are the same draw, so the range counts both ways; compared at
        # the two decimals shown.
        lo, hi = round(min(aa[0], 1 / aa[-1]), 2), round(max(aa[-1], 1 / aa[0]), 2)
        aa_text = f"{statistics.median(aa):.2f}× ({aa[0]:.2f}–{aa[-1]:.2f}); both ways {lo:.2f}–{hi:.2f}"
        for setup in setups:
            if setup in ("direct", "direct2") or not by_setup.get(setup):
                continue
            rs = ratios(direct, by_setup[setup])
            if not rs:
                continue
            med = round(statistics.median(rs), 2)
            inside = "yes" if lo <= med <= hi else ("no, above" if med > hi else "no, below")
            below = sum(1 for x in rs if round(x, 2) < lo)
            lines.append(f"| {NAMES[op]} {human(size)} | {setup} | {len(rs)} | {med:.2f}× ({rs[0]:.2f}–{rs[-1]:.2f}) "
                         f"| {aa_text} | {inside} | {below} of {len(rs)} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def pep_table(run):
    rows = []
    for setup, peps in run["peps"].items():
        for p in peps:
            gb = p["bytes"] / 1e9
            per_gb = f"{p['cpu_s'] / gb:.1f}" if gb > 0 else "–"
            rows.append(
                f"| {setup} | {p['where']} | {p['rss_start_kb']} | {p['rss_full_kb']} | {p['rss_peak_kb']} "
                f"({p['max_active']} active) | "
                f"{p['rss_end_kb']} | {p['cpu_s']:.2f} | {gb:.3f} | {per_gb} |"
            )
    if not rows:
        return ""
    head = [
        "| Setup | Namespace | RSS start (KiB) | RSS pool full (KiB) | RSS peak (KiB) | RSS after (KiB) | CPU (s) "
        "| GB relayed | CPU s per GB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    return "\n".join(head + rows)


def summary(runs):
    """One grep-able line per profile, test and setup (used by tests/demo)."""
    for run in runs:
        for (op, size), by_setup in run["results"].items():
            base = cell_time(by_setup.get("direct", []))[0] if "direct" in by_setup else None
            for setup, rs in by_setup.items():
                med = cell_time(rs)[0]
                t = f"{med:.2f}" if med is not None else "incomplete"
                sp = f"{base / med:.2f}" if med and base else "-"
                ol = f"{med / limit_s(run, op, size, setup):.2f}" if med else "-"
                pair = paired(by_setup.get("direct", []), rs) if setup != "direct" else None
                yield (f"SUMMARY {run['profile']} {NAMES[op].replace(' ', '-')} {human(size).replace(' ', '')} "
                       f"{setup.replace(' ', '-')} {t} s speedup {sp} of-limit {ol} limit {limit_s(run, op, size, setup):.2f}"
                       + (f" paired {pair[0]:.2f} worst {pair[1]:.2f}" if pair else ""))


def describe(run):
    v = run["vars"]
    return (f"down {int(v['DOWN_BPS']) / 1e6:g} Mbit/s, up {int(v['UP_BPS']) / 1e6:g} Mbit/s, "
            f"base RTT {v['RTT_MS']} ms")


def markdown(command, runs, setups, args, seconds):
    out = [
        "# pepwrt benchmark",
        "",
        "```",
        command,
        "```",
        "",
        f"Commit {getattr(args, 'commit', 'unknown')}. Machine: {getattr(args, 'load', 'not recorded')}.",
        "",
        f"Run {len(runs)} profile(s) in {seconds / 60:.1f} min; {args.repeat} repetition(s) per test; "
        f"transfer timeout {args.timeout:g} s. Setups: " + ", ".join(setups) + ".",
        "",
        "- **direct**: plain forwarding. **direct2**: the same, measured again in the same run (A/A). "
        "**defaults**: pepwrt in the router with the package's defaults "
        "(what the init script passes for the default /etc/config/pepwrt: pool 128 x 32 KB, the kernel's "
        "congestion control, which is cubic on OpenWrt and named here as `--server-cc cubic` because the test "
        "namespaces inherit this host's). **link**: the same plus the link settings "
        f"(geo: `{' '.join(args.link_flags('geo'))}`; per profile in tests/bench/run, LINKS; BBR where the RTT is "
        "200 ms or more). **link x2**: plus a second pepwrt at the gateway side of the link with the same link "
        "settings and `--link-leg client`, and the router's pepwrt given `--server-rcvbuf` of two downlink BDPs. **link fast**: link settings that claim twice the link's rates. "
        "**bbr**, **link bbr**, **link cubic**: a congestion control chosen by hand. "
        "**wg**: the router sends everything through a WireGuard tunnel to the gateway (wireguard-go, "
        "tests/net/wg), no pepwrt. **wg x2**: plus pepwrt at both ends with the link settings and "
        "`--tunnel` (the gateway: `--link-leg client`, intercepting the tunnel). **wg x2 0rtt**: plus "
        "`--zero-rtt`. Through the tunnel the limit counts WireGuard's per-packet overhead (1368 payload "
        "bytes per 1494-byte frame), with zero-RTT opens one round trip less. *First byte of*: a 300 B "
        "request answered with the size given, timed from connect() to the answer's first byte "
        "(limit 2 RTT, 1 with zero-RTT opens).",
        f"- On links with scheduled events (leo) every run starts {args.event_lead:g} s before the same one "
        "(a short outage, then the longer RTT), so every setup meets the same link. Random losses are paired the "
        "same way: before run k of a test linkem restarts its loss stream from the same seed in every setup, so "
        "each setup's run k meets the same losses (the same frames lost in the same order).",
        "- End hosts use cubic with default buffers. Time = connect() to the last byte's arrival (uploads: "
        "at the server). **Limit** = 1.5 RTT (uploads) or 2 RTT (downloads: the request goes first) + bytes / "
        "(bottleneck rate × 1448/1514). *Of limit* = time / limit (1.00× is the physical floor). Web = "
        f"{args.web_flows} parallel downloads of {human(args.web_size)}; 2 uploads = two uploads at once, "
        "each starting at a random point of the first 200 ms, timed from the start of that window (seeded like "
        "the losses: run k of every setup gets the same offsets).",
        "- *Incomplete*: the transfer hit the timeout; for uploads *delivered* is what the next hop acknowledged "
        "to the client. A speedup `> N×` compares with the unfinished direct run's timeout. After an incomplete "
        "run every connection to the traffic server is reset (`ss -K`), so its bytes still in flight do not "
        "share the link with the next runs.",
        "- *Run by run*: each run's speedup over direct's run with the same losses (run k against run k), their "
        "median and range; on lossy links a cell's times spread more than setups differ, and this column tells "
        "them apart.",
        *(["- *Interleaved*: run k of a test went through every setup before run k+1, the order turned by one "
            "setup each run, pepwrt started and stopped around each run."] if getattr(args, "interleave", False)
          else []),
        "- Links are emulated by linkem (tests/linkem); profiles in tests/net/profiles.sh.",
        "",
    ]
    for run in runs:
        out += [f"## {run['profile']} ({describe(run)})", "",
                f"Link settings of this profile: `{' '.join(args.link_flags(run['profile']))}`", "",
                profile_table(run, setups), ""]
        aa = aa_table(run, setups) if "direct2" in setups else ""
        if aa:
            out += ["A/A: direct2 is the direct path measured again with the same losses; direct over direct2 run "
                    "by run is how far identical setups differ here:", "", aa, ""]
        pt = pep_table(run)
        if pt:
            out += ["PEP process: VmRSS from /proc/PID/status at start, with every pool slot busy (64 parallel "
                    "512 KB downloads), peak, and after the runs; CPU = utime + stime from /proc/PID/stat over all "
                    "runs including the pool fill:", "", pt, ""]
        if run["linkem"].strip():
            out += ["<details><summary>linkem counters</summary>", "", "```", run["linkem"].strip(), "```", "",
                    "</details>", ""]
    return "\n".join(out)


def have_matplotlib(log):
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        pass
    log("installing matplotlib with pip for the plots")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], capture_output=True, text=True)
    if r.returncode != 0:
        log(f"no plots: pip install matplotlib failed: {r.stderr[-300:]}")
        return False
    import importlib

    importlib.invalidate_caches()
    return True


def plots(runs, out_dir, log):
    if not have_matplotlib(log):
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for run in runs:
        for op in ("put", "get"):
            sized = [(size, by) for (o, size), by in run["results"].items() if o == op]
            if not sized:
                continue
            size, by_setup = max(sized, key=lambda x: x[0])
            fig, ax = plt.subplots(figsize=(8, 4.5))
            for setup, rs in by_setup.items():
                r = next((r for r in rs if r.get("points")), None)
                if r is None:
                    continue
                xs = [0.0] + [t - r["start"] for t, _ in r["points"]]
                ys = [0.0] + [b / 1e6 for _, b in r["points"]]
                ax.step(xs, ys, where="post", label=setup)
            rate, rtt = link(run, op)
            # Upload bytes reach the server from 1.5 RTT on; download
            # bytes reach the client from 2 RTT (after the request).
            first = (1.5 if op == "put" else 2.0) * rtt
            ax.plot([0, first, first + size * 8 / (rate * EFFICIENCY)], [0, 0, size / 1e6], "k--", linewidth=0.8,
                    label="link limit")
            ax.set_xlabel("seconds since connect()")
            ax.set_ylabel("MB delivered")
            ax.set_title(f"{run['profile']}: {NAMES[op]} of {human(size)}")
            ax.grid(alpha=0.3)
            ax.legend()
            path = os.path.join(out_dir, f"{run['profile']}-{NAMES[op]}.png")
            fig.tight_layout()
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written.append(path)
    return written
