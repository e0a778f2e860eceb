//! Celery task messages, as a Celery producer sends them (`encode.delay(srcFile, dstFolder)`),
//! read into videofarm jobs. Message protocol 2 (the task's name and id in the headers, the body
//! `[args, kwargs, embed]`) and protocol 1 (everything in the body). Only JSON is read: pickle
//! and YAML bodies can make a reader run code, and are refused with that reason.

use super::CeleryTaskMap;
use crate::envelope::{Envelope, MAX_MESSAGE};
use lapin::types::AMQPValue;
use lapin::BasicProperties;
use serde_json::Value;
use std::path::PathBuf;
use videofarm_core::{JobId, JobSpec};

/// The longest Celery task id or name read (Celery's are UUIDs and dotted names).
const MAX_NAME: usize = 255;

/// What a task message said, kept while a worker runs it (for `celery inspect active` and
/// Celery events).
#[derive(Debug, Clone, PartialEq)]
pub struct CeleryTask {
    pub id: String,
    pub name: String,
    /// The arguments as the task got them, JSON.
    pub args: Vec<Value>,
    pub kwargs: serde_json::Map<String, Value>,
    /// Celery's own count of retries (`task.retry`), as the message carried it.
    pub retries: u64,
    /// 1 or 2.
    pub protocol: u8,
}

impl CeleryTask {
    /// The arguments as Python would print them (`argsrepr`): `('/a.mpg', '/out/')`.
    pub fn args_repr(&self) -> String {
        let items: Vec<String> = self.args.iter().map(python_repr).collect();
        match items.len() {
            1 => format!("({},)", items[0]),
            _ => format!("({})", items.join(", ")),
        }
    }

    pub fn kwargs_repr(&self) -> String {
        let items: Vec<String> = self
            .kwargs
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}: {}",
                    python_repr(&Value::String(k.clone())),
                    python_repr(v)
                )
            })
            .collect();
        format!("{{{}}}", items.join(", "))
    }
}

