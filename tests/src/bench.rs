//! What the benchmark programs share: a [`Figure`] (a result beside the
//! honest limit measured in the same run, their ratio and the target of
//! issue 19), printed as a human line and, when the runner asks
//! ([`JSON_ENV`]), as one JSON line; the table the runner
//! (`tests/examples/bench.rs`) prints from those lines; medians; and
//! re-executing the running program as a helper process (the bare peers
//! of [`crate::bare`] run that way); and the CPU time processes spend,
//! to show where a figure's time goes.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Set by the runner: each figure is also printed as one JSON line.
pub const JSON_ENV: &str = "CAPSTAN_BENCH_JSON";

/// Which way is better for a figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// A time or a size: lower is better.
    Lower,
    /// A rate: higher is better.
    Higher,
}

/// One figure: `result` in `unit`, beside `limit` (same unit) when there is
/// one, and the target it is measured against.
#[derive(Clone, Debug)]
pub struct Figure {
    pub name: String,
    pub result: f64,
    pub unit: String,
    pub limit: Option<f64>,
    pub better: Better,
    pub target: String,
}

impl Figure {
    pub fn new(name: &str, result: f64, unit: &str, better: Better) -> Figure {
        Figure {
            name: name.to_string(),
            result,
            unit: unit.to_string(),
            limit: None,
            better,
            target: String::new(),
        }
    }

    /// The limit measured in the same run, in the figure's unit.
    pub fn limit(mut self, limit: f64) -> Figure {
        self.limit = Some(limit);
        self
    }

    /// The target of issue 19 this figure is held to (free text).
    pub fn target(mut self, target: &str) -> Figure {
        self.target = target.to_string();
        self
    }

    /// `result / limit`: for a time, how many times the limit it takes;
    /// for a rate, the share of the limit it reaches.
    pub fn ratio(&self) -> Option<f64> {
        self.limit.filter(|limit| *limit > 0.0).map(|limit| self.result / limit)
    }

    /// Prints the figure as a human line, and as a JSON line when the
    /// runner asked for them.
    pub fn report(&self) {
        let limit = self
            .limit
            .map(|limit| format!("   limit {limit:.3} {}", self.unit))
            .unwrap_or_default();
        let ratio = self.ratio().map(|ratio| format!("   {ratio:.2}×")).unwrap_or_default();
        println!("{:<52} {:>12.3} {}{limit}{ratio}", self.name, self.result, self.unit);
        if std::env::var_os(JSON_ENV).is_some() {
            println!("{}", self.json());
        }
    }

    pub fn json(&self) -> String {
        serde_json::json!({
            "figure": self.name,
            "result": self.result,
            "unit": self.unit,
            "limit": self.limit,
            "ratio": self.ratio(),
            "better": match self.better { Better::Lower => "lower", Better::Higher => "higher" },
            "target": self.target,
        })
        .to_string()
    }

    /// A figure from one of [`Figure::json`]'s lines.
    pub fn from_json(line: &str) -> Option<Figure> {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        Some(Figure {
            name: value["figure"].as_str()?.to_string(),
            result: value["result"].as_f64()?,
            unit: value["unit"].as_str().unwrap_or_default().to_string(),
            limit: value["limit"].as_f64(),
            better: if value["better"].as_str() == Some("higher") {
                Better::Higher
            } else {
                Better::Lower
            },
            target: value["target"].as_str().unwrap_or_default().to_string(),
        })
    }
}

/// The table of figures: figure, result, limit, ratio, target.
pub fn table(figures: &[Figure]) -> String {
    let mut out = format!(
        "{:<52} {:>16} {:>16} {:>8}  {}\n",
        "figure", "result", "limit", "ratio", "target"
    );
    for figure in figures {
        let limit = figure
            .limit
            .map(|limit| format!("{} {}", compact(limit), figure.unit))
            .unwrap_or_else(|| "-".into());
        let ratio = figure
            .ratio()
            .map(|ratio| format!("{ratio:.2}×"))
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<52} {:>16} {:>16} {:>8}  {}\n",
            figure.name,
            format!("{} {}", compact(figure.result), figure.unit),
            limit,
            ratio,
            figure.target
        ));
    }
    out
}

/// A number with about four significant digits.
fn compact(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1000.0 {
        format!("{value:.0}")
    } else if magnitude >= 100.0 {
        format!("{value:.1}")
    } else if magnitude >= 10.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// The median of `samples` (zero for none).
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

pub fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

pub fn per_second(count: usize, duration: Duration) -> f64 {
    count as f64 / duration.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// Starts the running program again as a helper process with `args`,
/// its standard input and output piped to us. It is killed when the
/// returned guard is dropped.
pub fn spawn_self(args: &[&str]) -> std::io::Result<Helper> {
    let child = Command::new(std::env::current_exe()?)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    Ok(Helper { child })
}

/// A helper process, killed and reaped on drop.
pub struct Helper {
    pub child: Child,
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The machine's load averages (`/proc/loadavg`), to print beside figures.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The CPU time every thread of process `pid` has spent so far, from
/// `/proc/PID/task/*/schedstat` (nanoseconds, unlike the clock ticks of
/// `/proc/PID/stat`); `None` where that cannot be read.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        total += task_cpu_time(&task.ok()?.path())?;
    }
    Some(total)
}

/// The CPU time of one thread, given its `/proc/PID/task/TID` directory.
pub fn task_cpu_time(task: &std::path::Path) -> Option<Duration> {
    let text = std::fs::read_to_string(task.join("schedstat")).ok()?;
    Some(Duration::from_nanos(text.split_whitespace().next()?.parse().ok()?))
}

/// The processes whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                // The parent is the second field after the command, which
                // is in parentheses and may hold spaces.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

/// Named processes whose CPU time is measured across a piece of work.
pub struct CpuMeter {
    processes: Vec<(String, u32, Option<Duration>)>,
}

impl CpuMeter {
    /// Starts measuring `processes` (a name and a pid each).
    pub fn start(processes: Vec<(String, u32)>) -> CpuMeter {
        CpuMeter {
            processes: processes
                .into_iter()
                .map(|(name, pid)| {
                    let before = cpu_time(pid);
                    (name, pid, before)
                })
                .collect(),
        }
    }

    /// Each process's CPU time since [`CpuMeter::start`], divided by
    /// `count`; `None` for a process that could not be read.
    pub fn per(&self, count: usize) -> Vec<(String, Option<Duration>)> {
        let count = u32::try_from(count.max(1)).unwrap_or(u32::MAX);
        self.processes
            .iter()
            .map(|(name, pid, before)| {
                let spent = before
                    .zip(cpu_time(*pid))
                    .map(|(before, after)| after.saturating_sub(before));
                (name.clone(), spent.map(|spent| spent / count))
            })
            .collect()
    }
}

/// One line of [`CpuMeter::per`]'s figures in µs, and their sum.
pub fn cpu_line(figures: &[(String, Option<Duration>)]) -> String {
    let mut total = Duration::ZERO;
    let mut parts = Vec::with_capacity(figures.len());
    for (name, spent) in figures {
        match spent {
            Some(spent) => {
                total += *spent;
                parts.push(format!("{name} {:.1}", micros(*spent)));
            }
            None => parts.push(format!("{name} ?")),
        }
    }
    format!("{}; total {:.1}", parts.join(", "), micros(total))
}
