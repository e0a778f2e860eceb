#!/usr/bin/env bash
# A large farm on one machine: WORKERS worker processes against the local RabbitMQ, with a
# stand-in for ffmpeg (crates/bench/src/standin.rs: it reads its input and reports progress at
# SPEED times real time, so only the farm is measured), 4 profiles and 2 tags, and JOBS jobs
# of 2 s each. The workers are grouped ten to a "machine" (ten share a records copy, as
# workers on one machine do). Midway, KILL workers are killed -9 at once.
#
#   bench/farm.sh     (WORKERS=200 JOBS=20000 SPEED=20 KILL=20; RabbitMQ on 127.0.0.1:5672;
#                      WORKER_LOG=debug for the workers' own logs, kept in $KEEP if set)
#
# Prints: jobs/s through the farm; the wait for the next job (a worker's job ending to its
# next taken, while work waits) p50/p99; the broker's memory and CPU; status, inspect and the
# dashboard's overview while the farm runs; how long a new machine's records copy takes to
# catch up; and what the kill cost (attempts lost, time until every job was done again).
set -euo pipefail
cd "$(dirname "$0")/.."
workers=${WORKERS:-200}
jobs=${JOBS:-20000}
speed=${SPEED:-20}
kill_n=${KILL:-20}
work=$(mktemp -d)
prefix="vfbench-farm-$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rabbitmqctl list_queues name --silent 2>/dev/null | grep "^$prefix" |
    while read -r q; do rabbitmqctl delete_queue "$q" </dev/null >/dev/null 2>&1 || true; done
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp -r "$work/logs" "$KEEP/"; fi
  rm -rf "$work"
}
trap cleanup EXIT
cargo build --release --quiet -p videofarm -p videofarm-bench
bin=$PWD/target/release/videofarm
mkdir -p "$work/bin" "$work/in" "$work/out" "$work/logs" "$work/machines"
ln -s "$PWD/target/release/standin-ffmpeg" "$work/bin/ffmpeg"
ln -s "$PWD/target/release/standin-ffmpeg" "$work/bin/ffprobe"

config() { # records file
  cat <<EOF
broker = "amqp://guest:guest@127.0.0.1:5672/%2f"
amqp_prefix = "$prefix"
amqp_queue_expires_secs = 900
records_file = "$1"
ffmpeg = "$work/bin/ffmpeg"
ffprobe = "$work/bin/ffprobe"
default_profile = "p1"
$(for p in p1 p2 p3 p4; do printf '[profiles.%s]\nextension = "mkv"\nvideo_codec = "h264"\nreport = false\nargs = ["-c:v", "libx264"]\n' "$p"; done)
EOF
}
config "$work/producer.db" >"$work/producer.toml"
vf() { "$bin" --config "$work/producer.toml" "$@"; }
now() { date +%s.%N; }

# Inputs: stand-in media of 2 s, a quarter of them for each profile, half of those needing a tag.
for p in 1 2 3 4; do
  mkdir -p "$work/in/p$p/any" "$work/in/p$p/gpu"
  (cd "$work/in/p$p/any" && seq -f 't%05g.mpg' 1 $((jobs / 8)) | while read -r f; do echo "standin duration=2" >"$f"; done)
  (cd "$work/in/p$p/gpu" && seq -f 't%05g.mpg' 1 $((jobs / 8)) | while read -r f; do echo "standin duration=2" >"$f"; done)
done

# Every job queued first (an idle farm), so the run measures the farm, not the producer.
t0=$(now)
for p in 1 2 3 4; do
  vf enqueue --profile "p$p" --out "$work/out/p$p" "$work/in/p$p/any" >/dev/null
  vf enqueue --profile "p$p" --require gpu --out "$work/out/p$p-gpu" "$work/in/p$p/gpu" >/dev/null
done
printf 'enqueue: %s jobs in %.1f s\n' "$jobs" "$(echo "$(now) - $t0" | bc -l)"

beam=$(pgrep -f beam.smp | head -1)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$beam/stat"; }
ticks0=$(cpu_ticks)
# Then the workers, ten to a machine, each machine's tags: gpu, fast, both, none. The clock
# runs from the first start.
t0=$(now)
for i in $(seq 1 "$workers"); do
  m=$(( (i - 1) / 10 ))
  if [ ! -f "$work/machines/$m.toml" ]; then
    config "$work/machines/$m.db" >"$work/machines/$m.toml"
    case $((m % 4)) in
      0) tags='["gpu", "fast"]' ;; 1) tags='["gpu"]' ;; 2) tags='["fast"]' ;; *) tags='[]' ;;
    esac
    sed -i "1i tags = $tags" "$work/machines/$m.toml"
  fi
  STANDIN_SPEED=$speed RUST_LOG=${WORKER_LOG:-info} XDG_CACHE_HOME="$work/cache" \
    "$bin" --config "$work/machines/$m.toml" worker --concurrency 1 --name "w$i" \
    >/dev/null 2>"$work/logs/w$i.log" &
  pids+=($!)
  disown
