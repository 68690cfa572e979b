//! Entry point: parse the command line and hand over to the subcommand.

use std::process::ExitCode;

use clap::Parser;
use prerender_proxy::cli::{Cli, Command};
use prerender_proxy::config::{Config, LogFormat};
use prerender_proxy::{check_config, is_bot, render_command, serve, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => run_serve(&cli.serve),
        Some(Command::Serve(args)) => run_serve(&args),
        Some(Command::CheckConfig(args)) => check_config::run(&args),
        Some(Command::IsBot(args)) => is_bot::run(&args),
        Some(Command::Render(args)) => {
            telemetry::init(LogFormat::Text);
            render_command::run(&args)
        }
    }
}

fn run_serve(args: &prerender_proxy::cli::ServeArgs) -> ExitCode {
    let config = match Config::resolve(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("prerender-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("prerender-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("prerender-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}
