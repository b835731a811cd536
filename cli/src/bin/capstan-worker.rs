//! `capstan-worker`: the process a node starts for each worker and each
//! kernel vat. It is `capstan __worker` (the same entry point and the same
//! arguments) in a program that holds nothing else: most of an idle
//! worker's memory is the pages of its program it maps, so a program of
//! only the engine and its session keeps each worker small (and the
//! crate's `build.rs` links it statically, so it maps no shared library
//! either). The node starts it when it sits beside the `capstan` program,
//! else `capstan __worker`.

use std::process::ExitCode;

use capstan_node::workers::WORKER_SUBCOMMAND;

const USAGE: &str = "usage: capstan-worker [__worker] --memory-bytes N --time-budget-ms N";

/// The two limits from the command line.
fn limits(mut args: impl Iterator<Item = String>) -> Result<(u64, u64), String> {
    let (mut memory_bytes, mut time_budget_ms) = (None, None);
    while let Some(arg) = args.next() {
        let slot = match arg.as_str() {
            WORKER_SUBCOMMAND => continue,
            "--memory-bytes" => &mut memory_bytes,
            "--time-budget-ms" => &mut time_budget_ms,
            other => return Err(format!("unexpected argument {other:?}")),
        };
        let value = args.next().ok_or_else(|| format!("{arg} takes a number"))?;
        *slot = Some(
            value
                .parse::<u64>()
                .map_err(|_| format!("{arg} takes a number, not {value:?}"))?,
        );
    }
    match (memory_bytes, time_budget_ms) {
        (Some(memory_bytes), Some(time_budget_ms)) => Ok((memory_bytes, time_budget_ms)),
        _ => Err("--memory-bytes and --time-budget-ms are both needed".to_string()),
    }
}

fn main() -> ExitCode {
    let (memory_bytes, time_budget_ms) = match limits(std::env::args().skip(1)) {
        Ok(limits) => limits,
        Err(error) => {
            eprintln!("capstan-worker: {error}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match capstan_node::workers::process::run(memory_bytes, time_budget_ms) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("capstan-worker: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::limits;

    fn parse(args: &[&str]) -> Result<(u64, u64), String> {
        limits(args.iter().map(|arg| arg.to_string()))
    }

    #[test]
    fn takes_the_arguments_the_node_passes_in_either_order() {
        assert_eq!(
            parse(&["__worker", "--memory-bytes", "1024", "--time-budget-ms", "50"]),
            Ok((1024, 50))
        );
        assert_eq!(
            parse(&["--time-budget-ms", "50", "--memory-bytes", "1024"]),
            Ok((1024, 50))
        );
    }

    #[test]
    fn refuses_missing_odd_and_malformed_arguments() {
        assert!(parse(&["--memory-bytes", "1024"]).is_err());
        assert!(parse(&["--memory-bytes"]).is_err());
        assert!(parse(&["--memory-bytes", "-1", "--time-budget-ms", "5"]).is_err());
        assert!(parse(&["--verbose", "--memory-bytes", "1", "--time-budget-ms", "5"]).is_err());
    }
}
