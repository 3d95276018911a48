#!/usr/bin/env bash
# bench/profile.sh: instructions per request for one gateway config, counted by valgrind's callgrind
# (repeatable whatever else the machine is doing, unlike seconds). Starts the mock upstream and the
# gateway under callgrind, warms up, counts only the measured requests, and prints the total and the
# top functions (inclusive).
#
#   bash bench/profile.sh passthrough.yaml            # json, 2000 requests
#   MODE=stream REQUESTS=500 bash bench/profile.sh to-anthropic.yaml
#
# Environment: MODE (json|stream), REQUESTS (2000), CONC (4), PATH_ (/v1/chat/completions),
# BODY (openai; or agent-250k etc., a coding-agent turn, see bench/agent_body.py), PORT_BASE (18200), TOP (40), HEADER (extra request header), SKIP_BUILD=1,
# MOCK_ARGS (extra mock options, e.g. "--answer tool-call": every answer a function call),
# GATEWAY_BIN (another gateway binary, e.g. bench/pgo.sh's profile-guided build),
# UNIQUE=1 (every request's body different: "__N__" in it becomes a counter, a cache-miss load),
# SETUP (a command run before the warm-up, with GW_URL set; see below),
# VALGRIND_ARGS (extra callgrind options, e.g. "--cache-sim=yes --LL=1048576,16,64" to count misses of a
# simulated 1 MiB last-level cache, this machine's L2 per core; with CONC=256 it shows what a large number
# of connections costs in memory).
# `python3 bench/callsites.py <profile> <function> [event] [requests]` then lists where a function is
# called from, by any event: which `memcpy` writes into cold memory, which drop reads it back.
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH")
CONFIG=${1:?usage: bench/profile.sh <config in bench/configs>}
MODE=${MODE:-json}
REQUESTS=${REQUESTS:-2000}
CONC=${CONC:-4}
API_PATH=${PATH_:-/v1/chat/completions}
BODY=${BODY:-openai}
PORT_BASE=${PORT_BASE:-18200}
TOP=${TOP:-40}
HEADER=${HEADER:-}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
GATEWAY_BIN=${GATEWAY_BIN:-$TARGET_DIR/release/ai-gateway}
OUT=$BENCH/out/profile
MOCK_PORT=$PORT_BASE
GW_PORT=$((PORT_BASE + 2))

command -v valgrind >/dev/null || { echo "profile: valgrind is needed" >&2; exit 1; }
command -v curl >/dev/null || { echo "profile: curl is needed" >&2; exit 1; }
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
	(cd "$ROOT" && cargo build --release --bin ai-gateway && cargo build --release --example mock_upstream)
fi
mkdir -p "$OUT"
rm -f "$OUT"/callgrind.out.*

PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_ready() {
	for _ in $(seq 600); do
		curl -sf -o /dev/null "$1" && return 0
		sleep 0.1
	done
	echo "profile: $1 never answered" >&2
	exit 1
}

"$TARGET_DIR/release/examples/mock_upstream" --port "$MOCK_PORT" ${MOCK_ARGS:-} 2>"$OUT/mock.log" &
PIDS+=($!)
wait_ready "http://127.0.0.1:$MOCK_PORT/health"

template=$BENCH/configs/$CONFIG
[[ -f $CONFIG ]] && template=$CONFIG
sed -e "s|@PORT@|$GW_PORT|g" -e "s|@MOCK_URL@|http://127.0.0.1:$MOCK_PORT|g" -e "s|@OUT@|$OUT|g" \
	"$template" >"$OUT/gateway.yaml"
# callgrind_control with no pid and the default vgdb prefix acts on every callgrind run on the machine:
# this run's own prefix and pid keep a profile running elsewhere from switching or dumping this one.
VGDB_PREFIX=/tmp/vgdb-profile-$$
(cd "$OUT" && exec taskset -c "${GW_CORE:-0}" valgrind --tool=callgrind --instr-atstart=no \
	--vgdb-prefix="$VGDB_PREFIX" ${VALGRIND_ARGS:-} --callgrind-out-file="$OUT/callgrind.out.%p" \
	"$GATEWAY_BIN" --config "$OUT/gateway.yaml") >"$OUT/gateway.log" 2>&1 &
