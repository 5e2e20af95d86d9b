#!/usr/bin/env bash
# Load benchmark: the same OpenAI chat requests sent with oha straight to a static
# fake upstream (nginx), through sluice, and through nginx as a plain keep-alive
# reverse proxy; then 2,000 long streams held open through sluice. Prints one table
# per scenario (median across rounds) with sluice/nginx ratios and the latency each
# proxy adds over direct, and keeps raw results in benches/load/out/<timestamp>/.
#
#   benches/load/run.sh            full run (10 s per load run, 2 rounds, ~5 min)
#   benches/load/run.sh --quick    short trial (3 s per run, 1 round)
#
# Environment: SLUICE_BIN (skip the build), DURATION, ROUNDS, CONNS, RATE, STREAMS,
# STREAM_CHUNKS, CHUNK_DELAY_MS, NGINX_WORKERS, SKIP_STREAMS=1. See README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

usage() { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

QUICK=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done
if [[ $QUICK == 1 ]]; then
    DURATION=${DURATION:-3s}
    ROUNDS=${ROUNDS:-1}
fi
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-2}
CONNS=${CONNS:-32}
RATE=${RATE:-500}
STREAMS=${STREAMS:-2000}
STREAM_CHUNKS=${STREAM_CHUNKS:-40}
CHUNK_DELAY_MS=${CHUNK_DELAY_MS:-500}
NGINX_WORKERS=${NGINX_WORKERS:-auto}
SKIP_STREAMS=${SKIP_STREAMS:-0}

# shellcheck source=common.sh
source "$HERE/common.sh"

setup_workspace ""

# Raise the open-file limit for the 2,000 open streams (children inherit it).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)

CLK_TCK=$(getconf CLK_TCK)

