//! The one layer through which the farm touches files under the media roots: every open,
//! create, rename, link, removal and new folder there goes through a function of this module,
//! and a test (`crates/core/tests/one_layer.rs`) finds every other use of the file system in
//! the code and checks that none of it is on media paths.
//!
//! What it guarantees, whatever is planted in the media tree:
//! - **No link is followed at the name acted on.** Opens use `O_NOFOLLOW` where the farm opens
//!   its own files; rename, link and remove act on the name itself (a link is renamed or
//!   removed, never its target); a new file is made with `O_EXCL` (`create_new`), so nothing
//!   there, link or file, is written through. The folders above the name are the caller's
//!   checked descriptors ([`super::Opened::io_path`], [`OwnFolder::io_path`]): swapping one
//!   for a link after the check changes nothing.
//! - **Nothing blocks on a file that is not a file.** Opens use `O_NONBLOCK`, then check the
//!   type: a named pipe, socket or device is refused in words, never waited on.
//! - **A folder the farm made is used only if it is one**: a real folder (not a link), owned
//!   by this user, held open while it is used ([`OwnFolder`]).
//! - **Reads of the farm's own small files are bounded** ([`read_own`]).
//!
//! Each function is a system call or two that never waits on a pipe, socket or device (the
//! opens that could are made without blocking and checked), so async code calls them directly;
//! reading a large file through what they open (hashing a staged upload) runs off the async
//! threads (`spawn_blocking`).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Open `path` for reading, never waiting on it: opened without blocking, then refused unless
/// it is a plain file or a folder. A named pipe would otherwise hold the open (and the thread
/// doing it) until something writes to it; a device or socket is no video either. (Without
/// blocking changes nothing for a plain file or a folder, and ffmpeg opens its own.)
pub fn open_read(path: &Path) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_file() || kind.is_dir() {
        return Ok(file);
    }
    Err(std::io::Error::new(
        ErrorKind::InvalidInput,
        format!("not a file but {}", kind_name(kind)),
    ))
}

/// Refuse, without opening it, anything at `path` but a plain file (a named pipe, a device, a
/// socket, a folder), in words (the caller names the path).
pub fn plain_file(path: &Path) -> std::io::Result<()> {
    let kind = std::fs::metadata(path)?.file_type();
    if kind.is_file() {
        return Ok(());
    }
    Err(std::io::Error::new(
        ErrorKind::InvalidInput,
        format!("not a file but {}", kind_name(kind)),
    ))
}

/// Open (or create) `name` in the checked folder `dir` for the farm's own bookkeeping (a lock, a
/// mark): a link planted there is never followed, and anything but a plain file is refused.
pub fn open_own(dir: &Path, name: &std::ffi::OsStr, create: bool) -> std::io::Result<File> {
    open_own_with(
        &dir.join(name),
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false),
    )
}

/// Create `name` in the checked folder `dir`, new: nothing there is overwritten, and a link
/// planted under that name is refused, never followed.
pub fn create_new(dir: &Path, name: &std::ffi::OsStr) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dir.join(name))
}

/// A link (or a pipe) where the farm opens its own file: said so, in words (the kernel says
/// "too many levels of symbolic links", or for a pipe opened to write without waiting and with
/// no reader, "no such device or address").
fn refuse_link(name: &std::ffi::OsStr, e: std::io::Error) -> std::io::Error {
    let why = match e.raw_os_error() {
        Some(libc::ELOOP) => "a symbolic link, which is never followed",
        Some(libc::ENXIO) => "not a file but a named pipe or a device",
        _ => return e,
    };
    std::io::Error::new(
        ErrorKind::InvalidInput,
        format!("{}: {why}", name.to_string_lossy()),
    )
}

fn kind_name(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "a named pipe"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_dir() {
        "a folder"
    } else {
        "a file"
    }
}

/// A path naming exactly the open file `file`, valid for this process and the processes it
/// starts while `file` is open.
pub fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        file.as_raw_fd()
    ))
}

