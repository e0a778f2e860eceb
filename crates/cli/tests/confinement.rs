//! A worker with media roots reads and writes only under them, through links and all; file
//! names up to the file system's limit encode; links in a scanned folder are never dropped
//! silently.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// `run --json` over `paths`; the exit code and the records.
fn run(farm: &Farm, out: &Path, paths: &[&Path], extra: &[&str]) -> (i32, Vec<Value>) {
    let mut cmd = farm.cmd(["run", "--json", "--out"]);
    cmd.arg(out).args(paths).args(extra);
    let output = cmd.output().unwrap();
    let records = run_results(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "run --json printed JSON ({e}): {}\n{}",
            text(&output.stdout),
            text(&output.stderr)
        )
    });
    (output.status.code().unwrap_or(-1), records)
}

fn by_input<'a>(records: &'a [Value], name: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["input"].as_str().is_some_and(|i| i.ends_with(name)))
        .unwrap_or_else(|| panic!("a job for {name} in {records:?}"))
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn links_cannot_lead_a_worker_out_of_its_roots_to_read_or_to_write() {
    let farm = Farm::new();
    let outside = farm.root().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    clip(&outside.join("secret.mpg"), 1);
    std::fs::write(outside.join("victim.conf"), b"precious").unwrap();
    let mut config = std::fs::read_to_string(&farm.config).unwrap();
    config.push_str(&format!(
        "\n[paths]\nroots = [{:?}, {:?}]\n",
        farm.input, farm.out
    ));
    std::fs::write(&farm.config, config).unwrap();
    clip(&farm.input.join("good.mpg"), 1);
    std::os::unix::fs::symlink(outside.join("secret.mpg"), farm.input.join("link.mpg")).unwrap();
    std::fs::create_dir_all(&farm.out).unwrap();
    std::os::unix::fs::symlink(&outside, farm.out.join("escape")).unwrap();

    // Reading: the folder's link to a file outside is refused by name, the real file encodes.
    let (code, records) = run(&farm, &farm.out, &[&farm.input], &[]);
    assert_eq!(code, 1, "{records:?}");
    assert_eq!(by_input(&records, "good.mpg")["state"], "succeeded");
    let link = by_input(&records, "link.mpg");
    assert_eq!(link["state"], "failed");
    let error = link["error"].as_str().unwrap();
    assert!(
        error.contains("outside this worker's allowed roots") && error.contains("link.mpg"),
        "{error}"
    );
    assert_eq!(link["attempts"], 1, "refusals are never retried");

    // Writing: an output folder that is a link to outside, with and without --overwrite.
    for (out, extra) in [
        (farm.out.join("escape"), vec![]),
        (farm.out.join("escape/deeper"), vec!["--overwrite"]),
    ] {
        let (code, records) = run(&farm, &out, &[&farm.input.join("good.mpg")], &extra);
        assert_eq!(code, 1, "{records:?}");
        let error = records[0]["error"].as_str().unwrap();
        assert!(
            error.contains("output") && error.contains("outside this worker's allowed roots"),
            "{error}"
        );
    }
    // And the file behind such a link is never replaced.
    let victim = farm.input.join("victim.mpg");
    clip(&victim, 1);
    let (code, _) = run(
        &farm,
        &farm.out.join("escape"),
        &[&victim],
        &["--overwrite", "--profile", "archive"],
    );
    assert_eq!(code, 1);
    assert_eq!(
        listing(&outside),
        vec!["secret.mpg", "victim.conf"],
        "nothing written outside the roots"
    );
    assert_eq!(
        std::fs::read(outside.join("victim.conf")).unwrap(),
        b"precious"
    );
}

#[test]
fn an_output_that_is_a_link_is_never_followed() {
    let farm = Farm::new();
    let outside = farm.root().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim.conf"), b"precious").unwrap();
    clip(&farm.input.join("tape.mpg"), 1);
    std::fs::create_dir_all(&farm.out).unwrap();
    std::os::unix::fs::symlink(outside.join("victim.conf"), farm.out.join("tape.mkv")).unwrap();
    let (code, records) = run(&farm, &farm.out, &[&farm.input], &[]);
    assert_eq!(code, 1, "{records:?}");
    let error = records[0]["error"].as_str().unwrap();
    assert!(error.contains("symbolic link"), "{error}");
    assert_eq!(
        std::fs::read(outside.join("victim.conf")).unwrap(),
        b"precious"
    );
    // --overwrite replaces the link itself, never the file it points to.
    let (code, records) = run(&farm, &farm.out, &[&farm.input], &["--overwrite"]);
    assert_eq!(code, 0, "{records:?}");
    assert!(!farm.out.join("tape.mkv").is_symlink());
    assert_eq!(
        std::fs::read(outside.join("victim.conf")).unwrap(),
        b"precious"
    );
}

#[test]
fn a_file_name_as_long_as_the_file_system_allows_is_encoded() {
    let farm = Farm::new();
    let name = format!("{}.mpg", "a".repeat(246));
    clip(&farm.input.join(&name), 1);
    let (code, records) = run(&farm, &farm.out, &[&farm.input], &[]);
    assert_eq!(code, 0, "{records:?}");
    assert!(farm.out.join(format!("{}.mkv", "a".repeat(246))).is_file());
    assert_eq!(listing(&farm.out).len(), 1, "no temporary left");
}

#[test]
fn broken_and_looping_links_in_a_folder_fail_with_their_reason_instead_of_vanishing() {
    let farm = Farm::new();
    clip(&farm.input.join("good.mpg"), 1);
    std::os::unix::fs::symlink(farm.root().join("nowhere.mpg"), farm.input.join("gone.mpg"))
        .unwrap();
    let looped = farm.input.join("loop.mpg");
    std::os::unix::fs::symlink(&looped, &looped).unwrap();
    let (code, records) = run(&farm, &farm.out, &[&farm.input], &[]);
    assert_eq!(code, 1, "{records:?}");
    assert_eq!(records.len(), 3, "{records:?}");
    assert_eq!(by_input(&records, "good.mpg")["state"], "succeeded");
    for (name, why) in [
        ("gone.mpg", "a symbolic link to a file that does not exist"),
        ("loop.mpg", "loops"),
    ] {
        let job = by_input(&records, name);
        assert_eq!(job["state"], "failed", "{name}");
        assert!(
            job["error"].as_str().unwrap().contains(why),
            "{name}: {}",
            job["error"]
        );
    }
    wait_until("nothing left behind", Duration::from_secs(1), || {
        listing(&farm.out) == vec!["good.mkv"]
    });
}
