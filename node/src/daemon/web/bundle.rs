//! A web app's files as one blob: packing a directory (for `capstan
//! install`), unpacking a stored blob (for serving), and the rules both
//! hold: `index.html` at the root, at most [`MAX_APP_FILES`] files and
//! [`MAX_APP_BYTES`] bytes, plain relative paths of plain files.
//!
//! The format is a header line, then for each file its path and its bytes
//! as two netstrings (`capstan_protocol`'s framing):
//!
//! ```text
//! capstan-web-app/1\n
//! 10:index.html,<len>:<bytes>,6:app.js,<len>:<bytes>,...
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use capstan_protocol::captp::endo::write_netstring;

use crate::daemon::blob::WHOLE_READ_LIMIT;

/// The first bytes of every packed app.
const HEADER: &[u8] = b"capstan-web-app/1\n";

/// The most bytes an app's packed files may take (the blob is read whole).
pub const MAX_APP_BYTES: u64 = WHOLE_READ_LIMIT;

/// The most files an app may have.
pub const MAX_APP_FILES: usize = 1000;

/// The longest path of a file in an app, bytes.
pub const MAX_PATH_BYTES: usize = 255;

/// Directories nested deeper than this are refused.
const MAX_DEPTH: usize = 16;

/// Why a directory cannot be an app, or a blob is not one.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is a symbolic link; an app's files must be plain files")]
    Symlink { path: String },
    #[error("{path} is not a plain file or directory")]
    NotPlain { path: String },
    #[error(
        "{path:?} is not a usable path: use letters, digits, '.', '-', '_' and '/', no part starting with '.', at most {MAX_PATH_BYTES} bytes"
    )]
    BadPath { path: String },
    #[error("the app has more than {MAX_APP_FILES} files")]
    TooManyFiles,
    #[error("the app's files take more than {MAX_APP_BYTES} bytes")]
    TooLarge,
    #[error("directories nest more than {MAX_DEPTH} deep at {path}")]
    TooDeep { path: String },
    #[error("the app has no index.html at its root")]
    NoIndex,
    #[error("the stored app is damaged: {0}")]
    Damaged(String),
}

/// Whether `path` may name a file of an app: relative, `/`-separated, no
/// empty or dot-leading part (so no `..` and no hidden files), and only
/// characters that need no escaping in a URL.
pub fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= MAX_PATH_BYTES
        && path.split('/').all(|part| {
            !part.is_empty()
                && !part.starts_with('.')
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        })
}

/// An app's files by path.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AppFiles {
    pub files: BTreeMap<String, Vec<u8>>,
}

impl AppFiles {
    /// Reads every file under `dir`, refusing symbolic links, special
    /// files, odd names and apps past the bounds.
    pub fn read_dir(dir: &Path) -> Result<AppFiles, BundleError> {
        let mut app = AppFiles::default();
        let mut total = 0u64;
        let metadata = std::fs::symlink_metadata(dir).map_err(|source| io(dir, source))?;
        if metadata.file_type().is_symlink() {
            return Err(BundleError::Symlink {
                path: dir.display().to_string(),
            });
        }
        app.read_into(dir, "", 0, &mut total)?;
        if !app.files.contains_key("index.html") {
            return Err(BundleError::NoIndex);
        }
        Ok(app)
    }

