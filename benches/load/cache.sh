#!/usr/bin/env bash
# Cache-hit benchmark: sluice with its memory cache on answers the same chat request
# from the cache (every request a hit), next to nginx answering the same bytes with a
# static `return 200` (the reference: as fast as a stored answer can be served).
# Closed loop and fixed rate, interleaved; then memory per cached entry after storing
# N distinct answers. Prints the tables with the targets next to them and keeps raw
# results in benches/load/out/cache-<timestamp>/.
#
#   benches/load/cache.sh            full run (10 s per load run, 2 rounds, 20,000 entries)
#   benches/load/cache.sh --quick    short trial (3 s per run, 1 round, 5,000 entries)
#
# Environment: SLUICE_BIN (skip the build), DURATION, ROUNDS, CONNS, RATE, ENTRIES,
# FILL_THREADS, FILL_LIMIT_S, FILL_SETTLE_S, NGINX_WORKERS. See README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

QUICK=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "cache.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done
if [[ $QUICK == 1 ]]; then
    DURATION=${DURATION:-3s}
    ROUNDS=${ROUNDS:-1}
    ENTRIES=${ENTRIES:-5000}
fi
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-2}
CONNS=${CONNS:-32}
RATE=${RATE:-1000}
ENTRIES=${ENTRIES:-20000}
FILL_THREADS=${FILL_THREADS:-4}
FILL_LIMIT_S=${FILL_LIMIT_S:-120}
FILL_SETTLE_S=${FILL_SETTLE_S:-12}
NGINX_WORKERS=${NGINX_WORKERS:-auto}

# shellcheck source=common.sh
source "$HERE/common.sh"

setup_workspace "cache-"

CLK_TCK=$(getconf CLK_TCK)
read -r P_UP P_SLUICE P_STATIC <<<"$(python3 "$HERE/bench.py" ports 3)"

