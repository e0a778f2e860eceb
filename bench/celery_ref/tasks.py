"""The reference: the old farm's Celery worker, reduced to what the benchmarks compare.

Celery 5 on the same RabbitMQ, acks_late, prefetch 1, concurrency set on the command line.
`encode` runs the old farm's ffmpeg command (as an argument list here, and failing the task on a
non-zero exit, i.e. the old system with its two worst bugs fixed, so the comparison is fair to it).
"""
import os
import subprocess

from celery import Celery

app = Celery(
    "videofarm_reference",
    broker=os.environ.get("BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("BENCH_RESULTS") or None,
)
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_default_queue=os.environ.get("BENCH_QUEUE", "celery-bench"),
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="noop")
def noop():
    return None


@app.task(name="encode")
def encode(src, out):
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-i", src,
         "-max_muxing_queue_size", "1000", "-map", "0", "-c", "copy", "-c:v", "libx264", "-crf", "17", "-y", out],
        check=True,
    )


@app.task(name="copy")
def copy(src, out):
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-i", src, "-map", "0", "-c", "copy", "-y", out],
        check=True,
    )


@app.task(name="copy_verified")
def copy_verified(src, out):
    """`copy`, then read the output back with ffprobe: the check videofarm makes before it
    counts a job done, made the usual way."""
    copy(src, out)
    subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", out],
        check=True, stdout=subprocess.DEVNULL,
    )
