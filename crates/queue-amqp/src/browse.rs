//! Reading queues without consuming them as a worker does: the failed queue (for `jobs` and
//! `retry`) and the cancelled-id tombstones. Messages read this way come back marked as
//! redelivered, which is why the job queue itself is never read like this.

use super::*;

impl Inner {
    /// Remember cancelled ids locally (a cancel broadcast, or this process's own cancel).
    pub(crate) fn add_tombstones(&self, ids: &[JobId], at_ms: i64) {
        let mut tombstones = self.tombstones.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            let at = tombstones.0.entry(id.clone()).or_insert(at_ms);
            *at = (*at).max(at_ms);
        }
    }

    /// Whether the job `id` queued at `queued_ms` was cancelled after that (the same file queued
    /// again after a cancel is a new job), reading the broker's list when the cache is old.
    /// Reading it returns its messages with the redelivered flag set, which is harmless there
    /// (it is never consumed as jobs are).
    pub(crate) async fn is_cancelled(
        &self,
        id: &JobId,
        queued_ms: i64,
    ) -> Result<bool, QueueError> {
        self.fresh_tombstones().await?;
        Ok(self
            .tombstones
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .get(id)
            .is_some_and(|at| queued_ms <= *at))
    }

    /// Whether any job was cancelled at or after `since_ms`, by the tombstones (a cancel
    /// records the job's state, then writes its tombstone with a later time).
    pub(crate) async fn cancels_since(&self, since_ms: i64) -> Result<bool, QueueError> {
        self.fresh_tombstones().await?;
        Ok(self
            .tombstones
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .values()
            .any(|at| *at >= since_ms))
    }

    /// Read the broker's list of tombstones when the cache is older than `TOMBSTONE_REFRESH`.
    async fn fresh_tombstones(&self) -> Result<(), QueueError> {
        let stale = {
            let tombstones = self.tombstones.lock().unwrap_or_else(|p| p.into_inner());
            tombstones
                .1
                .is_none_or(|at| at.elapsed() >= TOMBSTONE_REFRESH)
        };
        if stale {
            let channel = self.new_channel().await?;
            let read = async {
                let mut ids = Vec::new();
                while let Some(message) = channel
                    .basic_get(
                        self.names.cancelled.as_str().into(),
                        BasicGetOptions::default(),
                    )
                    .await
                    .map_err(backend)?
                {
                    ids.extend(tombstones(&message.delivery.data));
                    if ids.len() >= 100_000 {
                        break;
                    }
                }
                Ok(ids)
            };
            let ids = self.within("a read of the cancelled list", read).await?;
            close_channel(&channel, "read tombstones").await;
            for (id, at) in ids {
                self.add_tombstones(&[id], at);
            }
            self.tombstones.lock().unwrap_or_else(|p| p.into_inner()).1 =
                Some(tokio::time::Instant::now());
        }
        Ok(())
    }

    /// Take the messages of `queue` whose id is in `ids` (all when `ids` is None), hand each
    /// to `take` (queued again on its route with `requeue`), acknowledge it once that succeeded, and leave the rest where they were.
    /// Each id is taken once, however often it comes back meanwhile.
    pub(crate) async fn take_from(
        &self,
        queue: &str,
        ids: Option<&[JobId]>,
        mut take: impl FnMut(Envelope) -> Option<Envelope>,
        requeue: bool,
    ) -> Result<Vec<JobId>, QueueError> {
        let channel = self.new_channel().await?;
        let mut taken = Vec::new();
        let mut seen = 0usize;
        while let Some(message) = self
            .within("a look at a queue", async {
                let get = channel.basic_get(queue.into(), BasicGetOptions::default());
                get.await.map_err(backend)
            })
            .await?
        {
            seen += 1;
            let Ok(env) = envelope::parse(&message.delivery.data) else {
                continue;
            };
            if ids.is_some_and(|ids| !ids.contains(&env.id)) {
                continue;
            }
            let id = env.id.clone();
            if taken.contains(&id) {
                // Failed again since this call took it (a worker keeps refilling the queue):
                // each job is taken once; this copy goes back when the channel closes.
                continue;
            }
            if let Some(env) = take(env) {
                if requeue {
                    self.publish_job(&env, None).await?;
                }
            }
            let ack = message.delivery.ack(BasicAckOptions::default());
            self.within("an acknowledgement", async { ack.await.map_err(backend) })
                .await?;
            taken.push(id);
            if seen >= 100_000 {
                break;
            }
        }
        // Closing the channel returns every message not acknowledged, in order.
        close_channel(&channel, "done").await;
        Ok(taken)
    }
}

/// The cancelled ids in a tombstone message: "ID\tWHEN" a line. A tombstone without a time
/// (older versions) cancels any copy.
fn tombstones(body: &[u8]) -> Vec<(JobId, i64)> {
    String::from_utf8_lossy(body)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|line| match line.split_once('\t') {
            Some((id, at)) => (JobId(id.to_owned()), at.parse().unwrap_or(i64::MAX)),
            None => (JobId(line.to_owned()), i64::MAX),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tombstone_message_holds_many_ids_and_old_ones_one() {
        let id = |s: &str| JobId(s.to_owned());
        assert_eq!(
            tombstones(b"a\t5\nb\t6\n"),
            vec![(id("a"), 5), (id("b"), 6)]
        );
        assert_eq!(tombstones(b"old"), vec![(id("old"), i64::MAX)]);
        assert_eq!(tombstones(b"c\tnonsense"), vec![(id("c"), i64::MAX)]);
    }
}
