//! The packets a split plan is made from, read from MPEG-PS files ffmpeg's own muxers wrote:
//! every packet has its timestamp (the muxer writes one only where a frame starts a PES
//! packet; the last reference frame's is then missing unless the demuxer fills it in).

// Only its ffmpeg runner is used here.
#[allow(dead_code)]
mod common;

use common::ffmpeg;
use videofarm_ffmpeg::packets::video_packets;
use videofarm_ffmpeg::Tools;

#[tokio::test]
async fn every_packet_of_an_mpeg_program_stream_has_a_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::locate(None, None).expect("ffmpeg is installed");
    for muxer in ["mpeg", "dvd", "vob"] {
        let path = dir.path().join(format!("capture.{muxer}"));
        let out = path.to_str().unwrap();
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine",
            "-t",
            "12",
            "-c:v",
            "mpeg2video",
            "-c:a",
            "mp2",
            "-f",
            muxer,
            out,
        ]);
        let read = video_packets(&tools, &path)
            .await
            .expect("the packets are read");
        assert_eq!(read.packets.len(), 300, "{muxer}");
        let mut pts: Vec<i64> = read
            .packets
            .iter()
            .map(|p| {
                p.pts
                    .unwrap_or_else(|| panic!("{muxer}: a packet without a pts"))
            })
            .collect();
        pts.sort_unstable();
        // One frame every 3600 ticks of 90 kHz, none missing, none twice.
        assert!(
            pts.windows(2).all(|w| w[1] - w[0] == 3600),
            "{muxer}: {pts:?}"
        );
    }
}
