//! The broker objects one farm uses, all named after one prefix so that several farms (or
//! test runs) can share a broker without meeting.

#[derive(Debug, Clone)]
pub struct Names {
    /// Ready jobs (durable, persistent messages, priorities 0-2).
    pub jobs: String,
    /// Jobs waiting out their retry delay; each message's TTL dead-letters it back to `jobs`.
    pub retry: String,
    /// Jobs that failed for good, with their reasons, until `retry` sends them back.
    pub failed: String,
    /// Ids of cancelled jobs (kept a week): a worker drops a delivery whose id is here.
    pub cancelled: String,
    /// Fanout exchange for requests to every live worker (inspect, cancel).
    pub control: String,
    /// Topic exchange for lifecycle events (`job.started`, `worker.online`, ...).
    pub events: String,
    /// Stream of the facts behind the farm's records (every job's states and attempts).
    pub records: String,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        Self {
            jobs: format!("{prefix}.jobs"),
            retry: format!("{prefix}.retry"),
            failed: format!("{prefix}.failed"),
            cancelled: format!("{prefix}.cancelled"),
            control: format!("{prefix}.control"),
            events: format!("{prefix}.events"),
            records: format!("{prefix}.records"),
        }
    }
}
