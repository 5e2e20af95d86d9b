#!/usr/bin/env bash
# Captures the "command output" sources of the evaluation corpus into
# benches/corpus/captured/, so that generate.py is reproducible from committed inputs.
# Run it only to refresh those inputs; generate.py never runs commands itself.
#
#   benches/corpus/capture.sh            # needs target/debug/sluice (or CORPUS_SLUICE_BIN), curl
#
# What it captures (every file is real output of a real program on this machine):
#   sluice-serve.log        RUST_LOG=debug log of `sluice serve` in front of
#                           `sluice mock-upstream`, while ~200 requests (some bad) go through
#   sluice-requests.txt     the `curl -i` exchanges of a handful of those requests
#   sluice-metrics.txt      GET /metrics at the end of that run
#   sluice-check-config.txt `sluice check-config` on the run's config
#   cargo-tree.txt          cargo tree --offline of the repository
#   git-log-stat.txt        git log --stat of the pinned corpus revision
#   pip-list.txt            pip list -v
#   dpkg.log, apt-history.log, redis-server.log
#                           heads of those files under /var/log (when readable)
#   cargo-test.txt          cargo test output of the pinned revision (only when
#                           CORPUS_TEST_DIR names a checkout of it with its tests built)
set -euo pipefail

# sluice reads every SLUICE_* variable as configuration; none may leak into the runs.
for v in $(compgen -e | grep '^SLUICE_' || true); do unset "$v"; done

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT="$HERE/captured"
REV=${CORPUS_REV:-b584f37}
mkdir -p "$OUT"

SLUICE_BIN=${CORPUS_SLUICE_BIN:-}
if [[ -z $SLUICE_BIN ]]; then
    for b in "$ROOT/target/release/sluice" "$ROOT/target/debug/sluice"; do
        [[ -x $b ]] && { SLUICE_BIN=$b; break; }
    done
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]:-}"; do
        [[ -n $p ]] && kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]:-}"; do
        [[ -n $p ]] && wait "$p" 2>/dev/null || true
    done
    [[ -n ${TMP:-} ]] && rm -rf "$TMP"
}
trap cleanup EXIT

# ------------------------------------------------------------------ sluice run
if [[ -n $SLUICE_BIN ]]; then
    TMP=$(mktemp -d)
    MOCK_PORT=$(free_port)
    PROXY_PORT=$(free_port)
    cat >"$TMP/sluice.toml" <<EOF
[server]
listen = "127.0.0.1:$PROXY_PORT"
max_body_size = "64KiB"
workers = 2

[[upstreams]]
name = "mock"
base_url = "http://127.0.0.1:$MOCK_PORT/v1"
models = ["gpt-*", "text-embedding-*", "o3*"]
timeout = "20s"
connect_timeout = "2s"

[cache]
enabled = true

