//! The tape report's measurements, taken in the encode's own decode pass, in two more outputs
//! of the same ffmpeg run: a small picture of every frame (a quarter of its columns, every
//! line) written to a pipe, whose fields `idet` judges on the way and whose levels are
//! measured here ([`crate::picture`]), and the audio's peak level per block (`astats`).
//! ffmpeg prints each frame's time and verdicts (`metadata`), read here from its stderr and
//! paired with the pictures in order into a [`Signal`]. What the numbers mean is decided in
//! [`videofarm_core::report`].

use crate::{file_url, Tools};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::Path;
use std::sync::mpsc::Receiver;
use videofarm_core::report::{AudioStats, Field, Fields, FrameStats, Signal};
use videofarm_core::treat::{Loudness, Trim, TARGET_LUFS};

/// Samples per audio measurement: a quarter of a second at 48 kHz, 0.375 s at 32 kHz, shorter
/// than a bin (half a second) at any usual rate. Each block costs `astats` a reset of its
/// histograms (about 0.1 ms), whatever its length: at 4,096 samples that was half of what the
/// audio's measuring cost the encode (bench/report-cost.sh).
const AUDIO_BLOCK: u32 = 12_000;

fn secs(s: f64) -> String {
    format!("{s:.6}")
}

/// Where the measuring output writes its pictures: the encode hands ffmpeg a pipe and puts its
/// descriptor in this argument's place.
pub const PICTURES: &str = "pipe:3";

/// The measuring outputs' arguments, placed after the encode's output (whose arguments are
/// `encode`). `range` keeps only the frames from `start` (up to `end`) on the input's clock (a
/// chunk's own frames, its neighbours' context left out); its output clock then starts at zero
/// like the chunk's, so ffmpeg's progress stays the chunk's.
pub fn analysis_args(range: Option<(f64, Option<f64>)>, encode: &[String]) -> Vec<OsString> {
    let (trim, atrim, reset) = match range {
        Some((start, end)) => {
            let bounds = match end {
                Some(end) => format!("start={}:end={}", secs(start), secs(end)),
                None => format!("start={}", secs(start)),
            };
            (
                format!("trim={bounds},"),
                format!("atrim={bounds},"),
                (",setpts=PTS-STARTPTS", ",asetpts=PTS-STARTPTS"),
            )
        }
        None => (String::new(), String::new(), ("", "")),
    };
    // What runs in ffmpeg costs the encode's time (its filters share one thread): there, only
    // the small picture (every line, for its fields; a quarter of the columns, taking every
    // fourth sample: no new values) and `idet` on it. The levels are measured here.
    let video = format!(
        "{trim}scale=trunc(iw/8)*2:ih:flags=neighbor,format=yuv420p,idet,\
         metadata=mode=print:key=lavfi.idet.multiple.current_frame{}",
        reset.0
    );
    // Every frame written once, as it came: the pictures pair with the printed frames in order.
    let pictures = ["-fps_mode", "passthrough", "-f", "yuv4mpegpipe", PICTURES];
    let audio = format!(
        "{atrim}asetnsamples=n={AUDIO_BLOCK},\
         astats=metadata=1:reset=1:measure_perchannel=none:measure_overall=Peak_level,\
         ametadata=mode=print{}",
        reset.1
    );
    let mut args: Vec<String> = Vec::new();
    // On pictures this small, slice threads cost more in waking each other than they save:
    // the video measures in a graph of their own, in one thread, cost about half as much CPU
    // (the encode's own filters keep theirs). A profile with a complex graph of its own keeps
    // the simple form, so its graph keeps its threads.
    let own_graph = !encode.iter().any(|a| {
        matches!(
            a.as_str(),
            "-filter_complex" | "-lavfi" | "-filter_complex_threads"
        )
    });
    if own_graph {
        args.extend([
            "-filter_complex_threads".into(),
            "1".into(),
            "-filter_complex".into(),
            format!("[0:v:0]{video}[measured]"),
            "-map".into(),
            "[measured]".into(),
        ]);
    } else {
        args.extend(["-map".into(), "0:v:0".into(), "-filter:v".into(), video]);
    }
    args.extend(pictures.map(String::from));
    // The audio's output holds one video packet, copied: an output must hold a stream, and
    // the input may have no audio.
    args.extend(["-map".into(), "0:a:0?".into(), "-filter:a".into(), audio]);
    args.extend(
        [
            "-map",
            "0:v:0",
            "-c:v",
            "copy",
            "-frames:v",
            "1",
            "-f",
            "null",
            "-",
        ]
        .map(String::from),
    );
    args.into_iter().map(Into::into).collect()
}

