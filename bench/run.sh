#!/usr/bin/env bash
# bench/run.sh: the benchmark in one command. Installs wrk and nginx if missing, builds the gateway and the
# mock upstream in release mode, then loads the mock directly, through nginx (plain reverse proxy) and
# through the gateway, for every scenario in bench/scenarios.txt × {json, stream} × {c32, c256}.
# The server under test (nginx or the gateway) runs alone on core GW_CORE; the mock and wrk share LOAD_CORE.
# Scenarios whose config template contains @REDIS_URL@ get a fresh redis-server per cell (installed from Debian
# when missing), also on LOAD_CORE.
# Prints a markdown table and writes it to bench/out/results.md (raw numbers: bench/out/results.tsv).
# The slow-streams run holds SLOW_STREAMS streams open at once (mock with a delay before each event, load from
# bench/slow_client.rs) and reports the gateway's and nginx's RSS idle and at the peak.
#
#   bash bench/run.sh                         # everything, 2 s warm-up + 8 s per cell
#   DURATION=3 ONLY='^(direct|nginx|gateway)$' bash bench/run.sh
#
# Environment: DURATION (s, default 8), WARMUP (s, 2), CONNS ("32 256"), MODES ("json stream"),
# ONLY (regex on scenario names), SCENARIOS (file), GW_CORE (0), LOAD_CORE (1), WRK_THREADS (1),
# PORT_BASE (18100: mock, +1 nginx, +2 gateway, +3 redis), SKIP_INSTALL=1, SKIP_BUILD=1, OUT (bench/out),
# PGO=1 (measure the profile-guided build of bench/pgo.sh, built first unless SKIP_BUILD=1), GATEWAY_BIN
# (a gateway binary built elsewhere; the build then skips it);
# slow-streams: SLOW_STREAMS (10000; a list gives a row each), SLOW_DELAY_MS (500), SLOW_PROTO (auto|h1|h2),
# SLOW_H2_STREAMS (100 per connection), SLOW_RATE (2000 streams started per second), SLOW_OPENING (256),
# SLOW_NGINX (1).
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH")
OUT=${OUT:-$BENCH/out}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-"32 256"}
MODES=${MODES:-"json stream"}
ONLY=${ONLY:-}
SCENARIOS=${SCENARIOS:-$BENCH/scenarios.txt}
GW_CORE=${GW_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
WRK_THREADS=${WRK_THREADS:-1}
PORT_BASE=${PORT_BASE:-18100}
MOCK_PORT=$PORT_BASE
NGINX_PORT=$((PORT_BASE + 1))
GW_PORT=$((PORT_BASE + 2))
REDIS_PORT=$((PORT_BASE + 3))
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OWN_GATEWAY_BIN=${GATEWAY_BIN:-}
PGO=${PGO:-0}
if [[ $PGO == 1 ]]; then
	GATEWAY_BIN=${GATEWAY_BIN:-$TARGET_DIR/pgo-use/release/ai-gateway}
else
	GATEWAY_BIN=${GATEWAY_BIN:-$TARGET_DIR/release/ai-gateway}
fi
MOCK_BIN=$TARGET_DIR/release/examples/mock_upstream
SLOW_BIN=$TARGET_DIR/release/examples/slow_client
CLK_TCK=$(getconf CLK_TCK)

log() { echo "bench: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# ---------------------------------------------------------------- tools and builds
install_tools() {
	local missing=()
	command -v wrk >/dev/null || missing+=(wrk)
	command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
	command -v curl >/dev/null || missing+=(curl)
	command -v taskset >/dev/null || missing+=(util-linux)
	if ((NEED_REDIS)); then
		command -v redis-server >/dev/null || [[ -x /usr/bin/redis-server ]] || missing+=(redis-server)
	fi
	((${#missing[@]} == 0)) && return
	[[ ${SKIP_INSTALL:-0} == 1 ]] && die "missing tools: ${missing[*]} (SKIP_INSTALL=1 set)"
	local sudo=()
	((EUID == 0)) || sudo=(sudo)
	log "installing ${missing[*]}"
	"${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
}

build() {
	[[ ${SKIP_BUILD:-0} == 1 ]] && return
	log "building release binaries (target dir $TARGET_DIR)"
	if [[ -z $OWN_GATEWAY_BIN && $PGO == 1 ]]; then
		PGO=0 bash "$BENCH/pgo.sh" >/dev/null
	elif [[ -z $OWN_GATEWAY_BIN ]]; then
		(cd "$ROOT" && cargo build --release --bin ai-gateway)
	fi
	(cd "$ROOT" && cargo build --release --example mock_upstream --example slow_client)
}

# ---------------------------------------------------------------- processes
MOCK_PID=
TARGET_PIDS=()
TARGET_MAIN=
REDIS_PID=
SAMPLER_PID=

stop_pid() {
	local pid=$1
	[[ -n $pid ]] || return 0
	kill "$pid" 2>/dev/null || true
	for _ in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

stop_target() {
	if [[ -n $TARGET_MAIN && $TARGET_MAIN != "$MOCK_PID" ]]; then
		stop_pid "$TARGET_MAIN"
	fi
	TARGET_MAIN=
	TARGET_PIDS=()
	stop_pid "$REDIS_PID"
	REDIS_PID=
}

EXTRA_PIDS=()

cleanup() {
	local pid
	for pid in "${EXTRA_PIDS[@]}"; do
		stop_pid "$pid"
	done
	EXTRA_PIDS=()
	stop_pid "$SAMPLER_PID"
	SAMPLER_PID=
	stop_target # also stops redis-server
	stop_pid "$MOCK_PID"
	MOCK_PID=
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits until GET url answers 2xx, or the process dies, or 10 s pass. Extra arguments go to curl.
wait_ready() {
	local url=$1 pid=$2
	for _ in $(seq 100); do
		curl -sf -o /dev/null "${@:3}" "$url" && return 0
		kill -0 "$pid" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# True once redis-server on REDIS_PORT answers PING (RESP over bash's /dev/tcp; redis-cli is not needed).
redis_ping() {
	(
		exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" || exit 1
		printf 'PING\r\n' >&3
		local reply
		read -r -t 1 reply <&3 || exit 1
		[[ $reply == +PONG* ]]
	) 2>/dev/null
}

# A fresh, empty redis-server for one cell: no persistence, pinned with the load generators. Sets REDIS_PID.
start_redis() {
	local log_file=$OUT/redis.log
	stop_pid "$REDIS_PID"
	taskset -c "$LOAD_CORE" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
		>>"$log_file" 2>&1 &
	REDIS_PID=$!
	for _ in $(seq 100); do
		redis_ping && return 0
		kill -0 "$REDIS_PID" 2>/dev/null || break
		sleep 0.1
	done
	START_ERROR="redis-server did not start: $(tail -n 1 "$log_file" 2>/dev/null)"
	return 1
}

# Extra arguments go to the mock (the slow-streams run passes --chunk-delay-ms).
start_mock() {
	local log_file=$OUT/mock.log
	stop_pid "$MOCK_PID"
	taskset -c "$LOAD_CORE" "$MOCK_BIN" --port "$MOCK_PORT" "$@" 2>>"$log_file" &
	MOCK_PID=$!
	wait_ready "http://127.0.0.1:$MOCK_PORT/health" "$MOCK_PID" || die "mock upstream did not start (see $log_file)"
}

# Optional arguments (slow-streams run): worker connections (4096), extra listen parameters (e.g. http2).
write_nginx_conf() {
	local prefix=$OUT/nginx connections=${1:-4096} listen_extra=${2:+ $2} rlimit_line=""
	mkdir -p "$prefix/tmp"
	local user_line=""
	((EUID == 0)) && user_line="user root;"
	[[ -n ${1:-} ]] && printf -v rlimit_line '\nworker_rlimit_nofile %s;' "$(ulimit -n)"
	cat >"$prefix/nginx.conf" <<EOF
# Written by bench/run.sh: nginx as a plain reverse proxy, one worker, upstream keep-alive, no buffering.
$user_line
worker_processes 1;$rlimit_line
daemon off;
pid $prefix/nginx.pid;
error_log $prefix/error.log warn;
events { worker_connections $connections; }
http {
    access_log off;
    client_body_temp_path $prefix/tmp/body;
    proxy_temp_path $prefix/tmp/proxy;
    fastcgi_temp_path $prefix/tmp/fastcgi;
    uwsgi_temp_path $prefix/tmp/uwsgi;
    scgi_temp_path $prefix/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    # Request bodies kept in memory up to 2 MiB (the default 16 KiB buffer spills agent-size bodies to
    # temp files, ~1 ms each): a fair comparison for the gateway, which holds bodies in memory.
    client_body_buffer_size 2m;
    client_max_body_size 16m;
    upstream mock {
        server 127.0.0.1:$MOCK_PORT;
        keepalive 512;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT reuseport$listen_extra;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }
    }
}
EOF
}

# Extra arguments go to the readiness check's curl (--http2-prior-knowledge for an http2 listener).
start_nginx() {
	local prefix=$OUT/nginx
	taskset -c "$GW_CORE" nginx -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/error.log" 2>>"$prefix/stderr.log" &
	TARGET_MAIN=$!
	if ! wait_ready "http://127.0.0.1:$NGINX_PORT/health" "$TARGET_MAIN" "$@"; then
		START_ERROR="nginx did not start: $(tail -n 1 "$prefix/error.log" 2>/dev/null)"
		return 1
	fi
	# The master plus its worker(s): CPU and RSS are summed over all of them.
	mapfile -t TARGET_PIDS < <(echo "$TARGET_MAIN"; pgrep -P "$TARGET_MAIN")
}

# Fills a gateway config template: @PORT@, @MOCK_URL@, @MOCK_URL_1..3@ (fail-over instances), @OUT@, @EDIT@,
# @REDIS_URL@.
render_config() {
	sed -e "s|@PORT@|$GW_PORT|g" -e "s|@MOCK_URL@|http://127.0.0.1:$MOCK_PORT|g" -e "s|@OUT@|$OUT|g" \
		-e "s|@REDIS_URL@|redis://127.0.0.1:$REDIS_PORT|g" \
		-e "s|@MOCK_URL_1@|http://127.0.0.1:$((PORT_BASE + 10))|g" \
		-e "s|@MOCK_URL_2@|http://127.0.0.1:$((PORT_BASE + 11))|g" \
		-e "s|@MOCK_URL_3@|http://127.0.0.1:$((PORT_BASE + 12))|g" \
		-e "s|@EDIT@|$2|g" "$1"
}

start_gateway() {
	local template=$BENCH/configs/$1 config=$OUT/gateway-${1%.*}.yaml log_file=$OUT/gateway-${1%.*}.log
	[[ -f $template ]] || die "no gateway config template $template"
	rm -rf "$OUT/request-log"
	render_config "$template" 0 >"$config"
	if ! "$GATEWAY_BIN" check --config "$config" >"$log_file" 2>&1; then
		START_ERROR="config rejected: $(tail -n 1 "$log_file")"
		return 1
	fi
	if grep -q '@REDIS_URL@' "$template"; then
		start_redis || return 1
	fi
	(cd "$OUT" && exec taskset -c "$GW_CORE" "$GATEWAY_BIN" --config "$config") >>"$log_file" 2>&1 &
	TARGET_MAIN=$!
	if ! wait_ready "http://127.0.0.1:$GW_PORT/health" "$TARGET_MAIN"; then
		START_ERROR="gateway did not start: $(tail -n 1 "$log_file")"
		return 1
	fi
	TARGET_PIDS=("$TARGET_MAIN")
}

# Starts the server under test for a scenario; sets TARGET_PORT, TARGET_PIDS. Returns 1 with START_ERROR set.
start_target() {
	local target=$1 config=$2
	START_ERROR=
	case $target in
	direct)
		TARGET_PORT=$MOCK_PORT
		TARGET_MAIN=$MOCK_PID
		TARGET_PIDS=("$MOCK_PID")
		;;
	nginx)
		TARGET_PORT=$NGINX_PORT
		start_nginx
		;;
	gateway)
		TARGET_PORT=$GW_PORT
		start_gateway "$config"
		;;
	*) die "unknown target '$target' (expected direct, nginx or gateway)" ;;
	esac
}

# ---------------------------------------------------------------- /proc readings
# utime + stime in clock ticks, summed over the given processes (all their threads).
cpu_ticks() {
	local total=0 pid stat fields
	for pid in "$@"; do
		stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
		fields=${stat##*) }
		read -r -a fields <<<"$fields"
		total=$((total + fields[11] + fields[12]))
	done
	echo "$total"
}

# Peak resident set (VmHWM) in kB, summed over the given processes.
peak_rss_kb() {
	local total=0 pid kb
	for pid in "$@"; do
		kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || continue
		total=$((total + ${kb:-0}))
	done
	echo "$total"
}

# Current resident set (VmRSS) in kB, summed over the given processes.
rss_kb() {
	local total=0 pid kb
	for pid in "$@"; do
		kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || continue
		total=$((total + ${kb:-0}))
	done
	echo "$total"
}

# Samples the summed VmRSS of the given processes every 200 ms until killed; keeps the largest value seen (kB)
# in the file.
sample_peak_rss() {
	local file=$1 peak=0 kb
	shift
	while :; do
		kb=$(rss_kb "$@")
		((kb > peak)) && peak=$kb && echo "$peak" >"$file"
		sleep 0.2
	done
}

# ---------------------------------------------------------------- one scenario
trim() {
	local s=$1
	s=${s#"${s%%[![:space:]]*}"}
	echo "${s%"${s##*[![:space:]]}"}"
}

# Sends the scenario's request twice with curl (two different bodies when unique) and prints "ok" or a short
# reason it failed, followed by the notes the options ask for: "show=Header" reports that response header of the
# second request (e.g. X-Cache on the hit path), "deny" checks that a request without the extra headers is
# refused with 401/403 (keys enforced).
preflight() {
	local url=$1 body_file=$2 mode=$3 headers=$4 unique=$5 show=$6 deny=$7 status body attempt line
	local args=(-s -D "$OUT/preflight.headers" -o "$OUT/preflight.body" -w '%{http_code}' -X POST
		-H 'Content-Type: application/json' --max-time 10 --data-binary "@-")
	local plain=("${args[@]}")
	while IFS= read -r line; do
		[[ -n $line ]] && args+=(-H "$line")
	done <<<"$headers"
	for attempt in 1 2; do
		local tag=preflight
		((unique)) && tag=preflight-$attempt-$RANDOM
		status=$(sed "s/__N__/$tag/g" "$body_file" | curl "${args[@]}" "$url") || status=000
		body=$(head -c 160 "$OUT/preflight.body" 2>/dev/null | tr '\n|' '  ')
		if [[ $status != 2* ]]; then
			echo "HTTP $status: $body"
			return
		elif [[ $mode == stream ]] && ! grep -q -e '^data: \[DONE\]' -e '^event: message_stop' -e '^event: response.completed' "$OUT/preflight.body"; then
			echo "stream did not end with [DONE], message_stop or response.completed"
			return
		fi
	done
	local result=ok
	if [[ -n $show ]]; then
		local value
		value=$(grep -i "^$show:" "$OUT/preflight.headers" | head -n 1 | tr -d '\r' || true)
		result+="; ${value:-$show absent}"
	fi
	if ((deny)); then
		status=$(sed "s/__N__/denied/g" "$body_file" | curl "${plain[@]}" "$url") || status=000
		[[ $status == 401 || $status == 403 ]] || result+="; not refused without key (HTTP $status)"
	fi
	echo "$result"
}

# The file of a scenario's body: bench/bodies/<body>[.stream].json, or a coding-agent turn (agent-<size>,
# agent-<size>-cold, agent-anthropic-<size>[-cold], agent-responses[-stored]-<size>[-cold]; size 50k, 250k or 1m) that bench/agent_body.py writes
# into $OUT/bodies on first use (deterministic: the same bytes every run).
body_path() {
	local body=$1 mode=$2 suffix=.json
	[[ $mode == stream ]] && suffix=.stream.json
	if [[ -f $BENCH/bodies/$body$suffix ]]; then
		echo "$BENCH/bodies/$body$suffix"
		return
	fi
	[[ $body =~ ^agent(-anthropic|-responses-stored|-responses)?-(50k|250k|1m)(-cold)?$ ]] || return 1
	local shape=openai size marker=last file=$OUT/bodies/$body$suffix args=()
	[[ -n ${BASH_REMATCH[1]} ]] && shape=${BASH_REMATCH[1]#-}
	case ${BASH_REMATCH[2]} in 50k) size=50000 ;; 250k) size=250000 ;; 1m) size=1000000 ;; esac
	[[ -n ${BASH_REMATCH[3]} ]] && marker=all
	[[ $mode == stream ]] && args+=(--stream)
	if [[ ! -f $file ]]; then
		mkdir -p "$OUT/bodies"
		python3 "$BENCH/agent_body.py" --size "$size" --shape "$shape" --marker "$marker" "${args[@]}" \
			--out "$file" 2>/dev/null || return 1
	fi
	echo "$file"
}

RESULTS=$OUT/results.tsv
TTFB_SAMPLES=${TTFB_SAMPLES:-50}

# Median time to first response byte over TTFB_SAMPLES sequential requests on one keep-alive connection, idle
# server, in µs (for streams: how soon the client sees the stream start; DESIGN: overhead ≤ 1 ms).
idle_ttfb_us() {
	local url=$1 body_file=$2 headers=$3 line urls=()
	# No `Expect: 100-continue` (curl sends it for large bodies): its interim answer would be the first byte.
	local args=(-s -w '%{time_starttransfer}\n' -H 'Content-Type: application/json' -H 'Expect:' --max-time 10)
	while IFS= read -r line; do
		[[ -n $line ]] && args+=(-H "$line")
	done <<<"$headers"
	if [[ $(stat -c %s "$body_file") -gt 65536 ]]; then
		# curl's time_starttransfer is the upload's start for large bodies: bench/ttfb.py reads the answer.
		local header_args=()
		while IFS= read -r line; do [[ -n $line ]] && header_args+=("$line"); done <<<"$headers"
		python3 "$BENCH/ttfb.py" "$url" "$body_file" "$TTFB_SAMPLES" "${header_args[@]}" 2>/dev/null || true
		return
	fi
	for _ in $(seq "$TTFB_SAMPLES"); do urls+=(-o /dev/null "$url"); done
	sed 's/__N__/ttfb/g' "$body_file" >"$OUT/ttfb.body"
	curl "${args[@]}" --data-binary "@$OUT/ttfb.body" "${urls[@]}" 2>/dev/null |
		sort -n | awk '{ v[NR] = $1 } END { if (NR) printf "%d", v[int((NR + 1) / 2)] * 1e6 }'
}

# Prints "requests duration_us p50_us p99_us non2xx socket_errors" from wrk output with post.lua's BENCH line.
parse_wrk() {
	local line requests=0 duration_us=0 connect=0 read=0 write=0 status=0 timeout=0 p50_us=0 p99_us=0 kv
	line=$(grep '^BENCH ' "$1" | tail -n 1) || return 1
	for kv in ${line#BENCH }; do
		case ${kv%%=*} in
		requests | duration_us | connect | read | write | status | timeout | p50_us | p99_us)
			printf -v "${kv%%=*}" '%d' "${kv#*=}"
			;;
		esac
	done
	echo "$requests $duration_us $p50_us $p99_us $status $((connect + read + write + timeout))"
}

# Runs wrk for one cell and appends a row to results.tsv.
run_cell() {
	local name=$1 target=$2 mode=$3 conns=$4 url=$5 body_file=$6 unique=$7 headers=$8 baseline=$9 note=${10}
	local wrk_args=(-t "$WRK_THREADS" -c "$conns" --timeout 5s -s "$BENCH/post.lua" "$url")
	local cell=$OUT/$name-$mode-c$conns
	export BENCH_BODY=$body_file BENCH_UNIQUE=$unique BENCH_HEADERS=$headers
	BENCH_RUN=warm-$RANDOM$RANDOM taskset -c "$LOAD_CORE" wrk "${wrk_args[@]}" -d "${WARMUP}s" >"$cell.warmup" 2>&1 || true
	local cpu0 mock0 cpu1 mock1 redis0=0 redis1=0
	cpu0=$(cpu_ticks "${TARGET_PIDS[@]}")
	mock0=$(cpu_ticks "$MOCK_PID")
	[[ -n $REDIS_PID ]] && redis0=$(cpu_ticks "$REDIS_PID")
	BENCH_RUN=run-$RANDOM$RANDOM taskset -c "$LOAD_CORE" wrk "${wrk_args[@]}" -d "${DURATION}s" --latency >"$cell.wrk" 2>&1 || true
	cpu1=$(cpu_ticks "${TARGET_PIDS[@]}")
	mock1=$(cpu_ticks "$MOCK_PID")
	[[ -n $REDIS_PID ]] && redis1=$(cpu_ticks "$REDIS_PID")
	local rss
	rss=$(peak_rss_kb "${TARGET_PIDS[@]}")
	local requests duration_us p50_us p99_us status errors
	if ! read -r requests duration_us p50_us p99_us status errors < <(parse_wrk "$cell.wrk"); then
		printf '%s\t%s\t%s\t%s\t\t\t\t\t\t\t\t\t%s\t%s\n' "$name" "$target" "$mode" "$conns" \
			"wrk failed: $(tail -n 1 "$cell.wrk" | tr '\t' ' ')" "$baseline" >>"$RESULTS"
		return
	fi
	awk -v name="$name" -v target="$target" -v mode="$mode" -v conns="$conns" -v req="$requests" \
		-v dur="$duration_us" -v p50="$p50_us" -v p99="$p99_us" -v status="$status" -v errors="$errors" \
		-v cpu="$((cpu1 - cpu0))" -v mock="$((mock1 - mock0))" -v tck="$CLK_TCK" -v rss="$rss" \
		-v baseline="$baseline" -v note="$note" -v ttfb="${TTFB:-}" -v redis="${REDIS_PID:+$((redis1 - redis0))}" 'BEGIN {
			rps = dur > 0 ? req / (dur / 1e6) : 0
			cpu_us = req > 0 ? cpu / tck * 1e6 / req : 0
			mock_us = req > 0 ? mock / tck * 1e6 / req : 0
			# redis-server is not the server under test: its CPU is a note, not part of CPU µs/req.
			if (redis != "" && req > 0) note = note (note == "" ? "" : "; ") sprintf("redis-server CPU %.1f µs/req", redis / tck * 1e6 / req)
			printf "%s\t%s\t%s\t%s\t%.0f\t%d\t%d\t%d\t%d\t%.1f\t%.1f\t%d\t%s\t%s\t%s\n", name, target, mode, conns, rps,
				p50, p99, status, errors, cpu_us, mock_us, rss, note, baseline, ttfb
		}' >>"$RESULTS"
}

run_scenario() {
	local name=$1 target=$2 config=$3 path=$4 body=$5 options=$6
	local unique=0 modes=$MODES headers="" baseline=direct show="" deny=0 opt
	IFS=';' read -r -a opts <<<"$options"
	for opt in "${opts[@]}"; do
		opt=$(trim "$opt")
		case $opt in
		"") ;;
		unique) unique=1 ;;
		modes=*) modes=${opt#modes=} modes=${modes//,/ } ;;
		header=*) headers+="${opt#header=}"$'\n' ;;
		baseline=*) baseline=${opt#baseline=} ;;
		show=*) show=${opt#show=} ;;
		deny) deny=1 ;;
		*) die "scenario $name: unknown option '$opt'" ;;
		esac
	done
	local mode conns
	for mode in $modes; do
		[[ " $MODES " == *" $mode "* ]] || continue
		local body_file
		body_file=$(body_path "$body" "$mode") || die "scenario $name: no body file for $body ($mode)"
		for conns in $CONNS; do
			log "$name $mode c$conns"
			# Fresh processes per cell: peak RSS and connection state belong to this cell alone.
			start_mock
			if ! start_target "$target" "$config"; then
				# A rejected config or a server that does not start fails every cell alike: one row for all.
				log "$name: $START_ERROR"
				printf '%s\t%s\t%s\t%s\t\t\t\t\t\t\t\t\t%s\t%s\n' "$name" "$target" all all \
					"skipped: $START_ERROR" "$baseline" >>"$RESULTS"
				stop_target
				return
			fi
			local url=http://127.0.0.1:$TARGET_PORT$path check
			check=$(preflight "$url" "$body_file" "$mode" "$headers" "$unique" "$show" "$deny")
			if [[ $check != ok* ]]; then
				log "$name $mode: preflight failed: $check"
				printf '%s\t%s\t%s\t%s\t\t\t\t\t\t\t\t\t%s\t%s\n' "$name" "$target" "$mode" all \
					"skipped: preflight $check" "$baseline" >>"$RESULTS"
				stop_target
				break
			fi
			local note=${check#ok} ttfb=""
			# Skipped for unique bodies: repeating one body would measure cache hits — except the agent
			# scenarios, which cache nothing (a repeated turn is a session's later turn, history counted).
			[[ $mode == stream && ($unique == 0 || $name == *agent*) ]] &&
				ttfb=$(idle_ttfb_us "$url" "$body_file" "$headers")
			TTFB=$ttfb
			run_cell "$name" "$target" "$mode" "$conns" "$url" "$body_file" "$unique" "$headers" "$baseline" "${note#; }"
			stop_target
		done
	done
}

