#!/usr/bin/env bash
# The fleet benchmark (issue 27): simulated vLLM/llama.cpp replicas with prefix caches, slots and queues,
# multi-turn agent sessions and single-turn traffic, sent through the release gateway once per balancing
# strategy and straight to the replicas by a client that pins each session to one replica.
#
#   bash bench/fleet.sh                          # every workload and strategy, one round (≈ 2-3 minutes)
#   ROUNDS=3 bash bench/fleet.sh                 # medians over three rounds
#   WORKLOADS=sessions STRATEGIES="fixed round_robin" bash bench/fleet.sh
#   bash bench/fleet.sh --sessions 96 --think-ms 400    # any knob of the fleet binary (see --help)
#
# Results: a table on stdout and in $OUT/results.md, every cell in $OUT/results.tsv, the gateway's config
# and log per cell in $OUT. The model and its knobs: BENCHMARKS.md, "Fleet".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/bench/out/fleet}"
ROUNDS="${ROUNDS:-1}"
WORKLOADS="${WORKLOADS:-sessions anonymous single kill}"
# `LABEL=YAML` strategies are merged into the gateway's backend (see the fleet binary's --strategy).
DEFAULT_STRATEGIES=(
	fixed
	round_robin
	least_connections
	latency
	prefix_affinity
	"affinity+engine={load_balancing: prefix_affinity, engine_load: {interval_s: 0.1}}"
	"affinity+least_loaded={load_balancing: prefix_affinity, affinity: {placement: least_loaded}}"
)
if [[ -n "${STRATEGIES:-}" ]]; then
	read -r -a STRATEGY_LIST <<<"$STRATEGIES"
else
	STRATEGY_LIST=("${DEFAULT_STRATEGIES[@]}")
fi
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
	(cd "$ROOT" && cargo build --release --bin ai-gateway --example fleet)
fi

args=(--gateway "$TARGET/release/ai-gateway" --out "$OUT" --rounds "$ROUNDS"
	--workloads "${WORKLOADS// /,}")
for strategy in "${STRATEGY_LIST[@]}"; do
	args+=(--strategy "$strategy")
done
mkdir -p "$OUT"
echo "fleet: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown), load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exec "$TARGET/release/examples/fleet" "${args[@]}" "$@"
