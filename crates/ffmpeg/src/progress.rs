//! Parsing ffmpeg's `-progress` output: blocks of `key=value` lines, each closed by
//! `progress=continue` or `progress=end`.

use videofarm_core::Progress;

/// Accumulates `key=value` lines and yields a [`Progress`] at the end of each block.
#[derive(Debug, Default)]
pub struct ProgressParser {
    /// Media duration of the input, for the 0..1 fraction and the ETA.
    duration_s: Option<f64>,
    frames: u64,
    fps: f64,
    out_time_s: f64,
    speed: f64,
}

impl ProgressParser {
    pub fn new(duration_s: Option<f64>) -> Self {
        Self {
            duration_s: duration_s.filter(|d| *d > 0.0),
            ..Self::default()
        }
    }

    /// The input's duration may become known after the encode has started (the input is
    /// probed while ffmpeg already runs).
    pub fn set_duration(&mut self, duration_s: Option<f64>) {
        if self.duration_s.is_none() {
            self.duration_s = duration_s.filter(|d| *d > 0.0);
        }
    }

    /// Feed one line; returns a snapshot when the line closes a block.
    pub fn line(&mut self, line: &str) -> Option<Progress> {
        let (key, value) = line.trim().split_once('=')?;
        let value = value.trim();
        match key {
            "frame" => self.frames = value.parse().unwrap_or(self.frames),
            "fps" => self.fps = value.parse().unwrap_or(self.fps),
            "out_time_us" | "out_time_ms" => {
                // Both keys are microseconds (ffmpeg's historical naming); N/A early on.
                if let Ok(us) = value.parse::<i64>() {
                    self.out_time_s = us.max(0) as f64 / 1e6;
                }
            }
            "speed" => {
                self.speed = value
                    .trim_end_matches('x')
                    .trim()
                    .parse()
                    .unwrap_or(self.speed)
            }
            "progress" => return Some(self.snapshot(value == "end")),
            _ => {}
        }
        None
    }

    /// Media seconds encoded so far.
    pub fn out_time_s(&self) -> f64 {
        self.out_time_s
    }

    fn snapshot(&self, end: bool) -> Progress {
        let fraction = match (end, self.duration_s) {
            (true, _) => 1.0,
            (false, Some(d)) => (self.out_time_s / d).clamp(0.0, 1.0),
            (false, None) => 0.0,
        };
        let eta_s = match (end, self.duration_s) {
            (true, _) => Some(0.0),
            (false, Some(d)) if self.speed > 0.0 => {
                Some(((d - self.out_time_s).max(0.0)) / self.speed)
            }
            _ => None,
        };
        Progress {
            progress: fraction,
            frames: self.frames,
            fps: self.fps,
            speed: self.speed,
            eta_s,
            transfer: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_block_and_computes_fraction_and_eta() {
        let mut p = ProgressParser::new(Some(10.0));
        let block = "frame=120\nfps=48.5\nstream_0_0_q=28.0\nbitrate=N/A\nout_time_us=4000000\nout_time_ms=4000000\nout_time=00:00:04.000000\nspeed=2.00x\n";
        for line in block.lines() {
            assert_eq!(p.line(line), None);
        }
        let snap = p.line("progress=continue").unwrap();
        assert_eq!(snap.frames, 120);
        assert!((snap.fps - 48.5).abs() < 1e-9);
        assert!((snap.progress - 0.4).abs() < 1e-9);
        assert!((snap.speed - 2.0).abs() < 1e-9);
        assert!((snap.eta_s.unwrap() - 3.0).abs() < 1e-9);
        let end = p.line("progress=end").unwrap();
        assert_eq!(end.progress, 1.0);
    }

    #[test]
    fn tolerates_not_available_values() {
        let mut p = ProgressParser::new(None);
        for line in ["frame=0", "fps=0.00", "out_time_us=N/A", "speed=N/A"] {
            p.line(line);
        }
        let snap = p.line("progress=continue").unwrap();
        assert_eq!(snap.progress, 0.0);
        assert_eq!(snap.eta_s, None);
    }
}
