//! `/metrics` in the Prometheus text format, computed from the queue at each scrape: jobs by
//! state, queue depth, live workers, encode time and speed histograms and bytes per profile,
//! and failures by kind of reason.

use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::collections::BTreeMap;
use std::fmt::Write;
use videofarm_core::{JobFilter, JobRecord, JobState};

const SECONDS_BUCKETS: &[f64] = &[
    10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0,
];
const SPEED_BUCKETS: &[f64] = &[0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0];

/// A failure's reason as a small, fixed set of labels (reasons hold file names: far too many
/// distinct values for a metric label).
pub fn reason_kind(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    let kinds: &[(&str, &str)] = &[
        ("does not exist", "missing"),
        ("is empty", "empty"),
        ("permission denied", "unreadable"),
        ("not writable", "output_not_writable"),
        ("not a video", "not_a_video"),
        ("disk filled up", "disk_full"),
        ("disk is full", "disk_full"),
        ("failed verification", "verification"),
        ("made no progress", "stalled"),
        // Before "timeout": a lost attempt's reason names RabbitMQ's consumer_timeout.
        ("lease ran out", "worker_lost"),
        ("was lost", "worker_lost"),
        ("the worker of every attempt", "worker_lost"),
        ("timeout", "timeout"),
        ("already exists", "output_exists"),
        ("unknown profile", "unknown_profile"),
        ("refused", "refused_path"),
        ("ffmpeg failed", "ffmpeg"),
    ];
    kinds
        .iter()
        .find(|(needle, _)| r.contains(needle))
        .map(|(_, kind)| *kind)
        .unwrap_or("other")
}

#[derive(Default)]
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; bounds.len()];
        }
        for (i, bound) in bounds.iter().enumerate() {
            if value <= *bound {
                self.buckets[i] += 1;
            }
        }
        self.count += 1;
        self.sum += value;
    }

    fn write(&self, out: &mut String, name: &str, profile: &str, bounds: &[f64]) {
        for (i, bound) in bounds.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{profile=\"{profile}\",le=\"{bound}\"}} {}",
                self.buckets.get(i).copied().unwrap_or(0)
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{profile=\"{profile}\",le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{profile=\"{profile}\"}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{profile=\"{profile}\"}} {}", self.count);
    }
}

