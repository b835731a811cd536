//! Web apps: `install` packs a directory's files into a blob and stores
//! the app's record (token, agent, files) under its name; `open` prints
//! the app's URL and opens it in a browser. The node serves them
//! (`capstan_node::daemon::web`); listing and removing are the ordinary
//! name commands.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, anyhow, bail};
use capstan_node::daemon::web::apps::{APP_MARKER, TOKEN_HEX_DIGITS, origin_label, token_shaped};
use capstan_node::daemon::web::bundle::AppFiles;
use capstan_node::daemon::web::port_setting;
use capstan_node::runtime::E;
use capstan_protocol::{Value, list, record};

use super::path;
use super::store::serve_reader;
use crate::client::{call, settle, with_client};
use crate::state::StateDir;

/// A fresh app token: 32 random bytes as hex.
fn fresh_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; TOKEN_HEX_DIGITS / 2];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for the app's token")?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

fn host_only(as_agent: Option<&str>) -> anyhow::Result<()> {
    if as_agent.is_some() {
        bail!("web apps are installed and opened by the host: drop --as");
    }
    Ok(())
}

pub fn install(
    state: &StateDir,
    as_agent: Option<&str>,
    dir: &Path,
    name: &str,
    powers: Option<&str>,
    introduce: &[String],
) -> anyhow::Result<()> {
    host_only(as_agent)?;
    if name.contains('.') {
        bail!("an app is named in the host's own names: {name:?} is a path");
    }
    let files = AppFiles::read_dir(dir).with_context(|| format!("{} cannot be installed", dir.display()))?;
    let count = files.files.len();
    let packed = files.pack();
    let token = fresh_token()?;
    let mut introduced = Vec::new();
    for pair in introduce {
        let Some((yours, theirs)) = pair.split_once(':') else {
            bail!("--introduce takes yours:theirs, not {pair:?}");
        };
        introduced.push((yours.to_string(), Value::from(theirs)));
    }
    if powers.is_some() && !introduced.is_empty() {
        bail!("--introduce gives names to a new guest; with --powers, give them to that agent instead");
    }
    let guest_name = format!("{name}-agent");
    let guest_shown = guest_name.clone();
    let made_guest = powers.is_none();
    with_client(state, as_agent, |client| async move {
        let host = &client.agent;
        if matches!(call(host, "has", list![Value::from(name)]).await?, Value::Boolean(true)) {
            bail!("{name} already names something: remove it first");
        }
        let agent = match powers {
            Some(powers) => call(host, "lookup", list![path(powers)]).await?,
            None => {
                if matches!(
                    call(host, "has", list![Value::from(guest_name.as_str())]).await?,
                    Value::Boolean(true)
                ) {
                    bail!("{guest_name} already names something: remove it, or name an agent with --powers");
                }
                let options = record! { "introducedNames" => Value::record(introduced) };
                call(host, "provideGuest", list![path(&guest_name), options]).await?
            }
        };
        let stored = async {
            let reader = serve_reader(Box::new(std::io::Cursor::new(packed)), None)?;
            let blob = settle(&E(host).call("storeBlob", list![reader])).await?;
            let app = record! {
                APP_MARKER => 1u32,
                "token" => token,
                "powers" => agent,
                "files" => blob,
            };
            call(host, "storeValue", list![app, path(name)]).await.map(|_| ())
        }
        .await;
        // All or nothing: a guest made for an app that was not stored goes.
        if stored.is_err() && powers.is_none() {
            let _ = call(host, "remove", list![path(&guest_name)]).await;
        }
        stored
    })?;
    if made_guest {
        println!("installed {name} ({count} files), with a new guest {guest_shown}");
    } else {
        println!("installed {name} ({count} files)");
    }
    Ok(())
}

/// The URL of app `name`, on its own origin.
fn app_url(state: &StateDir, name: &str) -> anyhow::Result<String> {
    let app = with_client(state, None, |client| async move {
        call(&client.agent, "lookup", list![path(name)]).await
    })?;
    let record = app.as_record().filter(|record| record.get(APP_MARKER).is_some());
    let token = record
        .and_then(|record| record.get("token"))
        .and_then(Value::as_str)
        .filter(|token| token_shaped(token))
        .ok_or_else(|| anyhow!("{name} is not a web app"))?
        .to_string();
    let port = port_setting(&state.paths)?
        .ok_or_else(|| anyhow!("the node has not chosen its web port yet (see `capstan log`)"))?;
    let label = origin_label(&token);
    Ok(format!("http://{label}.localhost:{port}/app/{token}/"))
}

pub fn open(state: &StateDir, as_agent: Option<&str>, name: &str, print_only: bool) -> anyhow::Result<()> {
    host_only(as_agent)?;
    let url = app_url(state, name)?;
    println!("{url}");
    if print_only {
        return Ok(());
    }
    let browser = std::env::var("BROWSER")
        .ok()
        .filter(|browser| !browser.is_empty())
        .unwrap_or_else(|| "xdg-open".to_string());
    let opened = Command::new(&browser)
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Err(error) = opened {
        eprintln!("no browser opened ({browser}: {error}); open the URL above");
    }
    Ok(())
}
