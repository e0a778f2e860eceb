//! The overview page's one answer, and what changed in it since an answer the page holds.
//!
//! The page asks every second. While nothing changes the answer is a `304` (see
//! [`crate::unchanged`]). When something does (a job starts or ends), the page names the
//! answer it holds (`?since=` its `ETag`) and gets the status whole, and of each list only the
//! jobs' ids in order with the rows it does not hold as they are now: a job starting moves a
//! few hundred bytes, not the pages of waiting and failed jobs again (tens of KB each time with
//! a large library). The server keeps the last few answers to compare with; a page holding an
//! older one gets the whole answer, as on its first request.

use crate::{list, status_value, ApiError, ApiResult, AppState};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use videofarm_core::{JobFilter, JobState};

/// How many jobs of each list the overview shows.
const PAGE: u32 = 100;
/// How many recent answers are kept to send changes against (pages open at once, each a
/// second or two behind the newest).
const KEPT: usize = 8;
/// The lists of the answer, each of jobs known by their `id`.
const LISTS: [&str; 3] = ["failed", "waiting", "recent"];

/// An answer given, by its `ETag`.
type Given = (String, Arc<Value>);

/// The last answers given, newest last.
#[derive(Clone, Default)]
pub struct Recent(Arc<Mutex<VecDeque<Given>>>);

impl Recent {
    fn find(&self, tag: &str) -> Option<Arc<Value>> {
        let kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().find(|(t, _)| t == tag).map(|(_, v)| v.clone())
    }

    fn keep(&self, tag: &str, value: Arc<Value>) {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if kept.iter().any(|(t, _)| t == tag) {
            return;
        }
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back((tag.to_owned(), value));
    }
}

#[derive(Deserialize)]
pub(crate) struct Since {
    /// The `ETag` of the answer the page holds.
    since: Option<String>,
}