/// Read the farm's own small file at `path` (a plan, a chunk's note): never through a link,
/// never waiting on a pipe, a plain file only, and at most `limit` bytes (more is an error:
/// the farm never writes files that large, so a bigger one is not its own).
pub fn read_own(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let name = path.file_name().unwrap_or_default();
    let file = open_own_read(path)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!(
                "{}: larger than {limit} bytes, not a file this farm wrote",
                name.to_string_lossy()
            ),
        ));
    }
    Ok(bytes)
}

/// Open the farm's own file at `path` (a staged upload) for reading: never through a link,
/// never waiting on a pipe, a plain file only.
pub fn open_own_read(path: &Path) -> std::io::Result<File> {
    open_own_with(path, std::fs::OpenOptions::new().read(true))
}

/// Open the farm's own file at `path` (a staged upload) to add to its end, made if missing:
/// never through a link, never waiting on a pipe, a plain file only.
pub fn open_own_append(path: &Path) -> std::io::Result<File> {
    open_own_with(path, std::fs::OpenOptions::new().create(true).append(true))
}

/// Open `path` as `options` say, without following a link there or waiting on a pipe, and
/// refuse anything but a plain file.
fn open_own_with(path: &Path, options: &mut std::fs::OpenOptions) -> std::io::Result<File> {
    let name = path.file_name().unwrap_or_default();
    let file = options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| refuse_link(name, e))?;
    plain(&file, name)?;
    Ok(file)
}

/// [`read_own`] as text (invalid UTF-8 replaced).
pub fn read_own_text(path: &Path, limit: u64) -> std::io::Result<String> {
    read_own(path, limit).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Write `name` in the checked folder `dir` whole or not at all: through a new temporary file
/// (made with [`create_new`], so a file or link planted under its name is refused, never
/// written through), flushed, then renamed over `name` (which replaces whatever has the name,
/// a link included, without following it). A reader sees the old content or the new.
pub fn write_atomically(
    dir: &Path,
    name: impl AsRef<std::ffi::OsStr>,
    bytes: &[u8],
) -> std::io::Result<()> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = name.as_ref();
    let mut temp = std::ffi::OsString::from(".");
    temp.push(name);
    temp.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let written = create_new(dir, temp.as_ref()).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let placed = written.and_then(|()| rename(&dir.join(&temp), &dir.join(name)));
    if placed.is_err() {
        // Ours alone (made new above): a planted name is left as it was.
        if kind(&dir.join(&temp)).is_ok_and(|k| k == Kind::File) {
            let _ = remove_file(&dir.join(&temp));
        }
    }
    placed
}

/// Give the file or link named `from` the name `to` (replacing what `to` names, a link
/// included): names only, no link followed.
pub fn rename(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::rename(from, to)
}

/// A second name `to` for the file named `from`, new: an existing `to` (file or link) is an
/// error, and a link at `from` is linked itself, never its target (`linkat` without
/// `AT_SYMLINK_FOLLOW`).
pub fn hard_link(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::hard_link(from, to)
}

/// Remove the name `path`: a link is removed, never what it points at; a folder is refused.
pub fn remove_file(path: &Path) -> std::io::Result<()> {
    std::fs::remove_file(path)
}

/// Make the folder `path` (one level; a link or anything else already there is an error).
pub fn create_dir(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir(path)
}

/// Make the folder `path` and what is missing above it, for a folder the user named outside
/// a job (the `--move-to` folder of `enqueue`).
pub fn create_dir_all(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(path)
}

/// Remove a folder the farm made and everything in it, after checking it is one
/// ([`OwnFolder`]): a link in its place is refused, and links inside are removed, never
/// followed (std's `remove_dir_all` opens each level without following links).
pub fn remove_own_folder(path: &Path) -> std::io::Result<()> {
    OwnFolder::open(path)?.remove()
}

