//! A stand-in for ffmpeg and ffprobe, so a bench measures the farm and not the encoder: one
//! binary that acts as ffprobe when its name ends in `ffprobe`, else as ffmpeg. Its "media" is
//! a one-line text file, `standin duration=SECONDS`. As ffmpeg it lists a few encoders and
//! filters, passes any trial encode, and "encodes" by reading its input and reporting progress
//! (`-progress pipe:1`) at `STANDIN_SPEED` times real time (default 20), then writes an output
//! of the same length; as ffprobe it describes such a file as one h264 video stream.
//! For `bench/farm.sh`; not a test double.

use std::io::Write;
use std::time::{Duration, Instant};

const ENCODERS: &[&str] = &["libx264", "libx265", "mpeg2video", "aac", "flac"];
const FILTERS: &[&str] = &["scale", "yadif", "realtime", "null"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let me = args.first().cloned().unwrap_or_default();
    let code = if me.ends_with("ffprobe") {
        probe(&args[1..])
    } else {
        ffmpeg(&args[1..])
    };
    std::process::exit(code);
}

/// The path in a `file:` URL (or the argument itself).
fn path(arg: &str) -> &str {
    arg.strip_prefix("file:").unwrap_or(arg)
}

/// The seconds a stand-in media file says it lasts.
fn duration(file: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path(file)).ok()?;
    text.trim()
        .strip_prefix("standin duration=")?
        .parse()
        .ok()
        .filter(|d: &f64| d.is_finite() && *d > 0.0)
}

fn probe(args: &[String]) -> i32 {
    let Some(file) = args.last() else { return 1 };
    let Some(secs) = duration(file) else {
        eprintln!("{file}: Invalid data found when processing input");
        return 1;
    };
    println!(
        r#"{{"streams":[{{"index":0,"codec_type":"video","codec_name":"h264"}}],"format":{{"format_name":"matroska,webm","duration":"{secs:.6}"}}}}"#
    );
    0
}

fn ffmpeg(args: &[String]) -> i32 {
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if has("-encoders") || has("-filters") {
        let (kind, names) = if has("-encoders") {
            ("Encoders", ENCODERS)
        } else {
            ("Filters", FILTERS)
        };
        println!("{kind}:\n V..... = Video\n ------");
        for name in names {
            println!(" V....D {name:<20} stand-in");
        }
        return 0;
    }
    let Some(output) = args.last() else { return 1 };
    let input = args
        .iter()
        .position(|a| a == "-i")
        .and_then(|i| args.get(i + 1));
    // A trial encode (from lavfi) or anything without a stand-in input: an output and done.
    let secs = match input {
        Some(i) if !has("lavfi") => match duration(i) {
            Some(secs) => secs,
            None => {
                eprintln!("{i}: Invalid data found when processing input");
                return 1;
            }
        },
        _ => 0.2,
    };
    let speed: f64 = std::env::var("STANDIN_SPEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s: &f64| *s > 0.0)
        .unwrap_or(20.0);
    if has("-progress") {
        let started = Instant::now();
        let total = Duration::from_secs_f64(secs / speed);
        let mut out = std::io::stdout();
        loop {
            let elapsed = started.elapsed().min(total);
            let done = elapsed.as_secs_f64() * speed;
            let ended = elapsed >= total;
            let _ = write!(
                out,
                "frame={}\nfps={:.1}\nout_time_us={}\nspeed={speed:.2}x\nprogress={}\n",
                (done * 25.0) as u64,
                25.0 * speed,
                (done * 1e6) as u64,
                if ended { "end" } else { "continue" }
            );
            let _ = out.flush();
            if ended {
                break;
            }
            std::thread::sleep((total - elapsed).min(Duration::from_millis(500)));
        }
    }
    match std::fs::write(path(output), format!("standin duration={secs}\n")) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{output}: {e}");
            1
        }
    }
}
