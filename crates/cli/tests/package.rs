//! The Debian package (`scripts/deb`), installed on this machine as a user would install it
//! (`apt-get install ./videofarm_*.deb`, as root): the binary, the units, the configuration and
//! the `videofarm` user are there; the worker started as its unit says (its user, its binary,
//! its environment, with the test broker's configuration in place of the example's) does a
//! job; `apt-get purge` leaves nothing behind.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `key=value` lines of the `[Service]` section of a unit file.
fn service_value<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

fn installed() -> bool {
    Command::new("dpkg")
        .args(["-s", "videofarm"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The binary, the configuration, the user, and the worker's unit (returned).
fn what_it_installed() -> String {
    let version = sh("/usr/bin/videofarm", &["--version"]);
    assert!(version.starts_with("videofarm "), "{version}");
    assert!(Path::new("/etc/videofarm/videofarm.toml").is_file());
    let passwd = sh("getent", &["passwd", "videofarm"]);
    assert!(passwd.contains(":/var/lib/videofarm:"), "{passwd}");
    let unit = std::fs::read_to_string("/lib/systemd/system/videofarm-worker.service").unwrap();
    assert_eq!(service_value(&unit, "User"), ["videofarm"]);
    assert_eq!(
        service_value(&unit, "ExecStart"),
        ["/usr/bin/videofarm worker"]
    );
    assert_eq!(
        service_value(&unit, "Environment"),
        ["VIDEOFARM_CONFIG=/etc/videofarm/videofarm.toml"]
    );
    unit
}

/// `apt-get purge`: nothing of it is left.
fn purged_leaves_nothing() {
    sh("apt-get", &["purge", "-y", "videofarm"]);
    assert!(!installed());
    for gone in [
        "/usr/bin/videofarm",
        "/etc/videofarm",
        "/lib/systemd/system/videofarm-worker.service",
        "/var/lib/videofarm",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} is left");
    }
    assert!(
        !Command::new("getent")
            .args(["passwd", "videofarm"])
            .status()
            .unwrap()
            .success(),
        "the user is removed"
    );
}

#[test]
fn the_package_installs_runs_a_job_as_its_unit_says_and_purges_cleanly() {
    assert_eq!(
        sh("id", &["-u"]).trim(),
        "0",
        "installing a package needs root (CI runs as root)"
    );
    let farm = Farm::amqp("");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let built = sh(
        root.join("scripts/deb").to_str().unwrap(),
        &[
            "--bin",
            env!("CARGO_BIN_EXE_videofarm"),
            "--out",
            farm.root().join("deb").to_str().unwrap(),
        ],
    );
    let deb = PathBuf::from(built.lines().last().unwrap().trim());
    assert!(deb.is_file(), "{built}");
    sh(
        "apt-get",
        &[
            "install",
            "-y",
            "--no-install-recommends",
            deb.to_str().unwrap(),
        ],
    );
    assert!(installed());

    let unit = what_it_installed();

    // The unit's worker, against the test broker: the farm's folders opened to its user, its
    // configuration beside them with the records in the user's state folder.
    for dir in [farm.root(), &farm.input, &farm.out] {
        std::fs::create_dir_all(dir).unwrap();
        sh("chmod", &["0777", dir.to_str().unwrap()]);
    }
    clip(&farm.input.join("tape.mpg"), 1);
    let config = std::fs::read_to_string(&farm.config)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("records_file"))
        .collect::<Vec<_>>()
        .join("\n");
    let worker_config = farm.root().join("worker.toml");
    std::fs::write(
        &worker_config,
        format!("records_file = \"/var/lib/videofarm/records.db\"\n{config}\n"),
    )
    .unwrap();
    sh("chmod", &["0644", worker_config.to_str().unwrap()]);
    let exec: Vec<&str> = service_value(&unit, "ExecStart")[0]
        .split_whitespace()
        .collect();
    let log = farm.root().join("worker.log");
    let mut worker = Command::new("setpriv")
        .args([
            "--reuid=videofarm",
            "--regid=videofarm",
            "--init-groups",
            "--",
        ])
        .args(&exec)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/var/lib/videofarm")
        .env("VIDEOFARM_CONFIG", &worker_config)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    farm.enqueue(&[&farm.input.join("tape.mpg")], "archive");
    wait_until(
        "the packaged worker encodes the job",
        Duration::from_secs(60),
        || farm.out.join("tape.mkv").is_file(),
    );
    signal(worker.id(), "TERM");
    assert!(worker.wait().unwrap().success(), "{}", farm.log("worker"));
    let jobs = farm.jobs();
    assert_eq!(jobs[0]["state"], "succeeded", "{jobs:#?}");

    purged_leaves_nothing();
}
