#!/usr/bin/env bash
# The chaos soak: JOBS small real jobs (default 1,000) on each backend, three workers, while a
# random worker is killed with SIGKILL and restarted every ~KILL_EVERY seconds (default 10), one
# worker is paused past its lease and resumed, and on RabbitMQ the broker is restarted twice and
# every connection closed once. Then it checks: no job lost, no output written twice (workers log
# every rename), no partial or temporary file, no ffmpeg left running, status and inspect exact.
# Prints one line per check and exits 1 if one fails. The test suite runs a short version
# (crates/cli/tests/soak.rs). Restarting RabbitMQ needs rabbitmqctl (and root, as in CI).
#   bench/soak.sh            (JOBS=1000 KILL_EVERY=10 BACKENDS="sqlite rabbitmq")
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${JOBS:-1000}
kill_every=${KILL_EVERY:-10}
backends=${BACKENDS:-sqlite rabbitmq}
amqp=${AMQP:-amqp://guest:guest@127.0.0.1:5672/%2f}
cargo build --release -q -p videofarm
bin=$PWD/target/release/videofarm
work=$(mktemp -d)
failed=0
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

ffmpeg -v error -f lavfi -i testsrc=size=160x120:rate=25 -f lavfi -i sine=sample_rate=48000 \
  -t 2 -c:v mpeg2video -c:a mp2 -f mpeg "$work/seed.mpg"

check() {  # $1: what, $2: 0 when it holds
  if [ "$2" = 0 ]; then echo "  ok    $1"; else echo "  FAIL  $1"; failed=1; fi
}

soak() {  # $1: label; the config file is $work/$1.toml
  local label=$1 dir=$work/$1 n=0
  started_pids=()
  local config=$work/$label.toml
  mkdir -p "$dir/in" "$dir/out" "$dir/logs"
  for i in $(seq -w 1 "$jobs"); do cp "$work/seed.mpg" "$dir/in/tape$i.mpg"; done
  "$bin" --config "$config" enqueue --profile archive --out "$dir/out" "$dir/in" >/dev/null
  declare -A worker=()
  start() {
    "$bin" --config "$config" worker --name "w$n" --concurrency 1 2>"$dir/logs/w$n.log" >/dev/null &
    worker[w$n]=$!; pids+=($!); started_pids+=($!); n=$((n + 1))
  }
  for _ in 1 2 3; do start; done
  local t0=$SECONDS next_kill=$kill_every paused=0 restarts=0 closed=0 kills=0
  echo "$label: $jobs jobs, 3 workers"
  while :; do
    local now=$((SECONDS - t0))
    local done_count; done_count=$(find "$dir/out" -maxdepth 1 -name 'tape*.mkv' | wc -l)
    [ "$done_count" -ge "$jobs" ] && break
    [ "$now" -gt $((jobs * 3 + 600)) ] && { echo "  the soak did not end"; failed=1; break; }
    if [ "$now" -ge "$next_kill" ]; then
      local names=("${!worker[@]}") victim
      victim=${names[$((RANDOM % ${#names[@]}))]}
      kill -9 "${worker[$victim]}" 2>/dev/null || true
      wait "${worker[$victim]}" 2>/dev/null || true
      unset "worker[$victim]"; kills=$((kills + 1)); start
      next_kill=$((now + kill_every - 2 + RANDOM % 5))
    fi
    if [ "$paused" = 0 ] && [ "$now" -ge 15 ]; then
      local names=("${!worker[@]}"); local sleeper=${worker[${names[0]}]}
      kill -STOP "$sleeper"; sleep 8; kill -CONT "$sleeper"; paused=1   # lease_secs is 4
    fi
    if [ "$label" = rabbitmq ]; then
      if { [ "$restarts" = 0 ] && [ "$now" -ge 25 ]; } || { [ "$restarts" = 1 ] && [ "$now" -ge 60 ]; }; then
        rabbitmqctl stop_app >/dev/null; sleep 3; rabbitmqctl start_app >/dev/null
        rabbitmqctl await_startup >/dev/null; restarts=$((restarts + 1))
      fi
      if [ "$closed" = 0 ] && [ "$now" -ge 45 ]; then
        rabbitmqctl close_all_connections "videofarm soak" >/dev/null; closed=1
      fi
    fi
    sleep 1
  done
  local took=$((SECONDS - t0))
  for pid in "${worker[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${worker[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "  $took s, $kills workers killed, 1 paused past its lease, $restarts broker restarts, $closed connection closings"
  local outputs renames twice leftovers orphans
  outputs=$(find "$dir/out" -maxdepth 1 -name 'tape*.mkv' | wc -l)
  check "every job has its output ($outputs of $jobs)" "$([ "$outputs" = "$jobs" ]; echo $?)"
  renames=$(cat "$dir"/logs/*.log | grep -o ' published output=[^ ]*' | sort)
  twice=$(echo "$renames" | uniq -d | grep -c . || true)
  check "no output written twice ($(echo "$renames" | grep -c .) renames, $twice twice)" "$([ "$twice" = 0 ] && [ "$(echo "$renames" | grep -c .)" = "$jobs" ]; echo $?)"
  leftovers=$(find "$dir/out" -mindepth 1 \( -name '.*' -o ! -name '*.mkv' \) | wc -l)
  check "no partial, temporary or lock file ($leftovers)" "$([ "$leftovers" = 0 ]; echo $?)"
  # An ffmpeg that outlived its worker is a child of a (dead) worker of this soak, or of init.
  orphans=0
  for pid in $(pgrep -x ffmpeg || true); do
    parent=$(ps -o ppid= -p "$pid" | tr -d ' ')
    if [ "$parent" = 1 ] || [[ " ${started_pids[*]} " == *" $parent "* ]]; then orphans=$((orphans + 1)); fi
  done
  check "no ffmpeg left running ($orphans)" "$([ "$orphans" = 0 ]; echo $?)"
  local status; status=$("$bin" --config "$config" status --json)
  check "status exact: $status" "$(echo "$status" | python3 -c "import json,sys; s=json.load(sys.stdin); sys.exit(0 if (s['succeeded'], s['failed'], s['queued'], s['running']) == ($jobs, 0, 0, 0) else 1)"; echo $?)"
  local active; active=$("$bin" --config "$config" inspect --json | python3 -c "import json,sys; print(sum(len(w['active']) for w in json.load(sys.stdin)))")
  check "inspect shows no job running ($active)" "$([ "$active" = 0 ]; echo $?)"
}

common="lease_secs = 4.0
heartbeat_secs = 0.5
retry_backoff_secs = 0.5"
for backend in $backends; do
  case $backend in
    sqlite) printf 'broker = "sqlite:%s"\n%s\n' "$work/queue.db" "$common" > "$work/sqlite.toml" ;;
    rabbitmq) printf 'broker = "%s"\namqp_prefix = "vfsoak-%s"\nrecords_file = "%s"\n%s\n' \
                "$amqp" "$$" "$work/records.db" "$common" > "$work/rabbitmq.toml" ;;
  esac
  soak "$backend"
done
if [ "$backends" != "${backends/rabbitmq/}" ]; then
  for q in jobs retry failed cancelled records; do rabbitmqctl delete_queue "vfsoak-$$.$q" >/dev/null 2>&1 || true; done
fi
exit $failed
