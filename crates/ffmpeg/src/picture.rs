//! The tape report's picture measures, computed here from a small picture ffmpeg writes beside
//! the encode (YUV4MPEG, 8-bit 4:2:0, a quarter of the columns and every line), on another
//! thread than ffmpeg's: its levels, saturation, out-of-range share, temporal outliers and the
//! change from the frame before, as ffmpeg's `signalstats` defines them, on every fourth line.
//! Measured in ffmpeg itself they cost the encode about a tenth of its time on SD tapes (each
//! on ffmpeg's one filtering thread, and some 30 values a frame printed); here they cost the
//! encode only the small picture's writing.

use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc::Sender;
use videofarm_core::report::FrameStats;

/// Every fourth line of the picture is measured (as ffmpeg's own measures were, on a picture
/// scaled to a quarter of its height).
const LINE_STEP: usize = 4;
/// The longest header line, and the largest picture, a stream may announce.
const MOST_HEADER: usize = 1024;
const MOST_SIDE: usize = 16_384;

/// Read YUV4MPEG pictures from `from` to its end, sending each one's measures to `to` (8-bit;
/// the frame's time and field are ffmpeg's to say, see [`crate::analyse::Analyser`]). A
/// stream this cannot read (not 8-bit 4:2:0, a broken frame) stops the measures, never the
/// reading: ffmpeg must never block or fail on a pipe nobody reads.
/// Whatever happens here (a panic included), the pipe is read to its end.
pub fn read_pictures(from: impl Read, to: Sender<FrameStats>) {
    let mut from = BufReader::with_capacity(256 * 1024, from);
    let measured = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        measure_stream(&mut from, &to)
    }))
    .unwrap_or_else(|_| Err("a fault in measuring them".into()));
    if let Err(why) = measured {
        tracing::warn!("the tape report's pictures could not be read ({why}); measures stop here");
        let _ = std::io::copy(&mut from, &mut std::io::sink());
    }
}

fn measure_stream(from: &mut impl BufRead, to: &Sender<FrameStats>) -> Result<(), String> {
    let Some(header) = line(from)? else {
        return Ok(());
    };
    let (width, height) = stream_size(&header)?;
    let chroma = width.div_ceil(2) * height.div_ceil(2);
    let mut frame = vec![0u8; width * height + 2 * chroma];
    let mut measure = Measure::new(width, height);
    while let Some(head) = line(from)? {
        if !head.starts_with(b"FRAME") {
            return Err("a frame without its FRAME mark".into());
        }
        from.read_exact(&mut frame)
            .map_err(|e| format!("a frame cut short: {e}"))?;
        if to.send(measure.picture(&frame)).is_err() {
            return Err("nobody reads the measures".into());
        }
    }
    Ok(())
}

/// One line up to its `\n` (not included), `None` at the stream's end.
fn line(from: &mut impl BufRead) -> Result<Option<Vec<u8>>, String> {
    let mut line = Vec::new();
    (&mut *from)
        .take(MOST_HEADER as u64)
        .read_until(b'\n', &mut line)
        .map_err(|e| e.to_string())?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.pop() != Some(b'\n') {
        return Err("a header line too long or cut short".into());
    }
    Ok(Some(line))
}

/// The width and height a stream header announces, when its pictures are 8-bit 4:2:0.
fn stream_size(header: &[u8]) -> Result<(usize, usize), String> {
    let text = String::from_utf8_lossy(header);
    let mut words = text.split(' ');
    if words.next() != Some("YUV4MPEG2") {
        return Err("not a YUV4MPEG stream".into());
    }
    let (mut width, mut height) = (0, 0);
    for word in words {
        let (tag, value) = word.split_at(word.len().min(1));
        match tag {
            "W" => width = value.parse().map_err(|_| format!("width {value}"))?,
            "H" => height = value.parse().map_err(|_| format!("height {value}"))?,
            // 8-bit 4:2:0, whichever chroma siting it names.
            "C" if !matches!(value, "420" | "420jpeg" | "420mpeg2" | "420paldv") => {
                return Err(format!("pictures in C{value}, not 8-bit 4:2:0"));
            }
            _ => {}
        }
    }
    if !(1..=MOST_SIDE).contains(&width) || !(1..=MOST_SIDE).contains(&height) {
        return Err(format!("a picture of {width}x{height}"));
    }
    Ok((width, height))
}

/// The measures of a stream's pictures, in order: the one before is kept for the change.
struct Measure {
    width: usize,
    height: usize,
    /// The measured lines of the picture before (empty before the first).
    before: Vec<u8>,
    lines: Vec<u8>,
}

