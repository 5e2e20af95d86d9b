#!/usr/bin/env bash
# What client keys, rate limits and sessions add to a request: `sluice mock-upstream`
# loaded with oha at a fixed rate through three sluice configurations, in alternating
# rounds: `off` (no [auth], no [rate_limit], the session header not read), `limits`
# (client keys, requests and tokens per minute in this process), `local` (the same,
# every request in one session) and `redis` (the same limits shared through a
# redis-server started here, one session).
# Limits are set high enough never to refuse: what is measured is their bookkeeping.
# Prints p50/p90/p99 per configuration and the difference to `off` (median of the
# rounds). The cache is off. Raw results in benches/load/out/limits-<ts>/.
#
#   benches/load/limits.sh            full run (3 rounds of 10 s per configuration, ~2 min)
#   benches/load/limits.sh --quick    short trial (1 round of 3 s)
#
# Environment: SLUICE_BIN (skip the build), DURATION, ROUNDS, RATE (default 1000),
# CONNS, CONFIGS (default "off limits local redis").
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

QUICK=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "limits.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done
if [[ $QUICK == 1 ]]; then
    DURATION=${DURATION:-3s}
    ROUNDS=${ROUNDS:-1}
fi
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-1000}
CONNS=${CONNS:-16}
command -v redis-server >/dev/null || { echo "limits.sh: redis-server is needed (apt-get install redis-server)" >&2; exit 2; }

# shellcheck source=common.sh source-path=SCRIPTDIR
source "$HERE/common.sh"

setup_workspace "limits-"

REQ=$HERE/fixtures/request.json
KEY=ck-bench-0123456789abcdef
HDRS=(-H 'content-type: application/json' -H "authorization: Bearer $KEY" -H 'x-session-id: bench-session')

free_port() { python3 "$HERE/bench.py" ports 1; }
wait_http() { # name pid url
    local code=""
    for _ in $(seq 1 150); do
        kill -0 "$2" 2>/dev/null || die "$1 exited at start (see $TMP/$1.log)"
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H "authorization: Bearer $KEY" "$3" || true)
        [[ $code == 200 ]] && return 0
        sleep 0.1
    done
    die "$1 did not answer 200 at $3 (last status $code)"
}
SLUICE_ENV=(-u RUST_LOG)
for v in $(compgen -e); do
    if [[ $v == SLUICE_* ]]; then SLUICE_ENV+=(-u "$v"); fi
done

P_REDIS=$(free_port)
redis-server --port "$P_REDIS" --bind 127.0.0.1 --save '' --appendonly no >"$TMP/redis.log" 2>&1 &
PIDS+=("$!")
P_MOCK=$(free_port)
(cd "$TMP" && exec env "${SLUICE_ENV[@]}" "$SLUICE" mock-upstream --listen "127.0.0.1:$P_MOCK") >"$TMP/mock.log" 2>&1 &
PIDS+=("$!")
wait_http mock "${PIDS[-1]}" "http://127.0.0.1:$P_MOCK/v1/models"

read -r -a CONFIGS <<<"${CONFIGS:-off limits local redis}"
declare -A PORT
for c in "${CONFIGS[@]}"; do
    PORT[$c]=$(free_port)
    # `off`: the session layer reads another header, so the one sent is not a session.
    extra=(SLUICE_SESSIONS__HEADER=x-no-session)
    case $c in
        limits | local | redis)
            extra=(CLIENT_KEYS="bench:$KEY" SLUICE_AUTH__CLIENT_KEYS_ENV=CLIENT_KEYS
                SLUICE_RATE_LIMIT__REQUESTS_PER_MINUTE=100000000
                SLUICE_RATE_LIMIT__TOKENS_PER_MINUTE=100000000000)
            ;;
    esac
    # `local` and `redis` read the session header (one session for all requests).
    [[ $c == local || $c == redis ]] && extra+=(SLUICE_SESSIONS__HEADER=x-session-id)
    [[ $c == redis ]] && extra+=(SLUICE_RATE_LIMIT__REDIS_URL="redis://127.0.0.1:$P_REDIS")
    (cd "$TMP" && exec env "${SLUICE_ENV[@]}" SLUICE_LOG__LEVEL=warn SLUICE_CACHE__ENABLED=false \
        "${extra[@]+"${extra[@]}"}" "$SLUICE" serve --listen "127.0.0.1:${PORT[$c]}" \
        --upstream "http://127.0.0.1:$P_MOCK/v1") >"$TMP/sluice-$c.log" 2>&1 &
    PIDS+=("$!")
    wait_http "sluice-$c" "${PIDS[-1]}" "http://127.0.0.1:${PORT[$c]}/readyz"
    # Warm up: the first request pays one-time work, and Redis connects in the background.
    for _ in 1 2 3 4 5; do
        curl -s -o /dev/null --max-time 5 -X POST --data-binary "@$REQ" "${HDRS[@]}" \
            "http://127.0.0.1:${PORT[$c]}/v1/chat/completions" || true
        sleep 0.2
    done
