#!/usr/bin/env bash
# Redis-hit latency: what answering from the shared Redis tier adds over answering
# from memory. Two sluice instances in front of the mock upstream and one real
# redis-server, all on 127.0.0.1: one with its memory tier on (memory hits), one with
# a memory tier too small to keep anything (every hit read from Redis). Both are loaded
# with the same repeated chat request at a fixed rate (oha -q RATE, latency correction),
# interleaved over ROUNDS, and the script prints p50/p99 of each and the difference.
#
#   benches/load/redis-hit.sh                     RATE=1000 DURATION=10s ROUNDS=2
#   SLUICE_BIN=target/release/sluice benches/load/redis-hit.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RATE=${RATE:-1000}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-2}
command -v redis-server >/dev/null || apt-get install -y redis-server
command -v oha >/dev/null || cargo install oha --locked
BIN=${SLUICE_BIN:-}
if [[ -z $BIN ]]; then
    (cd "$ROOT" && cargo build --release)
    BIN=$ROOT/target/release/sluice
fi
BIN=$(realpath "$BIN")
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TMP=$(mktemp -d)
PIDS=()
cleanup() { tail -n 3 "$TMP"/sluice-*.log 2>/dev/null >&2 || true; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

REDIS=$(port); UP=$(port); MEM=$(port); RED=$(port)
redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
PIDS+=($!)
"$BIN" mock-upstream --listen "127.0.0.1:$UP" >/dev/null 2>&1 &
PIDS+=($!)
serve() { # port, extra env...
    local p=$1; shift
    (cd "$TMP" && exec env -i PATH="$PATH" SLUICE_LOG__LEVEL=warn "$@" \
        "$BIN" serve --listen "127.0.0.1:$p" --upstream "http://127.0.0.1:$UP/v1" >"$TMP/sluice-$p.log" 2>&1) &
    PIDS+=($!)
}
serve "$MEM"
serve "$RED" SLUICE_CACHE__REDIS_URL="redis://127.0.0.1:$REDIS" SLUICE_CACHE__MEMORY_MAX_SIZE=1
BODY=$ROOT/benches/load/fixtures/request.json
for p in "$MEM" "$RED" "$UP"; do
    for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$p/v1/models" && break; sleep 0.1; done
done
# Warm both: the first request stores the answer (in Redis for the second instance).
for p in "$MEM" "$RED"; do
    curl -sf -o /dev/null -H 'content-type: application/json' -d @"$BODY" "http://127.0.0.1:$p/v1/chat/completions"
done
for _ in $(seq 1 100); do
    [[ $(redis-cli -p "$REDIS" dbsize) -ge 1 ]] && break
    sleep 0.05
done
for p in "$MEM" "$RED"; do
    tier=$(curl -s -D - -o /dev/null -H 'content-type: application/json' -d @"$BODY" \
        "http://127.0.0.1:$p/v1/chat/completions" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-sluice-cache-tier"{print $2}')
    echo "sample request on :$p answered from tier: ${tier:-none}"
done

run() { # port -> "p50 p99" in ms
    oha --no-tui --output-format json -m POST -H 'content-type: application/json' \
        -D "$BODY" -c 32 -q "$RATE" --latency-correction -z "$DURATION" -w \
        "http://127.0.0.1:$1/v1/chat/completions" |
        python3 -c 'import json,sys; d=json.load(sys.stdin); p=d["latencyPercentiles"]; s=d["summary"]; print("%.3f %.3f %.4f" % (p["p50"]*1000, p["p99"]*1000, s["successRate"]))'
}
echo "| round | memory hit p50 ms | p99 ms | redis hit p50 ms | p99 ms | added p50 | added p99 |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for round in $(seq 1 "$ROUNDS"); do
    read -r m50 m99 ms <<<"$(run "$MEM")"
    read -r r50 r99 rs <<<"$(run "$RED")"
    awk -v r="$round" -v a="$m50" -v b="$m99" -v c="$r50" -v d="$r99" -v ms="$ms" -v rs="$rs" \
        'BEGIN { printf "| %d | %s | %s | %s | %s | %+.3f | %+.3f |  (success %s / %s)\n", r, a, b, c, d, c-a, d-b, ms, rs }'
done
echo "redis hits counted by the Redis instance's sluice:"
curl -s "http://127.0.0.1:$RED/metrics" | grep -E '^sluice_cache_lookups_total\{tier="redis"' || true