impl Measure {
    fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            before: Vec::new(),
            lines: Vec::new(),
        }
    }

    /// `frame`: the luma plane, then the two chroma planes, each a quarter of its size.
    fn picture(&mut self, frame: &[u8]) -> FrameStats {
        let (w, h) = (self.width, self.height);
        let (luma, chroma) = frame.split_at(w * h);
        let cw = w.div_ceil(2);
        let (u, v) = chroma.split_at(cw * h.div_ceil(2));
        // The lines measured, one after another: a picture a quarter of the height.
        self.lines.clear();
        for y in (0..h).step_by(LINE_STEP) {
            self.lines.extend_from_slice(&luma[y * w..(y + 1) * w]);
        }
        let rows = self.lines.len() / w;
        let count = self.lines.len() as f64;

        let mut histogram = [0u64; 256];
        let mut brng = 0u64;
        let in_range = |low: u8, high: u8, v: u8| (low..=high).contains(&v);
        for (r, row) in self.lines.chunks_exact(w).enumerate() {
            // Its chroma line: the one of the picture line it is; two luma samples a chroma one.
            let c = (r * LINE_STEP / 2) * cw;
            let chroma = u[c..c + cw].iter().zip(&v[c..c + cw]);
            for (pair, (&cu, &cv)) in row.chunks(2).zip(chroma) {
                let colour_out = !in_range(16, 240, cu) || !in_range(16, 240, cv);
                for &y in pair {
                    histogram[usize::from(y)] += 1;
                    brng += u64::from(colour_out || !in_range(16, 235, y));
                }
            }
        }
        let (ymin, ylow, yavg, yhigh, ymax) = levels(&histogram, count);

        // Saturation: the chroma's distance from grey, on every fourth chroma line.
        let (mut sat, mut sat_count) = (0.0, 0usize);
        for c in (0..h.div_ceil(2)).step_by(LINE_STEP) {
            let (u, v) = (&u[c * cw..(c + 1) * cw], &v[c * cw..(c + 1) * cw]);
            for (&cu, &cv) in u.iter().zip(v) {
                let (du, dv) = (f64::from(cu) - 128.0, f64::from(cv) - 128.0);
                sat += (du * du + dv * dv).sqrt();
            }
            sat_count += cw;
        }

        let ydif = if self.before.len() == self.lines.len() {
            let sum: u64 = self
                .lines
                .iter()
                .zip(&self.before)
                .map(|(a, b)| u64::from(a.abs_diff(*b)))
                .sum();
            sum as f64 / count
        } else {
            0.0
        };
        let tout = outliers(&self.lines, w, rows) as f64 / count;
        std::mem::swap(&mut self.before, &mut self.lines);
        FrameStats {
            ymin,
            ylow,
            yavg,
            yhigh,
            ymax,
            sat: if sat_count > 0 {
                sat / sat_count as f64
            } else {
                0.0
            },
            ydif,
            tout,
            brng: brng as f64 / count,
            depth: 8,
            ..FrameStats::default()
        }
    }
}

/// The least and greatest levels, the 10th and 90th percentiles, and the mean.
fn levels(histogram: &[u64; 256], count: f64) -> (f64, f64, f64, f64, f64) {
    let (low_at, high_at) = ((count * 0.1).round() as u64, (count * 0.9).round() as u64);
    let (mut min, mut low, mut high, mut max) = (None, None, None, 0);
    let (mut seen, mut total) = (0u64, 0u64);
    for (level, &n) in histogram.iter().enumerate() {
        if n == 0 {
            continue;
        }
        seen += n;
        total += n * level as u64;
        min.get_or_insert(level);
        if seen >= low_at {
            low.get_or_insert(level);
        }
        if seen >= high_at {
            high.get_or_insert(level);
        }
        max = level;
    }
    let f = |l: Option<usize>| l.unwrap_or(0) as f64;
    (
        f(min),
        f(low),
        total as f64 / count.max(1.0),
        f(high),
        max as f64,
    )
}

