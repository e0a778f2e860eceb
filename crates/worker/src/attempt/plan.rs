//! What one attempt runs: the whole file, one chunk of it, or the join of its chunks; and for
//! a split tape's parent job, planning, queueing its chunks and waiting for them.

use crate::attempt::{Attempt, End};
use crate::paths::Confined;
use crate::split::{self, Plan, CHUNK_EXTENSION};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use videofarm_core::confine::fs::{self, OwnFolder};
use videofarm_core::report::Signal;
use videofarm_core::split::{chunk_key, chunk_path, Chunk};
use videofarm_core::treat::{treat_args, treated_split, Treatment};
use videofarm_core::{
    Enqueued, Failure, JobSpec, JobState, Profile, Progress, QueueError, SplitArgs,
};
use videofarm_ffmpeg::analyse::{analysis_args, survey, Asked};
use videofarm_ffmpeg::{file_url, packets};

/// The encode an attempt runs.
pub(crate) struct Encode {
    pub input_args: Vec<OsString>,
    /// The path ffmpeg opens as its first input.
    pub input: PathBuf,
    pub args: Vec<OsString>,
    /// The temporary output's extension (its muxer).
    pub extension: String,
    /// The length of what is encoded, when known before ffmpeg says (for progress).
    pub duration_s: Option<f64>,
    pub check: Check,
    /// Said on the job when it succeeds (why a long input was encoded whole).
    pub note: Option<String>,
    /// Damage already seen (a split tape's chunks').
    pub warnings: Option<String>,
    /// The measuring output for the tape report (a whole file's or a chunk's own frames).
    pub analysis: Option<Vec<OsString>>,
    /// A split tape's signal, its chunks' merged (at the join).
    pub signal: Option<Box<Signal>>,
    /// What was chosen from the tape's survey (recorded in its report).
    pub treatment: Option<Treatment>,
}

/// How the result is verified.
pub(crate) enum Check {
    /// Like every output: codec, duration, the streams the profile keeps.
    Whole,
    /// A chunk: the video codec and exactly this many frames.
    Chunk { frames: u64 },
    /// The joined tape: like a whole output, plus the frame count of the plan; the work folder
    /// goes once it is published.
    Join {
        frames: u64,
        work: OwnFolder,
        /// When the tape was split: the tape's wall time counts from there.
        started_ms: i64,
    },
}

/// Why a job is encoded whole: too short to be worth it, or it cannot be cut exactly (said on
/// the job).
enum Unsplit {
    Short(String),
    Cannot(String),
}

/// What a parent job does now.
pub(crate) enum Step {
    Run(Box<Encode>),
    End(End),
}

fn os(list: &[String]) -> Vec<OsString> {
    list.iter().map(OsString::from).collect()
}

impl Attempt {
    /// The whole file as one encode, with its profile's arguments treated as the tape's
    /// survey says (an `auto` profile).
    async fn whole(
        &self,
        place: &Confined,
        profile: &Profile,
        note: Option<String>,
        treatment: Option<Treatment>,
    ) -> Step {
        let args = match &treatment {
            Some(t) => treat_args(&profile.args, t),
            None => profile.args.clone(),
        };
        let cut = treatment.and_then(|t| t.trim);
        // A cut tape's report measures the frames kept, as its chunks' would.
        let measured = cut.map(|t| {
            let q = t.frame_s / 4.0;
            (t.start_s - q, t.end_s.map(|e| e - q))
        });
        Step::Run(Box::new(Encode {
            input_args: Vec::new(),
            input: place.input_io(),
            args: os(&args),
            extension: profile.extension.clone(),
            duration_s: cut.map(|t| t.kept_s()),
            check: Check::Whole,
            note,
            warnings: None,
            analysis: profile.reports().then(|| analysis_args(measured, &args)),
            signal: None,
            treatment,
        }))
    }

    /// The whole file as one encode, its tape surveyed first.
    async fn surveyed_whole(&self, place: &Confined, profile: &Profile) -> Step {
        let treatment = self.treatment(place, profile).await;
        self.whole(place, profile, None, treatment).await
    }

