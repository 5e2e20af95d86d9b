#!/usr/bin/env bash
# Load test a sluice deployment with oha: realistic OpenAI requests, each scenario once
# closed-loop and once at a fixed rate, optionally next to a second target loaded the same
# way (the upstream directly: the difference is what sluice adds). Prints one table per
# scenario and keeps oha's JSON of every run.
#
#   benches/load/oha.sh --target http://HOST:PORT/v1 [options]
#   benches/load/oha.sh --local [options]   a mock upstream and sluice on 127.0.0.1
#
#   --target URL         base URL as SDKs take it, version prefix included (.../v1)
#   --key KEY            sent as 'authorization: Bearer KEY' (default: $LOAD_KEY, else
#                        sk-load-test)
#   --model MODEL        model of the chat bodies (default gpt-4o-mini)
#   --embedding-model M  model of the embeddings body (default text-embedding-3-small)
#   --max-tokens N       max_tokens of the chat bodies (default 300, as in the fixture)
#   --duration D         length of every run, oha's -z (default 10s)
#   --rate N             requests per second of the fixed-rate runs (default 200)
#   --conns N            connections, oha's -c (default 32)
#   --scenario NAME      plain, stream, unique, unique-stream or embeddings; repeat for
#                        several (default: all five)
#   --mode MODE          closed, rate or both (default both)
#   --compare URL        a second base URL, loaded the same way right after the target
#   --compare-key KEY    key for --compare (default: the --key)
#   --metrics URL        sluice's /metrics, read around each run to count cache hits and
#                        misses (default: /metrics on the target's host; '' for none)
#   --out DIR            results (default benches/load/out/oha-<timestamp>/)
#   --local              start `sluice mock-upstream` and `sluice serve` (SLUICE_BIN, else
#                        target/release/sluice) on free ports: --target is that sluice,
#                        --compare the mock
#   -h, --help           this text
#
# Environment: LOAD_KEY, SLUICE_BIN, OHA (the oha binary), REQUEST_TIMEOUT (oha's -t,
# default 60s), MOCK_LATENCY_MS (--local: the mock's --latency-ms, default 0).
# What each scenario sends and how to read the tables: benches/load/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

usage() { sed -n '2,34p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

# The same logging as common.sh. common.sh itself is not sourced: it installs nginx and
# builds sluice, and a run against a deployment elsewhere needs neither.
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
bad() { echo "oha.sh: $*; try --help" >&2; exit 2; }

ALL_SCENARIOS=(plain stream unique unique-stream embeddings)
TARGET="" COMPARE="" LOCAL=0 OUT="" MODE=both
KEY=${LOAD_KEY:-sk-load-test} COMPARE_KEY=""
MODEL=gpt-4o-mini EMBEDDING_MODEL=text-embedding-3-small MAX_TOKENS=""
DURATION=10s RATE=200 CONNS=32
METRICS=auto
SCENARIOS=()
ARGV=("$@")
while (($#)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --local) LOCAL=1; shift; continue ;;
        --target | --key | --model | --embedding-model | --max-tokens | --duration | --rate | \
            --conns | --scenario | --mode | --compare | --compare-key | --metrics | --out)
            (($# >= 2)) || bad "$1 needs a value" ;;
        *) bad "unknown argument '$1'" ;;
    esac
    case "$1" in
        --target) TARGET=$2 ;;
        --key) KEY=$2 ;;
        --model) MODEL=$2 ;;
        --embedding-model) EMBEDDING_MODEL=$2 ;;
        --max-tokens) MAX_TOKENS=$2 ;;
        --duration) DURATION=$2 ;;
        --rate) RATE=$2 ;;
        --conns) CONNS=$2 ;;
        --scenario) SCENARIOS+=("$2") ;;
        --mode) MODE=$2 ;;
        --compare) COMPARE=$2 ;;
        --compare-key) COMPARE_KEY=$2 ;;
        --metrics) METRICS=$2 ;;
        --out) OUT=$2 ;;
    esac
    shift 2
