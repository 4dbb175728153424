#!/usr/bin/env bash
# Codex CLI (npm @openai/codex, pinned in tests/e2e/package-lock.json) against `hetmoe serve` on the tiny random-weight
# model, through a custom provider with wire_api = "responses". Codex's ~8,400-token request (function tools, a
# namespace tool, web_search, include, store: false) must be accepted and its event stream parsed. Codex samples (its
# request sets no temperature 0), so the random weights' answer usually runs into the server-side cap (-n), an
# incomplete response that Codex reports as "Incomplete response returned, reason: max_output_tokens" (exit 1), and
# now and then (1 run in ~25) samples an end token first: a completed turn (exit 0). Both pass; any other exit code
# or error is a failure.
# usage: codex_e2e.sh BUILD/bin/hetmoe MODEL.gguf     exit 77 (skipped) when codex is not installed (npm ci).
set -uo pipefail
binary=$1
model=$2
here=$(cd "$(dirname "$0")" && pwd)
codex=$here/node_modules/.bin/codex
if [ ! -x "$codex" ]; then
  echo "SKIPPED: $codex not found: run 'npm ci --prefix tests/e2e' (scripts/setup.sh does) to install Codex CLI"
  exit 77
fi
work=$(mktemp -d)
trap 'kill $server_pid 2>/dev/null; wait $server_pid 2>/dev/null; rm -rf "$work"' EXIT
"$binary" serve -m "$model" --port 0 -t 1 -c 16384 -n 16 --api-key codex-e2e --alias gpt-oss-20b \
  2> "$work/server.log" &
server_pid=$!
port=
for _ in $(seq 600); do
  port=$(sed -n 's/.*listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$work/server.log" | head -1)
  if [ -n "$port" ] && curl -sf "http://127.0.0.1:$port/health" > /dev/null 2>&1; then break; fi
  kill -0 $server_pid 2>/dev/null || { echo "FAIL: hetmoe serve exited:"; cat "$work/server.log"; exit 1; }
  sleep 0.1
done
mkdir -p "$work/home" "$work/cwd"
cat > "$work/home/config.toml" <<TOML
model = "gpt-oss-20b"
model_provider = "hetmoe"

[model_providers.hetmoe]
name = "hetmoe"
base_url = "http://127.0.0.1:$port/v1"
wire_api = "responses"
env_key = "HETMOE_API_KEY"
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = 120000
TOML
(cd "$work/cwd" && CODEX_HOME=$work/home HETMOE_API_KEY=codex-e2e timeout 300 "$codex" exec --skip-git-repo-check \
  --ephemeral -s read-only --color never --json "Say hello." > "$work/stdout.txt" 2> "$work/stderr.txt" < /dev/null)
rc=$?
echo "codex exit code: $rc"
echo "--- codex stdout (--json events)"; cat "$work/stdout.txt"
echo "--- codex stderr (tail)"; tail -20 "$work/stderr.txt"
echo "--- server log"; cat "$work/server.log"
fail=0
if [ "$rc" -eq 1 ]; then
  grep -q '"type":"turn.failed".*Incomplete response returned, reason: max_output_tokens' "$work/stdout.txt" ||
    { echo "FAIL: exit 1 without a turn.failed for 'Incomplete response returned, reason: max_output_tokens'"; fail=1; }
  outcome="reported the token cap"
elif [ "$rc" -eq 0 ]; then
  grep -q '"type":"turn.completed"' "$work/stdout.txt" || { echo "FAIL: exit 0 without turn.completed"; fail=1; }
  outcome="completed the turn (an end token came before the cap)"
else
  echo "FAIL: expected exit code 1 (incomplete response) or 0 (completed turn), got $rc"; fail=1
fi
# The only errors are the incomplete response's (and Codex's note that it has no metadata for a custom model).
if grep '"type":"error"' "$work/stdout.txt" | grep -v 'Incomplete response returned, reason: max_output_tokens' |
    grep -v 'Model metadata for `gpt-oss-20b` not found'; then
  echo "FAIL: another error"; fail=1
fi
grep -q '"type":"item.completed"' "$work/stdout.txt" || { echo "FAIL: no item.completed (no text streamed)"; fail=1; }
grep -q 'POST /v1/responses: tools\[[0-9]*\] of type "namespace"' "$work/server.log" ||
  { echo "FAIL: the server did not note the namespace tool it left out"; fail=1; }
[ $fail -eq 0 ] && echo "PASSED: Codex CLI ran against hetmoe serve and $outcome"
exit $fail
