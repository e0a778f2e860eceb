"""Publish N no-op tasks, start a Celery worker, time until the queue is drained.

Prints one JSON line: jobs per second, the worker's idle resident memory (all its processes),
and the time from starting the worker to its first task taken.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from tasks import app, noop  # noqa: E402


def depth(queue):
    with app.connection_for_write() as conn:
        channel = conn.channel()
        _, ready, consumers = channel.queue_declare(queue=queue, passive=True)
        return ready


def rss_kb(pid):
    total = 0
    pids = [pid]
    try:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def worker(queue, concurrency):
    env = dict(os.environ, BENCH_QUEUE=queue)
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", queue, "-c", str(concurrency),
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"],
        cwd=os.path.dirname(__file__), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    queue = f"celery-bench-{os.getpid()}"
    os.environ["BENCH_QUEUE"] = queue
    app.conf.task_default_queue = queue

    # Idle footprint and readiness: one task waiting, time until it is taken.
    noop.apply_async(queue=queue)
    start = time.monotonic()
    w = worker(queue, concurrency)
    while depth(queue) > 0:
        time.sleep(0.01)
    first_job_s = time.monotonic() - start
    time.sleep(2)
    idle_rss = rss_kb(w.pid)

    for _ in range(n):
        noop.apply_async(queue=queue)
    start = time.monotonic()
    while depth(queue) > 0:
        time.sleep(0.05)
    elapsed = time.monotonic() - start
    loaded_rss = rss_kb(w.pid)
    w.terminate()
    w.wait()
    with app.connection_for_write() as conn:
        conn.channel().queue_delete(queue)
    print(json.dumps({"celery_noop_jobs_per_s": n / elapsed, "celery_idle_rss_kb": idle_rss,
                      "celery_loaded_rss_kb": loaded_rss, "celery_first_job_s": first_job_s,
                      "jobs": n, "concurrency": concurrency}))


if __name__ == "__main__":
    main()
