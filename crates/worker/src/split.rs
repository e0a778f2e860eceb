//! Split encoding on the worker: planning the cuts of a long input, the argv of a chunk and of
//! the join, and the bookkeeping in the work folder. The job model is in
//! [`videofarm_core::split`].
//!
//! The recipe (verified frame for frame against unsplit encodes, `framemd5`, on interlaced
//! open-GOP MPEG-2 through `bwdif`, progressive H.264, DV):
//! - Frames are named by their source timestamp (`-copyts`), never by counting after a seek:
//!   an MPEG-PS seek lands on any packet, not on a keyframe.
//! - A chunk opens the input one frame before the decode timestamp of the last keyframe at or
//!   before its first needed frame, then `trim`s the frames its filter needs (the chunk plus
//!   `context_frames` each side), runs the profile's filter, and `trim`s the chunk itself, each
//!   bound a quarter frame before the frame's timestamp. Chunks are NUT files.
//! - The join concatenates the chunks with exact per-chunk durations (no drift across seams),
//!   copies the video, takes every other stream once from the source, and shifts both by the
//!   offsets ffmpeg itself applies to an unsplit encode, so A/V sync is the unsplit one.
//!
//! The work folder holds `plan.json`, `chunk-NNNNN.nut` (each published only once verified),
//! `chunk-NNNNN.failed` (a chunk that failed for good, with its reason) and, at the join,
//! `list.ffconcat`.

use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use videofarm_core::confine::fs;
pub use videofarm_core::split::{failed_name, signal_name, warnings_name, SIGNAL_MAX_BYTES};
use videofarm_core::split::{Chunk, AUTO_MIN_SECS};
use videofarm_core::treat::{Treatment, Trim};
use videofarm_core::SplitArgs;
use videofarm_ffmpeg::packets::{Rational, VideoPackets};

/// The least bit rate of an input `auto` splits: a VCD carries 1.15 Mb/s, a capture of a tape
/// 4 to 25 (MPEG-2 to DV).
const LEAST_SPLIT_BITS_PER_S: u64 = 400_000;
/// Under `auto`, inputs smaller than ten minutes at that rate (30 MB) are never split: they
/// are spared the probe that planning needs (about 0.1 s of CPU before the encode starts, 5 % of
/// a 20 s SD clip's encode).
pub const MIN_SPLIT_BYTES: u64 = AUTO_MIN_SECS as u64 * LEAST_SPLIT_BITS_PER_S / 8;

pub use videofarm_core::split::CHUNK_EXTENSION;

/// What the parent decided, and what the join needs; `plan.json` in the work folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The parent job's identity: a plan made for another input or profile is not reused.
    pub key: String,
    pub chunks: Vec<Chunk>,
    /// Source frames in all.
    pub frames: u64,
    /// Output frames per source frame.
    pub frames_per_frame: u32,
    /// The first frame's timestamp, in ticks of `time_base`.
    pub first_pts: i64,
    pub time_base: (i64, i64),
    /// The start time ffmpeg subtracts from the source in an unsplit encode (µs).
    pub start_us: i64,
    /// The container's start (s): what a plain encode's filters subtract from the source's
    /// timestamps (the clock of a [`Trim`]).
    #[serde(default)]
    pub source_start_s: f64,
    /// Shift the source 1 µs more at the join, so ffmpeg does not correct the start again.
    pub nudge: bool,
    /// Every chunk job was queued (a worker that died while queueing leaves this false).
    #[serde(default)]
    pub queued: bool,
    /// When the tape was split (ms since the epoch): its encode's wall time counts from here.
    #[serde(default)]
    pub started_ms: i64,
    /// The treatment chosen from the tape, which each chunk carries too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub treat: Option<Treatment>,
}

impl Plan {
    /// Output frames the joined video must have.
    pub fn output_frames(&self) -> u64 {
        self.frames * u64::from(self.frames_per_frame)
    }
}

