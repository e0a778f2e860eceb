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
    let black = events(tape, "black", 2);
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
            .starts_with("black at the start")
            && black[1]["text"].as_str().unwrap().ends_with("to the end"),
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
    assert_eq!(tape["frames"], 250, "every frame measured once");
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

#[test]
fn a_tapes_faults_are_reported_where_they_are_whole_and_split() {
    whole_and_split(with_quick(Farm::new()));
}

#[test]
fn on_rabbitmq_a_tapes_faults_are_reported_where_they_are_whole_and_split() {
    whole_and_split(with_quick(Farm::amqp("")));
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
