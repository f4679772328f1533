#!/usr/bin/env python3
"""Figures and a plot of one scenario's load, from LoadRun's acks file and the scenario's marks.

    figures.py ACKS MARKS TITLE PNG [FROM_MARK TO_MARK]

ACKS: LoadRun lines "ack SENT_MS ACK_MS PARTITION OFFSET SEQ" / "err SENT_MS FAIL_MS SEQ ...".
MARKS: the scenario's "MS LABEL" lines (e.g. "1764780000000 roll-start").
Prints one "name=value" line per figure. "ack latency" is send() to the producer's
acknowledgement callback (acks=all), not end to end. The window FROM_MARK..TO_MARK (default: the
first and last mark) is compared with the steady state before FROM_MARK. A plot of every ack's
latency over time, with the marks, goes to PNG.
"""
import sys


def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def main():
    if len(sys.argv) not in (5, 7):
        sys.exit(__doc__)
    acks_path, marks_path, title, png = sys.argv[1:5]
    acks, errs = [], []
    with open(acks_path) as f:
        for line in f:
            p = line.split()
            if p and p[0] == "ack":
                acks.append((int(p[1]), int(p[2]), int(p[3])))
            elif p and p[0] == "err":
                errs.append((int(p[1]), int(p[2]), " ".join(p[4:])))
    marks = []
    with open(marks_path) as f:
        for line in f:
            ms, label = line.split(maxsplit=1)
            marks.append((int(ms), label.strip()))
    if not acks:
        sys.exit("figures: no acknowledgements in " + acks_path)
    named = dict((label, ms) for ms, label in marks)
    if len(sys.argv) == 7:
        w0, w1 = named[sys.argv[5]], named[sys.argv[6]]
    else:
        w0, w1 = marks[0][0], marks[-1][0]
    t0 = min(a[0] for a in acks)
    steady = [a[1] - a[0] for a in acks if a[0] < w0]
    during = [a[1] - a[0] for a in acks if w0 <= a[0] <= w1]
    # A stall: the longest time with no acknowledgement at all while sends were being made.
    times = sorted(a[1] for a in acks)
    last_sent = max(a[0] for a in acks)
    gaps = [(b - a, a) for a, b in zip(times, times[1:]) if a <= last_sent]
    stall, stall_at = max(gaps) if gaps else (0, t0)
    # Per partition: the longest gap between two acks of one partition (a failover shows here).
    by_part = {}
    for s, a, p in acks:
        by_part.setdefault(p, []).append(a)
    part_gap = {}
    for p, ts in by_part.items():
        ts.sort()
        part_gap[p] = max([b - a for a, b in zip(ts, ts[1:])] or [0])
    print(f"acked={len(acks)}")
    print(f"failed_sends={len(errs)}")
    print(f"steady_ack_p50_ms={pct(steady, 50)} steady_ack_p99_ms={pct(steady, 99)} steady_acks={len(steady)}")
    print(f"window_ack_p50_ms={pct(during, 50)} window_ack_p99_ms={pct(during, 99)} window_ack_max_ms={max(during) if during else 'nan'} window_acks={len(during)}")
    print(f"window_s={(w1 - w0) / 1000:.1f}")
    print(f"longest_stall_ms={stall} at_s={(stall_at - t0) / 1000:.1f}")
    worst = max(part_gap, key=part_gap.get)
    print(f"longest_partition_gap_ms={part_gap[worst]} partition={worst}")
    for _, _, e in errs[:5]:
        print(f"  failed: {e}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("figures: matplotlib missing; no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(11, 4.5))
    ax.scatter([(a[0] - t0) / 1000 for a in acks], [max(1, a[1] - a[0]) for a in acks], s=2, label="acks=all ack latency")
    if errs:
        ax.scatter([(e[0] - t0) / 1000 for e in errs], [max(1, e[1] - e[0]) for e in errs], s=12, c="red", marker="x", label="failed send")
    for ms, label in marks:
        ax.axvline((ms - t0) / 1000, color="grey", linestyle="--", linewidth=0.8)
        ax.text((ms - t0) / 1000, 1, " " + label, rotation=90, va="bottom", fontsize=7)
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the first send")
    ax.set_ylabel("ms from send() to acknowledgement")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"plot={png}")


if __name__ == "__main__":
    main()
