//! Which state directory the CLI works on: `--state`, then
//! `CAPSTAN_STATE`, then the XDG state directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use capstan_node::daemon::paths::StatePaths;

pub struct StateDir {
    pub paths: StatePaths,
}

impl StateDir {
    pub fn resolve(explicit: Option<&Path>) -> anyhow::Result<StateDir> {
        let root = match explicit {
            Some(path) => absolute(path)?,
            None => directories::BaseDirs::new()
                .and_then(|dirs| dirs.state_dir().map(Path::to_path_buf))
                .map(|dir| dir.join("capstan"))
                .ok_or_else(|| anyhow!("cannot find the XDG state directory; pass --state DIR"))?,
        };
        Ok(StateDir {
            paths: StatePaths::new(root),
        })
    }
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    let current = std::env::current_dir().context("cannot read the current directory")?;
    Ok(current.join(path))
}
