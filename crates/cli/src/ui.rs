//! Progress for `videofarm run`: a bar per running encode and one for the batch on a terminal,
//! one plain line per finished job otherwise (logs, CI, pipes), or with `--json` each event of
//! the batch as a JSON line as it happens.

use crate::commands::{describe_progress, describe_transfer, human_duration, shown};
use crate::eta::MediaLeft;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;
use videofarm_core::{Event, JobId};

pub struct ProgressUi {
    multi: MultiProgress,
    total: ProgressBar,
    bars: HashMap<JobId, ProgressBar>,
    /// Jobs of this batch: events about other jobs in a shared queue are not shown.
    batch: std::collections::HashSet<JobId>,
    /// Live speeds (x-realtime) of running jobs, summed for the batch bar.
    speeds: HashMap<JobId, f64>,
    /// Chunks of split tapes: chunk id -> (tape id, index).
    chunks: HashMap<JobId, (JobId, u32)>,
    /// Each split tape's chunks: how far each one is (1.0 once done).
    tapes: HashMap<JobId, Vec<f64>>,
    terminal: bool,
    /// JSON lines on stdout instead of bars and lines on stderr.
    json: bool,
    done: u64,
    total_jobs: u64,
    /// Each job's input file name, for the lines that say how it ended.
    names: HashMap<JobId, String>,
    /// Each running job's progress (0 to 1), for the batch's.
    fractions: HashMap<JobId, f64>,
    /// The media time left, for the batch's ETA.
    media: MediaLeft,
}

const JOB_STYLE: &str = "{prefix:.bold} [{bar:32.cyan/blue}] {percent:>3}% {msg}";
const TOTAL_STYLE: &str = "{prefix:.bold} [{bar:32.green/white}] {msg}";