/// Remove the empty folder `path` (a link there is an error, never followed).
pub fn remove_empty_folder(path: &Path) -> std::io::Result<()> {
    std::fs::remove_dir(path)
}

/// Remove the plain files and links directly in `dir` whose names `pick` chooses; returns how
/// many went. Folders are left.
pub fn remove_named(dir: &Path, pick: impl Fn(&OsStr) -> bool) -> usize {
    names(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| pick(n))
        .filter(|n| kind(&dir.join(n)).is_ok_and(|k| k != Kind::Folder))
        .filter(|n| remove_file(&dir.join(n)).is_ok())
        .count()
}

/// The names in the folder `dir`.
pub fn names(dir: &Path) -> std::io::Result<Vec<OsString>> {
    std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect()
}

/// What the name `path` is, its links not followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Folder,
    Link,
    /// A named pipe, socket or device.
    Other,
}

/// What `path` names, the name itself (a link is [`Kind::Link`]).
pub fn kind(path: &Path) -> std::io::Result<Kind> {
    let kind = std::fs::symlink_metadata(path)?.file_type();
    Ok(if kind.is_symlink() {
        Kind::Link
    } else if kind.is_file() {
        Kind::File
    } else if kind.is_dir() {
        Kind::Folder
    } else {
        Kind::Other
    })
}

/// The size of the plain file named `path` (a link is not followed: it has no size here).
pub fn file_size(path: &Path) -> std::io::Result<u64> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            ErrorKind::InvalidInput,
            format!("not a file but {}", kind_name(meta.file_type())),
        ));
    }
    Ok(meta.len())
}

/// The device and inode of the name `path` (links not followed): compared with an open file's,
/// it tells whether the name still is that file.
pub fn identity(path: &Path) -> std::io::Result<(u64, u64)> {
    let meta = std::fs::symlink_metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

/// The size and modification time of the file at `path` (a `stat`, which opens nothing): how
/// `watch` sees a capture still being written.
pub fn size_and_modified(path: &Path) -> std::io::Result<(u64, Option<std::time::SystemTime>)> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.len(), meta.modified().ok()))
}

/// True when `path`, or what a link there points at, is the open `file` (a `stat`, which opens
/// nothing): how an output that is its own input is caught, whatever path spells it.
pub fn is_same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Make the names in the folder `dir` durable (a rename into it); not every file system allows
/// syncing a folder, so this is best effort.
pub fn sync_folder(dir: &Path) {
    let _ = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NONBLOCK)
        .open(dir)
        .and_then(|d| d.sync_all());
}

/// A folder the farm made for itself (a tape's work folder), held open: checked to be a real
/// folder owned by this user when opened (no link followed to reach it), and used from then on
/// through its descriptor, so a link swapped in for it afterwards is never followed.
#[derive(Debug)]
pub struct OwnFolder {
    file: File,
    /// Where it was opened (under a checked folder's descriptor): to remove it by.
    path: PathBuf,
}

impl OwnFolder {
    /// Open the folder at `path`, made by this farm; anything else is refused, in words.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let name = path.file_name().unwrap_or_default();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) | Some(libc::ENOTDIR) => std::io::Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "{}: not a folder this farm made but {}",
                        path.display(),
                        std::fs::symlink_metadata(path)
                            .map_or("something else", |m| kind_name(m.file_type()))
                    ),
                ),
                _ => refuse_link(name, e),
            })?;
        owned_by_me(path, &file.metadata()?)?;
        Ok(Self {
            file,
            path: path.to_owned(),
        })
    }

    /// Remove the folder and everything in it, if its name still names it (links inside are
    /// removed, never followed; a link or another folder put in its place is left alone).
    pub fn remove(&self) -> std::io::Result<()> {
        let meta = self.file.metadata()?;
        if identity(&self.path)? != (meta.dev(), meta.ino()) {
            return Err(std::io::Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{}: replaced since it was opened; left alone",
                    self.path.display()
                ),
            ));
        }
        std::fs::remove_dir_all(&self.path)
    }

    /// A path naming this folder for as long as `self` lives: join names to it.
    pub fn io_path(&self) -> PathBuf {
        fd_path(&self.file)
    }
}

