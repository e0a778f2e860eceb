//! What a `watch` process cannot do right now (two files that would become one output, a file
//! it cannot read, its folder gone), kept in the queue's records so that `status` and the page
//! show it wherever they run. A watch writes its whole list each time the list changes (an empty
//! list when all is well again, or when it stops): the newest list per host and folder is the
//! one shown.
//!
//! Both stores keep the lists in the same table ([`TABLE`]), one row per host and folder with
//! the report as JSON. A report read from a broker is hostile input, bounded by [`check`].

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The most problems one report carries; beyond them a watch says how many more there are.
pub const MOST_PROBLEMS: usize = 20;
/// The longest one problem may be, in bytes.
pub const LONGEST_PROBLEM: usize = 2000;
/// The longest host name a report may carry.
const LONGEST_HOST: usize = 255;

/// One watch's problems, as it last said them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchReport {
    pub host: String,
    pub pid: u32,
    #[serde(with = "crate::pathser")]
    pub folder: PathBuf,
    /// Each in plain words, naming the file; empty when all is well.
    pub problems: Vec<String>,
    /// When it was said, in milliseconds since the Unix epoch.
    pub at_ms: i64,
}

impl WatchReport {
    /// A report of `problems`, cut to the bounds [`check`] holds it to.
    pub fn new(host: &str, folder: PathBuf, problems: Vec<String>, at_ms: i64) -> Self {
        let mut problems: Vec<String> = problems.into_iter().map(cut).collect();
        if problems.len() > MOST_PROBLEMS {
            let more = problems.len() - (MOST_PROBLEMS - 1);
            problems.truncate(MOST_PROBLEMS - 1);
            problems.push(format!("and {more} more (see the watch's own log)"));
        }
        Self {
            host: cut(host.to_owned()),
            pid: std::process::id(),
            folder,
            problems,
            at_ms,
        }
    }

    /// The row this report replaces: one per host and folder.
    pub fn key(&self) -> String {
        // The folder as JSON writes it: exact for any name, UTF-8 or not.
        let folder = serde_json::to_value(self)
            .map(|report| report["folder"].to_string())
            .unwrap_or_else(|_| self.folder.display().to_string());
        format!("{}\n{folder}", self.host)
    }
}

/// A report as a row of [`TABLE`]: its key and itself as JSON.
pub fn row(report: &WatchReport) -> (String, String) {
    let json = serde_json::to_string(report).unwrap_or_default();
    (report.key(), json)
}

/// A report read back from [`LIST`]; `None` for one that cannot be read or is out of bounds.
pub fn read(json: &str) -> Option<WatchReport> {
    serde_json::from_str(json).ok().filter(|r| check(r).is_ok())
}

/// Cut `text` to [`LONGEST_PROBLEM`] bytes, on a character boundary.
fn cut(mut text: String) -> String {
    if text.len() > LONGEST_PROBLEM {
        let mut end = LONGEST_PROBLEM;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Whether a report that came from elsewhere is within the bounds a watch keeps to.
pub fn check(report: &WatchReport) -> Result<(), String> {
    if report.host.is_empty() || report.host.len() > LONGEST_HOST {
        return Err("a watch report's host must be 1 to 255 bytes".into());
    }
    if report.problems.len() > MOST_PROBLEMS {
        return Err(format!(
            "a watch report holds {} problems, more than {MOST_PROBLEMS}",
            report.problems.len()
        ));
    }
    if report.problems.iter().any(|p| p.len() > LONGEST_PROBLEM) {
        return Err(format!(
            "a watch problem is longer than {LONGEST_PROBLEM} bytes"
        ));
    }
    if !report.folder.is_absolute() || report.folder.as_os_str().len() > 4096 {
        return Err(
            "a watch report's folder must be an absolute path of at most 4096 bytes".into(),
        );
    }
    Ok(())
}

/// The table both stores keep the reports in.
pub const TABLE: &str = "CREATE TABLE IF NOT EXISTS watches (
    key    TEXT PRIMARY KEY,
    report TEXT NOT NULL
);";

/// Keep a report (?1 its key, ?2 the report as JSON) if it is newer than the one kept.
pub const KEEP: &str = "INSERT INTO watches (key, report) VALUES (?1, ?2)
    ON CONFLICT (key) DO UPDATE SET report = excluded.report
    WHERE json_extract(excluded.report, '$.at_ms') >= json_extract(watches.report, '$.at_ms')";

/// The reports kept, as JSON, the ones with problems only.
pub const LIST: &str = "SELECT report FROM watches
    WHERE json_array_length(report, '$.problems') > 0 ORDER BY key";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_cut_to_its_bounds_and_then_passes_its_check() {
        let long = "é".repeat(LONGEST_PROBLEM);
        let report = WatchReport::new(
            "nas",
            PathBuf::from("/media/drop"),
            vec![long; MOST_PROBLEMS + 5],
            1,
        );
        assert_eq!(report.problems.len(), MOST_PROBLEMS);
        assert!(report.problems[0].len() <= LONGEST_PROBLEM);
        assert_eq!(
            report.problems.last().unwrap(),
            "and 6 more (see the watch's own log)"
        );
        check(&report).unwrap();
    }

    #[test]
    fn a_report_beyond_its_bounds_is_refused() {
        let good = WatchReport::new("nas", PathBuf::from("/media/drop"), vec!["x".into()], 1);
        let mut many = good.clone();
        many.problems = vec!["x".into(); MOST_PROBLEMS + 1];
        let mut long = good.clone();
        long.problems = vec!["x".repeat(LONGEST_PROBLEM + 1)];
        let mut relative = good.clone();
        relative.folder = PathBuf::from("drop");
        let mut hostless = good.clone();
        hostless.host.clear();
        for bad in [many, long, relative, hostless] {
            assert!(check(&bad).is_err(), "{bad:?}");
        }
        check(&good).unwrap();
    }
}