/// A JSON value as Python's `repr` would show it (strings in single quotes).
fn python_repr(value: &Value) -> String {
    match value {
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(python_repr).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("'{k}': {}", python_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Number(n) => n.to_string(),
    }
}

/// A task message read: the job it asks for and the task as Celery knows it.
#[derive(Debug)]
pub struct Read {
    pub task: CeleryTask,
    pub envelope: Envelope,
}

/// Read a Celery task message into a job, or say in plain words why it is not one this worker
/// can take (the reason is bounded whatever the message holds).
pub fn read(
    properties: &BasicProperties,
    body: &[u8],
    tasks: &CeleryTaskMap,
    now_ms: i64,
) -> Result<Read, String> {
    check_transport(properties, body)?;
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the task message is not valid JSON ({e})"))?;
    let task = parse_task(properties, value)?;
    let envelope = job_of(&task, tasks, now_ms)?;
    Ok(Read { task, envelope })
}

/// A message this worker reads at all: bounded, JSON, UTF-8.
fn check_transport(properties: &BasicProperties, body: &[u8]) -> Result<(), String> {
    if body.len() > MAX_MESSAGE {
        return Err(format!(
            "the task message is {} bytes; at most {MAX_MESSAGE} are read",
            body.len()
        ));
    }
    let content_type = properties
        .content_type()
        .as_ref()
        .map(|c| c.as_str().to_owned())
        .unwrap_or_default();
    if content_type != "application/json" {
        return Err(format!(
            "the task message is {} (only application/json is read; pickle and YAML can run code in whoever reads them)",
            bounded(if content_type.is_empty() { "of no content type" } else { &content_type })
        ));
    }
    if let Some(encoding) = properties.content_encoding() {
        let encoding = encoding.as_str();
        if !matches!(encoding, "utf-8" | "utf8" | "binary") {
            return Err(format!(
                "the task message is encoded as {} (only utf-8 is read)",
                bounded(encoding)
            ));
        }
    }
    Ok(())
}

/// The task a message carries, in Celery's message protocol 2 (name and id in the headers) or
/// 1 (everything in the body).
fn parse_task(properties: &BasicProperties, value: Value) -> Result<CeleryTask, String> {
    let headers = properties.headers().as_ref();
    let header_text = |name: &str| headers.and_then(|h| text(h.inner().get(name)?));
    match (header_text("task"), header_text("id")) {
        (Some(name), Some(id)) => {
            // Protocol 2: [args, kwargs, embed].
            let Value::Array(parts) = value else {
                return Err("the task message's body is not [args, kwargs, embed]".into());
            };
            let mut parts = parts.into_iter();
            let args = parts.next().unwrap_or(Value::Array(vec![]));
            let kwargs = parts.next().unwrap_or(Value::Object(Default::default()));
            let retries = headers
                .and_then(|h| number(h.inner().get("retries")?))
                .unwrap_or(0);
            task(name, id, args, kwargs, retries, 2)
        }
        _ => {
            // Protocol 1: {"task", "id", "args", "kwargs", "retries", ...}.
            let not_a_task =
                || "the message is not a Celery task (no task name in its headers or body)";
            let Value::Object(mut map) = value else {
                return Err(not_a_task().into());
            };
            let Some(Value::String(name)) = map.remove("task") else {
                return Err(not_a_task().into());
            };
            let id = match map.remove("id") {
                Some(Value::String(id)) => id,
                _ => return Err(format!("the task {} has no id", bounded(&name))),
            };
            let args = map.remove("args").unwrap_or(Value::Array(vec![]));
            let kwargs = map
                .remove("kwargs")
                .unwrap_or(Value::Object(Default::default()));
            let retries = map.get("retries").and_then(Value::as_u64).unwrap_or(0);
            task(name, id, args, kwargs, retries, 1)
        }
    }
}

/// The job `task` asks for, by the farm's task map.
fn job_of(task: &CeleryTask, tasks: &CeleryTaskMap, now_ms: i64) -> Result<Envelope, String> {
    let Some(mapped) = tasks.get(&task.name) else {
        let known: Vec<&str> = tasks.keys().map(String::as_str).collect();
        return Err(format!(
            "unknown task {} (this farm runs {})",
            bounded(&task.name),
            known.join(", ")
        ));
    };
    let (src, dst) = arguments(task)?;
    let stem = std::path::Path::new(&src)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    // String concatenation, as the old task did: "/out/" + "tape" + ".mkv". A folder without
    // its trailing slash makes "/outtape.mkv", beside the folder, as it always did.
    let output = format!("{dst}{stem}.{}", mapped.extension);
    let input = PathBuf::from(&src);
    let output = PathBuf::from(output);
    let (key, input_size) =
        match videofarm_core::identity::identify(&input, &mapped.profile, &output) {
            Ok(identity) => (identity.key, identity.size),
            Err(_) => (
                videofarm_core::identity::unreadable_key(&input, &mapped.profile, &output),
                0,
            ),
        };
    let spec = JobSpec {
        input,
        output,
        profile: mapped.profile.clone(),
        key,
        input_size,
        ..Default::default()
    };
    spec.check()
        .map_err(|why| format!("the task {} cannot be a job: {why}", bounded(&task.id)))?;
    // A Celery id (a UUID) is a fine job id: `jobs` and `retry` show the id Celery shows.
    let id = JobId(task.id.clone());
    let id = match id.check() {
        Ok(()) => id,
        Err(_) => JobId(blake3::hash(task.id.as_bytes()).to_hex()[..16].to_owned()),
    };
    Ok(Envelope::new(id, spec, now_ms))
}

fn task(
    name: String,
    id: String,
    args: Value,
    kwargs: Value,
    retries: u64,
    protocol: u8,
) -> Result<CeleryTask, String> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(format!("the task name {} is not one", bounded(&name)));
    }
    if id.is_empty() || id.len() > MAX_NAME || id.chars().any(char::is_control) {
        return Err(format!("the task id {} is not one", bounded(&id)));
    }
    let Value::Array(args) = args else {
        return Err(format!(
            "the task {}'s arguments are not a list",
            bounded(&id)
        ));
    };
    let Value::Object(kwargs) = kwargs else {
        return Err(format!(
            "the task {}'s keyword arguments are not a mapping",
            bounded(&id)
        ));
    };
    Ok(CeleryTask {
        id,
        name,
        args,
        kwargs,
        retries,
        protocol,
    })
}