[log]
level = "info"
EOF
    "$SLUICE_BIN" check-config --config "$TMP/sluice.toml" >"$OUT/sluice-check-config.txt" 2>&1 || true

    "$SLUICE_BIN" mock-upstream --listen "127.0.0.1:$MOCK_PORT" --chunks 4 >"$TMP/mock.log" 2>&1 &
    PIDS+=($!)
    RUST_LOG=debug "$SLUICE_BIN" serve --config "$TMP/sluice.toml" >"$TMP/serve.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$PROXY_PORT/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done

    B="http://127.0.0.1:$PROXY_PORT"
    J=(-H 'content-type: application/json' -H 'authorization: Bearer sk-corpus-test')
    req() { curl -s -o /dev/null "$@" || true; }
    shell_quote() { # prints its arguments the way one would type them
        local a out=()
        for a in "$@"; do
            if [[ $a =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then out+=("$a"); else out+=("'$a'"); fi  # (no argument here holds a single quote)
        done
        echo "${out[*]}"
    }
    shown() { { echo "\$ curl -si $(shell_quote "$@")"; curl -s -i "$@" || true; echo; echo; } >>"$OUT/sluice-requests.txt"; }
    : >"$OUT/sluice-requests.txt"

    shown "$B/v1/chat/completions" "${J[@]}" -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'
    shown "$B/v1/chat/completions" "${J[@]}" -d '{"model":"llama-3-70b","messages":[{"role":"user","content":"Hi"}]}'
    shown "$B/v1/chat/completions" "${J[@]}" -d '{"model":"gpt-4o","messages":[{"role":"user","content":"oops"}'
    shown "$B/v1/chat/completions" "${J[@]}" -d '[1,2,3]'
    shown "$B/v1/chat/completions" "${J[@]}" -d '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Stream please"}]}'
    shown "$B/v1/embeddings" "${J[@]}" -d '{"model":"text-embedding-3-small","input":["alpha","beta"]}'
    shown "$B/v1/responses" "${J[@]}" -d '{"model":"gpt-4o","input":"Say hi"}'
    shown "$B/v1/models" -H 'authorization: Bearer sk-corpus-test'
    shown "$B/healthz"
    shown "$B/nope"

    big=$(python3 -c 'import json; print(json.dumps({"model":"gpt-4o","messages":[{"role":"user","content":"x"*70000}]}))')
    for i in $(seq 1 200); do
        case $((i % 20)) in
            0) req "$B/v1/chat/completions" "${J[@]}" -d '{"model":"gpt-4o","messages":[' ;;
            1) req "$B/v1/chat/completions" "${J[@]}" -d "{\"model\":\"mistral-large-$i\",\"messages\":[{\"role\":\"user\",\"content\":\"q$i\"}]}" ;;
            2) req "$B/v1/chat/completions" "${J[@]}" -d "{\"model\":\"gpt-4o\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"stream $((i % 7))\"}]}" ;;
            3) req "$B/v1/embeddings" "${J[@]}" -d "{\"model\":\"text-embedding-3-small\",\"input\":[\"row $i\",\"row $((i + 1))\"]}" ;;
            4) req "$B/v1/responses" "${J[@]}" -d "{\"model\":\"gpt-4.1\",\"input\":\"item $((i % 5))\"}" ;;
            5) req "$B/v1/completions" "${J[@]}" -d "{\"model\":\"gpt-3.5-turbo-instruct\",\"prompt\":\"Once $i\"}" ;;
            6) req "$B/v1/chat/completions" "${J[@]}" -d '"just a string"' ;;
            7) req "$B/v1/chat/completions" "${J[@]}" --data-binary "$big" ;;
            8) req "$B/v1/chat/completions" "${J[@]}" -H 'x-sluice-prune: on' -d "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"prune $i\"}]}" ;;
            9) req "$B/v1/chat/completions" "${J[@]}" -H "x-request-id: corpus-$i" -d "{\"model\":\"gpt-4o-mini\",\"temperature\":0,\"messages\":[{\"role\":\"user\",\"content\":\"same question\"}]}" ;;
            10) req -X DELETE "$B/v1/chat/completions" "${J[@]}" ;;
            11) req "$B/v1/models" -H 'authorization: Bearer sk-corpus-test' ;;
            *) req "$B/v1/chat/completions" "${J[@]}" -d "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"question $((i % 9))\"}]}" ;;
        esac
    done
    curl -s "$B/metrics" >"$OUT/sluice-metrics.txt" || true
    sleep 0.5
    cleanup_pids() {
        local p
        for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
        for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
        PIDS=()
    }
    cleanup_pids
    # Ports and the temporary directory vary per run; normalise them.
    sed -e "s#$TMP#/tmp/corpus#g" -e "s/:$PROXY_PORT\b/:8080/g" -e "s/:$MOCK_PORT\b/:9000/g" \
        "$TMP/serve.log" >"$OUT/sluice-serve.log"
    for f in sluice-requests.txt sluice-check-config.txt; do
        sed -i -e "s#$TMP#/tmp/corpus#g" -e "s/:$PROXY_PORT\b/:8080/g" -e "s/:$MOCK_PORT\b/:9000/g" "$OUT/$f"
    done
else
    echo "capture.sh: no sluice binary (build it or set CORPUS_SLUICE_BIN); sluice logs not captured" >&2
fi

# --------------------------------------------------------------- command output
(cd "$ROOT" && cargo tree --offline --manifest-path "$ROOT/Cargo.toml" 2>&1) >"$OUT/cargo-tree.txt" || true
git -C "$ROOT" log --stat "$REV" >"$OUT/git-log-stat.txt" 2>&1 || true
(python3 -m pip list -v 2>/dev/null || true) >"$OUT/pip-list.txt"

head_of() { # src dest lines
    [[ -r $1 ]] && head -n "$3" "$1" >"$OUT/$2" || true
}
head_of /var/log/dpkg.log dpkg.log 800
head_of /var/log/apt/history.log apt-history.log 400
for f in /var/log/redis/*.log; do head_of "$f" redis-server.log 300; break; done

if [[ -n ${CORPUS_TEST_DIR:-} ]]; then
    (cd "$CORPUS_TEST_DIR" && cargo test --offline --no-fail-fast 2>&1 | sed -e "s#$CORPUS_TEST_DIR#/work/main#g") \
        >"$OUT/cargo-test.txt" || true
fi
find "$OUT" -type f -empty -delete
ls -la "$OUT"