read -r P_UP P_SLUICE P_NGINX P_MOCK P_SLUICE2 <<<"$(python3 "$HERE/bench.py" ports 5)"

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
listen_overflows() { # kernel-wide TcpExt ListenOverflows
    awk '/^TcpExt:/ { if (!n) { for (i = 1; i <= NF; i++) if ($i == "ListenOverflows") c = i; n = 1 } else print $c }' /proc/net/netstat
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

start_nginx() { # name listen template upstream
    local name=$1 listen=$2 tmpl=$3 upstream=${4:-} dir=$TMP/$1 user=""
    mkdir -p "$dir"
    [[ $EUID -eq 0 ]] && user="user root;"
    python3 "$HERE/bench.py" render "$HERE/$tmpl" \
        "USER=$user" "WORKERS=$NGINX_WORKERS" "PREFIX=$dir" "LISTEN=$listen" \
        "UPSTREAM=$upstream" \
        "RESPONSE_JSON=@$HERE/fixtures/response.json" \
        "RESPONSE_SSE=@$HERE/fixtures/response-stream.sse" >"$dir/nginx.conf"
    "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
    eval "PID_${name//-/_}=$!"
}

# sluice reads every SLUICE_* variable as a config key (SLUICE_BIN would be an unknown
# key): its processes get none but the two set here, and no RUST_LOG.
SLUICE_ENV=(-u RUST_LOG)
for v in $(compgen -e); do
    if [[ $v == SLUICE_* ]]; then SLUICE_ENV+=(-u "$v"); fi
done

start_sluice() { # name listen upstream-base-url
    local name=$1
    # Run from the temp dir so no config/sluice.toml is picked up: built-in defaults,
    # with the cache and compression off so the pass-through path is what gets
    # measured (pruning is off by default).
    (cd "$TMP" && exec env "${SLUICE_ENV[@]}" SLUICE_LOG__LEVEL=warn SLUICE_CACHE__ENABLED=false \
        SLUICE_COMPRESS__LEVEL=off \
        "$SLUICE" serve --listen "$2" --upstream "$3") >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
    eval "PID_${name//-/_}=$!"
}

# ---------------------------------------------------------------- start the targets
log "out: $OUT"
start_nginx upstream "127.0.0.1:$P_UP" nginx-upstream.conf.tmpl
start_sluice sluice "127.0.0.1:$P_SLUICE" "http://127.0.0.1:$P_UP/v1"
start_nginx nginx "127.0.0.1:$P_NGINX" nginx-proxy.conf.tmpl "127.0.0.1:$P_UP"

declare -A URL=(
    [direct]="http://127.0.0.1:$P_UP/v1/chat/completions"
    [sluice]="http://127.0.0.1:$P_SLUICE/v1/chat/completions"
    [nginx]="http://127.0.0.1:$P_NGINX/v1/chat/completions"
)
declare -A PROXY_PID=([direct]="" [sluice]=$PID_sluice [nginx]=$PID_nginx)
REQ=$HERE/fixtures/request.json
REQ_STREAM=$HERE/fixtures/request-stream.json
HDRS=(-H 'content-type: application/json' -H 'authorization: Bearer sk-bench')

wait_ready upstream "$PID_upstream" "${URL[direct]}" -X POST --data-binary "@$REQ" "${HDRS[@]}"
wait_ready sluice "$PID_sluice" "http://127.0.0.1:$P_SLUICE/readyz"
wait_ready nginx "$PID_nginx" "${URL[nginx]}" -X POST --data-binary "@$REQ" "${HDRS[@]}"
NGINX_PROCS=$(($(pgrep -c -P "$PID_nginx") + 1))
SLUICE_IDLE_RSS=$(status_kb "$PID_sluice" VmRSS)

# Each target must answer both requests with exactly the fixture bytes.
NOTES=()
for t in direct sluice nginx; do
    for kind in plain stream; do
        if [[ $kind == plain ]]; then
            url=${URL[$t]} body=$REQ want=$HERE/fixtures/response.json
        else
            url="${URL[$t]}?stream=1" body=$REQ_STREAM want=$HERE/fixtures/response-stream.sse
        fi
        code=$(curl -s -o "$TMP/check.out" -D "$TMP/check.hdr" -w '%{http_code}' --max-time 10 \
            -X POST --data-binary "@$body" "${HDRS[@]}" "$url" || true)
        if [[ $code != 200 ]] || ! cmp -s "$TMP/check.out" "$want"; then
            NOTES+=("check: $t $kind answered $code with $(wc -c <"$TMP/check.out") bytes (want 200, $(wc -c <"$want") bytes, identical)")
            log "WARNING: ${NOTES[-1]}"
        fi
    done
done
log "targets up: upstream :$P_UP, sluice :$P_SLUICE, nginx :$P_NGINX ($NGINX_PROCS processes, worker_processes $NGINX_WORKERS)"

# ---------------------------------------------------------------- load runs
SCENARIOS=(closed_plain closed_stream rate_plain rate_stream)
declare -A TITLE=(
    [closed_plain]="closed loop, -c $CONNS, non-streamed"
    [closed_stream]="closed loop, -c $CONNS, streamed"
    [rate_plain]="fixed rate $RATE req/s, -c $CONNS, non-streamed"
    [rate_stream]="fixed rate $RATE req/s, -c $CONNS, streamed"
)
RUN_TIMEOUT=$(($(secs "$DURATION") + 60))
RUNS=$OUT/runs.jsonl
: >"$RUNS"

oha_args() { # scenario -> oha arguments except the URL
    local s=$1 a=(--no-tui "${OHA_JSON[@]}" -m POST "${HDRS[@]}" -z "$DURATION" -c "$CONNS"
        "${OHA_WAIT[@]}" -t 30s)
    [[ $s == rate_* ]] && a+=(-q "$RATE" --latency-correction)
    if [[ $s == *_stream ]]; then a+=(-D "$REQ_STREAM"); else a+=(-D "$REQ"); fi
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

TARGETS=(direct sluice nginx)
total=$((ROUNDS * ${#SCENARIOS[@]} * ${#TARGETS[@]}))
n=0
for round in $(seq 1 "$ROUNDS"); do
    # Rotate the target order each round so no target always runs first.
    shift_by=$(((round - 1) % ${#TARGETS[@]}))
    order=("${TARGETS[@]:shift_by}" "${TARGETS[@]:0:shift_by}")
    for s in "${SCENARIOS[@]}"; do
        for t in "${order[@]}"; do
            n=$((n + 1))
            url=${URL[$t]}
            [[ $s == *_stream ]] && url="$url?stream=1"
            json=$OUT/oha/r${round}-$s-$t.json
            log "[$n/$total] round $round, ${TITLE[$s]}, $t"
            ppid=${PROXY_PID[$t]}
            p0=0 u0=$(cpu_ticks "$PID_upstream")
            [[ -n $ppid ]] && p0=$(cpu_ticks "$ppid")
            eval "args=($(oha_args "$s"))"
            # shellcheck disable=SC2154
            if ! timeout --foreground --kill-after=5 "$RUN_TIMEOUT" "$OHA" "${args[@]}" "$url" >"$json" 2>"$json.err"; then
                NOTES+=("oha failed: round $round $s $t (see oha/$(basename "$json").err)")
                log "WARNING: ${NOTES[-1]}"
                continue
            fi
            u1=$(cpu_ticks "$PID_upstream")
            rec=(--oha "$json" --round "$round" --scenario "$s" --target "$t"
                --clk-tck "$CLK_TCK" --upstream-ticks $((u1 - u0)))
            if [[ -n $ppid ]]; then
                kill -0 "$ppid" 2>/dev/null || die "$t (pid $ppid) died during round $round $s; see $TMP/$t.log"
                p1=$(cpu_ticks "$ppid")
                rec+=(--proxy-ticks $((p1 - p0)))
            fi
            if [[ $t == sluice && $s == closed_* ]]; then
                rec+=(--rss-kb "$(status_kb "$ppid" VmRSS)" --hwm-kb "$(status_kb "$ppid" VmHWM)")
            fi
            python3 "$HERE/bench.py" record "${rec[@]}" >>"$RUNS"
            [[ -s $json.err ]] || rm -f "$json.err"
        done
    done
done

# ---------------------------------------------------------------- open streams
STREAMS_JSON=""
STREAMS_UPSTREAM="sluice mock-upstream --chunk-delay-ms $CHUNK_DELAY_MS --chunks $STREAM_CHUNKS"
if [[ $SKIP_STREAMS != 1 ]]; then
    log "open streams: $STREAMS streamed requests through a fresh sluice, upstream: $STREAMS_UPSTREAM"
    (cd "$TMP" && exec env "${SLUICE_ENV[@]}" "$SLUICE" mock-upstream --listen "127.0.0.1:$P_MOCK" \
        --chunk-delay-ms "$CHUNK_DELAY_MS" --chunks "$STREAM_CHUNKS") >"$TMP/mock.log" 2>&1 &
    PIDS+=($!)
    start_sluice sluice2 "127.0.0.1:$P_SLUICE2" "http://127.0.0.1:$P_MOCK/v1"
    wait_ready sluice2 "$PID_sluice2" "http://127.0.0.1:$P_SLUICE2/readyz"
    url="http://127.0.0.1:$P_SLUICE2/v1/chat/completions"
    stream_secs=$(((STREAM_CHUNKS + 2) * CHUNK_DELAY_MS / 1000 + 1))
    limit=$((stream_secs * 3 + 60))
    rss_before=$(status_kb "$PID_sluice2" VmRSS)

    # One reference stream alongside gives the exact bytes a complete stream has.
    curl -s -N --max-time "$limit" -X POST --data-binary "@$REQ_STREAM" "${HDRS[@]}" \
        -o "$TMP/reference.sse" "$url" &
    ref_pid=$!
    PIDS+=("$ref_pid")
    timeout --kill-after=5 "$limit" "$OHA" --no-tui "${OHA_JSON[@]}" -m POST "${HDRS[@]}" \
        -D "$REQ_STREAM" -c "$STREAMS" -n "$STREAMS" -t "${limit}s" --connect-timeout 30s \
        "$url" >"$OUT/oha/open-streams.json" 2>"$OUT/oha/open-streams.err" &
    oha_pid=$!
    PIDS+=("$oha_pid")
    port_hex=$(printf '%04X' "$P_SLUICE2")
    rss_max=$rss_before max_conns=0
    overflows0=$(listen_overflows)
    while kill -0 "$oha_pid" 2>/dev/null; do
        rss=$(status_kb "$PID_sluice2" VmRSS || echo 0)
        ((rss > rss_max)) && rss_max=$rss
        # Established TCP connections whose local end is sluice's listening port.
        conns=$(awk -v p=":$port_hex" '$4 == "01" && substr($2, length($2) - 4) == p' /proc/net/tcp | wc -l)
        ((conns > max_conns)) && max_conns=$conns
        sleep 0.5
    done
    oha_rc=0
    wait "$oha_pid" || oha_rc=$?
    wait "$ref_pid" || true
    hwm=$(status_kb "$PID_sluice2" VmHWM)
    overflows=$(($(listen_overflows) - overflows0))
    backlog=$(ss -Hltn "sport = :$P_SLUICE2" 2>/dev/null | awk '{ print $3; exit }' || true)
    sleep 1
    rss_after=$(status_kb "$PID_sluice2" VmRSS)
    if [[ $oha_rc -ne 0 ]]; then
        NOTES+=("open streams: oha exited $oha_rc (see oha/open-streams.err)")
        log "WARNING: ${NOTES[-1]}"
    else
        STREAMS_JSON=$OUT/open-streams.json
        python3 "$HERE/bench.py" streams --oha "$OUT/oha/open-streams.json" \
            --reference "$TMP/reference.sse" --streams "$STREAMS" \
            --rss-before-kb "$rss_before" --rss-max-kb "$rss_max" --hwm-kb "$hwm" \
            --rss-after-kb "$rss_after" --max-conns "$max_conns" \
            --listen-overflows "$overflows" ${backlog:+--listen-backlog "$backlog"} >"$STREAMS_JSON"
        cp "$TMP/reference.sse" "$OUT/open-streams-reference.sse"
        [[ -s $OUT/oha/open-streams.err ]] || rm -f "$OUT/oha/open-streams.err"
    fi
fi

# ---------------------------------------------------------------- report
for name in sluice sluice2; do
    if [[ -s $TMP/$name.log ]]; then
        NOTES+=("$name logged $(wc -l <"$TMP/$name.log") lines at warn level or above (copied to logs/$name.log)")
        mkdir -p "$OUT/logs" && cp "$TMP/$name.log" "$OUT/logs/"
    fi
done
for name in upstream nginx; do
    if grep -q -v '\[notice\]' "$TMP/$name/error.log" 2>/dev/null; then
        NOTES+=("nginx $name error.log has warnings (copied to logs/$name-error.log)")
        mkdir -p "$OUT/logs" && cp "$TMP/$name/error.log" "$OUT/logs/$name-error.log"
    fi
done

cmd="benches/load/run.sh $*"
[[ $QUICK == 1 ]] || cmd="DURATION=$DURATION ROUNDS=$ROUNDS $cmd"
META=$OUT/meta.json
eval "args=($(oha_args closed_plain))"
oha_closed="oha $(show_args "${args[@]}")URL"
eval "args=($(oha_args rate_stream))"
oha_rate="oha $(show_args "${args[@]}")URL?stream=1"
write_meta "$META" "command=$cmd" \
    "versions=$(sluice_version), $(nginx_version), $("$OHA" --version)" \
    "settings=$DURATION per run, $ROUNDS round(s), targets interleaved; nginx worker_processes $NGINX_WORKERS ($NGINX_PROCS processes incl. master), keepalive 64 to the upstream; sluice built-in defaults with the cache and compression off, log level warn; open files limit $NOFILE" \
    "oha_closed=$oha_closed" "oha_rate=$oha_rate" \
    "scenarios:pairs=$(for k in "${SCENARIOS[@]}"; do printf '%s\t%s\n' "$k" "${TITLE[$k]}"; done)" \
    "sluice_idle_rss_kb:int=$SLUICE_IDLE_RSS" \
    "streams_upstream=$STREAMS_UPSTREAM (each stream ~$(((STREAM_CHUNKS + 2) * CHUNK_DELAY_MS / 1000)) s)"
report=(--meta "$META" --runs "$RUNS" --md "$OUT/summary.md")
[[ -n $STREAMS_JSON ]] && report+=(--streams "$STREAMS_JSON")
echo
python3 "$HERE/bench.py" report "${report[@]}"
echo
log "raw oha JSON and summary.md in $OUT"