done
"$bin" --config "$work/producer.toml" serve --listen 127.0.0.1:18931 >/dev/null 2>&1 &
pids+=($!)

# While it runs: the views, then the kill.
time_it() { local a; a=$(now); "$@" >/dev/null 2>&1; printf '%.3f' "$(echo "$(now) - $a" | bc -l)"; }
killed_at=""
views=""
status_failed=0
while :; do
  # A status that fails under the load is counted (its first words kept), and the loop goes on.
  if ! line=$(vf status --json 2>"$work/status.err"); then
    [ $status_failed = 0 ] && echo "status failed at $(printf '%.0f' "$(echo "$(now) - $t0" | bc -l)") s: $(cat "$work/status.err")"
    status_failed=$((status_failed + 1))
    sleep 1
    continue
  fi
  done_n=$(echo "$line" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["succeeded"] + s["failed"])')
  if [ -z "$views" ] && [ "$done_n" -ge $((jobs / 4)) ]; then
    views="status $(time_it vf status --json) s, inspect $(time_it vf inspect --json) s, overview $(time_it curl -sf http://127.0.0.1:18931/api/overview) s"
    echo "views at $done_n done: $views"
    mem=$(rabbitmqctl status --formatter json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["memory"]["total"]["rss"] // 1048576)')
    echo "broker memory: $mem MiB"
  fi
  if [ -z "$killed_at" ] && [ "$done_n" -ge $((jobs / 2)) ]; then
    killed_at=$(now)
    for p in "${pids[@]:0:$kill_n}"; do kill -9 "$p" 2>/dev/null || true; done
    echo "killed $kill_n workers at $done_n done"
  fi
  [ "$done_n" -ge "$jobs" ] && break
  sleep 1
done
t1=$(now)
ticks1=$(cpu_ticks)
elapsed=$(echo "$t1 - $t0" | bc -l)
printf 'through the farm: %s jobs in %.1f s = %.1f jobs/s (2 s of media each at %sx: the workers could do %.1f jobs/s)\n' \
  "$jobs" "$elapsed" "$(echo "$jobs / $elapsed" | bc -l)" "$speed" "$(echo "$workers * $speed / 2" | bc -l)"
printf 'broker CPU: %.1f s over the run (%.0f%% of one core)\n' \
  "$(echo "($ticks1 - $ticks0) / $(getconf CLK_TCK)" | bc -l)" "$(echo "100 * ($ticks1 - $ticks0) / $(getconf CLK_TCK) / $elapsed" | bc -l)"
[ -n "$killed_at" ] && printf 'after the kill: every job done %.1f s later\n' "$(echo "$t1 - $killed_at" | bc -l)"
echo "status failed $status_failed times while the farm ran"
vf status
python3 - "$work/logs" "${killed_at:-0}" <<'EOF'
import os, re, sys, datetime
def stamp(line):
    m = re.match(r"(\S+?)\.(\d+)Z", line)
    if not m: return None
    t = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return t.timestamp() + float("0." + m.group(2))
waits, lost, retaken = [], 0, []
killed_at = float(sys.argv[2])
for name in os.listdir(sys.argv[1]):
    ended = None
    for line in open(os.path.join(sys.argv[1], name), errors="replace"):
        if "job taken" in line and ended is not None:
            waits.append(stamp(line) - ended)
        if "job succeeded" in line or "job failed" in line:
            ended = stamp(line)
        m = re.search(r"job taken job=\S+ attempt=(\d+)", line)
        if m and int(m.group(1)) > 1:
            lost += 1
            retaken.append(stamp(line) - killed_at)
waits.sort()
q = lambda f: waits[min(len(waits) - 1, int(f * len(waits)))] * 1000
print(f"wait for the next job: p50 {q(0.5):.0f} ms, p99 {q(0.99):.0f} ms ({len(waits)} waits)")
print(f"jobs taken again after the kill: {lost}" +
      (f", the last {max(retaken):.1f} s after it" if retaken and killed_at else ""))
EOF
t0=$(now)
config "$work/newcomer.db" >"$work/newcomer.toml"
"$bin" --config "$work/newcomer.toml" status >/dev/null
printf "a new machine's records copy caught up in %.1f s\n" "$(echo "$(now) - $t0" | bc -l)"
