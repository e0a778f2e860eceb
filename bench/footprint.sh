#!/usr/bin/env bash
# A videofarm worker's footprint and start-up, next to the Celery reference's:
# resident memory idle and under load (not counting ffmpeg), and the time from starting the
# worker to its first job taken. Prints JSON lines.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p videofarm
bin=$PWD/target/release/videofarm
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
broker="sqlite:$work/queue.db"

now() { date +%s.%N; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# Time to first job: one job waiting (its input is missing, so it ends at once), then the
# worker starts; the clock stops when the queue says the job is over.
"$bin" --broker "$broker" enqueue "$work/missing.mpg" --out "$work/out" >/dev/null 2>&1
t0=$(now)
"$bin" --broker "$broker" worker --concurrency 1 >/dev/null 2>&1 &
pid=$!
until "$bin" --broker "$broker" status --json 2>/dev/null | grep -q '"failed":1'; do sleep 0.005; done
t1=$(now)
sleep 2
idle=$(rss "$pid")
kill -TERM "$pid"; wait "$pid" || true
echo "{\"videofarm_first_job_s\": $(printf '%.4f' "$(echo "$t1 - $t0" | bc -l)"), \"videofarm_idle_rss_kb\": $idle}"

# Under load: a worker encoding (its own memory, not ffmpeg's).
ffmpeg -v error -f lavfi -i "testsrc2=size=720x480:rate=30000/1001" -t 20 -c:v mpeg2video -b:v 8M -f mpeg "$work/load.mpg"
"$bin" --broker "$broker" enqueue "$work/load.mpg" --out "$work/out" >/dev/null 2>&1
"$bin" --broker "$broker" worker --concurrency 1 >/dev/null 2>&1 &
pid=$!
sleep 3
loaded=$(rss "$pid")
kill -TERM "$pid"; wait "$pid" || true
echo "{\"videofarm_loaded_rss_kb\": $loaded}"

# The reference.
if [ ! -x bench/.venv/bin/python ]; then
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install -q 'celery==5.*'
fi
(cd bench/celery_ref && ../.venv/bin/python noop.py 1000 1)
