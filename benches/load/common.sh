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
