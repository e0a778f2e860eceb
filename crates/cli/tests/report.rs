//! The tape report: a tape with faults put at known times (black at both ends, clipped levels,
//! a burst of noise, a silent stretch, interlaced bottom field first) is reported with each
//! fault within a second of where it was put, encoded whole and split, on both backends; a
//! transport stream with garbage written into it reports the frames it lost there.

mod common;

use common::faults::*;
use common::*;
use serde_json::Value;
use std::path::Path;

fn near(what: &str, got: &Value, want: f64) {
    let got = got.as_f64().unwrap_or(f64::NAN);
    assert!(
        (got - want).abs() <= 1.0,
        "{what}: reported at {got} s, put at {want} s"
    );
}

/// The one event of `kind` (there must be exactly `count`), in time order.
fn events<'a>(tape: &'a Value, kind: &str, count: usize) -> Vec<&'a Value> {
    let found: Vec<&Value> = tape["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == kind)
        .collect();
    assert_eq!(found.len(), count, "{kind}: {:#}", tape["events"]);
    found
}

/// Every fault of [`faulty_tape`] named where it was put.
fn check_report(tape: &Value) {
    check_faults(tape, "black");
    assert_eq!(tape["frames"], 250, "every frame measured once");
}

/// Every fault of [`faulty_tape`] named where it was put, its black ends as `ends` ("black",
/// or "blank" where the treatment cut them), times on the tape's clock.
fn check_faults(tape: &Value, ends: &str) {
    let black = events(tape, ends, 2);
    near("black at the start", &black[0]["start_s"], 0.0);
    near(
        "end of the black at the start",
        &black[0]["end_s"],
        BLACK_END,
    );
    near("black at the end", &black[1]["start_s"], BLACK_AGAIN);
    near("end of the tape", &black[1]["end_s"], f64::from(LENGTH));
    assert!(
        black[0]["text"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{ends} "))
            && black[0]["text"].as_str().unwrap().contains(" at the start")
            && black[1]["text"].as_str().unwrap().contains(" to the end"),
        "{black:#?}"
    );
    let clipped = events(tape, "clipped", 1);
    near("clipped from", &clipped[0]["start_s"], CLIPPED.0);
    near("clipped to", &clipped[0]["end_s"], CLIPPED.1);
    let noise = events(tape, "dropout", 1);
    near("noise from", &noise[0]["start_s"], NOISE.0);
    near("noise to", &noise[0]["end_s"], NOISE.1);
    let silent = events(tape, "silent", 1);
    near("silence from", &silent[0]["start_s"], SILENT.0);
    near("silence to", &silent[0]["end_s"], SILENT.1);
    let fields = &tape["fields"];
    assert!(
        fields["bottom"].as_u64() > fields["top"].as_u64()
            && fields["bottom"].as_u64() > fields["progressive"].as_u64(),
        "bottom field first: {fields}"
    );
    assert_eq!(tape["lost_frames"], 0);
}

fn whole_and_split(farm: Farm) {
    let tape = farm.input.join("capture.mpg");
    faulty_tape(&tape, "mpeg");
    for split in ["off", "3"] {
        let (job, _) = run_one(&farm, &tape, "quick", split);
        check_report(&job["result"]["tape"]);
        let id = job["id"].as_str().unwrap();
        // The same report through the command, as JSON and in words.
        let json = farm.run(["report", id, "--json"]);
        assert!(json.status.success(), "{}", text(&json.stderr));
        let shown: Value = serde_json::from_slice(&json.stdout).unwrap();
        check_report(&shown);
        let words = text(&farm.run(["report", id]).stdout);
        assert!(
            words.contains("interlaced, bottom field first")
                && words.contains("black at the start (00:00:00.0-00:00:01.0)"),
            "{words}"
        );
        let listed = text(&farm.run(["jobs"]).stdout);
        assert!(listed.contains("tape: black ×2, luma clipped"), "{listed}");
    }
}

/// [`faulty_tape`] through `vhs`: its black ends cut to the frame, whole and split alike
/// (the same pictures, the same sound), deinterlaced bottom field first, and every other fault
/// named where it was put on the tape's clock.
fn cut_whole_and_split(farm: Farm) {
    let tape = farm.input.join("capture.mpg");
    faulty_tape(&tape, "mpeg");
    for split in ["off", "2"] {
        let (job, output) = run_one(&farm, &tape, "vhs", split);
        let report = &job["result"]["tape"];
        check_faults(report, "blank");
        assert_eq!(report["frames"], 200, "the frames kept, measured once");
        let said = report["treatment"].as_str().unwrap_or_default();
        assert!(
            said.starts_with("deinterlaced bottom field first, as measured")
                && said.ends_with(
                    "blank tape cut at the start (1.0 s); blank tape cut at the end (1.0 s)"
                ),
            "{report:#}"
        );
        // 8 s of 25 frames, each made two by the deinterlacer.
        let pictures = common::split::frame_hashes(&output).len();
        assert_eq!(pictures, 400, "split {split}: only the frames kept");
        let (_, duration) = probe(&output);
        assert!((duration - 8.0).abs() < 0.1, "split {split}: {duration} s");
    }
}

/// The `deint` test profile (lossless x264 after `vhs`'s deinterlacer, so frames compare
/// exactly) with the treatment on.
const CUT: &str = r#"
[profiles.cut]
extension = "mkv"
args = ["-max_muxing_queue_size", "1000", "-map", "0:v:0", "-map", "0:a?", "-vf", "bwdif=mode=send_field:parity=auto:deint=all", "-c:v", "libx264", "-qp", "0", "-preset", "ultrafast", "-c:a", "aac", "-b:a", "128k"]
video_codec = "h264"
auto = true
[profiles.cut.split]
filter = "bwdif=mode=send_field:parity=auto:deint=all"
frames_per_frame = 2
video = ["-c:v", "libx264", "-qp", "0", "-preset", "ultrafast"]
streams = ["-map", "1:a?", "-c:a", "aac", "-b:a", "128k"]
"#;

#[test]
fn a_cut_tape_split_is_frame_for_frame_and_sample_for_sample_the_cut_whole_encode() {
    let farm = Farm::new();
    let config = std::fs::read_to_string(&farm.config).unwrap();
    std::fs::write(&farm.config, config + CUT).unwrap();
    let tape = farm.input.join("capture.mpg");
    faulty_tape(&tape, "mpeg");
    let encoded: Vec<(Vec<String>, Vec<String>)> = ["off", "2"]
        .iter()
        .map(|split| {
            let (_, output) = run_one(&farm, &tape, "cut", split);
            (common::split::frame_hashes(&output), audio_packets(&output))
        })
        .collect();
    assert_eq!(encoded[0].0.len(), 400, "only the frames kept");
    assert!(
        encoded[0].0 == encoded[1].0,
        "the split tape is cut on the frames the whole one is"
    );
    assert_eq!(encoded[0].1, encoded[1].1, "and its sound is cut alike");
}

/// Every audio packet's timestamp and hash.
fn audio_packets(path: &Path) -> Vec<String> {
    common::split::column(&["-map", "0:a", "-c", "copy", "-f", "framemd5", "-"], path)
}

#[test]
fn a_tapes_blank_ends_are_cut_to_the_frame_whole_and_split() {
    cut_whole_and_split(Farm::new());
}

#[test]
fn on_rabbitmq_a_tapes_blank_ends_are_cut_to_the_frame_whole_and_split() {
    cut_whole_and_split(Farm::amqp(""));
}

#[test]
fn a_tapes_faults_are_reported_where_they_are_whole_and_split() {
    whole_and_split(with_quick(Farm::new()));
}

#[test]
fn on_rabbitmq_a_tapes_faults_are_reported_where_they_are_whole_and_split() {
    whole_and_split(with_quick(Farm::amqp("")));
}

/// `report = false`: the same tape through the same profile, whole and split, is encoded and
/// not measured (README: the way to plain ffmpeg's speed).
#[test]
fn a_profile_that_does_not_report_measures_nothing_whole_or_split() {
    let farm = with_quick(Farm::new());
    let config = std::fs::read_to_string(&farm.config).unwrap();
    let quiet = config.replacen(
        "[profiles.quick]\n",
        "[profiles.quick]\nreport = false\n",
        1,
    );
    assert_ne!(quiet, config, "the quick profile is in the configuration");
    std::fs::write(&farm.config, quiet).unwrap();
    let tape = farm.input.join("capture.mpg");
    faulty_tape(&tape, "mpeg");
    for split in ["off", "3"] {
        let (job, _) = run_one(&farm, &tape, "quick", split);
        assert_eq!(job["state"], "succeeded", "split {split}: {job:#}");
        assert!(job["result"]["tape"].is_null(), "split {split}: {job:#}");
        let id = job["id"].as_str().unwrap();
        let asked = farm.run(["report", id]);
        assert!(!asked.status.success());
        assert!(
            text(&asked.stderr).contains("it was not measured"),
            "{}",
            text(&asked.stderr)
        );
    }
}

/// ffprobe's position (bytes) and time of the first video packet at or after `at` seconds from
/// the first one.
fn packet_at(path: &Path, at: f64) -> (u64, f64) {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time,pos",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    let rows: Vec<(f64, u64)> = text(&out.stdout)
        .lines()
        .filter_map(|l| {
            // MPEG-2 side data adds fields after these two.
            let mut fields = l.split(',');
            let (t, pos) = (fields.next()?, fields.next()?);
            Some((t.parse().ok()?, pos.trim().parse().ok()?))
        })
        .collect();
    let first = rows.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
    rows.iter()
        .find(|(t, _)| *t - first >= at)
        .map(|&(t, pos)| (pos, t - first))
        .expect("a packet at that time")
}

#[test]
fn garbage_in_a_transport_stream_is_reported_as_frames_lost_where_it_was_written() {
    let farm = with_quick(Farm::new());
    let tape = farm.input.join("broadcast.ts");
    faulty_tape(&tape, "mpegts");
    let (pos, at) = packet_at(&tape, 2.0);
    // 60 KB of noise over the stream from there: its packets lose their sync.
    let mut bytes = std::fs::read(&tape).unwrap();
    let mut x: u32 = 0x1234_5678;
    for b in bytes.iter_mut().skip(pos as usize).take(60_000) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    std::fs::write(&tape, bytes).unwrap();
    let (job, _) = run_one(&farm, &tape, "quick", "off");
    let tape = &job["result"]["tape"];
    let lost = events(tape, "lost", 1);
    near("frames lost", &lost[0]["start_s"], at);
    assert!(tape["lost_frames"].as_u64().unwrap() > 0, "{tape:#}");
    assert!(
        job["result"]["warnings"][0]
            .as_str()
            .unwrap_or_default()
            .contains("damaged"),
        "{job:#}"
    );
}
