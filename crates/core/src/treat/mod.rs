//! Treatment chosen from the tape: a profile with `auto` has its deinterlacer set by what
//! `idet` measured in the tape (a survey of a few stretches of it, before the encode), not by
//! the flags the capture carries (often wrong: a capture card that flags every frame top field
//! first, a lossless capture with no field flags at all). A bottom-field-first tape gets
//! `parity=bff`, a top-field-first one `parity=tff`, and a progressive one no deinterlacer.
//! Blank tape (black or snow) at either end is cut ([`Trim`]), never a stretch inside it.

mod auto;
mod trim;

pub use auto::Auto;
pub use trim::{Trim, MIN_TRIM_S};

use crate::report::Fields;
use crate::SplitArgs;
use serde::{Deserialize, Serialize};

/// The deinterlacers whose field order a treatment sets.
const DEINTERLACERS: &[&str] = &["bwdif", "yadif"];
/// Frames `idet` must have decided before its verdict is used.
const MIN_DECIDED: u64 = 20;
/// How many times the other order's votes one order needs to be taken.
const ORDER_MAJORITY: u64 = 3;

/// What the survey found the tape's fields to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldOrder {
    TopFirst,
    BottomFirst,
    Progressive,
}

/// The choices made for one tape (carried by its chunks, so every worker applies the same).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Treatment {
    /// `None`: the survey could not tell; the profile's deinterlacer is left as it is.
    pub fields: Option<FieldOrder>,
    /// Rows of head-switching noise at the bottom of the picture, masked black (even, at most
    /// [`MAX_MASK`]).
    #[serde(default)]
    pub mask_bottom: u16,
    /// The tape's loudness as measured, when its audio is encoded: normalised to
    /// [`TARGET_LUFS`] with these values (`loudnorm`'s second pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loudness: Option<Loudness>,
    /// Blank tape cut from its ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trim: Option<Trim>,
}

/// Where a viewing copy's loudness is brought (integrated, LUFS), its true peak ceiling (dBTP)
/// and loudness range (LU): EBU R128's streaming figures.
pub const TARGET_LUFS: f64 = -16.0;
const TARGET_TP: f64 = -1.5;
const TARGET_LRA: f64 = 11.0;

/// A tape's loudness as `loudnorm`'s first pass measured it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Loudness {
    /// Integrated loudness (LUFS), true peak (dBTP), loudness range (LU), gating threshold
    /// (LUFS), and the offset loudnorm suggests (LU).
    pub i: f64,
    pub tp: f64,
    pub lra: f64,
    pub thresh: f64,
    pub offset: f64,
}

impl Loudness {
    /// Measured values as loudnorm gives them (a message could carry any number).
    pub fn is_valid(&self) -> bool {
        let within = |v: f64, lo: f64, hi: f64| v.is_finite() && (lo..=hi).contains(&v);
        within(self.i, -99.0, 0.0)
            && within(self.tp, -99.0, 99.0)
            && within(self.lra, 0.0, 99.0)
            && within(self.thresh, -99.0, 0.0)
            && within(self.offset, -99.0, 99.0)
    }

    /// The audio filter that brings the tape to the target with these values (linear when it
    /// can), back at 48 kHz (loudnorm works at 192 kHz). The rate is asked of the filter
    /// graph (`aformat`), not forced with `aresample`: ffmpeg 5.1 then fails to pick a channel
    /// layout when the graph is set up again for an MPEG-PS stream's first frames.
    pub fn filter(&self) -> String {
        format!(
            "loudnorm=I={TARGET_LUFS}:TP={TARGET_TP}:LRA={TARGET_LRA}:measured_I={:.2}:measured_TP={:.2}:measured_LRA={:.2}:measured_thresh={:.2}:offset={:.2}:linear=true,aformat=sample_rates=48000",
            self.i, self.tp, self.lra, self.thresh, self.offset
        )
    }
}

/// The most rows a treatment masks (a message asking for more is held to it).
pub const MAX_MASK: u16 = 32;

impl Treatment {
    /// The treatment a survey calls for (`idet`'s counts, the noisy rows at the bottom);
    /// `None` when there is nothing to do.
    pub fn choose(
        fields: &Fields,
        noisy_bottom_rows: u32,
        loudness: Option<Loudness>,
        trim: Option<Trim>,
    ) -> Option<Treatment> {
        Self::choose_as(Auto::ALL, fields, noisy_bottom_rows, loudness, trim)
    }

