//! A tape's measured signal: each frame's and audio block's measurements, in half-second bins
//! on the input's clock, so that a split tape's chunks add up to the tape. What counts as black,
//! clipped, frozen, a dropout or silence for one frame is decided here.

use super::Fields;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The width of a bin, in seconds: the precision of every event's time.
pub const BIN_S: f64 = 0.5;
/// Luma at or under this (8-bit scale) in 90 % of a frame's pixels, on average under
/// [`BLACK_AVG`]: a black frame.
const BLACK_HIGH: f64 = 26.0;
const BLACK_AVG: f64 = 24.0;
/// A frame whose neighbouring luma samples (two pixels apart) differ by this much on average
/// (8-bit scale) is snow: noise with no picture in it (an unrecorded stretch of tape, a lost
/// signal). A grainy picture steps about 10; snow, even once compressed, 20 to 85.
const SNOW_STEP: f64 = 20.0;
/// A tenth of the pixels at the very bottom or top of the range: clipped levels.
const CLIP_LOW: f64 = 1.0;
const CLIP_HIGH: f64 = 254.0;
/// A frame that differs from the one before by less than this (mean absolute luma): frozen.
const FROZEN_DIF: f64 = 0.05;
/// The share of a frame's pixels that are temporal outliers (`TOUT`) above which the frame is
/// counted as a dropout (a head clog, a crease, a burst of noise).
const DROPOUT_TOUT: f64 = 0.002;
/// Audio whose peak stays under this (dBFS) is silent; at or over [`CLIP_DB`] it clips.
const SILENT_DB: f64 = -60.0;
const CLIP_DB: f64 = -0.1;
/// Where a level is "minus infinity".
const FLOOR_DB: f64 = -120.0;
/// The longest tape a signal may describe (a week, in seconds), and the most gaps it may list.
const MAX_TAPE_S: f64 = 7.0 * 24.0 * 3600.0;
const MAX_GAPS: usize = 100_000;

/// One video frame's measurements, as ffmpeg printed them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FrameStats {
    /// The frame's time on the input's clock, in seconds.
    pub t: f64,
    pub ymin: f64,
    pub ylow: f64,
    pub yavg: f64,
    pub yhigh: f64,
    pub ymax: f64,
    pub sat: f64,
    /// Mean absolute luma difference from the frame before (0 for the first).
    pub ydif: f64,
    pub tout: f64,
    pub brng: f64,
    /// Bits per luma sample (values are scaled to 8 bits before they are judged).
    pub depth: u32,
    pub field: Option<Field>,
}

impl FrameStats {
    /// Black: nearly every pixel dark.
    pub fn is_black(&self) -> bool {
        let scaled = |v: f64| eight_bit(v, self.depth);
        scaled(self.yhigh) <= BLACK_HIGH && scaled(self.yavg) <= BLACK_AVG
    }

    /// Blank tape: black, or snow (`step`: the mean absolute difference between neighbouring
    /// luma samples, 8-bit scale), where no picture was recorded.
    pub fn is_blank(&self, step: f64) -> bool {
        self.is_black() || step >= SNOW_STEP
    }
}

/// What `idet` made of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Top,
    Bottom,
    Progressive,
}

/// One block of audio samples' measurements.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AudioStats {
    pub t: f64,
    /// Peak level of the block, dBFS (`None`: digital silence).
    pub peak_db: Option<f64>,
}

/// Half a second of a tape, summed so that two halves of one bin (two chunks) add up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bin {
    pub frames: u32,
    pub black: u32,
    pub clipped: u32,
    pub frozen: u32,
    pub dropout: u32,
    pub top: u32,
    pub bottom: u32,
    pub progressive: u32,
    pub ymin: f32,
    pub ymax: f32,
    /// Sums over the frames (divide by `frames`).
    pub yavg: f32,
    pub sat: f32,
    pub brng: f32,
    pub tout_max: f32,
    pub audio: u32,
    pub silent: u32,
    pub audio_clipped: u32,
    pub peak_db: f32,
}

impl Bin {
    pub(super) fn add(&mut self, other: &Bin) {
        let had_video = self.frames > 0;
        let had_audio = self.audio > 0;
        self.ymin = pick(had_video, other.frames > 0, self.ymin, other.ymin, f32::min);
        self.ymax = pick(had_video, other.frames > 0, self.ymax, other.ymax, f32::max);
        self.peak_db = pick(
            had_audio,
            other.audio > 0,
            self.peak_db,
            other.peak_db,
            f32::max,
        );
        self.frames = self.frames.saturating_add(other.frames);
        self.black = self.black.saturating_add(other.black);
        self.clipped = self.clipped.saturating_add(other.clipped);
        self.frozen = self.frozen.saturating_add(other.frozen);
        self.dropout = self.dropout.saturating_add(other.dropout);
        self.top = self.top.saturating_add(other.top);
        self.bottom = self.bottom.saturating_add(other.bottom);
        self.progressive = self.progressive.saturating_add(other.progressive);
        self.yavg += other.yavg;
        self.sat += other.sat;
        self.brng += other.brng;
        self.tout_max = self.tout_max.max(other.tout_max);
        self.audio = self.audio.saturating_add(other.audio);
        self.silent = self.silent.saturating_add(other.silent);
        self.audio_clipped = self.audio_clipped.saturating_add(other.audio_clipped);
    }
}

/// `a` and `b` combined by `f`, where only the sides that hold something count.
fn pick(has_a: bool, has_b: bool, a: f32, b: f32, f: fn(f32, f32) -> f32) -> f32 {
    match (has_a, has_b) {
        (true, true) => f(a, b),
        (false, true) => b,
        _ => a,
    }
}

