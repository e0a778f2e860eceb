//! Running one encode: argv only, progress from `-progress pipe:1`, stderr tail kept, and the
//! process stopped on cancellation, stall or timeout. ffmpeg runs in its own process group (a
//! Ctrl-C in the terminal reaches the worker, which stops ffmpeg itself and cleans up) and gets
//! SIGKILL from the kernel if its worker dies, so it can never race a redelivered job.

use crate::analyse::{Analyser, PICTURES};
use crate::header::HeaderReader;
use crate::picture;
use crate::{file_url, progress::ProgressParser, tail::Tail, tools::Tools, MediaInfo};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use videofarm_core::report::Signal;
use videofarm_core::Progress;

/// What the measures' pictures pipe may hold: several frames' small pictures (the most an
/// unprivileged process may ask for on Linux by default, `/proc/sys/fs/pipe-max-size`). A
/// user's pipes share 64 MiB by default (`pipe-user-pages-soft`): a machine's few encodes at
/// once take a few of them, and a pipe that cannot be widened keeps its size.
const PICTURE_PIPE_BYTES: usize = 1 << 20;

/// What ffmpeg prints when the output could not be written, whatever its exit status.
const WRITE_FAILURES: &[&str] = &[
    "No space left on device",
    "Error writing trailer",
    "Error closing file",
];

/// One encode to run.
#[derive(Debug, Clone)]
pub struct EncodeRequest<'a> {
    pub tools: &'a Tools,
    /// Options for the input, placed before its `-i` (`-ss`, `-copyts`, `-f concat`).
    pub input_args: &'a [std::ffi::OsString],
    pub input: &'a Path,
    /// The temporary file ffmpeg writes; its extension picks the muxer unless `format` does.
    pub output: &'a Path,
    /// The muxer (`-f`), for an output path without a telling extension.
    pub format: Option<&'a str>,
    /// The profile's arguments, between the input and the output.
    pub args: &'a [std::ffi::OsString],
    /// The input's duration, for progress and ETA; it may be set while the encode runs.
    pub duration_s: &'a OnceLock<f64>,
    /// Where the input's description from ffmpeg's own header goes, as soon as ffmpeg has
    /// printed it: `Some(info)`, or `None` inside when it could not be read (use ffprobe then).
    /// The sender is dropped when the encode ends without a header.
    pub input_info: Option<watch::Sender<Option<Option<MediaInfo>>>>,
    /// Kill ffmpeg when it has made no progress for this long.
    pub stall_after: Duration,
    /// Kill ffmpeg when the whole encode takes longer than this.
    pub timeout: Option<Duration>,
    /// A second output that measures the input for the tape report
    /// ([`crate::analyse::analysis_args`]), read from stderr into [`Encoded::signal`].
    pub analysis: Option<&'a [std::ffi::OsString]>,
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("could not start ffmpeg ({path}): {source}")]
    Spawn {
        path: String,
        source: std::io::Error,
    },
    #[error("ffmpeg failed ({status}): {reason}")]
    Failed {
        status: String,
        reason: String,
        stderr_tail: String,
    },
    #[error("ffmpeg made no progress for {} s and was stopped", seconds(*after))]
    Stalled {
        after: Duration,
        stderr_tail: String,
    },
    #[error("the encode took longer than the {} s timeout and was stopped", seconds(*after))]
    TimedOut {
        after: Duration,
        stderr_tail: String,
    },
    #[error("the encode was stopped")]
    Cancelled,
}

impl EncodeError {
    pub fn stderr_tail(&self) -> &str {
        match self {
            EncodeError::Failed { stderr_tail, .. }
            | EncodeError::Stalled { stderr_tail, .. }
            | EncodeError::TimedOut { stderr_tail, .. } => stderr_tail,
            _ => "",
        }
    }

    /// True when ffmpeg failed because the output's file system is full.
    pub fn is_disk_full(&self) -> bool {
        self.stderr_tail().contains("No space left on device")
    }
}