    /// The treatment an `auto` profile's tape calls for, from a survey of it; none when the
    /// survey could not tell (the profile's own settings then apply, as they are).
    async fn treatment(&self, place: &Confined, profile: &Profile) -> Option<Treatment> {
        let auto = profile.auto;
        if auto.is_off() {
            return None;
        }
        // Loudness and the cut only where the audio is encoded (a copied stream can be
        // neither normalised nor cut on the frame).
        let asked = Asked {
            loudness: auto.loudness && !profile.copies_audio(),
            trim: auto.trim && !profile.copies_audio(),
        };
        match survey(&self.settings.tools, &place.input_io(), asked).await {
            Ok(found) => {
                let chosen = Treatment::choose_as(
                    auto,
                    &found.fields,
                    found.noisy_bottom_rows,
                    found.loudness,
                    found.trim,
                );
                tracing::info!(?found, ?chosen, "surveyed the tape");
                chosen
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not survey the tape; its profile applies as it is");
                None
            }
        }
    }

    /// Decide what this attempt encodes.
    pub(crate) async fn step(&self, place: &Confined, profile: &Profile) -> Step {
        let spec = &place.spec;
        let Some(args) = &profile.split else {
            return match &spec.chunk {
                Some(_) => Step::End(End::Failed(Failure::permanent(format!(
                    "{}: profile '{}' cannot be split on this worker",
                    spec.input.display(),
                    profile.name
                )))),
                None => self.surveyed_whole(place, profile).await,
            };
        };
        if let Some(chunk) = &spec.chunk {
            // Treated as its tape was, whichever worker surveyed it.
            let args = treated_split(args, chunk.treat.as_ref());
            let (before, after) = split::chunk_args(chunk, &args);
            return Step::Run(Box::new(Encode {
                input_args: os(&before),
                input: place.input_io(),
                args: os(&after),
                extension: CHUNK_EXTENSION.into(),
                duration_s: chunk.keep.1.map(|end| end - chunk.keep.0),
                check: Check::Chunk {
                    frames: chunk.frames() * u64::from(args.frames_per_frame),
                },
                note: None,
                warnings: None,
                analysis: profile
                    .reports()
                    .then(|| analysis_args(Some(chunk.keep), &after)),
                signal: None,
                treatment: None,
            }));
        }
        if spec.split.is_off() {
            return self.surveyed_whole(place, profile).await;
        }
        let work = split::work_in(&place.dir_io(), &spec.output);
        if fs::kind(&work).is_ok() {
            let folder = match own_work_folder(spec, &work) {
                Ok(folder) => folder,
                Err(end) => return Step::End(end),
            };
            match split::read_plan(&folder.io_path()) {
                Some(plan) if plan.key == spec.key => {
                    return self.wait_or_join(place, profile, args, plan, folder).await
                }
                Some(_) => {
                    // A plan for another input or profile: its chunks are not this job's.
                    let _ = folder.remove();
                }
                None => {}
            }
        }
        // Surveyed once, here, whether the tape is then split (every chunk carries the
        // treatment) or encoded whole.
        let treatment = self.treatment(place, profile).await;
        match self.plan(place, args, treatment).await {
            Ok(plan) => self.start_split(place, plan, &work).await,
            Err(Unsplit::Short(reason)) => {
                tracing::debug!(%reason, "encoding the whole file");
                self.whole(place, profile, None, treatment).await
            }
            Err(Unsplit::Cannot(reason)) => {
                tracing::info!(%reason, "encoding the whole file, not split");
                let note = Some(format!("not split: {reason}"));
                self.whole(place, profile, note, treatment).await
            }
        }
    }

    /// Plan the chunks, or say why the input is encoded whole.
    async fn plan(
        &self,
        place: &Confined,
        args: &SplitArgs,
        treatment: Option<Treatment>,
    ) -> Result<Plan, Unsplit> {
        let spec = &place.spec;
        let size = place.input_file().metadata().map(|m| m.len()).unwrap_or(0);
        if spec.split == videofarm_core::Split::Auto && size < split::MIN_SPLIT_BYTES {
            return Err(Unsplit::Short("it is small".into()));
        }
        let tools = &self.settings.tools;
        let info = videofarm_ffmpeg::probe(tools, &place.input_io())
            .await
            .map_err(|e| Unsplit::Cannot(format!("it could not be probed ({e})")))?;
        let duration = info.duration_s.unwrap_or(0.0);
        let Some(chunk_secs) = spec.split.chunk_secs(duration) else {
            return Err(Unsplit::Short(format!("it is {duration:.0} s long")));
        };
        let packets = packets::video_packets(tools, &place.input_io())
            .await
            .map_err(|e| Unsplit::Cannot(format!("its packets could not be read ({e})")))?;
        let frames = match split::frames_from_packets(&packets) {
            Ok(frames) => frames,
            // Packets without timestamps: ask the decoder (about 40 s for an hour of SD).
            Err(_) => packets::decoded_frames(tools, &place.input_io())
                .await
                .map_err(|e| Unsplit::Cannot(format!("its frames could not be read ({e})")))?,
        };
        split::plan(&packets, &frames, chunk_secs, (args, treatment), &spec.key).map_err(|why| {
            if why.contains("too short") {
                Unsplit::Short(why)
            } else {
                Unsplit::Cannot(why)
            }
        })
    }

