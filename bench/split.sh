#!/usr/bin/env bash
# Split-file encoding: one long SD capture, `archive` profile, on this machine's cores as if
# each were a machine of the farm (`taskset`), side by side in one run:
#   unsplit_1_core   one worker pinned to core 0, the tape whole (--split off)
#   split_1_core     the same worker, the tape in chunks (overhead of planning, context frames
#                    and the join)
#   split_2_cores    two workers pinned to cores 0 and 1, the tape in chunks ("two machines")
# and the SSIM (ffmpeg's ssim filter, native resolution) of the split encode against the
# unsplit one and of each against the source. Prints a table and writes bench/out/split.json.
#
#   bench/split.sh      (LEN=120 CHUNK=30 ROUNDS=2)
#
# Each round runs every variant once, the starting variant rotated each round; the table
# gives medians, and each ratio is the median of the per-round ratios. Needs ffmpeg, taskset
# and two cores. About 8 minutes with the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
len=${LEN:-120}; chunk=${CHUNK:-30}; rounds=${ROUNDS:-2}
cargo build --release --quiet -p videofarm
bin=$PWD/target/release/videofarm
work=$(mktemp -d)
workers=()
cleanup() { for p in "${workers[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p bench/out
tape="$work/tape.mpg"
# 59.94 fields a second woven into 29.97 interlaced frames, with grain so the encoder works about
# as hard as on a real tape (a clean test pattern encodes several times faster than video).
ffmpeg -v error -f lavfi -i "testsrc2=size=720x480:rate=60000/1001" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
  -t "$len" -vf "noise=alls=12:allf=t,tinterlace=mode=interleave_top" -flags +ilme+ildct -c:v mpeg2video -b:v 8M \
  -c:a mp2 -ac 2 -f mpeg "$tape"
vf() { "$bin" "$@"; }
now() { date +%s.%N; }
minus() { python3 -c "import sys; print(round(float(sys.argv[1]) - float(sys.argv[2]), 3))" "$1" "$2"; }

# Each variant encodes the tape into $out and prints its wall time in seconds.
unsplit_1_core() {
  local t0; t0=$(now)
  taskset -c 0 "$bin" --broker "sqlite:$out/q.db" run "$tape" --out "$out/o" --workers 1 --split off >/dev/null 2>&1
  minus "$(now)" "$t0"
}
split_1_core() {
  local t0; t0=$(now)
  taskset -c 0 "$bin" --broker "sqlite:$out/q.db" run "$tape" --out "$out/o" --workers 1 --split "$chunk" >/dev/null 2>&1
  minus "$(now)" "$t0"
}
split_2_cores() {
  local t0; t0=$(now)
  vf --broker "sqlite:$out/q.db" enqueue "$tape" --out "$out/o" --split "$chunk" >/dev/null 2>&1
  taskset -c 0 "$bin" --broker "sqlite:$out/q.db" worker --concurrency 1 --name core0 >/dev/null 2>&1 & workers+=($!)
  taskset -c 1 "$bin" --broker "sqlite:$out/q.db" worker --concurrency 1 --name core1 >/dev/null 2>&1 & workers+=($!)
  # Done when the verified tape is in place (a cheap test: asking the queue in a loop would
  # itself take a tenth of a core from the workers being measured).
  until [ -f "$out/o/tape.mkv" ]; do sleep 0.2; done
  local t1; t1=$(now)
  kill "${workers[@]}"; wait "${workers[@]}" 2>/dev/null || true; workers=()
  minus "$t1" "$t0"
}
variants=(unsplit_1_core split_1_core split_2_cores)
results="$work/results"
: > "$results"
for round in $(seq 1 "$rounds"); do
  n=${#variants[@]}
  for k in $(seq 0 $((n - 1))); do
    v=${variants[$(((k + round - 1) % n))]}
    out="$work/$v-$round"; mkdir -p "$out"
    s=$($v)
    echo "$round $v $s" >> "$results"
    echo "round $round  $v  ${s}s" >&2
    # Keep the last round's outputs for the quality figures.
    [ "$round" = "$rounds" ] && cp "$out/o/tape.mkv" "$work/$v.mkv"
    rm -rf "$out"
  done
done

ssim() { ffmpeg -nostdin -v info -i "$1" -i "$2" -lavfi "[0:v][1:v]ssim" -f null - 2>&1 | sed -n 's/.*All:\([0-9.]*\).*/\1/p' | tail -1; }
ssim_split_unsplit=$(ssim "$work/split_2_cores.mkv" "$work/unsplit_1_core.mkv")
ssim_unsplit_source=$(ssim "$work/unsplit_1_core.mkv" "$tape")
ssim_split_source=$(ssim "$work/split_2_cores.mkv" "$tape")
frames() { ffprobe -v error -select_streams v:0 -count_packets -show_entries stream=nb_read_packets -of default=nw=1:nk=1 "$1"; }

python3 - "$results" "$len" "$chunk" "$rounds" "$ssim_split_unsplit" "$ssim_unsplit_source" "$ssim_split_source" \
  "$(frames "$tape")" "$(frames "$work/unsplit_1_core.mkv")" "$(frames "$work/split_2_cores.mkv")" <<'PY'
import json, statistics, subprocess, sys
path, length, chunk, rounds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
s_su, s_us, s_ss = (float(x) for x in sys.argv[5:8])
f_src, f_un, f_sp = (int(x) for x in sys.argv[8:11])
runs = {}
for line in open(path):
    r, v, s = line.split()
    runs.setdefault(v, {})[int(r)] = float(s)
med = {v: statistics.median(x.values()) for v, x in runs.items()}
def ratio(a, b):
    return statistics.median(runs[a][r] / runs[b][r] for r in runs[a])
speedup = statistics.median(runs["unsplit_1_core"][r] / runs["split_2_cores"][r] for r in runs["unsplit_1_core"])
split_cost = ratio("split_1_core", "unsplit_1_core")
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
ffv = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0]
print(f"\nsplit encoding: {length:.0f} s SD capture (720x480i MPEG-2 + stereo), archive profile, chunks of {chunk:.0f} s, {rounds} rounds")
print(f"{'variant':<18}{'median s':>10}")
for v in ("unsplit_1_core", "split_1_core", "split_2_cores"):
    print(f"{v:<18}{med[v]:>10.1f}")
print(f"two cores split vs one core unsplit: {speedup:.2f}x (target >= 1.8)")
print(f"split vs unsplit on one core: {split_cost:.3f} (target <= 1.05)")
print(f"SSIM split vs unsplit {s_su:.5f}; unsplit vs source {s_us:.5f}; split vs source {s_ss:.5f}")
print(f"frames: source {f_src}, unsplit {f_un}, split {f_sp}")
json.dump({
    "cpu": cpu, "ffmpeg": ffv, "length_s": length, "chunk_s": chunk, "rounds": rounds,
    "median_s": med, "speedup_two_cores": speedup, "split_cost_one_core": split_cost,
    "ssim": {"split_vs_unsplit": s_su, "unsplit_vs_source": s_us, "split_vs_source": s_ss},
    "frames": {"source": f_src, "unsplit": f_un, "split": f_sp}, "runs": runs,
}, open("bench/out/split.json", "w"), indent=1)
PY
