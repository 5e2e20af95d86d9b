#!/usr/bin/env bash
# Runs the SDK examples (Python, Node, curl, Rust) against sluice in front of
# the mock upstream, all on free 127.0.0.1 ports, and prints PASS or FAIL per
# example. Each example gets a fresh sluice (one mock upstream serves them all),
# so each one shows its own cache miss and then its hit.
#
#   examples/run.sh                 # all four
#   examples/run.sh --only python   # one of python, node, curl, rust
#
# The sluice binary is $SLUICE_BIN, else target/debug/sluice (built when missing).
# The Python and Node SDKs must be installed first:
#   python3 -m pip install -r examples/python/requirements.txt
#   npm ci --prefix examples/node
# Exits 1 when any example failed, 2 on a usage error.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# Seconds an example may run, and a server may live.
EXAMPLE_LIMIT=120
SLUICE_LIMIT=300
MOCK_LIMIT=1800

usage() {
  echo "usage: examples/run.sh [--only python|node|curl|rust]" >&2
  exit 2
}

ONLY=""
while (($#)); do
  case $1 in
    --only)
      (($# >= 2)) || usage
      ONLY=$2
      shift 2
      ;;
    --only=*)
      ONLY=${1#--only=}
      shift
      ;;
    -h | --help) usage ;;
    *) usage ;;
  esac
done
case $ONLY in
  "") EXAMPLES=(python node curl rust) ;;
  python | node | curl | rust) EXAMPLES=("$ONLY") ;;
  *) usage ;;
esac

WORK=$(mktemp -d)
# Every process started here runs under `timeout`, which leads its own process
# group: these are those groups' leaders, still running.
PROCS=()

# Removes $1 from PROCS.
forget() {
  local kept=() p
  for p in "${PROCS[@]}"; do
    [[ $p == "$1" ]] || kept+=("$p")
  done
  PROCS=(${kept[@]+"${kept[@]}"})
}

# Stops the process group led by $1 (TERM, then KILL after 10 s).
stop() {
  local pid=$1
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget "$pid"
}

cleanup() {
  while ((${#PROCS[@]})); do
    stop "${PROCS[0]}"
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A port on 127.0.0.1 that nothing listens on right now.
free_port() {
  local port
  for _ in $(seq 100); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "no free port found" >&2
  return 1
}

# Starts `$BIN $@ --listen 127.0.0.1:PORT` on a free port, waits until
# http://127.0.0.1:PORT$ready answers, and sets PORT and PID. The server runs
# in $WORK (so no config/sluice.toml is read), for at most $limit seconds; a port
# taken in the meantime is retried with another.
start_server() {
  local name=$1 limit=$2 ready=$3
  shift 3
  local attempt
  for attempt in 1 2 3; do
    PORT=$(free_port)
    (cd "$WORK" && exec timeout "$limit" "$BIN" "$@" --listen "127.0.0.1:$PORT") \
      >"$WORK/$name.log" 2>&1 &
    PID=$!
    PROCS+=("$PID")
    for _ in $(seq 200); do
      if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$PORT$ready" 2>/dev/null; then
        return 0
      fi
      kill -0 "$PID" 2>/dev/null || break
      sleep 0.05
    done
    stop "$PID"
    echo "$name did not start on port $PORT (attempt $attempt):" >&2
    sed 's/^/  /' "$WORK/$name.log" >&2
  done
  return 1
}

BIN=${SLUICE_BIN:-$ROOT/target/debug/sluice}
if [[ ! -x $BIN ]]; then
  if [[ -n ${SLUICE_BIN:-} ]]; then
    echo "SLUICE_BIN=$SLUICE_BIN is not an executable file" >&2
    exit 2
  fi
  echo "== cargo build --bin sluice"
  cargo build --bin sluice
fi
[[ $BIN == /* ]] || BIN=$ROOT/$BIN

# Requests go to 127.0.0.1 only, never through a proxy; a fixed key, so no real
# key is ever sent (sluice passes the client's key to the mock).
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
export OPENAI_API_KEY=sk-example

# What stops an example from running at all, if anything: prints the reason.
missing() {
  case $1 in
    python)
      if ! python3 -c 'import openai' 2>/dev/null; then
        echo "the openai package is not installed: python3 -m pip install -r examples/python/requirements.txt"
      fi
      ;;
    node)
      if ! command -v node >/dev/null 2>&1; then
        echo "node is not installed"
      elif [[ ! -d examples/node/node_modules/openai ]]; then
        echo "examples/node/node_modules is missing: npm ci --prefix examples/node"
      fi
      ;;
    rust)
      # Built here, before the time limit of the run starts.
      if ! cargo build --quiet --example async_openai; then
        echo "cargo build --example async_openai failed"
      fi
      ;;
  esac
}

command_of() {
  case $1 in
    python) echo python3 examples/python/quickstart.py ;;
    node) echo node examples/node/quickstart.mjs ;;
    curl) echo examples/curl/quickstart.sh ;;
    rust) echo cargo run --quiet --example async_openai ;;
  esac
}

# The value of a sluice_cache_requests_total series in sluice's /metrics.
cache_count() {
  curl -fsS --max-time 2 "http://127.0.0.1:$1/metrics" 2>/dev/null |
    awk -v series="sluice_cache_requests_total{result=\"$2\"}" '$1 == series { print $2; found = 1 } END { if (!found) print 0 }'
}

start_server mock-upstream "$MOCK_LIMIT" /v1/models mock-upstream
MOCK_PORT=$PORT
echo "mock upstream on 127.0.0.1:$MOCK_PORT"

PASSED=()
FAILED=()
for example in "${EXAMPLES[@]}"; do
  read -r -a command <<<"$(command_of "$example")"
  echo
  echo "== $example: ${command[*]}"
  reason=$(missing "$example")
  if [[ -n $reason ]]; then
    echo "FAIL $example: $reason"
    FAILED+=("$example")
    continue
  fi
  if ! start_server "sluice-$example" "$SLUICE_LIMIT" /readyz \
    serve --upstream "http://127.0.0.1:$MOCK_PORT/v1"; then
    echo "FAIL $example: sluice did not start"
    FAILED+=("$example")
    continue
  fi
  sluice_port=$PORT
  sluice_pid=$PID
  # In the background so that an interrupt stops it at once (see cleanup).
  OPENAI_BASE_URL="http://127.0.0.1:$sluice_port/v1" timeout "$EXAMPLE_LIMIT" "${command[@]}" &
  example_pid=$!
  PROCS+=("$example_pid")
  status=0
  wait "$example_pid" || status=$?
  forget "$example_pid"
  counts="cache misses $(cache_count "$sluice_port" miss), hits $(cache_count "$sluice_port" hit)"
  stop "$sluice_pid"
  if ((status == 0)); then
    echo "PASS $example ($counts)"
    PASSED+=("$example")
  elif ((status == 124)); then
    echo "FAIL $example: timed out after ${EXAMPLE_LIMIT}s ($counts)"
    FAILED+=("$example")
  else
    echo "FAIL $example: exit code $status ($counts)"
    FAILED+=("$example")
  fi
done

echo
echo "examples: ${#PASSED[@]} passed${PASSED[*]:+ (${PASSED[*]})}, ${#FAILED[@]} failed${FAILED[*]:+ (${FAILED[*]})}"
((${#FAILED[@]} == 0))
