# Shared by the load scripts (sourced): logging, durations, and the tools they
# need (nginx, oha, a release build of sluice), installed when missing.
# Expects ROOT (the repository) to be set; sets NGINX, OHA, OHA_JSON, OHA_WAIT,
# SLUICE_BIN.

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

secs() { # "10s" | "2m" | "10" -> seconds
    local d=$1
    case "$d" in
        *ms) echo 1 ;;
        *s) echo "${d%s}" ;;
        *m) echo $((${d%m} * 60)) ;;
        *) echo "$d" ;;
    esac
}

# ---------------------------------------------------------------- dependencies
SUDO=""
[[ $EUID -ne 0 ]] && SUDO="sudo"
command -v python3 >/dev/null || die "python3 is needed to read oha's JSON"
command -v curl >/dev/null || die "curl is needed for the readiness checks"

if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
    log "installing nginx"
    $SUDO apt-get install -y nginx >/dev/null ||
        { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y nginx >/dev/null; }
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

find_oha() { command -v oha || { [[ -x $HOME/.cargo/bin/oha ]] && echo "$HOME/.cargo/bin/oha"; } || true; }
OHA=$(find_oha)
if [[ -z $OHA ]]; then
    # Another process may be installing it right now: wait rather than compete.
    if pgrep -f 'cargo install .*oha' >/dev/null; then
        log "waiting for a running 'cargo install oha' to finish"
        for _ in $(seq 1 360); do
            pgrep -f 'cargo install .*oha' >/dev/null || break
            sleep 5
        done
        OHA=$(find_oha)
    fi
    if [[ -z $OHA ]]; then
        log "installing oha (cargo install oha --locked)"
        cargo install oha --locked
        OHA=$(find_oha)
    fi
fi
[[ -n $OHA ]] || die "oha not found after installing it"
if "$OHA" --help | grep -q -- '--output-format'; then
    OHA_JSON=(--output-format json)
elif "$OHA" --help | grep -q -- '--json'; then
    OHA_JSON=(--json)
else
    die "this oha has no JSON output; install oha >= 1.0"
fi
OHA_WAIT=()
"$OHA" --help | grep -q -- '--wait-ongoing-requests-after-deadline' && OHA_WAIT=(-w)

if [[ -z ${SLUICE_BIN:-} ]]; then
    log "building sluice (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet --bin sluice)
    SLUICE_BIN=$ROOT/target/release/sluice
fi
[[ -x $SLUICE_BIN ]] || die "no sluice binary at $SLUICE_BIN"

# ---------------------------------------------------------------- workspace
# setup_workspace NAME: OUT (results), TMP (scratch, removed on exit), SLUICE (a
# private copy of the binary), PIDS (stopped on exit), and the exit traps.
setup_workspace() {
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$HERE/out/$1$STAMP
mkdir -p "$OUT/oha"
TMP=$(mktemp -d -t "sluice-$1XXXXXX")
# A private copy: others rebuilding target/ mid-run must not swap the binary.
cp "$SLUICE_BIN" "$TMP/sluice"
SLUICE=$TMP/sluice

PIDS=()
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [[ $rc -ne 0 ]]; then
        mkdir -p "$OUT/logs"
        cp "$TMP"/*.log "$TMP"/*/error.log "$OUT/logs/" 2>/dev/null || true
        log "failed (exit $rc); process logs kept in $OUT/logs"
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
}

# ---------------------------------------------------------------- report
# sluice_version: "sluice X.Y.Z (git REV[+dirty])" of the binary under test.
sluice_version() {
    local rev dirty=""
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | grep -q .; then
        dirty="+dirty"
    fi
    echo "sluice $("$SLUICE" --version | awk '{ print $NF }') (git $rev$dirty)"
}

# nginx_version: "nginx/1.x.y".
nginx_version() { "$NGINX" -v 2>&1 | sed 's/^nginx version: //'; }

# write_meta FILE KEY=VALUE...: the run's meta.json for the report (bench.py meta):
# the given keys, the date, the machine and the lines of the NOTES array.
write_meta() {
    local file=$1 cpu machine
    shift
    cpu=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
    machine="$(nproc) CPUs ($cpu), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, Linux $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end, shared with other work"
    printf '%s\n' "${NOTES[@]+"${NOTES[@]}"}" >"$OUT/notes.txt"
    python3 "$HERE/bench.py" meta --out "$file" --notes "$OUT/notes.txt" \
        "date=$(date -u '+%Y-%m-%d %H:%M UTC')" "machine=$machine" "$@"
}
