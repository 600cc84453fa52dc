#!/usr/bin/env bash
# `sluice logs` against the seed's pipeline on the same generated nginx log, one run each, with wall
# time and peak RSS from /usr/bin/time -v.
#   bench/diagnose/logs.sh [SIZE_MB=1024]
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE="${1:-1024}"
LOG="${TMPDIR:-/tmp}/sluice-bench-access.log"
[ -f "$LOG" ] && [ "$(stat -c %s "$LOG")" -ge $((SIZE * 1024 * 1024)) ] || npx node bench/diagnose/gen-nginx-log.ts "$LOG" "$SIZE"
LINES=$(wc -l <"$LOG")
cat "$LOG" >/dev/null # warm the page cache for both
measure() {
  local name="$1"; shift
  /usr/bin/time -v -o /tmp/sluice-bench-time.txt "$@" >/tmp/sluice-bench-out.txt
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' /tmp/sluice-bench-time.txt)
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' /tmp/sluice-bench-time.txt)
  local secs
  secs=$(echo "$wall" | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
  printf '%-10s wall %7.2f s  %10.0f lines/s  peak RSS %7.1f MiB\n' "$name" "$secs" "$(echo "$LINES / $secs" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
}
echo "$LOG: $(du -m "$LOG" | cut -f1) MiB, $LINES lines"
measure pipeline bash -c "grep ' 504 ' '$LOG' | awk '{print \$7}' | sort | uniq -c | sort -rn"
head -3 /tmp/sluice-bench-out.txt
NODE=$(npx node -p process.execPath) # the project's Node 24, without npx in the measurement
measure sluice "$NODE" bin/sluice.js logs "$LOG"
head -6 /tmp/sluice-bench-out.txt
