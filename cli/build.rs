//! Links `capstan-worker` statically (static-pie) on Linux with glibc,
//! and leaves `capstan` as it is.
//!
//! An idle worker's memory is mostly the pages of code it maps: linked
//! against the shared libc, libm, libgcc_s and the dynamic loader, it had
//! 2 MiB of theirs resident (the kernel maps the 64 KiB around each page a
//! process touches), where what it calls from them adds about 1 MiB to
//! the program's own resident pages when linked in. Position independence stays, so the
//! worker keeps address space randomisation.
//!
//! Three link options shrink what it touches further: its relocations
//! packed (`DT_RELR`, where glibc applies them); cold code
//! (`.text.unlikely`: panics, error paths) kept apart from the code that
//! runs; and the C functions (QuickJS's and the C library's) a worker runs
//! from its start to idle, listed in `worker-hot-functions.txt`, placed
//! together at the start of its code, so the 64 KiB the kernel maps
//! around each are mostly code the worker runs too. The list is a profile
//! (`tools/worker-layout` writes it); a function missing from it costs
//! pages, never correctness. Rust functions are not listed: their symbol
//! names carry hashes that change with the toolchain and dependencies.
//!
//! rustc names the C libraries with `-Bdynamic` before them, which a link
//! argument cannot undo; so the worker's link also searches a directory of
//! ours first, in which each of those names is the static archive (the
//! shared unwinder, `libgcc_s`, is `libgcc_eh`, as in any static link).
//! The worker calls nothing of glibc that needs the dynamic loader at run
//! time (no name service, no `dlopen`, no `iconv`).
//!
//! Without the static archives (glibc's static libraries are a separate
//! package on some systems), when cross-compiling, or with
//! `CAPSTAN_WORKER_DYNAMIC` set, the worker is linked like `capstan`, and
//! works the same, with a bigger resident size.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The libraries rustc links the standard library with on Linux (glibc),
/// and the archive each becomes.
const ARCHIVES: [(&str, &str); 7] = [
    ("libc.a", "libc.a"),
    ("libm.a", "libm.a"),
    ("libpthread.a", "libpthread.a"),
    ("libdl.a", "libdl.a"),
    ("librt.a", "librt.a"),
    ("libutil.a", "libutil.a"),
    ("libgcc_s.a", "libgcc_eh.a"),
];

const OPT_OUT: &str = "CAPSTAN_WORKER_DYNAMIC";

/// The C functions a worker runs from its start to idle, which the linker
/// places together (`tools/worker-layout` writes the list).
const HOT_FUNCTIONS: &str = "worker-hot-functions.txt";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed={OPT_OUT}");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    // The C library's version is read from the build machine's.
    let native = std::env::var("HOST").ok() == std::env::var("TARGET").ok();
    if target_os != "linux" || target_env != "gnu" || !native || std::env::var_os(OPT_OUT).is_some() {
        return;
    }
    let (Some(out_dir), Some(manifest_dir)) = (
        std::env::var_os("OUT_DIR").map(PathBuf::from),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) else {
        return;
    };
    let search = out_dir.join("worker-static-libs");
    match link_static_archives(&search) {
        Ok(()) => {
            println!("cargo:rustc-link-arg-bin=capstan-worker=-static-pie");
            println!("cargo:rustc-link-arg-bin=capstan-worker=-L{}", search.display());
            let hot = Path::new(&manifest_dir).join(HOT_FUNCTIONS);
            if links_with_rust_lld() && hot.is_file() {
                // Cold code (panics, error paths) apart from the code that
                // runs, and the C functions a worker runs together.
                println!("cargo:rustc-link-arg-bin=capstan-worker=-Wl,-z,keep-text-section-prefix");
                println!("cargo:rerun-if-changed={HOT_FUNCTIONS}");
                println!(
                    "cargo:rustc-link-arg-bin=capstan-worker=-Wl,--symbol-ordering-file={}",
                    hot.display()
                );
                // Names of another C library's build are simply not there.
                println!("cargo:rustc-link-arg-bin=capstan-worker=-Wl,--no-warn-symbol-ordering");
            }
            if glibc_applies_packed_relocations() {
                println!("cargo:rustc-link-arg-bin=capstan-worker=-Wl,-z,pack-relative-relocs");
            }
        }
        Err(reason) => println!("cargo:warning=capstan-worker is linked dynamically: {reason}"),
    }
}

/// Fills `dir` with links to the static archives, under the names rustc
/// asks for.
fn link_static_archives(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|error| format!("cannot make {}: {error}", dir.display()))?;
    for (name, archive) in ARCHIVES {
        let found = find_archive(archive)?;
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&found, &link)
            .map_err(|error| format!("cannot link {} to {}: {error}", link.display(), found.display()))?;
    }
    Ok(())
}

/// Whether the worker is linked by rustc's own lld (the default for
/// x86_64 Linux since Rust 1.90), whose options the layout ones are: not
/// when the build chooses its linker.
fn links_with_rust_lld() -> bool {
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    std::env::var("TARGET").is_ok_and(|target| target == "x86_64-unknown-linux-gnu")
        && std::env::var_os("RUSTC_LINKER").is_none()
        && !flags.contains("linker")
        && !flags.contains("link-self-contained")
}

/// Whether the C library the worker links (the build machine's) applies
/// packed relative relocations (`DT_RELR`) when a static-pie program
/// starts: glibc 2.36 and later. Packed, the worker's relocations take a
/// few KiB instead of about 150 KiB, all of which it reads as it starts.
fn glibc_applies_packed_relocations() -> bool {
    let Ok(output) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    // "glibc 2.36"
    let text = String::from_utf8_lossy(&output.stdout);
    let mut numbers = text
        .trim()
        .trim_start_matches("glibc ")
        .split('.')
        .map(|part| part.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(major), Some(minor)) => output.status.success() && (major, minor) >= (2, 36),
        _ => false,
    }
}

/// Where the C compiler (the linker driver rustc uses) finds `archive`.
fn find_archive(archive: &str) -> Result<PathBuf, String> {
    let linker = std::env::var("RUSTC_LINKER").unwrap_or_else(|_| "cc".to_string());
    let output = Command::new(&linker)
        .arg(format!("-print-file-name={archive}"))
        .output()
        .map_err(|error| format!("cannot run {linker}: {error}"))?;
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    // An archive the compiler does not know comes back as its bare name.
    if output.status.success() && path.is_absolute() && path.is_file() {
        Ok(path)
    } else {
        Err(format!("{linker} has no {archive}"))
    }
}
