//! The hostile inputs videofarm's parsers are fuzzed with, as `proptest` strategies: wherever
//! bytes from outside enter (a broker message, a Celery task, a file's head, ffmpeg's output, a
//! config file, an HTTP body), a test feeds them these and checks that the parser answers with
//! a value or a plain error, never a panic, a hang or an unbounded message.
//!
//! Each target runs [`cases`] inputs in the test suite (256 unless `PROPTEST_CASES` says more:
//! the long runs in `bench/README.md` set it). A failing input is shrunk and its seed kept in
//! `proptest-regressions/` beside the test, which is committed: it is run first from then on.

pub use proptest;
use proptest::prelude::*;
use serde_json::Value;

/// How many inputs each target runs: `PROPTEST_CASES`, or 256.
pub fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256)
}

/// The configuration every fuzz target uses.
pub fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        ..ProptestConfig::default()
    }
}

/// Text as hostile as text gets: control characters, `..` and `/`, quotes and backslashes,
/// odd Unicode, empty, and long.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "\\PC{0,40}",
        2 => "[\\x00-\\x1f/.\\\\\"' a-z]{0,40}",
        1 => Just(String::new()),
        1 => "[a-z]{0,8}".prop_map(|s| format!("../../{s}")),
        1 => (0usize..100_000).prop_map(|n| "x".repeat(n)),
    ]
}

/// Numbers a parser may not expect: negative, zero, huge, fractional, non-finite as text.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        Just(Value::from(0)),
        Just(Value::from(u64::MAX)),
        Just(Value::from(-1)),
    ]
}

/// Any JSON value, nested a few levels, whose objects mostly use `keys` (the fields the parser
/// under test reads), so that real fields get hostile values and wrong types.
pub fn json(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        4 => proptest::sample::select(keys).prop_map(str::to_owned),
        1 => text(),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        number(),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `base` (a valid message) with one field, found by its path of keys, replaced by a hostile
/// value: the deepest coverage for a parser whose valid input is known.
pub fn mutated(base: Value, keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let paths = leaf_paths(&base);
    (proptest::sample::select(paths), json(keys)).prop_map(move |(path, value)| {
        let mut out = base.clone();
        if let Some(slot) = path.iter().try_fold(&mut out, |v, k| v.get_mut(k.as_str())) {
            *slot = value;
        }
        out
    })
}

fn leaf_paths(value: &Value) -> Vec<Vec<String>> {
    let mut paths = vec![Vec::new()];
    if let Value::Object(map) = value {
        for (k, v) in map {
            for mut rest in leaf_paths(v) {
                rest.insert(0, k.clone());
                paths.push(rest);
            }
        }
    }
    paths
}

/// Raw bytes, up to 4 KiB, sometimes starting with `prefix` (a format's magic number), so the
/// parser gets past its first check.
pub fn bytes(prefix: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..4096),
    )
        .prop_map(move |(prefixed, rest)| {
            if prefixed {
                prefix.iter().copied().chain(rest).collect()
            } else {
                rest
            }
        })
}
