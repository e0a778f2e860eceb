//! Fuzzing the config file, where a user's (or an example's) text enters every command.

use super::*;
use proptest::prelude::*;
use videofarm_fuzzing::text;

const KEYS: &[&str] = &[
    "broker",
    "ffmpeg",
    "ffprobe",
    "default_profile",
    "workers",
    "split",
    "decode_errors",
    "decode_check",
    "max_lost_attempts",
    "lease_secs",
    "heartbeat_secs",
    "max_attempts",
    "retry_backoff_secs",
    "stall_secs",
    "timeout_secs",
    "watch_settle_secs",
    "watch_interval_secs",
    "amqp_prefix",
    "amqp_queue_expires_secs",
    "amqp_consumer_timeout_secs",
    "token",
    "tags",
    "records_file",
    "files_url",
    "transfer",
    "transfer_cache",
    "transfer_cache_gb",
    "transfer_ahead",
    "transfer_split_wait_secs",
    "transfer_outage_secs",
    "roots",
    "map",
    "extension",
    "args",
    "video_codec",
    "queue",
    "tasks",
];
const TABLES: &[&str] = &[
    "",
    "[paths]",
    "[profiles.mine]",
    "[celery]",
    "[celery.tasks.t]",
];

/// A TOML value: a string (as a JSON string, which TOML reads the same), a number, a
/// boolean, or a list of those.
fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        text().prop_map(|t| serde_json::to_string(&t).unwrap()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
    ];
    prop_oneof![
        3 => leaf.clone(),
        1 => proptest::collection::vec(leaf, 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
    ]
}

fn config() -> impl Strategy<Value = String> {
    let line = (
        proptest::sample::select(TABLES),
        proptest::sample::select(KEYS),
        value(),
    )
        .prop_map(|(table, key, value)| format!("{table}\n{key} = {value}\n"));
    prop_oneof![
        4 => proptest::collection::vec(line, 0..10).prop_map(|l| l.concat()),
        1 => text(),
    ]
}

proptest! {
    #![proptest_config(videofarm_fuzzing::config())]

    /// Settings, or an error that names the file; never a panic.
    #[test]
    fn any_config_file(text in config()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("videofarm.toml");
        std::fs::write(&path, &text).unwrap();
        if let Err(e) = Settings::resolve(None, Some(&path)) {
            let said = e.to_string();
            prop_assert!(!said.is_empty() && said.len() < 4000, "{said}");
        }
    }
}