done

RUN_TIMEOUT=$(($(secs "$DURATION") + 60))
OHA_ARGS=(--no-tui "${OHA_JSON[@]}" -m POST "${HDRS[@]}" -z "$DURATION" -c "$CONNS"
    "${OHA_WAIT[@]}" -t 30s -q "$RATE" --latency-correction -D "$REQ")
RUNS=$OUT/runs.jsonl
: >"$RUNS"
NOTES=()
log "out: $OUT; $ROUNDS rounds of ${CONFIGS[*]} at $RATE req/s for $DURATION each"
for round in $(seq 1 "$ROUNDS"); do
    for c in "${CONFIGS[@]}"; do
        log "round $round: $c"
        json=$OUT/oha/$round-$c.json
        if timeout --foreground --kill-after=5 "$RUN_TIMEOUT" "$OHA" "${OHA_ARGS[@]}" \
            "http://127.0.0.1:${PORT[$c]}/v1/chat/completions" >"$json" 2>"$json.err"; then
            python3 - "$json" "$round" "$c" >>"$RUNS" <<'EOF'
import json, sys
path, rnd, config = sys.argv[1:4]
res = json.load(open(path))
pct = res.get("latencyPercentiles", {})
statuses = res.get("statusCodeDistribution", {})
print(json.dumps({"round": int(rnd), "config": config,
                  "p50": pct.get("p50"), "p90": pct.get("p90"), "p99": pct.get("p99"),
                  "rps": res.get("summary", {}).get("requestsPerSec"),
                  "statuses": statuses}))
EOF
        else
            NOTES+=("oha failed: round $round $c (see oha/$(basename "$json").err)")
            log "WARNING: ${NOTES[-1]}"
        fi
    done
done
FALLBACKS=$(curl -s "http://127.0.0.1:${PORT[redis]}/metrics" |
    awk '/^sluice_rate_limit_redis_fallbacks_total/ { n += $NF } END { print n + 0 }')
NOTES+=("redis configuration: $FALLBACKS requests fell back to the local limiter")

cmd="benches/load/limits.sh${*:+ $*}"
write_meta "$OUT/meta.json" "command=$cmd" "versions=$(sluice_version), $("$OHA" --version), $(redis-server --version | cut -d' ' -f1-3)" \
    "oha=oha $(printf '%s ' "${OHA_ARGS[@]}" | sed "s#$ROOT/##g")URL"
python3 - "$RUNS" "$OUT/meta.json" "$OUT/summary.md" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
meta = json.load(open(sys.argv[2]))
out = [f"# Traffic-control layers at a fixed rate ({meta.get('date')})", "",
       f"- command: `{meta.get('command')}`", f"- machine: {meta.get('machine')}",
       f"- versions: {meta.get('versions')}", f"- load: `{meta.get('oha')}`",
       "- configurations: `off` = no client keys, no limits, session header not read; `limits` = "
       "client keys + requests and tokens per minute in process; `local` = the same, every request "
       "in one session (`x-session-id`); `redis` = the same limits shared through Redis, one session", ""]
out += [f"- note: {n}" for n in meta.get("notes", []) if n]
out += ["", "| config | rounds | p50 ms | p90 ms | p99 ms | p50 vs off | p99 vs off | non-2xx |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |"]
med = {}
for c in ["off", "limits", "local", "redis"]:
    rs = [r for r in runs if r["config"] == c and r["p50"] is not None]
    if not rs:
        continue
    med[c] = {k: statistics.median(r[k] for r in rs) * 1000 for k in ["p50", "p90", "p99"]}
    bad = sum(v for r in rs for s, v in r["statuses"].items() if not s.startswith("2"))
    d50 = d99 = ""
    if "off" in med and c != "off":
        d50 = f"{(med[c]['p50'] - med['off']['p50']) * 1000:+.0f} µs"
        d99 = f"{(med[c]['p99'] - med['off']['p99']) * 1000:+.0f} µs"
    m = med[c]
    out.append(f"| {c} | {len(rs)} | {m['p50']:.3f} | {m['p90']:.3f} | {m['p99']:.3f} | {d50} | {d99} | {bad} |")
text = "\n".join(out) + "\n"
open(sys.argv[3], "w").write(text)
print(text)
EOF
log "raw oha JSON and summary.md in $OUT"
