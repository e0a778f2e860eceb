#!/usr/bin/env bash
# Workers without shared storage, measured on this machine (loopback):
#   1. throughput: the worker's fetch of an input from `serve` (BLAKE3 computed as it arrives)
#      against curl of the same bytes from the same server, both into a file (transfer-bench);
#   2. one job end to end, from `enqueue` to succeeded: a worker that reads and writes the
#      storage itself (`transfer = "never"`) against one that fetches the input and sends the
#      output through `serve` (`transfer = "always"`), same capture, `archive` profile.
# Prints both and writes bench/out/transfer.json.
#
#   bench/transfer.sh      (SIZE_MB=512 LEN=30 ROUNDS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
size_mb=${SIZE_MB:-512}; len=${LEN:-30}; rounds=${ROUNDS:-3}
cargo build --release --quiet -p videofarm -p videofarm-bench
bin=$PWD/target/release/videofarm
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p bench/out

throughput=$(target/release/transfer-bench "$size_mb" 7)
echo "$throughput"

mkdir -p "$work/media/in"
ffmpeg -v error -f lavfi -i "testsrc2=size=720x480:rate=30000/1001" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
  -t "$len" -vf "noise=alls=12:allf=t" -c:v mpeg2video -b:v 8M -c:a mp2 -f mpeg "$work/media/in/tape.mpg"
now() { date +%s.%N; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# One job end to end with a worker in mode $1; prints its seconds from enqueue to succeeded.
one() {
  local mode=$1 dir="$work/$1-$RANDOM"
  mkdir -p "$dir"
  rm -rf "$work/media/out"
  cat > "$dir/c.toml" <<EOF
broker = "sqlite:$dir/q.db"
token = "bench-token-0123456789abcdef"
files_url = "http://127.0.0.1:$port"
transfer = "$mode"
transfer_cache = "$dir/cache"
[paths]
roots = ["$work/media"]
EOF
  "$bin" --config "$dir/c.toml" serve --listen "127.0.0.1:$port" >/dev/null 2>&1 & local serve=$!
  "$bin" --config "$dir/c.toml" worker --concurrency 1 >/dev/null 2>&1 & local worker=$!
  pids+=("$serve" "$worker")
  sleep 2
  local t0; t0=$(now)
  "$bin" --config "$dir/c.toml" enqueue "$work/media/in/tape.mpg" --out "$work/media/out" >/dev/null 2>&1
  until "$bin" --config "$dir/c.toml" jobs --json | grep -q '"state": "succeeded"'; do sleep 0.1; done
  python3 -c "import sys; print(round(float(sys.argv[1]) - float(sys.argv[2]), 2))" "$(now)" "$t0"
  kill "$worker" "$serve"; wait "$worker" "$serve" 2>/dev/null || true
}

shared=(); moved=()
for r in $(seq "$rounds"); do
  if (( r % 2 )); then shared+=("$(one never)"); moved+=("$(one always)")
  else moved+=("$(one always)"); shared+=("$(one never)"); fi
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
s=$(median "${shared[@]}"); m=$(median "${moved[@]}")
echo "one ${len} s SD capture, archive, median of $rounds: shared storage ${s} s, through serve ${m} s (all runs: ${shared[*]} / ${moved[*]})"
python3 - "$throughput" "$s" "$m" "$len" > bench/out/transfer.json <<'PY'
import json, sys
print(json.dumps({"throughput": sys.argv[1], "end_to_end_s": {"shared": float(sys.argv[2]), "transfer": float(sys.argv[3])}, "capture_s": int(sys.argv[4])}, indent=2))
PY