# ---------------------------------------------------------------- process helpers
# utime+stime (clock ticks) of a process and its direct children (nginx workers).
cpu_ticks() {
    local root=$1 total=0 f s pid ppid
    for f in /proc/[0-9]*/stat; do
        read -r s 2>/dev/null <"$f" || continue
        pid=${s%% *}
        s=${s##*) }
        # shellcheck disable=SC2086
        set -- $s
        ppid=$2
        if [[ $pid == "$root" || $ppid == "$root" ]]; then
            total=$((total + ${12} + ${13}))
        fi
    done
    echo "$total"
}
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

wait_ready() { # name pid url [curl args...]: until a 200 within 15 s
    local name=$1 pid=$2 url=$3 code=""
    shift 3
    for _ in $(seq 1 150); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 5 "$TMP/$name.log" "$TMP/$name/error.log" 2>/dev/null >&2 || true
            die "$name exited at start (logs above)"
        fi
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" || true)
        [[ $code == 200 ]] && return 0
        sleep 0.1
    done
    die "$name did not answer 200 at $url (last status $code)"
}

start_nginx() { # name listen: the static upstream template (fixture answers)
    local name=$1 listen=$2 dir=$TMP/$1 user=""
    mkdir -p "$dir"
    [[ $EUID -eq 0 ]] && user="user root;"
    python3 "$HERE/bench.py" render "$HERE/nginx-upstream.conf.tmpl" \
        "USER=$user" "WORKERS=$NGINX_WORKERS" "PREFIX=$dir" "LISTEN=$listen" \
        "RESPONSE_JSON=@$HERE/fixtures/response.json" \
        "RESPONSE_SSE=@$HERE/fixtures/response-stream.sse" >"$dir/nginx.conf"
    "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
    eval "PID_${name//-/_}=$!"
}

# sluice reads every SLUICE_* variable as a config key: its process gets none but the
# log level, and no RUST_LOG. Run from the temp dir so no config/sluice.toml is read:
# built-in defaults, which have the memory cache on.
SLUICE_ENV=(-u RUST_LOG)
for v in $(compgen -e); do
    if [[ $v == SLUICE_* ]]; then SLUICE_ENV+=(-u "$v"); fi
done

# ---------------------------------------------------------------- start the targets
log "out: $OUT"
start_nginx upstream "127.0.0.1:$P_UP"
start_nginx static "127.0.0.1:$P_STATIC"
(cd "$TMP" && exec env "${SLUICE_ENV[@]}" SLUICE_LOG__LEVEL=warn \
    "$SLUICE" serve --listen "127.0.0.1:$P_SLUICE" --upstream "http://127.0.0.1:$P_UP/v1") \
    >"$TMP/sluice.log" 2>&1 &
PIDS+=($!)
PID_sluice=$!

declare -A URL=(
    [sluice]="http://127.0.0.1:$P_SLUICE/v1/chat/completions"
    [nginx]="http://127.0.0.1:$P_STATIC/v1/chat/completions"
)
declare -A PID_OF=([sluice]=$PID_sluice [nginx]=$PID_static)
METRICS="http://127.0.0.1:$P_SLUICE/metrics"
HIT_SERIES='sluice_cache_requests_total{result="hit"}'
REQ=$HERE/fixtures/request.json
AUTH='Bearer sk-bench'
HDRS=(-H 'content-type: application/json' -H "authorization: $AUTH")

wait_ready upstream "$PID_upstream" "http://127.0.0.1:$P_UP/v1/chat/completions" \
    -X POST --data-binary "@$REQ" "${HDRS[@]}"
wait_ready static "$PID_static" "${URL[nginx]}" -X POST --data-binary "@$REQ" "${HDRS[@]}"
wait_ready sluice "$PID_sluice" "http://127.0.0.1:$P_SLUICE/readyz"
SLUICE_IDLE_RSS=$(status_kb "$PID_sluice" VmRSS)

metric() { # spec -> value from sluice's /metrics
    python3 "$HERE/cache.py" metrics "$METRICS" "$1" |
        python3 -c 'import json, sys; print(int(next(iter(json.load(sys.stdin).values()))))'
}

# Warm the cache with one request, then check that the same request is a hit with
# exactly the fixture's bytes, and that nginx answers the same bytes.
NOTES=()
check() { # target expected-x-sluice-cache
    local t=$1 want=$2 code got
    code=$(curl -s -o "$TMP/check.out" -D "$TMP/check.hdr" -w '%{http_code}' --max-time 10 \
        -X POST --data-binary "@$REQ" "${HDRS[@]}" "${URL[$t]}" || true)
    got=$(awk 'tolower($1) == "x-sluice-cache:" { sub(/\r$/, "", $2); print $2 }' "$TMP/check.hdr")
    [[ $code == 200 ]] || die "$t answered $code (want 200)"
    cmp -s "$TMP/check.out" "$HERE/fixtures/response.json" ||
        die "$t answered $(wc -c <"$TMP/check.out") bytes, not the fixture's $(wc -c <"$HERE/fixtures/response.json")"
    if [[ -n $want && $got != "$want" ]]; then
        die "$t: x-sluice-cache '$got', want '$want' (headers: $(tr -d '\r' <"$TMP/check.hdr" | paste -sd ' '))"
    fi
    cp "$TMP/check.hdr" "$OUT/headers-$t-${want:-static}.txt"
}
check sluice miss
check sluice hit
check nginx ""
log "targets up: upstream :$P_UP, sluice :$P_SLUICE (cache warm: miss then hit), nginx static :$P_STATIC"

# ---------------------------------------------------------------- load runs
SCENARIOS=(closed rate)
declare -A TITLE=(
    [closed]="closed loop, -c $CONNS, the same request every time"
    [rate]="fixed rate $RATE req/s, -c $CONNS, the same request every time"
)
RUN_TIMEOUT=$(($(secs "$DURATION") + 60))
RUNS=$OUT/runs.jsonl
: >"$RUNS"

oha_args() { # scenario -> oha arguments except the URL
    local s=$1 a=(--no-tui "${OHA_JSON[@]}" -m POST "${HDRS[@]}" -z "$DURATION" -c "$CONNS"
        "${OHA_WAIT[@]}" -t 30s)
    [[ $s == rate ]] && a+=(-q "$RATE" --latency-correction)
    a+=(-D "$REQ")
    printf '%q ' "${a[@]}"
}
show_args() { # oha arguments as one would type them, fixture paths relative to the repo
    local a out=""
    for a in "$@"; do
        a=${a#"$ROOT/"}
        [[ $a == *[\ \$]* ]] && a="'$a'"
        out+="$a "
    done
    printf '%s' "$out"
}

TARGETS=(sluice nginx)
total=$((ROUNDS * ${#SCENARIOS[@]} * ${#TARGETS[@]}))
n=0
for round in $(seq 1 "$ROUNDS"); do
    shift_by=$(((round - 1) % ${#TARGETS[@]}))
    order=("${TARGETS[@]:shift_by}" "${TARGETS[@]:0:shift_by}")
    for s in "${SCENARIOS[@]}"; do
        for t in "${order[@]}"; do
            n=$((n + 1))
            json=$OUT/oha/r${round}-$s-$t.json
            log "[$n/$total] round $round, ${TITLE[$s]}, $t"
            pid=${PID_OF[$t]}
            hits0=$(metric "$HIT_SERIES")
            p0=$(cpu_ticks "$pid") u0=$(cpu_ticks "$PID_upstream")
            eval "args=($(oha_args "$s"))"
            # shellcheck disable=SC2154
            if ! timeout --foreground --kill-after=5 "$RUN_TIMEOUT" "$OHA" "${args[@]}" "${URL[$t]}" >"$json" 2>"$json.err"; then
                NOTES+=("oha failed: round $round $s $t (see oha/$(basename "$json").err)")
                log "WARNING: ${NOTES[-1]}"
                continue
            fi
            p1=$(cpu_ticks "$pid") u1=$(cpu_ticks "$PID_upstream")
            kill -0 "$pid" 2>/dev/null || die "$t (pid $pid) died during round $round $s"
            rec=(--oha "$json" --round "$round" --scenario "$s" --target "$t"
                --clk-tck "$CLK_TCK" --proxy-ticks $((p1 - p0)) --upstream-ticks $((u1 - u0)))
            if [[ $t == sluice ]]; then
                rec+=(--hits $(($(metric "$HIT_SERIES") - hits0))
                    --rss-kb "$(status_kb "$pid" VmRSS)" --hwm-kb "$(status_kb "$pid" VmHWM)")
            fi
            python3 "$HERE/cache.py" record "${rec[@]}" >>"$RUNS"
            [[ -s $json.err ]] || rm -f "$json.err"
        done
    done
done

# ---------------------------------------------------------------- memory per entry
log "memory: storing $ENTRIES distinct answers ($FILL_THREADS keep-alive connections, at most ${FILL_LIMIT_S}s)"
MEM_SPECS=(sluice_cache_entries sluice_cache_stored_bytes sluice_cache_evictions_total)
python3 "$HERE/cache.py" metrics "$METRICS" "${MEM_SPECS[@]}" >"$TMP/mem-before.json"
rss_before=$(status_kb "$PID_sluice" VmRSS)
timeout --kill-after=5 $((FILL_LIMIT_S + 30)) python3 "$HERE/cache.py" fill \
    --url "${URL[sluice]}" --body "$REQ" --authorization "$AUTH" --n "$ENTRIES" \
    --threads "$FILL_THREADS" --deadline-s "$FILL_LIMIT_S" >"$TMP/fill.json" ||
    die "the fill loop failed"
sleep 1 # let in-flight bookkeeping settle before reading
python3 "$HERE/cache.py" metrics "$METRICS" "${MEM_SPECS[@]}" >"$TMP/mem-after.json"
rss_now=$(status_kb "$PID_sluice" VmRSS)
# The allocator (jemalloc) returns freed pages to the OS only after a decay time
# (10 s by default): wait so that RSS counts what the entries hold, not garbage.
log "memory: waiting ${FILL_SETTLE_S}s for freed pages to be returned"
sleep "$FILL_SETTLE_S"
rss_after=$(status_kb "$PID_sluice" VmRSS)
hwm=$(status_kb "$PID_sluice" VmHWM)
MEMORY=$OUT/memory.json
python3 - "$TMP/mem-before.json" "$TMP/mem-after.json" "$TMP/fill.json" "$rss_before" \
    "$rss_now" "$rss_after" "$hwm" "$FILL_THREADS" "$(wc -c <"$HERE/fixtures/response.json")" "$FILL_SETTLE_S" >"$MEMORY" <<'EOF_PY'
import json, sys
before, after, fill = (json.load(open(p)) for p in sys.argv[1:4])
rss_before, rss_now, rss_after, hwm, threads, answer = map(int, sys.argv[4:10])
print(json.dumps({
    "fill": fill,
    "threads": threads,
    "answer_bytes": answer,
    "entries_before": before["sluice_cache_entries"],
    "entries_after": after["sluice_cache_entries"],
    "stored_bytes_before": before["sluice_cache_stored_bytes"],
    "stored_bytes_after": after["sluice_cache_stored_bytes"],
    "evictions_before": before["sluice_cache_evictions_total"],
    "evictions_after": after["sluice_cache_evictions_total"],
    "rss_before_kb": rss_before,
    "rss_right_after_kb": rss_now,
    "rss_after_kb": rss_after,
    "settle_s": int(sys.argv[10]),
    "hwm_kb": hwm,
}))
EOF_PY

# ---------------------------------------------------------------- report
if [[ -s $TMP/sluice.log ]]; then
    NOTES+=("sluice logged $(wc -l <"$TMP/sluice.log") lines at warn level or above (copied to logs/sluice.log)")
    mkdir -p "$OUT/logs" && cp "$TMP/sluice.log" "$OUT/logs/"
fi
for name in upstream static; do
    if grep -q -v '\[notice\]' "$TMP/$name/error.log" 2>/dev/null; then
        NOTES+=("nginx $name error.log has warnings (copied to logs/$name-error.log)")
        mkdir -p "$OUT/logs" && cp "$TMP/$name/error.log" "$OUT/logs/$name-error.log"
    fi
done

cmd="benches/load/cache.sh $*"
[[ $QUICK == 1 ]] || cmd="DURATION=$DURATION ROUNDS=$ROUNDS ENTRIES=$ENTRIES $cmd"
META=$OUT/meta.json
eval "args=($(oha_args closed))"
oha_closed="oha $(show_args "${args[@]}")URL"
eval "args=($(oha_args rate))"
oha_rate="oha $(show_args "${args[@]}")URL"
write_meta "$META" "command=$cmd" \
    "versions=$(sluice_version), $(nginx_version), $("$OHA" --version)" \
    "settings=$DURATION per run, $ROUNDS round(s), targets interleaved; sluice built-in defaults (memory cache on, scope key), log level warn, idle VmRSS $((SLUICE_IDLE_RSS / 1024)) MiB; nginx worker_processes $NGINX_WORKERS, static answer = fixtures/response.json ($(wc -c <"$HERE/fixtures/response.json") B)" \
    "oha_closed=$oha_closed" "oha_rate=$oha_rate" \
    "scenarios:pairs=$(for k in "${SCENARIOS[@]}"; do printf '%s\t%s\n' "$k" "${TITLE[$k]}"; done)" \
    "sluice_idle_rss_kb:int=$SLUICE_IDLE_RSS"
echo
python3 "$HERE/cache.py" report --meta "$META" --runs "$RUNS" --memory "$MEMORY" --md "$OUT/summary.md"
echo
log "raw oha JSON and summary.md in $OUT"
