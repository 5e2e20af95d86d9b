#!/usr/bin/env python3
"""Helpers for benches/load/cache.sh, on top of bench.py: a run record with the
cache hits sluice counted during the run, a reader for sluice's /metrics, the
loop that stores N distinct entries, and the report (hit vs nginx static, and
memory per cached entry).

Only the standard library, like bench.py.
"""

import argparse
import contextlib
import http.client
import io
import json
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

# Targets, from the thresholds the cache is designed to: a memory hit adds under
# 50 us at p99 at 1,000 req/s, and serves at least 80 % of nginx's static rate.
ADDED_P99_TARGET_US = 50.0
THROUGHPUT_TARGET = 0.80

def scrape(url):
    """{(name, frozenset(labels)): value} of a Prometheus text page."""
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    return {(name, frozenset(labels.items())): value
            for name, labels, value in bench.prometheus_series(text)}


def pick(series, spec):
    """Sum of the series matching `name` or `name{k="v",...}` (0 when absent)."""
    m = bench.SERIES.match(spec + " 0")
    name, want = m.group(1), set(bench.LABEL.findall(m.group(2) or ""))
    return sum(v for (n, labels), v in series.items() if n == name and want <= labels)


def cmd_metrics(a):
    """Print {spec: value} for each spec, read from sluice's /metrics."""
    series = scrape(a.url)
    print(json.dumps({spec: pick(series, spec) for spec in a.spec}))