/// Stretches of a tape a survey measures, and their length in seconds: a tape shorter than
/// all of them together is measured whole.
const SURVEY_STRETCHES: u32 = 5;
const SURVEY_SECS: f64 = 6.0;

/// What a survey of a tape found, before its encode: what a treatment is chosen from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Survey {
    /// `idet`'s verdicts.
    pub fields: Fields,
    /// Rows at the bottom of the picture whose lines break from the line above (head-switching
    /// noise), as many as the survey found in most frames.
    pub noisy_bottom_rows: u32,
    /// The first audio stream's loudness (loudnorm's first pass over all of it), when asked
    /// for and measurable.
    pub loudness: Option<Loudness>,
    /// The blank tape at its ends to cut, when asked for and there is some.
    pub trim: Option<Trim>,
}

/// The most rows at the bottom of a picture a survey looks at.
const BOTTOM_ROWS: u32 = 32;

/// What a survey measures besides the fields and the head-switching rows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Asked {
    /// The first audio stream's loudness.
    pub loudness: bool,
    /// The blank tape at the ends.
    pub trim: bool,
}

/// Survey `input`: `idet` on stretches spread over it (the whole of a short one), the bottom
/// rows of its pictures (raw, grey) for head-switching noise, and as `asked` its audio's
/// loudness and the blank tape at its ends.
pub async fn survey(tools: &Tools, input: &Path, asked: Asked) -> Result<Survey, String> {
    let duration = crate::probe(tools, input)
        .await
        .map_err(|e| e.to_string())?
        .duration_s
        .unwrap_or(0.0);
    let (width, height) = crate::packets::video_size(tools, input)
        .await
        .map_err(|e| e.to_string())?;
    let rows = (height / 8).min(BOTTOM_ROWS) & !1;
    let whole = duration <= f64::from(SURVEY_STRETCHES) * SURVEY_SECS * 2.0;
    let starts: Vec<Option<f64>> = if whole {
        vec![None]
    } else {
        (0..SURVEY_STRETCHES)
            .map(|i| Some(duration * (f64::from(i) + 0.5) / f64::from(SURVEY_STRETCHES)))
            .collect()
    };
    let mut signal = Signal::default();
    let mut bottom = BottomRows::new(width as usize, rows as usize);
    for start in starts {
        let mut args = measuring_args();
        if let Some(start) = start {
            args.extend(["-ss".into(), secs(start).into()]);
        }
        args.extend(["-i".into(), file_url(input)]);
        if start.is_some() {
            args.extend(["-t".into(), secs(SURVEY_SECS).into()]);
        }
        args.extend(
            [
                "-map",
                "0:v:0",
                "-vf",
                "idet,metadata=mode=print",
                "-f",
                "null",
                "-",
            ]
            .map(OsString::from),
        );
        if rows >= 2 {
            let crop = format!("crop=iw:{rows}:0:ih-{rows},format=gray");
            args.extend(
                ["-map", "0:v:0", "-vf", &crop, "-f", "rawvideo", "pipe:1"].map(OsString::from),
            );
        }
        let output = tools.ffmpeg_output(args).await?;
        if !output.status.success() {
            return Err(format!("ffmpeg could not read it ({})", output.status));
        }
        let mut part = Analyser::default();
        for line in output.stderr.split(|&b| b == b'\n' || b == b'\r') {
            part.line(line);
        }
        signal.merge(part.finish());
        bottom.add(&output.stdout);
    }
    Ok(Survey {
        fields: signal.fields(),
        noisy_bottom_rows: bottom.noisy(),
        loudness: if asked.loudness {
            measure_loudness(tools, input).await
        } else {
            None
        },
        trim: if asked.trim {
            crate::ends::find_trim(tools, input, duration).await?
        } else {
            None
        },
    })
}