# ---------------------------------------------------------------- fault runs (issue 3)
FAULTS=$OUT/faults.tsv

# faults.tsv columns: run phase rps p50_us p99_us failed note
# fault_row RUN PHASE "RPS P50 P99 FAILED" NOTE
fault_row() {
	local numbers
	read -r -a numbers <<<"$3"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "${numbers[0]:-}" "${numbers[1]:-}" "${numbers[2]:-}" \
		"${numbers[3]:-}" "$4" >>"$FAULTS"
}

# Runs wrk for one phase of a fault run; prints "rps p50_us p99_us failed" (failed = non-2xx + socket errors).
wrk_phase() {
	local url=$1 conns=$2 seconds=$3 file=$4 requests duration_us p50_us p99_us status errors
	BENCH_RUN=$RANDOM$RANDOM taskset -c "$LOAD_CORE" wrk -t "$WRK_THREADS" -c "$conns" --timeout 5s \
		-s "$BENCH/post.lua" "$url" -d "${seconds}s" --latency >"$file" 2>&1 || true
	read -r requests duration_us p50_us p99_us status errors < <(parse_wrk "$file") || return 1
	echo "$(awk -v r="$requests" -v d="$duration_us" 'BEGIN { printf "%.0f", (d > 0 ? r / (d / 1e6) : 0) }') $p50_us $p99_us $((status + errors))"
}

