//! Every open, create, rename, link, removal and listing under the media roots goes through
//! one layer, `videofarm_core::confine` (its `fs` module for the operations). This test reads
//! the code of every crate and finds each direct use of `std::fs` or `tokio::fs` outside that
//! layer: each must be in a file listed below, with the reason its paths are never media
//! paths. A new direct use fails here, and so does a listed file that no longer needs listing.

use std::path::{Path, PathBuf};

/// Files that use the file system directly, and why none of it is under the media roots.
const NOT_MEDIA: &[(&str, &str)] = &[
    (
        "crates/queue-amqp/src/follow/tests.rs",
        "the records follower's unit tests: a temporary folder of their own for records files",
    ),
    (
        "crates/bench/src/standin.rs",
        "the bench's stand-in for ffmpeg: its own one-line files, in the bench's folder",
    ),
    (
        "crates/bench/src/transfer.rs",
        "the benchmark's own scratch files",
    ),
    ("crates/cli/src/broker.rs", "/proc/sys/kernel/hostname"),
    ("crates/cli/src/settings/file.rs", "the configuration file"),
    (
        "crates/cli/src/settings/fuzz.rs",
        "the config fuzzer's temporary files (tests only)",
    ),
    (
        "crates/ffmpeg/src/tools.rs",
        "the size and date of the ffmpeg binaries",
    ),
    ("crates/queue-amqp/src/celery/control.rs", "/proc/loadavg"),
    (
        "crates/queue-amqp/src/records/mod.rs",
        "the folder of the RabbitMQ records cache",
    ),
    (
        "crates/queue-sqlite/src/lib.rs",
        "the folder of the queue database",
    ),
    (
        "crates/worker/src/cache.rs",
        "a remote worker's cache of fetched inputs (its own folder, not a media root)",
    ),
    (
        "crates/worker/src/capability.rs",
        "the capability cache file and the probe's scratch folder",
    ),
    (
        "crates/worker/src/transfer/mod.rs",
        "a remote worker's local copies, in its cache",
    ),
    (
        "crates/worker/src/attempt/fetch.rs",
        "a remote worker's work folder, in its cache",
    ),
];

/// The layer itself.
const LAYER: &str = "crates/core/src/confine/";

/// The calls that touch the file system (a type named in a signature does not).
const CALLS: &[&str] = &[
    "File::open(",
    "File::create(",
    "File::create_new(",
    "File::options(",
    "OpenOptions::new(",
    "fs::read(",
    "fs::read_to_string(",
    "fs::write(",
    "fs::rename(",
    "fs::remove_file(",
    "fs::remove_dir(",
    "fs::remove_dir_all(",
    "fs::create_dir(",
    "fs::create_dir_all(",
    "fs::hard_link(",
    "fs::copy(",
    "fs::metadata(",
    "fs::symlink_metadata(",
    "fs::read_dir(",
    "fs::canonicalize(",
    "fs::read_link(",
    "fs::set_permissions(",
    "os::unix::fs::symlink(",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The code of a file without its unit tests (they make their own files in temporary folders).
fn without_tests(text: &str) -> &str {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if line.trim() == "#[cfg(test)]" {
            let rest = &text[at + line.len()..];
            if rest.trim_start().starts_with("mod ") {
                return &text[..at];
            }
        }
        at += line.len();
    }
    text
}

/// The direct file system calls in `code`: a call through `std::fs`/`tokio::fs` (or a bare
/// `fs::` when the file imports `std::fs` or `tokio::fs` as `fs`), and `File::`/`OpenOptions`.
fn direct_calls(code: &str) -> Vec<(usize, String)> {
    let bare_is_std = code.contains("use std::fs;") || code.contains("use tokio::fs;");
    let mut found = Vec::new();
    for (number, line) in code.lines().enumerate() {
        let line = line.split("//").next().unwrap_or("");
        for call in CALLS {
            for (at, _) in line.match_indices(call) {
                let before = &line[..at];
                let direct = if call.starts_with("fs::") {
                    before.ends_with("std::") || before.ends_with("tokio::") || {
                        bare_is_std && !before.ends_with("::")
                    }
                } else {
                    true
                };
                if direct {
                    found.push((number + 1, line.trim().to_owned()));
                }
            }
        }
    }
    found
}

#[test]
fn every_file_operation_on_media_goes_through_the_one_layer() {
    let root = workspace();
    let mut files = Vec::new();
    for krate in std::fs::read_dir(root.join("crates")).unwrap().flatten() {
        let src = krate.path().join("src");
        if src.is_dir() {
            sources(&src, &mut files);
        }
    }
    assert!(files.len() > 50, "the crates' code was found: {files:?}");
    let mut stray = Vec::new();
    let mut listed_used = std::collections::BTreeSet::new();
    let mut layer_calls = 0;
    for file in &files {
        let name = file
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(file).unwrap();
        let calls = direct_calls(without_tests(&text));
        if name.starts_with(LAYER) {
            layer_calls += calls.len();
            continue;
        }
        if calls.is_empty() {
            continue;
        }
        if NOT_MEDIA.iter().any(|(listed, _)| *listed == name) {
            listed_used.insert(name);
            continue;
        }
        for (line, code) in calls {
            stray.push(format!("{name}:{line}: {code}"));
        }
    }
    assert!(
        stray.is_empty(),
        "file system calls outside the confined layer (use videofarm_core::confine::fs, or list \
         the file in NOT_MEDIA with the reason its paths are never media):\n{}",
        stray.join("\n")
    );
    assert!(layer_calls > 10, "the layer itself was read");
    let unused: Vec<_> = NOT_MEDIA
        .iter()
        .filter(|(f, _)| !listed_used.contains(*f))
        .collect();
    assert!(
        unused.is_empty(),
        "listed but no longer using the file system: {unused:?}"
    );
}

#[test]
fn the_scan_sees_each_kind_of_direct_call() {
    let code = "fn a() {\n    std::fs::rename(a, b);\n    let f = File::open(p);\n    \
                tokio::fs::OpenOptions::new();\n    fs::rename(a, b); // the layer's\n}\n";
    let calls = direct_calls(code);
    assert_eq!(
        calls.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    let std_bare = format!("use std::fs;\n{code}");
    assert_eq!(direct_calls(&std_bare).len(), 4);
    let tested = "fn a() {}\n#[cfg(test)]\nmod tests {\n    std::fs::write(p, b);\n}\n";
    assert!(direct_calls(without_tests(tested)).is_empty());
}
