//! Where a node keeps its files: the store, the log, the control socket,
//! its pid, its config and its workers' logs, all under one state
//! directory; and which directories are Capstan's to use and to purge.
//!
//! A state directory is marked by [`MARKER_FILE`] when Capstan first
//! uses it. Capstan takes a directory that is new, empty, prepared for a
//! node (it has a `config.toml`) or already marked (or that holds a store
//! from before the marker), and refuses any other, so `--state ~/Documents` cannot scatter files among the user's
//! nor let `purge` delete them. It sets the mode of the directories it
//! creates (0700), never of one it was given.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use capstan_store::{LOG_FILE_NAME, STORE_FILE_NAME};

/// The file that says a directory is a Capstan node's state.
pub const MARKER_FILE: &str = "CAPSTAN_STATE";

const MARKER_TEXT: &str = "This directory holds a Capstan node's state.\n\
`capstan purge` deletes what Capstan made here and keeps anything else.\n";

/// The entries Capstan makes in a state directory, and so the only ones
/// `purge` deletes (`config.toml` is the user's).
const MADE_BY_CAPSTAN: [&str; 9] = [
    MARKER_FILE,
    STORE_FILE_NAME,
    LOG_FILE_NAME,
    "node.log",
    "listen-ports",
    "listen-port",
    "web-port",
    "run",
    "workers",
];

/// Why a directory cannot be used or purged as a state directory.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error(
        "{path} is not a Capstan state directory: it holds other files (such as {example:?}) and no {MARKER_FILE}; \
         choose a new or empty directory"
    )]
    NotCapstans { path: String, example: String },
    #[error("cannot use the state directory {path}: {source}")]
    Io { path: String, source: io::Error },
}

/// What [`StatePaths::purge`] did.
#[derive(Debug, Default)]
pub struct Purged {
    /// Entries it deleted.
    pub deleted: Vec<String>,
    /// Entries it left because Capstan did not make them.
    pub kept: Vec<String>,
    /// Whether the directory itself is gone (it was left with nothing).
    pub removed_directory: bool,
}

/// The files of one node's state directory.
#[derive(Clone, Debug)]
pub struct StatePaths {
    pub root: PathBuf,
}

impl StatePaths {
    pub fn new(root: impl Into<PathBuf>) -> StatePaths {
        StatePaths { root: root.into() }
    }

    /// The private runtime directory holding the socket and pid (0700).
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    pub fn socket(&self) -> PathBuf {
        self.run_dir().join("capstan.sock")
    }

    /// The socket serving Endo's CapTP to JavaScript programs.
    pub fn captp_socket(&self) -> PathBuf {
        self.run_dir().join("captp0.sock")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.run_dir().join("capstan.pid")
    }

    pub fn log(&self) -> PathBuf {
        self.root.join("node.log")
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// Where the web app port picked at first start is kept (unless
    /// `config.toml` sets `[web] port`).
    pub fn web_port(&self) -> PathBuf {
        self.root.join("web-port")
    }

    pub fn worker_logs(&self) -> PathBuf {
        self.root.join("workers")
    }

    fn marker(&self) -> PathBuf {
        self.root.join(MARKER_FILE)
    }

    fn io_error(&self, path: &Path) -> impl FnOnce(io::Error) -> StateDirError {
        let path = path.display().to_string();
        move |source| StateDirError::Io { path, source }
    }

    /// Whether the directory is Capstan's: marked, or holding a store.
    pub fn is_capstans(&self) -> bool {
        self.marker().is_file() || self.root.join(STORE_FILE_NAME).is_file()
    }

    /// Makes the state directory ready: creates it (0700) if it is new,
    /// takes it if it is empty or prepared for a node (it has a
    /// `config.toml`, perhaps with the files it names), and refuses any
    /// other directory that is not Capstan's. Then creates the private runtime and worker-log
    /// directories.
    pub fn create(&self) -> Result<(), StateDirError> {
        match fs::read_dir(&self.root) {
            Ok(mut entries) if !self.is_capstans() && !self.config().is_file() => {
                if let Some(entry) = entries.next() {
                    let entry = entry.map_err(self.io_error(&self.root))?;
                    return Err(StateDirError::NotCapstans {
                        path: self.root.display().to_string(),
                        example: entry.file_name().to_string_lossy().into_owned(),
                    });
                }
            }
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                create_private_dir(&self.root).map_err(self.io_error(&self.root))?;
            }
            Err(error) => return Err(self.io_error(&self.root)(error)),
        }
        if !self.marker().is_file() {
            fs::write(self.marker(), MARKER_TEXT).map_err(self.io_error(&self.marker()))?;
        }
        create_private_dir(&self.run_dir()).map_err(self.io_error(&self.run_dir()))?;
        create_private_dir(&self.worker_logs()).map_err(self.io_error(&self.worker_logs()))
    }

