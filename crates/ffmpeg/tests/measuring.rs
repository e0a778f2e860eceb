//! The tape report's measures, taken in the encode's own run: in a filter graph of their own
//! (one thread), or, beside a profile with a complex graph of its own, in the simple form.
//! Both measure the same signal, frame for frame, whole and for a chunk's range.

// Its clip makers are not all used here.
#[allow(dead_code)]
mod common;

use common::{encode_with, ffmpeg};
use std::ffi::OsString;
use std::path::Path;
use videofarm_core::report::Signal;
use videofarm_ffmpeg::analyse::analysis_args;
use videofarm_ffmpeg::Tools;

async fn measured(
    tools: &Tools,
    input: &Path,
    out: &Path,
    profile: &[&str],
    range: Option<(f64, Option<f64>)>,
) -> Signal {
    let profile: Vec<String> = profile.iter().map(|s| s.to_string()).collect();
    let args: Vec<OsString> = profile.iter().map(Into::into).collect();
    let analysis = analysis_args(range, &profile);
    encode_with(tools, (input, out), &args, None, Some(&analysis))
        .await
        .unwrap_or_else(|e| panic!("{profile:?}: {e}"))
        .expect("the measures were read")
}

#[tokio::test]
async fn a_graph_of_its_own_measures_what_the_simple_form_does() {
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::locate(None, None).expect("ffmpeg is installed");
    let tape = dir.path().join("tape.mpg");
    // Interlaced, with a black stretch and sound, so every measure has something to say.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25,drawbox=color=black:t=fill:enable='between(t,1,1.5)'",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "3",
        "-vf",
        "tinterlace=mode=interleave_top",
        "-flags",
        "+ilme+ildct",
        "-c:v",
        "mpeg2video",
        "-c:a",
        "mp2",
        "-f",
        "mpeg",
        tape.to_str().unwrap(),
    ]);
    let out = dir.path().join("out.mkv");
    let plain = ["-map", "0", "-c:v", "mpeg4", "-c:a", "copy"];
    // The same encode, through a complex graph of the profile's own.
    let complex = [
        "-filter_complex",
        "[0:v:0]null[v]",
        "-map",
        "[v]",
        "-map",
        "0:a",
        "-c:v",
        "mpeg4",
        "-c:a",
        "copy",
    ];
    for range in [None, Some((0.8, Some(2.2)))] {
        let own = measured(&tools, &tape, &out, &plain, range).await;
        let simple = measured(&tools, &tape, &out, &complex, range).await;
        assert!(!own.is_empty(), "{range:?}: nothing measured");
        assert!(own.bins.values().any(|b| b.black > 0), "{range:?}: {own:?}");
        assert!(own.bins.values().any(|b| b.audio > 0), "{range:?}: {own:?}");
        assert_eq!(own, simple, "{range:?}");
    }
}