start_instance() {
	local index=$1
	taskset -c "$LOAD_CORE" "$MOCK_BIN" --port "$((PORT_BASE + 10 + index))" --instance-id "mock-$((index + 1))" \
		--log-first-request 2>"$OUT/failover-mock-$((index + 1)).log" &
	EXTRA_PIDS[index]=$!
	wait_ready "http://127.0.0.1:$((PORT_BASE + 10 + index))/health" "${EXTRA_PIDS[index]}" ||
		die "fail-over mock instance $((index + 1)) did not start"
}

# Steady load on a backend of three instances; phase 2 kills instance 2, phase 3 restarts it. Reports failed
# requests per phase, the p99 added during the fault, and how long the restarted instance waits for traffic.
run_failover() {
	local name=$1 config=$2 path=$3 body=$4 conns=${CONNS%% *} index
	cleanup
	export BENCH_BODY=$BENCH/bodies/$body.json BENCH_UNIQUE=0 BENCH_HEADERS=
	for index in 0 1 2; do
		port_busy "$((PORT_BASE + 10 + index))" && die "port $((PORT_BASE + 10 + index)) is in use (set PORT_BASE)"
		start_instance "$index"
	done
	log "$name: steady / kill instance 2 / restart it, ${DURATION} s each, c$conns"
	if ! start_target gateway "$config"; then
		fault_row "$name" - "" "skipped: $START_ERROR"
		cleanup
		return
	fi
	local url=http://127.0.0.1:$GW_PORT$path check
	check=$(preflight "$url" "$BENCH_BODY" json "" 0 "" 0)
	if [[ $check != ok* ]]; then
		fault_row "$name" - "" "skipped: preflight $check"
		cleanup
		return
	fi
	taskset -c "$LOAD_CORE" wrk -t "$WRK_THREADS" -c "$conns" -s "$BENCH/post.lua" "$url" -d "${WARMUP}s" \
		>"$OUT/$name-warmup.wrk" 2>&1 || true
	local steady fault restarted
	steady=$(wrk_phase "$url" "$conns" "$DURATION" "$OUT/$name-steady.wrk") || steady="0 0 0 0"
	fault_row "$name" "steady (3 instances)" "$steady" ""
	kill -9 "${EXTRA_PIDS[1]}" 2>/dev/null || true
	stop_pid "${EXTRA_PIDS[1]}"
	fault=$(wrk_phase "$url" "$conns" "$DURATION" "$OUT/$name-fault.wrk") || fault="0 0 0 0"
	local added
	added=$(($(echo "$fault" | cut -d' ' -f3) - $(echo "$steady" | cut -d' ' -f3)))
	fault_row "$name" "instance 2 killed" "$fault" "added p99 vs steady: ${added} µs"
	local restart_ms first_ms note
	restart_ms=$(date +%s%3N)
	start_instance 1
	restarted=$(wrk_phase "$url" "$conns" "$DURATION" "$OUT/$name-restarted.wrk") || restarted="0 0 0 0"
	first_ms=$(sed -n 's/^first request at unix_ms=\([0-9]*\)$/\1/p' "$OUT/failover-mock-2.log" | head -n 1)
	if [[ -n $first_ms ]]; then
		note="restarted instance took traffic $((first_ms - restart_ms)) ms after its restart"
	else
		note="restarted instance took no traffic within ${DURATION} s"
	fi
	fault_row "$name" "instance 2 restarted" "$restarted" "$note"
	cleanup
}