/// Refuse a folder of another user (this process's user: the owner of its own /proc entry).
fn owned_by_me(path: &Path, meta: &std::fs::Metadata) -> std::io::Result<()> {
    let me = std::fs::metadata("/proc/self")?.uid();
    if meta.uid() != me {
        return Err(std::io::Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "{}: a folder of another user (uid {})",
                path.display(),
                meta.uid()
            ),
        ));
    }
    Ok(())
}

/// Refuse anything but a plain file, by its open descriptor.
fn plain(file: &File, name: &OsStr) -> std::io::Result<()> {
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(());
    }
    Err(std::io::Error::new(
        ErrorKind::InvalidInput,
        format!(
            "{}: not a file but {}",
            name.to_string_lossy(),
            kind_name(kind)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn mkfifo(path: &Path) {
        let status = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[test]
    fn the_farms_own_files_are_never_read_or_added_to_through_a_link_or_a_pipe() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let link = dir.path().join("plan.json");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let refused = read_own(&link, 100).unwrap_err().to_string();
        assert!(refused.contains("symbolic link"), "{refused}");
        assert!(open_own_append(&link).is_err());
        assert!(open_own_read(&link).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");

        let pipe = dir.path().join("pipe");
        mkfifo(&pipe);
        for refused in [
            read_own(&pipe, 100).unwrap_err(),
            open_own_append(&pipe).unwrap_err(),
        ] {
            assert!(refused.to_string().contains("named pipe"), "{refused}");
        }

        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 101]).unwrap();
        assert!(read_own(&big, 100)
            .unwrap_err()
            .to_string()
            .contains("larger than 100 bytes"));
        assert_eq!(read_own(&big, 101).unwrap().len(), 101);
    }

    #[test]
    fn a_work_folder_is_held_open_and_a_link_swapped_in_for_it_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let work = dir.path().join(".a.mkv.videofarm-split");
        std::os::unix::fs::symlink(&outside, &work).unwrap();
        let refused = OwnFolder::open(&work).unwrap_err().to_string();
        assert!(
            refused.contains("not a folder this farm made but a symbolic link"),
            "{refused}"
        );

        std::fs::remove_file(&work).unwrap();
        std::fs::create_dir(&work).unwrap();
        let folder = OwnFolder::open(&work).unwrap();
        // Swapped for a link after it was opened: the writes still land in the real folder.
        std::fs::rename(&work, dir.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&outside, &work).unwrap();
        write_atomically(&folder.io_path(), "plan.json", b"{}").unwrap();
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        assert_eq!(
            std::fs::read(dir.path().join("moved/plan.json")).unwrap(),
            b"{}"
        );
        // And removing it leaves the link (and what it points at) alone.
        assert!(folder
            .remove()
            .unwrap_err()
            .to_string()
            .contains("left alone"));
        assert!(outside.is_dir());
        assert!(dir.path().join("moved/plan.json").is_file());
    }

    #[test]
    fn removal_takes_names_never_what_a_link_points_at() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let own = dir.path().join("own");
        std::fs::create_dir(&own).unwrap();
        std::os::unix::fs::symlink(&victim, own.join(".x-upload-1")).unwrap();
        std::fs::write(own.join(".x-upload-2"), b"staged").unwrap();
        std::fs::create_dir(own.join(".x-upload-3")).unwrap();
        assert_eq!(remove_named(&own, |n| n.as_bytes().starts_with(b".x-")), 2);
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(own.join(".x-upload-3").is_dir(), "folders are left");

        let linked = dir.path().join("linked");
        std::os::unix::fs::symlink(&own, &linked).unwrap();
        assert!(remove_own_folder(&linked).is_err());
        assert!(own.is_dir());
        remove_own_folder(&own).unwrap();
        assert!(!own.exists());
        assert!(victim.is_file());
    }
}
