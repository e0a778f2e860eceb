#!/usr/bin/env bash
# What `videofarm run` costs on top of plain ffmpeg: the same clips, the same `archive`
# settings, one at a time, in one run on this machine. Prints the ratio farm/plain.
#
#   bench/overhead.sh [CLIPS] [SECONDS]     (default: 4 clips of 10 s, SD MPEG-2 like a tape)
set -euo pipefail
cd "$(dirname "$0")/.."
clips=${1:-4}
secs=${2:-10}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release --quiet -p videofarm
bin=target/release/videofarm

mkdir -p "$work/in" "$work/plain"
bench/sd-clips.sh "$clips" "$secs" "$work/in"

now() { date +%s.%N; }
rounds=${ROUNDS:-3}
plain_total=0
farm_total=0
# Alternate plain and farm rounds so that drift in the machine's speed hits both alike.
for r in $(seq 1 "$rounds"); do
  rm -rf "$work/plain" "$work/farm" "$work"/queue.db*
  mkdir -p "$work/plain"
  t0=$(now)
  for f in "$work"/in/*.mpg; do
    ffmpeg -hide_banner -nostdin -loglevel error -nostats -i "$f" \
      -max_muxing_queue_size 1000 -map 0 -c copy -c:v libx264 -crf 17 -y "$work/plain/$(basename "$f" .mpg).mkv"
  done
  t1=$(now)
  "$bin" --broker "sqlite:$work/queue.db" run "$work/in" --out "$work/farm" --workers 1 >/dev/null 2>&1
  t2=$(now)
  plain=$(echo "$t1 - $t0" | bc -l)
  farm=$(echo "$t2 - $t1" | bc -l)
  printf 'round %s: plain %6.2f s  farm %6.2f s  ratio %.4f\n' "$r" "$plain" "$farm" "$(echo "$farm / $plain" | bc -l)"
  plain_total=$(echo "$plain_total + $plain" | bc -l)
  farm_total=$(echo "$farm_total + $farm" | bc -l)
done
printf 'cores %s, %s clips x %s s SD MPEG-2 (720x480 interlaced + stereo MP2), archive profile, one at a time, %s rounds\n' \
  "$(nproc)" "$clips" "$secs" "$rounds"
printf 'plain ffmpeg   %8.2f s\n' "$plain_total"
printf 'videofarm run  %8.2f s\n' "$farm_total"
printf 'ratio farm/plain %.4f\n' "$(echo "$farm_total / $plain_total" | bc -l)"
