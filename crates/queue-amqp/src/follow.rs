//! Writing facts to the records stream and following it into the local [`RecordStore`].
//!
//! A process that reads the records starts one follower: a consumer of the stream on a
//! connection of its own (its outages never touch the leases of a worker in the same process),
//! from the offset after the last one its cache applied. Of the processes sharing a records
//! file (one machine's workers, `serve` and commands), only the one holding the file's lock
//! follows; the others read its progress from the file (see [`watch_file`]).
//!
//! A read waits until the cache holds everything this process wrote and, the first time after
//! each (re)connection, until a mark it wrote has come back: then it has read everything anyone
//! wrote before the question.

use super::*;
use records::{Fact, RecordStore, Stamped};
use std::sync::atomic::AtomicBool;
use tokio::sync::watch;

/// How long a read waits for the stream to move before it says the records do not answer.
/// A read that has much to catch up waits as long as the copy keeps moving: on a machine
/// starved of CPU (200 busy workers beside it) a copy far behind took longer than this in all.
const SYNC_TIMEOUT: Duration = Duration::from_secs(15);
/// A follower nobody has read from for this long stops, and starts again at the next read
/// from the offset its copy reached. A worker follows the stream only to answer a redelivered
/// job's question; one that followed for ever took every fact the farm wrote: 200 workers were
/// 198 consumers of the stream, each fact delivered 198 times.
const REST_AFTER: Duration = Duration::from_secs(60);
/// Facts written in one message at most (a fact is well under 2 KiB).
const FACTS_PER_MESSAGE: usize = 500;
/// Messages applied in one transaction at most.
const BATCH: usize = 1000;
/// Facts the broker may send ahead of the acknowledgements.
const PREFETCH: u16 = 10_000;

pub(crate) struct Follower {
    pub(crate) store: Arc<RecordStore>,
    /// This process's mark on the facts it writes.
    pub(crate) origin: u64,
    /// Sequence numbers given to this process's facts so far.
    written: AtomicU64,
    /// The highest of them the broker confirmed: what a read waits to see (a fact whose
    /// publish failed is never waited for).
    confirmed: AtomicU64,
    /// The highest of this process's facts the cache holds.
    seen: watch::Sender<u64>,
    /// Messages of the stream the follower has applied: a read far behind waits while this
    /// moves.
    applied: watch::Sender<u64>,
    /// The follower has read back a mark written since it (re)connected.
    caught_up: AtomicBool,
    /// A read waited a whole `SYNC_TIMEOUT` and the copy did not move: the follower's
    /// connection may have stopped answering while it looks alive (heartbeats pass, nothing
    /// else), so it connects again.
    stale: AtomicBool,
    /// When a read last asked for the records, and how many are waiting now: a follower
    /// rests only when none is and none has for `rest_after`.
    last_read: Mutex<std::time::Instant>,
    reading: std::sync::atomic::AtomicUsize,
    /// `REST_AFTER`, shorter in tests, in milliseconds.
    pub(crate) rest_after_ms: AtomicU64,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// One mark at a time.
    marking: tokio::sync::Mutex<()>,
    /// One write at a time, numbered and published under it: the stream then holds this
    /// process's facts in the order of their numbers, which a read relies on (it waits for
    /// the highest number confirmed; two tasks writing at once could publish 6 before 5, and a
    /// read waiting for 5 returned when 6 arrived: seen in `own_writes`).
    writing: tokio::sync::Mutex<()>,
    /// The stream has taken a write of this process's: it is ready, and a reconnect need not
    /// ask again (see `first_record`).
    writable: AtomicBool,
    /// This process is consuming the stream now (not resting, nor reading another's progress).
    pub(crate) consuming: AtomicBool,
}

impl Follower {
    pub(crate) fn new(store: RecordStore) -> Self {
        let origin = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ (u64::from(std::process::id()) << 32);
        Self {
            store: Arc::new(store),
            origin,
            written: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            seen: watch::channel(0).0,
            applied: watch::channel(0).0,
            last_read: Mutex::new(std::time::Instant::now()),
            reading: std::sync::atomic::AtomicUsize::new(0),
            rest_after_ms: AtomicU64::new(REST_AFTER.as_millis() as u64),
            caught_up: AtomicBool::new(false),
            stale: AtomicBool::new(false),
            task: Mutex::new(None),
            marking: tokio::sync::Mutex::new(()),
            writing: tokio::sync::Mutex::new(()),
            writable: AtomicBool::new(false),
            consuming: AtomicBool::new(false),
        }
    }
}