/// Why an input is encoded whole instead, in plain words.
pub type Unsplittable = String;

/// Plan the chunks of an input from its packets. Inputs that cannot be cut exactly (no or
/// repeated timestamps, variable frame rate, gaps, discontinuities, several video streams) are
/// refused with the reason, and encoded whole.
/// The frames a decoder outputs, by timestamp, read from the packets alone: from the first
/// keyframe on, without the leading pictures of an open GOP that start before it. `Err` when a
/// packet has no timestamp (MPEG-PS often leaves it out): the frames then come from a decode
/// pass ([`videofarm_ffmpeg::packets::decoded_frames`]).
pub fn frames_from_packets(packets: &VideoPackets) -> Result<Vec<i64>, Unsplittable> {
    let first_key = packets
        .packets
        .iter()
        .position(|p| p.key && p.pts.is_some())
        .ok_or("no keyframe has a timestamp".to_owned())?;
    let key_pts = packets.packets[first_key].pts.unwrap_or_default();
    let mut pts = Vec::with_capacity(packets.packets.len());
    for p in &packets.packets[first_key..] {
        let Some(t) = p.pts else {
            return Err("a video frame has no timestamp".into());
        };
        if t >= key_pts {
            pts.push(t);
        }
    }
    Ok(pts)
}

/// Plan the chunks of an input from its packets and its frames' timestamps (see
/// [`frames_from_packets`]).
pub fn plan(
    packets: &VideoPackets,
    frames: &[i64],
    chunk_secs: f64,
    (args, treat): (&SplitArgs, Option<Treatment>),
    key: &str,
) -> Result<Plan, Unsplittable> {
    let args = &videofarm_core::treat::treated_split(args, treat.as_ref());
    let tb = packets.time_base;
    let d = frame_ticks(packets)?;
    let all = steady_frames(packets, frames, d)?;
    let seconds = |ticks: f64| ticks * tb.num as f64 / tb.den as f64;
    // A tape whose blank ends are cut is planned as the frames kept.
    let (base, kept) = kept_frames(packets, &all, treat.and_then(|t| t.trim))?;
    let pts = &all[base..];
    let n = kept as u64;
    let per_chunk = (chunk_secs / tb.seconds(1) / d).round().max(1.0) as u64;
    let count = ((n as f64) / per_chunk as f64).round().max(1.0) as u64;
    if count < 2 {
        return Err("it is too short to split".into());
    }
    let q = d / 4.0;
    let context = u64::from(args.context_frames);
    let at = |i: u64| pts[i as usize] as f64;
    let chunks = (0..count)
        .map(|i| {
            let (a, b) = (i * n / count, (i + 1) * n / count);
            let (s, e) = (a.saturating_sub(context), (b + context).min(n));
            let seek_s = (s > 0 || base > 0)
                .then(|| seek_before(packets, pts[s as usize], d))
                .flatten();
            Chunk {
                index: i as u32,
                count: count as u32,
                first: a,
                end: b,
                seek_s,
                // Bounded after the last frame kept by the first frame cut, if any.
                window: (
                    seconds(at(s) - q),
                    (base as u64 + e < all.len() as u64).then(|| seconds(at(e) - q)),
                ),
                keep: (
                    seconds(at(a) - q),
                    (base as u64 + b < all.len() as u64).then(|| seconds(at(b) - q)),
                ),
                treat,
            }
        })
        .collect();
    let (start_us, nudge) = encode_start(packets);
    Ok(Plan {
        key: key.to_owned(),
        chunks,
        frames: n,
        frames_per_frame: args.frames_per_frame,
        first_pts: pts[0],
        source_start_s: packets.start_s,
        time_base: (tb.num, tb.den),
        start_us,
        nudge,
        queued: false,
        started_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
        treat,
    })
}

