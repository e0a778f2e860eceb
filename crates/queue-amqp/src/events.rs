//! Following the farm's lifecycle events.

use super::*;

/// Lifecycle events as they are published.
pub struct EventStream {
    pub(crate) consumer: Consumer,
    /// Keeps the channel (and so the private queue) open.
    pub(crate) _channel: Channel,
    /// Keeps the connection open even when the caller drops its queue handle.
    pub(crate) _queue: AmqpQueue,
}

impl EventStream {
    /// The next event; `None` when the connection ends. Messages that are not events are skipped.
    pub async fn next(&mut self) -> Option<Result<Event, QueueError>> {
        loop {
            match self.consumer.next().await? {
                Err(e) => return Some(Err(backend(e))),
                Ok(delivery) => {
                    if let Ok(event) = serde_json::from_slice::<Event>(&delivery.data) {
                        return Some(Ok(event));
                    }
                }
            }
        }
    }
}

#[async_trait]
impl EventFeed for EventStream {
    async fn next(&mut self) -> Option<Result<Event, QueueError>> {
        EventStream::next(self).await
    }
}