/// The argv for an encode (without the program name); the measuring outputs' pictures go to
/// descriptor `pictures`.
pub fn encode_args(req: &EncodeRequest<'_>, pictures: Option<RawFd>) -> Vec<std::ffi::OsString> {
    let mut argv: Vec<std::ffi::OsString> = [
        "-hide_banner",
        "-nostdin",
        // Every line tagged with its level: the input's header is read from the `info` lines
        // and only `error` and worse are kept for the failure message.
        "-loglevel",
        "level+info",
        "-nostats",
        "-progress",
        "pipe:1",
    ]
    .iter()
    .map(Into::into)
    .collect();
    argv.extend(req.input_args.iter().map(Into::into));
    argv.push("-i".into());
    argv.push(file_url(req.input));
    argv.extend(req.args.iter().map(Into::into));
    if let Some(format) = req.format {
        argv.push("-f".into());
        argv.push(format.into());
    }
    argv.push("-y".into());
    argv.push(file_url(req.output));
    if let Some(analysis) = req.analysis {
        let to = pictures.map(|fd| std::ffi::OsString::from(format!("pipe:{fd}")));
        argv.extend(analysis.iter().map(|a| match &to {
            Some(to) if a == PICTURES => to.clone(),
            _ => a.clone(),
        }));
    }
    argv
}

/// A finished encode, and what ffmpeg complained about on the way: errors it printed although
/// it finished are damage in the input (a decoder that skipped broken data).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Encoded {
    /// Error lines in all.
    pub errors: u64,
    /// The last of them.
    pub error_tail: String,
    /// What the measuring output found, when there was one.
    pub signal: Option<Signal>,
}

