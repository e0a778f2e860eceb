//! The input's description that ffmpeg prints on stderr before it encodes (`Input #0, ...`,
//! `Duration: ...`, one `Stream #0:N: Type: codec ...` line per stream), read into the same
//! [`MediaInfo`] ffprobe gives. It spares every job an ffprobe run of the input: on Debian's
//! ffmpeg each run costs ~0.1 s of CPU just to load its ~215 shared libraries, as much as a
//! whole stream copy of a short clip.
//!
//! ffmpeg runs with `-loglevel level+info`, so every line starts with its level. The header is
//! taken only after the exact `from '<our url>':` text (a file name may hold newlines or text
//! that looks like a header line) and only up to `Stream mapping:` / `Output #0`. Anything
//! unexpected (no end, no stream, a stream index twice) gives `None`, and the caller falls back
//! to ffprobe: the parser can make a job cheaper, never less checked.

use crate::probe::{MediaInfo, StreamInfo};

/// Collects stderr until the input's header is complete. Bounded: a header longer than
/// `LIMIT` bytes is given up on (the caller then uses ffprobe).
#[derive(Debug)]
pub(crate) struct HeaderReader {
    url: Vec<u8>,
    buf: Vec<u8>,
    finished: bool,
}

const LIMIT: usize = 1 << 20;

impl HeaderReader {
    pub(crate) fn new(url: &[u8]) -> Self {
        Self {
            url: url.to_vec(),
            buf: Vec::new(),
            finished: false,
        }
    }

    /// Feed raw stderr bytes; returns the header once, when its end has been seen.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Option<Option<MediaInfo>> {
        if self.finished {
            return None;
        }
        self.buf.extend_from_slice(bytes);
        if let Some(info) = parse(&self.buf, &self.url) {
            self.finished = true;
            self.buf = Vec::new();
            return Some(info);
        }
        if self.buf.len() > LIMIT {
            self.finished = true;
            self.buf = Vec::new();
            return Some(None);
        }
        None
    }
}

