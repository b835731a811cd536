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