done
((${#SCENARIOS[@]})) || SCENARIOS=("${ALL_SCENARIOS[@]}")
for s in "${SCENARIOS[@]}"; do
    [[ " ${ALL_SCENARIOS[*]} " == *" $s "* ]] || bad "unknown scenario '$s' (${ALL_SCENARIOS[*]})"
done
case "$MODE" in
    both) MODES=(closed rate) ;;
    closed | rate) MODES=("$MODE") ;;
    *) bad "--mode is closed, rate or both" ;;
esac
[[ $DURATION =~ ^[0-9]+[smh]?$ ]] || bad "--duration is like 10s, 2m or 1h"
[[ $RATE =~ ^[0-9]+$ && $RATE -gt 0 ]] || bad "--rate is a whole number of requests per second"
[[ $CONNS =~ ^[0-9]+$ && $CONNS -gt 0 ]] || bad "--conns is a whole number"
[[ -z $MAX_TOKENS || $MAX_TOKENS =~ ^[0-9]+$ ]] || bad "--max-tokens is a whole number"
if [[ $LOCAL == 1 ]]; then
    [[ -z $TARGET && -z $COMPARE ]] || bad "--local sets --target and --compare itself"
else
    [[ -n $TARGET ]] || bad "--target URL (or --local) is needed"
fi
COMPARE_KEY=${COMPARE_KEY:-$KEY}
REQUEST_TIMEOUT=${REQUEST_TIMEOUT:-60s}
MOCK_LATENCY_MS=${MOCK_LATENCY_MS:-0}

command -v python3 >/dev/null || die "python3 is needed to read oha's JSON"
command -v curl >/dev/null || die "curl is needed for the checks before the load"
command -v timeout >/dev/null || die "timeout (coreutils) is needed"
OHA=${OHA:-$(command -v oha || { [[ -x $HOME/.cargo/bin/oha ]] && echo "$HOME/.cargo/bin/oha"; } || true)}
[[ -n $OHA && -x $OHA ]] || die "oha not found: cargo install oha --locked (or set OHA=/path/to/oha)"
OHA_HELP=$("$OHA" --help)
grep -q -- '--output-format' <<<"$OHA_HELP" || die "this oha has no --output-format json; install a recent one: cargo install oha --locked"
grep -q -- '--rand-regex-url' <<<"$OHA_HELP" || die "this oha has no --rand-regex-url (the unique scenarios need it)"
OHA_WAIT=()
grep -q -- '--wait-ongoing-requests-after-deadline' <<<"$OHA_HELP" && OHA_WAIT=(-w)

