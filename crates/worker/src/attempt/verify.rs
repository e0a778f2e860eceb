//! Verifying an encoded file before it may appear: what each kind of work must prove (a whole
//! output, a chunk, a joined tape).

use crate::attempt::plan::{Check, Encode};
use crate::attempt::{Attempt, End};
use crate::checks::check_media;
use crate::paths::Confined;
use crate::publish::TempOutput;
use videofarm_core::treat::Trim;
use videofarm_core::Failure;
use videofarm_ffmpeg::lossless::prove_lossless;
use videofarm_ffmpeg::{
    decode_check, probe, probe_output, sampled_ssim, verify_output, ProbeError,
};

/// What verification learned of an encoded file, for its report.
pub(crate) struct Verified {
    pub(crate) output_info: videofarm_ffmpeg::MediaInfo,
    pub(crate) ssim: Option<f64>,
    pub(crate) output_size: u64,
    /// A preservation master's per-frame MD5s (`framemd5`), proven equal to its source's.
    pub(crate) frame_md5s: Option<String>,
}

impl Attempt {
    /// Prove the encoded file is what `work` must produce (readable, the right streams and
    /// length, decoding cleanly, and as close to its source as the profile asks): what
    /// publishing needs to know of it, or the end of the attempt.
    pub(crate) async fn verify_encoded(
        &self,
        place: &Confined,
        profile: &videofarm_core::Profile,
        work: &Encode,
        input_info: &videofarm_ffmpeg::MediaInfo,
        temp: &TempOutput,
    ) -> Result<Verified, End> {
        let check = &work.check;
        let spec = &place.spec;
        let extension = match check {
            Check::Chunk { .. } => crate::split::CHUNK_EXTENSION,
            _ => profile.extension.as_str(),
        };
        let output_info = match probe_output(&self.settings.tools, &temp.io_path(), extension).await
        {
            Ok(info) => info,
            Err(e) => {
                return Err(End::Failed(Failure::retryable(
                    format!(
                        "{}: the encoded file could not be read back ({e})",
                        spec.input.display()
                    ),
                    "",
                )))
            }
        };
        let cut = work.treatment.and_then(|t| t.trim);
        if let Err(why) = self
            .verify(
                profile,
                (check, cut),
                place,
                (input_info, &output_info),
                temp,
            )
            .await
        {
            return Err(End::Failed(Failure::retryable(
                format!(
                    "{}: the encoded file failed verification: {why}",
                    spec.input.display()
                ),
                "",
            )));
        }
        if self.settings.decode_check && !matches!(check, Check::Chunk { .. }) {
            // A tape is decoded once, joined; its chunks are checked by frame count.
            if let Err(e) = decode_check(
                &self.settings.tools,
                &temp.io_path(),
                !profile.copies_audio(),
            )
            .await
            {
                return Err(End::Failed(Failure::retryable(
                    format!(
                        "{}: the encoded file does not decode cleanly ({e})",
                        spec.input.display()
                    ),
                    "",
                )));
            }
        }
        let frame_md5s = match (profile.lossless, check) {
            (true, Check::Whole) => Some(self.prove_master(place, temp).await?),
            _ => None,
        };
        let ssim = match (profile.min_ssim, check) {
            (Some(min), Check::Whole | Check::Join { .. }) => {
                // On a joined tape this compares across the seams, where a split could hurt.
                let duration = output_info.duration_s.unwrap_or(0.0);
                match sampled_ssim(&self.settings.tools, &place.input_io(), &temp.io_path(), (duration, cut.map_or(0.0, |t| t.lead_s())))
                    .await
                {
                    Ok(score) if score >= min => Some(score),
                    Ok(score) => {
                        return Err(End::Failed(Failure::permanent(format!(
                            "{}: the quality check failed: SSIM {score:.4} against the source, below the profile's min_ssim {min}",
                            spec.input.display()
                        ))))
                    }
                    Err(why) => {
                        return Err(End::Failed(Failure::retryable(
                            format!("{}: the quality check could not run: {why}", spec.input.display()),
                            "",
                        )))
                    }
                }
            }
            _ => None,
        };
        let output_size = temp.size();
        Ok(Verified {
            output_info,
            ssim,
            output_size,
            frame_md5s,
        })
    }

    /// A preservation master's per-frame MD5s, once they are proven equal to its source's.
    async fn prove_master(&self, place: &Confined, temp: &TempOutput) -> Result<String, End> {
        prove_lossless(&self.settings.tools, &place.input_io(), &temp.io_path())
            .await
            .map_err(|why| {
                // The same encoder gives the same frames: trying again would not help.
                End::Failed(Failure::permanent(format!(
                    "{}: the master failed verification: {why}",
                    place.spec.input.display()
                )))
            })
    }

    /// Check an encoded file as `check` says; the error is one plain sentence.
    /// `cut`: the blank ends cut from the tape, which the output must be without.
    async fn verify(
        &self,
        profile: &videofarm_core::Profile,
        (check, cut): (&Check, Option<Trim>),
        place: &Confined,
        (input_info, output_info): (&videofarm_ffmpeg::MediaInfo, &videofarm_ffmpeg::MediaInfo),
        temp: &TempOutput,
    ) -> Result<(), String> {
        let tools = &self.settings.tools;
        let count = || async {
            videofarm_ffmpeg::packets::count_video_frames(tools, &temp.io_path())
                .await
                .map_err(|e| format!("its frames could not be counted ({e})"))
        };
        match check {
            Check::Whole => verify_output(profile, &kept(input_info, cut), output_info),
            Check::Chunk { frames } => {
                videofarm_ffmpeg::verify_chunk(profile, output_info, count().await?, *frames)
            }
            Check::Join { frames, .. } => {
                // The tape against its source, not against the chunk list ffmpeg read first.
                let source = self
                    .probe_input(&place.input_io(), &place.spec.input)
                    .await
                    .map_err(|f| f.reason)?;
                // Its blank ends cut as its whole encode's would be.
                verify_output(profile, &kept(&source, cut), output_info)?;
                let got = count().await?;
                if got != *frames {
                    return Err(format!(
                        "the joined video has {got} frames, the source gives {frames}"
                    ));
                }
                Ok(())
            }
        }
    }

    /// ffprobe the input (read through `io`, named `input`): a file it cannot read, or one
    /// without video, fails the job for good.
    pub(crate) async fn probe_input(
        &self,
        io: &std::path::Path,
        input: &std::path::Path,
    ) -> Result<videofarm_ffmpeg::MediaInfo, Failure> {
        let info = match probe(&self.settings.tools, io).await {
            Ok(info) => info,
            Err(ProbeError::Unreadable(why)) => {
                let why = why.replace(&*io.to_string_lossy(), &input.display().to_string());
                return Err(Failure::permanent(format!(
                    "{}: not a video ffprobe can read ({why})",
                    input.display()
                )));
            }
            Err(e) => {
                let why = e
                    .to_string()
                    .replace(&*io.to_string_lossy(), &input.display().to_string());
                return Err(Failure::retryable(
                    format!("{}: {why}", input.display()),
                    "",
                ));
            }
        };
        check_media(input, &info)?;
        Ok(info)
    }
}

/// What the output of `input` must be like once its blank ends are cut (`cut`): as long as
/// the frames kept.
fn kept(input: &videofarm_ffmpeg::MediaInfo, cut: Option<Trim>) -> videofarm_ffmpeg::MediaInfo {
    let mut info = input.clone();
    if let Some(t) = cut.filter(|t| t.is_valid()) {
        info.duration_s = Some(t.kept_s());
    }
    info
}