    /// Write the plan, queue the chunks, and wait for them.
    async fn start_split(&self, place: &Confined, mut plan: Plan, work: &Path) -> Step {
        let spec = &place.spec;
        if let Err(e) = fs::create_dir(work) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Step::End(End::Failed(Failure::retryable(
                    format!(
                        "{}: could not create the split work folder: {e}",
                        spec.output.display()
                    ),
                    "",
                )));
            }
        }
        let folder = match own_work_folder(spec, work) {
            Ok(folder) => folder,
            Err(end) => return Step::End(end),
        };
        let work = &folder.io_path();
        if let Err(e) = split::write_plan(work, &plan) {
            return Step::End(End::Failed(Failure::retryable(
                format!(
                    "{}: could not write the split plan: {e}",
                    spec.output.display()
                ),
                "",
            )));
        }
        tracing::info!(
            chunks = plan.chunks.len(),
            frames = plan.frames,
            "split into chunks"
        );
        if let Err(end) = self.queue_chunks(&plan.chunks, false).await {
            return Step::End(end);
        }
        plan.queued = true;
        let _ = split::write_plan(work, &plan);
        Step::End(self.wait(0, plan.chunks.len()))
    }

    /// Queue chunk jobs (`force`: again, after they failed), in one batch.
    async fn queue_chunks(&self, chunks: &[Chunk], force: bool) -> Result<(), End> {
        let parent = &self.lease.spec;
        let specs: Vec<JobSpec> = chunks
            .iter()
            .map(|chunk| JobSpec {
                input: parent.input.clone(),
                output: chunk_path(&parent.output, chunk.index).with_extension(CHUNK_EXTENSION),
                profile: parent.profile.clone(),
                key: chunk_key(&parent.key, chunk.index),
                overwrite: false,
                priority: parent.priority,
                input_size: parent.input_size,
                parent: Some(self.lease.id.clone()),
                split: Default::default(),
                chunk: Some(chunk.clone()),
                // A chunk goes where its tape may go.
                require: parent.require.clone(),
            })
            .collect();
        let failed = |what: String| {
            End::Failed(Failure::retryable(
                format!("{}: could not queue {what}", parent.input.display()),
                "",
            ))
        };
        let answers = self
            .queue
            .enqueue_many(specs.clone(), force)
            .await
            .map_err(|e| failed(format!("its chunks: {e}")))?;
        // Only chunks whose files are missing are queued here: one the queue knows as
        // succeeded lost its file (a cancel removed the work folder) and is encoded again.
        let mut again = Vec::new();
        for ((chunk, spec), answer) in chunks.iter().zip(specs).zip(answers) {
            match answer {
                Ok(Enqueued::Duplicate(_, JobState::Succeeded)) => again.push(spec),
                Ok(_) => {}
                // Forced while it encodes: it is being made already.
                Err(QueueError::WrongState {
                    state: JobState::Running,
                    ..
                }) => {}
                Err(e) => return Err(failed(format!("chunk {}: {e}", chunk.index))),
            }
        }
        if !again.is_empty() {
            tracing::info!(
                chunks = again.len(),
                "queued again the chunks whose files are gone"
            );
            for answer in self
                .queue
                .enqueue_many(again, true)
                .await
                .map_err(|e| failed(format!("its chunks: {e}")))?
            {
                match answer {
                    Ok(_)
                    | Err(QueueError::WrongState {
                        state: JobState::Running,
                        ..
                    }) => {}
                    Err(e) => return Err(failed(format!("a chunk: {e}"))),
                }
            }
        }
        Ok(())
    }

    /// A tape taken afresh (retried, or its last holder lost) queues again every chunk whose
    /// verified file is missing and that has not failed for good (see
    /// [`videofarm_core::lifecycle`]): after a cancel and a retry, exactly those are encoded again.
    async fn requeue_missing(&self, plan: &Plan, work: &Path) -> Result<usize, End> {
        let done = split::chunks_marked(work, CHUNK_EXTENSION);
        // Chunks that failed are the tape's to fail or (once reported) to queue again.
        let mut failed = split::chunks_marked(work, "failed");
        failed.extend(split::chunks_marked(work, "reported"));
        let missing: Vec<Chunk> = plan
            .chunks
            .iter()
            .filter(|c| !done.contains(&c.index) && !failed.contains(&c.index))
            .cloned()
            .collect();
        if !missing.is_empty() {
            self.queue_chunks(&missing, false).await?;
        }
        Ok(missing.len())
    }

    fn wait(&self, done: usize, count: usize) -> End {
        End::Deferred(
            self.settings.split_poll,
            Progress {
                progress: done as f64 / count.max(1) as f64,
                ..Progress::default()
            },
        )
    }

    /// The chunks so far: fail on one that failed for good, queue again the ones a retry asks
    /// for, wait for the rest, or join them all.
    async fn wait_or_join(
        &self,
        place: &Confined,
        profile: &Profile,
        args: &SplitArgs,
        plan: Plan,
        folder: OwnFolder,
    ) -> Step {
        let spec = &place.spec;
        let work = folder.io_path();
        let count = plan.chunks.len();
        if !plan.queued || self.lease.fresh {
            // Taken afresh (retried, or the worker that planned died while queueing): queue
            // every chunk whose file is missing.
            let mut plan = plan.clone();
            match self.requeue_missing(&plan, &work).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(chunks = n, "queued the chunks this tape lacks"),
                Err(end) => return Step::End(end),
            }
            if !plan.queued {
                plan.queued = true;
                let _ = split::write_plan(&work, &plan);
            }
        }
        let failed = split::chunks_marked(&work, "failed");
        let done = split::chunks_marked(&work, CHUNK_EXTENSION);
        // A chunk failed for good: the tape fails, once every other chunk has ended too (their
        // work is kept for the retry, and every failure is named at once).
        if !failed.is_empty() && done.len() + failed.len() < count {
            return Step::End(self.wait(done.len(), count));
        }
        if !failed.is_empty() {
            let reasons: Vec<String> = failed
                .iter()
                .map(|i| {
                    let why = fs::read_own_text(
                        &work.join(split::failed_name(*i, false)),
                        split::NOTE_MAX_BYTES,
                    )
                    .unwrap_or_default();
                    let _ = fs::rename(
                        &work.join(split::failed_name(*i, false)),
                        &work.join(split::failed_name(*i, true)),
                    );
                    format!("chunk {} of {count}: {}", i + 1, why.trim())
                })
                .collect();
            return Step::End(End::Failed(Failure::permanent(format!(
                "{}: {} of its {count} chunks failed ({}); `retry` encodes only those again",
                spec.input.display(),
                failed.len(),
                reasons.join("; ")
            ))));
        }
        let reported = split::chunks_marked(&work, "reported");
        if !reported.is_empty() {
            // A retry of the parent: queue again only the chunks that failed.
            let again: Vec<Chunk> = plan
                .chunks
                .iter()
                .filter(|c| reported.contains(&c.index))
                .cloned()
                .collect();
            if let Err(end) = self.queue_chunks(&again, true).await {
                return Step::End(end);
            }
            for i in &reported {
                let _ = fs::remove_file(&work.join(split::failed_name(*i, true)));
            }
            tracing::info!(chunks = again.len(), "queued the failed chunks again");
        }
        if done.len() < count {
            return Step::End(self.wait(done.len(), count));
        }
        match self.join(place, profile, args, &plan, folder).await {
            Ok(encode) => Step::Run(Box::new(encode)),
            Err(failure) => Step::End(End::Failed(failure)),
        }
    }

    /// The join of every chunk: the concat list, the offsets, the argv.
    async fn join(
        &self,
        place: &Confined,
        profile: &Profile,
        args: &SplitArgs,
        plan: &Plan,
        folder: OwnFolder,
    ) -> Result<Encode, Failure> {
        let spec = &place.spec;
        let work = &folder.io_path();
        let tools = &self.settings.tools;
        let fail =
            |what: String| Failure::retryable(format!("{}: {what}", spec.input.display()), "");
        let mut spans = Vec::with_capacity(plan.chunks.len());
        let mut headers = None;
        for chunk in &plan.chunks {
            let name = split::chunk_name(chunk.index);
            let path = work.join(&name);
            let (_, length) = packets::video_span(tools, &path)
                .await
                .map_err(|e| fail(format!("chunk {} cannot be read ({e})", chunk.index + 1)))?;
            // Every chunk must carry the same codec headers: the join keeps the first's.
            let hash = packets::extradata_hash(tools, &path)
                .await
                .map_err(|e| fail(format!("chunk {} cannot be read ({e})", chunk.index + 1)))?;
            match &headers {
                None => headers = Some(hash),
                Some(first) if *first != hash => {
                    // Encoded with other settings (another ffmpeg build on another worker):
                    // this chunk is encoded again.
                    let _ = fs::remove_file(&path);
                    let _ = self.queue_chunks(std::slice::from_ref(chunk), true).await;
                    return Err(fail(format!(
                        "chunk {} was encoded with other codec settings than chunk 1 (workers with different ffmpeg builds?); it is queued again",
                        chunk.index + 1
                    )));
                }
                Some(_) => {}
            }
            spans.push((name, length));
        }
        // Damage a chunk saw in its part of the input is the tape's.
        let warnings: Vec<String> = plan
            .chunks
            .iter()
            .filter_map(|c| {
                let text = fs::read_own_text(
                    &work.join(split::warnings_name(c.index)),
                    split::NOTE_MAX_BYTES,
                )
                .ok()?;
                Some(format!(
                    "chunk {} of {}: {}",
                    c.index + 1,
                    plan.chunks.len(),
                    text.trim()
                ))
            })
            .collect();
        let list = split::concat_list(&spans);
        fs::write_atomically(work, "list.ffconcat", list.as_bytes())
            .map_err(|e| fail(format!("could not write the chunk list ({e})")))?;
        let rate = packets::frame_rate(tools, &work.join(split::chunk_name(0)))
            .await
            .map_err(|e| fail(format!("chunk 1 cannot be read ({e})")))?;
        // The tape's audio is encoded here, once, treated as the tape was.
        let args = &treated_split(args, plan.treat.as_ref());
        let (before, after) = split::join_args(plan, rate, file_url(&place.input_io()), args);
        tracing::info!(chunks = plan.chunks.len(), "joining the chunks");
        Ok(Encode {
            input_args: before,
            input: work.join("list.ffconcat"),
            args: after,
            extension: profile.extension.clone(),
            duration_s: None,
            check: Check::Join {
                frames: plan.output_frames(),
                work: folder,
                started_ms: plan.started_ms,
            },
            note: None,
            warnings: (!warnings.is_empty()).then(|| warnings.join("; ")),
            analysis: None,
            treatment: plan.treat,
            signal: profile
                .reports()
                .then(|| tape_signal(work, plan).map(Box::new))
                .flatten(),
        })
    }
}