/// One frame's duration in ticks of the video's time base, for an input with one video stream
/// at a known, usable rate.
fn frame_ticks(packets: &VideoPackets) -> Result<f64, Unsplittable> {
    if packets.video_streams != 1 {
        return Err(format!(
            "it has {} video streams (a split handles one)",
            packets.video_streams
        ));
    }
    let (tb, rate) = (
        packets.time_base,
        packets
            .frame_rate
            .ok_or("its frame rate is unknown".to_owned())?,
    );
    let d = (tb.den as f64 * rate.den as f64) / (tb.num as f64 * rate.num as f64);
    if !d.is_finite() || d <= 0.0 {
        return Err("its frame rate is unusable".into());
    }
    Ok(d)
}

/// The frames a tape whose blank ends are cut (`cut`) is planned as: the first kept frame's
/// index in `all` and how many are kept (all of them without a cut). Its first chunk then
/// starts, and its last ends, where the picture does: the filters see no frame beyond them, as
/// in a whole encode of the cut tape.
fn kept_frames(
    packets: &VideoPackets,
    all: &[i64],
    cut: Option<Trim>,
) -> Result<(usize, usize), Unsplittable> {
    let Some(cut) = cut.filter(Trim::is_valid) else {
        return Ok((0, all.len()));
    };
    let keeps = |p: i64| cut.keeps(packets.time_base.seconds(p) - packets.start_s);
    let base = all
        .iter()
        .position(|&p| keeps(p))
        .ok_or("the cut keeps none of its frames".to_owned())?;
    Ok((base, all[base..].iter().take_while(|&&p| keeps(p)).count()))
}

/// Where a chunk whose filters need frames from the one at `pts` on opens the input: one frame
/// (`d` ticks) before the decode time of the last keyframe shown at or before it, relative to
/// the container's start (what -ss means); `None` at the very start.
fn seek_before(packets: &VideoPackets, pts: i64, d: f64) -> Option<f64> {
    let tb = packets.time_base;
    packets
        .packets
        .iter()
        .filter(|p| p.key)
        .filter_map(|p| Some((p.pts?, p.dts.unwrap_or(p.pts?))))
        .filter(|(kp, _)| *kp <= pts)
        .max_by_key(|(kp, _)| *kp)
        .map(|(kp, kd)| (kp.min(kd) as f64 - d) * tb.num as f64 / tb.den as f64 - packets.start_s)
        .filter(|ss| *ss > 0.0)
}

/// The frames' timestamps in order, if they are steady: decoded in order, each once, one frame
/// duration (`d` ticks) apart.
fn steady_frames(packets: &VideoPackets, frames: &[i64], d: f64) -> Result<Vec<i64>, Unsplittable> {
    let mut pts = frames.to_vec();
    if pts.is_empty() {
        return Err("it has no video frames".into());
    }
    let mut last_dts = None;
    for dts in packets.packets.iter().filter_map(|p| p.dts) {
        if last_dts.is_some_and(|last| dts < last) {
            return Err("its timestamps go backwards (a discontinuity)".into());
        }
        last_dts = Some(dts);
    }
    pts.sort_unstable();
    if pts.windows(2).any(|w| w[0] == w[1]) {
        return Err("two frames share a timestamp".into());
    }
    if pts
        .windows(2)
        .any(|w| ((w[1] - w[0]) as f64 - d).abs() > 1.0 + 1e-9)
    {
        return Err("its frame rate varies or its timestamps have gaps".into());
    }
    Ok(pts)
}

/// The start ffmpeg subtracts (µs): the container's, or for demuxers with timestamp
/// discontinuities (MPEG-PS/TS) the earliest start of the streams an encode uses; and whether
/// the chunks' timestamps need the nudge that such a demuxer's own start calls for.
fn encode_start(packets: &VideoPackets) -> (i64, bool) {
    let container_us = (packets.start_s * 1e6).round() as i64;
    let discontinuous = matches!(
        packets.format_name.as_str(),
        "mpeg" | "mpegts" | "mpegtsraw"
    );
    let mut start_us = container_us;
    if discontinuous {
        if let Some(min) = packets
            .stream_starts
            .iter()
            .filter_map(|(_, s)| s.map(|s| (s * 1e6).round() as i64))
            .min()
        {
            start_us = start_us.max(min);
        }
    }
    (start_us, discontinuous && start_us == container_us)
}

