#!/usr/bin/env bash
# SD captures like a tape, for the benchmarks: N clips of SECS seconds each (720x480 interlaced
# MPEG-2 at 8 Mb/s with stereo MP2, in an MPEG program stream), written to DIR/clipI.mpg.
#
#   bench/sd-clips.sh N SECS DIR
set -euo pipefail
n=$1; secs=$2; dir=$3
mkdir -p "$dir"
for i in $(seq 1 "$n"); do
  ffmpeg -v error -f lavfi -i "testsrc2=size=720x480:rate=30000/1001" \
    -f lavfi -i "sine=frequency=$((300 + i * 50)):sample_rate=48000" -t "$secs" \
    -vf "tinterlace=mode=interleave_top" -flags +ilme+ildct \
    -c:v mpeg2video -b:v 8M -c:a mp2 -ac 2 -f mpeg "$dir/clip$i.mpg"
done
