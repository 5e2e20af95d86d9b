#!/usr/bin/env python3
"""Helpers for benches/load/faults.sh, on top of bench.py: one run record from
oha's JSON (2xx share, p50/p90/p99 of all answers) plus, for the runs through
sluice, the deltas of its /metrics over the run (client requests, upstream
attempts, retries made and denied, breaker state); and the report, one table
per load mode with direct and sluice side by side for each mock fail rate.

Only the standard library, like bench.py.
"""

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

BREAKER = {0: "closed", 1: "half-open", 2: "open"}


def parse_metrics(path):
    """[(name, {label: value}, value)] of a saved Prometheus text page."""
    with open(path) as f:
        return bench.prometheus_series(f.read())


def total(series, name, where=lambda labels: True):
    return sum(v for n, labels, v in series if n == name and where(labels))


def by_label(series, name, label, where=lambda labels: True):
    out = {}
    for n, labels, v in series:
        if n == name and where(labels):
            k = labels.get(label, "")
            out[k] = out.get(k, 0.0) + v
    return out


def delta(before, after):
    return {k: int(after.get(k, 0) - before.get(k, 0)) for k in sorted(set(before) | set(after))
            if after.get(k, 0) - before.get(k, 0)}


def reserve_retries(seconds, per_s, window_s):
    """Most retries the budget's reserve can grant over a run of `seconds`.

    The reserve is per_s * window_s retries per budget window (tower's TpsBudget,
    10 s in 10 one-second slots). Spent reserve comes back as the window
    slides, and the window covers at least window_s - 1 s (the current slot is
    partial), so a run spans at most ceil(seconds / (window_s - 1)) windows.
    """
    return per_s * window_s * math.ceil(seconds / max(window_s - 1, 1))


def cmd_record(a):
    """Print one JSON line for a load run (with sluice's deltas when given)."""
    res = bench.load_oha(a.oha)
    ok, other, errors = bench.counts(res)
    n = ok + other + errors
    pct = res.get("latencyPercentiles", {})
    seconds = res["summary"]["total"]
    rec = {
        "fail_rate": a.fail_rate,
        "mode": a.mode,
        "target": a.target,
        "answers": n,
        "ok": ok,
        "non_2xx": other,
        "errors": errors,
        "status": res.get("statusCodeDistribution", {}),
        "error_kinds": res.get("errorDistribution", {}),
        "seconds": seconds,
        "answers_per_s": n / seconds if seconds else 0.0,
        "success": ok / n if n else 0.0,
        "p50_ms": (pct.get("p50") or 0.0) * 1000.0,
        "p90_ms": (pct.get("p90") or 0.0) * 1000.0,
        "p99_ms": (pct.get("p99") or 0.0) * 1000.0,
    }
    if a.before and a.after:
        b, f = parse_metrics(a.before), parse_metrics(a.after)
        client = lambda labels: labels.get("endpoint") != "admin"  # noqa: E731
        requests = total(f, "sluice_requests_total", client) - total(b, "sluice_requests_total", client)
        attempts = total(f, "sluice_upstream_attempts_total") - total(b, "sluice_upstream_attempts_total")
        retries = total(f, "sluice_upstream_retries_total") - total(b, "sluice_upstream_retries_total")
        fallbacks = (total(f, "sluice_upstream_fallbacks_total")
                     - total(b, "sluice_upstream_fallbacks_total"))
        denied = delta(by_label(b, "sluice_upstream_retries_denied_total", "reason"),
                       by_label(f, "sluice_upstream_retries_denied_total", "reason"))
        reserve = reserve_retries(seconds, a.reserve_per_s, a.window_s)
        # The warm-up requests sent before the counters were read deposited too.
        warmup = a.budget * a.warmup_requests
        state = [v for n_, _, v in f if n_ == "sluice_upstream_breaker_state"]
        rec["sluice"] = {
            "client_requests": int(requests),
            "client_status": delta(by_label(b, "sluice_requests_total", "status", client),
                                   by_label(f, "sluice_requests_total", "status", client)),
            "upstream_attempts": int(attempts),
            "attempt_outcomes": delta(by_label(b, "sluice_upstream_attempts_total", "outcome"),
                                      by_label(f, "sluice_upstream_attempts_total", "outcome")),
            "retries": int(retries),
            "retry_reasons": delta(by_label(b, "sluice_upstream_retries_total", "reason"),
                                   by_label(f, "sluice_upstream_retries_total", "reason")),
            "fallbacks": int(fallbacks),
            "denied": denied,
            "amplification": attempts / requests if requests else None,
            "budget": a.budget,
            "reserve_retries": reserve,
            "warmup_retries": warmup,
            "bound": 1.0 + a.budget + (reserve + warmup) / requests if requests else None,
            "breaker_state": BREAKER.get(int(max(state)), "?") if state else "?",
            "breaker_opened": a.breaker_opened,
        }
    print(json.dumps(rec))
    if errors:
        print(f"  !! {a.target} {a.mode} fail rate {a.fail_rate}: {errors} transport errors: "
              f"{rec['error_kinds']}", file=sys.stderr)


