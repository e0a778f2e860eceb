"""Run N Celery tasks through a fresh worker and time them until the queue is empty and
nothing is unacknowledged: `drain.py TASK CONCURRENCY OUT_DIR FILE...` (encode or copy each
file into OUT_DIR) or `drain.py noop CONCURRENCY N`. Prints one JSON line.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from tasks import app  # noqa: E402


def in_queue(queue):
    # ready + unacknowledged, as the broker counts them.
    out = subprocess.run(["rabbitmqctl", "list_queues", "-q", "name", "messages"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == queue:
            return int(parts[1])
    return 0


def main():
    task, concurrency = sys.argv[1], int(sys.argv[2])
    queue = f"celery-bench-{os.getpid()}"
    os.environ["BENCH_QUEUE"] = queue
    app.conf.task_default_queue = queue
    if task == "noop":
        calls = [()] * int(sys.argv[3])
    else:
        out_dir = sys.argv[3]
        os.makedirs(out_dir, exist_ok=True)
        ext = ".mkv"
        calls = [(f, os.path.join(out_dir, os.path.splitext(os.path.basename(f))[0] + ext)) for f in sys.argv[4:]]
    for args in calls:
        app.send_task(task, args=list(args), queue=queue)
    start = time.monotonic()
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", queue, "-c", str(concurrency),
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"],
        cwd=os.path.dirname(__file__), env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    time.sleep(0.2)
    while in_queue(queue) > 0:
        time.sleep(0.05)
    elapsed = time.monotonic() - start
    worker.terminate()
    worker.wait()
    with app.connection_for_write() as conn:
        conn.channel().queue_delete(queue)
    print(json.dumps({"task": task, "concurrency": concurrency, "jobs": len(calls), "seconds": elapsed}))


if __name__ == "__main__":
    main()
