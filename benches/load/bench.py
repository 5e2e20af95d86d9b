#!/usr/bin/env python3
"""Helpers for benches/load/run.sh: pick free ports, render the nginx configs,
turn one oha JSON result into a run record, check the open-streams run, and
print the per-scenario tables (median across rounds) with the ratios sluice vs
nginx and the latency added over direct.

Only the standard library: run.sh must work on a bare box with python3.
"""

import argparse
import json
import re
import socket
import statistics
import sys

TARGETS = ("direct", "sluice", "nginx")
DEADLINE = "aborted due to deadline"


def cmd_ports(a):
    """Print n distinct free 127.0.0.1 ports (all bound at once, then released)."""
    socks = []
    for _ in range(a.n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


def nginx_quote(text):
    """Escape text for an nginx single-quoted string ('\\' and quotes are escapes)."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


def cmd_render(a):
    """Fill an nginx template: @KEY@ from KEY=VALUE pairs, KEY=@file for file contents."""
    with open(a.template) as f:
        text = f.read()
    for pair in a.set:
        key, _, value = pair.partition("=")
        if value.startswith("@"):
            with open(value[1:]) as f:
                value = nginx_quote(f.read())
        text = text.replace(f"@{key}@", value)
    leftover = re.search(r"@[A-Z_]+@", text)
    if leftover:
        sys.exit(f"unfilled placeholder {leftover.group(0)} in {a.template}")
    sys.stdout.write(text)


SERIES = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def prometheus_series(text):
    """[(name, {label: value}, value)] of a Prometheus text page."""
    out = []
    for line in text.splitlines():
        m = SERIES.match(line)
        if not m or line.startswith("#"):
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out.append((m.group(1), dict(LABEL.findall(m.group(2) or "")), value))
    return out


def cmd_meta(a):
    """meta.json for the report: KEY=VALUE pairs (KEY:int=N for a number,
    KEY:pairs=TEXT for tab-separated key/title lines) and the notes file's lines."""
    meta = {}
    for item in a.set:
        key, _, value = item.partition("=")
        key, _, kind = key.partition(":")
        if kind == "int":
            value = int(value)
        elif kind == "pairs":
            value = [line.split("\t", 1) for line in value.splitlines() if line]
        meta[key] = value
    with open(a.notes) as f:
        meta["notes"] = [line for line in f.read().splitlines() if line]
    with open(a.out, "w") as f:
        json.dump(meta, f, indent=1)


def read_report_inputs(a):
    """The meta.json and the runs (one JSON object a line) a report is made of."""
    with open(a.meta) as f:
        meta = json.load(f)
    with open(a.runs) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    return meta, runs


def report_head(title, meta):
    """The report's title and the lines saying where, what and how it ran."""
    out = [f"## {title}, {meta['date']}", ""]
    for key in ("machine", "versions", "settings"):
        out.append(f"- {key}: {meta[key]}")
    out.append(f"- command: `{meta['command']}`")
    out.append(f"- oha, closed loop: `{meta['oha_closed']}`")
    out.append(f"- oha, fixed rate: `{meta['oha_rate']}`")
    return out


def write_report(path, out):
    """Saves the report as Markdown and prints it."""
    text = "\n".join(out)
    with open(path, "w") as f:
        f.write(text)
    print(text)


def load_oha(path):
    with open(path) as f:
        return json.load(f)


def counts(res):
    """(2xx responses, other statuses, transport errors) of one oha result."""
    statuses = {int(k): v for k, v in res.get("statusCodeDistribution", {}).items()}
    ok = sum(v for k, v in statuses.items() if 200 <= k < 300)
    other = sum(v for k, v in statuses.items() if not 200 <= k < 300)
    errors = sum(v for k, v in res.get("errorDistribution", {}).items() if k != DEADLINE)
    return ok, other, errors


def cmd_record(a):
    """Print one JSON line describing a load run."""
    res = load_oha(a.oha)
    ok, other, errors = counts(res)
    total_s = res["summary"]["total"]
    pct = res.get("latencyPercentiles", {})
    rec = {
        "round": a.round,
        "scenario": a.scenario,
        "target": a.target,
        "ok": ok,
        "non_2xx": other,
        "errors": errors,
        "status": res.get("statusCodeDistribution", {}),
        "error_kinds": res.get("errorDistribution", {}),
        "seconds": total_s,
        # Completed 2xx answers per second of wall time (oha's own figure also
        # counts failed requests).
        "rps": ok / total_s if total_s else 0.0,
        "p50_ms": (pct.get("p50") or 0.0) * 1000.0,
        "p99_ms": (pct.get("p99") or 0.0) * 1000.0,
        "success": ok / (ok + other + errors) if ok + other + errors else 0.0,
        "bytes_per_req": res["summary"].get("sizePerRequest"),
    }
    tck = a.clk_tck
    if a.proxy_ticks is not None and ok:
        rec["proxy_cpu_ms_per_req"] = a.proxy_ticks * 1000.0 / tck / ok
        rec["proxy_cpu_s"] = a.proxy_ticks / tck
    if a.upstream_ticks is not None and ok:
        rec["upstream_cpu_ms_per_req"] = a.upstream_ticks * 1000.0 / tck / ok
    if a.rss_kb is not None:
        rec["sluice_rss_kb"] = a.rss_kb
        rec["sluice_hwm_kb"] = a.hwm_kb
    print(json.dumps(rec))
    if other or errors:
        print(
            f"  !! {a.target} {a.scenario} round {a.round}: {other} non-2xx, {errors} errors: "
            f"{rec['status']} {rec['error_kinds']}",
            file=sys.stderr,
        )


def cmd_streams(a):
    """Check the open-streams run and print its JSON summary."""
    res = load_oha(a.oha)
    ok, other, errors = counts(res)
    with open(a.reference, "rb") as f:
        ref = f.read()
    ref_done = ref.rstrip().endswith(b"data: [DONE]")
    total_data = res["summary"]["totalData"]
    fb = res.get("firstBytePercentiles", {})
    pct = res.get("latencyPercentiles", {})
    out = {
        "streams": a.streams,
        "ok": ok,
        "non_2xx": other,
        "errors": errors,
        "error_kinds": res.get("errorDistribution", {}),
        "status": res.get("statusCodeDistribution", {}),
        "seconds": res["summary"]["total"],
        "reference_bytes": len(ref),
        "reference_ends_with_done": ref_done,
        "total_bytes": total_data,
        # Every stream has the reference's exact length only if each one was
        # relayed to its end (the mock answers identical requests identically).
        "all_complete": ok == a.streams and other == 0 and errors == 0 and ref_done
        and total_data == a.streams * len(ref),
        "connect_max_ms": ((res.get("details", {}).get("DNSDialup") or {}).get("slowest") or 0.0)
        * 1000.0,
        "listen_overflows": a.listen_overflows,
        "listen_backlog": a.listen_backlog,
        "first_byte_p50_ms": (fb.get("p50") or 0.0) * 1000.0,
        "first_byte_p99_ms": (fb.get("p99") or 0.0) * 1000.0,
        "duration_p50_s": pct.get("p50"),
        "duration_max_s": res["summary"].get("slowest"),
        "rss_before_kb": a.rss_before_kb,
        "rss_max_kb": a.rss_max_kb,
        "hwm_kb": a.hwm_kb,
        "rss_after_kb": a.rss_after_kb,
        "max_open_client_conns": a.max_conns,
    }
    print(json.dumps(out))


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=1):
    return "-" if x is None else f"{x:,.{nd}f}"


