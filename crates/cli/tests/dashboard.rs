//! The dashboard end to end in headless Chromium (Debian's `chromium` and `chromium-driver`,
//! which CI installs): a batch is queued, the page shows the worker and its progress, failures
//! appear with their reasons, Retry on the page queues a job again, and hostile file names are
//! shown as text.

mod common;

use common::files::free_port;
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Start `videofarm serve` on a free port; returns it and its address.
fn serve(farm: &Farm) -> (Child, String) {
    let mut child = farm
        .cmd(["serve", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("serve says where it listens").unwrap();
        if let Some(rest) = line.split("http://").nth(1) {
            break format!("http://{}", rest.split_whitespace().next().unwrap());
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

fn chromedriver() -> (Child, u16) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is installed (apt-get install chromium chromium-driver)");
    wait_until("chromedriver listens", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (child, port)
}

async fn browser(port: u16, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1200,900", format!("--user-data-dir={}", profile.display())],
        }),
    );
    ClientBuilder::rustls()
        .expect("TLS setup")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("chromedriver starts Chromium")
}

/// Poll `check` in the page until it holds.
async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn texts(client: &Client, css: &str) -> Vec<String> {
    let mut out = Vec::new();
    for element in client.find_all(Locator::Css(css)).await.unwrap_or_default() {
        out.push(element.text().await.unwrap_or_default());
    }
    out
}

/// The page lists the three failures with their reasons, every hostile name as text: none
/// became markup or ran.
async fn failures_are_shown_as_text(client: &fantoccini::Client, img_name: &str) {
    eventually(
        "the failures are listed with their reasons",
        Duration::from_secs(30),
        || async {
            texts(client, ".failed-job .reason")
                .await
                .iter()
                .filter(|r| r.contains("not a video"))
                .count()
                == 3
        },
    )
    .await;
    let files = texts(client, ".failed-job .file").await;
    assert!(
        files.contains(&img_name.to_owned()),
        "the name is shown as text: {files:?}"
    );
    assert!(
        files.contains(&"caf\u{fffd}.mpg".to_owned()),
        "a name that is not UTF-8 is shown as near as it can be: {files:?}"
    );
    let reasons = texts(client, ".failed-job .reason").await.join("\n");
    assert!(
        reasons.contains("<script>alert(1)</script>.mpg"),
        "{reasons}"
    );
    // Nothing from a file name became markup or ran.
    let injected = client
        .execute(
            "return document.querySelectorAll('main img, main script').length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(injected, serde_json::json!(0));
    assert!(client.get_alert_text().await.is_err(), "no alert opened");
    // ffmpeg's words are fetched when a row is opened, and the row stays open while the page
    // refreshes. (The failure with ffmpeg's words may come after the three refused files.)
    eventually(
        "a failure with ffmpeg's words is listed",
        Duration::from_secs(20),
        || async {
            !texts(client, ".failed-job details.stderr summary")
                .await
                .is_empty()
        },
    )
    .await;
    client
        .find(Locator::Css(".failed-job details.stderr summary"))
        .await
        .expect("a failure with ffmpeg's words")
        .click()
        .await
        .unwrap();
    eventually(
        "ffmpeg's words are shown",
        Duration::from_secs(10),
        || async {
            texts(client, ".failed-job details.stderr[open] pre")
                .await
                .iter()
                .any(|t| t.contains("Invalid too big"))
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!texts(client, ".failed-job details.stderr[open] pre")
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_workers_progress_and_failures_and_retries_from_the_page() {
    let farm = Farm::new();
    let mut config = std::fs::read_to_string(&farm.config).unwrap();
    config.push_str(&format!("\n[paths]\nroots = [{:?}]\n", farm.root()));
    // A profile ffmpeg refuses for a picture this small (its trial's is larger): a failure
    // with ffmpeg's own words.
    config.push_str(
        "[profiles.narrow]\nextension = \"mkv\"\nvideo_codec = \"h264\"\n\
         args = [\"-vf\", \"crop=w='if(lt(iw,200),2*iw,iw)'\", \"-c:v\", \"libx264\"]\n",
    );
    std::fs::write(&farm.config, config).unwrap();

    // A batch: one real tape (slow: it takes its own length to encode) and two files that are
    // not videos, with names that are HTML.
    clip(&farm.input.join("tape.mpg"), 5);
    let hostile_dir = farm.input.join("<script>alert(1)<");
    std::fs::create_dir_all(&hostile_dir).unwrap();
    std::fs::write(hostile_dir.join("script>.mpg"), "not a video").unwrap();
    let img_name = "<img src=x onerror=alert(2)>.mpg";
    std::fs::write(farm.input.join(img_name), "not a video").unwrap();
    // And a name that is not UTF-8 (the page showed "[object Object]" for it).
    let odd = farm
        .input
        .join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"caf\xe9.mpg"));
    std::fs::write(&odd, "not a video").unwrap();
    farm.enqueue(&[&farm.input.join("tape.mpg")], "slow");
    clip(&farm.root().join("small.mpg"), 1);
    farm.enqueue(&[&farm.root().join("small.mpg")], "narrow");
    let failing = farm.enqueue(&[&hostile_dir, &farm.input.join(img_name), &odd], "archive");
    assert_eq!(failing.len(), 3);

    let (server, url) = serve(&farm);
    let (driver, port) = chromedriver();
    let client = browser(port, &farm.root().join("chromium")).await;
    client.goto(&url).await.unwrap();
    let worker = farm.spawn_worker("dash", 1);

    eventually(
        "the page shows the worker encoding with progress",
        Duration::from_secs(30),
        || async {
            let paces = texts(&client, ".worker[data-name=\"dash\"] .active .pace").await;
            paces
                .iter()
                .any(|p| p.contains("fps") && !p.starts_with("0.0%"))
        },
    )
    .await;
    assert_eq!(
        texts(&client, ".worker[data-name=\"dash\"] .active .file").await,
        vec!["tape.mpg"]
    );
    if let Ok(path) = std::env::var("VIDEOFARM_SCREENSHOT") {
        std::fs::write(path, client.screenshot().await.unwrap()).unwrap();
    }

    failures_are_shown_as_text(&client, img_name).await;

    // Stop the worker so the retried job stays visible as queued, then retry from the page.
    signal(worker.id(), "TERM");
    reap(worker);
    let row = format!(".failed-job[data-id=\"{}\"] button.retry", failing[1]);
    client
        .find(Locator::Css(&row))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until(
        "the retried job is queued again",
        Duration::from_secs(10),
        || farm.job(&failing[1])["state"] == "queued",
    );
    eventually(
        "the page lists it as waiting",
        Duration::from_secs(10),
        || async {
            !texts(
                &client,
                &format!(".waiting-job[data-id=\"{}\"] .state", failing[1]),
            )
            .await
            .is_empty()
        },
    )
    .await;

    // The chart of the last hours, drawn by the page, shows the job that finished.
    client.goto(&url).await.unwrap();
    eventually(
        "the chart shows the finished job",
        Duration::from_secs(10),
        || async {
            !texts(&client, "#chart rect.done").await.is_empty()
                && texts(&client, "#chart-summary")
                    .await
                    .iter()
                    .any(|t| t.starts_with("1 encoded"))
        },
    )
    .await;
    watch_problems_are_shown(&farm, &client).await;

    client.close().await.unwrap();
    reap(driver);
    reap(server);
}

/// A watch that cannot read a file (a link to nowhere, named in HTML) is shown at the top of
/// the page as text, while it runs and not after.
async fn watch_problems_are_shown(farm: &Farm, client: &fantoccini::Client) {
    let drop_dir = farm.root().join("drop");
    std::fs::create_dir_all(&drop_dir).unwrap();
    std::os::unix::fs::symlink("/nowhere", drop_dir.join("<b>lost<i>.mpg")).unwrap();
    let mut watch = farm
        .cmd(["watch", "--interval", "0.1", "--out"])
        .arg(&farm.out)
        .arg(&drop_dir)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually(
        "the page shows the watch's problem",
        Duration::from_secs(15),
        || async {
            texts(client, "#watch-problems .watch-problem")
                .await
                .iter()
                .any(|t| t.contains("<b>lost<i>.mpg: cannot be read"))
        },
    )
    .await;
    assert!(client
        .find(Locator::Css("#watch-problems b"))
        .await
        .is_err());
    signal(watch.id(), "TERM");
    assert!(watch.wait().unwrap().success());
    eventually(
        "the page no longer shows it",
        Duration::from_secs(15),
        || async {
            texts(client, "#watch-problems .watch-problem")
                .await
                .is_empty()
        },
    )
    .await;
}

/// A tape's page draws its report: the verdict, a span for each fault where it is on the tape,
/// the luma line through every point of the timeline, the faults in words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tapes_page_draws_its_report() {
    let farm = common::faults::with_quick(Farm::new());
    let tape = farm.input.join("capture.mpg");
    common::faults::faulty_tape(&tape, "mpeg");
    let out = farm
        .cmd(["run", "--profile", "quick", "--split", "off", "--out"])
        .arg(&farm.out)
        .arg(&tape)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let job = farm.jobs().remove(0);
    let report = &job["result"]["tape"];
    let events = report["events"].as_array().unwrap();
    let (server, url) = serve(&farm);
    let (driver, port) = chromedriver();
    let client = browser(port, &farm.root().join("chromium")).await;
    client
        .goto(&format!(
            "{}/job/{}",
            url.trim_end_matches('/'),
            job["id"].as_str().unwrap()
        ))
        .await
        .unwrap();
    eventually("the report is shown", Duration::from_secs(10), || async {
        texts(&client, "#tape-verdict").await == vec![report["verdict"].as_str().unwrap()]
    })
    .await;
    let spans = client.execute(
        "return [...document.querySelectorAll('#tape-chart rect.fault')].map(r => [r.getAttribute('class'), +r.getAttribute('x'), +r.getAttribute('x') + +r.getAttribute('width')])",
        vec![],
    )
    .await
    .unwrap();
    let spans = spans.as_array().unwrap();
    assert_eq!(spans.len(), events.len(), "{spans:?}");
    // The plot runs from x = 34 (the start) to x = 676 (the end of the tape).
    let blacks: Vec<_> = spans.iter().filter(|s| s[0] == "fault black").collect();
    assert_eq!(blacks.len(), 2, "{spans:?}");
    assert!(
        blacks[0][1].as_f64().unwrap() < 40.0,
        "black at the start: {spans:?}"
    );
    assert!(
        blacks[1][2].as_f64().unwrap() > 670.0,
        "black to the end: {spans:?}"
    );
    let points = client.execute(
        "return document.querySelector('#tape-chart polyline.luma').getAttribute('points').split(' ').length",
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(points, report["timeline"].as_array().unwrap().len());
    let listed = texts(&client, "#tape-events li").await;
    let said: Vec<&str> = events.iter().map(|e| e["text"].as_str().unwrap()).collect();
    assert_eq!(listed, said);
    // The list the overview polls carries the verdict and totals, not the events and timeline.
    let listed: serde_json::Value =
        serde_json::from_str(&http_get(&url, "/api/jobs?state=succeeded")).unwrap();
    let brief = &listed[0]["result"]["tape"];
    assert_eq!(brief["verdict"], report["verdict"]);
    assert_eq!(brief["frames"], report["frames"]);
    assert_eq!(brief["timeline"], serde_json::json!([]), "{brief}");
    assert_eq!(brief["events"], serde_json::json!([]));
    assert_eq!(brief["more_events"], events.len());
    if let Ok(path) = std::env::var("VIDEOFARM_TAPE_SCREENSHOT") {
        std::fs::write(path, client.screenshot().await.unwrap()).unwrap();
    }
    client.close().await.unwrap();
    reap(driver);
    reap(server);
}

#[test]
fn serving_beyond_loopback_without_a_token_is_refused() {
    let farm = Farm::new();
    let out = farm.run(["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("token"), "{}", text(&out.stderr));
    // A token anyone could guess is refused too.
    let out = farm.run(["serve", "--listen", "0.0.0.0:0", "--token", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("at least 16 characters"),
        "{}",
        text(&out.stderr)
    );
    // So is one no client can send: 16 spaces (a header value loses them).
    let out = farm.run(["serve", "--listen", "0.0.0.0:0", "--token", &" ".repeat(16)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("visible characters"),
        "{}",
        text(&out.stderr)
    );
}

/// GET a path from a local server, returning the body.
fn http_get(base: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // Chunked body: join the chunks.
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        body.to_owned()
    }
}

#[test]
fn on_rabbitmq_jobs_that_finished_while_nothing_watched_are_in_every_record() {
    // No `serve` runs while the batch is encoded: one job succeeds, one fails for good, one
    // is cancelled before any worker takes it.
    let farm = Farm::amqp("");
    clip(&farm.input.join("tape.mpg"), 1);
    std::fs::write(farm.input.join("broken.mpg"), b"not a video at all").unwrap();
    clip(&farm.input.join("later.mpg"), 1);
    let later = farm.enqueue(&[&farm.input.join("later.mpg")], "archive");
    let out = farm.cmd(["cancel", later[0].as_str()]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = farm.enqueue(
        &[&farm.input.join("tape.mpg"), &farm.input.join("broken.mpg")],
        "archive",
    );
    let worker = farm.spawn_worker("w", 1);
    wait_until("both jobs have ended", Duration::from_secs(60), || {
        let status = farm.status();
        status["succeeded"] == 1 && status["failed"] == 1
    });
    reap(worker);
    let status = farm.status();
    assert_eq!(
        (
            status["queued"].as_u64(),
            status["running"].as_u64(),
            status["cancelled"].as_u64()
        ),
        (Some(0), Some(0), Some(1)),
        "{status}"
    );

    // A machine that never followed the farm (no records file yet) reads the same from the
    // broker: the dashboard started now lists every job, its attempts and its numbers.
    std::fs::remove_file(farm.root().join("records.db")).unwrap();
    let (server, url) = serve(&farm);
    let jobs: serde_json::Value = serde_json::from_str(&http_get(&url, "/api/jobs")).unwrap();
    let state_of = |id: &str| {
        jobs.as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id)
            .unwrap_or_else(|| panic!("{id} is listed: {jobs}"))
            .clone()
    };
    let done = state_of(&ids[0]);
    assert_eq!(done["state"], "succeeded");
    assert!(done["result"]["output_size"].as_u64().unwrap() > 0);
    assert_eq!(state_of(&ids[1])["state"], "failed");
    assert!(state_of(&ids[1])["error"]
        .as_str()
        .unwrap()
        .contains("broken.mpg"));
    assert_eq!(state_of(&later[0])["state"], "cancelled");
    let page: serde_json::Value =
        serde_json::from_str(&http_get(&url, &format!("/api/jobs/{}", ids[0]))).unwrap();
    assert_eq!(page["history"][0]["outcome"], "succeeded");
    assert_eq!(page["history"][0]["worker"], "w");
    let metrics = http_get(&url, "/metrics");
    assert!(
        metrics.contains("videofarm_encode_seconds_count{profile=\"archive\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("videofarm_jobs{state=\"succeeded\"} 1"),
        "{metrics}"
    );
    reap(server);

    // `jobs` on the command line says the same.
    let out = farm.cmd(["jobs", "--json"]).output().unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
}
