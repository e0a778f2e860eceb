//! Blank tape cut from a tape's ends: where the cut falls, and the filters that make it (the
//! ffmpeg crate's `ends` module finds the blank tape).

use serde::{Deserialize, Serialize};

/// Blank tape (black or snow) cut from a tape's start and end. Times are on the clock ffmpeg's
/// filters see in a plain encode: the source's timestamps less its container's start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Trim {
    /// The tape's first frame.
    pub first_s: f64,
    /// The first frame kept: the frames before it are blank.
    pub start_s: f64,
    /// The first frame cut at the end (it and every frame after it are blank), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_s: Option<f64>,
    /// Where the tape ends (its last frame's end).
    pub tape_end_s: f64,
    /// One frame's duration: bounds are set a quarter of it before a frame's time.
    pub frame_s: f64,
}

/// The shortest blank stretch worth cutting, at either end.
pub const MIN_TRIM_S: f64 = 0.5;

impl Trim {
    /// The cut that keeps the frames from the first to the last that are not blank (`None`:
    /// the blank stretches at the ends are too short to cut, or the whole tape is blank).
    /// `first_s`/`tape_end_s` bound the tape, `content` is (first frame kept, first frame cut
    /// at the end, if any).
    pub fn choose(
        (first_s, tape_end_s): (f64, f64),
        content: (f64, Option<f64>),
        frame_s: f64,
    ) -> Option<Trim> {
        let (start, end) = content;
        let lead = start - first_s;
        let tail = end.map(|e| tape_end_s - e);
        let start_s = if lead >= MIN_TRIM_S { start } else { first_s };
        let end_s = end.filter(|_| tail.is_some_and(|t| t >= MIN_TRIM_S));
        let trim = Trim {
            first_s,
            start_s,
            end_s,
            tape_end_s,
            frame_s,
        };
        (trim.is_valid() && (start_s > first_s || end_s.is_some())).then_some(trim)
    }

    /// Times a tape could have, in order (a message could carry any numbers).
    pub fn is_valid(&self) -> bool {
        let time = |t: f64| t.is_finite() && t.abs() <= 7.0 * 24.0 * 3600.0;
        let end = self.end_s.unwrap_or(self.tape_end_s);
        [self.first_s, self.start_s, self.tape_end_s, end]
            .into_iter()
            .all(time)
            && self.frame_s.is_finite()
            && self.frame_s > 0.0
            && self.frame_s <= 1.0
            && self.first_s <= self.start_s
            && self.start_s < end
            && end <= self.tape_end_s
    }

    /// The length kept.
    pub fn kept_s(&self) -> f64 {
        self.end_s.unwrap_or(self.tape_end_s) - self.start_s
    }

    /// Blank tape cut at the start, in seconds.
    pub fn lead_s(&self) -> f64 {
        self.start_s - self.first_s
    }

    /// Whether a frame at `t` is kept.
    pub fn keeps(&self, t: f64) -> bool {
        let q = self.frame_s / 4.0;
        t >= self.start_s - q && self.end_s.is_none_or(|e| t < e - q)
    }

    /// The video filter that keeps only these frames (a quarter frame before each bound),
    /// first in a whole encode's chain.
    pub fn video_filter(&self) -> String {
        let q = self.frame_s / 4.0;
        match self.end_s {
            Some(end) => format!("trim=start={:.6}:end={:.6}", self.start_s - q, end - q),
            None => format!("trim=start={:.6}", self.start_s - q),
        }
    }

    /// The audio filter that keeps the sound of the frames kept, from the first frame's time
    /// on (`from_zero`: on a clock where that time is zero, as at a split tape's join), its
    /// clock then starting at zero like the video's.
    pub fn audio_filter(&self, from_zero: bool) -> String {
        let shift = if from_zero { self.start_s } else { 0.0 };
        let start = format!("atrim=start={:.6}", self.start_s - shift);
        let end = self
            .end_s
            .map(|e| format!(":end={:.6}", e - shift))
            .unwrap_or_default();
        format!("{start}{end},asetpts=PTS-STARTPTS")
    }

    /// The cut in words, for the job's report.
    pub(super) fn words(&self) -> String {
        let mut said = Vec::new();
        if self.lead_s() > 0.0 {
            said.push(format!(
                "blank tape cut at the start ({:.1} s)",
                self.lead_s()
            ));
        }
        if let Some(end) = self.end_s {
            said.push(format!(
                "blank tape cut at the end ({:.1} s)",
                self.tape_end_s - end
            ));
        }
        said.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::treat::Treatment;

    #[test]
    fn blank_ends_are_cut_only_where_worth_it_and_never_past_the_tape() {
        let cut = |start, end| Trim::choose((0.0, 10.0), (start, end), 0.04);
        let t = cut(1.48, Some(9.0)).unwrap();
        assert_eq!(
            (t.start_s, t.end_s, t.kept_s()),
            (1.48, Some(9.0), 9.0 - 1.48)
        );
        assert!(!t.keeps(1.44) && t.keeps(1.48) && t.keeps(8.96) && !t.keeps(9.0));
        assert_eq!(t.video_filter(), "trim=start=1.470000:end=8.990000");
        assert_eq!(
            t.audio_filter(false),
            "atrim=start=1.480000:end=9.000000,asetpts=PTS-STARTPTS"
        );
        assert_eq!(
            t.audio_filter(true),
            "atrim=start=0.000000:end=7.520000,asetpts=PTS-STARTPTS"
        );
        // A blank start too short to cut: only the end is; nothing worth cutting: no trim.
        assert_eq!(cut(0.2, Some(9.0)).unwrap().start_s, 0.0);
        assert_eq!(cut(0.2, Some(9.8)), None);
        assert_eq!(cut(0.0, None), None);
        // Numbers no survey gives are refused, from a message too.
        assert_eq!(cut(f64::NAN, None), None);
        let hostile = Trim { start_s: 12.0, ..t };
        assert!(!hostile.is_valid());
        let treatment = Treatment {
            fields: None,
            mask_bottom: 0,
            loudness: None,
            trim: Some(hostile),
        };
        assert!(!treatment.is_valid());
    }
}