# ---------------------------------------------------------------- workspace
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$HERE/out/oha-$STAMP}
mkdir -p "$OUT/oha" "$OUT/metrics" "$OUT/bodies"
OUT=$(cd "$OUT" && pwd)
TMP=$(mktemp -d -t sluice-oha-XXXXXX)
PIDS=() RUN_PID=""
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in $RUN_PID "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in $RUN_PID "${PIDS[@]}"; do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [[ $rc -ne 0 ]] && compgen -G "$TMP/*.log" >/dev/null; then
        mkdir -p "$OUT/logs"
        cp "$TMP"/*.log "$OUT/logs/" 2>/dev/null || true
        log "failed (exit $rc); process logs kept in $OUT/logs"
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- python helpers
# Bodies, oha's JSON and /metrics are read by python3 (standard library only), with
# bench.py's helpers.
PY=$(
    cat <<'PYEOF'
import argparse, json, os, sys
sys.dont_write_bytecode = True
sys.path.insert(0, os.environ["HERE"])
import bench


def cmd_body(a):
    """A request body: the fixture with the model (and max_tokens) set, streamed or not."""
    with open(a.src) as f:
        body = json.load(f)
    body["model"] = a.model
    if a.max_tokens:
        body["max_tokens"] = int(a.max_tokens)
    if a.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    sys.stdout.write(json.dumps(body, separators=(",", ":")))


def series(path):
    """{(name, sorted labels): value} of a saved /metrics page, {} if none."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return {}
    return {(n, tuple(sorted(l.items()))): v for n, l, v in bench.prometheus_series(text)}


def delta(before, after, name, label=None):
    """Increase of a counter over a run, summed over its series (by `label` if given)."""
    out = {}
    for (n, labels), v in after.items():
        if n != name:
            continue
        key = dict(labels).get(label, "") if label else ""
        out[key] = out.get(key, 0) + v - before.get((n, labels), 0)
    return out if label else out.get("", None)


def cmd_record(a):
    """One JSON line describing a run."""
    res = bench.load_oha(a.oha)
    ok, other, errors = bench.counts(res)
    secs = res["summary"]["total"]
    pct = res.get("latencyPercentiles", {})
    rec = {
        "scenario": a.scenario, "mode": a.mode, "target": a.target,
        "ok": ok, "non_2xx": other, "errors": errors,
        "status": res.get("statusCodeDistribution", {}),
        "error_kinds": res.get("errorDistribution", {}),
        "seconds": secs,
        # 2xx answers per second of the run (oha's own requestsPerSec counts failures too).
        "rps": ok / secs if secs else 0.0,
        "success": ok / (ok + other + errors) if ok + other + errors else 0.0,
        "load": a.load, "builds": a.builds,
    }
    for p in ("p50", "p90", "p99"):
        rec[p + "_ms"] = (pct.get(p) or 0.0) * 1000.0
    before, after = series(a.metrics_before), series(a.metrics_after)
    if before and after:
        cache = delta(before, after, "sluice_cache_requests_total", "result")
        rec["cache"] = {k: round(v) for k, v in cache.items() if round(v)}
        attempts = delta(before, after, "sluice_upstream_attempts_total")
        requests = delta(before, after, "sluice_requests_total")
        if attempts is not None:
            rec["upstream_attempts"] = round(attempts)
        if requests is not None:
            rec["sluice_requests"] = round(requests)
    print(json.dumps(rec))
    if other or errors:
        print(f"  !! {a.target} {a.scenario} {a.mode}: {other} non-2xx, {errors} errors: "
              f"{rec['status']} {rec['error_kinds']}", file=sys.stderr)


def cache_cell(r):
    """The cache outcomes sluice counted during the run, largest share first."""
    c = r.get("cache")
    if c is None:
        return "-"
    total = sum(c.values())
    if not total:
        return "none counted"
    parts = sorted(c.items(), key=lambda kv: -kv[1])
    if len(parts) == 1:
        return f"{parts[0][0]} 100%"
    return ", ".join(f"{k} {v * 100 / total:.2f}%" if v * 1000 >= total else f"{k} {v:,} req"
                     for k, v in parts)


def upstream_cell(r):
    """Upstream attempts per request sluice answered (0 = every answer from the cache)."""
    if r.get("upstream_attempts") is None or not r.get("sluice_requests"):
        return "-"
    return f"{r['upstream_attempts'] / r['sluice_requests']:.2f}"


def cmd_report(a):
    meta, runs = bench.read_report_inputs(a)
    out = bench.report_head("oha load test", meta)
    out.append(f"- targets: {meta['targets']}")
    out.append("- req/s: 2xx answers per second; success: 2xx over all requests; latency: "
               "the whole answer (streams: up to the last event); cache: the outcomes "
               "sluice's /metrics counted during the run; upstream/req: upstream attempts "
               "per request sluice answered; the difference rows: req/s as a ratio, latency "
               "in ms (read it in the fixed-rate rows: in the closed loop each target runs at "
               "its own throughput)")
    out.append("")
    names = [n for n in (meta["target_name"], meta.get("compare_name")) if n]
    titles = dict(meta["scenarios"])
    for scenario, title in meta["scenarios"]:
        rs = [r for r in runs if r["scenario"] == scenario]
        if not rs:
            continue
        out += [f"### {scenario}: {title}", "",
                "| mode | target | req/s | success | p50 ms | p90 ms | p99 ms | cache | upstream/req |",
                "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
        notes = []
        for mode, mode_title in meta["modes"]:
            by = {r["target"]: r for r in rs if r["mode"] == mode}
            first = True
            for n in names:
                r = by.get(n)
                if not r:
                    continue
                label = mode_title if first else ""
                first = False
                out.append(
                    f"| {label} | {n} | {bench.fmt(r['rps'], 0)} | {r['success'] * 100:.2f}% "
                    f"| {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} "
                    f"| {cache_cell(r)} | {upstream_cell(r)} |")
                if r["non_2xx"] or r["errors"]:
                    notes.append(f"{mode_title}, {n}: statuses {r['status']}, errors "
                                 f"{r['error_kinds'] or '{}'}")
                if mode == "rate" and r["rps"] < 0.95 * meta["rate"]:
                    notes.append(f"{mode_title}, {n}: {r['rps']:,.0f} answers/s, short of "
                                 f"{meta['rate']}: the target (or -c {meta['conns']} "
                                 "connections at this latency) could not keep up")
            if len(names) == 2 and all(n in by for n in names):
                t, c = by[names[0]], by[names[1]]
                ratio = bench.ratio(t["rps"], c["rps"])
                out.append(
                    f"|  | {names[0]} − {names[1]} | {bench.fmt(ratio, 2)}x "
                    f"| | {t['p50_ms'] - c['p50_ms']:+.2f} | {t['p90_ms'] - c['p90_ms']:+.2f} "
                    f"| {t['p99_ms'] - c['p99_ms']:+.2f} | | |")
        out.append("")
        out += [f"- {n}" for n in notes]
        if notes:
            out.append("")
    loads = [r["load"] for r in runs if r.get("load") is not None]
    busy = [f"{r['scenario']} {r['mode']} {r['target']}" for r in runs if r.get("builds")]
    extra = list(meta.get("notes", []))
    if loads:
        extra.append(f"load average (1 min) before each run: {min(loads):.2f} to {max(loads):.2f}")
    extra.append(f"cargo or rustc running on this machine during {len(busy)} of {len(runs)} runs"
                 + (": " + ", ".join(busy) if busy else ""))
    out += ["### notes", ""] + [f"- {n}" for n in extra] + [""]
    bench.write_report(a.md, out)


p = argparse.ArgumentParser()
sub = p.add_subparsers(dest="cmd", required=True)
b = sub.add_parser("body")
b.add_argument("--src", required=True)
b.add_argument("--model", required=True)
b.add_argument("--max-tokens")
b.add_argument("--stream", action="store_true")
b.set_defaults(fn=cmd_body)
r = sub.add_parser("record")
for opt in ("--oha", "--scenario", "--mode", "--target"):
    r.add_argument(opt, required=True)
r.add_argument("--metrics-before")
r.add_argument("--metrics-after")
r.add_argument("--load", type=float)
r.add_argument("--builds", type=int, default=0)
r.set_defaults(fn=cmd_record)
m = sub.add_parser("report")
for opt in ("--meta", "--runs", "--md"):
    m.add_argument(opt, required=True)
m.set_defaults(fn=cmd_report)
args = p.parse_args()
args.fn(args)
PYEOF
)
py() { HERE=$HERE python3 -c "$PY" "$@"; }

# ---------------------------------------------------------------- --local targets
wait_ready() { # name pid url: until a 200 within 15 s
    local name=$1 pid=$2 url=$3 code=""
    for _ in $(seq 1 150); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 5 "$TMP/$name.log" >&2 || true
            die "$name exited at start (log above)"
        fi
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)
        [[ $code == 200 ]] && return 0
        sleep 0.1
    done
    die "$name did not answer 200 at $url (last status $code)"
}

TARGET_NAME=target COMPARE_NAME=compare LOCAL_INFO="" SLUICE_VERSION=""
if [[ $LOCAL == 1 ]]; then
    SLUICE_BIN=${SLUICE_BIN:-$ROOT/target/release/sluice}
    [[ -x $SLUICE_BIN ]] || die "no sluice binary at $SLUICE_BIN: cargo build --release --bin sluice, or set SLUICE_BIN"
    # A private copy: a rebuild of target/ mid-run must not swap the binary.
    cp "$SLUICE_BIN" "$TMP/sluice"
    SLUICE=$TMP/sluice
    read -r P_MOCK P_SLUICE <<<"$(python3 "$HERE/bench.py" ports 2)"
    # sluice reads every SLUICE_* variable as a config key: its processes get none but
    # the one set here, and no RUST_LOG. Run from the temp dir so no config/sluice.toml
    # is read: built-in defaults, the memory cache on.
    SLUICE_ENV=(-u RUST_LOG)
    for v in $(compgen -e); do
        if [[ $v == SLUICE_* ]]; then SLUICE_ENV+=(-u "$v"); fi
    done
    (cd "$TMP" && exec env "${SLUICE_ENV[@]}" "$SLUICE" mock-upstream --listen "127.0.0.1:$P_MOCK" \
        --latency-ms "$MOCK_LATENCY_MS") >"$TMP/mock.log" 2>&1 &
    PIDS+=($!)
    PID_MOCK=$!
    (cd "$TMP" && exec env "${SLUICE_ENV[@]}" SLUICE_LOG__LEVEL=warn "$SLUICE" serve \
        --listen "127.0.0.1:$P_SLUICE" --upstream "http://127.0.0.1:$P_MOCK/v1") >"$TMP/sluice.log" 2>&1 &
    PIDS+=($!)
    PID_SLUICE=$!
    wait_ready mock "$PID_MOCK" "http://127.0.0.1:$P_MOCK/v1/models"
    wait_ready sluice "$PID_SLUICE" "http://127.0.0.1:$P_SLUICE/readyz"
    TARGET=http://127.0.0.1:$P_SLUICE/v1
    COMPARE=http://127.0.0.1:$P_MOCK/v1
    TARGET_NAME=sluice COMPARE_NAME=direct
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    LOCAL_INFO="sluice serve with built-in defaults (memory cache on), log level warn, in front of sluice mock-upstream --latency-ms $MOCK_LATENCY_MS"
    SLUICE_VERSION="$("$SLUICE" --version) (git $rev)"
    log "local: sluice :$P_SLUICE in front of the mock upstream :$P_MOCK"
fi
TARGET=${TARGET%/}
COMPARE=${COMPARE%/}

# ---------------------------------------------------------------- requests
py body --src "$HERE/fixtures/request.json" --model "$MODEL" ${MAX_TOKENS:+--max-tokens "$MAX_TOKENS"} \
    >"$OUT/bodies/chat.json"
py body --src "$HERE/fixtures/request.json" --model "$MODEL" ${MAX_TOKENS:+--max-tokens "$MAX_TOKENS"} \
    --stream >"$OUT/bodies/chat-stream.json"
py body --src "$HERE/fixtures/embeddings.json" --model "$EMBEDDING_MODEL" >"$OUT/bodies/embeddings.json"

declare -A BODY=(
    [plain]=$OUT/bodies/chat.json [unique]=$OUT/bodies/chat.json
    [stream]=$OUT/bodies/chat-stream.json [unique-stream]=$OUT/bodies/chat-stream.json
    [embeddings]=$OUT/bodies/embeddings.json
)
declare -A ENDPOINT=(
    [plain]=chat/completions [stream]=chat/completions [unique]=chat/completions
    [unique-stream]=chat/completions [embeddings]=embeddings
)
declare -A TITLE=(
    [plain]="non-streamed chat, the same body every time (cache hits after the first)"
    [stream]="streamed chat, the same body every time (cache hits after the first)"
    [unique]="non-streamed chat, a unique nonce in every request's query string (cache misses)"
    [unique-stream]="streamed chat, a unique nonce in every request's query string (cache misses)"
    [embeddings]="embeddings of 8 texts, the same body every time (cache hits after the first)"
)
declare -A MODE_TITLE=(
    [closed]="closed loop, -c $CONNS"
    [rate]="fixed $RATE req/s, -c $CONNS"
)
NONCE_PARAM=load_nonce
# oha cannot make each body unique (-Z picks bodies from a file at random, with repeats),
# but --rand-regex-url draws every request's URL from a regex: a random nonce in the
# query string, which is part of sluice's cache key, makes every request a miss. oha
# escapes the URL's dots itself; the other regex characters are escaped here.
# shellcheck disable=SC2001 # one sed bracket expression is clearer than eleven expansions
regex_url() { sed 's/[][\\^$|?*+(){}]/\\&/g' <<<"$1"; }
new_nonce() { od -An -N12 -tx1 /dev/urandom | tr -d ' \n'; }

declare -A BASE=([$TARGET_NAME]=$TARGET)
declare -A AUTH=([$TARGET_NAME]=$KEY)
NAMES=("$TARGET_NAME")
if [[ -n $COMPARE ]]; then
    BASE[$COMPARE_NAME]=$COMPARE
    AUTH[$COMPARE_NAME]=$COMPARE_KEY
    NAMES+=("$COMPARE_NAME")
fi

# /metrics of each target, when it is a sluice: the cache outcomes of every run.
declare -A METRICS_URL=()
for t in "${NAMES[@]}"; do
    url=""
    if [[ $t == "$TARGET_NAME" && $METRICS != auto ]]; then
        url=$METRICS
    elif [[ ${BASE[$t]} =~ ^(https?://[^/]+) ]]; then
        url=${BASH_REMATCH[1]}/metrics
    fi
    if [[ -n $url ]] && curl -sf --max-time 5 -o "$TMP/metrics.prom" "$url" 2>/dev/null &&
        grep -q '^sluice_' "$TMP/metrics.prom"; then
        METRICS_URL[$t]=$url
    fi
done

curl_hdrs() { # target -> curl header arguments
    printf '%s\0' -H 'content-type: application/json' -H "authorization: Bearer ${AUTH[$1]}"
}

# ---------------------------------------------------------------- checks before the load
# One request per scenario and target (two for the cache): it must answer 200, and the
# hits warm the cache so the runs measure hits from the first request on.
NOTES=()
declare -A SKIP=()
note() { NOTES+=("$1"); log "$1"; }
send() { # target scenario url -> "status cache" of one request
    local t=$1 s=$2 url=$3 hdrs=() code cache
    mapfile -d '' -t hdrs < <(curl_hdrs "$t")
    : >"$TMP/check.body"
    : >"$TMP/check.head"
    code=$(curl -sS -o "$TMP/check.body" -D "$TMP/check.head" -w '%{http_code}' --max-time 120 \
        -X POST "${hdrs[@]}" --data-binary "@${BODY[$s]}" "$url" 2>"$TMP/check.err" || true)
    [[ $code == 000 ]] && head -c 300 "$TMP/check.err" >"$TMP/check.body"
    cache=$(awk -F': *' 'tolower($1) == "x-sluice-cache" { print $2 }' "$TMP/check.head" | tr -d '\r')
    echo "$code ${cache:--}"
}
for t in "${NAMES[@]}"; do
    for s in "${SCENARIOS[@]}"; do
        url=${BASE[$t]}/${ENDPOINT[$s]}
        outcomes=()
        for _ in 1 2; do
            u=$url
            [[ $s == unique* ]] && u="$url?$NONCE_PARAM=$(new_nonce)"
            read -r code cache <<<"$(send "$t" "$s" "$u")"
            outcomes+=("$cache")
            [[ $code == 200 ]] || break
        done
        if [[ $code != 200 ]]; then
            SKIP[$t:$s]=1
            note "check: $t $s answered $code, not 200: skipped ($(head -c 300 "$TMP/check.body" | tr '\n' ' '))"
            continue
        fi
        if [[ $s == *stream ]] && ! grep -q 'data: \[DONE\]' "$TMP/check.body"; then
            note "check: $t $s answered 200 without 'data: [DONE]': not an SSE stream?"
        fi
        seen="${outcomes[*]}"
        if [[ $seen == "- -" ]]; then
            log "check: $t $s 200 (no x-sluice-cache header)"
        elif [[ $s == unique* && $seen != "miss miss" ]]; then
            note "check: $t $s: x-sluice-cache $seen for two different nonces, expected miss miss"
        elif [[ $s != unique* && ${outcomes[1]} != hit ]]; then
            note "check: $t $s: x-sluice-cache $seen for the same body twice, expected a hit the second time (is the cache off?)"
        else
            log "check: $t $s 200, x-sluice-cache: $seen"
        fi
    done
done

# ---------------------------------------------------------------- load runs
RUN_LIMIT=$(python3 -c 'import sys
def s(d):
    d = d.strip()
    for u, f in (("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)):
        if d.endswith(u):
            return float(d[:-len(u)]) * f
    return float(d)
print(int(s(sys.argv[1]) + s(sys.argv[2]) + 30))' "$DURATION" "$REQUEST_TIMEOUT")
RUNS=$OUT/runs.jsonl
: >"$RUNS"

oha_args() { # scenario mode target -> oha's arguments, the URL last, NUL-separated
    local s=$1 m=$2 t=$3 url
    local a=(--no-tui --output-format json -m POST -H 'content-type: application/json'
        -H "authorization: Bearer ${AUTH[$t]}" -D "${BODY[$s]}" -c "$CONNS" -z "$DURATION"
        -t "$REQUEST_TIMEOUT" "${OHA_WAIT[@]}")
    [[ $m == rate ]] && a+=(-q "$RATE" --latency-correction)
    url=${BASE[$t]}/${ENDPOINT[$s]}
    if [[ $s == unique* ]]; then
        a+=(--rand-regex-url "$(regex_url "$url")\\?$NONCE_PARAM=[a-z0-9]{24}")
    else
        a+=("$url")
    fi
    printf '%s\0' "${a[@]}"
}
show_cmd() { # oha's arguments as one would type them: key masked, paths relative
    local a out="oha"
    for a in "$@"; do
        [[ $a == authorization:* ]] && a="authorization: Bearer \$KEY"
        a=${a#"$OUT/"}
        [[ $a == *[\ \$\\\{\}\[\]?*]* ]] && a="'$a'"
        out+=" $a"
    done
    printf '%s' "$out"
}
metrics_snapshot() { # target file
    local url=${METRICS_URL[$1]:-}
    if [[ -z $url ]] || ! curl -sf --max-time 5 "$url" >"$2" 2>/dev/null; then
        rm -f "$2"
    fi
}

total=0
for s in "${SCENARIOS[@]}"; do
    for t in "${NAMES[@]}"; do
        [[ -n ${SKIP[$t:$s]:-} ]] || total=$((total + ${#MODES[@]}))
    done
done
((total > 0)) || die "no scenario passed the checks: nothing to load (see above)"
log "out: $OUT"
log "$total runs of $DURATION: target $TARGET${COMPARE:+, compare $COMPARE}"
n=0 flip=0
for s in "${SCENARIOS[@]}"; do
    for m in "${MODES[@]}"; do
        # Alternate which target runs first, so drift on a shared machine hits both alike.
        order=("${NAMES[@]}")
        if ((${#NAMES[@]} == 2 && flip % 2 == 1)); then order=("${NAMES[1]}" "${NAMES[0]}"); fi
        flip=$((flip + 1))
        for t in "${order[@]}"; do
            [[ -n ${SKIP[$t:$s]:-} ]] && continue
            n=$((n + 1))
            json=$OUT/oha/$s-$m-$t.json
            mapfile -d '' -t args < <(oha_args "$s" "$m" "$t")
            log "[$n/$total] $s, ${MODE_TITLE[$m]}, $t"
            load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "")
            builds=$(pgrep -c -x 'cargo|rustc' || true)
            # The same body as the run: stored now, so the run starts on a hit even if
            # the cache evicted the answer stored by the checks (the unique scenarios
            # fill it).
            [[ $s == unique* ]] || send "$t" "$s" "${BASE[$t]}/${ENDPOINT[$s]}" >/dev/null
            metrics_snapshot "$t" "$OUT/metrics/$s-$m-$t-before.prom"
            # In the background, so a signal to this script stops the run at once.
            timeout --kill-after=5 "$RUN_LIMIT" "$OHA" "${args[@]}" >"$json" 2>"$json.err" &
            RUN_PID=$!
            rc=0
            wait "$RUN_PID" || rc=$?
            RUN_PID=""
            if [[ $rc -ne 0 ]]; then
                note "oha failed (exit $rc): $s $m $t (see oha/$(basename "$json").err)"
                continue
            fi
            metrics_snapshot "$t" "$OUT/metrics/$s-$m-$t-after.prom"
            b2=$(pgrep -c -x 'cargo|rustc' || true)
            rec=(--oha "$json" --scenario "$s" --mode "$m" --target "$t"
                --metrics-before "$OUT/metrics/$s-$m-$t-before.prom"
                --metrics-after "$OUT/metrics/$s-$m-$t-after.prom" --builds $((builds + b2)))
            [[ -n $load ]] && rec+=(--load "$load")
            py record "${rec[@]}" >>"$RUNS"
            [[ -s $json.err ]] || rm -f "$json.err"
        done
    done
done

# ---------------------------------------------------------------- report
if [[ $LOCAL == 1 ]]; then
    kill -0 "$PID_SLUICE" 2>/dev/null || note "sluice exited during the runs (logs/sluice.log)"
    hwm=$(awk '$1 == "VmHWM:" { printf "%.1f MiB", $2 / 1024 }' "/proc/$PID_SLUICE/status" 2>/dev/null || true)
    [[ -n $hwm ]] && NOTES+=("sluice peak memory (VmHWM) over all runs: $hwm")
    if metrics_snapshot "$TARGET_NAME" "$TMP/end.prom" && [[ -s $TMP/end.prom ]]; then
        cache_end=$(awk '$1 == "sluice_cache_entries" { e = $2 } $1 == "sluice_cache_stored_bytes" { b = $2 }
            $1 == "sluice_cache_evictions_total" { v = $2 }
            END { printf "%d entries, %.1f MiB stored, %d evicted", e, b / 1048576, v }' "$TMP/end.prom")
        NOTES+=("sluice cache at the end: $cache_end")
    fi
    if [[ -s $TMP/sluice.log ]]; then
        mkdir -p "$OUT/logs" && cp "$TMP/sluice.log" "$OUT/logs/"
        NOTES+=("sluice logged $(wc -l <"$TMP/sluice.log") lines at warn level or above (logs/sluice.log)")
    fi
fi
for t in "${NAMES[@]}"; do
    [[ -n ${METRICS_URL[$t]:-} ]] || NOTES+=("no sluice /metrics found for $t: its cache column shows -")
done

cpu=$(lscpu 2>/dev/null | awk -F': *' '/^Model name/ { print $2; exit }')
machine="$(nproc) CPUs (${cpu:-unknown}), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, Linux $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
mapfile -d '' -t args < <(oha_args plain closed "$TARGET_NAME")
oha_closed=$(show_cmd "${args[@]}")
mapfile -d '' -t args < <(oha_args unique-stream rate "$TARGET_NAME")
oha_rate=$(show_cmd "${args[@]}")
targets="$TARGET_NAME = $TARGET"
[[ -n $COMPARE ]] && targets+=", $COMPARE_NAME = $COMPARE"
[[ -n $LOCAL_INFO ]] && targets+=" ($LOCAL_INFO)"
cmd="benches/load/oha.sh"
for a in "${ARGV[@]}"; do cmd+=" $(printf '%q' "$a")"; done
# Keys given on the command line are not written to the results.
[[ -n $KEY ]] && cmd=${cmd//"$KEY"/\$KEY}
[[ -n $COMPARE_KEY ]] && cmd=${cmd//"$COMPARE_KEY"/\$COMPARE_KEY}
printf '%s\n' "${NOTES[@]+"${NOTES[@]}"}" >"$OUT/notes.txt"
python3 "$HERE/bench.py" meta --out "$OUT/meta.json" --notes "$OUT/notes.txt" \
    "date=$(date -u '+%Y-%m-%d %H:%M UTC')" "machine=$machine" \
    "versions=$("$OHA" --version)${SLUICE_VERSION:+, $SLUICE_VERSION}" \
    "settings=$DURATION per run, -c $CONNS, fixed rate $RATE req/s with --latency-correction, oha -t $REQUEST_TIMEOUT; bodies in bodies/ (model $MODEL${MAX_TOKENS:+, max_tokens $MAX_TOKENS}; embeddings $EMBEDDING_MODEL); unique scenarios: ?$NONCE_PARAM=<24 random [a-z0-9]> on every request" \
    "command=$cmd" "oha_closed=$oha_closed" "oha_rate=$oha_rate" \
    "targets=$targets" "target_name=$TARGET_NAME" "compare_name=${COMPARE:+$COMPARE_NAME}" \
    "rate:int=$RATE" "conns:int=$CONNS" \
    "scenarios:pairs=$(for s in "${SCENARIOS[@]}"; do printf '%s\t%s\n' "$s" "${TITLE[$s]}"; done)" \
    "modes:pairs=$(for m in "${MODES[@]}"; do printf '%s\t%s\n' "$m" "${MODE_TITLE[$m]}"; done)"
echo
py report --meta "$OUT/meta.json" --runs "$RUNS" --md "$OUT/summary.md"
echo
log "oha's JSON per run and summary.md in $OUT"