/// loudnorm's first pass over the first audio stream: `None` without audio, or when it
/// measured nothing usable (digital silence).
async fn measure_loudness(tools: &Tools, input: &Path) -> Option<Loudness> {
    #[derive(serde::Deserialize)]
    struct Measured {
        input_i: String,
        input_tp: String,
        input_lra: String,
        input_thresh: String,
        target_offset: String,
    }
    let mut args: Vec<OsString> = ["-nostdin", "-hide_banner", "-nostats", "-i"]
        .map(OsString::from)
        .to_vec();
    args.push(file_url(input));
    args.extend(["-vn", "-map", "0:a:0", "-af"].map(OsString::from));
    args.push(format!("loudnorm=I={TARGET_LUFS}:print_format=json").into());
    args.extend(["-f", "null", "-"].map(OsString::from));
    let output = tools.ffmpeg_output(args).await.ok()?;
    if !output.status.success() {
        return None;
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let json = &stderr[stderr.rfind('{')?..=stderr.rfind('}')?];
    let m: Measured = serde_json::from_str(json).ok()?;
    let number = |v: &str| v.trim().parse::<f64>().ok();
    Some(Loudness {
        i: number(&m.input_i)?,
        tp: number(&m.input_tp)?,
        lra: number(&m.input_lra)?,
        thresh: number(&m.input_thresh)?,
        offset: number(&m.target_offset)?,
    })
    .filter(Loudness::is_valid)
}

/// The bottom rows of a tape's pictures, summed: for each row, how far its samples are from
/// the row above's, on average (a clean picture changes little from line to line; a line torn
/// by the head switch is noise against its neighbour).
struct BottomRows {
    width: usize,
    rows: usize,
    step: Vec<f64>,
    frames: u64,
}

/// A row counts as noisy when it steps this many times the picture's usual step above it, and
/// at least [`NOISE_STEP`] levels.
const NOISE_FACTOR: f64 = 3.0;
const NOISE_STEP: f64 = 8.0;

impl BottomRows {
    fn new(width: usize, rows: usize) -> Self {
        Self {
            width,
            rows,
            step: vec![0.0; rows],
            frames: 0,
        }
    }

    fn add(&mut self, raw: &[u8]) {
        let size = self.width * self.rows;
        if size == 0 {
            return;
        }
        for frame in raw.chunks_exact(size) {
            for r in 1..self.rows {
                let (above, row) = (
                    &frame[(r - 1) * self.width..r * self.width],
                    &frame[r * self.width..(r + 1) * self.width],
                );
                let sum: u64 = above
                    .iter()
                    .zip(row)
                    .map(|(a, b)| u64::from(a.abs_diff(*b)))
                    .sum();
                self.step[r] += sum as f64 / self.width as f64;
            }
            self.frames += 1;
        }
    }

    /// The noisy rows at the very bottom: counted up from the last row while each is noisy.
    fn noisy(&self) -> u32 {
        if self.frames == 0 || self.rows < 4 {
            return 0;
        }
        let mean: Vec<f64> = self.step.iter().map(|s| s / self.frames as f64).collect();
        // The picture's usual step: the median of the upper half of the rows looked at.
        let mut upper: Vec<f64> = mean[1..self.rows / 2].to_vec();
        upper.sort_by(f64::total_cmp);
        let usual = upper[upper.len() / 2];
        let threshold = (usual * NOISE_FACTOR).max(NOISE_STEP);
        let noisy = (self.rows / 2..self.rows)
            .rev()
            .take_while(|&r| mean[r] >= threshold)
            .count();
        noisy as u32
    }
}

/// The start of a measuring ffmpeg run's arguments: quiet, but for what the `metadata`
/// filters print (info level, each line tagged with its level).
pub(crate) fn measuring_args() -> Vec<OsString> {
    [
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "level+info",
        "-nostats",
    ]
    .map(OsString::from)
    .to_vec()
}

/// A line a `metadata` or `ametadata` filter printed on stderr:
/// `[Parsed_metadata_4 @ 0x5555] [info] lavfi.signalstats.YAVG=16`.
pub(crate) struct Printed<'a> {
    pub audio: bool,
    /// The filter's place in its graph: which of several printing filters printed it.
    pub filter: u32,
    /// What follows `[info] `.
    pub text: &'a str,
}

