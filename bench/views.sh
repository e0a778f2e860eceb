#!/usr/bin/env bash
# The live views on RabbitMQ with a large backlog: `status`, `jobs --limit 50`, `inspect` with
# two idle workers, and a `cancel` of every waiting job at once. The jobs require a tag no
# worker has, so they wait (shown as waiting for such a worker) while the workers stay live.
#
#   bench/views.sh            (JOBS=10000 RUNS=10; needs RabbitMQ on 127.0.0.1:5672)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${JOBS:-10000}
runs=${RUNS:-10}
work=$(mktemp -d)
prefix="vfbench-views-$$"
bin=$PWD/target/release/videofarm
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rabbitmqctl list_queues name --silent 2>/dev/null | grep "^$prefix" |
    while read -r q; do rabbitmqctl delete_queue "$q" </dev/null >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
cargo build --release --quiet -p videofarm

cat >"$work/videofarm.toml" <<EOF
broker = "amqp://guest:guest@127.0.0.1:5672/%2f"
amqp_prefix = "$prefix"
amqp_queue_expires_secs = 600
records_file = "$work/records.db"
EOF
cfg=(--config "$work/videofarm.toml")
mkdir -p "$work/in" "$work/out"
(cd "$work/in" && seq -f 'tape%05g.mpg' 1 "$jobs" | xargs touch)
now() { date +%s.%N; }
t0=$(now)
"$bin" "${cfg[@]}" enqueue --require nowhere --out "$work/out" "$work/in" >/dev/null
printf 'enqueue %s jobs: %.2f s\n' "$jobs" "$(echo "$(now) - $t0" | bc -l)"
for n in 1 2; do
  "$bin" "${cfg[@]}" worker --name "idle$n" >"$work/idle$n.log" 2>&1 &
  pids+=($!)
done
until [ "$("$bin" "${cfg[@]}" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["workers"])')" = 2 ]; do
  sleep 0.5
done
"$bin" "${cfg[@]}" jobs --limit 1 --json | grep -q 'waiting for a worker' || { echo "jobs do not say why they wait" >&2; exit 1; }

# Each view RUNS times as a whole process; the median, min and max wall time.
for view in "status --json" "jobs --limit 50 --json" "inspect --json"; do
  for i in $(seq 1 "$runs"); do
    a=$(now)
    # shellcheck disable=SC2086
    "$bin" "${cfg[@]}" $view >/dev/null
    echo "$(now) - $a" | bc -l
  done | sort -n | awk -v view="$view" -v jobs="$jobs" '{ t[NR] = $1 }
    END { printf "%s (%s queued, 2 idle workers): median %.0f ms (%.0f-%.0f), %d runs\n",
      view, jobs, 1000 * t[int((NR + 1) / 2)], 1000 * t[1], 1000 * t[NR], NR }'
done

echo "== cancel of all $jobs ids"
ids=$("$bin" "${cfg[@]}" jobs --json --limit "$jobs" | python3 -c 'import json,sys; print(" ".join(j["id"] for j in json.load(sys.stdin)))')
t0=$(now)
# shellcheck disable=SC2086
"$bin" "${cfg[@]}" cancel $ids >/dev/null
printf 'cancel %s ids: %.2f s\n' "$jobs" "$(echo "$(now) - $t0" | bc -l)"
"$bin" "${cfg[@]}" status