    /// [`Treatment::choose`], making only the choices `auto` allows.
    pub fn choose_as(
        auto: Auto,
        fields: &Fields,
        noisy_bottom_rows: u32,
        loudness: Option<Loudness>,
        trim: Option<Trim>,
    ) -> Option<Treatment> {
        let rows = if auto.mask { noisy_bottom_rows } else { 0 };
        let mask_bottom = (rows.min(u32::from(MAX_MASK)) as u16).div_ceil(2) * 2;
        let chosen = Treatment {
            fields: field_order(fields).filter(|_| auto.fields),
            mask_bottom,
            loudness: loudness.filter(|l| auto.loudness && l.is_valid()),
            trim: trim.filter(|t| auto.trim && t.is_valid()),
        };
        (chosen.fields.is_some()
            || mask_bottom > 0
            || chosen.loudness.is_some()
            || chosen.trim.is_some())
        .then_some(chosen)
    }

    /// Whether a message's treatment holds only what a survey could have chosen.
    pub fn is_valid(&self) -> bool {
        self.mask_bottom <= MAX_MASK
            && self.loudness.is_none_or(|l| l.is_valid())
            && self.trim.is_none_or(|t| t.is_valid())
    }

    /// The audio filter chain: the cut (`from_zero`: at a split tape's join, see
    /// [`Trim::audio_filter`]), then loudness normalisation, when measured.
    fn audio_filter(&self, from_zero: bool) -> Option<String> {
        let chain: Vec<String> = [
            self.trim
                .filter(Trim::is_valid)
                .map(|t| t.audio_filter(from_zero)),
            self.loudness.filter(Loudness::is_valid).map(|l| l.filter()),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!chain.is_empty()).then(|| chain.join(","))
    }

    /// The profile's video filter chain (`-vf`) with this treatment: each deinterlacer's
    /// `parity` set to the measured order, or the deinterlacer left out of a progressive tape.
    pub fn filter(&self, chain: &str) -> String {
        let mut out = Vec::new();
        let mask = self.mask_bottom.min(MAX_MASK);
        if mask > 0 {
            // First, on the frames as captured (both fields), before any deinterlacer.
            out.push(format!(
                "drawbox=x=0:y=ih-{mask}:w=iw:h={mask}:color=black:t=fill"
            ));
        }
        for filter in chain.split(',').filter(|f| !f.is_empty()) {
            let (name, options) = filter.split_once('=').unwrap_or((filter, ""));
            if !DEINTERLACERS.contains(&name.trim()) {
                out.push(filter.to_owned());
                continue;
            }
            let parity = match self.fields {
                None => {
                    out.push(filter.to_owned());
                    continue;
                }
                Some(FieldOrder::Progressive) => continue,
                Some(FieldOrder::TopFirst) => "tff",
                Some(FieldOrder::BottomFirst) => "bff",
            };
            let mut kept: Vec<String> = options
                .split(':')
                .filter(|o| !o.is_empty() && !o.starts_with("parity="))
                .map(str::to_owned)
                .collect();
            kept.push(format!("parity={parity}"));
            out.push(format!("{name}={}", kept.join(":")));
        }
        out.join(",")
    }

    /// Output frames per source frame once treated: a progressive tape loses the deinterlacer
    /// that made two frames of each.
    pub fn frames_per_frame(&self, chain: &str, profile_fpf: u32) -> u32 {
        let without = Treatment {
            mask_bottom: 0,
            ..*self
        };
        if self.fields == Some(FieldOrder::Progressive) && without.filter(chain) != chain {
            1
        } else {
            profile_fpf
        }
    }

    /// The choices in words, for the job's report.
    pub fn words(&self) -> String {
        let mut said = Vec::new();
        if let Some(order) = self.fields {
            said.push(match order {
                FieldOrder::TopFirst => "deinterlaced top field first, as measured".to_owned(),
                FieldOrder::BottomFirst => {
                    "deinterlaced bottom field first, as measured".to_owned()
                }
                FieldOrder::Progressive => "not deinterlaced: measured progressive".to_owned(),
            });
        }
        if self.mask_bottom > 0 {
            said.push(format!(
                "head-switching noise masked (bottom {} lines)",
                self.mask_bottom.min(MAX_MASK)
            ));
        }
        if let Some(l) = self.loudness.filter(Loudness::is_valid) {
            said.push(format!(
                "loudness normalised to {TARGET_LUFS} LUFS (measured {:.1} LUFS)",
                l.i
            ));
        }
        if let Some(t) = self.trim.filter(Trim::is_valid) {
            said.push(t.words());
        }
        said.join("; ")
    }
}