# Steady load while the config file is rewritten in place every second (only a model alias changes).
run_reload() {
	local name=$1 config=$2 path=$3 body=$4 conns=${CONNS%% *}
	export BENCH_BODY=$BENCH/bodies/$body.json BENCH_UNIQUE=0 BENCH_HEADERS=
	log "$name: config rewritten every second for ${DURATION} s, c$conns"
	start_mock
	if ! start_target gateway "$config"; then
		fault_row "$name" - "" "skipped: $START_ERROR"
		cleanup
		return
	fi
	local url=http://127.0.0.1:$GW_PORT$path check
	check=$(preflight "$url" "$BENCH_BODY" json "" 0 "" 0)
	if [[ $check != ok* ]]; then
		fault_row "$name" - "" "skipped: preflight $check"
		cleanup
		return
	fi
	local rendered=$OUT/gateway-${config%.*}.yaml log_file=$OUT/gateway-${config%.*}.log
	local before edits=0 result_file=$OUT/$name.result
	before=$(grep -ci reload "$log_file" || true)
	wrk_phase "$url" "$conns" "$DURATION" "$OUT/$name.wrk" >"$result_file" &
	local wrk_pid=$!
	while kill -0 "$wrk_pid" 2>/dev/null; do
		sleep 1
		edits=$((edits + 1))
		render_config "$BENCH/configs/$config" "$edits" >"$rendered"
	done
	wait "$wrk_pid" || true
	local result after
	result=$(cat "$result_file")
	after=$(grep -ci reload "$log_file" || true)
	fault_row "$name" "config rewritten every 1 s" "${result:-0 0 0 0}" \
		"$edits edits; $((after - before)) gateway log lines mention reload"
	cleanup
}

