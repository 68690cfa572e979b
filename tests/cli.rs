//! The command line: check-config and start-up validation name the field.

mod common;

use std::process::Command;

use common::proxy::{check_config, BIN};

/// Whether `check-config` accepts `toml`, and all it said (stderr, then
/// stdout).
fn check(toml: &str) -> (bool, String) {
    let (ok, stdout, stderr) = check_config(toml);
    (ok, stderr + &stdout)
}

#[test]
fn check_config_accepts_a_full_file() {
    let (ok, out) = check(
        r#"
        listen = "127.0.0.1:3000"
        browsers = 1
        [[sites]]
        domain = "www.example.com"
        origin = "http://10.0.0.5:8080"
        plan = "pro"
        ignore = ["^/api/"]
        strip_scripts = true
        on_render_failure = "passthrough"
        cache_control = "public, max-age=600"
        query_params = ["page"]
        mobile_variant = true
        [plans.pro]
        refresh_every = "12h"
        "#,
    );
    assert!(ok, "{out}");
}

#[test]
fn check_config_takes_the_single_sites_options_at_the_top_only_with_an_origin() {
    let single = r#"
        origin = "https://shop.netlify.test"
        strip_scripts = false
        ignore = ["^/api/"]
        query_params = "page,sort"
        shadow_dom = "flatten"
        "#;
    let (ok, out) = check(single);
    assert!(ok, "{out}");
    let (ok, out) = check(&single.replace("origin = ", "# origin = "));
    assert!(!ok);
    assert!(
        out.contains("top of the file") && out.contains("[[sites]]"),
        "{out}"
    );
}

#[test]
fn credentials_in_an_origin_url_are_removed_and_never_shown() {
    let (ok, warned) =
        check("[[sites]]\ndomain = \"a.test\"\norigin = \"http://bob:hunter2@127.0.0.1:9\"\n");
    assert!(ok, "{warned}");
    assert!(
        warned.contains("sites[0].origin") && warned.contains("removed"),
        "{warned}"
    );
    let (ok, refused) = check("origin = \"https://bob:hunter2@h:99999\"\n");
    assert!(!ok);
    assert!(refused.contains("origin"), "{refused}");
    for out in [warned, refused] {
        assert!(!out.contains("hunter2"), "{out}");
    }
}

#[test]
fn check_config_rejects_an_unknown_key_naming_it() {
    let (ok, out) = check("listen = \"127.0.0.1:3000\"\nbrowserss = 2\n");
    assert!(!ok);
    assert!(out.contains("browserss") && out.contains("line 2"), "{out}");
    assert_eq!(out.trim().lines().count(), 1, "{out}");
}

#[test]
fn check_config_rejects_a_bad_url_naming_it() {
    let (ok, out) = check("[[sites]]\ndomain = \"a.test\"\norigin = \"not a url\"\n");
    assert!(!ok);
    assert!(out.contains("sites[0].origin"), "{out}");
}

#[test]
fn check_config_rejects_zero_browsers_naming_it() {
    let (ok, out) = check("browsers = 0\n");
    assert!(!ok);
    assert!(out.contains("browsers"), "{out}");
}

#[test]
fn check_config_rejects_an_unreadable_file() {
    let out = Command::new(BIN)
        .args(["check-config", "--config", "/nonexistent/c.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn serve_refuses_bad_configuration_at_start_with_one_line() {
    let out = Command::new(BIN)
        .args(["serve", "--browsers", "0", "--listen", "127.0.0.1:0"])
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("browsers"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let out = Command::new(BIN)
        .args(["serve", "--role", "renderer"])
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("role"));
}

#[test]
fn environment_fills_options_and_flags_win() {
    // PRERENDER_BROWSERS=0 alone is refused (env is read) …
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("PRERENDER_BROWSERS", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("browsers"));
    // … and a flag wins over it: check with an invalid listen so it exits at once.
    let out = Command::new(BIN)
        .args(["serve", "--browsers", "1", "--listen", "nope"])
        .env("PRERENDER_BROWSERS", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen") && !err.contains("browsers"), "{err}");
}

#[test]
fn is_bot_prints_the_rule_and_exits_by_verdict() {
    let run = |ua: &str, extra: &[&str]| {
        let out = Command::new(BIN)
            .arg("is-bot")
            .arg(ua)
            .args(extra)
            .env_remove("PRERENDER_BOT_FAMILIES")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    };
    let (code, out) = run(
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        &[],
    );
    assert_eq!(code, Some(0));
    assert!(out.starts_with("bot search-engines:"), "{out}");
    let (code, out) = run(
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(out.starts_with("human"), "{out}");
    let (code, out) = run("curl/8.5.0", &[]);
    assert_eq!(code, Some(1), "{out}");
    let (code, out) = run("curl/8.5.0", &["--bot-families", "http-libraries"]);
    assert_eq!(code, Some(0), "{out}");
}

#[tokio::test]
async fn render_prints_the_rendered_page_and_fails_with_exit_1() {
    let spa = common::spa::Spa::start().await;
    let out = tokio::process::Command::new(BIN)
        .args([
            "render",
            "https://www.example.test/cli/page",
            "--origin",
            &spa.url(),
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("Rendered by JavaScript at /cli/page"),
        "{stdout}"
    );
    assert!(stdout.contains("host=www.example.test"), "{stdout}");
    assert!(stderr.contains("status 200"), "{stderr}");

    let out = tokio::process::Command::new(BIN)
        .args([
            "render",
            "https://www.example.test/boom",
            "--origin",
            &spa.url(),
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("origin"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