def cmd_record(a):
    """bench.py's run record, plus the hits sluice counted during the run."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        bench.cmd_record(a)
    rec = json.loads(buf.getvalue())
    if a.hits is not None:
        rec["hits"] = a.hits
    print(json.dumps(rec))


def cmd_fill(a):
    """POST n distinct requests (the fixture with a unique last message) over
    `threads` keep-alive connections, stopping at the deadline; print counts."""
    with open(a.body) as f:
        doc = json.load(f)
    base = doc["messages"][-1]["content"]
    url = urllib.parse.urlsplit(a.url)
    headers = {"content-type": "application/json", "authorization": a.authorization}
    lock = threading.Lock()
    state = {"next": 0, "status": {}, "cache": {}, "errors": 0}
    deadline = time.monotonic() + a.deadline_s

    def take():
        with lock:
            i = state["next"]
            if i >= a.n or time.monotonic() > deadline:
                return None
            state["next"] = i + 1
            return i

    def worker():
        d = json.loads(json.dumps(doc))
        conn = None
        while (i := take()) is not None:
            d["messages"][-1]["content"] = f"{base} (variant {i})"
            body = json.dumps(d, separators=(",", ":")).encode()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
                conn.request("POST", url.path, body=body, headers=headers)
                r = conn.getresponse()
                r.read()
                status, cache = str(r.status), r.getheader("x-sluice-cache", "-")
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                status, cache = None, None
                if conn is not None:
                    conn.close()
                conn = None
            with lock:
                if status is None:
                    state["errors"] += 1
                else:
                    state["status"][status] = state["status"].get(status, 0) + 1
                    state["cache"][cache] = state["cache"].get(cache, 0) + 1
        if conn is not None:
            conn.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(a.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.monotonic() - t0
    print(json.dumps({
        "requested": a.n,
        "sent": state["next"],
        "seconds": secs,
        "status": state["status"],
        "cache": state["cache"],
        "errors": state["errors"],
        "hit_deadline": state["next"] < a.n,
    }))


def verdict(ok):
    return "met" if ok else "**NOT met**"


def cmd_report(a):
    meta, runs = bench.read_report_inputs(a)
    names = {"sluice": "sluice, cache hit", "nginx": "nginx, static `return 200`"}
    out = bench.report_head("sluice cache-hit benchmark", meta)
    out.append(
        "- figures are medians across rounds; success is the worst round; **hits** is the "
        "share of oha's requests that sluice counted as cache hits "
        "(`sluice_cache_requests_total{result=\"hit\"}` before and after the run), worst round"
    )
    out.append("")
    for scenario, title in meta["scenarios"]:
        rows = {}
        for t in ("sluice", "nginx"):
            rs = [r for r in runs if r["scenario"] == scenario and r["target"] == t]
            if not rs:
                continue
            hit_share = [r["hits"] / (r["ok"] + r["non_2xx"] + r["errors"])
                         for r in rs if "hits" in r and r["ok"] + r["non_2xx"] + r["errors"]]
            rows[t] = {
                "n": len(rs),
                "rps": bench.med(r["rps"] for r in rs),
                "p50": bench.med(r["p50_ms"] for r in rs),
                "p99": bench.med(r["p99_ms"] for r in rs),
                "success": min(r["success"] for r in rs),
                "cpu": bench.med(r.get("proxy_cpu_ms_per_req") for r in rs),
                "up": bench.med(r.get("upstream_cpu_ms_per_req") for r in rs),
                "hits": min(hit_share) if hit_share else None,
            }
        if not rows:
            continue
        out += [
            f"### {title}",
            "",
            "| target | rounds | req/s | p50 ms | p99 ms | success | hits | CPU ms/req | upstream CPU ms/req |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for t, r in rows.items():
            hits = "-" if r["hits"] is None else f"{r['hits'] * 100:.2f}%"
            out.append(
                f"| {names[t]} | {r['n']} | {bench.fmt(r['rps'], 0)} | {bench.fmt(r['p50'], 3)} "
                f"| {bench.fmt(r['p99'], 3)} | {r['success'] * 100:.2f}% | {hits} "
                f"| {bench.fmt(r['cpu'], 4)} | {bench.fmt(r['up'], 4)} |"
            )
        s, n = rows.get("sluice", {}), rows.get("nginx", {})
        thr = bench.ratio(s.get("rps"), n.get("rps"))
        cpu = bench.ratio(s.get("cpu"), n.get("cpu"))
        add50 = bench.diff(s.get("p50"), n.get("p50"))
        add99 = bench.diff(s.get("p99"), n.get("p99"))
        out.append("")
        if scenario.startswith("closed"):
            ok = thr is not None and thr >= THROUGHPUT_TARGET
            out.append(
                f"- hit throughput / nginx static: **{bench.fmt(thr, 2)}x** "
                f"(target >= {THROUGHPUT_TARGET:.2f}x: {verdict(ok)})"
            )
        out.append(f"- CPU per request, hit / nginx static: **{bench.fmt(cpu, 2)}x**")
        if scenario.startswith("rate"):
            ok = add99 is not None and add99 * 1000 < ADDED_P99_TARGET_US
            out.append(
                f"- added by a hit over the static answer, p50: **{bench.fmt_signed(add50 and add50 * 1000, 0)} us**"
            )
            out.append(
                f"- added by a hit over the static answer, p99: **{bench.fmt_signed(add99 and add99 * 1000, 0)} us** "
                f"(target < {ADDED_P99_TARGET_US:.0f} us: {verdict(ok)}"
                + ("; negative: the two p99s are within noise of each other" if ok and add99 < 0 else "")
                + ")"
            )
        else:
            out.append(
                f"- p50 / p99 difference (at unequal throughputs; read the fixed-rate table): "
                f"{bench.fmt_signed(add50 and add50 * 1000, 0)} / {bench.fmt_signed(add99 and add99 * 1000, 0)} us"
            )
        out.append("")
    if a.memory:
        with open(a.memory) as f:
            m = json.load(f)
        fill = m["fill"]
        d_entries = m["entries_after"] - m["entries_before"]
        d_bytes = m["stored_bytes_after"] - m["stored_bytes_before"]
        d_rss = (m["rss_after_kb"] - m["rss_before_kb"]) * 1024
        out += [f"### memory per cached entry ({fill['requested']:,} distinct requests)", ""]
        out.append(
            f"- sent {fill['sent']:,} in {fill['seconds']:.1f} s over {m['threads']} keep-alive "
            f"connections: status {fill['status']}, x-sluice-cache {fill['cache']}, "
            f"{fill['errors']} transport errors"
            + (" (stopped at the time limit)" if fill["hit_deadline"] else "")
        )
        out.append(
            f"- `sluice_cache_entries` {m['entries_before']:,.0f} -> {m['entries_after']:,.0f} "
            f"(+{d_entries:,.0f}); `sluice_cache_stored_bytes` {m['stored_bytes_before']:,.0f} -> "
            f"{m['stored_bytes_after']:,.0f} (+{d_bytes:,.0f}); evictions "
            f"+{m['evictions_after'] - m['evictions_before']:,.0f}"
        )
        out.append(
            f"- sluice VmRSS {m['rss_before_kb'] / 1024:.1f} MiB before; "
            f"{m['rss_right_after_kb'] / 1024:.1f} MiB right after, {m['rss_after_kb'] / 1024:.1f} MiB "
            f"{m['settle_s']} s later (+{d_rss / 1048576:.1f} MiB); VmHWM {m['hwm_kb'] / 1024:.1f} MiB"
        )
        if d_entries > 0:
            out.append(
                f"- per entry: **{d_rss / d_entries:,.0f} B of RSS**, {d_bytes / d_entries:,.0f} B "
                f"charged to the cache's size limit (answer body {m['answer_bytes']} B + "
                f"fixed overhead); RSS / charged: {bench.fmt(bench.ratio(d_rss, d_bytes), 2)}x"
            )
        else:
            out.append("- per entry: no entries were added, so no figure")
        out.append("")
    if meta.get("notes"):
        out += ["### notes", ""] + [f"- {n}" for n in meta["notes"]] + [""]
    bench.write_report(a.md, out)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    m = sub.add_parser("metrics")
    m.add_argument("url")
    m.add_argument("spec", nargs="+", help='name or name{label="value"}')
    m.set_defaults(fn=cmd_metrics)

    r = bench.add_record_parser(sub)
    r.add_argument("--hits", type=int)
    r.set_defaults(fn=cmd_record)

    f = sub.add_parser("fill")
    f.add_argument("--url", required=True)
    f.add_argument("--body", required=True)
    f.add_argument("--authorization", required=True)
    f.add_argument("--n", type=int, required=True)
    f.add_argument("--threads", type=int, default=4)
    f.add_argument("--deadline-s", type=float, default=120.0)
    f.set_defaults(fn=cmd_fill)

    rp = sub.add_parser("report")
    rp.add_argument("--meta", required=True)
    rp.add_argument("--runs", required=True)
    rp.add_argument("--memory")
    rp.add_argument("--md", required=True)
    rp.set_defaults(fn=cmd_report)

    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