# ---------------------------------------------------------------- slow streams (memory budget)
SLOW=$OUT/slow.tsv
SLOW_STREAMS=${SLOW_STREAMS:-10000}
SLOW_DELAY_MS=${SLOW_DELAY_MS:-500}
SLOW_PROTO=${SLOW_PROTO:-auto}
SLOW_H2_STREAMS=${SLOW_H2_STREAMS:-100}
SLOW_RATE=${SLOW_RATE:-2000}
SLOW_OPENING=${SLOW_OPENING:-256}
SLOW_NGINX=${SLOW_NGINX:-1}

# Holds STREAMS slow streams open through the running target (TARGET_PIDS on TARGET_PORT) with slow_client and
# appends a row to slow.tsv: idle RSS before the load, peak (VmHWM, and the largest VmRSS sampled every
# 200 ms), RSS once every stream has ended.
slow_cell() {
	local name=$1 server=$2 streams=$3 url=$4 body_file=$5 per_conn=$6 client=$7
	local cell=$OUT/$name-$server-$streams idle sampled=0 hwm after
	sleep 1
	idle=$(rss_kb "${TARGET_PIDS[@]}")
	rm -f "$cell.rss"
	sample_peak_rss "$cell.rss" "${TARGET_PIDS[@]}" &
	SAMPLER_PID=$!
	taskset -c "$LOAD_CORE" "$SLOW_BIN" --url "$url" --body "$body_file" --streams "$streams" \
		--rate "$SLOW_RATE" --opening "$SLOW_OPENING" --h2-streams-per-conn "$per_conn" >"$cell.out" 2>"$cell.err" || true
	stop_pid "$SAMPLER_PID"
	SAMPLER_PID=
	[[ -s $cell.rss ]] && sampled=$(cat "$cell.rss")
	hwm=$(peak_rss_kb "${TARGET_PIDS[@]}")
	after=$(rss_kb "${TARGET_PIDS[@]}")
	local line completed="" failed="" peak_open="" ramp_ms="" elapsed_ms="" kv note=""
	line=$(grep '^SLOW ' "$cell.out" | tail -n 1) || line=""
	for kv in ${line#SLOW }; do
		case ${kv%%=*} in
		completed | failed | peak_open | ramp_ms | elapsed_ms) printf -v "${kv%%=*}" '%d' "${kv#*=}" ;;
		esac
	done
	if [[ -z $line ]]; then
		note="slow_client failed: $(tail -n 1 "$cell.err" | tr '\t' ' ')"
	elif [[ -s $cell.err ]]; then
		note=$(head -n 3 "$cell.err" | sed 's/^slow_client: //' | paste -sd ';' - | tr '\t' ' ')
	fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$server" "$streams" "$client" \
		"$completed" "$failed" "$peak_open" "$ramp_ms" "$elapsed_ms" "$idle" "$hwm" "$sampled" "$after" "$note" >>"$SLOW"
}

