#!/usr/bin/env bash
# A short fuzzing run of the acceptor (fuzz/fuzz_targets/acceptor.rs):
# arbitrary client bytes through the acceptor and the direct path, which
# must agree and always send an alert. cargo-fuzz is installed once into
# target/tools (cached); stable Rust runs it with RUSTC_BOOTSTRAP=1.
# Usage: scripts/fuzz.sh [SECONDS]   (default 60)
# A crash leaves its input in fuzz/artifacts/acceptor/: add it to
# fuzz/regressions/ (replayed by `cargo test`) once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
tools=$PWD/target/tools
if [ ! -x "$tools/bin/cargo-fuzz" ]; then
  cargo install --locked --quiet cargo-fuzz --version 0.13.2 --root "$tools"
fi
corpus=$PWD/target/fuzz-corpus/acceptor
mkdir -p "$corpus"
cp fuzz/regressions/* "$corpus/"
cd fuzz
export RUSTC_BOOTSTRAP=1
"$tools/bin/cargo-fuzz" build --sanitizer none acceptor
"$tools/bin/cargo-fuzz" run --sanitizer none acceptor "$corpus" -- \
  -max_total_time="$secs" -max_len=4096 -print_final_stats=1 2>&1 | grep -vE '^#[0-9]+' | tail -25
echo "fuzz: no crash in ${secs}s"
