//! A headless Chromium driven over the DevTools protocol, for the web app
//! suite (`cli/tests/web_apps.rs`) and its bench: `$CAPSTAN_CHROMIUM`,
//! else `chromium` on the `PATH`, started with `--remote-debugging-port=0`
//! and a throwaway profile; one DevTools WebSocket opens tabs, evaluates
//! in them and closes them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value as Json, json};
use tokio_tungstenite::tungstenite::Message;

/// Where Chromium is, if it is anywhere.
pub fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CAPSTAN_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Chromium, or `None` (after saying so) when it is missing outside CI.
pub fn browser_or_skip(test: &str) -> Option<Browser> {
    match chromium() {
        Some(path) => Some(Browser::launch(&path)),
        None if std::env::var_os("CI").is_some() => panic!("{test}: chromium is missing (install Debian's chromium)"),
        None => {
            eprintln!("SKIPPED {test}: chromium is missing (install Debian's chromium; CI fails instead)");
            None
        }
    }
}

/// A headless Chromium and a DevTools connection to it.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    devtools: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    next_id: u64,
}

impl Browser {
    pub fn launch(path: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(path)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let endpoint = loop {
            line.clear();
            if stderr.read_line(&mut line).unwrap() == 0 {
                panic!("chromium exited without a DevTools endpoint");
            }
            if let Some(endpoint) = line.trim().strip_prefix("DevTools listening on ") {
                break endpoint.to_string();
            }
        };
        // Keep draining chromium's log so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (devtools, _) = runtime
            .block_on(tokio_tungstenite::connect_async(endpoint))
            .expect("connect to DevTools");
        Browser {
            child,
            _profile: profile,
            runtime,
            devtools,
            next_id: 1,
        }
    }

    /// Sends a DevTools command (to a page when `session` is given) and
    /// waits for its result.
    pub fn command(&mut self, session: Option<&str>, method: &str, params: Json) -> Json {
        match self.try_command(session, method, params) {
            Ok(result) => result,
            Err(error) => panic!("DevTools {method}: {error}"),
        }
    }

    /// [`Browser::command`], with DevTools' error as `Err`.
    pub fn try_command(&mut self, session: Option<&str>, method: &str, params: Json) -> Result<Json, Json> {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let devtools = &mut self.devtools;
        self.runtime.block_on(async {
            devtools.send(Message::text(message.to_string())).await.unwrap();
            loop {
                let reply = tokio::time::timeout(Duration::from_secs(30), devtools.next())
                    .await
                    .expect("DevTools answers")
                    .expect("DevTools is open")
                    .unwrap();
                let Message::Text(text) = reply else { continue };
                let reply: Json = serde_json::from_str(&text).unwrap();
                if reply["id"] == json!(id) {
                    return match reply.get("error") {
                        Some(error) => Err(error.clone()),
                        None => Ok(reply["result"].clone()),
                    };
                }
            }
        })
    }

    /// Opens `url` in a new tab; returns the tab's session.
    pub fn open(&mut self, url: &str) -> (String, String) {
        let target = self.command(None, "Target.createTarget", json!({ "url": url }))["targetId"]
            .as_str()
            .unwrap()
            .to_string();
        let session = self.command(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        )["sessionId"]
            .as_str()
            .unwrap()
            .to_string();
        (target, session)
    }

    pub fn close(&mut self, target: &str) {
        self.command(None, "Target.closeTarget", json!({ "targetId": target }));
    }

    /// Evaluates `expression` in the tab (awaiting a promise it gives).
    /// While the tab is between documents (loading, following a
    /// redirect) there is nothing to evaluate in: that gives `null`.
    pub fn evaluate(&mut self, session: &str, expression: &str) -> Json {
        let result = self.try_command(
            Some(session),
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        match result {
            Ok(result) => result["result"]["value"].clone(),
            Err(error)
                if error["message"]
                    .as_str()
                    .is_some_and(|text| text.contains("execution context")) =>
            {
                Json::Null
            }
            Err(error) => panic!("DevTools Runtime.evaluate: {error}"),
        }
    }

    /// Loads `url` and waits until `expression` gives something `done`
    /// accepts (or `timeout` passes); returns the last value.
    pub fn wait_for(&mut self, url: &str, expression: &str, timeout: Duration, done: impl Fn(&Json) -> bool) -> Json {
        let (target, session) = self.open(url);
        let deadline = Instant::now() + timeout;
        let value = loop {
            let value = self.evaluate(&session, expression);
            if done(&value) || Instant::now() > deadline {
                break value;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        self.close(&target);
        value
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
