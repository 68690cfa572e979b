//! `prerender-proxy check-config --config FILE`: loads and validates a file
//! exactly as `serve` would, then exits.

use std::process::ExitCode;

use crate::cli::{CheckConfigArgs, ServeArgs};
use crate::config::Config;

pub fn run(args: &CheckConfigArgs) -> ExitCode {
    let serve = ServeArgs {
        config: Some(args.config.clone()),
        ..Default::default()
    };
    match Config::resolve(&serve) {
        Ok(c) => {
            for warning in c.warnings() {
                eprintln!("prerender-proxy: warning: {warning}");
            }
            let sites = c.sites.iter().count();
            println!(
                "{}: ok ({sites} site(s), {} plan(s))",
                args.config.display(),
                c.plans.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("prerender-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}
