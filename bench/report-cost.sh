#!/usr/bin/env bash
# What the tape report costs an encode, part by part: plain ffmpeg, ffmpeg with each part of
# the measuring outputs added, and `videofarm run --workers 1` with the report off and on, on
# the same short SD clips. Every variant runs once per round (each round starts one variant
# later); each ratio is the median over rounds of variant / plain ffmpeg within the round.
#
#   bench/report-cost.sh        (CLIPS=3 SECS=6 ROUNDS=9)
#
# The measuring arguments below are those crates/ffmpeg/src/analyse.rs gives ffmpeg (2026-12-04),
# written out so that each part can be left out; the two `run` variants use the real thing.
set -euo pipefail
cd "$(dirname "$0")/.."
clips=${CLIPS:-3}; secs=${SECS:-6}; rounds=${ROUNDS:-9}
cargo build --release --quiet -p videofarm
bin=$PWD/target/release/videofarm
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/in"
bench/sd-clips.sh "$clips" "$secs" "$work/in"
# `archive` with the report off, as a profile of its own.
cat > "$work/quiet.toml" <<'TOML'
[profiles.quiet]
extension = "mkv"
args = ["-max_muxing_queue_size", "1000", "-map", "0", "-map", "-0:d", "-c", "copy", "-c:v", "libx264", "-crf", "17"]
video_codec = "h264"
audio = "all"
report = false
TOML

archive=(-max_muxing_queue_size 1000 -map 0 -map -0:d -c copy -c:v libx264 -crf 17)
small='[0:v:0]scale=trunc(iw/8)*2:ih:flags=neighbor,format=yuv420p'
fields='idet,metadata=mode=print:key=lavfi.idet.multiple.current_frame'
handoff=(-filter_complex_threads 1 -filter_complex "$small[m]" -map '[m]' -fps_mode passthrough -f yuv4mpegpipe pipe:3)
video=(-filter_complex_threads 1 -filter_complex "$small,$fields[m]" -map '[m]' -fps_mode passthrough -f yuv4mpegpipe pipe:3)
audio=(-map '0:a:0?' -filter:a 'asetnsamples=n=12000,astats=metadata=1:reset=1:measure_perchannel=none:measure_overall=Peak_level,ametadata=mode=print' -f null -)
one_frame=(-map 0:v:0 -c:v copy -frames:v 1 -f null -)

# ffmpeg_with ARGS...: every clip encoded with ARGS added after the encode's output; the
# pictures (descriptor 3) read by another process, as the worker reads them.
ffmpeg_with() {
  for f in "$work"/in/*.mpg; do
    ffmpeg -hide_banner -nostdin -loglevel level+info -nostats -i "$f" "${archive[@]}" \
      -f matroska -y "$out/$(basename "$f" .mpg).mkv" "$@" 3>&1 >/dev/null 2>/dev/null | cat >/dev/null
  done
}
plain() {
  for f in "$work"/in/*.mpg; do
    ffmpeg -hide_banner -nostdin -loglevel error -nostats -i "$f" "${archive[@]}" -y "$out/$(basename "$f" .mpg).mkv"
  done
}
variants=(
  "plain ffmpeg|plain"
  "+ the small picture written (scale, YUV4MPEG)|ffmpeg_with \"\${handoff[@]}\" \"\${one_frame[@]}\""
  "+ fields judged and printed (idet)|ffmpeg_with \"\${video[@]}\" \"\${one_frame[@]}\""
  "+ audio peaks (astats): all the measuring|ffmpeg_with \"\${video[@]}\" \"\${audio[@]}\" \"\${one_frame[@]}\""
  "run --workers 1, report = false|$bin --config $work/quiet.toml --broker sqlite:\$out/q.db run $work/in --out \$out/o --workers 1 --profile quiet"
  "run --workers 1, archive (report on)|$bin --broker sqlite:\$out/q.db run $work/in --out \$out/o --workers 1"
)
n=${#variants[@]}
results="$work/results"
: > "$results"
for r in $(seq 0 $((rounds - 1))); do
  for k in $(seq 0 $((n - 1))); do
    i=$(((k + r) % n)); cmd=${variants[$i]#*|}
    out="$work/run"; rm -rf "$out"; mkdir -p "$out"
    t0=$(date +%s.%N)
    eval "$cmd" >"$work/last.log" 2>&1 || { echo "${variants[$i]%%|*} failed:" >&2; tail -20 "$work/last.log" >&2; exit 1; }
    echo "$r $i $(echo "$(date +%s.%N) - $t0" | bc -l)" >> "$results"
  done
  echo "round $((r + 1)) of $rounds done" >&2
done
names=$(printf '%s\n' "${variants[@]}" | sed 's/|.*//')
python3 - "$results" "$clips" "$secs" "$rounds" <<PY
import statistics, sys
from collections import defaultdict
names = """$names""".splitlines()
t = defaultdict(dict)
for line in open(sys.argv[1]):
    r, i, s = line.split()
    t[int(i)][int(r)] = float(s)
print(f"{sys.argv[2]} x {sys.argv[3]} s SD MPEG-2 clips, {sys.argv[4]} rounds; median seconds, and the median of ratios to plain ffmpeg within a round (min-max)")
for i, name in enumerate(names):
    ratios = [t[i][r] / t[0][r] for r in t[0]]
    print(f"  {name:<44} {statistics.median(t[i].values()):6.2f} s  {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})")
PY
