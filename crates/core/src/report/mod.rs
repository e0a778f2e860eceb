//! The tape report: what a tape's signal says, frame by frame, turned into events a person can
//! act on ("black at the start 00:00:00-00:00:01", "3 frames lost at 00:12:33", "audio silent
//! 00:06-00:07.5", "interlaced, bottom field first").
//!
//! The encode's own decode pass measures (`idet` and `astats` in ffmpeg, the levels of a small
//! picture of each frame as `signalstats` defines them); the reader of its output hands each
//! frame here as a [`FrameStats`] or [`AudioStats`]. A
//! [`Signal`] keeps them in half-second bins keyed by the input's own clock, so the signals of
//! a split tape's chunks merge into the tape's by adding bins; [`Signal::report`] then names
//! the faults. Every rule that decides what a fault is lives here, once.

mod signal;

use crate::treat::Trim;
use serde::{Deserialize, Serialize};
pub use signal::{AudioStats, Bin, Field, FrameStats, Gap, Signal, BIN_S};

/// The shortest stretch reported, per kind, in seconds.
const MIN_BLACK_S: f64 = 0.5;
const MIN_FROZEN_S: f64 = 2.0;
const MIN_SILENT_S: f64 = 1.0;
/// At most this many events are kept (the rest are counted), and this many timeline points.
pub const MAX_EVENTS: usize = 100;
pub const MAX_POINTS: usize = 200;

impl Signal {
    /// What the signal says, with times from the first frame.
    pub fn report(&self) -> TapeReport {
        self.report_cut(None)
    }

    /// What the signal of a tape whose blank ends were cut (`trim`) says: the signal is of the
    /// frames kept; times are from the tape's first frame, and the cuts are events too.
    pub fn report_cut(&self, trim: Option<&Trim>) -> TapeReport {
        let Some(first) = self.first else {
            return TapeReport::default();
        };
        let trim = trim.filter(|t| t.is_valid());
        let origin = first - trim.map_or(0.0, Trim::lead_s);
        let frame_s = self.frame_s.unwrap_or(0.0);
        let duration = match trim {
            Some(t) => t.tape_end_s - t.first_s,
            None => (self.last.unwrap_or(origin) - origin + frame_s).max(0.0),
        };
        // Audio may run past the last frame: its events are kept whole.
        let bins_end = self
            .bins
            .keys()
            .last()
            .map_or(origin, |&k| (k as f64 + 1.0) * BIN_S);
        let limit = duration.max(bins_end - origin);
        let at = |t: f64| ((t - origin).clamp(0.0, limit) * 100.0).round() / 100.0;
        let mut events = Vec::new();
        let mut totals = Totals::default();
        for kind in Fault::STRETCHES {
            for (start, end) in self.stretches(kind) {
                let (start, end) = (at(start), at(end));
                let length = end - start;
                if length + 1e-9 < kind.shortest() {
                    continue;
                }
                totals.add(kind, length);
                events.push(TapeEvent::new(kind, start, end, duration));
            }
        }
        for gap in &self.gaps {
            totals.lost = totals.lost.saturating_add(gap.missing);
            let start = at(gap.at);
            events.push(TapeEvent {
                kind: Fault::Lost,
                start_s: start,
                end_s: at(gap.at + frame_s * (gap.missing as f64 + 1.0)),
                text: format!(
                    "{} frame{} lost after {} (damaged or cut data)",
                    gap.missing,
                    if gap.missing == 1 { "" } else { "s" },
                    clock(start)
                ),
            });
        }
        if let Some(t) = trim {
            events.extend(cut_events(t));
        }
        events.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
        let dropped = events.len().saturating_sub(MAX_EVENTS);
        events.truncate(MAX_EVENTS);
        let sum = |f: fn(&Bin) -> u32| self.bins.values().map(|b| u64::from(f(b))).sum::<u64>();
        let frames = sum(|b| b.frames);
        let share = |n: u64| {
            if frames == 0 {
                0.0
            } else {
                ((n as f64 / frames as f64) * 1000.0).round() / 1000.0
            }
        };
        let mut report = TapeReport {
            verdict: String::new(),
            duration_s: (duration * 100.0).round() / 100.0,
            frames,
            fields: self.fields(),
            clipped_share: share(sum(|b| b.clipped)),
            black_s: round2(totals.black),
            silent_s: round2(totals.silent),
            frozen_s: round2(totals.frozen),
            lost_frames: totals.lost,
            audio: self.bins.values().any(|b| b.audio > 0),
            events,
            more_events: dropped,
            timeline: self.timeline(origin),
            treatment: None,
        };
        report.verdict = report.summary();
        report
    }