/// What the overview page shows besides the workers, in one answer: the status, the first
/// failed jobs (without ffmpeg's words, which the page asks for when a row is opened), the
/// running and the waiting (without their progress, which the workers' answer carries), and
/// the last ten finished. With `since`, what changed since that answer (see the module).
pub(crate) async fn overview(
    State(state): State<AppState>,
    Query(asked): Query<Since>,
) -> ApiResult<Response> {
    let now = whole(&state).await?;
    let bytes = serde_json::to_vec(&now).map_err(internal)?;
    let tag = crate::unchanged::tag_of(&bytes);
    let now = Arc::new(now);
    state.overviews.keep(&tag, now.clone());
    let json = [(header::CONTENT_TYPE, "application/json")];
    let Some(since) = asked.since else {
        return Ok((json, bytes).into_response());
    };
    if since == tag {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let Some(held) = state.overviews.find(&since) else {
        // Older than anything kept (or never given): the whole answer.
        return Ok((json, bytes).into_response());
    };
    let changes = changes(&held, &now, &since, &tag);
    Ok((json, serde_json::to_vec(&changes).map_err(internal)?).into_response())
}

fn internal(e: serde_json::Error) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

async fn whole(state: &AppState) -> ApiResult<Value> {
    let page = |state: Option<JobState>, limit: u32, newest_first: bool| JobFilter {
        state,
        limit: Some(limit),
        newest_first,
        ..Default::default()
    };
    let failed = list(state, &page(Some(JobState::Failed), PAGE, false)).await?;
    let failed: Vec<Value> = failed
        .into_iter()
        .map(|mut job| {
            let tail = job.stderr_tail.take().map_or(0, |t| t.len());
            let mut value = serde_json::to_value(job).unwrap_or_default();
            value["stderr_tail_bytes"] = tail.into();
            value
        })
        .collect();
    let running = list(state, &page(Some(JobState::Running), PAGE, false)).await?;
    let queued = list(state, &page(Some(JobState::Queued), PAGE, false)).await?;
    // Read one after the other, a job put back in the queue between the two reads is in both.
    let mut waiting = first_of_each(running.into_iter().chain(queued), |job| job.id.clone());
    // How far a running job is comes with the workers (`/api/workers`), which change every
    // second while something runs; this answer then stays the same.
    for job in &mut waiting {
        job.progress = None;
    }
    let recent = list(state, &page(Some(JobState::Succeeded), 10, true)).await?;
    Ok(json!({
        "status": status_value(state).await?,
        "failed": failed,
        "waiting": waiting,
        "recent": recent,
    }))
}

/// `rows` with each key once, where it first came.
fn first_of_each<T, K: Eq + Hash>(
    rows: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> K,
) -> Vec<T> {
    let mut seen = HashSet::new();
    rows.into_iter()
        .filter(|row| seen.insert(key(row)))
        .collect()
}

/// What changed from `held` (tagged `since`) to `now` (tagged `tag`): the status whole; of
/// each list that changed, the ids in order and the rows that are new or differ. The page
/// takes the other rows from what it holds.
fn changes(held: &Value, now: &Value, since: &str, tag: &str) -> Value {
    let mut lists = Map::new();
    for name in LISTS {
        let (Some(before), Some(after)) = (held[name].as_array(), now[name].as_array()) else {
            continue;
        };
        if before == after {
            continue;
        }
        let id = |row: &Value| row["id"].as_str().unwrap_or_default().to_owned();
        let known: HashMap<String, &Value> = before.iter().map(|row| (id(row), row)).collect();
        let ids: Vec<String> = after.iter().map(id).collect();
        let rows: Vec<&Value> = after
            .iter()
            .filter(|row| known.get(&id(row)) != Some(row))
            .collect();
        lists.insert(name.to_owned(), json!({ "ids": ids, "rows": rows }));
    }
    json!({
        "since": since,
        "tag": tag,
        "status": now["status"],
        "lists": lists,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, state: &str) -> Value {
        json!({ "id": id, "state": state, "input": format!("/m/{id}.mpg") })
    }

    /// The page's side (app.js, `applied`), for the tests: what it holds, with the changes.
    fn applied(held: &Value, changes: &Value) -> Value {
        let mut out = held.clone();
        out["status"] = changes["status"].clone();
        for (name, change) in changes["lists"].as_object().unwrap() {
            let mut rows: HashMap<String, Value> = held[name]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (r["id"].as_str().unwrap().to_owned(), r.clone()))
                .collect();
            for row in change["rows"].as_array().unwrap() {
                rows.insert(row["id"].as_str().unwrap().to_owned(), row.clone());
            }
            out[name] = change["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|id| rows[id.as_str().unwrap()].clone())
                .collect();
        }
        out
    }

    #[test]
    fn a_job_read_as_running_and_then_as_queued_is_listed_once_as_running() {
        let running = [("a", "running"), ("b", "running")];
        let queued = [("b", "queued"), ("c", "queued")];
        let waiting = first_of_each(running.into_iter().chain(queued), |job| job.0);
        assert_eq!(
            waiting,
            [("a", "running"), ("b", "running"), ("c", "queued")]
        );
    }

    #[test]
    fn a_job_starting_sends_its_row_and_the_ids_not_the_lists() {
        let held = json!({
            "status": { "queued": 3, "running": 0 },
            "failed": [job("f1", "failed"), job("f2", "failed")],
            "waiting": [job("a", "queued"), job("b", "queued"), job("c", "queued")],
            "recent": [],
        });
        let now = json!({
            "status": { "queued": 2, "running": 1 },
            "failed": [job("f1", "failed"), job("f2", "failed")],
            "waiting": [job("a", "running"), job("b", "queued"), job("c", "queued")],
            "recent": [],
        });
        let changes = changes(&held, &now, "\"old\"", "\"new\"");
        assert_eq!(changes["since"], "\"old\"");
        assert_eq!(changes["tag"], "\"new\"");
        let lists = changes["lists"].as_object().unwrap();
        assert_eq!(lists.keys().collect::<Vec<_>>(), ["waiting"]);
        assert_eq!(lists["waiting"]["ids"], json!(["a", "b", "c"]));
        assert_eq!(lists["waiting"]["rows"], json!([job("a", "running")]));
        assert_eq!(applied(&held, &changes), now);
    }

    #[test]
    fn rows_that_come_leave_and_move_are_rebuilt_in_order() {
        let held = json!({
            "status": {},
            "failed": [job("f1", "failed")],
            "waiting": [job("a", "running"), job("b", "queued"), job("c", "queued")],
            "recent": [job("z", "succeeded")],
        });
        let now = json!({
            "status": { "changed": true },
            "failed": [job("b", "failed"), job("f1", "failed")],
            "waiting": [job("c", "running"), job("d", "queued")],
            "recent": [job("a", "succeeded"), job("z", "succeeded")],
        });
        let changes = changes(&held, &now, "s", "t");
        assert_eq!(applied(&held, &changes), now);
        // Only what the page does not hold as it is now.
        let sent: Vec<&Value> = LISTS
            .iter()
            .flat_map(|l| changes["lists"][l]["rows"].as_array().unwrap())
            .map(|r| &r["id"])
            .collect();
        assert_eq!(sent, ["b", "c", "d", "a"]);
    }

    #[test]
    fn the_last_answers_are_kept_and_the_oldest_let_go() {
        let recent = Recent::default();
        for i in 0..KEPT + 2 {
            recent.keep(&format!("t{i}"), Arc::new(json!(i)));
        }
        recent.keep("t5", Arc::new(json!("again")));
        assert!(recent.find("t0").is_none() && recent.find("t1").is_none());
        assert_eq!(*recent.find("t5").unwrap(), json!(5));
        assert_eq!(
            *recent.find(&format!("t{}", KEPT + 1)).unwrap(),
            json!(KEPT + 1)
        );
    }
}
