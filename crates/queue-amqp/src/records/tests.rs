use super::*;

fn spec(name: &str) -> JobSpec {
    JobSpec {
        input: format!("/m/{name}.mpg").into(),
        output: format!("/m/{name}.mkv").into(),
        profile: "archive".into(),
        key: name.into(),
        ..Default::default()
    }
}

fn budget() -> Budget {
    videofarm_core::QueueSettings::default().budget()
}

fn fact(seq: u64, fact: Fact) -> (u64, Stamped) {
    (
        seq,
        Stamped {
            origin: 1,
            seq,
            at: seq as i64 * 1000,
            fact,
        },
    )
}

#[test]
fn facts_make_records_and_a_replay_changes_nothing() {
    let store = RecordStore::open(None, budget()).unwrap();
    let a = JobId("a".into());
    let facts = vec![
        fact(
            0,
            Fact::Queued {
                id: a.clone(),
                spec: spec("a"),
                queued_ms: None,
            },
        ),
        fact(
            1,
            Fact::Started {
                id: a.clone(),
                spec: spec("a"),
                attempt: 1,
                worker: "w1".into(),
                holder: None,
                lost: 0,
                queued_ms: None,
            },
        ),
        fact(
            2,
            Fact::Ended {
                id: a.clone(),
                worker: Some("w1".into()),
                attempt: Some(1),
                holder: None,
                outcome: AttemptOutcome::Succeeded,
                state: JobState::Succeeded,
                attempts: 1,
                error: None,
                stderr_tail: None,
                result: Some(SuccessReport::default()),
                not_before: None,
                queued_ms: None,
            },
        ),
    ];
    store.apply(&facts).unwrap();
    // The same facts read again (another process, a reconnect) are skipped.
    store.apply(&facts).unwrap();
    let counts = store.counts(0).unwrap();
    assert_eq!((counts.succeeded, counts.queued, counts.running), (1, 0, 0));
    let history = store.history(&a).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].outcome, AttemptOutcome::Succeeded);
    assert_eq!(store.offset().unwrap(), Some(2));
    assert_eq!(
        store.seen(1).unwrap(),
        2,
        "the writer's facts are known as applied"
    );
    assert_eq!(store.seen(7).unwrap(), 0);
    let jobs = store.jobs(&JobFilter::default()).unwrap();
    assert_eq!(jobs[0].spec.input, std::path::PathBuf::from("/m/a.mpg"));
    assert_eq!(jobs[0].finished_ms, Some(2000));
}

fn started(seq: u64, id: &JobId, attempt: u32, session: &str, lost: u32) -> (u64, Stamped) {
    fact(
        seq,
        Fact::Started {
            id: id.clone(),
            spec: spec(&id.0),
            attempt,
            worker: format!("w-{session}"),
            holder: Some(Holder {
                session: session.into(),
                token: seq,
            }),
            lost,
            queued_ms: Some(0),
        },
    )
}

fn succeeded(seq: u64, id: &JobId, holder: (&str, u64), report: SuccessReport) -> (u64, Stamped) {
    fact(
        seq,
        Fact::Ended {
            id: id.clone(),
            worker: Some(format!("w-{}", holder.0)),
            attempt: Some(1),
            holder: Some(Holder {
                session: holder.0.into(),
                token: holder.1,
            }),
            outcome: AttemptOutcome::Succeeded,
            state: JobState::Succeeded,
            attempts: 1,
            error: None,
            stderr_tail: None,
            result: Some(report),
            not_before: None,
            queued_ms: None,
        },
    )
}

