//! The one piece of unsafe code in videofarm, run in the child between fork and exec: asking
//! the kernel to kill ffmpeg when its worker dies, so that a `kill -9`ed worker never leaves
//! an encode racing the redelivered job; and keeping open the pipe its measures go to.

#![allow(unsafe_code)]

/// Arrange for the spawned child to receive SIGKILL when this process dies (Linux).
pub fn die_with_parent(command: &mut tokio::process::Command) {
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe system calls (prctl, getppid, _exit); it touches no allocator or lock.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl: then nobody would kill us.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
}

/// Let the spawned child keep `fd` (a pipe's end, opened close-on-exec so that no other child
/// inherits it) under the same number, for ffmpeg to write as `pipe:N`.
pub fn keep_open(command: &mut tokio::process::Command, fd: std::os::fd::RawFd) {
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (fcntl); it touches no allocator or lock.
    unsafe {
        command.pre_exec(move || {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Ask the kernel to let pipe `fd` hold `bytes` (Linux; elsewhere, or refused, it keeps its
/// size). Whether it did is the returned size.
pub fn widen_pipe(fd: std::os::fd::BorrowedFd<'_>, bytes: usize) -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let wanted = libc::c_int::try_from(bytes).ok()?;
        // SAFETY: fcntl on a descriptor the borrow keeps open; F_SETPIPE_SZ takes an int and
        // touches no memory of ours.
        let got = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, wanted) };
        usize::try_from(got).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (fd, bytes);
        None
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::fd::AsFd;

    #[test]
    fn a_pipe_is_widened_to_what_was_asked() {
        let (_from, to) = std::io::pipe().expect("a pipe");
        assert_eq!(super::widen_pipe(to.as_fd(), 1 << 20), Some(1 << 20));
    }
}
