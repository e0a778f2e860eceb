//! A capture with faults put at known times, for the tape report's tests.

use super::{ffmpeg, Farm};
use std::path::Path;

/// A quick profile for the report's tests (the report does not depend on the encoder): the
/// `vhs` recipe at x264's fastest preset, splittable the same way.
pub const QUICK: &str = r#"
[profiles.quick]
extension = "mkv"
args = ["-max_muxing_queue_size", "1000", "-map", "0:v:0", "-map", "0:a?", "-vf", "bwdif=mode=send_field:parity=auto:deint=all", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"]
video_codec = "h264"
[profiles.quick.split]
filter = "bwdif=mode=send_field:parity=auto:deint=all"
frames_per_frame = 2
video = ["-c:v", "libx264", "-preset", "ultrafast"]
streams = ["-map", "1:a?", "-c:a", "aac"]
"#;

/// `farm` with the [`QUICK`] profile.
pub fn with_quick(farm: Farm) -> Farm {
    let config = std::fs::read_to_string(&farm.config).unwrap();
    std::fs::write(&farm.config, config + QUICK).unwrap();
    farm
}

/// Where the faults are, in seconds from the tape's first frame.
pub const BLACK_END: f64 = 1.0;
pub const CLIPPED: (f64, f64) = (3.0, 4.5);
pub const NOISE: (f64, f64) = (5.0, 5.5);
pub const SILENT: (f64, f64) = (6.0, 7.5);
pub const BLACK_AGAIN: f64 = 9.0;
pub const LENGTH: u32 = 10;

/// A 10 s capture in MPEG-PS (`muxer`), interlaced bottom field first (fields woven from a
/// 50 fps source), with the faults above.
pub fn faulty_tape(path: &Path, muxer: &str) {
    let video = format!(
        "testsrc2=size=320x240:rate=50,tinterlace=mode=interleave_bottom,setfield=bff,\
         eq=contrast=4:enable='between(t,{},{})',\
         noise=alls=100:allf=t+u:enable='between(t,{},{})',\
         drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill:enable='lt(t,{BLACK_END})+gte(t,{BLACK_AGAIN})'",
        CLIPPED.0, CLIPPED.1, NOISE.0, NOISE.1
    );
    let audio = format!(
        "sine=frequency=440:sample_rate=48000,volume=0:enable='between(t,{},{})'",
        SILENT.0, SILENT.1
    );
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            &video,
            "-f",
            "lavfi",
            "-i",
            &audio,
            "-t",
            &LENGTH.to_string(),
            "-c:v",
            "mpeg2video",
            "-flags",
            "+ilme+ildct",
            "-top",
            "0",
            "-g",
            "12",
            "-bf",
            "2",
            "-b:v",
            "3M",
            "-c:a",
            "mp2",
            "-f",
            muxer,
        ],
        path,
    );
}
