//! The queue file's tables. `user_version` records the schema so later versions can migrate.

use rusqlite::Connection;

const V1: &str = "
CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY,
    key          TEXT NOT NULL UNIQUE,
    input        BLOB NOT NULL,
    output       BLOB NOT NULL,
    profile      TEXT NOT NULL,
    overwrite    INTEGER NOT NULL DEFAULT 0,
    priority     INTEGER NOT NULL DEFAULT 0,
    input_size   INTEGER NOT NULL DEFAULT 0,
    parent       TEXT,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    not_before   INTEGER NOT NULL DEFAULT 0,
    token        INTEGER NOT NULL DEFAULT 0,
    worker       TEXT,
    lease_until  INTEGER,
    progress     TEXT,
    result       TEXT,
    error        TEXT,
    stderr_tail  TEXT,
    created_ms   INTEGER NOT NULL,
    started_ms   INTEGER,
    finished_ms  INTEGER
);
CREATE INDEX jobs_ready ON jobs (state, priority DESC, id);
CREATE INDEX jobs_lease ON jobs (state, lease_until);
CREATE TABLE attempts (
    job_id      INTEGER NOT NULL REFERENCES jobs (id),
    attempt     INTEGER NOT NULL,
    token       INTEGER NOT NULL,
    worker      TEXT NOT NULL,
    started_ms  INTEGER NOT NULL,
    finished_ms INTEGER,
    outcome     TEXT NOT NULL,
    error       TEXT,
    PRIMARY KEY (job_id, token)
);
CREATE INDEX attempts_running ON attempts (outcome) WHERE outcome = 'running';
CREATE TABLE workers (
    name         TEXT PRIMARY KEY,
    pid          INTEGER NOT NULL,
    host         TEXT NOT NULL,
    started_ms   INTEGER NOT NULL,
    concurrency  INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL
);
";

/// Split encoding: a job's split setting, a chunk job's frames (JSON), and finding a parent's
/// chunks.
const V2: &str = "
ALTER TABLE jobs ADD COLUMN split TEXT;
ALTER TABLE jobs ADD COLUMN chunk TEXT;
CREATE INDEX jobs_parent ON jobs (parent) WHERE parent IS NOT NULL;
";

/// Attempts lost with their worker, counted apart from failed ones.
const V3: &str = "ALTER TABLE jobs ADD COLUMN lost INTEGER NOT NULL DEFAULT 0;";

/// Listing and counting a large library by state (jobs in queue order within a state).
const V4: &str = "
CREATE INDEX jobs_state ON jobs (state, parent);
CREATE INDEX jobs_finished ON jobs (state, finished_ms);
CREATE INDEX jobs_retrying ON jobs (not_before) WHERE state = 'queued';
";

/// Capability routing: the tags a job requires; what each worker can run, cannot run, and its
/// tags (JSON arrays; NULL for none said).
const V5: &str = "
ALTER TABLE jobs ADD COLUMN require TEXT;
ALTER TABLE workers ADD COLUMN profiles TEXT;
ALTER TABLE workers ADD COLUMN unable TEXT;
ALTER TABLE workers ADD COLUMN tags TEXT;
";

/// A split tape back from a wait for its chunks (1), as against one taken afresh (0): a tape
/// taken afresh queues again the chunks whose files are missing.
const V6: &str = "ALTER TABLE jobs ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0;";

// Version 7: what each watch cannot do right now (`videofarm_core::watching`).

/// Taking a job: the (profile, tags) pairs waiting, and each pair's jobs in the order they are
/// taken.
const V8: &str = "CREATE INDEX jobs_routes ON jobs (state, profile, require, priority DESC, id);";

pub fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    // Two processes may open a new file at once: the write lock makes one of them create it.
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let steps = [V1, V2, V3, V4, V5, V6, videofarm_core::watching::TABLE, V8];
    for (to, step) in (1..).zip(steps) {
        if version < to {
            tx.execute_batch(step)?;
            tx.pragma_update(None, "user_version", to)?;
        }
    }
    tx.commit()
}
