//! `prerender-proxy is-bot "USER-AGENT"`: prints `bot <rule>` (exit 0) or
//! `human <reason>` (exit 1), with the same patterns and families as `serve`.

use std::process::ExitCode;

use crate::bot::BotDetector;
use crate::cli::IsBotArgs;
use crate::config::parse_families;

pub fn run(args: &IsBotArgs) -> ExitCode {
    let families = match parse_families(args.bot_families.clone()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("prerender-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    let detector = match BotDetector::new(&families, args.bot_patterns.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("prerender-proxy: bot_patterns: {e}");
            return ExitCode::from(2);
        }
    };
    let verdict = detector.classify(&args.user_agent);
    println!("{verdict}");
    if verdict.is_bot() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
