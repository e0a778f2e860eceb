#!/usr/bin/env bash
# What an open dashboard costs on the wire: the real page in headless Chromium, polling the
# real server over a relay that counts every byte both ways. A library of JOBS queued jobs
# (waiting for a tag no worker has) and FAILED failed ones; nothing changes while it is
# measured (idle), then one worker encodes one job (busy), then short jobs start and end
# all through the window (busy with changes).
#
#   bench/dashboard.sh        (JOBS=100000 FAILED=300 SECS=30; needs chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${JOBS:-100000}
failed=${FAILED:-300}
secs=${SECS:-30}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cargo build --release --quiet -p videofarm
bin=$PWD/target/release/videofarm
vf() { "$bin" --broker "sqlite:$work/queue.db" "$@"; }

mkdir -p "$work/in" "$work/bad" "$work/out"
(cd "$work/in" && seq -f 'tape%06g.mpg' 1 "$jobs" | xargs touch)
vf enqueue --require nowhere --out "$work/out" "$work/in" >/dev/null
# Failed jobs, each with ffmpeg's words: files that are not video.
for i in $(seq 1 "$failed"); do echo "not a video $i" >"$work/bad/bad$i.mpg"; done
vf run --workers 2 --out "$work/out" "$work/bad" >/dev/null 2>&1 || true
vf status

port=18950
relay=18951
"$bin" --broker "sqlite:$work/queue.db" serve --listen "127.0.0.1:$port" >/dev/null 2>&1 &
pids+=($!)
# The relay: counts bytes each way, prints the total when asked (SIGUSR1) and at the end.
python3 - "$relay" "$port" "$work/bytes" <<'EOF' &
import asyncio, signal, sys
listen, target, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
total = [0]
def dump(*_):
    open(out, "w").write(str(total[0]))
log = open(out + ".requests", "a")
async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            total[0] += len(data)
            if data[:4] in (b"GET ", b"POST", b"HTTP"):
                log.write(data.split(b"\r\n")[0].decode(errors="replace") + "\n"); log.flush()
            writer.write(data)
            await writer.drain()
    except Exception:
        pass
    finally:
        writer.close()
async def client(r, w):
    tr, tw = await asyncio.open_connection("127.0.0.1", target)
    await asyncio.gather(pipe(r, tw), pipe(tr, w))
async def main():
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump)
    server = await asyncio.start_server(client, "127.0.0.1", listen)
    await server.serve_forever()
asyncio.run(main())
EOF
relay_pid=$!
pids+=($relay_pid)
sleep 1
chromium --headless=new --no-sandbox --disable-gpu --user-data-dir="$work/chromium" \
  "http://127.0.0.1:$relay/" >/dev/null 2>&1 &
pids+=($!)
sleep 20 # the page loaded and polling (a first start of Chromium takes seconds)
count() { kill -USR1 "$relay_pid"; sleep 0.2; cat "$work/bytes"; }
a=$(count)
sleep "$secs"
b=$(count)
printf 'idle page, %s queued + %s failed: %.0f bytes/s (both ways)\n' "$jobs" "$failed" "$(echo "($b - $a) / $secs" | bc -l)"
sort "$work/bytes.requests" | uniq -c | sort -rn | head -5

# SD and eight times the window long, so that the encode runs all through the window measured.
ffmpeg -v error -f lavfi -i "testsrc2=size=720x480:rate=25" -t $((secs * 8)) -c:v mpeg2video "$work/long.mpg"
vf enqueue --out "$work/out" "$work/long.mpg" >/dev/null
"$bin" --broker "sqlite:$work/queue.db" worker --concurrency 1 >/dev/null 2>&1 &
pids+=($!)
sleep 3
a=$(count)
seen=$(wc -l <"$work/bytes.requests")
sleep $((secs / 2))
b=$(count)
printf 'busy page (one encode running): %.0f bytes/s\n' "$(echo "($b - $a) / ($secs / 2)" | bc -l)"
tail -n +$((seen + 1)) "$work/bytes.requests" | sort | uniq -c | sort -rn | head -8
vf status

# Jobs starting and ending all through the window: short clips queued behind the long one,
# run by a second worker (each start and end changes the overview's lists).
for i in $(seq 1 40); do
  ffmpeg -v error -f lavfi -i "testsrc2=size=352x288:rate=25" -t 1 -c:v mpeg2video "$work/short$i.mpg"
done
vf enqueue --out "$work/out" "$work"/short*.mpg >/dev/null
"$bin" --broker "sqlite:$work/queue.db" worker --concurrency 1 >/dev/null 2>&1 &
pids+=($!)
sleep 2
before=$(vf status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["succeeded"])')
a=$(count)
seen=$(wc -l <"$work/bytes.requests")
sleep $((secs / 2))
b=$(count)
after=$(vf status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["succeeded"])')
printf 'busy page (jobs starting and ending, %s finished in the window): %.0f bytes/s\n' \
  "$((after - before))" "$(echo "($b - $a) / ($secs / 2)" | bc -l)"
tail -n +$((seen + 1)) "$work/bytes.requests" | sort | uniq -c | sort -rn | head -8
