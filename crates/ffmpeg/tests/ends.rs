//! Where a tape's picture begins and ends: black before it and snow after it are found to the
//! frame, looking at every frame or first at the keyframes only; blank tape inside a tape, or
//! a tape with no picture at all, is never cut.

// Only its ffmpeg runner is used here.
#[allow(dead_code)]
mod common;

use common::ffmpeg;
use std::path::Path;
use videofarm_ffmpeg::ends::find_trim_by;
use videofarm_ffmpeg::Tools;

/// A 12 s MPEG-PS tape at 25 fps (GOPs of 12): `video` is the picture's filter chain.
fn tape(path: &Path, video: &str) {
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size=320x240:rate=25,{video}"),
        "-t",
        "12",
        "-c:v",
        "mpeg2video",
        "-g",
        "12",
        "-bf",
        "2",
        "-b:v",
        "6M",
        "-f",
        "mpeg",
        path.to_str().unwrap(),
    ]);
}

const BLACK: &str = "drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill";
const GREY: &str = "drawbox=x=0:y=0:w=iw:h=ih:color=gray:t=fill";

fn near(what: &str, got: f64, want: f64) {
    assert!((got - want).abs() < 0.001, "{what}: {got}, not {want}");
}

#[tokio::test]
async fn black_before_the_picture_and_snow_after_it_are_found_to_the_frame() {
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::locate(None, None).expect("ffmpeg is installed");
    let path = dir.path().join("tape.mpg");
    // The picture from frame 37 (1.48 s, inside a GOP) to frame 249; snow from 10 s on.
    tape(
        &path,
        &format!(
            "{BLACK}:enable='lt(t,1.48)',{GREY}:enable='gte(t,10)',noise=alls=100:allf=t+u:enable='gte(t,10)'"
        ),
    );
    for keyframes in [false, true] {
        let trim = find_trim_by(&tools, &path, 12.0, keyframes)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("keyframes {keyframes}: nothing to cut"));
        let said = format!("keyframes {keyframes}: {trim:?}");
        near(&said, trim.frame_s, 0.04);
        near(&said, trim.start_s - trim.first_s, 1.48);
        near(&said, trim.end_s.expect("snow cut") - trim.first_s, 10.0);
        near(&said, trim.tape_end_s - trim.first_s, 12.0);
    }
}

#[tokio::test]
async fn blank_tape_inside_a_tape_or_a_tape_with_no_picture_is_never_cut() {
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::locate(None, None).expect("ffmpeg is installed");
    let inside = dir.path().join("inside.mpg");
    tape(&inside, &format!("{BLACK}:enable='between(t,3,8)'"));
    let blank = dir.path().join("blank.mpg");
    tape(&blank, BLACK);
    for keyframes in [false, true] {
        for path in [&inside, &blank] {
            let trim = find_trim_by(&tools, path, 12.0, keyframes).await.unwrap();
            assert_eq!(trim, None, "{} keyframes {keyframes}", path.display());
        }
    }
}