fn secs(s: f64) -> String {
    format!("{s:.6}")
}

/// The ffmpeg options before a chunk's input, and the ones after it.
pub fn chunk_args(chunk: &Chunk, args: &SplitArgs) -> (Vec<String>, Vec<String>) {
    let mut before = Vec::new();
    if let Some(ss) = chunk.seek_s {
        before.extend(["-ss".to_owned(), secs(ss)]);
    }
    before.push("-copyts".into());
    let trim = |(start, end): (f64, Option<f64>)| match end {
        Some(end) => format!("trim=start={}:end={}", secs(start), secs(end)),
        None => format!("trim=start={}", secs(start)),
    };
    let chain = [
        trim(chunk.window),
        args.filter.clone(),
        trim(chunk.keep),
        "setpts=PTS-STARTPTS".into(),
    ]
    .into_iter()
    .filter(|f| !f.is_empty())
    .collect::<Vec<_>>()
    .join(",");
    let mut after: Vec<String> = ["-map", "0:v:0", "-vf"].map(String::from).to_vec();
    after.push(chain);
    after.extend(["-fps_mode", "passthrough"].map(String::from));
    after.extend(args.video.iter().cloned());
    (before, after)
}

/// The join's options: before its first input (the chunk list) and after it (the source as
/// input 1, with `source` its URL, then the maps and codecs). `chunk_rate` is the chunks'
/// frame rate: the encoder's clock, to which ffmpeg rounds the video's start.
pub fn join_args(
    plan: &Plan,
    chunk_rate: Rational,
    source: OsString,
    args: &SplitArgs,
) -> (Vec<OsString>, Vec<OsString>) {
    let (tb_num, tb_den) = (i128::from(plan.time_base.0), i128::from(plan.time_base.1));
    // (first_pts × tb − start) in the encoder's clock, rounded as ffmpeg rounds it.
    let numer = (i128::from(plan.first_pts) * tb_num * 1_000_000
        - i128::from(plan.start_us) * tb_den)
        * i128::from(chunk_rate.num);
    let denom = tb_den * 1_000_000 * i128::from(chunk_rate.den);
    let k = (numer as f64 / denom as f64).round();
    let (video_offset, source_offset) = match plan.treat.and_then(|t| t.trim) {
        // A cut tape starts at zero, video and sound, at its first frame kept (as its whole
        // encode's filters reset both clocks there).
        Some(cut) if cut.is_valid() => (0.0, -(plan.source_start_s + cut.start_s)),
        _ => (
            k * chunk_rate.den as f64 / chunk_rate.num as f64,
            -(plan.start_us + i64::from(plan.nudge)) as f64 / 1e6,
        ),
    };
    let os = |s: &str| OsString::from(s);
    let before = vec![
        os("-copyts"),
        os("-itsoffset"),
        os(&secs(video_offset)),
        os("-f"),
        os("concat"),
        os("-safe"),
        os("0"),
    ];
    let mut after = vec![
        os("-itsoffset"),
        os(&secs(source_offset)),
        os("-i"),
        source,
        os("-max_muxing_queue_size"),
        os("1000"),
        os("-map"),
        os("0:v:0"),
    ];
    after.extend(args.streams.iter().map(OsString::from));
    after.extend(["-c:v", "copy"].map(os));
    (before, after)
}

