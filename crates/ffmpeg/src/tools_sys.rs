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
