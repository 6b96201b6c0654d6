#!/usr/bin/env bash
# Fuzz a running server with its own OpenAPI document (schemathesis).
#
# Starts `twistd -n pymager` on a free loopback port, with a write token, its
# data (SQLite and files) in a temporary directory, then runs schemathesis
# against /openapi.json with a bounded number of examples per operation and a
# time budget.  Fails on any 5xx, any answer the document does not describe
# (status, headers, content type, body), and any traceback in the server's
# log.  Run it from a checkout whose .venv has the test extra:
#
#     tests/openapi/fuzz.sh                 # defaults below
#     FUZZ_MAX_EXAMPLES=50 FUZZ_MAX_TIME=600 tests/openapi/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV_BIN="$(cd "${VENV_BIN:-.venv/bin}" && pwd)"
CONFIG="$PWD/tests/openapi/schemathesis.toml"
MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-25}"
MAX_TIME="${FUZZ_MAX_TIME:-180}"
SEED="${FUZZ_SEED:-}"

work="$(mktemp -d "${TMPDIR:-/tmp}/pymager-fuzz.XXXXXX")"
server_pid=""
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap stop_server EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port="$("$VENV_BIN/python" - <<'PY'
import socket
with socket.socket() as each:
    each.bind(("127.0.0.1", 0))
    print(each.getsockname()[1])
PY
)"
token="$("$VENV_BIN/python" -c 'import secrets; print(secrets.token_urlsafe(24))')"
cat >"$work/pymager.toml" <<TOML
[server]
listen = "tcp:$port:interface=127.0.0.1"

[storage]
data_directory = "$work/data"

[images]
allowed_sizes = ["100x100", "800x600"]

[auth]
write_tokens = ["$token"]
TOML

base="http://127.0.0.1:$port"
echo "Starting twistd pymager on $base (data in $work)" >&2
"$VENV_BIN/twistd" --nodaemon --pidfile= --logfile="$work/twistd.log" pymager --config "$work/pymager.toml" &
server_pid=$!

ready=""
for _ in $(seq 1 100); do
    if "$VENV_BIN/python" - "$base/healthz" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as answer:
        sys.exit(0 if answer.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
    then
        ready=1
        break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        break
    fi
    sleep 0.2
done
if [ -z "$ready" ]; then
    echo "twistd pymager did not come up on $base" >&2
    tail -n 40 "$work/twistd.log" >&2 || true
    exit 1
fi

seed_option=()
if [ -n "$SEED" ]; then
    seed_option=(--seed "$SEED")
fi
status=0
# From the temporary directory, where schemathesis keeps its replay files.
(cd "$work" && "$VENV_BIN/st" --no-color --config-file "$CONFIG" run "$base/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,missing_required_header,ignored_auth,use_after_free,ensure_resource_availability \
    --header "Authorization: Bearer $token" \
    --max-examples "$MAX_EXAMPLES" \
    --max-time "$MAX_TIME" \
    --request-timeout 30 \
    --workers 2 \
    "${seed_option[@]}") || status=$?

if grep -n -E "Traceback|Unhandled" "$work/twistd.log" >&2; then
    echo "The server logged a traceback while fuzzed (above)" >&2
    status=1
fi
if [ "$status" -ne 0 ]; then
    echo "Fuzzing failed (exit $status); the server's log ends:" >&2
    tail -n 20 "$work/twistd.log" >&2 || true
fi
exit "$status"
