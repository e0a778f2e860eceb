#!/usr/bin/env bash
# Makes docs/dashboard.png: a small farm at work, for the README. Three workers, each in a UTS
# namespace of its own so it reports its own host name (needs root and util-linux's unshare),
# encode a shelf of SD captures from /srv/media/tapes (one of them broken) while the dashboard
# is photographed with headless Chromium. Everything it makes is removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p videofarm
bin=$PWD/target/release/videofarm
work=$(mktemp -d)
media=/srv/media
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 1
  rm -rf "$work" "$media/tapes" "$media/encoded"
}
trap cleanup EXIT
mkdir -p "$media/tapes" "$media/encoded"

tape() {  # $1: name, $2: seconds, $3: lavfi video source
  ffmpeg -v error -f lavfi -i "$3=size=720x480:rate=30000/1001" -f lavfi -i "sine=frequency=300:sample_rate=48000" \
    -t "$2" -c:v mpeg2video -b:v 8M -flags +ilme+ildct -c:a mp2 -b:a 224k -f mpeg "$media/tapes/$1"
}
tape "Wedding 1994 (Hi8 tape 1).mpg" 40 testsrc2
tape "Wedding 1994 (Hi8 tape 2).mpg" 36 testsrc2
tape "Christmas 1987.mpg" 30 smptebars
tape "Summer holiday 1991 - Brittany (VHS).mpg" 34 testsrc
tape "Grandpa's 80th birthday.mpg" 24 testsrc2
tape "School play 1996.mpg" 28 smptebars
tape "Camping trip 1989 (VHS-C).mpg" 22 testsrc
tape "First steps 1992.mpg" 18 testsrc2
tape "New Year's Eve 1999.mpg" 32 testsrc
tape "Football final 1998.mpg" 26 smptebars
head -c 3000000 /dev/urandom > "$media/tapes/Cousin's wedding 1998 (tape 2, chewed).mpg"

cat > "$work/videofarm.toml" <<EOF
broker = "sqlite:$work/queue.db"
workers = 1
[paths]
roots = ["$media"]
EOF
"$bin" --config "$work/videofarm.toml" enqueue --profile archive --out "$media/encoded" "$media/tapes" >/dev/null
"$bin" --config "$work/videofarm.toml" serve --listen 127.0.0.1:8080 2>/dev/null &
pids+=($!)
for host in nas den-desktop old-laptop; do
  unshare --uts sh -c 'hostname "$1"; shift; exec "$@"' - "$host" \
    "$bin" --config "$work/videofarm.toml" worker --name "$host" --concurrency 1 2>/dev/null &
  pids+=($!)
done
# Wait until a few tapes are done and three are encoding.
until [ "$("$bin" --config "$work/videofarm.toml" status --json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(int(s["succeeded"] >= 4 and s["running"] >= 3))')" = 1 ]; do
  sleep 1
done
sleep 3
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1180 \
  --virtual-time-budget=4000 --screenshot="$PWD/docs/dashboard.png" http://127.0.0.1:8080/ 2>/dev/null
echo "docs/dashboard.png updated"