impl<'a> Printed<'a> {
    pub(crate) fn read(line: &'a [u8]) -> Option<Self> {
        let rest = line.strip_prefix(b"[Parsed_")?;
        let (audio, rest) = match rest.strip_prefix(b"ametadata_") {
            Some(rest) => (true, rest),
            None => (false, rest.strip_prefix(b"metadata_")?),
        };
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let filter = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
        let at = rest.windows(9).position(|w| w == b"] [info] ")?;
        let text = std::str::from_utf8(&rest[at + 9..]).ok()?;
        Some(Self {
            audio,
            filter,
            text,
        })
    }
}

/// The time in a printed frame's head (`frame:0 pts:902 pts_time:0.0100222`).
pub(crate) fn frame_time(head: &str) -> Option<f64> {
    head.split_once("pts_time:")
        .and_then(|(_, v)| v.trim().parse::<f64>().ok())
}

/// What is being read: the frame or block whose values follow.
enum Current {
    None,
    Video(FrameStats),
    Audio(AudioStats),
}

/// Reads the measuring outputs' lines from ffmpeg's stderr (and their pictures' measures).
pub struct Analyser {
    signal: Signal,
    current: Current,
    pictures: Option<Pairing>,
}

/// Printed frames and their pictures' measures, each in order, paired as both arrive.
struct Pairing {
    from: Receiver<FrameStats>,
    frames: VecDeque<FrameStats>,
    measured: VecDeque<FrameStats>,
}

impl Default for Analyser {
    fn default() -> Self {
        Self {
            signal: Signal::default(),
            current: Current::None,
            pictures: None,
        }
    }
}

impl Analyser {
    /// An analyser whose frames' levels come from `pictures` (see [`crate::picture`]).
    pub fn with_pictures(pictures: Receiver<FrameStats>) -> Self {
        Self {
            pictures: Some(Pairing {
                from: pictures,
                frames: VecDeque::new(),
                measured: VecDeque::new(),
            }),
            ..Self::default()
        }
    }

    /// One line of stderr (other lines are left alone).
    pub fn line(&mut self, line: &[u8]) {
        let Some(printed) = Printed::read(line) else {
            return;
        };
        let (audio, text) = (printed.audio, printed.text);
        if let Some(head) = text.strip_prefix("frame:") {
            self.flush();
            let t = frame_time(head).unwrap_or(f64::NAN);
            self.current = if audio {
                Current::Audio(AudioStats { t, peak_db: None })
            } else {
                Current::Video(FrameStats {
                    t,
                    depth: 8,
                    ..FrameStats::default()
                })
            };
            return;
        }
        let Some((key, value)) = text.trim_end().split_once('=') else {
            return;
        };
        match &mut self.current {
            Current::Video(f) => video_value(f, key, value),
            Current::Audio(a) if key == "lavfi.astats.Overall.Peak_level" => {
                a.peak_db = value.parse().ok();
            }
            _ => {}
        }
    }

    fn flush(&mut self) {
        match std::mem::replace(&mut self.current, Current::None) {
            Current::Video(f) => match &mut self.pictures {
                Some(pairing) => {
                    pairing.frames.push_back(f);
                    pairing.measured.extend(pairing.from.try_iter());
                    pairing.pair(&mut self.signal);
                }
                None => self.signal.add_frame(&f),
            },
            Current::Audio(a) => self.signal.add_audio(&a),
            Current::None => {}
        }
    }

    /// The signal of everything read. With pictures, waits for the last of them (their
    /// writer ends with ffmpeg, whose stderr has ended when this is called).
    pub fn finish(mut self) -> Signal {
        self.flush();
        if let Some(mut pairing) = self.pictures.take() {
            pairing.measured.extend(pairing.from.iter());
            pairing.pair(&mut self.signal);
            if !pairing.frames.is_empty() {
                // The pictures stopped early (see `picture::read_pictures`): those frames are
                // left out rather than shown as black.
                tracing::debug!(
                    frames = pairing.frames.len(),
                    "frames without their picture"
                );
            }
        }
        self.signal
    }
}

