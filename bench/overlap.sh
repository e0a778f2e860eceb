#!/usr/bin/env bash
# Transfers overlapping encodes, on a slow link: one run of a worker that cannot use the storage
# (`transfer = "always"`, concurrency 1) encoding JOBS copies of an SD capture fetched and sent
# through `serve` over bench/throttle.py (RATE bytes a second each way, one link for all
# connections), from `enqueue` to the last job succeeded. AHEAD is `transfer_ahead`.
# Made to be timed as a whole, alternating AHEAD=1 and AHEAD=0 runs, e.g. with hyperfine:
#
#   cargo build --release -p videofarm
#   hyperfine -r 3 'bench/overlap.sh 1' 'bench/overlap.sh 0'
#
# The captures are made once into bench/out/overlap-media/ (JOBS, LEN, RATE from the
# environment: 4 jobs of 20 s, 4 MB/s).
set -euo pipefail
cd "$(dirname "$0")/.."
ahead=${1:?transfer_ahead}
jobs=${JOBS:-4}; len=${LEN:-20}; rate=${RATE:-4000000}
bin=$PWD/target/release/videofarm
media=$PWD/bench/out/overlap-media
mkdir -p "$media/in"
for i in $(seq "$jobs"); do
  [ -s "$media/in/tape$i.mpg" ] && continue
  ffmpeg -v error -f lavfi -i "testsrc2=size=720x480:rate=30000/1001" -f lavfi -i "sine=frequency=$((400 + i)):sample_rate=48000" \
    -t "$len" -vf "noise=alls=12:allf=t" -c:v mpeg2video -b:v 8M -c:a mp2 -f mpeg "$media/in/tape$i.mpg"
done
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work" "$media/out"; }
trap cleanup EXIT
rm -rf "$media/out"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port); link=$(free_port)
cat > "$work/c.toml" <<TOML
broker = "sqlite:$work/q.db"
token = "bench-token-0123456789abcdef"
files_url = "http://127.0.0.1:$link"
transfer = "always"
transfer_ahead = $ahead
transfer_cache = "$work/cache"
[paths]
roots = ["$media"]
TOML
"$bin" --config "$work/c.toml" serve --listen "127.0.0.1:$port" >/dev/null 2>&1 & pids+=($!)
python3 bench/throttle.py "$link" "$port" "$rate" & pids+=($!)
"$bin" --config "$work/c.toml" worker --concurrency 1 >/dev/null 2>&1 & pids+=($!)
until "$bin" --config "$work/c.toml" status >/dev/null 2>&1 && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.2; done
"$bin" --config "$work/c.toml" enqueue "$media/in" --out "$media/out" >/dev/null
until [ "$("$bin" --config "$work/c.toml" jobs --json | grep -c '"state": "succeeded"')" = "$jobs" ]; do
  if "$bin" --config "$work/c.toml" jobs --json | grep -q '"state": "failed"'; then
    echo "a job failed" >&2; exit 1
  fi
  sleep 0.2
done