    fn read_into(&mut self, dir: &Path, prefix: &str, depth: usize, total: &mut u64) -> Result<(), BundleError> {
        if depth > MAX_DEPTH {
            return Err(BundleError::TooDeep {
                path: dir.display().to_string(),
            });
        }
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|source| io(dir, source))? {
            entries.push(entry.map_err(|source| io(dir, source))?);
        }
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let full = entry.path();
            let name = entry.file_name();
            let name = name.to_str().ok_or_else(|| BundleError::BadPath {
                path: full.display().to_string(),
            })?;
            let path = format!("{prefix}{name}");
            if !valid_path(&path) {
                return Err(BundleError::BadPath { path });
            }
            let kind = entry.file_type().map_err(|source| io(&full, source))?;
            if kind.is_symlink() {
                return Err(BundleError::Symlink {
                    path: full.display().to_string(),
                });
            } else if kind.is_dir() {
                self.read_into(&full, &format!("{path}/"), depth + 1, total)?;
            } else if kind.is_file() {
                if self.files.len() >= MAX_APP_FILES {
                    return Err(BundleError::TooManyFiles);
                }
                let len = entry.metadata().map_err(|source| io(&full, source))?.len();
                *total = total.saturating_add(len + path.len() as u64 + 16);
                if *total > MAX_APP_BYTES {
                    return Err(BundleError::TooLarge);
                }
                let bytes = std::fs::read(&full).map_err(|source| io(&full, source))?;
                self.files.insert(path, bytes);
            } else {
                return Err(BundleError::NotPlain {
                    path: full.display().to_string(),
                });
            }
        }
        Ok(())
    }

    /// The packed form, as stored in a blob.
    pub fn pack(&self) -> Vec<u8> {
        let mut out = HEADER.to_vec();
        for (path, bytes) in &self.files {
            write_netstring(path.as_bytes(), &mut out);
            write_netstring(bytes, &mut out);
        }
        out
    }

    /// Reads a packed app, checking every rule [`AppFiles::read_dir`]
    /// checks: a stored blob is trusted no more than a directory.
    pub fn unpack(packed: &[u8]) -> Result<AppFiles, BundleError> {
        if packed.len() as u64 > MAX_APP_BYTES {
            return Err(BundleError::TooLarge);
        }
        let body = packed
            .strip_prefix(HEADER)
            .ok_or_else(|| BundleError::Damaged("it does not start with the app header".into()))?;
        let mut rest = body;
        let mut app = AppFiles::default();
        while !rest.is_empty() {
            let (path, after_path) = next_netstring(rest)?;
            let path =
                String::from_utf8(path.to_vec()).map_err(|_| BundleError::Damaged("a path is not UTF-8".into()))?;
            if !valid_path(&path) {
                return Err(BundleError::BadPath { path });
            }
            if after_path.is_empty() {
                return Err(BundleError::Damaged(format!("{path} has no bytes")));
            }
            let (bytes, after_bytes) = next_netstring(after_path)?;
            if app.files.len() >= MAX_APP_FILES {
                return Err(BundleError::TooManyFiles);
            }
            app.files.insert(path, bytes.to_vec());
            rest = after_bytes;
        }
        if !app.files.contains_key("index.html") {
            return Err(BundleError::NoIndex);
        }
        Ok(app)
    }
}

/// The payload of the netstring `bytes` starts with, and what follows it.
fn next_netstring(bytes: &[u8]) -> Result<(&[u8], &[u8]), BundleError> {
    let damaged = || BundleError::Damaged("a file's framing is malformed".into());
    let colon = bytes.iter().take(21).position(|&b| b == b':').ok_or_else(damaged)?;
    let digits = std::str::from_utf8(&bytes[..colon]).map_err(|_| damaged())?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(damaged());
    }
    let len: usize = digits.parse().map_err(|_| damaged())?;
    let rest = &bytes[colon + 1..];
    if rest.len() <= len || rest[len] != b',' {
        return Err(damaged());
    }
    Ok((&rest[..len], &rest[len + 1..]))
}

fn io(path: &Path, source: std::io::Error) -> BundleError {
    BundleError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The `Content-Type` of a file, by its extension.
pub fn content_type(path: &str) -> &'static str {
    let extension = path.rsplit_once('.').map_or("", |(_, extension)| extension);
    match extension.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn app(files: &[(&str, &[u8])]) -> AppFiles {
        AppFiles {
            files: files
                .iter()
                .map(|(path, bytes)| (path.to_string(), bytes.to_vec()))
                .collect(),
        }
    }

    #[test]
    fn packing_and_unpacking_give_the_same_files() {
        assert!(!valid_path("a,b"));
        let original = app(&[("index.html", b"<p>hi</p>"), ("js/app.js", b""), ("x.bin", b"1:2,")]);
        assert_eq!(AppFiles::unpack(&original.pack()).unwrap(), original);
    }

    #[test]
    fn odd_paths_are_refused() {
        for path in ["", "../x", "a/../b", ".hidden", "a//b", "/abs", "a b", "é", "a\\b"] {
            assert!(!valid_path(path), "{path:?} was accepted");
        }
        assert!(valid_path("css/site.min.css"));
    }

    #[test]
    fn a_damaged_blob_is_refused() {
        let packed = app(&[("index.html", b"x")]).pack();
        assert!(AppFiles::unpack(&packed[1..]).is_err());
        assert!(AppFiles::unpack(&packed[..packed.len() - 1]).is_err());
        let no_index = app(&[("main.html", b"x")]).pack();
        assert!(matches!(AppFiles::unpack(&no_index), Err(BundleError::NoIndex)));
        let mut bad_path = HEADER.to_vec();
        write_netstring(b"../etc/passwd", &mut bad_path);
        write_netstring(b"x", &mut bad_path);
        assert!(matches!(AppFiles::unpack(&bad_path), Err(BundleError::BadPath { .. })));
    }
}