impl ProgressUi {
    /// A batch of jobs: each one's id, input and input size.
    pub fn new(
        batch: impl IntoIterator<Item = (JobId, PathBuf, u64)>,
        already_done: u64,
        json: bool,
    ) -> Self {
        let terminal = std::io::stderr().is_terminal() && !json;
        let multi = MultiProgress::with_draw_target(if terminal {
            ProgressDrawTarget::stderr_with_hz(4)
        } else {
            ProgressDrawTarget::hidden()
        });
        let mut sizes = Vec::new();
        let names: HashMap<JobId, String> = batch
            .into_iter()
            .map(|(id, input, size)| {
                sizes.push((id.clone(), size));
                let name = input
                    .file_name()
                    .map(|n| shown(n.as_ref()))
                    .unwrap_or_else(|| shown(&input));
                (id, name)
            })
            .collect();
        let batch: std::collections::HashSet<JobId> = names.keys().cloned().collect();
        let total_jobs = batch.len() as u64;
        let total = multi.add(ProgressBar::new(total_jobs * 1000));
        total.set_style(
            ProgressStyle::with_template(TOTAL_STYLE)
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        total.set_prefix("batch");
        total.enable_steady_tick(Duration::from_millis(500));
        let ui = Self {
            multi,
            total,
            bars: HashMap::new(),
            batch,
            speeds: HashMap::new(),
            chunks: HashMap::new(),
            tapes: HashMap::new(),
            terminal,
            json,
            done: already_done,
            total_jobs,
            names,
            fractions: HashMap::new(),
            media: MediaLeft::new(sizes),
        };
        ui.show_batch();
        ui
    }

    /// The batch bar: jobs done, running, the batch's speed and, once there is a speed, the
    /// time left: the media time left over that speed ([`MediaLeft`]).
    fn show_batch(&self) {
        let running: f64 = self.fractions.values().sum::<f64>()
            + self
                .tapes
                .values()
                .map(|parts| parts.iter().sum::<f64>() / parts.len().max(1) as f64)
                .sum::<f64>();
        let fraction = ((self.done as f64 + running) / self.total_jobs.max(1) as f64).min(1.0);
        self.total
            .set_position((fraction * (self.total_jobs * 1000) as f64) as u64);
        let mut message = format!("{}/{} jobs done", self.done, self.total_jobs);
        let busy = self.speeds.len();
        if busy > 0 {
            message.push_str(&format!("  {busy} running"));
        }
        let speed: f64 = self.speeds.values().sum();
        if speed > 0.0 {
            message.push_str(&format!("  {speed:.2}x"));
        }
        if let Some(left) = self.media.eta().filter(|_| fraction < 1.0) {
            message.push_str(&format!("  about {} left", human_duration(left)));
        }
        self.total.set_message(message);
    }

    pub fn handle(&mut self, event: &Event) {
        let Some(id) = event.job_id() else { return };
        if self.json {
            self.print_json(id, event);
            return;
        }
        if let Event::JobStarted {
            part: Some(part),
            input,
            ..
        } = event
        {
            if self.batch.contains(&part.parent) {
                self.chunks
                    .insert(id.clone(), (part.parent.clone(), part.index));
                self.tapes
                    .entry(part.parent.clone())
                    .or_insert_with(|| vec![0.0; part.count as usize]);
                if !self.bars.contains_key(&part.parent) {
                    self.add_bar(&part.parent, &file_name(input));
                }
            }
        }
        if let Some((tape, index)) = self.chunks.get(id).cloned() {
            self.handle_chunk(id, &tape, index, event);
            return;
        }
        if !self.batch.contains(id) {
            return;
        }
        match event {
            Event::JobStarted { input, .. } => {
                if self.tapes.contains_key(id) {
                    if let Some(bar) = self.bars.get(id) {
                        bar.set_message("joining the chunks");
                    }
                } else if !self.bars.contains_key(id) {
                    self.add_bar(id, &file_name(input));
                }
            }
            Event::JobProgress { progress, .. } => self.show_progress(id, progress),
            Event::JobSucceeded { report, .. } => {
                self.done = (self.done + 1).min(self.total_jobs);
                let length = (!report.already_done).then_some(report.duration_s);
                self.media.finished(id, length);
                let note = if report.already_done {
                    "already done".to_owned()
                } else {
                    format!("done in {}", human_duration(report.elapsed_s))
                };
                self.end(id, &note);
            }
            Event::JobFailed {
                failure, attempt, ..
            } => self.end(id, &format!("attempt {attempt} failed: {}", failure.reason)),
            Event::JobReleased { .. } => self.end(id, "released back to the queue"),
            Event::JobLost { reason, .. } => self.end(id, &format!("stopped: {reason}")),
            _ => {}
        }
    }

    /// `--json`: each event of the batch (and of its tapes' chunks) as a line.
    fn print_json(&mut self, id: &JobId, event: &Event) {
        let chunk_of_batch = match event {
            Event::JobStarted {
                part: Some(part), ..
            } => self.batch.contains(&part.parent),
            _ => false,
        };
        if chunk_of_batch {
            self.chunks.insert(id.clone(), (JobId(String::new()), 0));
        }
        if self.batch.contains(id) || self.chunks.contains_key(id) {
            if let Ok(line) = serde_json::to_string(event) {
                // A closed pipe must not stop the batch: the summary is in the records.
                let _ = writeln!(std::io::stdout(), "{line}");
            }
        }
    }

    /// A job's progress on its bar: its files moving, or its encode.
    fn show_progress(&mut self, id: &JobId, progress: &videofarm_core::Progress) {
        if let Some(transfer) = &progress.transfer {
            // A worker without the media moving the job's files: its own bar says so (the
            // batch's progress counts encodes only).
            if !self.bars.contains_key(id) {
                let name = self.names.get(id).cloned().unwrap_or_default();
                self.add_bar(id, &name);
            }
            if let Some(bar) = self.bars.get(id) {
                bar.set_position((progress.progress.min(1.0) * 1000.0) as u64);
                bar.set_message(describe_transfer(transfer, progress.eta_s));
            }
            return;
        }
        // Speed and fps as ffmpeg reports them, from its first report.
        let speed = progress.speed;
        if let Some(bar) = self.bars.get(id) {
            bar.set_position((progress.progress * 1000.0) as u64);
            bar.set_message(format!(
                "{} frames  {}",
                progress.frames,
                describe_progress(progress)
            ));
        }
        self.media
            .progress(id, progress.progress, speed, progress.eta_s);
        self.speeds.insert(id.clone(), speed);
        self.fractions
            .insert(id.clone(), progress.progress.min(1.0));
        self.show_batch();
    }

    fn add_bar(&mut self, id: &JobId, name: &str) {
        let bar = self
            .multi
            .insert_before(&self.total, ProgressBar::new(1000));
        bar.set_style(
            ProgressStyle::with_template(JOB_STYLE)
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(truncate(name, 28));
        self.bars.insert(id.clone(), bar);
    }

    /// A chunk's progress moves its tape's bar: the tape is one job to the user.
    fn handle_chunk(&mut self, id: &JobId, tape: &JobId, index: u32, event: &Event) {
        let slot = |ui: &mut Self, value: f64| {
            if let Some(parts) = ui.tapes.get_mut(tape) {
                if let Some(part) = parts.get_mut(index as usize) {
                    *part = value;
                }
            }
        };
        match event {
            Event::JobProgress { progress, .. } => {
                slot(self, progress.progress.min(0.999));
                self.speeds.insert(id.clone(), progress.speed);
            }
            Event::JobSucceeded { .. } => {
                slot(self, 1.0);
                self.speeds.remove(id);
                self.media.stopped(id);
            }
            Event::JobFailed { .. } | Event::JobReleased { .. } | Event::JobLost { .. } => {
                slot(self, 0.0);
                self.speeds.remove(id);
                self.media.stopped(id);
            }
            _ => {}
        }
        let Some(parts) = self.tapes.get(tape) else {
            return;
        };
        let done = parts.iter().filter(|p| **p >= 1.0).count();
        let running = parts.iter().filter(|p| **p > 0.0 && **p < 1.0).count();
        let fraction = parts.iter().sum::<f64>() / parts.len().max(1) as f64;
        if let Event::JobProgress { progress, .. } = event {
            self.media
                .chunk_progress(tape, id, fraction, progress.speed);
        }
        let speed: f64 = self
            .chunks
            .iter()
            .filter(|(_, (t, _))| t == tape)
            .filter_map(|(c, _)| self.speeds.get(c))
            .sum();
        if let Some(bar) = self.bars.get(tape) {
            bar.set_position((fraction * 1000.0) as u64);
            bar.set_message(format!(
                "chunks {done}/{} done, {running} encoding  {speed:.2}x",
                parts.len()
            ));
        }
        self.show_batch();
    }

    /// The jobs of the batch in a final state, with the media length of each that has one,
    /// as the queue says (another worker finished some, or one failed for good after a retry
    /// here).
    pub fn set_finished<'a>(
        &mut self,
        finished: impl ExactSizeIterator<Item = (&'a JobId, Option<f64>)>,
    ) {
        self.done = (finished.len() as u64).min(self.total_jobs);
        for (id, length) in finished {
            self.media.finished(id, length);
        }
        self.show_batch();
    }

    fn end(&mut self, id: &JobId, note: &str) {
        self.speeds.remove(id);
        self.fractions.remove(id);
        self.media.stopped(id);
        // A finished tape counts in `done`, not again as a tape in progress.
        self.tapes.remove(id);
        if let Some(bar) = self.bars.remove(id) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        self.show_batch();
        let name = self
            .names
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_string());
        if !self.terminal {
            note!("{name}: {note}");
        } else {
            let _ = self.multi.println(format!("{name}: {note}"));
        }
    }

    pub fn finish(&self) {
        for bar in self.bars.values() {
            bar.finish_and_clear();
        }
        self.total.finish_and_clear();
    }
}

/// An input's file name as shown.
fn file_name(input: &std::path::Path) -> String {
    input
        .file_name()
        .map(|n| shown(n.as_ref()))
        .unwrap_or_default()
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        format!("{text:<max$}")
    } else {
        let head: String = text.chars().take(max - 1).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use videofarm_core::{Progress, Transfer};

    /// A worker without the media fetching a job of the batch gets the job a bar that says
    /// so; its encode then moves the same bar, not a second one.
    #[test]
    fn a_transfer_shows_on_the_jobs_bar_before_its_encode() {
        let id = JobId("j1".into());
        let mut ui = ProgressUi::new(
            [(id.clone(), PathBuf::from("/m/tape one.mpg"), 1000)],
            0,
            false,
        );
        let fetching = Progress {
            progress: 0.5,
            eta_s: Some(2.0),
            transfer: Some(Transfer {
                sending: false,
                bytes: 10_000_000,
                total: 20_000_000,
                rate: 5_000_000.0,
            }),
            ..Progress::default()
        };
        ui.handle(&Event::JobProgress {
            id: id.clone(),
            worker: "far".into(),
            progress: fetching,
        });
        let bar = ui.bars.get(&id).expect("a bar for the fetch");
        assert_eq!(bar.prefix().trim_end(), "tape one.mpg");
        assert!(
            bar.message().contains("fetching the input")
                && bar.message().contains("10.0 MB of 20.0 MB"),
            "{}",
            bar.message()
        );
        assert_eq!(bar.position(), 500);
        assert!(
            !ui.fractions.contains_key(&id),
            "the batch counts encodes only"
        );
        ui.handle(&Event::JobStarted {
            id: id.clone(),
            worker: "far".into(),
            input: "/cache/inputs/h".into(),
            output: "/m/out/tape one.mkv".into(),
            profile: "archive".into(),
            attempt: 1,
            duration_s: Some(10.0),
            part: None,
        });
        assert_eq!(ui.bars.len(), 1, "one bar per job");
    }
}
