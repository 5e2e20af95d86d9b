#!/usr/bin/env bash
# Upstream-failure benchmark: `sluice mock-upstream` answering a share of requests with
# 503 (fail rates 0, 0.2 and 1.0 by default), loaded with oha straight (direct) and
# through sluice (retries with backoff and a retry budget, circuit breaker). Per fail
# rate and load mode it prints the clients' success rate, p50/p90/p99 of all answers and
# what sluice adds, and from sluice's /metrics the upstream attempts per client request
# (next to the bound the retry budget sets), retries made and denied. A fresh sluice per
# run through it, a fresh mock per fail rate. Raw results in benches/load/out/faults-<ts>/.
#
#   benches/load/faults.sh            full run (10 s per load run, 12 runs, ~2.5 min)
#   benches/load/faults.sh --quick    short trial (3 s per run, ~1 min)
#
# Environment: SLUICE_BIN (skip the build), DURATION, CONNS, RATE, RATES (fail rates),
# BUDGET, MOCK_LATENCY_MS. See README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

usage() { sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

QUICK=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "faults.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done
if [[ $QUICK == 1 ]]; then
    DURATION=${DURATION:-3s}
fi
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
RATE=${RATE:-200}
RATES=${RATES:-0 0.2 1.0}
BUDGET=${BUDGET:-0.2}
MOCK_LATENCY_MS=${MOCK_LATENCY_MS:-0}
read -r -a FAIL_RATES <<<"${RATES//,/ }"
[[ ${#FAIL_RATES[@]} -gt 0 ]] || { echo "faults.sh: RATES is empty" >&2; exit 2; }
for f in "${FAIL_RATES[@]}"; do
    [[ $f =~ ^(0(\.[0-9]+)?|1(\.0*)?)$ ]] ||
        { echo "faults.sh: fail rate '$f' is not between 0 and 1" >&2; exit 2; }
done

# sluice's [retry] and [breaker] defaults (config/sluice.toml), for the report; the
# budget's reserve is a constant of src/upstream/retry.rs (1 retry/s over a 10 s window).
MAX_RETRIES=2
RESERVE_PER_S=1
BUDGET_WINDOW_S=10

# shellcheck source=common.sh source-path=SCRIPTDIR
source "$HERE/common.sh"

setup_workspace "faults-"
mkdir -p "$OUT/metrics"

REQ=$HERE/fixtures/request.json
HDRS=(-H 'content-type: application/json' -H 'authorization: Bearer sk-bench')
WARMUP_REQUESTS=1

# ---------------------------------------------------------------- process helpers
free_port() { python3 "$HERE/bench.py" ports 1; }

wait_http() { # name pid url want [curl args...]: until the status matches want (a regex)
    local name=$1 pid=$2 url=$3 want=$4 code=""
    shift 4
    for _ in $(seq 1 150); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 5 "$TMP/$name.log" >&2 2>/dev/null || true
            die "$name exited at start (log above)"
        fi
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" || true)
        [[ $code =~ ^($want)$ ]] && return 0
        sleep 0.1
    done
    die "$name did not answer $want at $url (last status $code)"
}

stop_proc() { # pid: TERM, at most 5 s to exit, then KILL; no longer stopped on exit
    local pid=$1 p keep=()
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do
        [[ $p == "$pid" ]] || keep+=("$p")
    done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

# sluice reads every SLUICE_* variable as a config key (SLUICE_BIN would be an unknown
# key): its processes get none but those set here, and no RUST_LOG.
SLUICE_ENV=(-u RUST_LOG)
for v in $(compgen -e); do
    if [[ $v == SLUICE_* ]]; then SLUICE_ENV+=(-u "$v"); fi
done

start_mock() { # fail-rate -> PID_MOCK, P_MOCK
    P_MOCK=$(free_port)
    (cd "$TMP" && exec env "${SLUICE_ENV[@]}" "$SLUICE" mock-upstream --listen "127.0.0.1:$P_MOCK" \
        --latency-ms "$MOCK_LATENCY_MS" --control "x-mock-fail-rate: $1") >"$TMP/mock.log" 2>&1 &
    PID_MOCK=$!
    PIDS+=("$PID_MOCK")
    # Any status will do: with fail rate 1.0 every answer is a 503.
    wait_http mock "$PID_MOCK" "http://127.0.0.1:$P_MOCK/v1/models" '[1-5][0-9][0-9]'
}

start_sluice() { # log-name -> PID_SLUICE, P_SLUICE
    P_SLUICE=$(free_port)
    # Run from the temp dir so no config/sluice.toml is picked up: built-in defaults
    # ([retry], [breaker] as in config/sluice.toml), the cache off (identical requests
    # would be answered from it), the retry budget set explicitly.
    (cd "$TMP" && exec env "${SLUICE_ENV[@]}" SLUICE_LOG__LEVEL=warn SLUICE_CACHE__ENABLED=false \
        SLUICE_RETRY__BUDGET="$BUDGET" \
        "$SLUICE" serve --listen "127.0.0.1:$P_SLUICE" --upstream "http://127.0.0.1:$P_MOCK/v1") \
        >"$TMP/$1.log" 2>&1 &
    PID_SLUICE=$!
    PIDS+=("$PID_SLUICE")
    wait_http "$1" "$PID_SLUICE" "http://127.0.0.1:$P_SLUICE/readyz" 200
    # One warm-up request, which the mock answers 200 whatever its fail rate (the request's
    # own x-mock-fail-rate wins): a fresh sluice spends ~70 ms on its first request (lazy
    # start-up work such as loading the tokenizer), which would otherwise land in the
    # p99 of every run. It leaves one success in the breaker's window and one deposit
    # in the retry budget (counted in the bound); the counters are read after it.
    local code
    code=$(curl -s -o "$TMP/warmup.out" -w '%{http_code}' --max-time 10 -X POST \
        --data-binary "@$REQ" "${HDRS[@]}" -H 'x-mock-fail-rate: 0' \
        "http://127.0.0.1:$P_SLUICE/v1/chat/completions" || true)
    [[ $code == 200 ]] || die "the warm-up request through sluice answered $code (want 200): $(head -c 300 "$TMP/warmup.out")"
}

scrape() { # file: sluice's /metrics
    curl -sf --max-time 5 "http://127.0.0.1:$P_SLUICE/metrics" >"$1" || die "could not read sluice's /metrics"
}
client_requests() { # metrics-file: client requests sluice counted (every endpoint but admin)
    awk '/^sluice_requests_total[{]/ && !/endpoint="admin"/ { n += $NF } END { print n + 0 }' "$1"
}
scrape_before() { # file: /metrics once the warm-up requests are counted (at most 2 s)
    # A request is counted when its answer's body ends, which can be just after the
    # client has read it.
    for _ in $(seq 1 20); do
        scrape "$1"
        (($(client_requests "$1") >= WARMUP_REQUESTS)) && return 0
        sleep 0.1
    done
    die "sluice did not count the warm-up request (see $1)"
}

# ---------------------------------------------------------------- load runs
MODES=(closed rate)
declare -A TITLE=(
    [closed]="closed loop, -c $CONNS, $DURATION per run"
    [rate]="fixed rate $RATE req/s (latency correction), -c $CONNS, $DURATION per run"
)
RUN_TIMEOUT=$(($(secs "$DURATION") + 60))
RUNS=$OUT/runs.jsonl
: >"$RUNS"
NOTES=()

oha_args() { # mode -> oha arguments except the URL
    local a=(--no-tui "${OHA_JSON[@]}" -m POST "${HDRS[@]}" -z "$DURATION" -c "$CONNS"
        "${OHA_WAIT[@]}" -t 30s)
    [[ $1 == rate ]] && a+=(-q "$RATE" --latency-correction)
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

oha_run() { # mode url json -> 0 when oha succeeded
    local args
    eval "args=($(oha_args "$1"))"
    timeout --foreground --kill-after=5 "$RUN_TIMEOUT" "$OHA" "${args[@]}" "$2" >"$3" 2>"$3.err" || return 1
    [[ -s $3.err ]] || rm -f "$3.err"
}

log "out: $OUT"
log "fail rates: ${FAIL_RATES[*]}; modes: ${MODES[*]}; $DURATION per run, -c $CONNS, fixed rate $RATE req/s"
total=$((${#FAIL_RATES[@]} * ${#MODES[@]} * 2))
n=0
for f in "${FAIL_RATES[@]}"; do
    start_mock "$f"
    for mode in "${MODES[@]}"; do
        run="fail$f-$mode"

        n=$((n + 1))
        log "[$n/$total] mock fail rate $f, ${TITLE[$mode]}, direct"
        json=$OUT/oha/$run-direct.json
        if oha_run "$mode" "http://127.0.0.1:$P_MOCK/v1/chat/completions" "$json"; then
            python3 "$HERE/faults.py" record --oha "$json" --fail-rate "$f" --mode "$mode" \
                --target direct >>"$RUNS"
        else
            NOTES+=("oha failed: fail rate $f $mode direct (see oha/$(basename "$json").err)")
            log "WARNING: ${NOTES[-1]}"
        fi
        kill -0 "$PID_MOCK" 2>/dev/null || die "the mock (pid $PID_MOCK) died during $run direct"

        n=$((n + 1))
        log "[$n/$total] mock fail rate $f, ${TITLE[$mode]}, sluice (fresh)"
        start_sluice "sluice-$run"
        json=$OUT/oha/$run-sluice.json
        scrape_before "$OUT/metrics/$run-before.prom"
        ok=1
        oha_run "$mode" "http://127.0.0.1:$P_SLUICE/v1/chat/completions" "$json" || ok=0
        kill -0 "$PID_SLUICE" 2>/dev/null || die "sluice (pid $PID_SLUICE) died during $run; see $TMP/sluice-$run.log"
        sleep 0.3 # let the last answers' bookkeeping land before reading the counters
        scrape "$OUT/metrics/$run-after.prom"
        stop_proc "$PID_SLUICE"
        opened=$(grep -c 'breaker opened' "$TMP/sluice-$run.log" || true)
        if [[ -s $TMP/sluice-$run.log ]]; then
            # An outage can log a line per request: keep the first 200.
            lines=$(wc -l <"$TMP/sluice-$run.log")
            mkdir -p "$OUT/logs" && head -n 200 "$TMP/sluice-$run.log" >"$OUT/logs/sluice-$run.log"
            NOTES+=("fail rate $f $mode: sluice logged $lines lines at warn level or above (first 200 in logs/sluice-$run.log)")
        fi
        if [[ $ok == 1 ]]; then
            python3 "$HERE/faults.py" record --oha "$json" --fail-rate "$f" --mode "$mode" \
                --target sluice --before "$OUT/metrics/$run-before.prom" \
                --after "$OUT/metrics/$run-after.prom" --budget "$BUDGET" \
                --reserve-per-s "$RESERVE_PER_S" --window-s "$BUDGET_WINDOW_S" \
                --warmup-requests "$WARMUP_REQUESTS" --breaker-opened "$opened" >>"$RUNS"
        else
            NOTES+=("oha failed: fail rate $f $mode sluice (see oha/$(basename "$json").err)")
            log "WARNING: ${NOTES[-1]}"
        fi
    done
    stop_proc "$PID_MOCK"
done

# ---------------------------------------------------------------- report
cmd="benches/load/faults.sh${*:+ $*}"
[[ $QUICK == 1 ]] || cmd="DURATION=$DURATION CONNS=$CONNS RATE=$RATE RATES='${FAIL_RATES[*]}' $cmd"
META=$OUT/meta.json
eval "args=($(oha_args closed))"
oha_closed="oha $(show_args "${args[@]}")URL"
eval "args=($(oha_args rate))"
oha_rate="oha $(show_args "${args[@]}")URL"
write_meta "$META" "command=$cmd" "versions=$(sluice_version), $("$OHA" --version)" \
    "settings=upstream: sluice mock-upstream --latency-ms $MOCK_LATENCY_MS --control 'x-mock-fail-rate: F' (a random share F answered 503 with an OpenAI error body); sluice built-in defaults, cache off, SLUICE_RETRY__BUDGET=$BUDGET, log level warn: [retry] max_retries $MAX_RETRIES, base_delay 200ms, max_delay 10s, full jitter, budget reserve $RESERVE_PER_S retry/s over ${BUDGET_WINDOW_S}s; [breaker] failure_ratio 0.5, min_requests 5, window 10s, cooldown 30s" \
    "oha_closed=$oha_closed" "oha_rate=$oha_rate" \
    "modes:pairs=$(for k in "${MODES[@]}"; do printf '%s\t%s\n' "$k" "${TITLE[$k]}"; done)" \
    "max_retries:int=$MAX_RETRIES"
echo
python3 "$HERE/faults.py" report --meta "$META" --runs "$RUNS" --md "$OUT/summary.md"
echo
log "raw oha JSON, metrics snapshots and summary.md in $OUT"