# The memory budget (DESIGN: RSS ≤ 200 MB holding 10,000 concurrent slow streams): the mock waits SLOW_DELAY_MS
# before each streamed event, so every stream stays open for seconds; slow_client opens SLOW_STREAMS of them at
# once through the gateway, then (SLOW_NGINX=1) through nginx. HTTP/1.1 needs two sockets per stream in the
# proxy (client side + upstream side); when the open-files limit cannot hold that (SLOW_PROTO=auto), the client
# sends its streams over HTTP/2 (h2c), SLOW_H2_STREAMS per connection, and the proxy's upstream side stays
# one HTTP/1.1 connection per stream.
run_slow_streams() {
	local name=$1 config=$2 path=$3 body=$4 streams
	local body_file=$BENCH/bodies/$body.stream.json nofile
	[[ -x $SLOW_BIN ]] || die "no slow_client binary at $SLOW_BIN"
	[[ -f $body_file ]] || die "$name: no body file $body_file"
	nofile=$(ulimit -n)
	for streams in $SLOW_STREAMS; do
		local proto=$SLOW_PROTO per_conn=0 client curl_h2=() listen=""
		if [[ $proto == auto ]]; then
			proto=h1
			((2 * streams + 256 > nofile)) && proto=h2
		fi
		if [[ $proto == h2 ]]; then
			per_conn=$SLOW_H2_STREAMS
			client="h2c, $(((streams + per_conn - 1) / per_conn)) conns × $per_conn streams"
			curl_h2=(--http2-prior-knowledge)
			listen=http2
		else
			client="h1, $streams conns"
			((2 * streams + 256 > nofile)) && log "$name: warning: $streams HTTP/1.1 streams need about $((2 * streams)) sockets in the proxy; open files limit is $nofile"
		fi
		log "$name: $streams streams ($client), ${SLOW_DELAY_MS} ms before each event"
		cleanup
		start_mock --chunk-delay-ms "$SLOW_DELAY_MS"
		if ! start_target gateway "$config"; then
			printf '%s\tgateway\t%s\t%s\t\t\t\t\t\t\t\t\t\tskipped: %s\n' "$name" "$streams" "$client" "$START_ERROR" >>"$SLOW"
			cleanup
			continue
		fi
		local url=http://127.0.0.1:$GW_PORT$path check
		check=$(preflight "$url" "$BENCH/bodies/$body.json" json "" 0 "" 0)
		if [[ $check == ok* ]]; then
			slow_cell "$name" gateway "$streams" "$url" "$body_file" "$per_conn" "$client"
		else
			printf '%s\tgateway\t%s\t%s\t\t\t\t\t\t\t\t\t\tskipped: preflight %s\n' "$name" "$streams" "$client" "$check" >>"$SLOW"
		fi
		stop_target
		if ((SLOW_NGINX)); then
			write_nginx_conf "$((nofile - 64))" "$listen"
			start_mock --chunk-delay-ms "$SLOW_DELAY_MS"
			if start_nginx "${curl_h2[@]}"; then
				slow_cell "$name" nginx "$streams" "http://127.0.0.1:$NGINX_PORT$path" "$body_file" "$per_conn" "$client"
			else
				printf '%s\tnginx\t%s\t%s\t\t\t\t\t\t\t\t\t\tskipped: %s\n' "$name" "$streams" "$client" "$START_ERROR" >>"$SLOW"
			fi
			stop_target
			write_nginx_conf
		fi
		cleanup
	done
}

