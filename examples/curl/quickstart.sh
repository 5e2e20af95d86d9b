#!/usr/bin/env bash
# sluice with curl: the same requests an OpenAI SDK sends, against sluice's base URL.
# Four steps: a chat completion, a streamed one, an embedding, and the first chat
# completion sent again, which sluice answers from its cache.
#
#   OPENAI_BASE_URL=http://127.0.0.1:8080/v1 examples/curl/quickstart.sh
#
# Exits with 1 when the repeated request is not a cache hit.
set -euo pipefail

BASE_URL="${OPENAI_BASE_URL:-http://127.0.0.1:8080/v1}"
BASE_URL="${BASE_URL%/}"
API_KEY="${OPENAI_API_KEY:-sk-example}"

# The same request twice: the second is answered from sluice's cache.
PLAIN='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to sluice from curl."}]}'
STREAM='{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Stream a short greeting from curl."}]}'
EMBED='{"model":"text-embedding-3-small","input":"sluice caches answers"}'

# POSTs JSON $2 to $BASE_URL/$1; extra curl flags after it.
post() {
  local path=$1 body=$2
  shift 2
  curl -sS --fail-with-body "$@" "$BASE_URL/$path" \
    -H "authorization: Bearer $API_KEY" \
    -H 'content-type: application/json' \
    -d "$body"
}

# The value of header $1 in the response head (with -D -) on stdin.
header() {
  tr -d '\r' | grep -i "^$1:" | head -n 1 | cut -d ' ' -f 2-
}

# The first string value of JSON field $1 in stdin (enough for these answers).
field() {
  grep -o "\"$1\": *\"[^\"]*\"" | head -n 1 | sed 's/^[^:]*: *"//; s/"$//'
}

# 1. A chat completion; -D - puts the response head before the body.
first_response=$(post chat/completions "$PLAIN" -D -)
echo "chat: $(field content <<<"$first_response")"
first=$(header x-sluice-cache <<<"$first_response")

# 2. A streamed chat completion (-N: no buffering), printed as the deltas arrive.
printf 'stream: '
post chat/completions "$STREAM" -N | while IFS= read -r line; do
  case $line in
    'data: [DONE]'*) ;;
    'data: '*) printf '%s' "$(field content <<<"$line" || true)" ;;
  esac
done
echo

# 3. An embedding: count the numbers in the vector.
dimensions=$(post embeddings "$EMBED" | grep -o '"embedding": *\[[^]]*\]' | tr ',' '\n' | wc -l)
echo "embedding: $dimensions dimensions"

# 4. The first chat completion again: a cache hit.
repeat_response=$(post chat/completions "$PLAIN" -D -)
repeat=$(header x-sluice-cache <<<"$repeat_response")
echo "x-sluice-cache: first=$first repeat=$repeat"
if ! grep -qi '^x-sluice-cache: hit' <<<"$repeat_response"; then
  echo "expected the repeated request to be a cache hit, got '$repeat'" >&2
  exit 1
fi
