//! How long a batch has left: the media time its unfinished jobs still hold, over the speed
//! the running encodes are measured at (seconds of media a second, summed). A running job's
//! media left is what ffmpeg's progress says (its ETA at its speed); a waiting job's is its
//! size at the seconds of media per byte of the jobs whose length is known. So one long file
//! left is its own time left, not an average job's.

use std::collections::HashMap;
use videofarm_core::JobId;

#[derive(Debug, Default)]
pub struct MediaLeft {
    /// Each unfinished job's input size.
    sizes: HashMap<JobId, u64>,
    /// The media length of the unfinished jobs whose length is known.
    lengths: HashMap<JobId, f64>,
    /// Media seconds and bytes of the finished jobs whose length is known.
    done: (f64, f64),
    /// How far each running job (or split tape) is, 0 to 1.
    fractions: HashMap<JobId, f64>,
    /// Each running encode's speed (a chunk's under the chunk's own id).
    speeds: HashMap<JobId, f64>,
}

impl MediaLeft {
    pub fn new(sizes: impl IntoIterator<Item = (JobId, u64)>) -> Self {
        Self {
            sizes: sizes.into_iter().collect(),
            ..Default::default()
        }
    }

    /// A report from a whole job's encode: how far it is, its speed, and its own time left.
    pub fn progress(&mut self, job: &JobId, fraction: f64, speed: f64, eta_s: Option<f64>) {
        let fraction = fraction.clamp(0.0, 1.0);
        if let Some(eta) = eta_s.filter(|e| e.is_finite() && *e >= 0.0) {
            if speed > 0.0 && fraction < 0.999 {
                self.lengths
                    .insert(job.clone(), eta * speed / (1.0 - fraction));
            }
        }
        self.fractions.insert(job.clone(), fraction);
        self.speeds.insert(job.clone(), speed.max(0.0));
    }

    /// A report from a chunk of the split tape `tape`: the tape is `fraction` done, and the
    /// chunk encodes at `speed`.
    pub fn chunk_progress(&mut self, tape: &JobId, chunk: &JobId, fraction: f64, speed: f64) {
        self.fractions
            .insert(tape.clone(), fraction.clamp(0.0, 1.0));
        self.speeds.insert(chunk.clone(), speed.max(0.0));
    }

    /// An encode (a job's or a chunk's) stopped; a job that did not finish waits again.
    pub fn stopped(&mut self, encode: &JobId) {
        self.speeds.remove(encode);
        self.fractions.remove(encode);
    }

    /// A job finished (its media length, when it was encoded here).
    pub fn finished(&mut self, job: &JobId, length_s: Option<f64>) {
        self.speeds.remove(job);
        self.fractions.remove(job);
        self.lengths.remove(job);
        if let (Some(size), Some(length)) = (self.sizes.remove(job), length_s) {
            if length > 0.0 && size > 0 {
                self.done.0 += length;
                self.done.1 += size as f64;
            }
        }
    }

    /// Seconds left for the batch, once there is a speed and a length to go by.
    pub fn eta(&self) -> Option<f64> {
        let speed: f64 = self.speeds.values().sum();
        if speed <= 0.0 {
            return None;
        }
        let (known_s, known_bytes) = self
            .lengths
            .iter()
            .filter_map(|(id, l)| self.sizes.get(id).map(|s| (*l, *s as f64)))
            .fold(self.done, |(l, b), (dl, db)| (l + dl, b + db));
        let per_byte = (known_bytes > 0.0).then(|| known_s / known_bytes);
        let mut left = 0.0;
        for (id, size) in &self.sizes {
            let length = match (self.lengths.get(id), per_byte) {
                (Some(l), _) => *l,
                (None, Some(per_byte)) => *size as f64 * per_byte,
                (None, None) => return None,
            };
            left += length * (1.0 - self.fractions.get(id).copied().unwrap_or(0.0));
        }
        Some(left / speed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: &str) -> JobId {
        JobId(n.into())
    }

    #[test]
    fn one_long_file_left_is_its_own_time_left() {
        // Three short files done, one long one running: its own ETA, not an average job's.
        let mut left = MediaLeft::new([
            (id("a"), 100),
            (id("b"), 100),
            (id("c"), 100),
            (id("long"), 1000),
        ]);
        for short in ["a", "b", "c"] {
            left.finished(&id(short), Some(2.0));
        }
        left.progress(&id("long"), 0.05, 2.0, Some(9.5));
        let eta = left.eta().unwrap();
        assert!((eta - 9.5).abs() < 1e-9, "{eta}");
    }

    #[test]
    fn waiting_files_count_by_their_size_at_the_measured_seconds_per_byte() {
        let mut left = MediaLeft::new([(id("a"), 1000), (id("b"), 3000)]);
        // a: 10 s of media (1 s/100 bytes), half done at 2x: 2.5 s left for it.
        left.progress(&id("a"), 0.5, 2.0, Some(2.5));
        // b: 30 s at 2x is 15 s more.
        let eta = left.eta().unwrap();
        assert!((eta - 17.5).abs() < 1e-9, "{eta}");
        // Nothing to go by before the first report.
        assert_eq!(MediaLeft::new([(id("a"), 1)]).eta(), None);
    }

    #[test]
    fn a_split_tape_goes_at_the_speed_of_all_its_chunks() {
        let mut left = MediaLeft::new([(id("done"), 100), (id("tape"), 1000)]);
        left.finished(&id("done"), Some(1.0));
        left.chunk_progress(&id("tape"), &id("c1"), 0.5, 2.0);
        left.chunk_progress(&id("tape"), &id("c2"), 0.5, 3.0);
        // 10 s of tape, half done, at 5x together: 1 s.
        assert!((left.eta().unwrap() - 1.0).abs() < 1e-9);
        left.stopped(&id("c1"));
        assert!((left.eta().unwrap() - 5.0 / 3.0).abs() < 1e-9);
    }
}