/// The field order `idet`'s counts show; `None` when it decided too few frames, or could not
/// tell the order (interlaced tapes vote near unanimously for theirs; a split vote is busy
/// progressive content misread).
fn field_order(fields: &Fields) -> Option<FieldOrder> {
    let interlaced = fields.top + fields.bottom;
    if interlaced + fields.progressive < MIN_DECIDED {
        None
    } else if fields.progressive > interlaced {
        Some(FieldOrder::Progressive)
    } else if fields.bottom >= ORDER_MAJORITY * fields.top {
        Some(FieldOrder::BottomFirst)
    } else if fields.top >= ORDER_MAJORITY * fields.bottom {
        Some(FieldOrder::TopFirst)
    } else {
        None
    }
}

/// A profile's split recipe with `treatment` applied (the chunks' filter and the frames each
/// source frame makes): what the tape's planner and every chunk's worker use alike.
pub fn treated_split(args: &SplitArgs, treatment: Option<&Treatment>) -> SplitArgs {
    let Some(t) = treatment else {
        return args.clone();
    };
    SplitArgs {
        filter: t.filter(&args.filter),
        frames_per_frame: t.frames_per_frame(&args.filter, args.frames_per_frame),
        // The join encodes the tape's audio, once: it is cut and normalised there (the cut
        // on the join's clock, where the first frame kept is at zero).
        streams: with_audio_filter(&args.streams, t, true),
        ..args.clone()
    }
}

/// `args` with the treatment's audio filter, where they encode audio (never where they copy
/// it: a copied stream cannot be filtered).
fn with_audio_filter(args: &[String], t: &Treatment, from_zero: bool) -> Vec<String> {
    let Some(chain) = t.audio_filter(from_zero) else {
        return args.to_vec();
    };
    let encodes_audio = !crate::profile::copies_audio(args) && !args.iter().any(|a| a == "-an");
    if !encodes_audio {
        return args.to_vec();
    }
    let mut out = Vec::with_capacity(args.len() + 2);
    let mut filtered = false;
    let mut i = 0;
    while i < args.len() {
        if matches!(args[i].as_str(), "-af" | "-filter:a") && i + 1 < args.len() {
            out.extend([args[i].clone(), format!("{},{chain}", args[i + 1])]);
            filtered = true;
            i += 2;
            continue;
        }
        out.push(args[i].clone());
        i += 1;
    }
    if !filtered {
        out.extend(["-af".to_owned(), chain]);
    }
    out
}

/// `args` (a profile's ffmpeg arguments, for a whole tape) with the value of its `-vf` treated,
/// and the tape's blank ends cut from its video and audio.
pub fn treat_args(args: &[String], treatment: &Treatment) -> Vec<String> {
    let mut out = with_audio_filter(args, treatment, false);
    let whole = |chain: &str| {
        let treated = treatment.filter(chain);
        match treatment.trim.filter(Trim::is_valid) {
            // Cut before the filters (the tape starts there), its clock reset after them.
            Some(t) => [t.video_filter(), treated, "setpts=PTS-STARTPTS".to_owned()]
                .into_iter()
                .filter(|f| !f.is_empty())
                .collect::<Vec<_>>()
                .join(","),
            None => treated,
        }
    };
    let mut chained = false;
    for i in 1..out.len() {
        if matches!(out[i - 1].as_str(), "-vf" | "-filter:v") {
            out[i] = whole(&out[i]);
            chained = true;
        }
    }
    if !chained {
        // A profile without a filter gets one for the mask or the cut.
        let chain = whole("");
        if !chain.is_empty() {
            out.extend(["-vf".to_owned(), chain]);
        }
    }
    // A chain left empty (a progressive tape's only filter was the deinterlacer) is no chain.
    let mut cleaned = Vec::with_capacity(out.len());
    let mut i = 0;
    while i < out.len() {
        if matches!(out[i].as_str(), "-vf" | "-filter:v")
            && out.get(i + 1).is_some_and(String::is_empty)
        {
            i += 2;
            continue;
        }
        cleaned.push(out[i].clone());
        i += 1;
    }
    cleaned
}

#[cfg(test)]
mod tests {
    use super::*;

    const VHS: &str = "bwdif=mode=send_field:parity=auto:deint=all";

    fn treated(fields: FieldOrder) -> Treatment {
        Treatment {
            fields: Some(fields),
            mask_bottom: 0,
            loudness: None,
            trim: None,
        }
    }