impl Follower {
    /// The next read waits for a mark written after this call: it sees everything any process
    /// recorded before.
    pub(crate) fn read_all_again(&self) {
        self.caught_up.store(false, Ordering::SeqCst);
    }

    /// A read is waiting for the records until the guard is dropped.
    fn reading(&self) -> Reading<'_> {
        self.reading.fetch_add(1, Ordering::SeqCst);
        *self.last_read.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
        Reading(self)
    }

    /// Nobody has read for a while and nobody is reading: the follower may stop.
    fn may_rest(&self) -> bool {
        let rest = Duration::from_millis(self.rest_after_ms.load(Ordering::SeqCst));
        self.reading.load(Ordering::SeqCst) == 0
            && self
                .last_read
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .elapsed()
                >= rest
    }

    /// Let waiting reads know which of this process's facts the cache holds.
    fn notice_own_facts(&self) -> Result<(), QueueError> {
        let mine = self.store.seen(self.origin).map_err(backend)?;
        self.seen.send_if_modified(|seen| {
            let newer = mine > *seen;
            *seen = (*seen).max(mine);
            newer
        });
        Ok(())
    }
}

/// See [`Follower::reading`].
struct Reading<'a>(&'a Follower);

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        *self.0.last_read.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
        self.0.reading.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Inner {
    /// Write a fact to the records stream and wait for the broker's confirm.
    pub(crate) async fn record(&self, fact: Fact) -> Result<(), QueueError> {
        self.record_all(vec![fact]).await
    }

    /// A connection's first write to the records stream, on its publish channel: a mark, so a
    /// stream that takes no writes yet is found before anything that matters is written.
    /// Once per process: the stream, once ready, stays so.
    pub(crate) async fn first_record(&self, publish: &Channel) -> Result<(), QueueError> {
        if self.follower.writable.load(Ordering::SeqCst) {
            return Ok(());
        }
        // Sequence number 0, outside the order of this process's facts: this mark may be
        // written while a fact numbered before it waits for this very connection, and a read
        // waits for its own facts by their highest number (a numbered mark here let a read
        // finish before a `Gone` it had just recorded was applied: found by the model run).
        let mark = [Stamped {
            origin: self.follower.origin,
            seq: 0,
            at: self.now(),
            fact: Fact::Mark,
        }];
        let body = serde_json::to_vec(&mark).map_err(backend)?;
        let confirm = publish
            .basic_publish(
                "".into(),
                self.names.records.as_str().into(),
                Default::default(),
                &body,
                persistent(),
            )
            .await
            .map_err(backend)?
            .await
            .map_err(backend)?;
        if !confirm.is_ack() {
            return Err(backend("the broker refused the write"));
        }
        self.follower.writable.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// `fact`, marked as this process's next.
    fn stamp(&self, fact: Fact, at: i64) -> Stamped {
        Stamped {
            origin: self.follower.origin,
            // One sequence number per fact, published in order (under `writing`).
            seq: self.follower.written.fetch_add(1, Ordering::SeqCst) + 1,
            at,
            fact,
        }
    }

    /// Write facts to the records stream, as few messages as will hold them (the stream reads
    /// back per message, so a batch in one message reads back fast), and wait for the confirms.
    pub(crate) async fn record_all(&self, facts: Vec<Fact>) -> Result<(), QueueError> {
        let _in_order = self.follower.writing.lock().await;
        let at = self.now();
        let mut facts = facts.into_iter().peekable();
        while facts.peek().is_some() {
            let message: Vec<Stamped> = facts
                .by_ref()
                .take(FACTS_PER_MESSAGE)
                .map(|fact| self.stamp(fact, at))
                .collect();
            let body = serde_json::to_vec(&message).map_err(backend)?;
            self.publish(&self.names.records, &body, persistent())
                .await?;
            let last = message.last().map_or(0, |s| s.seq);
            self.follower.confirmed.fetch_max(last, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Bring the local records up to date (see the module documentation).
    pub(crate) async fn sync_records(self: &Arc<Self>) -> Result<&RecordStore, QueueError> {
        let follower = &self.follower;
        let _reading = follower.reading();
        self.ensure_follower();
        let mut applied = follower.applied.subscribe();
        let silent = || {
            backend(format!(
                "the records stream {} did not answer within {} s",
                self.names.records,
                SYNC_TIMEOUT.as_secs()
            ))
        };
        let wait = async {
            if !follower.caught_up.load(Ordering::SeqCst) {
                let _one = follower.marking.lock().await;
                if !follower.caught_up.load(Ordering::SeqCst) {
                    tokio::time::timeout(SYNC_TIMEOUT, self.record(Fact::Mark))
                        .await
                        .map_err(|_| silent())??;
                    let target = follower.confirmed.load(Ordering::SeqCst);
                    let mut seen = follower.seen.subscribe();
                    seen.wait_for(|s| *s >= target)
                        .await
                        .map_err(|_| backend("the records follower stopped"))?;
                    follower.caught_up.store(true, Ordering::SeqCst);
                }
            }
            let target = follower.confirmed.load(Ordering::SeqCst);
            let mut seen = follower.seen.subscribe();
            seen.wait_for(|s| *s >= target)
                .await
                .map_err(|_| backend("the records follower stopped"))?;
            Ok::<_, QueueError>(())
        };
        match while_moving(wait, &mut applied, SYNC_TIMEOUT).await {
            Some(result) => result?,
            None => {
                follower.stale.store(true, Ordering::SeqCst);
                return Err(silent());
            }
        }
        Ok(&follower.store)
    }

    fn ensure_follower(self: &Arc<Self>) {
        let mut task = self.follower.task.lock().unwrap_or_else(|p| p.into_inner());
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let weak = Arc::downgrade(self);
        *task = Some(tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            // A read waited in vain on the process that follows into this file: this one
            // follows too, once.
            let mut alone = false;
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let result = if std::mem::take(&mut alone) {
                    follow(&inner).await
                } else {
                    match inner.follower.store.lead() {
                        // Held while following: the others sharing the file read its progress.
                        Ok(Some(_held)) => follow(&inner).await,
                        Ok(None) => match watch_file(&inner).await {
                            // Let go, and taken here: this process follows now.
                            Ok(Watched::Lead(_held)) => follow(&inner).await,
                            Ok(Watched::Rest) => Ok(()),
                            Err(e) => {
                                alone = true;
                                Err(e)
                            }
                        },
                        Err(e) => {
                            tracing::debug!(error = %e, "cannot share the records file's following; following it here");
                            follow(&inner).await
                        }
                    }
                };
                inner.follower.caught_up.store(false, Ordering::SeqCst);
                match result {
                    // Rested (or the queue is being dropped): the slot is emptied under its
                    // lock unless a read came meanwhile, so the next read starts a follower
                    // and none waits on one that is ending.
                    Ok(()) => {
                        let follower = &inner.follower;
                        let mut slot = follower.task.lock().unwrap_or_else(|p| p.into_inner());
                        if follower.reading.load(Ordering::SeqCst) == 0 {
                            *slot = None;
                            return;
                        }
                        continue;
                    }
                    Err(e) => tracing::debug!(error = %e, "following the records stream again"),
                }
                drop(inner);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }));
    }
}

/// How watching another process follow the records into this file ended.
enum Watched {
    /// It let go, and this process holds the lock now: it follows.
    Lead(records::Lead),
    /// Nobody here has read for a while: the follower rests.
    Rest,
}

/// How often a process that does not follow reads the file's progress.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// How many of those looks between two tries of the follower's lock.
const LOCK_EVERY: u32 = 5;

/// Another process sharing the records file follows the stream into it (see
/// [`records::RecordStore::lead`]): read its progress from the file, as this process's own
/// follower would report it, until that process lets go (the lock, taken here: this one
/// follows now), until nobody here has read for a while, or until a read waited in vain for
/// the file to move (an error: this process then follows the stream itself). Before, ten
/// workers of a machine were ten followers of the whole stream into one file; after a `kill -9`
/// of twenty workers of a 200-worker farm, every taker of a lost job started one from the start
/// of the stream, and none got anywhere.
async fn watch_file(inner: &Arc<Inner>) -> Result<Watched, QueueError> {
    let follower = &inner.follower;
    follower.stale.store(false, Ordering::SeqCst);
    let mut reached = None;
    let mut look = 0u32;
    loop {
        look = look.wrapping_add(1);
        let offset = follower.store.offset().map_err(backend)?;
        follower.notice_own_facts()?;
        if offset != reached {
            reached = offset;
            follower.applied.send_modify(|n| *n = n.wrapping_add(1));
        }
        if Arc::strong_count(inner) <= 1 || follower.may_rest() {
            return Ok(Watched::Rest);
        }
        if follower.stale.swap(false, Ordering::SeqCst) {
            return Err(backend(
                "a read waited in vain for the process that follows the records into this file; following them here too",
            ));
        }
        if look.is_multiple_of(LOCK_EVERY) {
            if let Ok(Some(held)) = follower.store.lead() {
                return Ok(Watched::Lead(held));
            }
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

/// `done`'s output, or `None` once `moved` has not changed for `stall`.
async fn while_moving<F: std::future::Future>(
    done: F,
    moved: &mut watch::Receiver<u64>,
    stall: Duration,
) -> Option<F::Output> {
    tokio::pin!(done);
    loop {
        tokio::select! {
            out = &mut done => return Some(out),
            changed = tokio::time::timeout(stall, moved.changed()) => match changed {
                Ok(Ok(())) => {}
                // No follower to move it any more: what is left is the plain wait.
                Ok(Err(_)) => return tokio::time::timeout(stall, done).await.ok(),
                Err(_) => return None,
            },
        }
    }
}

/// Consume the stream into the cache until the connection ends (an error) or the queue handle
/// is dropped (`Ok`).
async fn follow(inner: &Arc<Inner>) -> Result<(), QueueError> {
    let url = inner.url();
    let connect = Connection::connect(&url, ConnectionProperties::default());
    let connection = connection::answered(
        "a connect to follow the records",
        inner.broker_wait(),
        connect,
    )
    .await?
    .map_err(backend)?;
    inner.follower.consuming.store(true, Ordering::SeqCst);
    let result = follow_on(inner, &connection).await;
    inner.follower.consuming.store(false, Ordering::SeqCst);
    close_within(&connection).await;
    result
}

async fn follow_on(inner: &Arc<Inner>, connection: &Connection) -> Result<(), QueueError> {
    inner.follower.stale.store(false, Ordering::SeqCst);
    let store = inner.follower.store.clone();
    // Every step that waits for the broker is bounded, as a publish is (`Inner::within`).
    let wait = inner.broker_wait();
    let subscribe = async {
        let channel = connection.create_channel().await.map_err(backend)?;
        inner.declare_records(&channel).await?;
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await
            .map_err(backend)?;
        same_stream(inner, connection, &store).await?;
        inner.follower.notice_own_facts()?;
        let from = store.offset().map_err(backend)?;
        let next = from.map_or(0, |offset| offset as i64 + 1);
        let consumer = read_stream(inner, &channel, AMQPValue::LongLongInt(next)).await?;
        Ok::<_, QueueError>((channel, consumer))
    };
    let (_channel, mut consumer) =
        connection::answered("a subscribe to the records stream", wait, subscribe).await??;
    loop {
        // Woken each second while idle: a follower is the last holder of its queue handle
        // only until it notices (then its connection closes).
        let delivery = match tokio::time::timeout(Duration::from_secs(1), consumer.next()).await {
            Err(_) if Arc::strong_count(inner) <= 1 || inner.follower.may_rest() => return Ok(()),
            Err(_) if inner.follower.stale.swap(false, Ordering::SeqCst) => {
                return Err(backend(
                    "a read waited for the records stream in vain; following it again",
                ))
            }
            Err(_) => continue,
            Ok(None) => return Err(backend("the records stream consumer ended")),
            Ok(Some(delivery)) => delivery,
        };
        let mut batch = vec![delivery.map_err(backend)?];
        // Take whatever else is already here, so a catch-up is a few large transactions.
        while batch.len() < BATCH {
            match tokio::time::timeout(Duration::ZERO, consumer.next()).await {
                Ok(Some(delivery)) => batch.push(delivery.map_err(backend)?),
                Ok(None) | Err(_) => break,
            }
        }
        let mut facts = Vec::with_capacity(batch.len());
        for delivery in &batch {
            let Some(offset) = stream_offset(&delivery.properties) else {
                continue;
            };
            match serde_json::from_slice::<Vec<Stamped>>(&delivery.data) {
                Ok(stamped) => facts.extend(stamped.into_iter().map(|s| (offset, s))),
                Err(e) => tracing::warn!(offset, error = %e, "skipped a record that is not a fact"),
            }
        }
        let store_now = store.clone();
        tokio::task::spawn_blocking(move || store_now.apply(&facts))
            .await
            .map_err(backend)?
            .map_err(backend)?;
        // Read from the file, not from this batch: another process sharing the file may have
        // applied this process's facts, and this follower (restarted after its offset) would
        // never read them itself.
        inner.follower.notice_own_facts()?;
        inner
            .follower
            .applied
            .send_modify(|n| *n = n.wrapping_add(batch.len() as u64));
        if let Some(last) = batch.last() {
            let ack = last.acker.ack(BasicAckOptions { multiple: true });
            connection::answered("an acknowledgement of the records stream", wait, ack)
                .await?
                .map_err(backend)?;
        }
        if Arc::strong_count(inner) <= 1 || inner.follower.may_rest() {
            return Ok(());
        }
    }
}

/// Make sure the local copy was read from this very stream: one made anew under the same name
/// (a broker reinstalled, the farm deleted and made again) starts with another first message,
/// and a copy that kept the old one's offset would wait forever for offsets it has passed.
/// Then the new stream is read from its start on top of what the copy holds: the history it
/// read stays (see [`RecordStore::new_stream`]). A stream whose old messages its retention
/// dropped starts later than it did: that is the same stream.
async fn same_stream(
    inner: &Arc<Inner>,
    connection: &Connection,
    store: &RecordStore,
) -> Result<(), QueueError> {
    let channel = connection.create_channel().await.map_err(backend)?;
    channel
        .basic_qos(1, BasicQosOptions::default())
        .await
        .map_err(backend)?;
    let mut first = read_stream(inner, &channel, AMQPValue::LongString("first".into())).await?;
    // An empty stream (just made) has nothing to compare yet; a copy read from one before is
    // of another stream.
    let delivery = match tokio::time::timeout(Duration::from_secs(3), first.next()).await {
        Ok(Some(Ok(delivery))) => delivery,
        _ => {
            crate::close_channel(&channel, "checked").await;
            if store.offset().map_err(backend)?.is_some() {
                tracing::warn!("the records stream is empty but this copy has read one before: it was made anew; keeping what this copy read");
                store.new_stream(inner.now()).map_err(backend)?;
            }
            return Ok(());
        }
    };
    crate::close_channel(&channel, "checked").await;
    let offset = stream_offset(&delivery.properties).unwrap_or(0);
    let head = serde_json::from_slice::<Vec<Stamped>>(&delivery.data)
        .ok()
        .and_then(|facts| facts.first().map(|f| (f.origin, f.seq)))
        .unwrap_or((0, 0));
    let now = (offset, head.0, head.1);
    match store.origin_of_stream().map_err(backend)? {
        // A new copy, or one from before this check: know its stream from now on.
        None => {}
        Some(known) if known == now || offset > known.0 => return Ok(()),
        Some(_) => {
            tracing::warn!(
                stream = %inner.names.records,
                "the records stream was made anew: reading it from its start, keeping what this machine's copy read"
            );
            store.new_stream(inner.now()).map_err(backend)?;
        }
    }
    store
        .set_origin_of_stream(now.0, now.1, now.2)
        .map_err(backend)
}

/// A consumer of the records stream on `channel`, from `offset` (a number, or "first").
async fn read_stream(
    inner: &Inner,
    channel: &lapin::Channel,
    offset: AMQPValue,
) -> Result<lapin::Consumer, QueueError> {
    let mut args = FieldTable::default();
    args.insert("x-stream-offset".into(), offset);
    channel
        .basic_consume(
            inner.names.records.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .map_err(backend)
}

fn stream_offset(properties: &BasicProperties) -> Option<u64> {
    let headers = properties.headers().as_ref()?;
    match headers.inner().get("x-stream-offset")? {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::Timestamp(n) => Some(*n),
        _ => None,
    }
}

impl Inner {
    /// Bring the records up to date, then read them off the async threads.
    /// What is read for users (status, jobs, the page, the sweeps) first records the attempts
    /// of worker connections that are gone (see `presence`).
    pub(crate) async fn read_records<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&records::RecordStore) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, QueueError> {
        self.sync_records().await?;
        match self.record_lost_sessions().await {
            Ok(true) => {}
            Ok(false) => return self.read_synced(read).await,
            Err(e) => tracing::debug!(error = %e, "could not look for lost worker connections"),
        }
        self.sync_records().await?;
        self.read_synced(read).await
    }

    /// Read the records as this process last brought them up to date, off the async threads.
    pub(crate) async fn read_synced<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&records::RecordStore) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, QueueError> {
        let store = self.follower.store.clone();
        tokio::task::spawn_blocking(move || read(&store))
            .await
            .map_err(backend)?
            .map_err(|e| backend(format!("the records file: {e}")))
    }
}

#[cfg(test)]
mod tests;
