#!/usr/bin/env bash
# Fuzzing (fuzz/fuzz_targets/): every target for SECONDS each, and the
# acceptor once more under AddressSanitizer.
#   acceptor       arbitrary client bytes: acceptor and direct path agree, alerts always
#   server_stream  arbitrary peer traffic into a server after a real handshake
#   client_stream  the same into a client (both: buffer and fd mode)
#   api_sequence   arbitrary sequences of C API calls, misuse included
# cargo-fuzz is installed once into target/tools (cached); stable Rust runs
# it with RUSTC_BOOTSTRAP=1. Corpora live under target/fuzz-corpus/TARGET,
# seeded from fuzz/seeds/TARGET and fuzz/regressions/TARGET.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (default 36 s; all targets)
# A crash leaves its input in fuzz/artifacts/TARGET/: once fixed, add it to
# fuzz/regressions/TARGET/ (replayed by `cargo test`); until then keep it in
# fuzz/pending/TARGET/ with a note in fuzz/pending/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-36}; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(acceptor server_stream client_stream api_sequence acceptor-asan)
tools=$PWD/target/tools
if [ ! -x "$tools/bin/cargo-fuzz" ]; then
  cargo install --locked --quiet cargo-fuzz --version 0.13.2 --root "$tools"
fi
export RUSTC_BOOTSTRAP=1
root=$PWD
cd fuzz
status=0
for t in "${targets[@]}"; do
  name=${t%-asan}; san=none; tdir=$root/fuzz/target
  if [ "$t" != "$name" ]; then san=address; tdir=$root/target/fuzz-asan; fi
  maxlen=8192; [ "$name" = acceptor ] && maxlen=4096
  corpus=$root/target/fuzz-corpus/$name
  mkdir -p "$corpus"
  for d in "$root/fuzz/seeds/$name" "$root/fuzz/regressions/$name"; do
    [ -d "$d" ] && cp "$d"/* "$corpus/"
  done
  log=$root/target/fuzz-$t.log
  # `run` builds the target first (not counted in SECONDS).
  if "$tools/bin/cargo-fuzz" run --sanitizer "$san" --target-dir "$tdir" "$name" "$corpus" -- \
      -max_total_time="$secs" -max_len="$maxlen" -print_final_stats=1 -timeout=20 > "$log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    echo "fuzz: $t: ${execs:-?} executions in ${secs}s, no crash (corpus $(ls "$corpus" | wc -l))"
  else
    known=""
    while IFS=$'\t' read -r id re; do
      case $id in ''|'#'*) continue;; esac
      if grep -qE -- "$re" "$log"; then known=$id; break; fi
    done < "$root/fuzz/pending/KNOWN"
    if [ -n "$known" ]; then
      execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
      echo "fuzz: $t: known defect $known reproduced after ${execs:-?} executions (see fuzz/pending/README.md; input in fuzz/artifacts/$name/), not a new failure"
    else
      status=1
      grep -vE '^#[0-9]+' "$log" | tail -40
      echo "fuzz: $t: CRASH (input in fuzz/artifacts/$name/)"
    fi
  fi
done
exit $status
