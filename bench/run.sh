#!/usr/bin/env bash
# One command for every figure of bench/README.md, side by side with the Celery reference, in
# one run on this machine: prints a table and writes bench/out/latest.json.
#
#   bench/run.sh        (CLIPS=8 SECS=20 TINY=500 ROUNDS=3 QUEUE_JOBS=3000 BACKLOGS=10,10000,100000
#                        SPLIT=yes)
#
# Every variant runs once per round, and each round starts one variant later than the one
# before, so a slow spell of this shared machine lands on all of them alike; the table gives
# medians, and each ratio is the median of the ratios within a round.
#
# Needs ffmpeg, RabbitMQ on 127.0.0.1:5672 (guest/guest), python3 (Celery 5 is installed
# into bench/.venv on first use) and chromium (the dashboard's figure). Takes about 25 minutes
# on two cores with the defaults, then the scale figures (start-up, live views, the dashboard,
# 200 workers) about 15 more and bench/split.sh (one tape split across both cores) about 8.
set -euo pipefail
cd "$(dirname "$0")/.."
clips=${CLIPS:-8}; secs=${SECS:-20}; tiny=${TINY:-500}; rounds=${ROUNDS:-3}
queue_jobs=${QUEUE_JOBS:-3000}; backlogs=${BACKLOGS:-10,10000,100000}
amqp=${BENCH_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
if pgrep -f 'celery -A tasks worker' >/dev/null; then
  echo "a Celery worker from an earlier run is still alive; stop it first (pkill -f 'celery -A tasks worker')" >&2
  exit 1
fi
cargo build --release --quiet -p videofarm -p videofarm-bench
bin=$PWD/target/release/videofarm
if [ ! -x bench/.venv/bin/python ]; then
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install -q 'celery==5.*'
fi
py=$PWD/bench/.venv/bin/python
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p bench/out "$work/sd" "$work/tiny"
results="$work/results.jsonl"
: > "$results"

# Inputs: SD captures like a tape (720x480 interlaced MPEG-2 with stereo audio), and a tiny
# Matroska clip copied many times for the per-job cost.
bench/sd-clips.sh "$clips" "$secs" "$work/sd"
ffmpeg -v error -f lavfi -i "testsrc=size=160x120:rate=25" -t 0.4 -c:v mpeg2video "$work/tiny.mkv"
for i in $(seq 1 "$tiny"); do cp "$work/tiny.mkv" "$work/tiny/t$i.mkv"; done
sd=("$work"/sd/*.mpg)
prefix="vfbench-run-$$"
cat > "$work/farm.toml" <<TOML
amqp_prefix = "$prefix"
amqp_queue_expires_secs = 3600
[profiles.copy]
extension = "mkv"
args = ["-map", "0", "-c", "copy"]
video_codec = "mpeg2video"
TOML
vf() { "$bin" --config "$work/farm.toml" "$@"; }
archive=(-max_muxing_queue_size 1000 -map 0 -c copy -c:v libx264 -crf 17)
seconds_of() { "$py" -c 'import json,sys;print(json.load(sys.stdin)["seconds"])'; }

# Each variant: `name jobs command...`, run in a fresh folder ($out) that is removed after.
plain_one() { for f in "${sd[@]}"; do ffmpeg -hide_banner -nostdin -loglevel error -i "$f" "${archive[@]}" -y "$out/$(basename "$f" .mpg).mkv"; done; }
plain_two() {
  printf '%s\0' "${sd[@]}" | xargs -0 -P2 -I{} sh -c \
    'f=$1; o=$2; shift 2; ffmpeg -hide_banner -nostdin -loglevel error -i "$f" "$@" -y "$o/$(basename "$f" .mpg).mkv"' \
    sh {} "$out" "${archive[@]}"
}
celery() { (cd bench/celery_ref && "$py" drain.py "$@") | seconds_of > "$out/seconds"; }
encode_variants=(
  "plain_ffmpeg_one_at_a_time|plain_one"
  "plain_ffmpeg_two_at_a_time|plain_two"
  "farm_sqlite_1_worker|vf --broker sqlite:\$out/q.db run $work/sd --out \$out/o --workers 1"
  "farm_sqlite_2_workers|vf --broker sqlite:\$out/q.db run $work/sd --out \$out/o --workers 2"
  "farm_sqlite_default|vf --broker sqlite:\$out/q.db run $work/sd --out \$out/o"
  "farm_rabbitmq_1_worker|vf --broker $amqp run $work/sd --out \$out/o --workers 1"
  "farm_rabbitmq_2_workers|vf --broker $amqp run $work/sd --out \$out/o --workers 2"
  "celery_1_worker|celery encode 1 \$out/o ${sd[*]}"
  "celery_2_workers|celery encode 2 \$out/o ${sd[*]}"
)
tiny_variants=(
  "tiny_farm_sqlite_default|vf --broker sqlite:\$out/q.db run $work/tiny --out \$out/o --profile copy"
  "tiny_farm_rabbitmq_default|vf --broker $amqp run $work/tiny --out \$out/o --profile copy"
  "tiny_celery_2_workers|celery copy 2 \$out/o $work/tiny/*.mkv"
  "tiny_celery_verified_2_workers|celery copy_verified 2 \$out/o $work/tiny/*.mkv"
)

# run_rounds JOBS VARIANT...: every variant once per round, rotating the starting one.
run_rounds() {
  local jobs=$1; shift
  local variants=("$@") n=$# r k i name cmd t0 took
  for r in $(seq 0 $((rounds - 1))); do
    for k in $(seq 0 $((n - 1))); do
      i=$(((k + r) % n)); name=${variants[$i]%%|*}; cmd=${variants[$i]#*|}
      out="$work/run"; rm -rf "$out"; mkdir -p "$out"
      t0=$(date +%s.%N)
      if ! eval "$cmd" >"$work/last.log" 2>&1; then
        echo "$name failed:" >&2; tail -20 "$work/last.log" >&2; exit 1
      fi
      took=$(echo "$(date +%s.%N) - $t0" | bc -l)
      # Celery's time is its driver's (publish to last result), not the Python start-up.
      [ -f "$out/seconds" ] && took=$(cat "$out/seconds")
      took=$(printf '%.4f' "$took")
      printf '{"name": "%s", "round": %d, "seconds": %s, "jobs": %d}\n' "$name" "$r" "$took" "$jobs" >> "$results"
      printf '  round %d  %-30s %8.2f s\n' "$r" "$name" "$took"
    done
  done
}

echo "== encode: ${clips} x ${secs} s SD, archive profile, ${rounds} rounds"
run_rounds "$clips" "${encode_variants[@]}"
echo "== tiny real jobs: ${tiny} stream copies of a 0.4 s Matroska clip, ${rounds} rounds"
run_rounds "$tiny" "${tiny_variants[@]}"
echo "== queue alone, broker ceiling, backlog"
./target/release/queue-bench --jobs "$queue_jobs" --rounds "$rounds" --backlogs "$backlogs" | tee "$work/queue.txt"
echo "== footprint"
bash bench/footprint.sh | tee "$work/footprint.txt"

"$py" - "$results" "$work/queue.txt" "$work/footprint.txt" <<'PY' | tee bench/out/latest.txt
import json, statistics, subprocess, sys
from collections import defaultdict

rows = [json.loads(l) for l in open(sys.argv[1])]
queue = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
footprint = [json.loads(l) for l in open(sys.argv[3]) if l.startswith("{")]
first = lambda cmd: subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
machine = {
    "cores": int(first(["nproc"])),
    "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
    "ffmpeg": first(["ffmpeg", "-version"]),
    "rabbitmq": first(["rabbitmqctl", "version"]),
    "date": first(["date", "-u", "+%Y-%m-%d %H:%M UTC"]),
}
by = defaultdict(dict)
for r in rows:
    by[r["name"]][r["round"]] = r["seconds"]
median = {name: statistics.median(runs.values()) for name, runs in by.items()}

def ratio(a, b):
    """Median over rounds of a/b, each pair from the same round."""
    rounds = sorted(set(by[a]) & set(by[b]))
    return statistics.median(by[a][r] / by[b][r] for r in rounds)

def best_plain(name):
    rounds = sorted(by[name])
    return statistics.median(
        by[name][r] / min(by["plain_ffmpeg_one_at_a_time"][r], by["plain_ffmpeg_two_at_a_time"][r]) for r in rounds)

ratios = {
    "farm_sqlite_1/plain_1": ratio("farm_sqlite_1_worker", "plain_ffmpeg_one_at_a_time"),
    "farm_sqlite_2/plain_2": ratio("farm_sqlite_2_workers", "plain_ffmpeg_two_at_a_time"),
    "farm_rabbitmq_1/plain_1": ratio("farm_rabbitmq_1_worker", "plain_ffmpeg_one_at_a_time"),
    "farm_rabbitmq_2/plain_2": ratio("farm_rabbitmq_2_workers", "plain_ffmpeg_two_at_a_time"),
    "farm_default/best_plain": best_plain("farm_sqlite_default"),
    "celery_1/plain_1": ratio("celery_1_worker", "plain_ffmpeg_one_at_a_time"),
    "celery_2/plain_2": ratio("celery_2_workers", "plain_ffmpeg_two_at_a_time"),
    "farm_rabbitmq_2/celery_2": ratio("farm_rabbitmq_2_workers", "celery_2_workers"),
    "tiny_farm_sqlite/celery": ratio("tiny_farm_sqlite_default", "tiny_celery_2_workers"),
    "tiny_farm_rabbitmq/celery": ratio("tiny_farm_rabbitmq_default", "tiny_celery_2_workers"),
    "tiny_farm_sqlite/celery_verified": ratio("tiny_farm_sqlite_default", "tiny_celery_verified_2_workers"),
}
jobs = {r["name"]: r["jobs"] for r in rows}
per_s = {name: jobs[name] / median[name] for name in median if name.startswith("tiny_")}
celery_noop = next((f for f in footprint if "celery_noop_jobs_per_s" in f), {})
out = {"machine": machine, "rounds": max(r["round"] for r in rows) + 1, "runs": rows,
       "median_seconds": median, "ratios": ratios, "tiny_jobs_per_s": per_s,
       "queue": queue, "footprint": footprint}
json.dump(out, open("bench/out/latest.json", "w"), indent=2)

print(f"\nmachine: {machine['cores']} cores, {machine['cpu']}; {machine['ffmpeg']}; RabbitMQ {machine['rabbitmq']}; {machine['date']}")
print(f"\n{'run':<32} {'median s':>9}   {'rounds'}")
for name in by:
    print(f"{name:<32} {median[name]:>9.2f}   " + " ".join(f"{by[name][r]:.2f}" for r in sorted(by[name])))
print(f"\n{'ratio (median of per-round ratios)':<36} {'value':>7}")
for name, value in ratios.items():
    print(f"{name:<36} {value:>7.3f}")
print()
for name, value in per_s.items():
    print(f"{name:<36} {value:>7.1f} jobs/s")
if celery_noop:
    farm = queue.get("rabbitmq_1_consumers", {}).get("jobs_per_s", 0)
    print(f"\nno-op jobs/s, 1 consumer: videofarm on RabbitMQ {farm:.0f}, Celery {celery_noop['celery_noop_jobs_per_s']:.0f} "
          f"(x{farm / celery_noop['celery_noop_jobs_per_s']:.1f}); broker ceiling {queue.get('broker_ceiling_1_consumers', {}).get('jobs_per_s', 0):.0f}")
print("\nwritten: bench/out/latest.json")
PY

# Fast at any size: short clips against plain ffmpeg, a worker's start, the live views with a
# large backlog, the dashboard on the wire, and a 200-worker farm (each script also runs
# alone); their output is added to bench/out/latest.txt.
{
  echo
  echo "== run --workers 1 against plain ffmpeg: 3 SD clips of 6 s, 5 alternating rounds"
  ROUNDS=5 bench/overhead.sh 3 6 | tail -3
  echo "== a worker's start to its first job taken"
  bench/startup.sh
  echo "== live views on RabbitMQ"
  bench/views.sh
  echo "== the dashboard on the wire"
  bench/dashboard.sh
  echo "== a large farm on one machine"
  bench/farm.sh | grep -v ' queued, 0 already known'
} 2>&1 | tee -a bench/out/latest.txt

# One long tape split across cores as if they were machines (bench/split.sh, also runnable
# alone): its figures go to bench/out/split.json. SPLIT=no leaves it out.
[ "${SPLIT:-yes}" = no ] || bench/split.sh
