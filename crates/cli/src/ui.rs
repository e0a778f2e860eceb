//! Progress for `videofarm run`: a bar per running encode and one for the batch on a terminal,
//! one plain line per finished job otherwise (logs, CI, pipes).

use crate::commands::{describe_progress, human_duration, shown};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
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
    done: u64,
    total_jobs: u64,
}

const JOB_STYLE: &str = "{prefix:.bold} [{bar:32.cyan/blue}] {percent:>3}% {msg}";
const TOTAL_STYLE: &str =
    "{prefix:.bold} [{bar:32.green/white}] {pos}/{len} jobs  {elapsed_precise}  eta {eta}  {msg}";

impl ProgressUi {
    pub fn new(batch: impl IntoIterator<Item = JobId>, already_done: u64) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let multi = MultiProgress::with_draw_target(if terminal {
            ProgressDrawTarget::stderr_with_hz(4)
        } else {
            ProgressDrawTarget::hidden()
        });
        let batch: std::collections::HashSet<JobId> = batch.into_iter().collect();
        let total_jobs = batch.len() as u64;
        let total = multi.add(ProgressBar::new(total_jobs));
        total.set_style(
            ProgressStyle::with_template(TOTAL_STYLE)
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        total.set_prefix("batch");
        total.set_position(already_done);
        total.enable_steady_tick(Duration::from_millis(500));
        Self {
            multi,
            total,
            bars: HashMap::new(),
            batch,
            speeds: HashMap::new(),
            chunks: HashMap::new(),
            tapes: HashMap::new(),
            terminal,
            done: already_done,
            total_jobs,
        }
    }

    pub fn handle(&mut self, event: &Event) {
        let Some(id) = event.job_id() else { return };
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
                    self.add_bar(&part.parent, input);
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
                } else {
                    self.add_bar(id, input);
                }
            }
            Event::JobProgress { progress, .. } => {
                if let Some(bar) = self.bars.get(id) {
                    bar.set_position((progress.progress * 1000.0) as u64);
                    bar.set_message(format!(
                        "{} frames  {}",
                        progress.frames,
                        describe_progress(progress)
                    ));
                }
                self.speeds.insert(id.clone(), progress.speed);
                let speed: f64 = self.speeds.values().sum();
                self.total
                    .set_message(format!("{} running  {speed:.2}x", self.speeds.len()));
            }
            Event::JobSucceeded { report, .. } => {
                self.done += 1;
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

    fn add_bar(&mut self, id: &JobId, input: &std::path::Path) {
        let bar = self
            .multi
            .insert_before(&self.total, ProgressBar::new(1000));
        bar.set_style(
            ProgressStyle::with_template(JOB_STYLE)
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let name = input
            .file_name()
            .map(|n| shown(n.as_ref()))
            .unwrap_or_default();
        bar.set_prefix(truncate(&name, 28));
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
            }
            Event::JobFailed { .. } | Event::JobReleased { .. } | Event::JobLost { .. } => {
                slot(self, 0.0);
                self.speeds.remove(id);
            }
            _ => {}
        }
        let Some(parts) = self.tapes.get(tape) else {
            return;
        };
        let done = parts.iter().filter(|p| **p >= 1.0).count();
        let running = parts.iter().filter(|p| **p > 0.0 && **p < 1.0).count();
        let fraction = parts.iter().sum::<f64>() / parts.len().max(1) as f64;
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
        let total: f64 = self.speeds.values().sum();
        self.total
            .set_message(format!("{} running  {total:.2}x", self.speeds.len()));
    }

    /// Record that a job reached a final state without an event from this process (another
    /// worker finished it, or it failed for good after a retry here).
    pub fn set_finished(&mut self, finished: u64) {
        self.done = finished;
        self.total.set_position(finished.min(self.total_jobs));
    }

    fn end(&mut self, id: &JobId, note: &str) {
        self.speeds.remove(id);
        if let Some(bar) = self.bars.remove(id) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        self.total.set_position(self.done.min(self.total_jobs));
        if !self.terminal {
            eprintln!("job {id}: {note}");
        } else {
            let _ = self.multi.println(format!("job {id}: {note}"));
        }
    }

    pub fn finish(&self) {
        for bar in self.bars.values() {
            bar.finish_and_clear();
        }
        self.total.finish_and_clear();
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        format!("{text:<max$}")
    } else {
        let head: String = text.chars().take(max - 1).collect();
        format!("{head}…")
    }
}
