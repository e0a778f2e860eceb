"""Run N Celery tasks through a fresh worker and time them until every one has finished:
`drain.py TASK CONCURRENCY OUT_DIR FILE...` (encode or copy each file into OUT_DIR) or
`drain.py noop CONCURRENCY N`. Completion is read from Celery's rpc:// result backend (a reply
message per task, cheap next to an ffmpeg run). Prints one JSON line.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from tasks import app  # noqa: E402


def main():
    task, concurrency = sys.argv[1], int(sys.argv[2])
    queue = f"celery-bench-{os.getpid()}"
    os.environ["BENCH_QUEUE"] = queue
    app.conf.task_default_queue = queue
    app.conf.result_backend = "rpc://"
    if task == "noop":
        calls = [()] * int(sys.argv[3])
    else:
        out_dir = sys.argv[3]
        os.makedirs(out_dir, exist_ok=True)
        ext = ".mkv"
        calls = [(f, os.path.join(out_dir, os.path.splitext(os.path.basename(f))[0] + ext)) for f in sys.argv[4:]]
    # The clock includes publishing, as `videofarm run`'s time includes its enqueueing.
    start = time.monotonic()
    results = [app.send_task(task, args=list(args), queue=queue) for args in calls]
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", queue, "-c", str(concurrency),
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"],
        cwd=os.path.dirname(__file__), env=dict(os.environ, BENCH_RESULTS="rpc://"), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for result in results:
            result.get(timeout=3600)
        elapsed = time.monotonic() - start
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        with app.connection_for_write() as conn:
            conn.channel().queue_delete(queue)
    print(json.dumps({"task": task, "concurrency": concurrency, "jobs": len(calls), "seconds": elapsed}))


if __name__ == "__main__":
    main()