    /// The stretches (start, end) on the input's clock where bins of `kind` hold.
    fn stretches(&self, kind: Fault) -> Vec<(f64, f64)> {
        let mut out: Vec<(f64, f64)> = Vec::new();
        for (&k, bin) in &self.bins {
            if !kind.holds(bin) {
                continue;
            }
            let (start, end) = (k as f64 * BIN_S, (k as f64 + 1.0) * BIN_S);
            match out.last_mut() {
                Some(last) if (last.1 - start).abs() < 1e-9 => last.1 = end,
                _ => out.push((start, end)),
            }
        }
        out
    }

    /// At most [`MAX_POINTS`] points, each the bins of an equal stretch of the tape.
    fn timeline(&self, origin: f64) -> Vec<Point> {
        let (Some(&first), Some(&last)) = (self.bins.keys().next(), self.bins.keys().last()) else {
            return Vec::new();
        };
        // In i128: a signal read from elsewhere may hold any keys.
        let span = i128::from(last) - i128::from(first) + 1;
        let per = (span + MAX_POINTS as i128 - 1) / MAX_POINTS as i128;
        let per = i64::try_from(per.max(1)).unwrap_or(i64::MAX);
        let mut points = Vec::new();
        let mut start = first;
        while start <= last {
            let mut sum = Bin::default();
            for (_, b) in self.bins.range(start..start.saturating_add(per)) {
                sum.add(b);
            }
            let n = f64::from(sum.frames.max(1));
            let r = |v: f32| (f64::from(v) * 1000.0).round() / 1000.0;
            let mean = |v: f32| (f64::from(v) / n * 1000.0).round() / 1000.0;
            points.push(Point {
                t: round2((start as f64 * BIN_S - origin).max(0.0)),
                ymin: r(sum.ymin),
                yavg: mean(sum.yavg),
                ymax: r(sum.ymax),
                sat: mean(sum.sat),
                brng: mean(sum.brng),
                tout: r(sum.tout_max),
                peak_db: (sum.audio > 0).then(|| r(sum.peak_db)),
                faults: sum.black + sum.clipped + sum.frozen + sum.dropout + sum.silent,
            });
            match start.checked_add(per) {
                Some(next) => start = next,
                None => break,
            }
        }
        points
    }
}

/// The blank stretches a trim cut, as events on the tape's clock.
fn cut_events(t: &Trim) -> Vec<TapeEvent> {
    let mut events = Vec::new();
    if t.lead_s() > 0.0 {
        let end = round2(t.lead_s());
        events.push(TapeEvent {
            kind: Fault::Blank,
            start_s: 0.0,
            end_s: end,
            text: format!(
                "blank tape at the start ({}-{}), cut",
                clock(0.0),
                clock(end)
            ),
        });
    }
    if let Some(end) = t.end_s {
        let start = round2(end - t.first_s);
        events.push(TapeEvent {
            kind: Fault::Blank,
            start_s: start,
            end_s: round2(t.tape_end_s - t.first_s),
            text: format!("blank tape from {} to the end, cut", clock(start)),
        });
    }
    events
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[derive(Default)]
struct Totals {
    black: f64,
    silent: f64,
    frozen: f64,
    lost: u64,
}

impl Totals {
    fn add(&mut self, kind: Fault, length: f64) {
        match kind {
            Fault::Black => self.black += length,
            Fault::Silent => self.silent += length,
            Fault::Frozen => self.frozen += length,
            _ => {}
        }
    }
}

/// What kind of fault an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    Black,
    Frozen,
    Clipped,
    Dropout,
    Lost,
    Silent,
    AudioClipped,
    /// Blank tape (black or snow) at an end, cut by the treatment.
    Blank,
}

impl Fault {
    /// The kinds found as stretches of bins.
    const STRETCHES: [Fault; 6] = [
        Fault::Black,
        Fault::Frozen,
        Fault::Clipped,
        Fault::Dropout,
        Fault::Silent,
        Fault::AudioClipped,
    ];

    fn holds(self, b: &Bin) -> bool {
        let most = |n: u32, of: u32| of > 0 && 2 * n >= of;
        match self {
            Fault::Black => most(b.black, b.frames),
            Fault::Frozen => most(b.frozen, b.frames),
            Fault::Clipped => most(b.clipped, b.frames),
            Fault::Dropout => b.dropout > 0,
            Fault::Silent => most(b.silent, b.audio),
            Fault::AudioClipped => b.audio_clipped > 0,
            Fault::Lost | Fault::Blank => false,
        }
    }

