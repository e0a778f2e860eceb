//! Which profiles this worker can run, found out at its start: every encoder and filter a
//! profile names must be in this ffmpeg, and a short trial encode with the profile's own
//! arguments must work (a hardware encoder listed by `ffmpeg -encoders` often fails at run time
//! without its device or driver).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use videofarm_core::{Profile, Profiles};
use videofarm_ffmpeg::Tools;

/// The most verdicts the cache keeps.
const MAX_VERDICTS: usize = 1000;
/// The rules that judge a profile, by number: a verdict kept under other rules is not used.
/// Raise it when a trial or what counts as runnable changes (2: a stream copy needs no trial).
const TRIAL_RULES: u32 = 2;
/// How long a trial encode may take before the profile counts as not runnable here.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(20);

/// Where hardware encoders' devices appear: a trial's verdict holds while the same nodes are
/// there.
const DEVICE_FOLDERS: &[&str] = &["/dev/dri", "/dev"];
/// Device node names (in [`DEVICE_FOLDERS`]) a hardware encoder may use.
const DEVICE_PREFIXES: &[&str] = &["renderD", "card", "nvidia", "dxg", "accel"];

/// The device nodes present that a hardware encoder could use, in words.
fn devices() -> String {
    let mut found: Vec<String> = DEVICE_FOLDERS
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok().map(|d| (dir, d)))
        .flat_map(|(dir, entries)| {
            entries.flatten().filter_map(move |e| {
                let name = e.file_name().to_string_lossy().into_owned();
                DEVICE_PREFIXES
                    .iter()
                    .any(|p| name.starts_with(p))
                    .then(|| format!("{dir}/{name}"))
            })
        })
        .collect();
    found.sort();
    found.join(",")
}

/// What a worker knows of its profiles when it starts, and the trials it leaves for later.
pub struct Found {
    /// The profiles it can run.
    pub runnable: Vec<String>,
    /// The profiles it cannot run, and why.
    pub not: Vec<(String, String)>,
    /// The profiles not tried yet: not run until [`Found::later`] finds them runnable.
    pub untried: Vec<String>,
    later: Later,
}

/// What the trials left for later need.
struct Later {
    tools: Tools,
    cache: Option<PathBuf>,
    known: BTreeMap<String, Result<(), String>>,
    /// Each profile not tried yet, with its key in `known`.
    untried: Vec<(Profile, String)>,
    /// Every profile's name and key, in the configuration's order.
    keyed: Vec<(String, String)>,
}

