//! Where a tape's picture begins and ends: the blank tape (black, or snow) before and after it,
//! found before the encode so that a treatment can cut it ([`Trim`]). What counts as blank is
//! decided in [`videofarm_core::report`], for the report and the cut alike.
//!
//! A tape is looked at by its keyframes (a decode of a twelfth of its frames or less: 7 CPU-s
//! for 10 minutes of SD MPEG-2), then frame by frame between the two keyframes where the
//! picture begins, and the two where it ends: the cut is on the exact frame. A short tape whose
//! keyframes are too few to tell (one IDR frame, intra refresh) is looked at frame by frame.

use crate::analyse::{frame_time, measuring_args, video_value, Printed};
use crate::{file_url, Tools};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use videofarm_core::report::FrameStats;
use videofarm_core::treat::Trim;

/// Tapes up to this long are looked at frame by frame when their keyframes are too few.
const EVERY_FRAME_S: f64 = 60.0;

/// One frame looked at: its time (on the clock of a plain encode's filters), and whether it is
/// blank.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Look {
    pub t: f64,
    pub blank: bool,
}

/// The cut of `input`'s blank ends (`duration`: its length as probed), or `None` when there is
/// nothing worth cutting (or the whole tape is blank: nothing is cut from a tape with no picture).
pub async fn find_trim(tools: &Tools, input: &Path, duration: f64) -> Result<Option<Trim>, String> {
    let keyframes = look(tools, input, None, true).await?;
    if keyframes.len() >= 2 || duration > EVERY_FRAME_S {
        trim_from(tools, input, duration, (keyframes, true)).await
    } else {
        find_trim_by(tools, input, duration, false).await
    }
}

/// [`find_trim`], looking first at keyframes only (`keyframes`) or at every frame.
pub async fn find_trim_by(
    tools: &Tools,
    input: &Path,
    duration: f64,
    keyframes: bool,
) -> Result<Option<Trim>, String> {
    let looks = look(tools, input, None, keyframes).await?;
    trim_from(tools, input, duration, (looks, keyframes)).await
}

/// The cut from a first look at the tape (`keyframes`: at its keyframes only).
async fn trim_from(
    tools: &Tools,
    input: &Path,
    duration: f64,
    (looks, keyframes): (Vec<Look>, bool),
) -> Result<Option<Trim>, String> {
    let (Some(first), Some(last)) = (looks.first().copied(), looks.last().copied()) else {
        return Ok(None);
    };
    let (Some(i), Some(j)) = (
        looks.iter().position(|l| !l.blank),
        looks.iter().rposition(|l| !l.blank),
    ) else {
        return Ok(None);
    };
    let mut frame_s = shortest_step(&looks);
    let start = if i == 0 || !keyframes {
        looks[i].t
    } else {
        // The picture begins between these keyframes: the first frame of it.
        let fine = look(tools, input, Some((looks[i - 1].t, looks[i].t)), false).await?;
        frame_s = frame_s.min(shortest_step(&fine));
        fine.iter()
            .find(|l| !l.blank && l.t >= looks[i - 1].t)
            .map_or(looks[i].t, |l| l.t)
    };
    let end = if j + 1 == looks.len() {
        None
    } else if !keyframes {
        Some(looks[j + 1].t)
    } else {
        // The picture ends between these keyframes: the first blank frame after its last.
        let fine = look(tools, input, Some((looks[j].t, looks[j + 1].t)), false).await?;
        frame_s = frame_s.min(shortest_step(&fine));
        let inside: Vec<&Look> = fine
            .iter()
            .filter(|l| l.t >= looks[j].t && l.t <= looks[j + 1].t)
            .collect();
        let last_picture = inside.iter().rposition(|l| !l.blank);
        Some(
            last_picture
                .and_then(|m| inside.get(m + 1))
                .map_or(looks[j + 1].t, |l| l.t),
        )
    };
    if !frame_s.is_finite() {
        return Ok(None);
    }
    let tape_end = if keyframes {
        (last.t + frame_s).max(duration)
    } else {
        last.t + frame_s
    };
    Ok(Trim::choose((first.t, tape_end), (start, end), frame_s))
}

/// The shortest step between two frames looked at (infinite with fewer than two).
fn shortest_step(looks: &[Look]) -> f64 {
    looks
        .windows(2)
        .map(|w| w[1].t - w[0].t)
        .filter(|d| *d > 1e-6)
        .fold(f64::INFINITY, f64::min)
}

fn secs(s: f64) -> String {
    format!("{s:.6}")
}

