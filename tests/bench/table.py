#!/usr/bin/env python3
"""One Markdown table for docs/benchmarks.md from the benchmark's reports.

  tests/bench/table.py tests/bench/results/bench-geo-clean.md ... [--rerun REPORT...]

A report file may hold several runs, oldest first: a later run's cells
replace the earlier ones.

Each cell: median time, the speedup over direct run by run (median of
run k against direct's run k, which met the same losses; the worst run
in brackets) and, in parentheses, the time as a multiple of the limit.
A cell whose runs did not all finish shows what the report says.
"""

import re
import sys


def cells(path):
    """(profile, test, limit, setup, time, of_limit, speedup, run_by_run) rows of a report."""
    profile = None
    for line in open(path, encoding="utf-8"):
        head = re.match(r"## (\S+) \(", line)
        if head:
            profile = head.group(1)
            continue
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if profile is None or len(parts) != 8 or not parts[1].endswith(" s") or parts[0] == "Test":
            continue
        yield profile, *parts[:4], parts[5], parts[6], parts[7]


def cell_text(time, of_limit, speedup, run_by_run):
    if time.startswith("incomplete"):
        return "> " + re.search(r"> (\d+) s", time).group(1) + " s"
    median = time.split(" (")[0]
    m = re.match(r"([\d.]+)× \(([\d.]+)–", run_by_run)
    if m:
        fast = f"**{m.group(1)}×** (worst {m.group(2)}×)"
    elif speedup not in ("–", "1.00×"):
        fast = f"**{speedup}**"
    else:
        fast = ""
    return ", ".join(x for x in (median, fast) if x) + f" [{of_limit}]"


def main(args):
    """Reports after `--rerun` replace the cells they hold; those cells are
    marked † and their test's direct cell shows the rerun's direct time
    too (each speedup is against direct in its own report)."""
    rows, setups, rerun = {}, [], False
    for path in args:
        if path == "--rerun":
            rerun = True
            continue
        for profile, test, limit, setup, time, of_limit, speedup, rbr in cells(path):
            by = rows.setdefault((profile, test, limit), {})
            text = cell_text(time, of_limit, speedup, rbr)
            if rerun and setup == "direct" and "direct" in by:
                if text != by["direct"]:
                    by["direct"] += f"; rerun † {text}"
            else:
                by[setup] = text + (" †" if rerun else "")
            if setup not in setups:
                setups.append(setup)
    print("| profile | test | limit | " + " | ".join(setups) + " |")
    print("|---|---|---|" + "---|" * len(setups))
    last = None
    for (profile, test, limit), by in rows.items():
        shown = profile if profile != last else ""
        last = profile
        print(f"| {shown} | {test} | {limit} | " + " | ".join(by.get(s, "–") for s in setups) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