/// `None` while the header is not complete yet; `Some(None)` when it is complete but not
/// understood; `Some(Some(info))` when read.
pub(crate) fn parse(stderr: &[u8], url: &[u8]) -> Option<Option<MediaInfo>> {
    let mut needle = b" from '".to_vec();
    needle.extend_from_slice(url);
    needle.extend_from_slice(b"':\n");
    // ffmpeg prints some names differently (control characters become '?'): once the header
    // is over without our URL in it, say so now, so ffprobe runs while ffmpeg encodes.
    let over = || {
        (find(stderr, b"\n[info] Stream mapping:").is_some()
            || find(stderr, b"\n[info] Output #").is_some())
        .then_some(None)
    };
    let Some(start) = find(stderr, b"[info] Input #0, ") else {
        return over();
    };
    let Some(at) = find(&stderr[start..], &needle) else {
        return over();
    };
    let body_at = start + at + needle.len();
    let body = &stderr[body_at..];
    let mut info = MediaInfo::default();
    // "Input #0, FORMAT, from '...'": the demuxer's name.
    let format = &stderr[start + b"[info] Input #0, ".len()..start + at];
    info.format_name = std::str::from_utf8(format)
        .ok()
        .map(|f| f.trim_end_matches(',').trim().to_owned());
    let mut complete = false;
    let mut ok = true;
    for line in body.split(|&b| b == b'\n') {
        // Lines logged by a demuxer or decoder ("[mpeg @ 0x..] [warning] ...") are not header.
        let Some(text) = line.strip_prefix(b"[info] ") else {
            continue;
        };
        let Ok(text) = std::str::from_utf8(text) else {
            continue;
        };
        if text.starts_with("Stream mapping:") || text.starts_with("Output #") {
            complete = true;
            break;
        }
        let trimmed = text.trim_start();
        let indent = text.len() - trimmed.len();
        if indent == 2 {
            if let Some(rest) = trimmed.strip_prefix("Duration: ") {
                info.duration_s = parse_duration(rest);
                continue;
            }
        }
        if indent == 2 || indent == 4 {
            if let Some(rest) = trimmed.strip_prefix("Stream #0:") {
                match parse_stream(rest) {
                    // A stream listed under two programs is the same stream.
                    Some(s) if info.streams.iter().any(|o| o.index == s.index) => {
                        ok &= info.streams.contains(&s);
                    }
                    Some(s) => info.streams.push(s),
                    None => ok = false,
                }
            }
        }
    }
    if !complete {
        return None;
    }
    info.streams.sort_by_key(|s| s.index);
    let contiguous = info
        .streams
        .iter()
        .enumerate()
        .all(|(i, s)| s.index as usize == i);
    Some((ok && contiguous && !info.streams.is_empty()).then_some(info))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `00:01:02.50, start: ...` -> 62.5; `N/A` -> None.
fn parse_duration(text: &str) -> Option<f64> {
    let stamp = text.split(',').next()?.trim();
    let mut parts = stamp.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    let seconds =
        h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?;
    (seconds.is_finite() && seconds > 0.0).then_some(seconds)
}

/// `1[0x1c0](eng): Audio: mp2, 48000 Hz, ...` (after `Stream #0:`).
fn parse_stream(text: &str) -> Option<StreamInfo> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let index = text[..digits].parse().ok()?;
    let rest = &text[text.find(": ")? + 2..];
    let (kind, rest) = rest.split_once(": ")?;
    let codec_type = match kind {
        "Video" | "Audio" | "Subtitle" | "Data" | "Attachment" => kind.to_ascii_lowercase(),
        _ => return None,
    };
    let codec_name = rest
        .split([' ', ','])
        .next()
        .filter(|c| !c.is_empty())?
        .to_owned();
    Some(StreamInfo {
        index,
        codec_type,
        codec_name,
        attached_pic: rest.contains(" (attached pic)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &[u8] = b"file:/in/tape.mpg";

    fn header(body: &str) -> Vec<u8> {
        format!("[info] Input #0, mpeg, from 'file:/in/tape.mpg':\n{body}").into_bytes()
    }

    #[test]
    fn reads_a_tape_capture_header() {
        let text = header(
            "[info]   Duration: 00:01:02.50, start: 0.556711, bitrate: 4347 kb/s\n\
             [info]   Stream #0:0[0x1e0]: Video: mpeg2video (Main), yuv420p(tv, top first), 720x480 [SAR 1:1 DAR 3:2], 29.97 fps\n\
             [info]     Side data:\n\
             [info]       cpb: bitrate max/min/avg: 0/0/0 buffer size: 2277376 vbv_delay: N/A\n\
             [info]   Stream #0:1[0x1c0](eng): Audio: mp2, 48000 Hz, stereo, s16p, 384 kb/s\n\
             [warning] Multiple -c options specified\n\
             [info]   Stream #0:2: Subtitle: dvd_subtitle\n\
             [info]   Stream #0:3: Video: mjpeg (Baseline), yuvj420p, 600x600, 90k tbn (attached pic)\n\
             [info] Stream mapping:\n",
        );
        let info = parse(&text, URL).unwrap().unwrap();
        assert_eq!(info.duration_s, Some(62.5));
        assert_eq!(
            info.format_name.as_deref(),
            Some("mpeg"),
            "the demuxer, without its comma"
        );
        let kinds: Vec<_> = info
            .streams
            .iter()
            .map(|s| (s.codec_type.as_str(), s.codec_name.as_str(), s.attached_pic))
            .collect();
        assert_eq!(
            kinds,
            [
                ("video", "mpeg2video", false),
                ("audio", "mp2", false),
                ("subtitle", "dvd_subtitle", false),
                ("video", "mjpeg", true)
            ]
        );
    }

    #[test]
    fn waits_for_the_end_of_the_header() {
        let text = header("[info]   Duration: 00:00:02.00, start: 0, bitrate: 1 kb/s\n");
        assert_eq!(parse(&text, URL), None);
        let mut reader = HeaderReader::new(URL);
        assert_eq!(reader.feed(&text), None);
        let got = reader
            .feed(b"[info]   Stream #0:0: Video: h264, yuv420p\n[info] Output #0, matroska, to 'x':\n")
            .unwrap()
            .unwrap();
        assert_eq!(got.streams.len(), 1);
        assert_eq!(reader.feed(b"more"), None, "the header is given once");
    }

    #[test]
    fn a_file_name_cannot_fake_streams() {
        // The name holds a newline and a line that looks like a stream; only what follows the
        // exact URL counts.
        let url = b"file:/in/x\n[info]   Stream #0:0: Video: h264\n.mpg";
        let mut text = b"[info] Input #0, mpeg, from '".to_vec();
        text.extend_from_slice(url);
        text.extend_from_slice(
            b"':\n[info]   Duration: N/A, bitrate: N/A\n[info]   Stream #0:0: Audio: mp2, 48000 Hz\n[info] Stream mapping:\n",
        );
        let info = parse(&text, url).unwrap().unwrap();
        assert_eq!(info.duration_s, None);
        assert_eq!(info.streams.len(), 1);
        assert_eq!(info.streams[0].codec_type, "audio");
    }

    #[test]
    fn a_name_ffmpeg_prints_differently_is_given_up_on_at_the_end_of_the_header() {
        // ffmpeg shows the control character in the name as '?'.
        let url = b"file:/in/a\x01b.mpg";
        let text =
            b"[info] Input #0, mpeg, from 'file:/in/a?b.mpg':\n[info]   Stream #0:0: Video: h264\n";
        let mut reader = HeaderReader::new(url);
        assert_eq!(reader.feed(text), None, "not over yet");
        assert_eq!(reader.feed(b"[info] Stream mapping:\n"), Some(None));
    }

    #[test]
    fn anything_odd_falls_back_to_ffprobe() {
        // Index 1 without 0; a type we do not know; the same index twice, differently.
        for body in [
            "[info]   Stream #0:1: Video: h264\n",
            "[info]   Stream #0:0: Thing: h264\n",
            "[info]   Stream #0:0: Video: h264\n[info]   Stream #0:0: Audio: aac\n",
            "",
        ] {
            let text = header(&format!("{body}[info] Stream mapping:\n"));
            assert_eq!(parse(&text, URL), Some(None), "{body}");
        }
    }

    #[test]
    fn programs_list_a_stream_more_than_once() {
        let text = header(
            "[info]   Program 1\n\
             [info]     Stream #0:0[0x100]: Video: h264 (High), yuv420p\n\
             [info]     Stream #0:1[0x101]: Audio: aac (LC), 48000 Hz\n\
             [info]   Program 2\n\
             [info]     Stream #0:0[0x100]: Video: h264 (High), yuv420p\n\
             [info] Stream mapping:\n",
        );
        let info = parse(&text, URL).unwrap().unwrap();
        assert_eq!(info.streams.len(), 2);
    }
}

/// Fuzzing the reader of ffmpeg's header, where ffmpeg's stderr (which repeats the input's
/// name and metadata, any bytes at all) enters the farm.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use videofarm_fuzzing::text;

    const URL: &[u8] = b"file:/media/in/a.mpg";

    /// Lines that look like ffmpeg's, with hostile parts.
    fn line() -> impl Strategy<Value = String> {
        prop_oneof![
            text().prop_map(|t| format!("[info]   Duration: {t}\n")),
            (0u32..4, text()).prop_map(|(i, t)| format!("[info]   Stream #0:{i}: {t}\n")),
            text().prop_map(|t| format!("[info] {t}\n")),
            Just("[info] Stream mapping:\n".to_owned()),
            text(),
        ]
    }

    proptest! {
        #![proptest_config(videofarm_fuzzing::config())]

        #[test]
        fn any_stderr(data in videofarm_fuzzing::bytes(b"[info] Input #0, mpeg, from 'file:/media/in/a.mpg':\n")) {
            let _ = parse(&data, URL);
            let mut reader = HeaderReader::new(URL);
            for piece in data.chunks(7) {
                if reader.feed(piece).is_some() {
                    break;
                }
            }
        }

        #[test]
        fn a_header_of_hostile_lines(lines in proptest::collection::vec(line(), 0..12)) {
            let stderr = format!(
                "[info] Input #0, mpeg, from 'file:/media/in/a.mpg':\n{}[info] Stream mapping:\n",
                lines.concat()
            );
            let _ = parse(stderr.as_bytes(), URL);
        }
    }
}