# ---------------------------------------------------------------- report
# results.tsv columns: name target mode conns rps p50_us p99_us non2xx errors cpu_us mock_cpu_us rss_kb note baseline
# idle_ttfb_us (streams)
write_report() {
	local report=$OUT/results.md
	{
		echo "# Benchmark results"
		echo
		echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ); commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
		echo "- machine: $(nproc) cores ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)); $(uname -sr)"
		local only=""
		[[ -n $ONLY ]] && only=" ONLY='$ONLY'"
		echo "- command: \`DURATION=$DURATION WARMUP=$WARMUP CONNS=\"$CONNS\"$only bash bench/run.sh\`"
		echo "- gateway binary: $GATEWAY_BIN$([[ $PGO == 1 ]] && echo " (profile-guided, bench/pgo.sh)")"
		echo "- server under test pinned to core $GW_CORE; mock upstream and wrk ($WRK_THREADS thread) on core $LOAD_CORE"
		[[ -s $SLOW ]] && echo "- slow-streams: SLOW_STREAMS=\"$SLOW_STREAMS\" SLOW_DELAY_MS=$SLOW_DELAY_MS SLOW_PROTO=$SLOW_PROTO SLOW_H2_STREAMS=$SLOW_H2_STREAMS SLOW_RATE=$SLOW_RATE SLOW_OPENING=$SLOW_OPENING; open files limit $(ulimit -n)"
		((NEED_REDIS)) && echo "- scenarios with Redis state: a fresh redis-server per cell (no persistence) on core $LOAD_CORE; its CPU per request is in the note, not in CPU µs/req"
		echo "- $WARMUP s warm-up then $DURATION s measured per cell; every cell starts fresh server processes"
		echo "- latency: wrk, whole response (a stream's last byte); added p50 = p50 − p50 of the baseline (direct) cell"
		echo "- CPU/req: utime+stime of the server (nginx: master + worker; direct: the mock) over the measured run ÷ requests"
		echo "- peak RSS: VmHWM of the server process(es) at the end of the cell"
		echo "- idle TTFB (streams): median time to the first response byte over $TTFB_SAMPLES sequential requests before the load, ± vs the baseline"
		echo
		echo "| scenario | mode | conns | req/s | p50 ms | p99 ms | added p50 µs | CPU µs/req | peak RSS MB | errors | idle TTFB µs | note |"
		echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
		awk -F'\t' '
			{ rows[NR] = $0; if ($5 != "") { base[$1 SUBSEP $3 SUBSEP $4] = $6; ttfb[$1 SUBSEP $3 SUBSEP $4] = $15 } }
			END {
				for (i = 1; i <= NR; i++) {
					split(rows[i], f, "\t")
					if (f[5] == "") {
						note = f[13]
						if (length(note) > 140) note = substr(note, 1, 140) "…"
						printf "| %s | %s | %s | | | | | | | | | %s |\n", f[1], f[3], f[4], note
						continue
					}
					key = f[14] SUBSEP f[3] SUBSEP f[4]
					added = (f[2] != "direct" && f[1] != f[14] && (key in base)) ? sprintf("%+d", f[6] - base[key]) : "–"
					errs = f[8] + f[9]
					t = f[15]
					if (t != "" && f[2] != "direct" && f[1] != f[14] && ttfb[key] != "") t = sprintf("%d (%+d)", t, t - ttfb[key])
					note = f[13]
					if (f[8] > 0) note = note (note == "" ? "" : "; ") f[8] " non-2xx"
					if (f[9] > 0) note = note (note == "" ? "" : "; ") f[9] " socket errors"
					printf "| %s | %s | %s | %s | %.2f | %.2f | %s | %.1f | %.1f | %d | %s | %s |\n", f[1], f[3], f[4], f[5],
						f[6] / 1000, f[7] / 1000, added, f[10], f[12] / 1024, errs, t, note
				}
			}' "$RESULTS"
		if [[ -s $FAULTS ]]; then
			echo
			echo "Fault runs (json, c${CONNS%% *}; failed = non-2xx + socket errors):"
			echo
			echo "| run | phase | req/s | p50 ms | p99 ms | failed | note |"
			echo "|---|---|---:|---:|---:|---:|---|"
			awk -F'\t' '{
				if ($3 == "") { printf "| %s | %s | | | | | %s |\n", $1, $2, $7; next }
				printf "| %s | %s | %s | %.2f | %.2f | %d | %s |\n", $1, $2, $3, $4 / 1000, $5 / 1000, $6, $7
			}' "$FAULTS"
		fi
		if [[ -s $SLOW ]]; then
			echo
			echo "Slow streams (the mock waits $SLOW_DELAY_MS ms before each streamed event; slow_client starts $SLOW_RATE streams/s and reads each to its end, on core $LOAD_CORE with the mock; server alone on core $GW_CORE; peak open = most streams open at the same moment; idle = VmRSS before the load, peak = VmHWM (largest VmRSS sampled every 200 ms in the note), after = VmRSS once every stream ended; per stream = (peak − idle) ÷ streams):"
			echo
			echo "| run | server | streams | client | completed | failed | peak open | idle RSS MB | peak RSS MB | per stream KB | after RSS MB | time s | note |"
			echo "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
			awk -F'\t' '{
				if ($5 == "") { printf "| %s | %s | %s | %s | | | | | | | | | %s |\n", $1, $2, $3, $4, $14; next }
				note = sprintf("sampled VmRSS max %.1f MB; last stream had its headers after %.1f s", $12 / 1024, $8 / 1000)
				if ($14 != "") note = note "; " $14
				printf "| %s | %s | %s | %s | %d | %d | %d | %.1f | %.1f | %.1f | %.1f | %.1f | %s |\n", $1, $2, $3, $4, $5, $6, $7,
					$10 / 1024, $11 / 1024, ($3 > 0 ? ($11 - $10) / $3 : 0), $13 / 1024, $9 / 1000, note
			}' "$SLOW"
		fi
	} >"$report"
	cat "$report"
}

