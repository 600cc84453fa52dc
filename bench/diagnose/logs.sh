#!/usr/bin/env bash
# `sluice logs` against the seed's pipeline on the same generated nginx log: ROUNDS interleaved rounds
# (the machine is shared: compare within a round), each with wall time, CPU time (user + sys) and peak
# RSS from /usr/bin/time -v, and the ratio of the two wall times.
#   bench/diagnose/logs.sh [SIZE_MB=1024] [ROUNDS=3]
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE="${1:-1024}"
ROUNDS="${2:-3}"
LOG="${TMPDIR:-/tmp}/sluice-bench-access.log"
[ -f "$LOG" ] && [ "$(stat -c %s "$LOG")" -ge $((SIZE * 1024 * 1024)) ] || npx node bench/diagnose/gen-nginx-log.ts "$LOG" "$SIZE"
LINES=$(wc -l <"$LOG")
cat "$LOG" >/dev/null # warm the page cache for both
SECS=0
measure() {
  local name="$1"; shift
  /usr/bin/time -v -o /tmp/sluice-bench-time.txt "$@" >/tmp/sluice-bench-out.txt
  local wall rss cpu
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' /tmp/sluice-bench-time.txt)
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' /tmp/sluice-bench-time.txt)
  cpu=$(awk -F': ' '/(User|System) time \(seconds\)/ {s += $2} END {print s}' /tmp/sluice-bench-time.txt)
  SECS=$(echo "$wall" | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
  printf '%-10s wall %7.2f s  %10.0f lines/s  cpu %6.2f s  peak RSS %7.1f MiB\n' "$name" "$SECS" \
    "$(echo "$LINES / $SECS" | bc -l)" "$cpu" "$(echo "$rss / 1024" | bc -l)"
}
echo "$LOG: $(du -m "$LOG" | cut -f1) MiB, $LINES lines"
NODE=$(npx node -p process.execPath) # the project's Node 24, without npx in the measurement
for round in $(seq "$ROUNDS"); do
  echo "round $round (load average $(cut -d' ' -f1 /proc/loadavg))"
  measure pipeline bash -c "grep ' 504 ' '$LOG' | awk '{print \$7}' | sort | uniq -c | sort -rn"
  PIPE=$SECS
  [ "$round" = 1 ] && head -3 /tmp/sluice-bench-out.txt
  measure sluice "$NODE" bin/sluice.js logs "$LOG"
  [ "$round" = 1 ] && head -6 /tmp/sluice-bench-out.txt
  printf 'ratio      %.2fx the pipeline'"'"'s wall time\n' "$(echo "$SECS / $PIPE" | bc -l)"
done
