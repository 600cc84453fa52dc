#!/usr/bin/env bash
# probe's own overhead: median total and TTFB of `sluice probe` and of `curl -w` against the same
# local endpoint (the demo upstream's /fast and /slow?ms=200), 20 fresh connections each.
#   bench/diagnose/probe-vs-curl.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
NODE=$(npx node -p process.execPath)
PORT=${PORT:-19123}
"$NODE" bin/sluice.js demo-upstream --port "$PORT" 2>/dev/null &
DEMO=$!
trap 'kill $DEMO' EXIT
sleep 1
for path in /fast '/slow?ms=200'; do
  url="http://127.0.0.1:$PORT$path"
  curl_out=$(for _ in $(seq 20); do curl -s -o /dev/null -w '%{time_starttransfer} %{time_total}\n' "$url"; done)
  c_ttfb=$(echo "$curl_out" | awk '{print $1*1000}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  c_total=$(echo "$curl_out" | awk '{print $2*1000}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  read -r p_ttfb p_total < <("$NODE" bin/sluice.js probe "$url" -n 20 --json | "$NODE" -e '
    const r = JSON.parse(require("fs").readFileSync(0, "utf8")).runs;
    const med = (a) => a.sort((x, y) => x - y)[Math.floor((a.length - 1) / 2)];
    console.log(med(r.map((x) => x.dns_ms + x.connect_ms + x.tls_ms + x.ttfb_ms)).toFixed(2), med(r.map((x) => x.total_ms)).toFixed(2));')
  printf '%-16s curl: start→first byte %6.2f ms, total %6.2f ms | probe: %6.2f ms, total %6.2f ms\n' "$path" "$c_ttfb" "$c_total" "$p_ttfb" "$p_total"
done