/// The concat list: each chunk with its exact duration, written as differences of rounded
/// running totals so the microseconds never add up to drift.
pub fn concat_list(spans: &[(String, f64)]) -> String {
    let mut list = String::from("ffconcat version 1.0\n");
    let (mut total, mut written_us) = (0.0f64, 0i64);
    for (name, length) in spans {
        total += length;
        let us = (total * 1e6).round() as i64;
        list.push_str(&format!(
            "file '{name}'\nduration {}\n",
            secs((us - written_us) as f64 / 1e6)
        ));
        written_us = us;
    }
    list
}

/// A chunk's file name in the work folder.
pub fn chunk_name(index: u32) -> String {
    format!("chunk-{index:05}.{CHUNK_EXTENSION}")
}

/// The work folder's name beside an output named `name`.
pub fn work_name(output: &Path) -> OsString {
    videofarm_core::split::work_dir(output)
        .file_name()
        .map(|n| n.to_owned())
        .unwrap_or_else(|| OsString::from_vec(b".videofarm-split".to_vec()))
}

/// The largest plan read (a plan takes about 200 bytes a chunk).
pub const PLAN_MAX_BYTES: u64 = 64 << 20;
/// The largest chunk note read (a failure's reason, an encode's warnings).
pub const NOTE_MAX_BYTES: u64 = 1 << 20;