def exceeds(amp, bound):
    """Whether the amplification is over its bound (they can be exactly equal when
    the budget runs dry: retries = budget x requests + reserve)."""
    return amp is not None and bound is not None and amp > bound + 1e-9


def pct_cell(x):
    return "-" if x is None else f"{x * 100:.2f}%"


def row(cells):
    return "| " + " | ".join(cells) + " |"


def table(mode, title, runs, max_retries):
    """Markdown for one load mode: direct, sluice and their difference per fail rate."""
    rates = sorted({r["fail_rate"] for r in runs if r["mode"] == mode}, key=float)
    if not rates:
        return ""
    lines = [
        f"### {title}",
        "",
        row(["fail rate", "target", "answers", "ans/s", "2xx", "p50 ms", "p90 ms", "p99 ms",
             "upstream attempts", "attempts / request", "bound", "retries", "denied (budget)",
             "breaker at end"]),
        row(["---:", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:",
             "---:", "---:", "---:", "---"]),
    ]
    bullets = []
    for f in rates:
        rs = {r["target"]: r for r in runs if r["mode"] == mode and r["fail_rate"] == f}
        d, s = rs.get("direct"), rs.get("sluice")
        for t, r in (("direct", d), ("sluice", s)):
            if r is None:
                lines.append(row([f, t, "(failed)"] + [""] * 11))
                continue
            cells = [f, t, f"{r['answers']:,}", bench.fmt(r["answers_per_s"], 0),
                     pct_cell(r["success"]), bench.fmt(r["p50_ms"], 2), bench.fmt(r["p90_ms"], 2),
                     bench.fmt(r["p99_ms"], 2)]
            m = r.get("sluice")
            if m:
                amp, bound = m["amplification"], m["bound"]
                over = exceeds(amp, bound)
                opened = f", opened {m['breaker_opened']}x" if m["breaker_opened"] else ""
                cells += [f"{m['upstream_attempts']:,}",
                          ("**" if over else "") + bench.fmt(amp, 4) + (" OVER**" if over else ""),
                          "<= " + bench.fmt(bound, 4), f"{m['retries']:,}",
                          f"{m['denied'].get('budget', 0):,}", m["breaker_state"] + opened]
            else:
                cells += ["-"] * 6
            lines.append(row(cells))
        if d and s:
            lines.append(row([f, "sluice - direct", "", "",
                              f"{(s['success'] - d['success']) * 100:+.2f} pt",
                              bench.fmt_signed(s["p50_ms"] - d["p50_ms"]),
                              bench.fmt_signed(s["p90_ms"] - d["p90_ms"]),
                              bench.fmt_signed(s["p99_ms"] - d["p99_ms"])] + [""] * 6))
        if s and s.get("sluice"):
            m = s["sluice"]
            fr = float(f)
            req = m["client_requests"]
            share = m["retries"] / req if req else 0.0
            other_denied = {k: v for k, v in m["denied"].items() if k != "budget"}
            text = (f"fail rate {f}: sluice answered {pct_cell(s['success'])} 2xx (direct "
                    f"{pct_cell(d['success']) if d else '-'}; 1 - f^{max_retries + 1} = "
                    f"{pct_cell(1 - fr ** (max_retries + 1))} if every failed attempt were "
                    f"retried); {req:,} client requests, {m['upstream_attempts']:,} upstream "
                    f"attempts, {m['retries']:,} retries ({share * 100:.1f}% of requests), "
                    f"{m['denied'].get('budget', 0):,} denied by the budget")
            if other_denied:
                text += f", denied otherwise {other_denied}"
            if m["fallbacks"]:
                text += f", {m['fallbacks']} fallbacks"
            text += (f"; bound 1 + {m['budget']} + ({m['reserve_retries']} reserve + "
                     f"{m['warmup_retries']:g} warm-up) / {req:,} = {bench.fmt(m['bound'], 4)}")
            if req != s["answers"]:
                text += f"; oha counted {s['answers']:,} answers, sluice {req:,} requests"
            bullets.append(f"- {text}")
    if mode == "closed":
        bullets.append("- closed loop: each target runs at its own throughput (through sluice, "
                       "connections wait out the retry backoff), so latencies compare at unequal "
                       "load; the fixed-rate table compares them at equal load")
    return "\n".join(lines + [""] + bullets + [""])