/// `(srcFile, dstFolder)`, by position or by name.
fn arguments(task: &CeleryTask) -> Result<(String, String), String> {
    let mut given: Vec<Option<&Value>> = vec![task.args.first(), task.args.get(1)];
    for (i, name) in ["srcFile", "dstFolder"].iter().enumerate() {
        if let Some(v) = task.kwargs.get(*name) {
            if given[i].is_some() {
                return Err(format!(
                    "{} got {name} twice (by position and by name)",
                    bounded(&task.name)
                ));
            }
            given[i] = Some(v);
        }
    }
    let extra: Vec<&String> = task
        .kwargs
        .keys()
        .filter(|k| !matches!(k.as_str(), "srcFile" | "dstFolder"))
        .collect();
    let count = task.args.len() + task.kwargs.len();
    if task.args.len() > 2 || !extra.is_empty() || given.iter().any(Option::is_none) {
        return Err(format!(
            "{} takes 2 arguments (srcFile, dstFolder); it got {count}{}",
            bounded(&task.name),
            if extra.is_empty() {
                String::new()
            } else {
                format!(
                    " (unknown: {})",
                    extra
                        .iter()
                        .map(|k| bounded(k))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ));
    }
    let as_text = |v: Option<&Value>, name: &str| match v {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(format!(
            "{}: {name} must be a path (text), not {}",
            bounded(&task.name),
            bounded(&v.map(|v| v.to_string()).unwrap_or_default())
        )),
    };
    Ok((
        as_text(given[0], "srcFile")?,
        as_text(given[1], "dstFolder")?,
    ))
}

fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn number(value: &AMQPValue) -> Option<u64> {
    match value {
        AMQPValue::ShortShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

/// Text from a message, cut short and quoted for a reason.
fn bounded(text: &str) -> String {
    format!("{:?}", videofarm_core::job::truncate(text, 120))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldTable, LongString};

    fn tasks() -> CeleryTaskMap {
        super::super::CelerySettings::new("w@h").tasks
    }

    fn json_props() -> BasicProperties {
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("utf-8".into())
    }

    fn protocol2(name: &str, id: &str) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert("task".into(), AMQPValue::LongString(LongString::from(name)));
        headers.insert("id".into(), AMQPValue::LongString(LongString::from(id)));
        headers.insert("retries".into(), AMQPValue::LongInt(0));
        json_props().with_headers(headers)
    }

    #[test]
    fn both_protocols_make_the_same_job_named_as_the_old_task_named_its_output() {
        let id = "292fa2f0-30e8-4d4e-8b8a-4d91492e5f08";
        let two = read(
            &protocol2("videoTasks.encode", id),
            br#"[["/a/b.mpg", "/out/"], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#,
            &tasks(),
            0,
        )
        .unwrap();
        let one = read(
            &json_props(),
            format!(r#"{{"task": "videoTasks.encode", "id": "{id}", "args": ["/a/b.mpg", "/out/"], "kwargs": {{}}, "retries": 0}}"#).as_bytes(),
            &tasks(),
            0,
        )
        .unwrap();
        for read in [&two, &one] {
            assert_eq!(read.envelope.id.0, id, "the Celery id is the job's id");
            assert_eq!(read.envelope.spec.input, PathBuf::from("/a/b.mpg"));
            assert_eq!(read.envelope.spec.output, PathBuf::from("/out/b.mkv"));
            assert_eq!(read.envelope.spec.profile, "archive");
        }
        assert_eq!((two.task.protocol, one.task.protocol), (2, 1));
        assert_eq!(two.task.args_repr(), "('/a/b.mpg', '/out/')");
        // Keyword arguments, and a folder without its slash: concatenated, as the old task did.
        let kw = read(
            &protocol2("videoTasks.encode", "k1"),
            br#"[[], {"srcFile": "/a/b.mpg", "dstFolder": "/out"}, {}]"#,
            &tasks(),
            0,
        )
        .unwrap();
        assert_eq!(kw.envelope.spec.output, PathBuf::from("/outb.mkv"));
    }

    #[test]
    fn bad_messages_are_refused_with_a_bounded_reason() {
        let ok_body: &[u8] = br#"[["/a/b.mpg", "/out/"], {}, {}]"#;
        let cases: Vec<(BasicProperties, Vec<u8>, &str)> = vec![
            (
                protocol2("videoTasks.other", "x"),
                ok_body.to_vec(),
                "unknown task",
            ),
            (
                protocol2("videoTasks.encode", "x"),
                br#"[["/a.mpg"], {}, {}]"#.to_vec(),
                "takes 2 arguments",
            ),
            (
                protocol2("videoTasks.encode", "x"),
                br#"[["/a.mpg", "/o/", 3], {}, {}]"#.to_vec(),
                "takes 2 arguments",
            ),
            (
                protocol2("videoTasks.encode", "x"),
                br#"[[1, 2], {}, {}]"#.to_vec(),
                "must be a path",
            ),
            (
                protocol2("videoTasks.encode", "x"),
                br#"{"a": 1}"#.to_vec(),
                "not [args, kwargs, embed]",
            ),
            (
                protocol2("videoTasks.encode", "x"),
                b"{nope".to_vec(),
                "not valid JSON",
            ),
            (
                BasicProperties::default()
                    .with_content_type("application/x-python-serialize".into()),
                ok_body.to_vec(),
                "pickle and YAML",
            ),
            (
                json_props(),
                br#"{"id": "x"}"#.to_vec(),
                "not a Celery task",
            ),
            (
                protocol2(&"t".repeat(100_000), "x"),
                ok_body.to_vec(),
                "not one",
            ),
            (json_props(), vec![b' '; MAX_MESSAGE + 1], "at most"),
        ];
        for (props, body, says) in cases {
            let why = read(&props, &body, &tasks(), 0).unwrap_err();
            assert!(why.contains(says), "{says}: {why}");
            assert!(why.len() < 400, "bounded: {why}");
        }
    }
}

/// Fuzzing the Celery task message, where a Celery producer's bytes enter a worker.
#[cfg(test)]
mod fuzz {
    use super::*;
    use lapin::types::{FieldTable, LongString};
    use proptest::prelude::*;
    use videofarm_fuzzing::{bytes, json, text};

    const KEYS: &[&str] = &[
        "task",
        "id",
        "args",
        "kwargs",
        "retries",
        "eta",
        "expires",
        "callbacks",
        "errbacks",
        "chain",
        "chord",
        "utc",
    ];

    fn properties(task: Option<String>, id: Option<String>) -> BasicProperties {
        let mut headers = FieldTable::default();
        for (name, value) in [("task", task), ("id", id)] {
            if let Some(value) = value {
                headers.insert(name.into(), AMQPValue::LongString(LongString::from(value)));
            }
        }
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("utf-8".into())
            .with_headers(headers)
    }

    fn answers(properties: &BasicProperties, body: &[u8]) -> Result<(), TestCaseError> {
        let tasks = super::super::CelerySettings::new("w@h").tasks;
        if let Err(why) = read(properties, body, &tasks, 0) {
            prop_assert!(why.len() <= 1000, "{} bytes", why.len());
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(videofarm_fuzzing::config())]

        #[test]
        fn any_bytes_under_either_protocol(body in bytes(b"[[\""), two in any::<bool>()) {
            let props = if two {
                properties(Some("videoTasks.encode".into()), Some("x".into()))
            } else {
                properties(None, None)
            };
            answers(&props, &body)?;
        }

        #[test]
        fn any_json_with_hostile_headers(
            body in json(KEYS),
            task in proptest::option::of(text()),
            id in proptest::option::of(text()),
        ) {
            answers(&properties(task, id), &serde_json::to_vec(&body).unwrap())?;
        }
    }
}
