//! Entry point: parse the command line and hand over to the subcommand.

use std::process::ExitCode;

use clap::Parser;
use prerender_proxy::cli::{Cli, Command};
use prerender_proxy::cmd::{check_config, is_bot, render, serve};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => serve::main(&cli.serve),
        Some(Command::Serve(args)) => serve::main(&args),
        Some(Command::CheckConfig(args)) => check_config::run(&args),
        Some(Command::IsBot(args)) => is_bot::run(&args),
        Some(Command::Render(args)) => render::run(&args),
    }
}
