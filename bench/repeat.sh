#!/usr/bin/env bash
# bench/repeat.sh: the selected cells of bench/run.sh, ROUNDS times in rotation, summarised by medians.
#
# On a shared 2-core VM one cell's CPU per request moves by ±20-30 % between runs, often more than the
# difference being measured. Running every cell once per round, round after round, spreads that noise
# over the cells compared, and the ratio of each round's own cells (gateway ÷ nginx, taken minutes apart
# at most) is steadier than a ratio of separate medians.
#
#   ROUNDS=8 DURATION=5 MODES=json ONLY='^(nginx-miss|gateway-miss|all-on-miss)$' bash bench/repeat.sh
#
# Every other variable goes to run.sh unchanged (CONNS, MODES, ONLY, DURATION, WARMUP, ...); the first
# round builds, later ones reuse its binaries. Each round's full output is in bench/out/round-N/. The
# summary (stdout and bench/out/repeat.md): per cell the median and range of req/s and CPU µs per
# request, and for gateway cells the median of the per-round ratio to nginx's CPU in the same round —
# to `nginx-miss` for `*-miss*` scenarios, else to `nginx` — when that cell was run too.
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROUNDS=${ROUNDS:-5}
BASE=${OUT:-$BENCH/out}
mkdir -p "$BASE"

for round in $(seq "$ROUNDS"); do
	echo "repeat: round $round of $ROUNDS" >&2
	skip_build=${SKIP_BUILD:-0}
	((round > 1)) && skip_build=1
	OUT=$BASE/round-$round SKIP_BUILD=$skip_build bash "$BENCH/run.sh" >/dev/null
done

python3 - "$BASE" "$ROUNDS" <<'EOF' | tee "$BASE/repeat.md"
import statistics
import sys
from collections import defaultdict

base, rounds = sys.argv[1], int(sys.argv[2])
cpu = defaultdict(dict)  # (name, mode, conns) -> {round: cpu µs}
rps = defaultdict(dict)
target = {}
order = []
for r in range(1, rounds + 1):
    with open(f"{base}/round-{r}/results.tsv") as tsv:
        for line in tsv:
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 10 or not cols[9]:
                continue
            key = (cols[0], cols[2], cols[3])
            if key not in target:
                order.append(key)
            target[key] = cols[1]
            cpu[key][r] = float(cols[9])
            rps[key][r] = float(cols[4])

def span(values):
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"

print(f"{rounds} rounds; medians (range)\n")
print("| scenario | mode | conns | req/s | CPU µs/req | CPU ÷ nginx, median of rounds |")
print("|---|---|---:|---:|---:|---|")
for key in order:
    name, mode, conns = key
    ratio = ""
    if target[key] != "nginx":
        ref = ("nginx-miss" if "-miss" in name else "nginx", mode, conns)
        pairs = [cpu[key][r] / cpu[ref][r] for r in cpu[key] if r in cpu.get(ref, {})]
        if pairs:
            ratio = f"{statistics.median(pairs):.2f}× vs {ref[0]} ({min(pairs):.2f}–{max(pairs):.2f}, {len(pairs)} rounds)"
    req = statistics.median(rps[key].values())
    print(f"| {name} | {mode} | {conns} | {req:.0f} | {span(list(cpu[key].values()))} | {ratio} |")
EOF
