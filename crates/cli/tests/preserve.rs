//! A preservation master beside the viewing copy: `--profile preserve,vhs` makes both from one
//! command, the master proven to decode to exactly the source's frames (its per-frame MD5s
//! kept beside it), and a profile that claims to be lossless but is not fails, leaving nothing.

mod common;

use common::split::{frame_hashes, interlaced_tape};
use common::*;
use std::path::Path;

/// The MD5s of a `framemd5` file's frames.
fn sidecar_hashes(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.rsplit(',').next().unwrap().trim().to_owned())
        .collect()
}

#[test]
fn one_run_makes_a_master_proven_lossless_and_a_viewing_copy() {
    let farm = Farm::new();
    let tape = farm.input.join("tape.mpg");
    interlaced_tape(&tape, 3);
    let out = farm
        .cmd(["run", "--json", "--profile", "preserve,vhs", "--out"])
        .arg(&farm.out)
        .arg(&tape)
        .output()
        .unwrap();
    let records = run_results(&out.stdout).expect("run --json");
    assert!(out.status.success(), "{records:#?}\n{}", text(&out.stderr));
    assert_eq!(records.len(), 2, "{records:#?}");
    let (master, copy) = (
        farm.out.join("tape.preserve.mkv"),
        farm.out.join("tape.vhs.mkv"),
    );
    assert_eq!(probe(&master).0[0].1, "ffv1");
    assert_eq!(probe(&copy).0[0].1, "h264");
    let source = frame_hashes(&tape);
    assert_eq!(source.len(), 90);
    assert!(
        frame_hashes(&master) == source,
        "the master decodes to exactly the source's frames"
    );
    assert_eq!(
        sidecar_hashes(&farm.out.join("tape.preserve.mkv.framemd5")),
        source,
        "the sidecar holds each frame's MD5"
    );
    for record in &records {
        assert!(
            record["result"]["tape"]["frames"] == 90,
            "both measured: {record:#}"
        );
    }
}

#[test]
fn a_profile_that_says_it_is_lossless_but_is_not_fails_and_leaves_nothing() {
    let farm = Farm::new();
    let config = std::fs::read_to_string(&farm.config).unwrap();
    let fake = r#"
[profiles.fake]
extension = "mkv"
args = ["-map", "0:v:0", "-c:v", "libx264", "-crf", "35", "-preset", "ultrafast"]
video_codec = "h264"
audio = "none"
lossless = true
"#;
    std::fs::write(&farm.config, config + fake).unwrap();
    let tape = farm.input.join("tape.mpg");
    clip(&tape, 2);
    let out = farm
        .cmd(["run", "--json", "--profile", "fake", "--out"])
        .arg(&farm.out)
        .arg(&tape)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let records = run_results(&out.stdout).expect("run --json");
    let error = records[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("tape.mpg: the master failed verification: it is not lossless: frame 1"),
        "{error}"
    );
    assert_eq!(
        records[0]["attempts"], 1,
        "not tried again: {:#}",
        records[0]
    );
    assert!(farm.outputs().is_empty(), "{:?}", farm.outputs());
}
