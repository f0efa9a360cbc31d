#!/usr/bin/env bash
# Fuzzing (fuzz/fuzz_targets/): every target for SECONDS each, and the
# acceptor once more under AddressSanitizer.
#   acceptor       arbitrary client bytes: acceptor and direct path agree, alerts always
#   server_stream  arbitrary peer traffic into a server after a real handshake
#   client_stream  the same into a client (both: buffer and fd mode)
#   offload_records  arbitrary records into an offloaded connection (kTLS
#                  emulated), through read and the event API
#   api_sequence   arbitrary sequences of C API calls, misuse included
# cargo-fuzz is installed once into target/tools (cached); stable Rust runs
# it with RUSTC_BOOTSTRAP=1. Corpora live under target/fuzz-corpus/TARGET,
# seeded from fuzz/seeds/TARGET and fuzz/regressions/TARGET.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (default 30 s; all targets)
# Crashes are replayed and must match a known defect (fuzz/pending/KNOWN);
# a new one fails the run. Its input is in fuzz/artifacts/TARGET/: once fixed, add it to
# fuzz/regressions/TARGET/ (replayed by `cargo test`); until then keep it in
# fuzz/pending/TARGET/ with a note in fuzz/pending/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(acceptor server_stream client_stream offload_records api_sequence acceptor-asan)
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
    [ -d "$d" ] && find "$d" -maxdepth 1 -type f ! -name '.*' -exec cp {} "$corpus/" \;
  done
  log=$root/target/fuzz-$t.log
  art=$root/fuzz/artifacts/$name
  mkdir -p "$art"; ls "$art" > "$log.before"
  # Fork mode with -ignore_crashes: a known defect does not stop the search;
  # every crash found is replayed below and must match fuzz/pending/KNOWN.
  # `run` builds the target first (not counted in SECONDS).
  "$tools/bin/cargo-fuzz" run --sanitizer "$san" --target-dir "$tdir" "$name" "$corpus" -- \
      -max_total_time="$secs" -max_len="$maxlen" -timeout=20 -fork=1 -ignore_crashes=1 > "$log" 2>&1 || true
  execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
  bin=$tdir/x86_64-unknown-linux-gnu/release/$name
  new=$(ls "$art" | grep -vxF -f "$log.before" | grep '^crash-' || true)
  known_n=0 unknown=()
  for c in $new; do
    out=$("$bin" "$art/$c" 2>&1 || true)
    known=""
    while IFS=$'\t' read -r id re; do
      case $id in ''|'#'*) continue;; esac
      if grep -qE -- "$re" <<<"$out"; then known=$id; break; fi
    done < "$root/fuzz/pending/KNOWN"
    if [ -n "$known" ]; then known_n=$((known_n + 1)); else unknown+=("$c"); echo "$out" | grep -A3 panicked | head -8; fi
  done
  if [ -z "$execs" ] || ! grep -q 'INFO: -fork=1' "$log"; then
    status=1; tail -30 "$log"; echo "fuzz: $t: did not run"
  elif [ ${#unknown[@]} -gt 0 ]; then
    status=1
    echo "fuzz: $t: ${#unknown[@]} NEW CRASH(ES) in $execs executions: ${unknown[*]} (in fuzz/artifacts/$name/)"
  else
    echo "fuzz: $t: $execs executions in ${secs}s, no new crash ($known_n reproducing known defects of fuzz/pending/KNOWN; corpus $(ls "$corpus" | wc -l))"
  fi
done
exit $status
