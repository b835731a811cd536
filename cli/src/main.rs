//! `capstan`: runs a Capstan node and talks to it over its control socket.
//! Every command except the node's life is a call on the host agent.

mod client;
mod cmd;
mod commands;
mod inspect;
mod state;

use clap::Parser;

use commands::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Start(_) | Command::Restart(_) | Command::Worker { .. }
    ) {
        end_quietly_when_output_is_closed();
    }
    let result = match cli.command {
        Command::Worker {
            memory_bytes,
            time_budget_ms,
        } => cmd::worker::run(memory_bytes, time_budget_ms),
        ref command => match state::StateDir::resolve(cli.state.as_deref()) {
            Ok(state) => cmd::run(command, &state, cli.as_agent.as_deref()),
            Err(error) => Err(error),
        },
    };
    if let Err(error) = result {
        eprintln!("capstan: {error:#}");
        std::process::exit(1);
    }
}

/// A client command whose reader went away (`capstan status | head -1`)
/// ends as Unix programs do, by SIGPIPE, rather than panicking in
/// `println!`. Not for a process that may host the node or a worker:
/// there a closed pipe or socket must be an error to handle, not death.
fn end_quietly_when_output_is_closed() {
    // SAFETY: called first in `main`, before any other thread exists;
    // setting a signal's disposition to its default has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
