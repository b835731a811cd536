//! The operating system's fence around a worker process, a second one
//! behind the JavaScript engine's own limits. The node starts a worker
//! with an empty environment ([`spawner`](super::spawner)); the worker
//! itself, first thing at startup and before its engine exists, closes
//! every file descriptor but its standard streams and lowers its resource
//! limits:
//!
//! - `RLIMIT_AS`: the engine's memory cap plus [`ADDRESS_SPACE_MARGIN_BYTES`]
//!   (the process's own code, stacks, allocator reservations and CapTP
//!   tables), so a leak outside the engine's accounting stops there;
//! - `RLIMIT_CORE` 0: no core files;
//! - `RLIMIT_FSIZE`: the worker writes no file but its log (its standard
//!   error, opened by the node), which may grow by [`LOG_ALLOWANCE_BYTES`]
//!   over this run; past it writes fail (`SIGXFSZ` is ignored) and the
//!   worker runs on without a log;
//! - `RLIMIT_NOFILE` [`MAX_OPEN_FILES`].
//!
//! `RLIMIT_NPROC` is left alone: it counts every process and thread of the
//! user, not of this process, so a small value would stop the worker's own
//! threads when the user runs other programs (and root ignores it).

use std::os::fd::AsFd;

/// How much address space a worker may map beyond its engine's memory cap.
/// An idle worker maps about 180 MiB (a debug build) of code, stacks and
/// allocator arenas; a vat with 100 000 sends in flight about 600 MiB.
pub const ADDRESS_SPACE_MARGIN_BYTES: u64 = 1 << 30;

/// How many files a worker may have open: its standard streams, its event
/// loop's descriptors and a module file being read.
pub const MAX_OPEN_FILES: u64 = 32;

/// How much a worker's log may grow while it runs.
pub const LOG_ALLOWANCE_BYTES: u64 = 64 << 20;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
type Resource = libc::c_int;

/// Fences the current process as a worker whose engine may use
/// `memory_bytes`. Call it before anything else opens files or threads.
pub fn fence(memory_bytes: u64) -> Result<(), String> {
    close_inherited_descriptors();
    lower(libc::RLIMIT_CORE, "RLIMIT_CORE", 0)?;
    lower(libc::RLIMIT_NOFILE, "RLIMIT_NOFILE", MAX_OPEN_FILES)?;
    lower(
        libc::RLIMIT_AS,
        "RLIMIT_AS",
        memory_bytes.saturating_add(ADDRESS_SPACE_MARGIN_BYTES),
    )?;
    // SAFETY: setting a signal's disposition to "ignore" involves no
    // handler code; a write past RLIMIT_FSIZE then fails with EFBIG
    // instead of ending the process.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    lower(
        libc::RLIMIT_FSIZE,
        "RLIMIT_FSIZE",
        log_size().saturating_add(LOG_ALLOWANCE_BYTES),
    )?;
    Ok(())
}

/// The size of the log the worker's standard error appends to (0 if it is
/// not a file).
fn log_size() -> u64 {
    std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|file| file.metadata())
        .map(|metadata| if metadata.is_file() { metadata.len() } else { 0 })
        .unwrap_or(0)
}

/// Closes every descriptor above standard error: whatever the node (or
/// whoever started the node) let leak into the worker.
fn close_inherited_descriptors() {
    let listed = ["/proc/self/fd", "/dev/fd"]
        .iter()
        .find_map(|dir| std::fs::read_dir(dir).ok())
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<libc::c_int>().ok())
                .collect::<Vec<_>>()
        });
    let descriptors = listed.unwrap_or_else(|| (3..1024).collect());
    for fd in descriptors.into_iter().filter(|fd| *fd > 2) {
        // SAFETY: nothing in this process uses these descriptors yet (the
        // caller runs this first); the one that listed them is closed by
        // now, and closing it again only fails with EBADF.
        unsafe { libc::close(fd) };
    }
}

/// Lowers a resource limit (soft and hard) to `value`, or to the hard
/// limit if that is lower already.
fn lower(resource: Resource, name: &str, value: u64) -> Result<(), String> {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(resource, &mut current) } != 0 {
        return Err(format!("cannot read {name}: {}", std::io::Error::last_os_error()));
    }
    let wanted = libc::rlim_t::try_from(value).unwrap_or(libc::RLIM_INFINITY);
    let value = wanted.min(current.rlim_max);
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit reads one rlimit from the struct we own; lowering
    // a limit needs no privilege.
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(format!("cannot set {name}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}