/// Profile names are checked to be `[A-Za-z0-9._-]`; anything else is escaped anyway.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render(counts: &videofarm_core::Counts, workers: usize, jobs: &[JobRecord]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP videofarm_jobs Jobs by state.\n# TYPE videofarm_jobs gauge"
    );
    for (state, n) in [
        (JobState::Queued, counts.queued),
        (JobState::Running, counts.running),
        (JobState::Succeeded, counts.succeeded),
        (JobState::Failed, counts.failed),
        (JobState::Cancelled, counts.cancelled),
    ] {
        let _ = writeln!(out, "videofarm_jobs{{state=\"{state}\"}} {n}");
    }
    let _ = writeln!(out, "# HELP videofarm_queue_depth Jobs waiting to run (retrying ones included).\n# TYPE videofarm_queue_depth gauge\nvideofarm_queue_depth {}", counts.queued);
    let _ = writeln!(out, "# HELP videofarm_queue_retrying Jobs waiting out a retry delay.\n# TYPE videofarm_queue_retrying gauge\nvideofarm_queue_retrying {}", counts.retrying);
    let _ = writeln!(out, "# HELP videofarm_workers Live workers.\n# TYPE videofarm_workers gauge\nvideofarm_workers {workers}");

    let mut seconds: BTreeMap<String, Histogram> = BTreeMap::new();
    let mut speed: BTreeMap<String, Histogram> = BTreeMap::new();
    let mut bytes: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut failures: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut damaged: BTreeMap<String, u64> = BTreeMap::new();
    for job in jobs {
        let profile = label(&job.spec.profile);
        match (job.state, &job.result) {
            (JobState::Succeeded, Some(r)) if !r.already_done => {
                seconds
                    .entry(profile.clone())
                    .or_default()
                    .observe(SECONDS_BUCKETS, r.elapsed_s);
                if r.elapsed_s > 0.0 {
                    speed
                        .entry(profile.clone())
                        .or_default()
                        .observe(SPEED_BUCKETS, r.duration_s / r.elapsed_s);
                }
                if !r.warnings.is_empty() {
                    *damaged.entry(profile.clone()).or_default() += 1;
                }
                let entry = bytes.entry(profile).or_default();
                entry.0 += r.input_size;
                entry.1 += r.output_size;
            }
            (JobState::Failed, _) => {
                *failures
                    .entry(reason_kind(job.error.as_deref().unwrap_or("")))
                    .or_default() += 1;
            }
            _ => {}
        }
    }
    let _ = writeln!(out, "# HELP videofarm_encode_seconds Wall time of finished encodes.\n# TYPE videofarm_encode_seconds histogram");
    for (profile, h) in &seconds {
        h.write(
            &mut out,
            "videofarm_encode_seconds",
            profile,
            SECONDS_BUCKETS,
        );
    }
    let _ = writeln!(out, "# HELP videofarm_encode_speed Speed of finished encodes, x realtime.\n# TYPE videofarm_encode_speed histogram");
    for (profile, h) in &speed {
        h.write(&mut out, "videofarm_encode_speed", profile, SPEED_BUCKETS);
    }
    let _ = writeln!(out, "# HELP videofarm_input_bytes_total Bytes read by finished encodes.\n# TYPE videofarm_input_bytes_total counter");
    for (profile, (input, _)) in &bytes {
        let _ = writeln!(
            out,
            "videofarm_input_bytes_total{{profile=\"{profile}\"}} {input}"
        );
    }
    let _ = writeln!(out, "# HELP videofarm_output_bytes_total Bytes written by finished encodes.\n# TYPE videofarm_output_bytes_total counter");
    for (profile, (_, output)) in &bytes {
        let _ = writeln!(
            out,
            "videofarm_output_bytes_total{{profile=\"{profile}\"}} {output}"
        );
    }
    let _ = writeln!(out, "# HELP videofarm_failed_jobs Failed jobs by kind of reason.\n# TYPE videofarm_failed_jobs gauge");
    for (kind, n) in &failures {
        let _ = writeln!(out, "videofarm_failed_jobs{{reason=\"{kind}\"}} {n}");
    }
    let _ = writeln!(out, "# HELP videofarm_damaged_inputs Jobs that succeeded although the decoder reported errors in their input (the tape may be worth capturing again).\n# TYPE videofarm_damaged_inputs gauge");
    for (profile, n) in &damaged {
        let _ = writeln!(out, "videofarm_damaged_inputs{{profile=\"{profile}\"}} {n}");
    }
    let (sent, received) = crate::files::bytes_moved();
    let _ = writeln!(out, "# HELP videofarm_transfer_bytes_total Bytes this server moved for workers that cannot see the media: inputs sent, outputs received.\n# TYPE videofarm_transfer_bytes_total counter\nvideofarm_transfer_bytes_total{{direction=\"sent\"}} {sent}\nvideofarm_transfer_bytes_total{{direction=\"received\"}} {received}");
    out
}

pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let counts = state.queue.counts().await?;
    let workers = state.queue.worker_count().await?;
    // Only what the histograms and failure kinds are made of: the waiting jobs of a large
    // library are counted, not read.
    let mut jobs = Vec::new();
    for wanted in [JobState::Succeeded, JobState::Failed] {
        jobs.extend(
            state
                .queue
                .jobs(&JobFilter {
                    state: Some(wanted),
                    ..Default::default()
                })
                .await?,
        );
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&counts, workers, &jobs),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_become_a_few_kinds() {
        assert_eq!(
            reason_kind("/a/b.mpg: the file is empty (0 bytes)"),
            "empty"
        );
        assert_eq!(
            reason_kind("/a/<x>.mpg: not a video ffprobe can read (…)"),
            "not_a_video"
        );
        assert_eq!(reason_kind("something new"), "other");
        // A lost attempt on either backend, counted as lost, not as a timeout.
        use videofarm_core::lifecycle::{lost_reason, LostCause};
        for cause in [LostCause::LeaseRanOut, LostCause::ConnectionGone] {
            for failed in [false, true] {
                let reason = lost_reason(2, 2, Some("w"), failed, cause);
                assert_eq!(reason_kind(&reason), "worker_lost", "{reason}");
            }
        }
    }
}