/// Run the encode, sending progress snapshots to `progress`, until it ends or `cancel` fires.
pub async fn encode(
    req: &EncodeRequest<'_>,
    progress: &watch::Sender<Progress>,
    cancel: &CancellationToken,
) -> Result<Encoded, EncodeError> {
    let spawn_failed = |source| EncodeError::Spawn {
        path: req.tools.ffmpeg.display().to_string(),
        source,
    };
    // The measures' pictures: a pipe whose writing end only ffmpeg keeps.
    let pictures = req
        .analysis
        .map(|_| std::io::pipe())
        .transpose()
        .map_err(spawn_failed)?;
    if let Some((_, to)) = &pictures {
        // A frame's small picture is over 100 KB on SD: in a pipe of the usual 64 KiB, ffmpeg's
        // one thread would wait on this process's reader at every frame.
        let widened = crate::tools_sys::widen_pipe(to.as_fd(), PICTURE_PIPE_BYTES);
        tracing::trace!(?widened, "the pictures' pipe");
    }
    let mut child = spawn(req, pictures.as_ref().map(|(_, to)| to.as_raw_fd()))?;
    let analyser = pictures.map(|(from, to)| {
        drop(to);
        let (measured, measures) = std::sync::mpsc::channel();
        tokio::task::spawn_blocking(move || picture::read_pictures(from, measured));
        Analyser::with_pictures(measures)
    });
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let url = file_url(req.input);
    let stderr_task = tokio::spawn(drain_stderr(
        stderr,
        HeaderReader::new(url.as_encoded_bytes()),
        req.input_info.clone(),
        analyser,
    ));

    let mut lines = BufReader::new(stdout).lines();
    let mut parser = ProgressParser::new(req.duration_s.get().copied());
    let started = Instant::now();
    let mut last_advance = Instant::now();
    let mut last_out_time = -1.0;
    let mut last_frames = 0;
    let mut stdout_open = true;
    let check_every =
        (req.stall_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(check_every);

    let stop: Option<EncodeError> = loop {
        tokio::select! {
            line = lines.next_line(), if stdout_open => match line {
                Ok(Some(line)) => {
                    parser.set_duration(req.duration_s.get().copied());
                    if let Some(snapshot) = parser.line(&line) {
                        if parser.out_time_s() > last_out_time || snapshot.frames > last_frames {
                            last_out_time = parser.out_time_s();
                            last_frames = snapshot.frames;
                            last_advance = Instant::now();
                        }
                        progress.send_replace(snapshot);
                    }
                }
                _ => stdout_open = false,
            },
            status = child.wait() => {
                let status = status.map_err(|source| EncodeError::Spawn {
                    path: req.tools.ffmpeg.display().to_string(),
                    source,
                })?;
                let (tail, signal) = stderr_task.await.unwrap_or_else(|_| (Tail::new(1), None));
                return exited(status, &tail).map(|encoded| Encoded { signal, ..encoded });
            }
            _ = cancel.cancelled() => break Some(EncodeError::Cancelled),
            _ = ticker.tick() => {
                if last_advance.elapsed() >= req.stall_after {
                    break Some(EncodeError::Stalled { after: req.stall_after, stderr_tail: String::new() });
                }
                if let Some(limit) = req.timeout {
                    if started.elapsed() >= limit {
                        break Some(EncodeError::TimedOut { after: limit, stderr_tail: String::new() });
                    }
                }
            }
        }
    };
    let _ = child.start_kill();
    let _ = child.wait().await;
    let tail = stderr_task.await.map(|(t, _)| t.text()).unwrap_or_default();
    Err(match stop {
        Some(EncodeError::Stalled { after, .. }) => EncodeError::Stalled {
            after,
            stderr_tail: tail,
        },
        Some(EncodeError::TimedOut { after, .. }) => EncodeError::TimedOut {
            after,
            stderr_tail: tail,
        },
        _ => EncodeError::Cancelled,
    })
}

/// ffmpeg for `req`, started: argv only, its own process group, killed with its parent,
/// writing the measures' pictures to descriptor `pictures`.
fn spawn(
    req: &EncodeRequest<'_>,
    pictures: Option<RawFd>,
) -> Result<tokio::process::Child, EncodeError> {
    let mut command = tokio::process::Command::new(&req.tools.ffmpeg);
    command
        .args(encode_args(req, pictures))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    crate::tools_sys::die_with_parent(&mut command);
    if let Some(fd) = pictures {
        crate::tools_sys::keep_open(&mut command, fd);
    }
    command.spawn().map_err(|source| EncodeError::Spawn {
        path: req.tools.ffmpeg.display().to_string(),
        source,
    })
}

/// How an ffmpeg that exited by itself ended, by its status and its last error lines. ffmpeg
/// 5.1 exits 0 when writing the trailer or closing the file fails (a full disk at the very
/// end): its own words say so.
fn exited(status: std::process::ExitStatus, tail: &Tail) -> Result<Encoded, EncodeError> {
    let write_failed = tail
        .lines()
        .any(|l| WRITE_FAILURES.iter().any(|m| l.contains(m)));
    if status.success() && !write_failed {
        return Ok(Encoded {
            errors: tail.count(),
            error_tail: tail.text(),
            signal: None,
        });
    }
    let reason = tail
        .lines()
        .find(|l| WRITE_FAILURES.iter().any(|m| l.contains(m)))
        .or_else(|| tail.last_line())
        .map(str::to_owned)
        .unwrap_or_else(|| "it printed no error".to_owned());
    Err(EncodeError::Failed {
        status: status.to_string(),
        reason,
        stderr_tail: tail.text(),
    })
}

/// Read ffmpeg's stderr to its end: hand the input's header to `header_out` as soon as it is
/// complete, keep the last error lines (split on `\n` and `\r`) for the failure message, and
/// read the measuring output's lines into `analyser`.
async fn drain_stderr<R: AsyncRead + Unpin>(
    mut reader: R,
    mut header: HeaderReader,
    header_out: Option<watch::Sender<Option<Option<MediaInfo>>>>,
    mut analyser: Option<Analyser>,
) -> (Tail, Option<Signal>) {
    let mut tail = Tail::new(30);
    let mut buf = vec![0u8; 8192];
    let mut line = Vec::new();
    let mut keeping = false;
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let (Some(out), Some(info)) = (&header_out, header.feed(&buf[..n])) {
                    out.send_replace(Some(info));
                }
                for &b in &buf[..n] {
                    if b == b'\n' || b == b'\r' {
                        push_error_line(&mut tail, &mut keeping, &line);
                        if let Some(analyser) = &mut analyser {
                            analyser.line(&line);
                        }
                        line.clear();
                    } else if line.len() < 4096 {
                        line.push(b);
                    }
                }
            }
        }
    }
    push_error_line(&mut tail, &mut keeping, &line);
    let signal = match analyser {
        Some(mut a) => {
            a.line(&line);
            // It waits for the last pictures' measures.
            tokio::task::spawn_blocking(move || a.finish()).await.ok()
        }
        None => None,
    };
    (tail, signal)
}