/// Samples that break from the lines one and two above and below them (one, next to the
/// edges), and so do their neighbours left and right: a speck on one line only (a dropout),
/// not an edge.
fn outliers(lines: &[u8], w: usize, rows: usize) -> u64 {
    // Breaks from `a` and `c`, on either side of `b`, more than they differ themselves.
    let breaks = |a: u8, b: u8, c: u8| {
        let (a, b, c) = (i32::from(a), i32::from(b), i32::from(c));
        ((a - b).abs() + (c - b).abs()) / 2 - (c - a).abs() > 4
    };
    let row = |r: usize| &lines[r * w..(r + 1) * w];
    // Whether each sample of line `r` breaks from the lines `j` above and below: each once.
    let mut broken = vec![true; w];
    let check = |r: usize, j: usize, broken: &mut [bool]| {
        for (((b, &a), &m), &c) in broken
            .iter_mut()
            .zip(row(r - j))
            .zip(row(r))
            .zip(row(r + j))
        {
            *b &= breaks(a, m, c);
        }
    };
    let mut found = 0;
    for r in 1..rows.saturating_sub(1) {
        broken.fill(true);
        check(r, 1, &mut broken);
        // Next to the top and bottom edges, only the lines one away.
        if r >= 2 && r + 2 < rows {
            check(r, 2, &mut broken);
        }
        found += broken
            .windows(3)
            .filter(|three| three.iter().all(|&b| b))
            .count() as u64;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(width: usize, height: usize, luma: impl Fn(usize, usize) -> u8) -> Vec<u8> {
        let mut frame: Vec<u8> = (0..height)
            .flat_map(|y| (0..width).map(move |x| (x, y)))
            .map(|(x, y)| luma(x, y))
            .collect();
        frame.resize(
            frame.len() + 2 * width.div_ceil(2) * height.div_ceil(2),
            128,
        );
        frame
    }

    fn stream(width: usize, height: usize, frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = format!("YUV4MPEG2 W{width} H{height} F25:1 Ip A1:1 C420jpeg\n").into_bytes();
        for f in frames {
            out.extend_from_slice(b"FRAME\n");
            out.extend_from_slice(f);
        }
        out
    }

    fn measured(bytes: &[u8]) -> Vec<FrameStats> {
        let (to, from) = std::sync::mpsc::channel();
        read_pictures(bytes, to);
        from.into_iter().collect()
    }

    #[test]
    fn levels_change_and_specks_are_measured_on_every_fourth_line() {
        let (w, h) = (16, 32);
        let ramp = frame(w, h, |x, _| 16 + 10 * x as u8);
        // The same, with a white speck three samples wide on a measured line (line 12).
        let speck = frame(w, h, |x, y| {
            if y == 12 && (4..7).contains(&x) {
                235
            } else {
                16 + 10 * x as u8
            }
        });
        let pictures = measured(&stream(w, h, &[ramp.clone(), speck, ramp]));
        assert_eq!(pictures.len(), 3);
        let first = &pictures[0];
        assert_eq!((first.ymin, first.ymax), (16.0, 166.0));
        assert_eq!((first.ylow, first.yhigh), (26.0, 156.0));
        assert_eq!(first.yavg, 91.0);
        assert_eq!(
            (first.ydif, first.tout, first.brng, first.sat),
            (0.0, 0.0, 0.0, 0.0)
        );
        let second = &pictures[1];
        // Of the 8 x 16 samples measured, the middle one of the three breaks from its lines.
        assert_eq!(second.tout, 1.0 / 128.0);
        assert!(second.ydif > 0.0 && pictures[2].ydif == second.ydif);
        assert_eq!(pictures[2].tout, 0.0);
    }

    #[test]
    fn out_of_range_and_colour_are_measured() {
        let (w, h) = (8, 8);
        let mut f = frame(w, h, |_, y| if y < 4 { 5 } else { 100 });
        // Chroma all at 128 + 30 (U) and 128 + 40 (V): saturation 50.
        let luma = w * h;
        let chroma = w.div_ceil(2) * h.div_ceil(2);
        f[luma..luma + chroma].fill(158);
        f[luma + chroma..].fill(168);
        let p = &measured(&stream(w, h, &[f]))[0];
        assert_eq!(p.brng, 0.5);
        assert_eq!(p.sat, 50.0);
    }

    #[test]
    fn a_stream_it_cannot_read_is_read_to_its_end_and_measures_nothing() {
        for header in [
            "YUV4MPEG2 W8 H8 C422\n",
            "YUV4MPEG2 W8 H8 C420p10\n",
            "YUV4MPEG2 W0 H8\n",
            "RIFF\n",
        ] {
            let mut bytes = header.as_bytes().to_vec();
            bytes.extend(std::iter::repeat_n(7u8, 100_000));
            assert!(measured(&bytes).is_empty(), "{header}");
        }
        // A frame cut short: the ones before it count.
        let f = frame(8, 8, |_, _| 50);
        let mut bytes = stream(8, 8, &[f.clone(), f]);
        bytes.truncate(bytes.len() - 10);
        assert_eq!(measured(&bytes).len(), 1);
    }
}