/// Record the damage a chunk saw in its part of the input, for its tape's report.
pub fn mark_damaged(place: &Confined, chunk: &Chunk, warnings: &[String]) {
    let _ = fs::write_atomically(
        &place.dir_io(),
        split::warnings_name(chunk.index),
        warnings.join("; ").as_bytes(),
    );
}

/// Record the signal a chunk measured in its part of the input, for its tape's report.
pub fn mark_signal(place: &Confined, chunk: &Chunk, signal: &Signal) {
    if let Ok(json) = serde_json::to_vec(signal) {
        let _ = fs::write_atomically(&place.dir_io(), split::signal_name(chunk.index), &json);
    }
}

/// A split tape's signal: its chunks', merged. `None` when a chunk measured nothing (its
/// profile makes no report, or an older worker encoded it): a report of part of a tape would
/// mislead.
fn tape_signal(work: &Path, plan: &Plan) -> Option<Signal> {
    let mut tape = Signal::default();
    for c in &plan.chunks {
        let path = work.join(split::signal_name(c.index));
        let bytes = fs::read_own(&path, split::SIGNAL_MAX_BYTES as u64).ok()?;
        match serde_json::from_slice::<Signal>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|s| s.check().map(|()| s))
        {
            Ok(signal) => tape.merge(signal),
            Err(e) => {
                tracing::warn!(chunk = c.index, error = %e, "a chunk's signal cannot be read; no tape report");
                return None;
            }
        }
    }
    Some(tape)
}

/// Record that chunk `chunk` failed for good, for its parent to see.
pub fn mark_failed(place: &Confined, chunk: &Chunk, reason: &str) {
    let _ = fs::write_atomically(
        &place.dir_io(),
        split::failed_name(chunk.index, false),
        reason.as_bytes(),
    );
}

/// The tape's work folder at `work`, held open; one there already is used only if it is a real
/// folder this farm made: a link (to a folder outside the roots) is refused, never followed.
fn own_work_folder(spec: &videofarm_core::JobSpec, work: &Path) -> Result<OwnFolder, End> {
    OwnFolder::open(work).map_err(|e| {
        End::Failed(Failure::permanent(format!(
            "{}: refused the split work folder: {e}",
            spec.output.display()
        )))
    })
}