/// The profiles this worker can run, and for each one it cannot, why; the trial encodes of
/// profiles other than `first` are left for [`Found::later`], so that a worker's first job
/// waits for no trial it does not need. Verdicts are kept in `cache` (a JSON file), keyed by
/// what they depend on: the ffmpeg binary (path, size, time), the device nodes present
/// (`/dev/dri/renderD128`, `/dev/nvidia0`...) and the profile. A worker restarted on the same
/// machine starts at once, and a profile that failed is tried again only once one of those
/// changed (a device plugged in, another ffmpeg).
pub async fn runnable_profiles(
    tools: &Tools,
    profiles: &Profiles,
    cache: Option<&Path>,
    first: &[String],
) -> Found {
    let mut known: BTreeMap<String, Result<(), String>> = cache
        .and_then(|c| std::fs::read(c).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let binary = std::fs::metadata(&tools.ffmpeg)
        .map(|m| format!("{:?}:{}:{:?}", tools.ffmpeg, m.len(), m.modified().ok()))
        .unwrap_or_else(|_| format!("{:?}", tools.ffmpeg));
    let devices = devices();
    let key = |profile: &Profile| {
        let text = format!(
            "{TRIAL_RULES}\n{binary}\n{devices}\n{}",
            serde_json::to_string(profile).unwrap_or_default()
        );
        blake3::hash(text.as_bytes()).to_hex().to_string()
    };
    let keyed: Vec<(Profile, String)> = profiles.iter().map(|p| (p.clone(), key(p))).collect();
    // A profile that only copies needs no trial: runnable, whatever an older rule kept for it.
    for (profile, k) in &keyed {
        if copies_only(profile) {
            known.insert(k.clone(), Ok(()));
        }
    }
    let untried: Vec<(Profile, String)> = keyed
        .iter()
        .filter(|(_, k)| !known.contains_key(k))
        .cloned()
        .collect();
    // Only what the first job may need is tried now: no ffmpeg runs at all when that is known.
    let (now, later): (Vec<_>, Vec<_>) = untried
        .into_iter()
        .partition(|(p, _)| first.contains(&p.name));
    try_each(tools, &now, &mut known).await;
    let tried_now = !now.is_empty();
    let untried = later;
    let later = Later {
        tools: tools.clone(),
        cache: cache.map(Path::to_owned),
        known,
        untried,
        keyed: keyed.into_iter().map(|(p, k)| (p.name, k)).collect(),
    };
    if tried_now {
        later.keep();
    }
    let untried_names: Vec<String> = later.untried.iter().map(|(p, _)| p.name.clone()).collect();
    let (runnable, not) = later.lists();
    Found {
        runnable,
        not,
        untried: untried_names,
        later,
    }
}

impl Found {
    /// Try the profiles left untried (one after another, beside the jobs), and say what this
    /// worker can run and cannot then: every profile in one list or the other.
    pub async fn later(mut self) -> (Vec<String>, Vec<(String, String)>) {
        let untried = std::mem::take(&mut self.later.untried);
        if !untried.is_empty() {
            try_each(&self.later.tools, &untried, &mut self.later.known).await;
            self.later.keep();
        }
        self.later.lists()
    }
}

/// Find each of `profiles` runnable or not (with why) into `known`: what this ffmpeg lacks
/// needs no trial (its two lists are read at once), the rest get a trial encode each.
async fn try_each(
    tools: &Tools,
    profiles: &[(Profile, String)],
    known: &mut BTreeMap<String, Result<(), String>>,
) {
    if profiles.is_empty() {
        return;
    }
    let (encoders, filters) = tokio::join!(listed(tools, "-encoders"), listed(tools, "-filters"));
    for (profile, k) in profiles {
        let verdict = match missing(profile, &encoders, &filters) {
            Some(why) => Err(why),
            None => trial(tools, profile).await,
        };
        known.insert(k.clone(), verdict);
    }
}

impl Later {
    /// The profiles tried, runnable or not (with why), in the configuration's order.
    fn lists(&self) -> (Vec<String>, Vec<(String, String)>) {
        let (mut runnable, mut not) = (Vec::new(), Vec::new());
        for (name, k) in &self.keyed {
            match self.known.get(k) {
                Some(Ok(())) => runnable.push(name.clone()),
                Some(Err(why)) => not.push((name.clone(), why.clone())),
                None => {}
            }
        }
        (runnable, not)
    }

    /// Keep the verdicts in the cache file. Verdicts for other configurations are kept (several
    /// farms may share a machine), within bounds: past them, only this one's.
    fn keep(&self) {
        let Some(cache) = &self.cache else { return };
        let mut known = self.known.clone();
        if known.len() > MAX_VERDICTS {
            let present: BTreeSet<&String> = self.keyed.iter().map(|(_, k)| k).collect();
            known.retain(|k, _| present.contains(k));
        }
        // Written whole then renamed: two workers starting at once never read half a file.
        let temp = cache.with_extension(format!("{}.tmp", std::process::id()));
        let written = cache
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&temp, serde_json::to_vec(&known).unwrap_or_default()))
            .and_then(|()| std::fs::rename(&temp, cache));
        if let Err(e) = written {
            tracing::debug!(error = %e, "could not keep the profile trials");
        }
    }
}

/// The names in the first column of `ffmpeg -encoders` or `-filters` (after the legend).
async fn listed(tools: &Tools, what: &str) -> BTreeSet<String> {
    let Ok(output) = tokio::process::Command::new(&tools.ffmpeg)
        .args(["-hide_banner", what])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
    else {
        return BTreeSet::new();
    };
    // Entries are a field of flags (`V....D`, `TSC`), the name, then words; the legend's
    // lines have `=` where a name would be.
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let flags = fields.next()?;
            let name = fields.next()?;
            let is_flags = flags.len() >= 3
                && flags
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c == '.' || c == '|');
            (is_flags && name != "=" && fields.next().is_some()).then(|| name.to_owned())
        })
        .collect()
}

