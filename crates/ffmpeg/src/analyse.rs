//! The tape report's measurements, taken in the encode's own decode pass: a second output of
//! the same ffmpeg run (`-f null`) whose filters measure every frame (`idet`, `signalstats` on
//! a half-size picture, `astats` on blocks of audio) and print what they found (`metadata`),
//! read here from ffmpeg's stderr into a [`Signal`]. What the numbers mean is decided in
//! [`videofarm_core::report`].

use crate::{file_url, Tools};
use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use videofarm_core::report::{AudioStats, Field, Fields, FrameStats, Signal};

/// Samples per audio measurement (85 ms at 48 kHz).
const AUDIO_BLOCK: u32 = 4096;

fn secs(s: f64) -> String {
    format!("{s:.6}")
}

/// The measuring output's arguments, placed after the encode's output. `range` keeps only the
/// frames from `start` (up to `end`) on the input's clock (a chunk's own frames, its
/// neighbours' context left out); its output clock then starts at zero like the chunk's, so
/// ffmpeg's progress stays the chunk's.
pub fn analysis_args(range: Option<(f64, Option<f64>)>) -> Vec<OsString> {
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
    // idet sees the whole picture (its fields); the levels are measured on a picture halved
    // each way by taking every other sample (no new values), a quarter of the work.
    let video = format!(
        "{trim}idet,scale=trunc(iw/4)*2:trunc(ih/4)*2:flags=neighbor,\
         signalstats=stat=tout+vrep+brng,metadata=mode=print{}",
        reset.0
    );
    let audio = format!(
        "{atrim}asetnsamples=n={AUDIO_BLOCK},\
         astats=metadata=1:reset=1:measure_perchannel=none:measure_overall=Peak_level,\
         ametadata=mode=print{}",
        reset.1
    );
    [
        "-map",
        "0:v:0",
        "-map",
        "0:a:0?",
        "-filter:v",
        &video,
        "-filter:a",
        &audio,
        "-f",
        "null",
        "-",
    ]
    .iter()
    .map(Into::into)
    .collect()
}

/// Stretches of a tape a survey measures, and their length in seconds: a tape shorter than
/// all of them together is measured whole.
const SURVEY_STRETCHES: u32 = 5;
const SURVEY_SECS: f64 = 6.0;

/// `idet`'s verdicts on stretches spread over `input` (the whole of a short one), read before
/// the encode: what a treatment is chosen from.
pub async fn survey_fields(tools: &Tools, input: &Path) -> Result<Fields, String> {
    let duration = crate::probe(tools, input)
        .await
        .map_err(|e| e.to_string())?
        .duration_s
        .unwrap_or(0.0);
    let whole = duration <= f64::from(SURVEY_STRETCHES) * SURVEY_SECS * 2.0;
    let starts: Vec<Option<f64>> = if whole {
        vec![None]
    } else {
        (0..SURVEY_STRETCHES)
            .map(|i| Some(duration * (f64::from(i) + 0.5) / f64::from(SURVEY_STRETCHES)))
            .collect()
    };
    let mut signal = Signal::default();
    for start in starts {
        let mut command = tokio::process::Command::new(&tools.ffmpeg);
        command.args([
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "level+info",
            "-nostats",
        ]);
        if let Some(start) = start {
            command.args(["-ss", &secs(start)]);
        }
        command.arg("-i").arg(file_url(input));
        if start.is_some() {
            command.args(["-t", &secs(SURVEY_SECS)]);
        }
        let output = command
            .args([
                "-map",
                "0:v:0",
                "-vf",
                "idet,metadata=mode=print",
                "-f",
                "null",
                "-",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("could not start ffmpeg ({}): {e}", tools.ffmpeg.display()))?;
        if !output.status.success() {
            return Err(format!("ffmpeg could not read it ({})", output.status));
        }
        let mut part = Analyser::default();
        for line in output.stderr.split(|&b| b == b'\n' || b == b'\r') {
            part.line(line);
        }
        signal.merge(part.finish());
    }
    Ok(signal.fields())
}

/// What is being read: the frame or block whose values follow.
enum Current {
    None,
    Video(FrameStats),
    Audio(AudioStats),
}

/// Reads the measuring output's lines from ffmpeg's stderr.
pub struct Analyser {
    signal: Signal,
    current: Current,
}

impl Default for Analyser {
    fn default() -> Self {
        Self {
            signal: Signal::default(),
            current: Current::None,
        }
    }
}

impl Analyser {
    /// One line of stderr (other lines are left alone).
    pub fn line(&mut self, line: &[u8]) {
        let Some(rest) = line.strip_prefix(b"[Parsed_") else {
            return;
        };
        let audio = rest.starts_with(b"ametadata_");
        if !audio && !rest.starts_with(b"metadata_") {
            return;
        }
        let Some(at) = rest.windows(9).position(|w| w == b"] [info] ") else {
            return;
        };
        let Ok(text) = std::str::from_utf8(&rest[at + 9..]) else {
            return;
        };
        if let Some(head) = text.strip_prefix("frame:") {
            self.flush();
            let t = head
                .split_once("pts_time:")
                .and_then(|(_, v)| v.trim().parse::<f64>().ok())
                .unwrap_or(f64::NAN);
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
            Current::Video(f) => self.signal.add_frame(&f),
            Current::Audio(a) => self.signal.add_audio(&a),
            Current::None => {}
        }
    }

    /// The signal of everything read.
    pub fn finish(mut self) -> Signal {
        self.flush();
        self.signal
    }
}

fn video_value(f: &mut FrameStats, key: &str, value: &str) {
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
        "VREP" => &mut f.vrep,
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
