#!/usr/bin/env bash
# What a user waits for before the CLI says anything, each run a fresh
# process: `topiary --help`, `topiary version` and `topiary get` against a
# local coordinator (the torch-free front), beside the same commands of
# topiary-compute (which loads libtorch, as every command did before the
# split). Median wall time and peak resident memory (GNU time) of RUNS runs.
# Usage: bench/cli_startup.sh [BIN_DIR] [RUNS]
set -euo pipefail
bin=$(realpath "${1:-build/bin}")
runs=${2:-20}
work=$(mktemp -d)
trap 'kill $coord 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/root"
"$bin/topiary-coordinator" --listen 127.0.0.1:0 --state-dir "$work/state" --storage-root "$work/root" \
  --port-file "$work/port" --log-level error >"$work/coord.log" 2>&1 &
coord=$!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
server=127.0.0.1:$(head -1 "$work/port")
printf 'name: b\nteacher: {path: %s/root/t}\ndata: {eval: {path: %s/root/v.bin}}\nstages:\n  - evaluate: {perplexity: true}\n' \
  "$work" "$work" >"$work/spec.yaml"
job=$("$bin/topiary" submit "$work/spec.yaml" --server "$server")

# median_ms_kb CMD...: "<median ms> <median peak KB>"
measure() {
  for _ in $(seq "$runs"); do /usr/bin/time -f "%e %M" "$@" >/dev/null 2>>"$work/t" || true; done
  local ms kb
  ms=$(tail -n "$runs" "$work/t" | awk '{print int($1 * 1000)}' | sort -n | awk '{v[NR]=$1} END {print v[int((NR + 1) / 2)]}')
  kb=$(tail -n "$runs" "$work/t" | awk '{print $2}' | sort -n | awk '{v[NR]=$1} END {print v[int((NR + 1) / 2)]}')
  echo "$ms $kb"
}
printf '%-34s %10s %10s\n' command "median ms" "peak MB"
declare -A res
for c in "--help" "version" "get $job --server $server"; do
  for b in topiary topiary-compute; do
    read -r ms kb < <(measure "$bin/$b" $c)
    res["$b $c"]="$ms $kb"
    printf '%-34s %10d %10.1f\n' "$b ${c%% *}" "$ms" "$(echo "$kb / 1024" | bc -l)"
  done
done
read -r help_ms help_kb <<<"${res[topiary --help]}"
read -r get_ms get_kb <<<"${res[topiary get $job --server $server]}"
read -r old_ms _ <<<"${res[topiary-compute get $job --server $server]}"
echo "SUMMARY cli_startup help_ms=$help_ms help_mb=$((help_kb / 1024)) get_ms=$get_ms get_mb=$((get_kb / 1024)) compute_get_ms=$old_ms get_speedup=$(echo "scale=1; $old_ms / ($get_ms + 0.001)" | bc) runs=$runs"
