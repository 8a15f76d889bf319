#!/bin/sh
# Output benchmark: one local step prints SIZE_MB megabytes (default 1024) through
# `planrun apply`, in lines of 100 bytes and as one line without a newline. Reports MB/s
# and the peak RSS from `/usr/bin/time -v`. Output goes to the per-host log (kept whole)
# and, without `-v`, not to the terminal; the last run adds `-v`.
#
# Usage: benches/output_throughput.sh [SIZE_MB]
set -eu

cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=target}"
bin="$(pwd)/$CARGO_TARGET_DIR/release/planrun"
cargo build --release --quiet
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
size_mb=${1:-1024}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run() {
  name=$1 command=$2 flags=${3:-}
  rm -rf "$work/.planrun"
  cat >"$work/plan.yaml" <<PLAN
version: 1
application: bench
lock: { path: "$work/lock" }
servers:
  - { host: 127.0.0.1, name: h1, transport: local, roles: [app] }
rollout:
  select: { roles: [app] }
  steps:
    - { name: flood, run: "$command", timeout: 30m }
PLAN
  start=$(date +%s.%N)
  (cd "$work" && /usr/bin/time -v "$bin" apply plan.yaml --yes $flags >/dev/null 2>"$work/time.txt") || {
    tail -20 "$work/time.txt" >&2
    exit 1
  }
  end=$(date +%s.%N)
  rss=$(awk -F: '/Maximum resident set size/ { print int($2 / 1024) }' "$work/time.txt")
  log=$(du -m "$work"/.planrun/runs/*/h1.log | cut -f1)
  awk -v n="$name" -v s="$start" -v e="$end" -v mb="$size_mb" -v rss="$rss" -v logmb="$log" 'BEGIN {
    printf "| %s | %d MB | %.1f s | %.0f MB/s | %d MB | %d MB |\n", n, mb, e - s, mb / (e - s), rss, logmb
  }'
}

echo "| output | size | time | throughput | peak RSS | h1.log |"
echo "|---|---|---|---|---|---|"
# 99 bytes and a newline per line.
run "100-byte lines" "yes 012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678 | head -c $((size_mb * 1024 * 1024))"
run "one line, no newline" "head -c $((size_mb * 1024 * 1024)) /dev/zero | tr '\\\\0' x"
# The same lines printed too (`-v`, standard output to /dev/null).
run "100-byte lines, -v" "yes 012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678 | head -c $((size_mb * 1024 * 1024))" -v