GW_PID=$!
PIDS+=($GW_PID)
control() { callgrind_control --vgdb-prefix="$VGDB_PREFIX" "$@" "$GW_PID" >/dev/null 2>&1; }
wait_ready "http://127.0.0.1:$GW_PORT/health"
# SETUP: a command run once the gateway is up, before the warm-up (GW_URL is its base URL), e.g. a request
# storing the Responses answer that the measured requests continue (`previous_response_id`).
if [[ -n ${SETUP:-} ]]; then
	GW_URL=http://127.0.0.1:$GW_PORT BENCH=$BENCH bash -c "$SETUP"
fi

body=$BENCH/bodies/$BODY.json
[[ $MODE == stream ]] && body=$BENCH/bodies/$BODY.stream.json
if [[ ! -f $body && $BODY =~ ^agent(-anthropic|-responses-stored|-responses)?-(50k|250k|1m)(-cold)?$ ]]; then
	# A coding-agent turn (see bench/agent_body.py and scenarios.txt), written on first use.
	shape=openai marker=last
	case ${BASH_REMATCH[2]} in 50k) size=50000 ;; 250k) size=250000 ;; 1m) size=1000000 ;; esac
	[[ -n ${BASH_REMATCH[1]} ]] && shape=${BASH_REMATCH[1]#-}
	[[ -n ${BASH_REMATCH[3]} ]] && marker=all
	stream_arg=()
	[[ $MODE == stream ]] && stream_arg=(--stream)
	mkdir -p "$OUT/bodies"
	body=$OUT/bodies/$BODY.$MODE.json
	[[ -f $body ]] || python3 "$BENCH/agent_body.py" --size "$size" --shape "$shape" --marker "$marker" \
		"${stream_arg[@]}" --out "$body"
fi
args=(-s -o /dev/null -X POST -H 'content-type: application/json' --data-binary "@$body")
[[ -n $HEADER ]] && args+=(-H "$HEADER")
url=http://127.0.0.1:$GW_PORT$API_PATH

# A Python driver keeps CONC keep-alive connections busy: curl per request would cost more than the
# gateway itself under callgrind's slowdown and could not keep connections open.
drive() {
	python3 - "$1" "$CONC" "$url" "$body" "$HEADER" "${UNIQUE:-0}" "$2" <<'EOF'
import http.client, itertools, sys, threading, urllib.parse
n, conc, url, body_file, header = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
unique, run = sys.argv[6] == '1', sys.argv[7]
counter = itertools.count()
u = urllib.parse.urlparse(url)
body = open(body_file, 'rb').read()
headers = {'content-type': 'application/json'}
if header:
    k, v = header.split(':', 1)
    headers[k.strip()] = v.strip()
failed = 0
def worker(count):
    global failed
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    for _ in range(count):
        sent = body.replace(b'__N__', f'{run}-{next(counter)}'.encode()) if unique else body.replace(b'__N__', b'0')
        c.request('POST', u.path, sent, headers)
        r = c.getresponse()
        r.read()
        if r.status != 200:
            failed += 1
threads = [threading.Thread(target=worker, args=(n // conc,)) for _ in range(conc)]
for t in threads: t.start()
for t in threads: t.join()
if failed:
    print(f"profile: {failed} requests failed", file=sys.stderr)
    sys.exit(1)
EOF
}

drive $((CONC * 50)) warm
control -i on
drive "$REQUESTS" measured
control -i off
control -d
# The explicit dump is part 1 (the dump at exit, after the trap's kill, is not wanted).
file=
for _ in $(seq 100); do
	file=$(ls "$OUT"/callgrind.out."$GW_PID".1 2>/dev/null | head -1)
	[[ -n $file ]] && break
	sleep 0.1
done
# A second part means someone else's `callgrind_control -d` (no pid) split the count: run again.
if [[ -e $OUT/callgrind.out.$GW_PID.2 ]]; then
	echo "profile: another callgrind_control dumped this gateway during the run; run again" >&2
	exit 1
fi
total=$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "profile: $CONFIG $MODE: $total instructions over $REQUESTS requests = $((total / REQUESTS)) per request"
callgrind_annotate --inclusive=yes "$file" 2>/dev/null | head -n "$((TOP + 25))" | tail -n "$TOP" || true
