#!/usr/bin/env bash
# One command for every figure of bench/README.md, side by side with the Celery reference, in
# one run on this machine: prints a table and writes bench/out/latest.json.
#
#   bench/run.sh            (CLIPS=8 SECS=20 TINY=500 ROUNDS=1 by default)
#
# Needs ffmpeg, RabbitMQ on 127.0.0.1:5672 (guest/guest), python3 (Celery is installed into
# bench/.venv). Takes about a quarter of an hour on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
clips=${CLIPS:-8}; secs=${SECS:-20}; tiny=${TINY:-500}
amqp=${BENCH_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
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

now() { date +%s.%N; }
record() { printf '{"name": "%s", "seconds": %s, "jobs": %s}\n' "$1" "$2" "$3" >> "$results"; printf '%-34s %8.2f s  %5s jobs\n' "$1" "$2" "$3"; }
timed() { local name=$1 jobs=$2; shift 2; local t0; t0=$(now); "$@" >/dev/null 2>&1; record "$name" "$(echo "$(now) - $t0" | bc -l)" "$jobs"; }

# Inputs: SD captures like a tape (720x480 interlaced MPEG-2 with stereo audio), and a tiny clip
# copied many times for the per-job cost.
for i in $(seq 1 "$clips"); do
  ffmpeg -v error -f lavfi -i "testsrc2=size=720x480:rate=30000/1001" -f lavfi -i "sine=frequency=$((300 + i * 40)):sample_rate=48000" \
    -t "$secs" -vf "tinterlace=mode=interleave_top" -flags +ilme+ildct -c:v mpeg2video -b:v 8M -c:a mp2 -ac 2 -f mpeg "$work/sd/clip$i.mpg"
done
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

echo "== encode: ${clips} x ${secs} s SD, archive profile"
plain_one() { mkdir -p "$work/p1"; for f in "${sd[@]}"; do ffmpeg -hide_banner -nostdin -loglevel error -i "$f" "${archive[@]}" -y "$work/p1/$(basename "$f" .mpg).mkv"; done; }
plain_two() { mkdir -p "$work/p2"; printf '%s\0' "${sd[@]}" | xargs -0 -P2 -I{} ffmpeg -hide_banner -nostdin -loglevel error -i {} "${archive[@]}" -y {}.p2.mkv; rm -f "$work"/sd/*.p2.mkv; }
timed plain_ffmpeg_one_at_a_time "$clips" plain_one
timed plain_ffmpeg_two_at_a_time "$clips" plain_two
timed farm_sqlite_1_worker "$clips" vf --broker "sqlite:$work/q1.db" run "$work/sd" --out "$work/f1" --workers 1
timed farm_sqlite_2_workers "$clips" vf --broker "sqlite:$work/q2.db" run "$work/sd" --out "$work/f2" --workers 2
timed farm_sqlite_default "$clips" vf --broker "sqlite:$work/q3.db" run "$work/sd" --out "$work/f3"
timed farm_rabbitmq_1_worker "$clips" vf --broker "$amqp" run "$work/sd" --out "$work/f4" --workers 1
timed farm_rabbitmq_2_workers "$clips" vf --broker "$amqp" run "$work/sd" --out "$work/f5" --workers 2
for c in 1 2; do
  out=$(cd bench/celery_ref && "$py" drain.py encode "$c" "$work/c$c" "${sd[@]}")
  record "celery_${c}_worker" "$(echo "$out" | "$py" -c 'import json,sys;print(json.load(sys.stdin)["seconds"])')" "$clips"
done

echo "== tiny real jobs: ${tiny} stream copies of a 0.4 s Matroska clip"
timed farm_tiny_sqlite "$tiny" vf --broker "sqlite:$work/qt.db" run "$work/tiny" --out "$work/ft" --profile copy
timed farm_tiny_rabbitmq "$tiny" vf --broker "$amqp" run "$work/tiny" --out "$work/ft2" --profile copy
out=$(cd bench/celery_ref && "$py" drain.py copy 2 "$work/ct" "$work"/tiny/*.mkv)
record celery_tiny_2_workers "$(echo "$out" | "$py" -c 'import json,sys;print(json.load(sys.stdin)["seconds"])')" "$tiny"

echo "== queue alone, broker ceiling, backlog"
qb=$(./target/release/queue-bench --jobs 2000 | tail -1)
echo "== footprint"
fp=$(bash bench/footprint.sh 2>/dev/null | paste -sd, -)
"$py" - "$results" "$qb" "[$fp]" <<'PY' | tee bench/out/latest.json
import json, subprocess, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
out = {
    "machine": {"cores": int(subprocess.run(["nproc"], capture_output=True, text=True).stdout),
                "ffmpeg": subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0],
                "rabbitmq": subprocess.run(["rabbitmqctl", "version"], capture_output=True, text=True).stdout.strip()},
    "runs": rows, "queue": json.loads(sys.argv[2]), "footprint": json.loads(sys.argv[3]),
}
by = {r["name"]: r["seconds"] for r in rows}
plain1, plain2 = by["plain_ffmpeg_one_at_a_time"], by["plain_ffmpeg_two_at_a_time"]
out["ratios"] = {
    "farm_sqlite_1/plain_1": by["farm_sqlite_1_worker"] / plain1,
    "farm_sqlite_2/plain_2": by["farm_sqlite_2_workers"] / plain2,
    "farm_rabbitmq_1/plain_1": by["farm_rabbitmq_1_worker"] / plain1,
    "farm_rabbitmq_2/plain_2": by["farm_rabbitmq_2_workers"] / plain2,
    "farm_default/best_plain": by["farm_sqlite_default"] / min(plain1, plain2),
    "celery_1/plain_1": by["celery_1_worker"] / plain1,
    "celery_2/plain_2": by["celery_2_worker"] / plain2,
    "tiny_jobs_per_s_farm_sqlite": len(open(sys.argv[1]).readlines()) and [r for r in rows if r["name"] == "farm_tiny_sqlite"][0]["jobs"] / by["farm_tiny_sqlite"],
    "tiny_jobs_per_s_farm_rabbitmq": [r for r in rows if r["name"] == "farm_tiny_rabbitmq"][0]["jobs"] / by["farm_tiny_rabbitmq"],
    "tiny_jobs_per_s_celery": [r for r in rows if r["name"] == "celery_tiny_2_workers"][0]["jobs"] / by["celery_tiny_2_workers"],
}
print(json.dumps(out, indent=2))
PY
