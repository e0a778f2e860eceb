#!/usr/bin/env bash
# A worker's start to its first job taken: a job waits, the worker starts, and the clock stops
# at the worker's own "job taken" log line (its timestamp, so no polling is measured). Warm:
# the profile trials' verdicts are kept from an earlier start; cold: a cache folder of its own,
# empty. On the embedded queue and on RabbitMQ.
#
#   bench/startup.sh            (RUNS=7; needs RabbitMQ on 127.0.0.1:5672 for the second half)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-7}
work=$(mktemp -d)
prefix="vfbench-startup-$$"
trap 'rm -rf "$work"' EXIT
cargo build --release --quiet -p videofarm
bin=$PWD/target/release/videofarm

now_ns() { date +%s%N; }

# One start: the seconds from spawning the worker to its first "job taken" line.
first_job() { # cache-dir, broker args...
  local cache=$1; shift
  "$bin" "$@" enqueue "$work/missing.mpg" --force --out "$work/out" >/dev/null 2>&1
  local log="$work/worker.log"
  local t0; t0=$(now_ns)
  XDG_CACHE_HOME=$cache RUST_LOG=info "$bin" "$@" worker --concurrency 1 >"$log" 2>&1 &
  local pid=$!
  until grep -q 'job taken' "$log"; do sleep 0.01; done
  kill -TERM "$pid"; wait "$pid" || true
  python3 - "$t0" "$log" <<'EOF'
import sys, datetime, re
t0 = int(sys.argv[1]) / 1e9
for line in open(sys.argv[2]):
    if "job taken" in line:
        stamp = re.match(r"(\S+?)\.(\d+)Z", line)
        whole = datetime.datetime.strptime(stamp.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
        print(f"{whole.timestamp() + float('0.' + stamp.group(2)) - t0:.3f}")
        break
EOF
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)], "(min", a[1], "max", a[NR] ")"}'; }

for backend in sqlite amqp; do
  if [ "$backend" = sqlite ]; then
    broker=(--broker "sqlite:$work/queue.db")
  else
    cat >"$work/amqp.toml" <<EOF
broker = "amqp://guest:guest@127.0.0.1:5672/%2f"
amqp_prefix = "$prefix"
amqp_queue_expires_secs = 120
records_file = "$work/records.db"
EOF
    broker=(--config "$work/amqp.toml")
  fi
  warm="$work/cache-warm-$backend"
  first_job "$warm" "${broker[@]}" >/dev/null
  for kind in warm cold; do
    for i in $(seq 1 "$runs"); do
      if [ $kind = cold ]; then cache="$work/cache-cold-$backend-$i"; else cache=$warm; fi
      first_job "$cache" "${broker[@]}"
    done | median | sed "s/^/$backend $kind: start to first job taken, s: /"
  done
done