/// Look at the frames of `input` (`range`: only those from `start` to `end`; `keyframes`: only
/// its keyframes), in time order: each frame's levels, and the mean step between neighbouring
/// samples two pixels apart (how snow is told from a picture), on a picture halved each way.
pub async fn look(
    tools: &Tools,
    input: &Path,
    range: Option<(f64, f64)>,
    keyframes: bool,
) -> Result<Vec<Look>, String> {
    let mut args = measuring_args();
    if keyframes {
        args.extend(["-skip_frame", "nokey"].map(OsString::from));
    }
    // Opened a second early (a seek lands on a keyframe before it), and read a second past.
    let seek = range.map(|(start, _)| (start - 1.0).max(0.0));
    if let Some(ss) = seek {
        // Times kept on the unseeked clock (less the container's start, as without a seek).
        args.extend(["-ss".into(), secs(ss).into()]);
        args.extend(["-copyts", "-start_at_zero"].map(OsString::from));
    }
    args.extend(["-i".into(), file_url(input)]);
    // Up to a second past the end (an input's -t would count on the copied clock).
    let stop = range.map_or(String::new(), |(_, end)| {
        format!("trim=end={},", secs(end + 1.0))
    });
    let graph = format!(
        "{stop}scale=trunc(iw/4)*2:trunc(ih/4)*2:flags=neighbor,signalstats,\
                 metadata=mode=print,split[a][b];[a]crop=iw-2:ih:0:0[l];[b]crop=iw-2:ih:2:0[r];\
                 [l][r]blend=all_mode=difference,signalstats,\
                 metadata=mode=print:key=lavfi.signalstats.YAVG"
    );
    args.extend(["-map", "0:v:0", "-vf", &graph, "-f", "null", "-"].map(OsString::from));
    let output = tools.ffmpeg_output(args).await?;
    if !output.status.success() {
        return Err(format!("ffmpeg could not read it ({})", output.status));
    }
    Ok(read_looks(&output.stderr))
}

/// The frames in ffmpeg's printout of [`look`]'s graph: the first `metadata` filter prints a
/// frame's levels, the second its neighbour step (the same `YAVG` key, of the difference
/// picture); the two are matched by the frame's time.
fn read_looks(stderr: &[u8]) -> Vec<Look> {
    // Per printing filter: frame time (µs) -> the values printed for it.
    let mut printed: BTreeMap<u32, BTreeMap<i64, FrameStats>> = BTreeMap::new();
    let mut current: Option<(u32, i64)> = None;
    for line in stderr.split(|&b| b == b'\n' || b == b'\r') {
        let Some(Printed { filter, text, .. }) = Printed::read(line) else {
            continue;
        };
        if let Some(head) = text.strip_prefix("frame:") {
            let t = frame_time(head).filter(|t| t.is_finite());
            current = t.map(|t| {
                let key = (t * 1e6).round() as i64;
                printed.entry(filter).or_default().insert(
                    key,
                    FrameStats {
                        t,
                        depth: 8,
                        ..FrameStats::default()
                    },
                );
                (filter, key)
            });
            continue;
        }
        let (Some((f, key)), Some((name, value))) = (current, text.trim().split_once('=')) else {
            continue;
        };
        if let Some(stats) = printed.get_mut(&f).and_then(|m| m.get_mut(&key)) {
            video_value(stats, name, value);
        }
    }
    let mut filters = printed.into_values();
    let (Some(levels), Some(steps)) = (filters.next(), filters.next()) else {
        return Vec::new();
    };
    levels
        .into_iter()
        .filter_map(|(key, frame)| {
            let step = steps.get(&key)?.yavg;
            Some(Look {
                t: frame.t,
                blank: frame.is_blank(step),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_steps_are_matched_by_time_whatever_order_they_print_in() {
        let lines = "\
[Parsed_metadata_2 @ 0x1] [info] frame:0    pts:0     pts_time:0
[Parsed_metadata_2 @ 0x1] [info] lavfi.signalstats.YLOW=16
[Parsed_metadata_2 @ 0x1] [info] lavfi.signalstats.YAVG=16
[Parsed_metadata_2 @ 0x1] [info] lavfi.signalstats.YHIGH=17
[Parsed_metadata_2 @ 0x1] [info] frame:1    pts:1     pts_time:0.04
[Parsed_metadata_2 @ 0x1] [info] lavfi.signalstats.YAVG=120
[Parsed_metadata_2 @ 0x1] [info] lavfi.signalstats.YHIGH=200
[Parsed_metadata_8 @ 0x2] [info] frame:0    pts:0     pts_time:0
[Parsed_metadata_8 @ 0x2] [info] lavfi.signalstats.YAVG=0.5
[Parsed_metadata_2 @ 0x1] [info] frame:2    pts:2     pts_time:0.08
[Parsed_metadata_2 @ 0x1] [info] lavfi.signalstats.YAVG=127
[Parsed_metadata_2 @ 0x1] [info] lavfi.signalstats.YHIGH=229
[Parsed_metadata_8 @ 0x2] [info] frame:1    pts:1     pts_time:0.04
[Parsed_metadata_8 @ 0x2] [info] lavfi.signalstats.YAVG=4
[Parsed_metadata_8 @ 0x2] [info] frame:2    pts:2     pts_time:0.08
[Parsed_metadata_8 @ 0x2] [info] lavfi.signalstats.YAVG=85";
        let looks = read_looks(lines.as_bytes());
        let blank: Vec<(f64, bool)> = looks.iter().map(|l| (l.t, l.blank)).collect();
        // Black, a picture, snow.
        assert_eq!(blank, [(0.0, true), (0.04, false), (0.08, true)]);
        assert_eq!(shortest_step(&looks), 0.04);
    }
}