    /// Deletes what Capstan made in the state directory, keeps anything
    /// else, and removes the directory if nothing is left. Refuses a
    /// directory that is not Capstan's. The node must not be running.
    pub fn purge(&self) -> Result<Purged, StateDirError> {
        if !self.is_capstans() {
            let example = fs::read_dir(&self.root)
                .ok()
                .and_then(|mut entries| entries.next())
                .and_then(Result::ok)
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .unwrap_or_default();
            return Err(StateDirError::NotCapstans {
                path: self.root.display().to_string(),
                example,
            });
        }
        let mut purged = Purged::default();
        let entries = fs::read_dir(&self.root).map_err(self.io_error(&self.root))?;
        let mut names: Vec<String> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(self.io_error(&self.root))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        // The marker goes last, so an interrupted purge can be run again.
        names.sort_by_key(|name| name == MARKER_FILE);
        for name in names {
            if !MADE_BY_CAPSTAN.contains(&name.as_str()) {
                purged.kept.push(name);
                continue;
            }
            let path = self.root.join(&name);
            let removed = if path.is_dir() && !path.is_symlink() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(self.io_error(&path))?;
            purged.deleted.push(name);
        }
        if purged.kept.is_empty() {
            fs::remove_dir(&self.root).map_err(self.io_error(&self.root))?;
            purged.removed_directory = true;
        }
        Ok(purged)
    }
}

/// Creates `path` (and parents) with mode 0700; an existing directory
/// keeps its mode.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new().recursive(true).mode(0o700).create(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("capstan-paths-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_directory_is_made_private_and_marked() {
        let root = scratch("new");
        let paths = StatePaths::new(&root);
        paths.create().unwrap();
        assert_eq!(mode(&root), 0o700);
        assert!(root.join(MARKER_FILE).is_file());
        assert_eq!(mode(&paths.run_dir()), 0o700);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_empty_directory_is_taken_and_keeps_its_mode() {
        let root = scratch("empty");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        StatePaths::new(&root).create().unwrap();
        assert_eq!(mode(&root), 0o755);
        assert!(root.join(MARKER_FILE).is_file());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_directory_of_other_files_is_refused_and_not_touched() {
        let root = scratch("foreign");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(root.join("thesis.tex"), "mine").unwrap();
        let paths = StatePaths::new(&root);
        let error = paths.create().unwrap_err().to_string();
        assert!(error.contains("not a Capstan state directory"), "{error}");
        assert!(error.contains("thesis.tex"), "{error}");
        let error = paths.purge().unwrap_err().to_string();
        assert!(error.contains("not a Capstan state directory"), "{error}");
        assert_eq!(mode(&root), 0o755);
        let left: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("thesis.tex")]);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_directory_prepared_with_a_config_is_taken() {
        let root = scratch("config");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("config.toml"), "listen = []").unwrap();
        fs::write(root.join("cluster.json"), "{}").unwrap();
        StatePaths::new(&root).create().unwrap();
        assert!(root.join(MARKER_FILE).is_file());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_store_from_before_the_marker_is_capstans() {
        let root = scratch("old");
        fs::create_dir(&root).unwrap();
        fs::write(root.join(STORE_FILE_NAME), "").unwrap();
        let paths = StatePaths::new(&root);
        paths.create().unwrap();
        assert!(root.join(MARKER_FILE).is_file());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn purge_deletes_only_what_capstan_made() {
        let root = scratch("purge");
        let paths = StatePaths::new(&root);
        paths.create().unwrap();
        fs::write(root.join(STORE_FILE_NAME), "").unwrap();
        fs::write(paths.log(), "log").unwrap();
        fs::write(paths.config(), "listen = []").unwrap();
        fs::write(root.join("notes.txt"), "mine").unwrap();
        let purged = paths.purge().unwrap();
        assert_eq!(purged.kept, vec!["config.toml".to_string(), "notes.txt".to_string()]);
        assert!(!purged.removed_directory);
        assert!(purged.deleted.contains(&STORE_FILE_NAME.to_string()));
        assert!(!root.join(STORE_FILE_NAME).exists() && !paths.run_dir().exists());
        assert!(root.join("notes.txt").is_file() && paths.config().is_file());
        // What is left is no longer Capstan's.
        assert!(!paths.is_capstans());

        let paths = StatePaths::new(scratch("purge-all"));
        paths.create().unwrap();
        let purged = paths.purge().unwrap();
        assert!(purged.removed_directory && purged.kept.is_empty());
        assert!(!paths.root.exists());
        fs::remove_dir_all(&root).unwrap();
    }
}
