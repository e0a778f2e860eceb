//! The encode step: ffmpeg into a fresh temporary file while the lease is renewed, the input
//! described from ffmpeg's own header as it starts.

use super::{Attempt, End};
use crate::attempt::plan::Encode;
use crate::checks::check_media;
use crate::paths::Confined;
use crate::publish::{remove_stale, TempOutput};
use std::sync::OnceLock;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use videofarm_core::{Event, Failure, Progress};
use videofarm_ffmpeg::{encode, EncodeError, EncodeRequest};

/// What an encode left for verification.
pub(crate) struct Encoded {
    pub(crate) temp: TempOutput,
    pub(crate) input_info: videofarm_ffmpeg::MediaInfo,
    pub(crate) warnings: Vec<String>,
    pub(crate) frames: u64,
    /// What the measuring output found (for the tape report).
    pub(crate) signal: Option<videofarm_core::report::Signal>,
}

impl Attempt {
    /// Run ffmpeg into a fresh temporary file while the lease is renewed; the input is
    /// described from ffmpeg's own header as it starts. Ends the attempt when ffmpeg fails, the
    /// worker stops, or the queue voids the lease.
    pub(crate) async fn encode_under_lease(
        &self,
        place: &Confined,
        work: &Encode,
        abort: &CancellationToken,
    ) -> Result<Encoded, End> {
        let settings = &self.settings;
        let spec = &place.spec;
        let input_io = place.input_io();
        let temp = self.fresh_temp(place, work).map_err(End::Failed)?;
        // ffmpeg writes through the open temporary file when the extension names a muxer it
        // can be told; otherwise through its name in the checked folder.
        let format = videofarm_ffmpeg::muxer_for(&work.extension);
        let temp_io = match format {
            Some(_) => temp.io_path(),
            None => temp.path().to_owned(),
        };
        // ffmpeg's messages name the paths it was given: show the user's instead.
        let shown = |text: &str| {
            text.replace(
                &*input_io.to_string_lossy(),
                &spec.input.display().to_string(),
            )
            .replace(
                &*temp_io.to_string_lossy(),
                &spec.output.display().to_string(),
            )
        };

        // The encode stops when the worker aborts, the queue voids the lease, or the input
        // turns out not to be a video.
        let stop = abort.child_token();
        let (progress_tx, progress_rx) = watch::channel(Progress::default());
        // The heartbeat ends when the encode does (`done`) or when it voids the lease itself.
        let done = stop.child_token();
        let heartbeat = self.heartbeat(progress_rx, done.clone(), stop.clone());
        let duration = OnceLock::new();
        if let Some(known) = work.duration_s {
            let _ = duration.set(known);
        }
        let (header_tx, mut header_rx) = watch::channel(None);
        let request = EncodeRequest {
            tools: &settings.tools,
            input_args: &work.input_args,
            input: &work.input,
            output: &temp_io,
            format,
            args: &work.args,
            duration_s: &duration,
            input_info: Some(header_tx),
            stall_after: settings.stall_after,
            timeout: settings.timeout,
            analysis: work.analysis.as_deref(),
        };
        let encoding = async {
            let result = encode(&request, &progress_tx, &stop).await;
            drop(request);
            done.cancel();
            result
        };
        // The input's description comes from the header ffmpeg prints before it encodes, which
        // spares every job an ffprobe run (~0.1 s of CPU each). ffprobe only when that header is
        // missing or odd: ffmpeg could not open the input (ffprobe then says why in plain words),
        // or printed something the reader does not know.
        let probing = async {
            let header = match header_rx.wait_for(Option::is_some).await {
                Ok(header) => header.clone().flatten(),
                Err(_) => None,
            };
            let probed = match header {
                Some(info) => check_media(&spec.input, &info).map(|()| info),
                None => self.probe_input(&input_io, &spec.input).await,
            };
            match &probed {
                Ok(info) => {
                    if let Some(d) = info.duration_s {
                        let _ = duration.set(d);
                    }
                    self.started(spec, duration.get().copied().or(info.duration_s));
                }
                Err(_) => stop.cancel(),
            }
            probed
        };
        let (mut encoded, void, probed) = tokio::join!(encoding, heartbeat, probing);
        stop.cancel();
        let input_info = probed.map_err(End::Failed)?;
        let signal = encoded.as_mut().ok().and_then(|e| e.signal.take());
        let damage = self.judge(place, encoded, void, &shown)?;
        let frames = progress_tx.borrow().frames;
        Ok(Encoded {
            temp,
            input_info,
            warnings: [work.warnings.clone(), damage]
                .into_iter()
                .flatten()
                .collect(),
            frames,
            signal,
        })
    }

    /// How ffmpeg's run ended, in the attempt's terms: the damage it saw in the input (to be
    /// reported), or the end of the attempt.
    fn judge(
        &self,
        place: &Confined,
        encoded: Result<videofarm_ffmpeg::encode::Encoded, EncodeError>,
        void: Option<String>,
        shown: &dyn Fn(&str) -> String,
    ) -> Result<Option<String>, End> {
        let settings = &self.settings;
        let spec = &place.spec;
        let damage = match encoded {
            Ok(encoded) if encoded.errors > 0 => Some(format!(
                "ffmpeg reported {} errors while reading the input (damaged or cut data): {}",
                encoded.errors,
                shown(&encoded.error_tail)
                    .lines()
                    .last()
                    .unwrap_or_default()
            )),
            Ok(_) => None,
            Err(EncodeError::Cancelled) => {
                return Err(match void {
                    Some(reason) => End::Void(reason),
                    None => End::Aborted,
                })
            }
            Err(e) => {
                let input = spec.input.display();
                let reason = if e.is_disk_full() {
                    format!(
                        "{input}: the disk filled up while writing {}",
                        spec.output.display()
                    )
                } else {
                    format!("{input}: {}", shown(&e.to_string()))
                };
                return Err(End::Failed(Failure::retryable(
                    reason,
                    shown(e.stderr_tail()),
                )));
            }
        };
        if let Some(reason) = void {
            return Err(End::Void(reason));
        }
        if let (Some(damage), true) = (&damage, settings.fail_on_damage) {
            return Err(End::Failed(Failure::permanent(format!(
                "{}: the input is damaged: {damage} (decode_errors = \"fail\")",
                spec.input.display()
            ))));
        }
        Ok(damage)
    }

    /// A new temporary output for this attempt, once what earlier attempts left is removed.
    fn fresh_temp(&self, place: &Confined, work: &Encode) -> Result<TempOutput, Failure> {
        let removed = remove_stale(&place.dir_io(), place.name(), &self.lease.id);
        if removed > 0 {
            tracing::info!(removed, "removed temporary files of earlier attempts");
        }
        TempOutput::create(
            &place.dir_io(),
            place.name(),
            &place.spec.output,
            &self.lease.id,
            self.lease.token,
            &work.extension,
        )
    }

    /// Say that the encode has started, with what is known of the input.
    pub(crate) fn started(&self, spec: &videofarm_core::JobSpec, duration_s: Option<f64>) {
        self.emit(Event::JobStarted {
            id: self.lease.id.clone(),
            worker: self.worker(),
            input: spec.input.clone(),
            output: spec.output.clone(),
            profile: spec.profile.clone(),
            attempt: self.lease.attempt,
            duration_s,
            part: spec
                .chunk
                .as_ref()
                .zip(spec.parent.as_ref())
                .map(|(chunk, parent)| videofarm_core::event::Part {
                    parent: parent.clone(),
                    index: chunk.index,
                    count: chunk.count,
                }),
        });
    }
}
