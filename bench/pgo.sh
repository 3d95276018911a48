#!/usr/bin/env bash
# bench/pgo.sh: a profile-guided (PGO) release build of the gateway.
#
#   bash bench/pgo.sh                     # prints the optimized binary's path on its last line
#   GATEWAY_BIN=$(bash bench/pgo.sh | tail -1) bash bench/run.sh
#
# 1. builds the gateway with `-Cprofile-generate` (its own target dir, TARGET_DIR/pgo-gen);
# 2. trains it: bench/run.sh's pass-through, features (in memory and in Redis), conversion and log scenarios, json and
#    stream, c32 and c256 (TRAIN_ONLY, TRAIN_DURATION s each) — every gateway process writes a profile at exit;
# 3. merges the profiles with the llvm-profdata of rustc's own LLVM (rustup's llvm-tools component, or
#    Debian's llvm-N of the same major version when rustup cannot add it);
# 4. builds again with `-Cprofile-use` (TARGET_DIR/pgo-use/release/ai-gateway).
# The plain `cargo build --release` binary is unchanged; this is the build a release artifact should use.
# Environment: TRAIN_ONLY (regex on bench/scenarios.txt), TRAIN_DURATION (3), TRAIN_CONNS ("32 256"),
# PGO_DIR (TARGET_DIR/pgo: profiles), SKIP_INSTALL=1, and run.sh's PORT_BASE, GW_CORE, LOAD_CORE.
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH")
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PGO_DIR=${PGO_DIR:-$TARGET_DIR/pgo}
TRAIN_ONLY=${TRAIN_ONLY:-'^(gateway|all-on-miss|features-hit|features-miss-redis|conv-openai-to-anthropic|anthropic-in|reqlog-on|access-log-on)$'}
TRAIN_DURATION=${TRAIN_DURATION:-3}
TRAIN_CONNS=${TRAIN_CONNS:-"32 256"}

log() { echo "pgo: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# The llvm-profdata that reads what this rustc's LLVM writes (the raw profile format changes between
# LLVM major versions).
find_profdata() {
	local sysroot host major tool
	sysroot=$(rustc --print sysroot)
	host=$(rustc -vV | sed -n 's/^host: //p')
	major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
	tool=$sysroot/lib/rustlib/$host/bin/llvm-profdata
	if [[ ! -x $tool ]]; then
		log "adding rustup's llvm-tools component"
		rustup component add llvm-tools >&2 || true
	fi
	if [[ ! -x $tool ]]; then
		tool=$(command -v "llvm-profdata-$major" || true)
		if [[ -z $tool && ${SKIP_INSTALL:-0} != 1 ]]; then
			local sudo=()
			((EUID == 0)) || sudo=(sudo)
			log "installing Debian's llvm-$major"
			"${sudo[@]}" apt-get update -qq >&2
			DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "llvm-$major" >&2
			tool=$(command -v "llvm-profdata-$major" || true)
		fi
	fi
	[[ -n $tool && -x $tool ]] || die "no llvm-profdata for LLVM $major (rustup component llvm-tools or Debian llvm-$major)"
	echo "$tool"
}

PROFDATA_TOOL=$(find_profdata)
rm -rf "$PGO_DIR"
mkdir -p "$PGO_DIR/raw"

log "building the instrumented gateway (target dir $TARGET_DIR/pgo-gen)"
(cd "$ROOT" && RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$PGO_DIR/raw" CARGO_TARGET_DIR=$TARGET_DIR/pgo-gen \
	cargo build --release --bin ai-gateway >&2)

log "training: scenarios $TRAIN_ONLY, ${TRAIN_DURATION} s each"
LLVM_PROFILE_FILE="$PGO_DIR/raw/gateway-%p-%m.profraw" GATEWAY_BIN=$TARGET_DIR/pgo-gen/release/ai-gateway \
	ONLY=$TRAIN_ONLY DURATION=$TRAIN_DURATION WARMUP=1 CONNS=$TRAIN_CONNS OUT=$PGO_DIR/train \
	bash "$BENCH/run.sh" >"$PGO_DIR/train.md"
shopt -s nullglob
profiles=("$PGO_DIR"/raw/*.profraw)
((${#profiles[@]} > 0)) || die "the training wrote no profiles (see $PGO_DIR/train)"
"$PROFDATA_TOOL" merge -o "$PGO_DIR/merged.profdata" "${profiles[@]}"
log "merged ${#profiles[@]} profiles into $PGO_DIR/merged.profdata"
rm -rf "$PGO_DIR/raw" # ≈ 300 MB of raw profiles, all in the merged one

log "building the optimized gateway (target dir $TARGET_DIR/pgo-use)"
(cd "$ROOT" && RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$PGO_DIR/merged.profdata" CARGO_TARGET_DIR=$TARGET_DIR/pgo-use \
	cargo build --release --bin ai-gateway >&2)
echo "$TARGET_DIR/pgo-use/release/ai-gateway"
