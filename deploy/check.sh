#!/usr/bin/env bash
# Validates the deployment files without a container engine or a cluster:
#   - every YAML file under deploy/ parses (PyYAML);
#   - the Grafana dashboard is valid JSON and its queries use only sluice's metric names;
#   - each deploy/kubernetes/<dir> renders with `kubectl kustomize` (when kubectl exists);
#   - deploy/Dockerfile passes hadolint (when hadolint exists);
#   - every *.toml under deploy/ is accepted by `sluice check-config`, with the
#     environment variables it names (api_key_env, client_keys_env) set to dummy values,
#     and deploy/sluice.toml also with the environment compose.yaml gives it.
# sluice: $SLUICE_BIN, else target/debug/sluice, else built with `cargo build --bin sluice`.
# Exits non-zero on the first failure.
set -euo pipefail

cd "$(dirname "$0")/.."

scratch="$(mktemp -d)"
cleanup() { rm -rf "$scratch"; }
trap cleanup EXIT

step() { printf '== %s\n' "$*"; }
ok() { printf '   ok: %s\n' "$*"; }
skip() { printf '   skipped: %s\n' "$*"; }

step "YAML files parse"
if ! python3 -c 'import yaml' 2>/dev/null; then
  python3 -m pip install --quiet pyyaml
fi
mapfile -t yaml_files < <(find deploy -type f \( -name '*.yaml' -o -name '*.yml' \) | sort)
if [ "${#yaml_files[@]}" -eq 0 ]; then
  echo "no YAML files under deploy/" >&2
  exit 1
fi
python3 - "${yaml_files[@]}" <<'PY'
import sys, yaml
for path in sys.argv[1:]:
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    if not docs:
        sys.exit(f"{path}: no YAML document")
    print(f"   ok: {path} ({len(docs)} document{'s' if len(docs) != 1 else ''})")
PY

step "Grafana dashboard"
python3 - deploy/grafana/sluice-dashboard.json <<'PY'
import json, re, sys
path = sys.argv[1]
with open(path) as f:
    dash = json.load(f)
allowed = {
    "sluice_requests_total", "sluice_request_duration_seconds_bucket",
    "sluice_requests_in_flight", "sluice_cache_requests_total",
    "sluice_usage_tokens_total", "sluice_saved_tokens_total", "sluice_saved_requests_total",
    "sluice_cost_spent_total", "sluice_cost_saved_total",
    "sluice_upstream_errors_total", "sluice_upstream_attempts_total",
    "sluice_upstream_duration_seconds_bucket", "sluice_upstream_breaker_state",
}
errors = []
if dash.get("schemaVersion") != 39:
    errors.append(f"schemaVersion is {dash.get('schemaVersion')}, expected 39")
if not any(i.get("name") == "DS_PROMETHEUS" for i in dash.get("__inputs", [])):
    errors.append("no DS_PROMETHEUS in __inputs")
if not dash.get("__requires"):
    errors.append("no __requires")

def panels(items):
    for p in items:
        yield p
        yield from panels(p.get("panels", []))

queries = []
for p in panels(dash.get("panels", [])):
    for t in p.get("targets", []):
        queries.append((p.get("title", "?"), t.get("expr", "")))
for v in dash.get("templating", {}).get("list", []):
    if v.get("type") == "query":
        queries.append((f"variable {v.get('name')}", v.get("definition", "")))
names = {v.get("name") for v in dash.get("templating", {}).get("list", [])}
for wanted in ("model", "client"):
    if wanted not in names:
        errors.append(f"no template variable {wanted}")
for title, expr in queries:
    used = set(re.findall(r"\bsluice_[a-z0-9_]+", expr))
    if not used:
        errors.append(f"{title}: no sluice metric in {expr!r}")
    for name in sorted(used - allowed):
        errors.append(f"{title}: unknown metric {name}")
    if expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
        errors.append(f"{title}: unbalanced brackets in {expr!r}")
if errors:
    sys.exit("\n".join(f"{path}: {e}" for e in errors))
print(f"   ok: {path} ({len(queries)} queries, metrics all known)")
PY

step "kustomize renders"
if command -v kubectl >/dev/null 2>&1; then
  for dir in deploy/kubernetes/*/; do
    dir="${dir%/}"
    out="$scratch/$(basename "$dir").yaml"
    kubectl kustomize "$dir" >"$out"
    python3 -c 'import sys, yaml; docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]; print("   ok: %s (%d objects: %s)" % (sys.argv[2], len(docs), ", ".join(d["kind"] for d in docs)))' "$out" "$dir"
  done
else
  skip "kubectl not installed"
fi

step "Dockerfile lint"
if command -v hadolint >/dev/null 2>&1; then
  hadolint deploy/Dockerfile
  ok "hadolint deploy/Dockerfile"
else
  skip "hadolint not installed"
fi

step "configs accepted by sluice check-config"
bin="${SLUICE_BIN:-}"
if [ -z "$bin" ]; then
  if [ -x target/debug/sluice ]; then
    bin="target/debug/sluice"
  else
    cargo build --bin sluice
    bin="target/debug/sluice"
  fi
fi
if [ ! -x "$bin" ]; then
  echo "sluice binary not found or not executable: $bin" >&2
  exit 1
fi

# check_config FILE [NAME=VALUE...]: a clean environment (no SLUICE_ variables from the
# caller), the variables FILE names set to dummy values, then the given ones.
check_config() {
  local file="$1"
  shift
  local -a vars=()
  local name
  while IFS= read -r name; do
    vars+=("$name=check:dummy-secret-value")
  done < <(sed -nE 's/^[[:space:]]*(api_key_env|client_keys_env)[[:space:]]*=[[:space:]]*"([A-Za-z_][A-Za-z0-9_]*)".*/\2/p' "$file" | sort -u)
  if ! env -i PATH="$PATH" HOME="${HOME:-/tmp}" "${vars[@]}" "$@" \
      "$bin" check-config --config "$file" >"$scratch/out.toml" 2>"$scratch/err.txt"; then
    echo "sluice check-config rejected $file:" >&2
    cat "$scratch/err.txt" >&2
    exit 1
  fi
  local names=""
  if [ "${#vars[@]}" -gt 0 ]; then names=" with ${vars[*]%%=*}"; fi
  if [ "$#" -gt 0 ]; then names="$names and $*"; fi
  ok "$file$names"
}

mapfile -t tomls < <(find deploy -type f -name '*.toml' | sort)
if [ "${#tomls[@]}" -eq 0 ]; then
  echo "no *.toml under deploy/" >&2
  exit 1
fi
for file in "${tomls[@]}"; do
  check_config "$file"
done
# Each config again with the environment its deployment gives it (the image itself sets
# SLUICE_SERVER__LISTEN=0.0.0.0:8080).
check_config deploy/sluice.toml \
  SLUICE_SERVER__LISTEN=0.0.0.0:8080 \
  SLUICE_CACHE__REDIS_URL=redis://redis:6379/0 \
  SLUICE_UPSTREAMS__0__BASE_URL=http://mock:9000/v1
check_config deploy/kubernetes/sidecar/sluice.toml \
  SLUICE_SERVER__LISTEN=127.0.0.1:8080
check_config deploy/kubernetes/shared/sluice.toml \
  SLUICE_SERVER__LISTEN=0.0.0.0:8080 \
  SLUICE_CACHE__REDIS_URL=redis://sluice-redis:6379/0

step "all deployment checks passed"
