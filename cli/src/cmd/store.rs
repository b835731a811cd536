//! Blobs and stored values: `store` streams a file or standard input to
//! the node in chunks (the node pulls them through a reader object this
//! process serves), or stores a text or JSON value; `cat` streams a blob's
//! bytes back. Large transfers show a progress bar on a terminal.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{IsTerminal, Read, Write};
use std::rc::Rc;

use anyhow::{Context, anyhow};
use capstan_node::runtime::{E, Exo};
use capstan_protocol::guards::DefaultGuards;
use capstan_protocol::patterns::M;
use capstan_protocol::{ErrorValue, Value, list, record};
use indicatif::{ProgressBar, ProgressStyle};

use super::path;
use crate::client::{call, settle, with_client};
use crate::commands::StoreArgs;
use crate::state::StateDir;

/// Bytes per chunk sent to or read from the node.
const CHUNK: usize = 1024 * 1024;
/// Transfers smaller than this show no progress bar.
const PROGRESS_THRESHOLD: u64 = 8 * 1024 * 1024;
/// Chunks asked for ahead while reading a blob.
const PREFETCH: usize = 4;

fn progress(total: Option<u64>) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() || total.is_some_and(|total| total < PROGRESS_THRESHOLD) {
        return None;
    }
    let bar = match total {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    Some(bar)
}

pub fn store(state: &StateDir, as_agent: Option<&str>, args: &StoreArgs) -> anyhow::Result<()> {
    let name = path(&args.name);
    let source = &args.source;
    if let Some(text) = &source.text {
        let text = text.clone();
        return with_client(state, as_agent, |client| async move {
            call(&client.agent, "storeValue", list![text, name]).await.map(|_| ())
        });
    }
    if let Some(json) = &source.json {
        let parsed: serde_json::Value = serde_json::from_str(json).context("--json is not valid JSON")?;
        let value = super::from_json(&parsed);
        return with_client(state, as_agent, |client| async move {
            call(&client.agent, "storeValue", list![value, name]).await.map(|_| ())
        });
    }
    let (input, total): (Box<dyn Read>, Option<u64>) = match &source.path {
        Some(file_path) => {
            let file =
                std::fs::File::open(file_path).with_context(|| format!("cannot open {}", file_path.display()))?;
            let len = file.metadata().map(|metadata| metadata.len()).ok();
            (Box::new(file), len)
        }
        None => (Box::new(std::io::stdin()), None),
    };
    let bar = progress(total);
    let reader_bar = bar.clone();
    with_client(state, as_agent, |client| async move {
        let reader = serve_reader(input, reader_bar)?;
        let stored = E(&client.agent).call("storeBlob", list![reader, name]);
        settle(&stored).await.map(|_| ())
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(())
}

/// An object whose `next()` gives the input's next chunk.
pub(crate) fn serve_reader(input: Box<dyn Read>, bar: Option<ProgressBar>) -> anyhow::Result<Value> {
    let input = Rc::new(RefCell::new(Some(input)));
    Exo::new("FileReader")
        .interface(M::interface(
            "FileReader",
            [("next", M::call([]).returns(M::record()))],
            DefaultGuards::None,
        ))
        .method("next", move |_, _| {
            let mut slot = input.borrow_mut();
            let Some(reader) = slot.as_mut() else {
                return Ok(record! { "done" => true, "value" => Value::Undefined });
            };
            let mut chunk = vec![0u8; CHUNK];
            let mut filled = 0;
            while filled < CHUNK {
                match reader.read(&mut chunk[filled..]) {
                    Ok(0) => break,
                    Ok(count) => filled += count,
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(error) => return Err(ErrorValue::plain(format!("reading the input failed: {error}"))),
                }
            }
            if filled == 0 {
                *slot = None;
                return Ok(record! { "done" => true, "value" => Value::Undefined });
            }
            chunk.truncate(filled);
            if let Some(bar) = &bar {
                bar.inc(filled as u64);
            }
            Ok(record! { "done" => false, "value" => Value::bytes(chunk) })
        })
        .make()
        .map_err(|error| anyhow!("{}", error.message))
}

pub fn cat(state: &StateDir, as_agent: Option<&str>, name: &str) -> anyhow::Result<()> {
    with_client(state, as_agent, |client| async move {
        let blob = call(&client.agent, "lookup", list![path(name)]).await?;
        let size = call(&blob, "size", list![]).await?.as_number().map(|n| n as u64);
        let reader = call(&blob, "reader", list![]).await?;
        let bar = progress(size);
        let mut stdout = std::io::stdout().lock();
        let mut pending: VecDeque<Value> = (0..PREFETCH).map(|_| E(&reader).call("next", list![])).collect();
        while let Some(next) = pending.pop_front() {
            let step = settle(&next).await?;
            let record = step.as_record().ok_or_else(|| anyhow!("{name} is not a blob"))?;
            if matches!(record.get("done"), Some(Value::Boolean(true))) {
                break;
            }
            pending.push_back(E(&reader).call("next", list![]));
            if let Some(Value::ByteArray(bytes)) = record.get("value") {
                stdout.write_all(bytes).context("cannot write to standard output")?;
                if let Some(bar) = &bar {
                    bar.inc(bytes.len() as u64);
                }
            }
        }
        stdout.flush()?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        Ok(())
    })
}