/// Damage ffmpeg reports below the error level: a demuxer's corrupt packets and a decoder's
/// concealed errors (an MPEG-TS capture with garbage inside lost frames with only these said).
/// Matched on ffmpeg's own words after the level, never on a file name alone.
fn is_damage(level: &[u8], text: &[u8]) -> bool {
    let has = |needle: &[u8]| text.windows(needle.len()).any(|w| w == needle);
    match level {
        b"warning" => {
            text.starts_with(b"Packet corrupt")
                || has(b": corrupt input packet in stream ")
                || has(b": corrupt decoded frame in stream ")
        }
        b"info" => text.starts_with(b"concealing ") && has(b" errors in "),
        _ => false,
    }
}

/// Keep a line for the failure message if it is an error (or worse), or damage said at a
/// lower level (see [`is_damage`]), without its level tag:
/// `[libx264 @ 0x..] [error] text` -> `[libx264 @ 0x..] text`. A line without a tag continues
/// the message before it, and is kept when that one was.
fn push_error_line(tail: &mut Tail, keeping: &mut bool, line: &[u8]) {
    // The tag comes first, or after one `[context @ 0x..] ` prefix.
    let (prefix, rest) = match line.windows(2).position(|w| w == b"] ") {
        Some(end) if line.starts_with(b"[") && line[..end].windows(3).any(|w| w == b" @ ") => {
            line.split_at(end + 2)
        }
        _ => (&line[..0], line),
    };
    let level_end = rest
        .starts_with(b"[")
        .then(|| rest.windows(2).position(|w| w == b"] "))
        .flatten();
    let Some(end) = level_end else {
        if *keeping {
            tail.push(line);
        }
        return;
    };
    *keeping = matches!(&rest[1..end], b"error" | b"fatal" | b"panic")
        || is_damage(&rest[1..end], &rest[end + 2..]);
    if *keeping {
        let mut kept = prefix.to_vec();
        kept.extend_from_slice(&rest[end + 2..]);
        tail.push(&kept);
    }
}

/// A duration in seconds as a person reads it: tenths under ten seconds ("0.3"), whole
/// seconds above ("120").
fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{}", (s * 10.0).round() / 10.0)
    } else {
        format!("{}", s.round())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_said_as_a_person_reads_them() {
        assert_eq!(seconds(Duration::from_millis(300)), "0.3");
        assert_eq!(seconds(Duration::from_secs(120)), "120");
        let timed_out = EncodeError::TimedOut {
            after: Duration::from_millis(300),
            stderr_tail: String::new(),
        };
        assert!(timed_out.to_string().contains("the 0.3 s timeout"));
    }

    fn kept(lines: &[&str]) -> String {
        let mut tail = Tail::new(30);
        let mut keeping = false;
        for line in lines {
            push_error_line(&mut tail, &mut keeping, line.as_bytes());
        }
        tail.text()
    }

    #[test]
    fn only_errors_reach_the_failure_message() {
        assert_eq!(
            kept(&[
                "[info] Input #0, mpeg, from 'file:/a [error] b.mpg':",
                "[libx264 @ 0x55a4] [info] using SAR=1/1",
                "[warning] Multiple -c options",
                "      continuation of a warning",
                "[error] file:/a.mpg: Invalid data found when processing input",
                "second line of that error",
                "[mp4 @ 0x1] [fatal] could not write header",
                "[info] video:400kB audio:94kB",
            ]),
            "file:/a.mpg: Invalid data found when processing input\n\
             second line of that error\n\
             [mp4 @ 0x1] could not write header"
        );
    }

    /// Damage that ffmpeg says only as a warning (or, concealed, as information) counts: an
    /// MPEG-TS capture with garbage inside lost frames with nothing said at the error level.
    #[test]
    fn damage_said_below_the_error_level_is_kept() {
        assert_eq!(
            kept(&[
                "[mpegts @ 0x1] [warning] changing packet size to 192",
                "[mpegts @ 0x1] [warning] Packet corrupt (stream = 0, dts = 565200).",
                "[warning] file:/a.ts: corrupt input packet in stream 0",
                "[warning] file:/corrupt input packet in stream .ts: Multiple -c options",
                "[mpeg2video @ 0x2] [info] concealing 40 DC, 40 AC, 40 MV errors in P frame",
                "[info] concealing nothing: a name",
            ]),
            "[mpegts @ 0x1] Packet corrupt (stream = 0, dts = 565200).\n\
             file:/a.ts: corrupt input packet in stream 0\n\
             [mpeg2video @ 0x2] concealing 40 DC, 40 AC, 40 MV errors in P frame"
        );
    }
}