impl Pairing {
    fn pair(&mut self, signal: &mut Signal) {
        let both = self.frames.len().min(self.measured.len());
        for (printed, measured) in self.frames.drain(..both).zip(self.measured.drain(..both)) {
            signal.add_frame(&FrameStats {
                t: printed.t,
                field: printed.field,
                ..measured
            });
        }
    }
}

/// One value a `metadata` filter printed for a video frame, into `f` (the rest left alone).
pub(crate) fn video_value(f: &mut FrameStats, key: &str, value: &str) {
    if key == "lavfi.idet.multiple.current_frame" {
        f.field = match value {
            "tff" => Some(Field::Top),
            "bff" => Some(Field::Bottom),
            "progressive" => Some(Field::Progressive),
            _ => None,
        };
        return;
    }
    let Some(name) = key.strip_prefix("lavfi.signalstats.") else {
        return;
    };
    let Ok(v) = value.parse::<f64>() else {
        return;
    };
    let slot = match name {
        "YMIN" => &mut f.ymin,
        "YLOW" => &mut f.ylow,
        "YAVG" => &mut f.yavg,
        "YHIGH" => &mut f.yhigh,
        "YMAX" => &mut f.ymax,
        "SATAVG" => &mut f.sat,
        "YDIF" => &mut f.ydif,
        "TOUT" => &mut f.tout,
        "BRNG" => &mut f.brng,
        "YBITDEPTH" => {
            f.depth = v.clamp(8.0, 16.0) as u32;
            return;
        }
        _ => return,
    };
    *slot = v;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_rows_at_the_bottom_are_counted_and_nothing_else() {
        // 8 rows of 16 samples: a smooth ramp, then 3 rows of noise at the bottom.
        let (width, rows) = (16, 8);
        let mut frame = Vec::new();
        for r in 0..rows {
            for x in 0..width {
                frame.push(if r >= 5 {
                    ((x * 97 + r * 31) % 255) as u8
                } else {
                    (100 + r) as u8
                });
            }
        }
        let mut bottom = BottomRows::new(width, rows);
        bottom.add(&frame.repeat(3));
        assert_eq!(bottom.noisy(), 3);
        let mut clean = BottomRows::new(width, rows);
        clean.add(&vec![100u8; width * rows]);
        assert_eq!(clean.noisy(), 0);
    }

    #[test]
    fn frames_and_audio_blocks_are_read_from_ffmpegs_lines() {
        let lines = "\
[Parsed_metadata_4 @ 0x5555] [info] frame:0    pts:902     pts_time:0.0100222
[Parsed_metadata_4 @ 0x5555] [info] lavfi.signalstats.YLOW=16
[Parsed_metadata_4 @ 0x5555] [info] lavfi.signalstats.YAVG=16
[Parsed_metadata_4 @ 0x5555] [info] lavfi.signalstats.YHIGH=16
[Parsed_metadata_4 @ 0x5555] [info] lavfi.idet.multiple.current_frame=bff
[libx264 @ 0x5556] [info] frame I:1 Avg QP:12.00 size: 1234
[Parsed_ametadata_2 @ 0x5557] [info] frame:0    pts:0       pts_time:0
[Parsed_ametadata_2 @ 0x5557] [info] lavfi.astats.Overall.Peak_level=-inf
[Parsed_metadata_4 @ 0x5555] [info] frame:1    pts:4502    pts_time:0.0500222
[Parsed_metadata_4 @ 0x5555] [info] lavfi.signalstats.YAVG=120
[Parsed_metadata_4 @ 0x5555] [info] lavfi.signalstats.YHIGH=200
[Parsed_metadata_4 @ 0x5555] [info] lavfi.signalstats.YLOW=40";
        let mut a = Analyser::default();
        for line in lines.lines() {
            a.line(line.as_bytes());
        }
        let signal = a.finish();
        let bin = &signal.bins[&0];
        assert_eq!((bin.frames, bin.black, bin.bottom), (2, 1, 1));
        assert_eq!((bin.audio, bin.silent), (1, 1));
        assert_eq!(signal.first, Some(0.0100222));
        assert_eq!(signal.last, Some(0.0500222));
    }
}