/// Frames missing between two that were decoded: damaged or cut data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    /// The time of the frame before the gap.
    pub at: f64,
    pub missing: u64,
}

/// A tape's (or a chunk's) measured signal, in bins on the input's clock.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    pub bins: BTreeMap<i64, Bin>,
    /// The first and last video frame's time.
    pub first: Option<f64>,
    pub last: Option<f64>,
    /// The shortest step between two frames: the frame duration.
    pub frame_s: Option<f64>,
    pub gaps: Vec<Gap>,
    /// The previous frame's time, while frames are added (not kept).
    #[serde(skip)]
    previous: Option<f64>,
}

fn bin_of(t: f64) -> i64 {
    (t / BIN_S).floor() as i64
}

/// A value on the 8-bit scale.
fn eight_bit(v: f64, depth: u32) -> f64 {
    if depth > 8 {
        v / f64::from(1u32 << (depth - 8).min(16))
    } else {
        v
    }
}

impl Signal {
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// Count one video frame.
    pub fn add_frame(&mut self, f: &FrameStats) {
        if !f.t.is_finite() {
            return;
        }
        let scaled = |v: f64| eight_bit(v, f.depth);
        let (ylow, yavg, yhigh) = (scaled(f.ylow), scaled(f.yavg), scaled(f.yhigh));
        let black = f.is_black();
        let first_here = self.previous.is_none();
        if let Some(prev) = self.previous {
            let step = f.t - prev;
            if step > 0.0 {
                let frame = self.frame_s.map_or(step, |d| d.min(step));
                self.frame_s = Some(frame);
                if step > frame * 1.5 {
                    self.gaps.push(Gap {
                        at: prev,
                        missing: ((step / frame).round() as u64).saturating_sub(1),
                    });
                }
            }
        }
        self.previous = Some(f.t);
        self.first = Some(self.first.map_or(f.t, |v| v.min(f.t)));
        self.last = Some(self.last.map_or(f.t, |v| v.max(f.t)));
        let bin = self.bins.entry(bin_of(f.t)).or_default();
        let this = Bin {
            frames: 1,
            black: u32::from(black),
            clipped: u32::from(ylow <= CLIP_LOW || yhigh >= CLIP_HIGH),
            frozen: u32::from(!first_here && !black && scaled(f.ydif) < FROZEN_DIF),
            dropout: u32::from(f.tout >= DROPOUT_TOUT),
            top: u32::from(f.field == Some(Field::Top)),
            bottom: u32::from(f.field == Some(Field::Bottom)),
            progressive: u32::from(f.field == Some(Field::Progressive)),
            ymin: scaled(f.ymin) as f32,
            ymax: scaled(f.ymax) as f32,
            yavg: yavg as f32,
            sat: scaled(f.sat) as f32,
            brng: f.brng as f32,
            tout_max: f.tout as f32,
            ..Bin::default()
        };
        bin.add(&this);
    }

    /// Count one block of audio.
    pub fn add_audio(&mut self, a: &AudioStats) {
        if !a.t.is_finite() {
            return;
        }
        let peak = a.peak_db.filter(|p| p.is_finite()).unwrap_or(FLOOR_DB);
        let bin = self.bins.entry(bin_of(a.t)).or_default();
        bin.add(&Bin {
            audio: 1,
            silent: u32::from(peak < SILENT_DB),
            audio_clipped: u32::from(peak >= CLIP_DB),
            peak_db: peak.max(FLOOR_DB) as f32,
            ..Bin::default()
        });
    }

    /// Why a signal read from elsewhere (a chunk's mark, sent through the file server) cannot
    /// be a tape's: bins or times beyond any tape, more gaps than frames could leave.
    pub fn check(&self) -> Result<(), String> {
        let time_ok = |t: Option<f64>| t.is_none_or(|t| t.is_finite() && t.abs() <= MAX_TAPE_S);
        let bins_ok = self
            .bins
            .keys()
            .all(|k| (k.unsigned_abs() as f64) * BIN_S <= MAX_TAPE_S);
        if !bins_ok
            || !time_ok(self.first)
            || !time_ok(self.last)
            || !time_ok(self.frame_s)
            || self.gaps.len() > MAX_GAPS
            || self.gaps.iter().any(|g| !time_ok(Some(g.at)))
        {
            return Err("a measured signal with times beyond any tape".into());
        }
        Ok(())
    }

    /// `idet`'s verdicts, summed over every bin.
    pub fn fields(&self) -> Fields {
        let sum = |f: fn(&Bin) -> u32| self.bins.values().map(|b| u64::from(f(b))).sum::<u64>();
        Fields {
            top: sum(|b| b.top),
            bottom: sum(|b| b.bottom),
            progressive: sum(|b| b.progressive),
        }
    }

    /// Add another part's signal (a split tape's chunk).
    pub fn merge(&mut self, other: Signal) {
        for (k, b) in other.bins {
            self.bins.entry(k).or_default().add(&b);
        }
        let lower = |a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64| match (a, b) {
            (Some(a), Some(b)) => Some(f(a, b)),
            (a, b) => a.or(b),
        };
        self.first = lower(self.first, other.first, f64::min);
        self.last = lower(self.last, other.last, f64::max);
        self.frame_s = lower(self.frame_s, other.frame_s, f64::min);
        self.gaps.extend(other.gaps);
        self.gaps.sort_by(|a, b| a.at.total_cmp(&b.at));
    }
}
