//! Opening an SQLite file that several processes open at once: the queue file, and the
//! RabbitMQ backend's local copy of the records (a watch, a worker and `jobs` on one machine).
//!
//! The one rule that is easy to get wrong: switching a new file to WAL needs the file to
//! itself, and SQLite does not wait for that (the busy timeout is not consulted), so two
//! processes opening a new file at once could fail one of them with "database is locked". CI
//! saw it: `jobs` beside a starting `watch`. The switch is made only when the file is not in
//! WAL yet, and retried while another process holds the file, until the busy timeout.

use rusqlite::{Connection, ErrorCode};
use std::path::Path;
use std::time::{Duration, Instant};

/// Open (creating) the file at `path` in WAL mode, waiting up to `busy` for other processes.
pub fn open(path: &Path, busy: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(busy)?;
    use_wal(&conn, busy)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

fn use_wal(conn: &Connection, busy: Duration) -> rusqlite::Result<()> {
    let deadline = Instant::now() + busy;
    let mut pause = Duration::from_millis(2);
    loop {
        // A read opens the file as it is (a file in WAL reports it from then on); it waits
        // for a writer like any read.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        if mode.eq_ignore_ascii_case("wal") {
            return Ok(());
        }
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)) {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            // Another process holds the file: look again (it may have switched it).
            Ok(_) => {}
            Err(e) if is_busy(&e) && Instant::now() < deadline => {}
            Err(e) => return Err(e),
        }
        if Instant::now() >= deadline {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                Some(format!(
                    "could not switch the file to WAL within {} s: another process holds it",
                    busy.as_secs()
                )),
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sixteen processes' worth of connections open one new file at the same moment, many
    /// times: every one opens it, in WAL. Without the retry about one new file in fifty
    /// failed one of them with "database is locked".
    #[test]
    fn many_opening_a_new_file_at_once_all_open_it_in_wal() {
        let dir = tempfile::tempdir().unwrap();
        for n in 0..60 {
            let path = dir.path().join(format!("f{n}.db"));
            let start = std::sync::Arc::new(std::sync::Barrier::new(16));
            let opens: Vec<_> = (0..16)
                .map(|_| {
                    let (path, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        let conn = open(&path, Duration::from_secs(10))?;
                        conn.execute_batch("CREATE TABLE IF NOT EXISTS t (x)")?;
                        conn.pragma_query_value(None, "journal_mode", |r| r.get::<_, String>(0))
                    })
                })
                .collect();
            for open in opens {
                let mode = open
                    .join()
                    .unwrap()
                    .unwrap_or_else(|e| panic!("file {n}: {e}"));
                assert_eq!(mode, "wal", "file {n}");
            }
        }
    }
}
