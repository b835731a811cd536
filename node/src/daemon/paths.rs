//! Where a node keeps its files: the store, the log, the control socket,
//! its pid, its config and its workers' logs, all under one state
//! directory.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

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

    pub fn pid_file(&self) -> PathBuf {
        self.run_dir().join("capstan.pid")
    }

    pub fn log(&self) -> PathBuf {
        self.root.join("node.log")
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    pub fn worker_logs(&self) -> PathBuf {
        self.root.join("workers")
    }

    /// Creates the state and runtime directories, private to the user.
    pub fn create(&self) -> io::Result<()> {
        create_private_dir(&self.root)?;
        create_private_dir(&self.run_dir())?;
        create_private_dir(&self.worker_logs())
    }
}

/// Creates `path` (and parents) with mode 0700, and tightens an existing
/// directory to 0700.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
}