    #[test]
    fn the_deinterlacer_gets_the_measured_parity_or_goes() {
        assert_eq!(
            treated(FieldOrder::BottomFirst).filter(VHS),
            "bwdif=mode=send_field:deint=all:parity=bff"
        );
        assert_eq!(
            treated(FieldOrder::TopFirst).filter(&format!("hqdn3d,{VHS}")),
            "hqdn3d,bwdif=mode=send_field:deint=all:parity=tff"
        );
        assert_eq!(
            treated(FieldOrder::TopFirst).filter("yadif"),
            "yadif=parity=tff"
        );
        assert_eq!(treated(FieldOrder::Progressive).filter(VHS), "");
        assert_eq!(treated(FieldOrder::Progressive).frames_per_frame(VHS, 2), 1);
        assert_eq!(treated(FieldOrder::BottomFirst).frames_per_frame(VHS, 2), 2);
        let args: Vec<String> = ["-map", "0:v:0", "-vf", VHS, "-c:v", "libx264"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            treat_args(&args, &treated(FieldOrder::Progressive)),
            ["-map", "0:v:0", "-c:v", "libx264"]
                .map(String::from)
                .to_vec()
        );
    }

    #[test]
    fn idet_decides_only_with_enough_frames() {
        let fields = |top, bottom, progressive| Fields {
            top,
            bottom,
            progressive,
        };
        let order = |f: Fields| Treatment::choose(&f, 0, None, None).and_then(|t| t.fields);
        assert_eq!(order(fields(3, 5, 2)), None);
        assert_eq!(order(fields(2, 200, 10)), Some(FieldOrder::BottomFirst));
        assert_eq!(order(fields(150, 20, 10)), Some(FieldOrder::TopFirst));
        assert_eq!(order(fields(10, 5, 300)), Some(FieldOrder::Progressive));
        // testsrc2's busy progressive picture, as idet read it: no order can be told.
        assert_eq!(order(fields(41, 25, 9)), None);
        assert_eq!(Treatment::choose(&fields(41, 25, 9), 0, None, None), None);
    }

    #[test]
    fn head_switching_rows_are_masked_first_evenly_and_within_bounds() {
        let t = Treatment::choose(&Fields::default(), 7, None, None).unwrap();
        assert_eq!((t.fields, t.mask_bottom), (None, 8));
        assert_eq!(
            t.filter(VHS),
            format!("drawbox=x=0:y=ih-8:w=iw:h=8:color=black:t=fill,{VHS}")
        );
        let hostile = Treatment {
            fields: None,
            mask_bottom: 60_000,
            loudness: None,
            trim: None,
        };
        assert!(
            hostile.filter("").contains("h=32"),
            "{}",
            hostile.filter("")
        );
        let args: Vec<String> = ["-c:v", "libx264"].map(String::from).to_vec();
        assert_eq!(treat_args(&args, &t)[2..], ["-vf".to_owned(), t.filter("")]);
        assert_eq!(t.words(), "head-switching noise masked (bottom 8 lines)");
    }

    #[test]
    fn encoded_audio_is_normalised_with_the_measured_values_and_copied_audio_is_left() {
        let measured = Loudness {
            i: -30.0,
            tp: -12.0,
            lra: 3.0,
            thresh: -40.0,
            offset: 0.5,
        };
        let t = Treatment::choose(&Fields::default(), 0, Some(measured), None).unwrap();
        let encoded: Vec<String> = ["-c:a", "aac", "-b:a", "192k"].map(String::from).to_vec();
        let treated = treat_args(&encoded, &t);
        assert_eq!(treated[4], "-af");
        assert!(
            treated[5].starts_with("loudnorm=I=-16:TP=-1.5:LRA=11:measured_I=-30.00:"),
            "{treated:?}"
        );
        let copied: Vec<String> = ["-c", "copy"].map(String::from).to_vec();
        assert_eq!(treat_args(&copied, &t), copied);
        let bogus = Loudness {
            i: f64::INFINITY,
            ..measured
        };
        assert_eq!(
            Treatment::choose(&Fields::default(), 0, Some(bogus), None),
            None
        );
    }

    #[test]
    fn a_whole_tape_is_cut_before_its_filters_and_its_clocks_start_at_the_cut() {
        let t = Treatment {
            fields: Some(FieldOrder::BottomFirst),
            mask_bottom: 0,
            loudness: None,
            trim: Trim::choose((0.0, 10.0), (1.0, None), 0.04),
        };
        let args: Vec<String> = ["-vf", VHS, "-c:v", "libx264", "-c:a", "aac"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            treat_args(&args, &t),
            [
                "-vf",
                "trim=start=0.990000,bwdif=mode=send_field:deint=all:parity=bff,setpts=PTS-STARTPTS",
                "-c:v",
                "libx264",
                "-c:a",
                "aac",
                "-af",
                "atrim=start=1.000000,asetpts=PTS-STARTPTS"
            ]
            .map(String::from)
            .to_vec()
        );
        // Its chunks' filters are cut by their windows, not by the chain.
        assert_eq!(t.filter(VHS), "bwdif=mode=send_field:deint=all:parity=bff");
        assert!(t.words().ends_with("blank tape cut at the start (1.0 s)"));
    }
}
