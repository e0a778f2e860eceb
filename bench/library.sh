#!/usr/bin/env bash
# A library of many files (default 100,000): how long queueing it takes, and how fast `status`,
# `jobs`, the dashboard's requests and /metrics answer with that many jobs, on the embedded
# queue and on RabbitMQ. The files are empty (queueing reads only names and sizes); nothing is
# encoded. Prints one line per measure: the median of 5 answers.
#   bench/library.sh            (FILES=100000 AMQP=amqp://guest:guest@127.0.0.1:5672/%2f)
set -euo pipefail
cd "$(dirname "$0")/.."
files=${FILES:-100000}
amqp=${AMQP:-amqp://guest:guest@127.0.0.1:5672/%2f}
cargo build --release -q -p videofarm
bin=$PWD/target/release/videofarm
work=$(mktemp -d)
prefix="vfbench-library-$$"
cleanup() {
  pkill -f "$bin.*serve --listen 127.0.0.1:18765" 2>/dev/null || true
  for q in jobs retry failed cancelled records; do rabbitmqctl delete_queue "$prefix.$q" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/in"
python3 - "$work/in" "$files" <<'EOF'
import os, sys
folder, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    sub = os.path.join(folder, "shelf%03d" % (i // 1000))
    os.makedirs(sub, exist_ok=True)
    open(os.path.join(sub, "tape%06d.mpg" % i), "wb").close()
EOF

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# Median wall time of a command, 5 runs.
time_cmd() {
  for _ in 1 2 3 4 5; do
    local t0; t0=$(now); "$@" >/dev/null; echo "$(now) - $t0" | bc
  done | median
}
# Median time of an HTTP request, 5 runs.
time_get() {
  for _ in 1 2 3 4 5; do curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:18765$1"; done | median
}

measure() {  # $1: label, then the broker options
  local label=$1; shift
  local t0; t0=$(now)
  "$bin" "$@" enqueue "$work/in" --out "$work/out" >/dev/null 2>&1
  printf '%-9s queue %d files: %.2f s\n' "$label" "$files" "$(echo "$(now) - $t0" | bc)"
  printf '%-9s status: %.3f s\n' "$label" "$(time_cmd "$bin" "$@" status)"
  printf '%-9s jobs --limit 100: %.3f s\n' "$label" "$(time_cmd "$bin" "$@" jobs --limit 100)"
  "$bin" "$@" serve --listen 127.0.0.1:18765 >/dev/null 2>&1 &
  for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:18765/api/status && break; sleep 0.1; done
  for path in /api/status /api/workers "/api/jobs?state=queued&limit=100" \
      "/api/jobs?state=failed&limit=100" "/api/jobs?state=succeeded&limit=10&order=newest" /metrics; do
    printf '%-9s GET %s: %.3f s\n' "$label" "$path" "$(time_get "$path")"
  done
  pkill -f "$bin.*serve --listen 127.0.0.1:18765" || true
  sleep 0.5
}

measure sqlite --broker "sqlite:$work/queue.db"
printf 'broker = "%s"\namqp_prefix = "%s"\nrecords_file = "%s"\n' "$amqp" "$prefix" "$work/records.db" > "$work/amqp.toml"
measure rabbitmq --config "$work/amqp.toml"
# A machine that has never read the farm's records (a new dashboard host).
rm -f "$work"/records.db*
t0=$(now); "$bin" --config "$work/amqp.toml" status >/dev/null
printf '%-9s status, records read from the stream: %.2f s\n' rabbitmq "$(echo "$(now) - $t0" | bc)"
