#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: repeatable on a shared
# machine, unlike timings. Runs sluice (one worker) under valgrind in front of the
# mock upstream twice, with N1 and N2 requests (drive.py, 4 keep-alive
# connections), and prints
# (Ir(N2) - Ir(N1)) / (N2 - N1), so start-up and shutdown cancel out.
#
#   benches/load/instructions.sh              # N1=200 N2=1200, MODE=json
#   MODE=stream benches/load/instructions.sh  # streamed pass-through
#   MODE=hit benches/load/instructions.sh     # memory-cache hits (the same request again)
#   SLUICE_BIN=path/to/sluice benches/load/instructions.sh
#   LOG_LEVEL=info benches/load/instructions.sh   # with the access line (default: warn)
#   LEDGER_URL=sqlite:///tmp/l.db benches/load/instructions.sh   # with the usage ledger
#
# json and stream run with nothing switched on (cache, compression, pruning off);
# hit with the memory cache on, so every request after the first is a hit.
#
# Leaves the two callgrind files in $OUT (default: a temp dir) for callgrind_annotate.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
N1=${N1:-200}
N2=${N2:-1200}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
MODE=${MODE:-json}
case $MODE in
    json) BODY=request.json CACHE=false ;;
    stream) BODY=request-stream.json CACHE=false ;;
    hit) BODY=request.json CACHE=true ;;
    *) echo "MODE is json, stream or hit, not $MODE" >&2; exit 2 ;;
esac
command -v valgrind >/dev/null || apt-get install -y valgrind
BIN=${SLUICE_BIN:-}
if [[ -z $BIN ]]; then
    (cd "$ROOT" && cargo build --release)
    BIN=$ROOT/target/release/sluice
fi
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port)
PROXY=$(port)
"$BIN" mock-upstream --listen "127.0.0.1:$UP" >/dev/null 2>&1 &
MOCK=$!
trap 'kill $MOCK 2>/dev/null || true' EXIT

run() {
    local n=$1 file=$2
    env -i PATH="$PATH" SLUICE_LOG__LEVEL="${LOG_LEVEL:-warn}" SLUICE_CACHE__ENABLED=$CACHE \
        SLUICE_COMPRESS__LEVEL=off SLUICE_PRUNE__ENABLED=false \
        SLUICE_SERVER__WORKERS=1 SLUICE_UPSTREAMS__0__PREWARM=0 \
        SLUICE_LEDGER__URL="${LEDGER_URL:-}" \
        valgrind --tool=callgrind --callgrind-out-file="$file" \
        "$BIN" serve --listen "127.0.0.1:$PROXY" --upstream "http://127.0.0.1:$UP/v1" \
        >/dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 1 200); do
        curl -sf -o /dev/null "http://127.0.0.1:$PROXY/healthz" && break
        sleep 0.1
    done
    python3 "$ROOT/benches/load/drive.py" "http://127.0.0.1:$PROXY/v1/chat/completions" \
        "$ROOT/benches/load/fixtures/$BODY" "$n" 4
    kill -INT "$pid"
    # Graceful shutdown under valgrind is slow; do not leave it behind.
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" || true
}
run "$N1" "$OUT/callgrind.$N1"
run "$N2" "$OUT/callgrind.$N2"
total() { grep -E '^(summary|totals):' "$1" | head -1 | awk '{print $2}'; }
awk -v a="$(total "$OUT/callgrind.$N1")" -v b="$(total "$OUT/callgrind.$N2")" \
    -v n1="$N1" -v n2="$N2" -v out="$OUT" \
    'BEGIN { printf "instructions per request: %.0f (callgrind files in %s)\n", (b - a) / (n2 - n1), out }'
# Start-up work whose length follows the wall clock (quanta calibrating its
# clock against the OS's, reading that clock) does not cancel out between the
# two runs and moves the figure by a few thousand either way; this one leaves
# it out, so two builds compare to within a few hundred.
clocked() {
    callgrind_annotate --threshold=100 --inclusive=no --auto=no "$1" 2>/dev/null |
        awk '/quanta::Calibration|clock_gettime/ { gsub(",", "", $1); s += $1 } END { print s + 0 }'
}
awk -v a="$(total "$OUT/callgrind.$N1")" -v b="$(total "$OUT/callgrind.$N2")" \
    -v ca="$(clocked "$OUT/callgrind.$N1")" -v cb="$(clocked "$OUT/callgrind.$N2")" \
    -v n1="$N1" -v n2="$N2" \
    'BEGIN { printf "without clock calibration:  %.0f\n", ((b - cb) - (a - ca)) / (n2 - n1) }'
