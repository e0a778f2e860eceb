//! Treatment chosen from the tape: a profile with `auto` has its deinterlacer set by what
//! `idet` measured in the tape (a survey of a few stretches of it, before the encode), not by
//! the flags the capture carries (often wrong: a capture card that flags every frame top field
//! first, a lossless capture with no field flags at all). A bottom-field-first tape gets
//! `parity=bff`, a top-field-first one `parity=tff`, and a progressive one no deinterlacer.

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Treatment {
    pub fields: FieldOrder,
}

impl Treatment {
    /// The treatment `idet`'s counts call for; `None` when it decided too few frames, or
    /// could not tell the field order (interlaced tapes vote near unanimously for theirs; a
    /// split vote is busy progressive content misread).
    pub fn choose(fields: &Fields) -> Option<Treatment> {
        let interlaced = fields.top + fields.bottom;
        if interlaced + fields.progressive < MIN_DECIDED {
            return None;
        }
        let order = if fields.progressive > interlaced {
            FieldOrder::Progressive
        } else if fields.bottom >= ORDER_MAJORITY * fields.top {
            FieldOrder::BottomFirst
        } else if fields.top >= ORDER_MAJORITY * fields.bottom {
            FieldOrder::TopFirst
        } else {
            return None;
        };
        Some(Treatment { fields: order })
    }

    /// The profile's video filter chain (`-vf`) with this treatment: each deinterlacer's
    /// `parity` set to the measured order, or the deinterlacer left out of a progressive tape.
    pub fn filter(&self, chain: &str) -> String {
        let mut out = Vec::new();
        for filter in chain.split(',').filter(|f| !f.is_empty()) {
            let (name, options) = filter.split_once('=').unwrap_or((filter, ""));
            if !DEINTERLACERS.contains(&name.trim()) {
                out.push(filter.to_owned());
                continue;
            }
            let parity = match self.fields {
                FieldOrder::Progressive => continue,
                FieldOrder::TopFirst => "tff",
                FieldOrder::BottomFirst => "bff",
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
        if self.fields == FieldOrder::Progressive && self.filter(chain) != chain {
            1
        } else {
            profile_fpf
        }
    }

    /// The choice in words, for the job's report.
    pub fn words(&self) -> &'static str {
        match self.fields {
            FieldOrder::TopFirst => "deinterlaced top field first, as measured",
            FieldOrder::BottomFirst => "deinterlaced bottom field first, as measured",
            FieldOrder::Progressive => "not deinterlaced: measured progressive",
        }
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
        ..args.clone()
    }
}

/// `args` (a profile's ffmpeg arguments) with the value of its `-vf` treated.
pub fn treat_args(args: &[String], treatment: &Treatment) -> Vec<String> {
    let mut out = args.to_vec();
    for i in 1..out.len() {
        if matches!(out[i - 1].as_str(), "-vf" | "-filter:v") {
            out[i] = treatment.filter(&out[i]);
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
        Treatment { fields }
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
        assert_eq!(Treatment::choose(&fields(3, 5, 2)), None);
        assert_eq!(
            Treatment::choose(&fields(2, 200, 10)).unwrap().fields,
            FieldOrder::BottomFirst
        );
        assert_eq!(
            Treatment::choose(&fields(150, 20, 10)).unwrap().fields,
            FieldOrder::TopFirst
        );
        assert_eq!(
            Treatment::choose(&fields(10, 5, 300)).unwrap().fields,
            FieldOrder::Progressive
        );
        // testsrc2's busy progressive picture, as idet read it: no order can be told.
        assert_eq!(Treatment::choose(&fields(41, 25, 9)), None);
    }
}
