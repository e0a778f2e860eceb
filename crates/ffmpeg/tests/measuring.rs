//! The tape report's measures, taken in the encode's own run: in a filter graph of their own
//! (one thread), or, beside a profile with a complex graph of its own, in the simple form.
//! Both measure the same signal, frame for frame, whole and for a chunk's range; the levels
//! computed from the small picture are those of ffmpeg's `signalstats` on the same lines.

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

/// The levels measured here from the small picture are those ffmpeg's `signalstats` measures
/// on the same lines of it, frame for frame: the report's thresholds were set on ffmpeg's.
#[test]
fn the_pictures_measures_are_those_of_signalstats_on_the_same_lines() {
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("noisy.mkv");
    // Colour, noise (specks that break from their lines), levels pushed out of range, and a
    // stretch frozen: every measure has something to say.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25,noise=alls=40:allf=t,lutyuv=y=val*1.15,split[a][b];\
         [a][b]freezeframes=first=20:last=30:replace=19[out0]",
        "-t",
        "2",
        "-c:v",
        "ffv1",
        tape.to_str().unwrap(),
    ]);
    let small = "scale=trunc(iw/8)*2:ih:flags=neighbor,format=yuv420p";
    let url = tape.to_str().unwrap();
    let y4m = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-i",
            url,
            "-vf",
            small,
            "-fps_mode",
            "passthrough",
        ])
        .args(["-f", "yuv4mpegpipe", "-"])
        .output()
        .unwrap();
    assert!(y4m.status.success());
    let (to, from) = std::sync::mpsc::channel();
    videofarm_ffmpeg::picture::read_pictures(&y4m.stdout[..], to);
    let ours: Vec<_> = from.into_iter().collect();

    // signalstats on every fourth line of the same picture (`field` twice: lines 0, 4, 8...).
    let theirs = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-i", url, "-vf"])
        .arg(format!(
            "{small},field=top,field=top,signalstats=stat=tout+brng,metadata=mode=print"
        ))
        .args(["-fps_mode", "passthrough", "-f", "null", "-"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&theirs.stderr);
    let mut frames: Vec<std::collections::HashMap<String, f64>> = Vec::new();
    for line in stderr.lines() {
        if line.contains("] frame:") {
            frames.push(Default::default());
        } else if let Some((key, value)) = line
            .split_once("lavfi.signalstats.")
            .and_then(|(_, kv)| kv.split_once('='))
        {
            if let (Some(frame), Ok(v)) = (frames.last_mut(), value.trim().parse()) {
                frame.insert(key.to_owned(), v);
            }
        }
    }
    assert_eq!(ours.len(), 50);
    assert_eq!(ours.len(), frames.len());
    let mut specks = 0.0;
    for (n, (p, s)) in ours.iter().zip(&frames).enumerate() {
        let close = |name: &str, ours: f64, within: f64| {
            let theirs = s[name];
            assert!(
                (ours - theirs).abs() <= within,
                "frame {n}: {name} {ours} here, {theirs} by signalstats"
            );
        };
        close("YMIN", p.ymin, 0.0);
        close("YLOW", p.ylow, 0.0);
        close("YAVG", p.yavg, 0.01);
        close("YHIGH", p.yhigh, 0.0);
        close("YMAX", p.ymax, 0.0);
        // signalstats truncates each sample's saturation to a whole level.
        close("SATAVG", p.sat, 1.0);
        close("YDIF", p.ydif, 0.01);
        close("TOUT", p.tout, 1e-7);
        // Its chroma line for a measured line is that of the picture it measured.
        close("BRNG", p.brng, 0.02);
        specks += p.tout;
    }
    assert!(
        specks > 0.0,
        "the noise made no outliers: the test says nothing"
    );
    assert!(ours.iter().any(|p| p.brng > 0.0), "nothing out of range");
    assert!(
        ours[21..30].iter().all(|p| p.ydif == 0.0),
        "the frozen frames changed"
    );
}