/// The encoders and filters `profile` names (its whole-file arguments).
pub fn needs(profile: &Profile) -> (Vec<String>, Vec<String>) {
    let (mut encoders, mut filters) = (Vec::new(), Vec::new());
    let args = &profile.args;
    for (i, arg) in args.iter().enumerate() {
        let Some(value) = args.get(i + 1) else { break };
        let option = arg.as_str();
        if codec_option(option) && value != "copy" {
            encoders.push(value.clone());
        }
        let filter = matches!(option, "-vf" | "-af" | "-filter_complex" | "-lavfi")
            || option.starts_with("-filter:");
        if filter {
            for part in filter_chain_parts(value) {
                // `[in]scale=...[out]`: the name after the labels, before its options.
                let mut part = part.trim();
                while let Some(rest) = part.strip_prefix('[') {
                    part = rest.split_once(']').map_or("", |(_, after)| after).trim();
                }
                let name = part.split(['=', '[']).next().unwrap_or("").trim();
                if !name.is_empty() {
                    filters.push(name.to_owned());
                }
            }
        }
    }
    (encoders, filters)
}

/// An option that names a stream's codec (`-c:v`, `-codec:a`, `-vcodec`...).
fn codec_option(option: &str) -> bool {
    option == "-c"
        || option.starts_with("-c:")
        || option.starts_with("-codec")
        || matches!(option, "-vcodec" | "-acodec" | "-scodec")
}

/// A filtergraph cut at its `,` and `;`, except inside quotes (`'...'`) or after a `\\`:
/// `drawtext=text='a, b'` is one filter.
fn filter_chain_parts(graph: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in graph.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '\'' => quoted = !quoted,
            ',' | ';' if !quoted => {
                parts.push(&graph[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&graph[start..]);
    parts
}

fn missing(
    profile: &Profile,
    encoders: &BTreeSet<String>,
    filters: &BTreeSet<String>,
) -> Option<String> {
    if encoders.is_empty() {
        return Some("this ffmpeg did not list its encoders".into());
    }
    let (want_encoders, want_filters) = needs(profile);
    if let Some(e) = want_encoders.iter().find(|e| !encoders.contains(*e)) {
        return Some(format!("this ffmpeg has no encoder {e}"));
    }
    if let Some(f) = want_filters.iter().find(|f| !filters.contains(*f)) {
        return Some(format!("this ffmpeg has no filter {f}"));
    }
    None
}

/// A profile that copies streams and names no encoder or filter: it needs nothing of this
/// ffmpeg a trial could show (whether a stream can be copied into the container depends on
/// the input). Its trial copied the raw test picture, which no container but a few takes, so
/// every stream-copy profile was found not runnable and refused.
fn copies_only(profile: &Profile) -> bool {
    let (encoders, filters) = needs(profile);
    let copies = profile
        .args
        .windows(2)
        .any(|pair| codec_option(&pair[0]) && pair[1] == "copy");
    copies && encoders.is_empty() && filters.is_empty()
}

/// Encode a fraction of a second of test picture and tone with the profile's arguments.
async fn trial(tools: &Tools, profile: &Profile) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!(
        "videofarm-trial-{}-{}",
        std::process::id(),
        profile.name
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("no room for a trial encode: {e}"))?;
    let output = dir.join(format!("trial.{}", profile.extension));
    let run = tokio::process::Command::new(&tools.ffmpeg)
        .args([
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(
            "testsrc=size=320x240:rate=25:duration=0.2[out0];sine=frequency=440:duration=0.2[out1]",
        )
        .args(&profile.args)
        .arg("-y")
        .arg(&output)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let result = tokio::time::timeout(TRIAL_TIMEOUT, run).await;
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Err(_) => Err("a trial encode did not finish".into()),
        Ok(Err(e)) => Err(format!("cannot run {}: {e}", tools.ffmpeg.display())),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => Err(format!(
            "a trial encode failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("no reason given")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_needs_the_encoders_and_filters_it_names() {
        let profiles = Profiles::default();
        let (encoders, filters) = needs(profiles.get("vhs").unwrap());
        assert!(encoders.contains(&"libx264".to_string()), "{encoders:?}");
        assert!(!encoders.contains(&"copy".to_string()));
        assert!(filters.contains(&"bwdif".to_string()), "{filters:?}");
    }

    #[test]
    fn commas_inside_quotes_do_not_make_filters() {
        let mut profile = Profiles::default().get("vhs").unwrap().clone();
        profile.args = vec![
            "-vf".into(),
            "drawtext=text='a, b; c',[x]scale=w=2:h=2[y];hflip".into(),
        ];
        let (_, filters) = needs(&profile);
        assert_eq!(filters, ["drawtext", "scale", "hflip"]);
    }
}
