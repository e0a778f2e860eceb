//! A job's identity, so that the same work is never queued twice: the input's path, size and
//! modification time, a cheap content fingerprint (three 64 KiB samples: start, middle, end),
//! the profile, and the output path. Reading 192 KiB costs nothing next to an encode, yet a
//! file replaced by another of the same size and time is still told apart.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const SAMPLE: u64 = 64 * 1024;

/// What the identity of one input says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Hex digest naming the job.
    pub key: String,
    pub size: u64,
}

/// Compute the identity of encoding `input` with `profile` into `output`.
pub fn identify(input: &Path, profile: &str, output: &Path) -> io::Result<Identity> {
    // Never waits on a named pipe: refused with the reason.
    let mut file = crate::confine::fs::open_read(input)?;
    let meta = file.metadata()?;
    let size = meta.len();
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"videofarm-job-v1\0");
    hasher.update(input.as_os_str().as_bytes());
    hasher.update(b"\0");
    hasher.update(&size.to_le_bytes());
    hasher.update(&meta.mtime().to_le_bytes());
    hasher.update(&meta.mtime_nsec().to_le_bytes());
    let mut buf = vec![0u8; SAMPLE as usize];
    for offset in [
        0,
        size.saturating_sub(SAMPLE) / 2,
        size.saturating_sub(SAMPLE),
    ] {
        file.seek(SeekFrom::Start(offset))?;
        let n = read_up_to(&mut file, &mut buf)?;
        hasher.update(&buf[..n]);
    }
    hasher.update(b"\0");
    hasher.update(profile.as_bytes());
    hasher.update(b"\0");
    hasher.update(output.as_os_str().as_bytes());
    Ok(Identity {
        key: hasher.finalize().to_hex().to_string(),
        size,
    })
}

/// The identity of a job whose input cannot be read (missing, no permission): its path,
/// profile and output. Such a job fails with its reason; queueing it again retries it.
pub fn unreadable_key(input: &Path, profile: &str, output: &Path) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"videofarm-unreadable-v1\0");
    for part in [
        input.as_os_str().as_bytes(),
        profile.as_bytes(),
        output.as_os_str().as_bytes(),
    ] {
        hasher.update(part);
        hasher.update(b"\0");
    }
    hasher.finalize().to_hex().to_string()
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_file_same_key_and_profile_or_content_changes_it() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("tape.mpg");
        std::fs::write(&input, vec![7u8; 300_000]).unwrap();
        let out = dir.path().join("out.mkv");
        let a = identify(&input, "archive", &out).unwrap();
        assert_eq!(a, identify(&input, "archive", &out).unwrap());
        assert_eq!(a.size, 300_000);
        assert_ne!(a.key, identify(&input, "web", &out).unwrap().key);

        // Same size, same modification time, different bytes in the middle: a different job.
        let mtime = std::fs::metadata(&input).unwrap().modified().unwrap();
        let mut bytes = vec![7u8; 300_000];
        bytes[150_000] = 8;
        std::fs::write(&input, bytes).unwrap();
        File::options()
            .write(true)
            .open(&input)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_ne!(a.key, identify(&input, "archive", &out).unwrap().key);
    }
}