    fn shortest(self) -> f64 {
        match self {
            Fault::Black => MIN_BLACK_S,
            Fault::Frozen => MIN_FROZEN_S,
            Fault::Silent => MIN_SILENT_S,
            _ => 0.0,
        }
    }

    /// What the fault is called in words.
    pub fn words(self) -> &'static str {
        match self {
            Fault::Black => "black",
            Fault::Frozen => "frozen picture",
            Fault::Clipped => "luma clipped",
            Fault::Dropout => "dropouts",
            Fault::Lost => "frames lost",
            Fault::Silent => "audio silent",
            Fault::AudioClipped => "audio clipping",
            Fault::Blank => "blank tape cut",
        }
    }
}

/// Something on the tape a person can act on, with its time from the first frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TapeEvent {
    pub kind: Fault,
    pub start_s: f64,
    pub end_s: f64,
    pub text: String,
}

impl TapeEvent {
    fn new(kind: Fault, start: f64, end: f64, duration: f64) -> Self {
        let span = format!("{}-{}", clock(start), clock(end));
        let text = match kind {
            Fault::Black if start <= 0.0 => format!("black at the start ({span})"),
            Fault::Black if end + BIN_S >= duration => {
                format!("black from {} to the end", clock(start))
            }
            _ => format!("{} {span}", kind.words()),
        };
        Self {
            kind,
            start_s: start,
            end_s: end,
            text,
        }
    }
}

/// `idet`'s verdicts, frame by frame, summed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Fields {
    pub top: u64,
    pub bottom: u64,
    pub progressive: u64,
}

impl Fields {
    /// "interlaced, bottom field first", "progressive", or nothing when `idet` could not tell.
    pub fn words(&self) -> Option<&'static str> {
        let interlaced = self.top + self.bottom;
        if interlaced + self.progressive == 0 {
            None
        } else if interlaced >= self.progressive {
            Some(if self.bottom > self.top {
                "interlaced, bottom field first"
            } else {
                "interlaced, top field first"
            })
        } else {
            Some("progressive")
        }
    }
}

/// One point of the signal's timeline (the bins of a stretch of the tape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub t: f64,
    pub ymin: f64,
    pub yavg: f64,
    pub ymax: f64,
    pub sat: f64,
    pub brng: f64,
    pub tout: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_db: Option<f64>,
    /// Frames and audio blocks in this stretch that count toward some fault.
    pub faults: u32,
}

/// What a tape's signal says: stored with its job, shown by `videofarm report`. Every field
/// has a default, so a record written by another version still reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TapeReport {
    /// The report in one line ("clean, progressive", "black ×2, 3 frames lost, ...").
    pub verdict: String,
    pub duration_s: f64,
    pub frames: u64,
    pub fields: Fields,
    /// The share of frames whose luma is clipped (0..1).
    pub clipped_share: f64,
    pub black_s: f64,
    pub silent_s: f64,
    pub frozen_s: f64,
    pub lost_frames: u64,
    /// Whether the tape has audio (measured).
    pub audio: bool,
    pub events: Vec<TapeEvent>,
    /// Events beyond [`MAX_EVENTS`], counted.
    #[serde(default)]
    pub more_events: usize,
    pub timeline: Vec<Point>,
    /// What was done to the tape from what it measured (`auto` profiles), in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub treatment: Option<String>,
}

impl TapeReport {
    /// One line: "clean, interlaced, top field first" or "black ×2, 3 frames lost, ...".
    fn summary(&self) -> String {
        let mut counts: Vec<(Fault, usize)> = Vec::new();
        for e in &self.events {
            match counts.iter_mut().find(|(k, _)| *k == e.kind) {
                Some((_, n)) => *n += 1,
                None => counts.push((e.kind, 1)),
            }
        }
        let mut parts: Vec<String> = counts
            .iter()
            .map(|(kind, n)| match kind {
                Fault::Lost => format!("{} frames lost", self.lost_frames),
                Fault::Clipped => format!(
                    "luma clipped {:.0} % of the tape",
                    self.clipped_share * 100.0
                ),
                _ if *n == 1 => kind.words().to_owned(),
                _ => format!("{} ×{n}", kind.words()),
            })
            .collect();
        if parts.is_empty() {
            parts.push("clean".into());
        }
        if let Some(fields) = self.fields.words() {
            parts.push(fields.into());
        }
        parts.join(", ")
    }
}

