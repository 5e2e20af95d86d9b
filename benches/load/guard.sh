#!/usr/bin/env bash
# The instruction-count guard CI runs: instructions per request on the pass-through,
# streamed pass-through and memory-hit paths (benches/load/instructions.sh, the
# figure without clock calibration), each against benches/load/baseline.txt. Fails
# when a path costs more than 10 % over its baseline; says so when one costs more
# than 10 % less, so the baseline is lowered with the change that made it cheaper.
#
#   benches/load/guard.sh                     # builds the release binary first
#   SLUICE_BIN=target/release/sluice benches/load/guard.sh
#   N1=100 N2=600 benches/load/guard.sh       # fewer requests (default 200 and 1200)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BASELINE=$HERE/baseline.txt
if [[ -z ${SLUICE_BIN:-} ]]; then
    (cd "$ROOT" && cargo build --release)
    export SLUICE_BIN=$ROOT/target/release/sluice
fi
status=0
printf '%-8s %12s %12s %8s\n' path baseline now ratio
while read -r path base; do
    [[ -z $path || $path == \#* ]] && continue
    now=$(MODE=$path "$HERE/instructions.sh" | awk '/without clock calibration/ { print $NF }')
    ratio=$(awk -v n="$now" -v b="$base" 'BEGIN { printf "%.3f", n / b }')
    printf '%-8s %12s %12s %8s\n' "$path" "$base" "$now" "$ratio"
    if awk -v r="$ratio" 'BEGIN { exit !(r > 1.10) }'; then
        echo "  $path: more than 10 % over its baseline" >&2
        status=1
    elif awk -v r="$ratio" 'BEGIN { exit !(r < 0.90) }'; then
        echo "  $path: more than 10 % under its baseline; lower it in $BASELINE"
    fi
done <"$BASELINE"
exit $status
