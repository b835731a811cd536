//! Runs every benchmark of issue 19's targets and prints one table
//! (figure, result, limit, ratio, target), then one JSON line per figure.
//! Each figure comes from a benchmark program beside this one, started
//! with `CAPSTAN_BENCH_JSON` set so that it prints its figures as JSON
//! lines (`capstan_tests::bench::Figure`); each measures its honest limit
//! in the same run. Every program runs `--repeat N` times (default 1) and
//! each figure's table row is the run with the median ratio (the median
//! result for a figure without a limit), with the range of the ratios.
//!
//! Run: `cargo run --release -p capstan-tests --example bench [-- --repeat 3] [PROGRAM…]`
//! (it builds the other programs and the `capstan` binary first, with the
//! same profile; `CAPSTAN_BIN` overrides the binary).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a benchmark stops at its first failure"
)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use capstan_tests::bench::{Figure, JSON_ENV, load_average, table};

/// The programs, in target order, with the arguments that keep them to
/// the figures of the table.
const PROGRAMS: &[(&str, &[&str])] = &[
    ("net_bench", &["--calls-only"]),
    ("product_bench", &[]),
    ("daemon_bench", &[]),
    ("store_write_bench", &[]),
    ("kernel_bench", &["--sends-only"]),
    ("kernel_queue_bench", &["--api-only"]),
];

fn main() {
    let mut repeat = 1usize;
    let mut only = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--repeat" {
            repeat = args.next().and_then(|count| count.parse().ok()).expect("--repeat N");
        } else {
            only.push(arg);
        }
    }
    let examples = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    let profile_dir = examples.parent().unwrap().to_path_buf();
    build(&profile_dir);
    let capstan = std::env::var_os("CAPSTAN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| profile_dir.join("capstan"));
    println!("capstan binary: {}", capstan.display());
    println!("load average before: {}", load_average());

    let mut runs: Vec<Vec<Figure>> = Vec::new();
    for round in 0..repeat {
        for (program, program_args) in PROGRAMS {
            if !only.is_empty() && !only.iter().any(|wanted| wanted == program) {
                continue;
            }
            println!("== {program} (run {} of {repeat}; load {})", round + 1, load_average());
            for figure in run(&examples.join(program), program_args, &capstan) {
                match runs.iter_mut().find(|same| same[0].name == figure.name) {
                    Some(same) => same.push(figure),
                    None => runs.push(vec![figure]),
                }
            }
        }
    }
    println!("load average after: {}", load_average());
    println!();
    let chosen: Vec<(Figure, String)> = runs.into_iter().map(median_run).collect();
    let figures: Vec<Figure> = chosen.iter().map(|(figure, _)| figure.clone()).collect();
    let mut lines = table(&figures).lines().map(str::to_string).collect::<Vec<_>>();
    for (line, (_, spread)) in lines.iter_mut().skip(1).zip(&chosen) {
        line.push_str(spread);
    }
    println!("{}", lines.join("\n"));
    println!();
    for figure in &figures {
        println!("{}", figure.json());
    }
}

/// Builds the benchmark programs and the `capstan` binary in the profile
/// this runner was built with (when started by cargo).
fn build(profile_dir: &std::path::Path) {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return;
    };
    let profile = profile_dir.file_name().unwrap().to_str().unwrap();
    let profile = if profile == "debug" { "dev" } else { profile };
    let status = Command::new(cargo)
        .args(["build", "--profile", profile, "-p", "capstan-tests", "--examples"])
        .args(["-p", "capstan", "--bin", "capstan"])
        .status()
        .expect("cargo build");
    assert!(status.success(), "building the benchmarks failed");
}

/// Runs one program; its figures (its other lines are shown as they come).
fn run(program: &std::path::Path, args: &[&str], capstan: &std::path::Path) -> Vec<Figure> {
    let mut child = Command::new(program)
        .args(args)
        .env(JSON_ENV, "1")
        .env("CAPSTAN_BIN", capstan)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {}: {error}", program.display()));
    let mut figures = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        match Figure::from_json(&line) {
            Some(figure) => figures.push(figure),
            None => println!("  {line}"),
        }
    }
    let status = child.wait().unwrap();
    if !status.success() {
        println!("  {} failed: {status}", program.display());
    }
    figures
}

/// The run with the median ratio (or result), and the range of the ratios
/// (or results) over the runs.
fn median_run(mut runs: Vec<Figure>) -> (Figure, String) {
    let key = |figure: &Figure| figure.ratio().unwrap_or(figure.result);
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let spread = if runs.len() > 1 {
        let unit = if runs[0].limit.is_some() { "×" } else { "" };
        format!(
            "   (runs: {} {:.2}{unit}–{:.2}{unit})",
            runs.len(),
            key(&runs[0]),
            key(&runs[runs.len() - 1])
        )
    } else {
        String::new()
    };
    let middle = runs.swap_remove(runs.len() / 2);
    (middle, spread)
}