/// `t` seconds as `HH:MM:SS.s`.
pub fn clock(t: f64) -> String {
    let tenths = (t.max(0.0) * 10.0).round() as u64;
    let (s, tenth) = (tenths / 10, tenths % 10);
    format!("{:02}:{:02}:{:02}.{tenth}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(t: f64, yavg: f64) -> FrameStats {
        FrameStats {
            t,
            ymin: yavg - 10.0,
            ylow: yavg - 5.0,
            yavg,
            yhigh: yavg + 5.0,
            ymax: yavg + 10.0,
            ydif: 3.0,
            depth: 8,
            field: Some(Field::Bottom),
            ..FrameStats::default()
        }
    }

    /// A 10 s tape at 25 fps: black for its first second and after 9 s.
    fn tape(from: f64, to: f64) -> Signal {
        let mut s = Signal::default();
        for i in 0..250 {
            let t = 1.4 + i as f64 * 0.04;
            if t < from || t >= to {
                continue;
            }
            let black = !(25..225).contains(&i);
            s.add_frame(&frame(t, if black { 16.0 } else { 120.0 }));
        }
        s
    }

    #[test]
    fn black_at_both_ends_is_named_with_its_time() {
        let report = tape(0.0, 100.0).report();
        let texts: Vec<&str> = report.events.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(report.frames, 250);
        assert_eq!(report.events.len(), 2, "{texts:?}");
        assert!(texts[0].starts_with("black at the start"), "{texts:?}");
        assert!(report.events[0].end_s > 0.5 && report.events[0].end_s < 1.5);
        assert!(texts[1].starts_with("black from 00:00:09"), "{texts:?}");
        assert_eq!(report.verdict, "black ×2, interlaced, bottom field first");
    }

    #[test]
    fn a_split_tape_reports_what_the_whole_one_does() {
        let whole = tape(0.0, 100.0).report();
        let mut parts = tape(0.0, 5.03);
        parts.merge(tape(5.03, 8.0));
        parts.merge(tape(8.0, 100.0));
        assert_eq!(parts.report(), whole);
    }

    #[test]
    fn lost_frames_are_counted_where_they_went() {
        let mut s = Signal::default();
        for i in (0..100).filter(|i| !(40..43).contains(i)) {
            s.add_frame(&frame(i as f64 * 0.04, 120.0));
        }
        let report = s.report();
        assert_eq!(report.lost_frames, 3);
        let lost = &report.events[0];
        assert_eq!(lost.kind, Fault::Lost);
        assert!((lost.start_s - 1.56).abs() < 0.01, "{lost:?}");
        assert_eq!(
            report.verdict,
            "3 frames lost, interlaced, bottom field first"
        );
    }

    #[test]
    fn silence_needs_a_second_and_ten_bit_levels_are_scaled() {
        let mut s = Signal::default();
        for i in 0..100 {
            let t = i as f64 * 0.1;
            let quiet = (3.0..4.6).contains(&t);
            s.add_audio(&AudioStats {
                t,
                peak_db: if quiet { None } else { Some(-12.0) },
            });
        }
        for i in 0..25 {
            let mut f = frame(i as f64 * 0.04, 64.0);
            f.depth = 10;
            s.add_frame(&f);
        }
        let report = s.report();
        let silent: Vec<_> = report
            .events
            .iter()
            .filter(|e| e.kind == Fault::Silent)
            .collect();
        assert_eq!(silent.len(), 1, "{:?}", report.events);
        assert!((silent[0].start_s - 3.0).abs() <= BIN_S, "{:?}", silent[0]);
        assert!(report.events.iter().any(|e| e.kind == Fault::Black));
    }

    #[test]
    fn a_hostile_signal_is_refused_and_cannot_overflow_a_report() {
        let mut s = Signal::default();
        s.bins.insert(
            i64::MIN,
            Bin {
                frames: u32::MAX,
                ..Bin::default()
            },
        );
        s.bins.insert(
            i64::MAX,
            Bin {
                frames: u32::MAX,
                ..Bin::default()
            },
        );
        s.first = Some(0.0);
        s.gaps.push(Gap {
            at: 1.0,
            missing: u64::MAX,
        });
        s.gaps.push(Gap {
            at: 2.0,
            missing: u64::MAX,
        });
        assert!(s.check().is_err());
        let mut twice = s.clone();
        twice.merge(s);
        let report = twice.report();
        assert_eq!(report.lost_frames, u64::MAX);
        assert!(report.timeline.len() <= MAX_POINTS + 1);
        assert!(tape(0.0, 100.0).check().is_ok());
    }

    #[test]
    fn the_clock_reads_like_a_tape_counter() {
        assert_eq!(clock(0.0), "00:00:00.0");
        assert_eq!(clock(3723.46), "01:02:03.5");
    }
}