def cmd_report(a):
    meta, runs = bench.read_report_inputs(a)
    out = bench.report_head("sluice upstream failures benchmark", meta)
    out.append(
        "- one run per (fail rate, mode, target); a fresh sluice for every run through it, a "
        "fresh mock per fail rate. 2xx = share of oha's answers with a 2xx status; latencies "
        "are of all answers; ans/s = answers over oha's run time (which includes waiting for "
        "the answers still out at the deadline); attempts / request = delta of sluice_upstream_attempts_total over "
        "delta of sluice_requests_total (client endpoints); bound = 1 + budget + (reserve "
        "retries + budget x warm-up requests) / client requests; retries and denials from sluice_upstream_retries_total "
        "and sluice_upstream_retries_denied_total"
    )
    out.append("")
    for key, title in meta["modes"]:
        text = table(key, title, runs, meta["max_retries"])
        if text:
            out.append(text)
    notes = list(meta.get("notes", []))
    for r in runs:
        m = r.get("sluice")
        if not m:
            continue
        where = f"fail rate {r['fail_rate']}, {r['mode']}"
        if exceeds(m["amplification"], m["bound"]):
            notes.append(f"{where}: amplification {m['amplification']:.3f} is over the bound "
                         f"{m['bound']:.3f} ({m['upstream_attempts']} attempts, "
                         f"{m['client_requests']} requests, {m['retries']} retries)")
        if m["breaker_opened"] and float(r["fail_rate"]) < 0.5:
            notes.append(f"{where}: the breaker opened {m['breaker_opened']}x although the mock "
                         f"fails under half of the requests (client statuses {m['client_status']}, "
                         f"attempt outcomes {m['attempt_outcomes']})")
        if r["errors"]:
            notes.append(f"{where}, sluice: transport errors {r['error_kinds']}")
    for r in runs:
        if r["target"] == "direct" and r["errors"]:
            notes.append(f"fail rate {r['fail_rate']}, {r['mode']}, direct: transport errors "
                         f"{r['error_kinds']}")
    if notes:
        out += ["### notes", ""] + [f"- {n}" for n in notes] + [""]
    bench.write_report(a.md, out)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("record")
    r.add_argument("--oha", required=True)
    r.add_argument("--fail-rate", required=True)
    r.add_argument("--mode", required=True)
    r.add_argument("--target", required=True)
    r.add_argument("--before", help="sluice's /metrics before the run")
    r.add_argument("--after", help="sluice's /metrics after the run")
    r.add_argument("--budget", type=float, default=0.2)
    r.add_argument("--reserve-per-s", type=int, default=1)
    r.add_argument("--window-s", type=int, default=10)
    r.add_argument("--warmup-requests", type=int, default=0)
    r.add_argument("--breaker-opened", type=int, default=0)
    r.set_defaults(fn=cmd_record)

    m = sub.add_parser("report")
    m.add_argument("--meta", required=True)
    m.add_argument("--runs", required=True)
    m.add_argument("--md", required=True)
    m.set_defaults(fn=cmd_report)

    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