# ---------------------------------------------------------------- main
# 1 when a scenario selected by ONLY uses a config template with @REDIS_URL@.
needs_redis() {
	local line name target config rest
	while IFS= read -r line; do
		line=$(trim "${line%%#*}")
		[[ -z $line ]] && continue
		IFS='|' read -r name target config rest <<<"$line"
		name=$(trim "$name") config=$(trim "$config")
		[[ -n $ONLY && ! $name =~ $ONLY ]] && continue
		[[ $config != - && -f $BENCH/configs/$config ]] && grep -q '@REDIS_URL@' "$BENCH/configs/$config" && {
			echo 1
			return
		}
	done <"$SCENARIOS"
	echo 0
}

main() {
	mkdir -p "$OUT"
	NEED_REDIS=$(needs_redis)
	install_tools
	build
	[[ -x $GATEWAY_BIN ]] || die "no gateway binary at $GATEWAY_BIN"
	[[ -x $MOCK_BIN ]] || die "no mock upstream binary at $MOCK_BIN"
	local ports=("$MOCK_PORT" "$NGINX_PORT" "$GW_PORT")
	((NEED_REDIS)) && ports+=("$REDIS_PORT")
	for port in "${ports[@]}"; do
		port_busy "$port" && die "port $port is in use (set PORT_BASE)"
	done
	ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
	write_nginx_conf
	: >"$RESULTS"
	: >"$FAULTS"
	: >"$SLOW"
	: >"$OUT/mock.log"
	: >"$OUT/redis.log"
	local line name target config path body options
	while IFS= read -r line; do
		line=$(trim "${line%%#*}")
		[[ -z $line ]] && continue
		IFS='|' read -r name target config path body options <<<"$line"
		name=$(trim "$name")
		[[ -n $ONLY && ! $name =~ $ONLY ]] && continue
		target=$(trim "$target") config=$(trim "$config") path=$(trim "$path") body=$(trim "$body")
		case $target in
		failover) run_failover "$name" "$config" "$path" "$body" ;;
		reload) run_reload "$name" "$config" "$path" "$body" ;;
		slow-streams) run_slow_streams "$name" "$config" "$path" "$body" ;;
		*) run_scenario "$name" "$target" "$config" "$path" "$body" "$(trim "${options:-}")" ;;
		esac
	done <"$SCENARIOS"
	write_report
}

main "$@"
