//! Verifying an encoded file before it may appear, and publishing it: what each kind of work
//! must prove (a whole output, a chunk, a joined tape), then the fenced, atomic rename.

use crate::attempt::{Attempt, End};
use crate::checks::check_media;
use crate::parent::{mark_damaged, Check, Encode};
use crate::paths::Confined;
use crate::publish::TempOutput;
use std::time::Instant;
use videofarm_core::{Failure, SuccessReport};
use videofarm_ffmpeg::{
    decode_check, probe, probe_output, sampled_ssim, verify_output, ProbeError,
};

impl Attempt {
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn verify_and_publish(
        &self,
        place: &Confined,
        profile: &videofarm_core::Profile,
        work: &Encode,
        warnings: Vec<String>,
        input_info: &videofarm_ffmpeg::MediaInfo,
        temp: TempOutput,
        input_size: u64,
        started: Instant,
    ) -> End {
        let (check, note) = (&work.check, &work.note);
        let spec = &place.spec;
        let extension = match check {
            Check::Chunk { .. } => crate::split::CHUNK_EXTENSION,
            _ => profile.extension.as_str(),
        };
        let output_info = match probe_output(&self.settings.tools, &temp.io_path(), extension).await
        {
            Ok(info) => info,
            Err(e) => {
                return End::Failed(Failure::retryable(
                    format!(
                        "{}: the encoded file could not be read back ({e})",
                        spec.input.display()
                    ),
                    "",
                ))
            }
        };
        if let Err(why) = self
            .verify(profile, check, place, input_info, &output_info, &temp)
            .await
        {
            return End::Failed(Failure::retryable(
                format!(
                    "{}: the encoded file failed verification: {why}",
                    spec.input.display()
                ),
                "",
            ));
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
                return End::Failed(Failure::retryable(
                    format!(
                        "{}: the encoded file does not decode cleanly ({e})",
                        spec.input.display()
                    ),
                    "",
                ));
            }
        }
        let ssim = match (profile.min_ssim, check) {
            (Some(min), Check::Whole | Check::Join { .. }) => {
                // On a joined tape this compares across the seams, where a split could hurt.
                let duration = output_info.duration_s.unwrap_or(0.0);
                match sampled_ssim(&self.settings.tools, &place.input_io(), &temp.io_path(), duration)
                    .await
                {
                    Ok(score) if score >= min => Some(score),
                    Ok(score) => {
                        return End::Failed(Failure::permanent(format!(
                            "{}: the quality check failed: SSIM {score:.4} against the source, below the profile's min_ssim {min}",
                            spec.input.display()
                        )))
                    }
                    Err(why) => {
                        return End::Failed(Failure::retryable(
                            format!("{}: the quality check could not run: {why}", spec.input.display()),
                            "",
                        ))
                    }
                }
            }
            _ => None,
        };
        let output_size = std::fs::metadata(temp.io_path())
            .map(|m| m.len())
            .unwrap_or(0);

        // Fencing: only the current lease holder may publish.
        if let Err(e) = self.queue.begin_publish(&self.lease).await {
            return if e.voids_lease() {
                End::Void(self.void_reason(e))
            } else {
                End::Failed(Failure::retryable(
                    format!("could not confirm the lease before publishing: {e}"),
                    "",
                ))
            };
        }
        if let (Check::Chunk { .. }, Some(chunk), false) = (check, &spec.chunk, warnings.is_empty())
        {
            // Before the chunk appears: its tape's join must find the damage it saw.
            mark_damaged(place, chunk, &warnings);
        }
        if let Err(failure) = temp.publish(&place.output_io(), &spec.output, spec.overwrite) {
            return End::Failed(failure);
        }
        // Every rename, logged: how a soak proves that no output was written twice.
        tracing::info!(output = %spec.output.display(), "published");
        if let Check::Join { work, .. } = check {
            // The tape is in place: its chunks are no longer needed.
            if let Err(e) = std::fs::remove_dir_all(work) {
                tracing::warn!(error = %e, "could not remove the split work folder");
            }
        }
        End::Done(SuccessReport {
            input_size,
            output_size,
            duration_s: output_info.duration_s.unwrap_or(0.0),
            elapsed_s: match check {
                // A split tape took from its split to its join, across every worker.
                Check::Join { started_ms, .. } if *started_ms > 0 => {
                    let now_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(0);
                    (now_ms - started_ms).max(0) as f64 / 1000.0
                }
                _ => started.elapsed().as_secs_f64(),
            },
            already_done: false,
            note: note.clone(),
            warnings,
            frames: 0,
            ssim,
        })
    }

    /// Check an encoded file as `check` says; the error is one plain sentence.
    async fn verify(
        &self,
        profile: &videofarm_core::Profile,
        check: &Check,
        place: &Confined,
        input_info: &videofarm_ffmpeg::MediaInfo,
        output_info: &videofarm_ffmpeg::MediaInfo,
        temp: &TempOutput,
    ) -> Result<(), String> {
        let tools = &self.settings.tools;
        let count = || async {
            videofarm_ffmpeg::packets::count_video_frames(tools, &temp.io_path())
                .await
                .map_err(|e| format!("its frames could not be counted ({e})"))
        };
        match check {
            Check::Whole => verify_output(profile, input_info, output_info),
            Check::Chunk { frames } => {
                let codec = output_info.videos().next().map(|v| v.codec_name.as_str());
                if codec != Some(profile.video_codec.as_str()) {
                    return Err(format!(
                        "the chunk's video is {}, not {}",
                        codec.unwrap_or("missing"),
                        profile.video_codec
                    ));
                }
                let got = count().await?;
                if got != *frames {
                    return Err(format!("the chunk has {got} frames, not {frames}"));
                }
                Ok(())
            }
            Check::Join { frames, .. } => {
                // The tape against its source, not against the chunk list ffmpeg read first.
                let source = self
                    .probe_input(&place.input_io(), &place.spec.input)
                    .await
                    .map_err(|f| f.reason)?;
                verify_output(profile, &source, output_info)?;
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
