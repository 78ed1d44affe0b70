#!/usr/bin/env bash
# run_fuzzer.sh FUZZER CORPUS_DIR SECONDS: replays every input of the seed
# corpus, then fuzzes for SECONDS (0: replay only) into a scratch corpus, so
# the source tree is never written. A crash leaves its input in the scratch
# directory (printed) and fails.
set -euo pipefail
fuzzer=$(realpath "$1") corpus=$(realpath "$2") seconds=$3
scratch=$(mktemp -d "${TMPDIR:-/tmp}/topiary-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"
common=(-rss_limit_mb=2048 -timeout=10 -max_len=65536 -print_final_stats=1)
"$fuzzer" "${common[@]}" -runs=0 "$corpus"
if [ "$seconds" -gt 0 ]; then
  mkdir -p new
  if ! "$fuzzer" "${common[@]}" -max_total_time="$seconds" new "$corpus"; then
    trap - EXIT
    echo "fuzzer failed; inputs and crash in $scratch" >&2
    exit 1
  fi
fi
