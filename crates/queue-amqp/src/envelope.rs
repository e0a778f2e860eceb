//! The job message on the wire: JSON, versioned, carrying the spec and the attempt count (a
//! classic queue does not count deliveries, so the message does).

use serde::{Deserialize, Serialize};
use videofarm_core::{JobId, JobSpec};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version; a worker refuses versions it does not know.
    pub v: u32,
    pub id: JobId,
    pub spec: JobSpec,
    /// Attempts made so far (failed or lost).
    #[serde(default)]
    pub attempts: u32,
    /// Of those, the ones lost with their worker (counted apart from failures).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lost: u32,
    /// The last attempt's reason, and for failed jobs the reason they failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_tail: Option<String>,
    /// Milliseconds since the epoch when the job was queued.
    #[serde(default)]
    pub created_ms: i64,
    /// When it landed in the failed queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_ms: Option<i64>,
    /// A split tape back from a wait for its chunks: the attempt that planned it is still open,
    /// so leasing it again starts no new attempt in the records.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub waiting: bool,
}

pub const VERSION: u32 = 1;

impl Envelope {
    /// A job not tried yet, queued at `created_ms`.
    pub fn new(id: JobId, spec: JobSpec, created_ms: i64) -> Self {
        Self {
            v: VERSION,
            id,
            spec,
            attempts: 0,
            lost: 0,
            error: None,
            stderr_tail: None,
            created_ms,
            failed_ms: None,
            waiting: false,
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The largest job message a worker reads: a real one is well under 10 KiB.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Why a message is not a job this worker can take. The reason is bounded whatever the message
/// holds.
pub fn parse(data: &[u8]) -> Result<Envelope, String> {
    if data.len() > MAX_MESSAGE {
        return Err(format!(
            "the message is {} bytes; a job message is at most {MAX_MESSAGE}",
            data.len()
        ));
    }
    parse_bounded(data).map_err(|why| videofarm_core::job::truncate(&why, 500))
}

fn parse_bounded(data: &[u8]) -> Result<Envelope, String> {
    let value: serde_json::Value =
        serde_json::from_slice(data).map_err(|e| format!("the message is not JSON ({e})"))?;
    let version = value.get("v").and_then(|v| v.as_u64());
    if version != Some(u64::from(VERSION)) {
        return Err(format!(
            "the message is not a videofarm job (format version {}, expected {VERSION})",
            version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "missing".into())
        ));
    }
    let env: Envelope =
        serde_json::from_value(value).map_err(|e| format!("the job message is malformed ({e})"))?;
    env.id
        .check()
        .and_then(|()| env.spec.check())
        .map_err(|why| format!("the job message is malformed: {why}"))?;
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_and_malformed_messages_are_refused_with_a_reason() {
        assert!(parse(b"hello").unwrap_err().contains("not JSON"));
        assert!(parse(br#"{"task":"encode"}"#)
            .unwrap_err()
            .contains("not a videofarm job"));
        assert!(parse(br#"{"v":1,"id":"x"}"#)
            .unwrap_err()
            .contains("malformed"));
        let job = |id: &str, profile: &str| {
            serde_json::json!({"v": 1, "id": id, "spec": {"input": "/m/a.mpg", "output": "/m/a.mkv", "profile": profile, "key": "k"}}).to_string()
        };
        assert!(parse(job("abc-1", "archive").as_bytes()).is_ok());
        for (id, profile, says) in [
            ("../../x", "archive", "not a job id"),
            ("zz/../x", "archive", "not a job id"),
            ("ok", "../../etc", "not a profile name"),
        ] {
            let why = parse(job(id, profile).as_bytes()).unwrap_err();
            assert!(why.contains(says), "{id} {profile}: {why}");
        }
        let huge = job("ok", &"p".repeat(10 << 20));
        let why = parse(huge.as_bytes()).unwrap_err();
        assert!(why.contains("at most") && why.len() < 200, "{why}");
        let long_profile = job("ok", &"p".repeat(20_000));
        let why = parse(long_profile.as_bytes()).unwrap_err();
        assert!(why.len() < 600, "bounded: {} bytes", why.len());
    }
}

/// Fuzzing the job message, where a broker's bytes enter a worker (see `videofarm-fuzzing`).
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use videofarm_core::JobSpec;
    use videofarm_fuzzing::{bytes, json, mutated};

    const KEYS: &[&str] = &[
        "v",
        "id",
        "spec",
        "input",
        "output",
        "profile",
        "key",
        "overwrite",
        "priority",
        "input_size",
        "parent",
        "split",
        "chunk",
        "require",
        "index",
        "count",
        "first",
        "end",
        "seek_s",
        "window",
        "keep",
        "attempts",
        "lost",
        "created_ms",
        "waiting",
        "unix_bytes",
    ];

    fn valid() -> serde_json::Value {
        let spec = JobSpec {
            input: "/media/in/a.mpg".into(),
            output: "/media/out/a.mkv".into(),
            profile: "archive".into(),
            key: "0123456789abcdef".into(),
            ..Default::default()
        };
        serde_json::to_value(Envelope::new(JobId("0123456789abcdef".into()), spec, 1)).unwrap()
    }

    /// A job, checked, or a reason of bounded length; never a panic.
    fn answers(data: &[u8]) -> Result<(), TestCaseError> {
        match parse(data) {
            Ok(env) => {
                prop_assert!(env.id.check().is_ok() && env.spec.check().is_ok());
            }
            Err(why) => prop_assert!(why.len() <= 600, "{} bytes", why.len()),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(videofarm_fuzzing::config())]

        #[test]
        fn any_bytes(data in bytes(b"{\"v\":1,")) {
            answers(&data)?;
        }

        #[test]
        fn any_json(value in json(KEYS)) {
            answers(&serde_json::to_vec(&value).unwrap())?;
        }

        #[test]
        fn a_job_with_one_field_made_hostile(value in mutated(valid(), KEYS)) {
            answers(&serde_json::to_vec(&value).unwrap())?;
        }
    }
}
