//! Workers that cannot see the media, and the `serve` that holds it: a worker in a mount
//! namespace of its own where the media folder is hidden under an empty tmpfs (as root, as CI
//! runs), so the only way to the files is through `serve`.

use super::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const TOKEN: &str = "transfer-test-token-0123456789";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `videofarm serve` of `farm` on `port`, its roots the media folder.
pub fn serve(farm: &Farm, port: u16) -> Child {
    let child = farm
        .cmd(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(farm.log_path("serve")).unwrap())
        .spawn()
        .unwrap();
    wait_until("serve listens", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    child
}

/// A worker of `farm` in a mount namespace where `hidden` is an empty folder.
pub fn blind_worker(farm: &Farm, hidden: &Path, name: &str) -> Child {
    let mut cmd = without_our_env(Command::new("unshare"));
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        // The script is fixed; the paths and the command come as its arguments.
        .arg("mount -t tmpfs tmpfs \"$0\" && exec \"$@\"")
        .arg(hidden)
        .arg(BIN);
    if let Some(broker) = &farm.broker {
        cmd.arg("--broker").arg(broker);
    }
    cmd.arg("--config")
        .arg(&farm.config)
        .args(["worker", "--name", name, "--concurrency", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(farm.log_path(name)).unwrap())
        .spawn()
        .expect("unshare (util-linux) runs")
}

pub fn leftovers(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(leftovers(&path));
        } else {
            found.push(path.display().to_string());
        }
    }
    found
}

/// Give `farm` the media folder `media` as its roots, served to workers that cannot see it
/// at `files_url`, with more settings (`keys`) and tables (`tables`, such as profiles);
/// returns the workers' transfer cache.
pub fn media_config(
    farm: &Farm,
    media: &Path,
    files_url: &str,
    keys: &str,
    tables: &str,
) -> PathBuf {
    let cache = farm.root().join("cache");
    let config = std::fs::read_to_string(&farm.config).unwrap();
    std::fs::write(
        &farm.config,
        format!(
            "token = {TOKEN:?}\nfiles_url = {files_url:?}\ntransfer_cache = {cache:?}\n{keys}{config}\n[paths]\nroots = [{media:?}]\n{tables}"
        ),
    )
    .unwrap();
    cache
}

/// A plain GET with the farm's token (the response, headers and all).
pub fn http_get(port: u16, path: &str) -> String {
    http(port, &format!("GET {path} HTTP/1.1\r\n"), "")
}

/// A JSON POST (an empty object) with the farm's token, as the page sends its changes (the
/// response, headers and all).
pub fn http_post(port: u16, path: &str) -> String {
    http(
        port,
        &format!("POST {path} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"),
        "{}",
    )
}

/// One request to 127.0.0.1:`port`: `head` (the request line and any headers), the farm's
/// token, then `body`.
fn http(port: u16, head: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "{head}Host: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n{body}"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// What `serve` on `port` says it sent of inputs (`/metrics`).
pub fn bytes_sent(port: u16) -> u64 {
    let metrics = http_get(port, "/metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("videofarm_transfer_bytes_total{direction=\"sent\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("the metrics count bytes sent: {metrics}"))
}