/// Read the plan in `work`, if there is one.
pub fn read_plan(work: &Path) -> Option<Plan> {
    let text = fs::read_own(&work.join("plan.json"), PLAN_MAX_BYTES).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Write `plan.json` atomically (a reader sees the old plan or the new one, whole).
pub fn write_plan(work: &Path, plan: &Plan) -> std::io::Result<()> {
    fs::write_atomically(work, "plan.json", &serde_json::to_vec_pretty(plan)?)
}

/// Names in `work` that start with `chunk-` and end with `.suffix`, as chunk indices.
pub fn chunks_marked(work: &Path, suffix: &str) -> Vec<u32> {
    let Ok(names) = fs::names(work) else {
        return Vec::new();
    };
    let mut found: Vec<u32> = names
        .into_iter()
        .filter_map(|name| {
            let name = std::str::from_utf8(name.as_bytes()).ok()?.to_owned();
            name.strip_prefix("chunk-")?
                .strip_suffix(&format!(".{suffix}"))?
                .parse()
                .ok()
        })
        .collect();
    found.sort_unstable();
    found
}

/// The work folder as a path: `dir` joined with the work folder's name of `output`.
pub fn work_in(dir: &Path, output: &Path) -> PathBuf {
    dir.join(work_name(output))
}

#[cfg(test)]
mod tests {
    use super::*;
    use videofarm_ffmpeg::packets::Packet;

    fn args(context: u32) -> SplitArgs {
        SplitArgs {
            filter: String::new(),
            context_frames: context,
            frames_per_frame: 1,
            video: vec!["-c:v".into(), "libx264".into()],
            streams: vec![],
        }
    }

    /// 25 fps in a 1/1000 time base, GOPs of 10, B-frames shown before their anchor.
    fn packets(frames: i64) -> VideoPackets {
        let packets = (0..frames)
            .map(|i| Packet {
                pts: Some(40 * i + 80),
                dts: Some(40 * i),
                key: i % 10 == 0,
            })
            .collect();
        VideoPackets {
            time_base: Rational { num: 1, den: 1000 },
            frame_rate: Some(Rational { num: 25, den: 1 }),
            start_s: 0.0,
            format_name: "matroska,webm".into(),
            stream_starts: vec![("video".into(), Some(0.08))],
            video_streams: 1,
            packets,
        }
    }

    #[test]
    fn chunks_cover_every_frame_once_with_context_around_them() {
        let p = packets(250);
        let plan = plan(
            &p,
            &frames_from_packets(&p).unwrap(),
            2.0,
            (&args(2), None),
            "k",
        )
        .unwrap();
        assert_eq!(plan.frames, 250);
        assert_eq!(plan.chunks.len(), 5);
        let mut next = 0;
        for c in &plan.chunks {
            assert_eq!(c.first, next, "no gap, no overlap");
            next = c.end;
        }
        assert_eq!(next, 250);
        let second = &plan.chunks[1];
        assert_eq!((second.first, second.end), (50, 100));
        // Frame 50 is at 2.080 s; the window starts two frames earlier, a quarter frame before.
        assert!((second.keep.0 - 2.070).abs() < 1e-9, "{:?}", second.keep);
        assert!((second.window.0 - (2.080 - 0.080 - 0.010)).abs() < 1e-9);
        assert!((second.keep.1.unwrap() - 4.070).abs() < 1e-9);
        // Opened one frame before the keyframe at or before frame 48 (the keyframe at dts 1.6 s).
        assert!((second.seek_s.unwrap() - 1.56).abs() < 1e-9, "{second:?}");
        assert_eq!(plan.chunks[0].seek_s, None);
        assert_eq!(
            plan.chunks[4].keep.1, None,
            "the last chunk runs to the end"
        );
        let (before, after) = chunk_args(second, &args(2));
        assert_eq!(before, vec!["-ss", "1.560000", "-copyts"]);
        assert!(after.contains(&"trim=start=1.990000:end=4.150000,trim=start=2.070000:end=4.070000,setpts=PTS-STARTPTS".to_owned()), "{after:?}");
    }

    fn try_plan(p: &VideoPackets) -> Result<Plan, String> {
        plan(p, &frames_from_packets(p)?, 2.0, (&args(2), None), "k")
    }

    #[test]
    fn leading_pictures_of_an_open_gop_before_the_first_keyframe_are_not_frames() {
        let mut p = packets(250);
        // Two B-frames shown before the first keyframe, which a decoder drops.
        p.packets[1].pts = Some(0);
        p.packets[2].pts = Some(40);
        let frames = frames_from_packets(&p).unwrap();
        assert_eq!(frames.len(), 248);
        assert!(frames.iter().all(|t| *t >= 80));
    }

    #[test]
    fn inputs_that_cannot_be_cut_exactly_are_refused_with_the_reason() {
        let mut gap = packets(250);
        gap.packets[100].pts = Some(40 * 100 + 80 + 20);
        assert!(try_plan(&gap).unwrap_err().contains("gaps"));
        let mut missing = packets(250);
        missing.packets[7].pts = None;
        assert!(try_plan(&missing).unwrap_err().contains("no timestamp"));
        let mut two = packets(250);
        two.video_streams = 2;
        assert!(try_plan(&two).unwrap_err().contains("video streams"));
        let mut back = packets(250);
        back.packets[120].dts = Some(0);
        assert!(try_plan(&back).unwrap_err().contains("backwards"));
        assert!(try_plan(&packets(60)).unwrap_err().contains("too short"));
    }

    #[test]
    fn the_concat_list_never_drifts() {
        let third = 1.0 / 3.0;
        let list = concat_list(&[
            ("a.nut".into(), third),
            ("b.nut".into(), third),
            ("c.nut".into(), third),
        ]);
        let total: i64 = list
            .lines()
            .filter_map(|l| l.strip_prefix("duration "))
            .map(|d| (d.parse::<f64>().unwrap() * 1e6).round() as i64)
            .sum();
        assert_eq!(total, 1_000_000);
    }

    /// A link planted at the name of a file the farm writes in a work folder is replaced by the
    /// rename, not written through: the file outside stays as it was. (The temporary file
    /// before it is made new, never through a link: `confine::fs::create_new`, tested in core.)
    #[test]
    fn a_file_written_in_a_work_folder_never_goes_through_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, work.join("plan.json")).unwrap();
        fs::write_atomically(&work, "plan.json", b"{}").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let meta = std::fs::symlink_metadata(work.join("plan.json")).unwrap();
        assert!(meta.is_file());
        assert_eq!(std::fs::read(work.join("plan.json")).unwrap(), b"{}");
    }
}