/// The same file queued again while it runs is a second message with its own count: its
/// "already done" neither closes nor overwrites the encode that did the work (before, the
/// copy's result replaced the real one, frames 0, and the history showed attempt 1 twice).
#[test]
fn a_copy_that_finds_the_job_done_keeps_the_real_result_and_its_own_row() {
    let store = RecordStore::open(None, budget()).unwrap();
    let a = JobId("a".into());
    let real = SuccessReport {
        frames: 300,
        ..Default::default()
    };
    let copy = SuccessReport {
        already_done: true,
        ..Default::default()
    };
    store
        .apply(&[
            fact(
                0,
                Fact::Queued {
                    id: a.clone(),
                    spec: spec("a"),
                    queued_ms: None,
                },
            ),
            started(1, &a, 1, "s1", 0),
            started(2, &a, 1, "s2", 0),
            succeeded(3, &a, ("s1", 1), real),
        ])
        .unwrap();
    let history = store.history(&a).unwrap();
    let numbers: Vec<u32> = history.iter().map(|h| h.attempt).collect();
    assert_eq!(numbers, [1, 2], "one number per attempt");
    assert_eq!(history[0].outcome, AttemptOutcome::Succeeded);
    assert_eq!(
        history[1].outcome,
        AttemptOutcome::Running,
        "the copy still runs"
    );
    store.apply(&[succeeded(4, &a, ("s2", 2), copy)]).unwrap();
    let job = &store.jobs(&JobFilter::default()).unwrap()[0];
    assert_eq!(job.state, JobState::Succeeded);
    let result = job.result.as_ref().unwrap();
    assert_eq!((result.frames, result.already_done), (300, false));
    assert_eq!(job.finished_ms, Some(3000), "the real encode's end");
    assert_eq!(
        store.history(&a).unwrap()[1].outcome,
        AttemptOutcome::Succeeded
    );
}

/// A connection known gone loses the attempts still running on it, once, and leaves a
/// job that moved on to a later attempt alone.
#[test]
fn a_gone_session_loses_its_running_attempts_and_nothing_else() {
    let budget = Budget {
        max_lost: 2,
        ..budget()
    };
    let store = RecordStore::open(None, budget).unwrap();
    let (a, b, c) = (JobId("a".into()), JobId("b".into()), JobId("c".into()));
    let gone = |seq| {
        fact(
            seq,
            Fact::Gone {
                session: "s1".into(),
            },
        )
    };
    store
        .apply(&[
            started(1, &a, 1, "s1", 0),
            started(2, &b, 2, "s1", 1),
            started(3, &c, 1, "s2", 0),
            gone(4),
        ])
        .unwrap();
    let state = |id: &JobId| store.state(id).unwrap().unwrap().0;
    assert_eq!(state(&a), JobState::Queued, "handed out again");
    assert_eq!(
        state(&b),
        JobState::Failed,
        "its second loss was one too many"
    );
    assert_eq!(state(&c), JobState::Running, "another connection's attempt");
    let jobs = store.jobs(&JobFilter::default()).unwrap();
    let error = |id: &JobId| jobs.iter().find(|j| &j.id == id).unwrap().error.clone();
    assert!(
        error(&a).unwrap().contains("attempt 1 was lost"),
        "{:?}",
        error(&a)
    );
    assert!(
        error(&b).unwrap().contains("lost 2 times"),
        "{:?}",
        error(&b)
    );
    assert!(
        error(&a).unwrap().contains("worker w-s1"),
        "{:?}",
        error(&a)
    );
    assert_eq!(store.history(&a).unwrap()[0].outcome, AttemptOutcome::Lost);
    assert!(store.running_sessions(10).unwrap() == ["s2"]);
    // Taken again on another connection; a late word of the old one changes nothing.
    store.apply(&[started(5, &a, 2, "s3", 1), gone(6)]).unwrap();
    assert_eq!(state(&a), JobState::Running);
    let history = store.history(&a).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].outcome, AttemptOutcome::Running);
}

/// A job lost too often and queued again: the old message's end, recorded after the new
/// queueing (the broker redelivered it late), leaves the job queued (found by the long
/// model run: it showed failed while its new message waited).
#[test]
fn the_end_of_a_message_older_than_the_jobs_queueing_changes_nothing() {
    let store = RecordStore::open(None, budget()).unwrap();
    let a = JobId("a".into());
    let queued = |seq, queued_ms| {
        fact(
            seq,
            Fact::Queued {
                id: a.clone(),
                spec: spec("a"),
                queued_ms: Some(queued_ms),
            },
        )
    };
    let lost_for_good = fact(
        3,
        Fact::Ended {
            id: a.clone(),
            worker: None,
            attempt: Some(2),
            holder: None,
            outcome: AttemptOutcome::Lost,
            state: JobState::Failed,
            attempts: 2,
            error: Some("lost 2 times".into()),
            stderr_tail: None,
            result: None,
            not_before: None,
            queued_ms: Some(100),
        },
    );
    store
        .apply(&[queued(1, 100), queued(2, 200), lost_for_good])
        .unwrap();
    assert_eq!(store.state(&a).unwrap().unwrap().0, JobState::Queued);
}