def fmt_signed(x, nd=2):
    return "-" if x is None else f"{x:+,.{nd}f}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def diff(a, b):
    return None if a is None or b is None else a - b


def table(scenario, title, runs):
    """Markdown for one scenario: a row per target, then the ratios."""
    rows = {}
    for t in TARGETS:
        rs = [r for r in runs if r["scenario"] == scenario and r["target"] == t]
        if not rs:
            continue
        rows[t] = {
            "n": len(rs),
            "rps": med(r["rps"] for r in rs),
            "p50": med(r["p50_ms"] for r in rs),
            "p99": med(r["p99_ms"] for r in rs),
            "success": min(r["success"] for r in rs),
            "cpu": med(r.get("proxy_cpu_ms_per_req") for r in rs),
            "up_cpu": med(r.get("upstream_cpu_ms_per_req") for r in rs),
        }
    if not rows:
        return "", {}
    lines = [
        f"### {title}",
        "",
        "| target | rounds | req/s | p50 ms | p99 ms | success | proxy CPU ms/req | upstream CPU ms/req |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t, r in rows.items():
        cpu = "-" if t == "direct" else fmt(r["cpu"], 3)
        lines.append(
            f"| {t} | {r['n']} | {fmt(r['rps'], 0)} | {fmt(r['p50'], 2)} | {fmt(r['p99'], 2)} "
            f"| {r['success'] * 100:.2f}% | {cpu} | {fmt(r['up_cpu'], 3)} |"
        )
    s, n, d = rows.get("sluice", {}), rows.get("nginx", {}), rows.get("direct", {})
    derived = {
        "throughput_sluice_over_nginx": ratio(s.get("rps"), n.get("rps")),
        "cpu_sluice_over_nginx": ratio(s.get("cpu"), n.get("cpu")),
        "sluice_added_p50_ms": diff(s.get("p50"), d.get("p50")),
        "sluice_added_p99_ms": diff(s.get("p99"), d.get("p99")),
        "nginx_added_p50_ms": diff(n.get("p50"), d.get("p50")),
        "nginx_added_p99_ms": diff(n.get("p99"), d.get("p99")),
    }
    # Closed-loop latencies are taken at each target's own (different) throughput;
    # only the fixed-rate runs compare latency at equal load.
    caveat = " (at unequal throughputs; see the fixed-rate tables)" if scenario.startswith("closed") else ""
    lines += [
        "",
        f"- throughput sluice / nginx: **{fmt(derived['throughput_sluice_over_nginx'], 2)}x**",
        f"- CPU per request sluice / nginx: **{fmt(derived['cpu_sluice_over_nginx'], 2)}x** "
        f"({fmt(s.get('cpu'), 3)} vs {fmt(n.get('cpu'), 3)} ms)",
        f"- added over direct, p50: sluice **{fmt_signed(derived['sluice_added_p50_ms'])} ms**, "
        f"nginx {fmt_signed(derived['nginx_added_p50_ms'])} ms{caveat}",
        f"- added over direct, p99: sluice **{fmt_signed(derived['sluice_added_p99_ms'])} ms**, "
        f"nginx {fmt_signed(derived['nginx_added_p99_ms'])} ms{caveat}",
        "",
    ]
    return "\n".join(lines), derived


def cmd_report(a):
    meta, runs = read_report_inputs(a)
    out = report_head("sluice load benchmark", meta)
    out.append(
        "- figures are medians across rounds; success is the worst round; added latency is "
        "the difference of the medians; CPU is utime+stime of every process of the proxy "
        "(nginx master + workers) over the run, divided by the answers served"
    )
    out.append("")
    for key, title in meta["scenarios"]:
        text, derived = table(key, title, runs)
        if text:
            out.append(text)
    rss = [(r.get("sluice_rss_kb"), r.get("sluice_hwm_kb")) for r in runs
           if r["target"] == "sluice" and r.get("sluice_rss_kb") is not None]
    if rss:
        out.append("### sluice memory")
        out.append("")
        out.append(f"- idle after start: VmRSS {meta.get('sluice_idle_rss_kb', 0) / 1024:.1f} MiB")
        out.append(
            f"- after the closed-loop runs: VmRSS {rss[-1][0] / 1024:.1f} MiB, "
            f"VmHWM {max(h for _, h in rss) / 1024:.1f} MiB"
        )
        out.append("")
    if a.streams:
        with open(a.streams) as f:
            st = json.load(f)
        out.append(f"### open streams: {st['streams']} concurrent streamed requests held open")
        out.append("")
        out.append(f"- upstream: {meta.get('streams_upstream', '')}")
        out.append(
            f"- completed: {st['ok']} / {st['streams']} with 200, {st['non_2xx']} other statuses, "
            f"{st['errors']} errors; every stream relayed in full (bytes = {st['streams']} x "
            f"{st['reference_bytes']}, ends with [DONE]): **{'yes' if st['all_complete'] else 'NO'}**"
        )
        out.append(
            f"- most client connections open at once: {st['max_open_client_conns']}; "
            f"run took {st['seconds']:.1f} s, slowest stream {st['duration_max_s'] or 0:.1f} s"
        )
        out.append(
            f"- time to first byte: p50 {fmt(st['first_byte_p50_ms'], 1)} ms, "
            f"p99 {fmt(st['first_byte_p99_ms'], 1)} ms; slowest TCP connect to sluice "
            f"{fmt(st['connect_max_ms'], 1)} ms"
        )
        if st.get("listen_overflows") is not None:
            out.append(
                f"- listen queue overflows during the run (kernel-wide TcpExt ListenOverflows, "
                f"sluice's and the mock's listeners): {st['listen_overflows']}; sluice's listen "
                f"backlog: {st.get('listen_backlog') if st.get('listen_backlog') is not None else '?'}"
                " (an overflowed SYN is retried by the client after 1 s)"
            )
        out.append(
            f"- sluice memory: VmRSS {st['rss_before_kb'] / 1024:.1f} MiB before, "
            f"{st['rss_max_kb'] / 1024:.1f} MiB at most while open, VmHWM (peak) "
            f"**{st['hwm_kb'] / 1024:.1f} MiB**, {st['rss_after_kb'] / 1024:.1f} MiB after"
        )
        if st["error_kinds"]:
            out.append(f"- errors: {st['error_kinds']}")
        out.append("")
    if meta.get("notes"):
        out.append("### notes")
        out.append("")
        out += [f"- {n}" for n in meta["notes"]]
        out.append("")
    write_report(a.md, out)


def add_record_parser(sub):
    """The `record` subcommand's arguments, shared with cache.py."""
    r = sub.add_parser("record")
    r.add_argument("--oha", required=True)
    r.add_argument("--round", type=int, required=True)
    r.add_argument("--scenario", required=True)
    r.add_argument("--target", required=True)
    r.add_argument("--clk-tck", type=int, required=True)
    r.add_argument("--proxy-ticks", type=int)
    r.add_argument("--upstream-ticks", type=int)
    r.add_argument("--rss-kb", type=int)
    r.add_argument("--hwm-kb", type=int)
    return r


def main():
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    pp = sub.add_parser("ports")
    pp.add_argument("n", type=int)
    pp.set_defaults(fn=cmd_ports)

    rd = sub.add_parser("render")
    rd.add_argument("template")
    rd.add_argument("set", nargs="*", help="KEY=VALUE or KEY=@FILE")
    rd.set_defaults(fn=cmd_render)

    r = add_record_parser(sub)
    r.set_defaults(fn=cmd_record)

    s = sub.add_parser("streams")
    s.add_argument("--oha", required=True)
    s.add_argument("--reference", required=True)
    s.add_argument("--streams", type=int, required=True)
    s.add_argument("--rss-before-kb", type=int, required=True)
    s.add_argument("--rss-max-kb", type=int, required=True)
    s.add_argument("--hwm-kb", type=int, required=True)
    s.add_argument("--rss-after-kb", type=int, required=True)
    s.add_argument("--max-conns", type=int, required=True)
    s.add_argument("--listen-overflows", type=int)
    s.add_argument("--listen-backlog", type=int)
    s.set_defaults(fn=cmd_streams)

    mt = sub.add_parser("meta")
    mt.add_argument("--out", required=True)
    mt.add_argument("--notes", required=True)
    mt.add_argument("set", nargs="*", help="KEY=VALUE, KEY:int=N or KEY:pairs=TEXT")
    mt.set_defaults(fn=cmd_meta)

    m = sub.add_parser("report")
    m.add_argument("--meta", required=True)
    m.add_argument("--runs", required=True)
    m.add_argument("--streams")
    m.add_argument("--md", required=True)
    m.set_defaults(fn=cmd_report)

    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
