#!/usr/bin/env bash
# Run every fuzz target for a bounded time (default 120 s each; not part of CI).
#
#   bash fuzz/run.sh            # each target for 120 s
#   bash fuzz/run.sh 600 sse_decoder   # one target for 10 minutes
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). New inputs go to
# fuzz/corpus/<target>/ (ignored by git), starting from the committed seeds in fuzz/seeds/<target>/;
# a crash is written to fuzz/artifacts/<target>/ and stops the run. To refresh the committed seeds
# from a run's corpus: cargo +nightly fuzz cmin <target> fuzz/corpus/<target>, then copy the few
# dozen smallest files that still add coverage to fuzz/seeds/<target>/.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-120}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(server_request client_response sse_decoder request_unread member_range blank_strings)
fi

# Debug assertions on (`-a`): overflow checks in our code, and the SIMD JSON escaper (json-escape-simd)
# copies a string's tail instead of loading a whole vector past its end — a read it keeps within one page,
# harmless, but AddressSanitizer reports it (the crate's `asan` feature, meant for this, does not build).
cargo +nightly fuzz build -O -a
for target in "${targets[@]}"; do
  echo "== $target for ${seconds}s"
  mkdir -p "corpus/$target"
  cargo +nightly fuzz run -O -a "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1
done
