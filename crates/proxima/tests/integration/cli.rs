//! The real `proxima` binary: `config example`, `check`, and `serve` refusing unsafe configs.

use std::process::{Output, Stdio};
use std::time::Duration;

use crate::harness::*;

fn run(command: &mut std::process::Command) -> (Output, String, String) {
    let output = command.output().expect("run proxima");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

/// Runs `proxima check --config <text in a temp file>`; returns (exit code, stdout, stderr, path).
fn check(text: &str) -> (Option<i32>, String, String, String) {
    let path = temp_file("check.toml", text);
    let (output, stdout, stderr) = run(proxima().args(["check", "--config"]).arg(&path));
    let _ = std::fs::remove_file(&path);
    (
        output.status.code(),
        stdout,
        stderr,
        path.display().to_string(),
    )
}

/// A master key good enough for `serve`.
const STRONG_MASTER: &str = "sk-cli-test-master-5e0c1b7d9a";

/// Runs `proxima check` on `text` with `env` set.
fn check_with(text: &str, env: &[(&str, &str)]) -> (Option<i32>, String, String, String) {
    let path = temp_file("check.toml", text);
    let mut command = proxima();
    command
        .args(["check", "--config"])
        .arg(&path)
        .envs(env.iter().copied());
    let (output, stdout, stderr) = run(&mut command);
    let _ = std::fs::remove_file(&path);
    (
        output.status.code(),
        stdout,
        stderr,
        path.display().to_string(),
    )
}

fn example() -> String {
    let (output, example, _) = run(proxima().args(["config", "example"]));
    assert!(output.status.success());
    example
}

#[test]
fn the_example_config_needs_its_master_key_then_passes_check() {
    let example = example();
    assert!(example.contains("[providers."), "{example}");
    assert!(example.contains("[models."), "{example}");
    assert!(example.contains('#'), "the example should be commented");

    // No well-known fallback: without the variable, check says which one is missing.
    let (code, _, stderr, path) = check(&example);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("PROXIMA_MASTER_KEY") && stderr.contains(&path),
        "{stderr}"
    );

    let (code, stdout, stderr, path) =
        check_with(&example, &[("PROXIMA_MASTER_KEY", STRONG_MASTER)]);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains(&path) && stdout.contains("valid"),
        "{stdout}"
    );
}

/// Runs `proxima serve --config <text>` expecting it to refuse to start; returns its stderr.
fn serve_refusal(text: &str, env: &[(&str, &str)]) -> String {
    let path = temp_file("refused.toml", text);
    let mut child = proxima()
        .args(["serve", "--config"])
        .arg(&path)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("proxima started serving a config it should refuse:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(!status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn serve_refuses_a_placeholder_or_short_master_key_and_says_how_to_fix_it() {
    let config = |master: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmaster_key = \"{master}\"\n\n[providers.m]\nkind = \"mock\"\n\n[models.mock]\ntargets = [{{ provider = \"m\", model = \"m\" }}]\n"
        )
    };
    for master in ["change-me-master-key", "s3cret-key"] {
        let stderr = serve_refusal(&config(master), &[]);
        assert!(
            stderr.contains("server.master_key") && stderr.contains("openssl rand"),
            "{master}: {stderr}"
        );
        assert!(!stderr.contains(master), "the key is shown: {stderr}");
    }
    // The same through the example's variable.
    let stderr = serve_refusal(&example(), &[("PROXIMA_MASTER_KEY", "change-me-please")]);
    assert!(stderr.contains("server.master_key"), "{stderr}");
}

/// The example config, listening on a free port, its database in a fresh directory.
fn example_on_a_free_port() -> std::path::PathBuf {
    let example = example().replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"");
    assert!(
        example.contains("127.0.0.1:0"),
        "the example's listen line moved"
    );
    temp_file("example.toml", &example)
}

#[tokio::test]
async fn serve_logs_why_requests_need_a_key_in_plain_text_when_piped() {
    let path = example_on_a_free_port();
    let mut command = proxima();
    command
        .args(["serve", "--config"])
        .arg(&path)
        .env("PROXIMA_MASTER_KEY", STRONG_MASTER);
    let served = Served::start(command);
    let answer = Answer::read(
        http_client()
            .post(served.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(chat_body("mock", "hi").to_string()),
    )
    .await;
    assert_eq!(answer.status, 401, "{}", answer.text());
    let stderr = served.stop();
    let _ = std::fs::remove_file(&path);
    assert!(
        stderr.contains("anonymous access is off") && stderr.contains("server.master_key"),
        "{stderr}"
    );
    // Piped, not a terminal: no colour codes.
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI codes in piped logs: {stderr:?}"
    );
}

#[tokio::test]
async fn the_first_virtual_key_ends_anonymous_access_and_the_log_says_so() {
    let dir = temp_path("anonymous");
    std::fs::create_dir_all(&dir).unwrap();
    let path = temp_file(
        "anonymous.toml",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[storage]\ndatabase = \"sqlite://{}\"\nsync_interval = \"100ms\"\n\n[providers.m]\nkind = \"mock\"\n\n[models.mock]\ntargets = [{{ provider = \"m\", model = \"m\" }}]\n",
            dir.join("keys.db").display()
        ),
    );
    let mut command = proxima();
    command.args(["serve", "--config"]).arg(&path);
    let served = Served::start(command);
    let chat = || {
        Answer::read(
            http_client()
                .post(served.url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(chat_body("mock", "hi").to_string()),
        )
    };
    assert_eq!(chat().await.status, 200);

    let (output, stdout, stderr) = run(proxima()
        .args(["keys", "create", "--name", "first", "--config"])
        .arg(&path));
    assert!(output.status.success(), "{stdout}{stderr}");
    let refused = eventually(Duration::from_secs(3), || async {
        chat().await.status == 401
    })
    .await;
    assert!(
        refused.is_some(),
        "anonymous requests still served after the first virtual key"
    );

    let stderr = served.stop();
    let _ = std::fs::remove_file(&path);
    assert!(stderr.contains("anonymous access is on"), "{stderr}");
    assert!(
        stderr.contains("anonymous access is off from now on") && stderr.contains("virtual keys"),
        "{stderr}"
    );
}

#[test]
fn check_reports_every_problem_in_one_run_each_with_its_line() {
    let (code, _, stderr, path) = check(
        "[server]\nlisten = \"127.0.0.1:8080\"\nlisten_port = 9090\n\n\
         [providers.p]\nkind = \"openai\"\napi_key = \"${PROXIMA_IT_SURELY_UNSET_VAR}\"\ncolour = \"blue\"\ntimeout = \"ten seconds\"\n\n\
         [models.chat]\ntargets = [{ provider = \"ghost\", model = \"a\", wieght = 2 }]\n\n\
         [routing]\nbogus = true\n",
    );
    assert_eq!(code, Some(1), "{stderr}");
    for (needle, line) in [
        ("listen_port", 3),
        ("PROXIMA_IT_SURELY_UNSET_VAR", 7),
        ("colour", 8),
        ("ten seconds", 9),
        ("wieght", 12),
        ("ghost", 12),
        ("bogus", 15),
    ] {
        let shown = stderr
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("nothing about {needle:?}:\n{stderr}"));
        assert!(
            shown.starts_with(&format!("{path}:{line}: ")),
            "{needle:?} should be at line {line}: {shown}"
        );
    }
    assert!(stderr.contains("7 problem(s)"), "{stderr}");
}

#[test]
fn check_reports_a_missing_variable_by_name_and_line() {
    let (code, _, stderr, path) = check(
        "[providers.openai]\nkind = \"openai\"\n\napi_key = \"${PROXIMA_IT_SURELY_UNSET_VAR}\"\n",
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("PROXIMA_IT_SURELY_UNSET_VAR"), "{stderr}");
    assert!(stderr.contains(&format!("{path}:4")), "{stderr}");
}

#[test]
fn check_reports_every_broken_reference_with_its_location() {
    let (code, _, stderr, path) = check(
        "[providers.real]\nkind = \"mock\"\n\n\
         [models.chat]\ntargets = [{ provider = \"real\", model = \"a\" }, { provider = \"ghost\", model = \"b\" }]\nfallbacks = [\"phantom\"]\n\n\
         [keys.k]\nkey = \"secret-k\"\nmodels = [\"nonexistent\"]\n",
    );
    assert_eq!(code, Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let line_with = |needle: &str| {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line mentions {needle:?}:\n{stderr}"))
            .to_string()
    };
    let provider = line_with("ghost");
    assert!(
        provider.contains(&path) && provider.contains("models.chat.targets[1].provider"),
        "{provider}"
    );
    let fallback = line_with("phantom");
    assert!(
        fallback.contains(&path) && fallback.contains("models.chat.fallbacks"),
        "{fallback}"
    );
    let key = line_with("nonexistent");
    assert!(key.contains("keys.k.models"), "{key}");
    assert!(stderr.contains("3 problem(s)"), "{stderr}");
}

#[test]
fn check_reports_bad_values_with_their_location() {
    let (code, _, stderr, _) = check(
        "[providers.p]\nkind = \"openai\"\nbase_url = \"ftp://example.com\"\ntimeout = \"ten seconds\"\n",
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("timeout") || stderr.contains("ten seconds"),
        "{stderr}"
    );

    let (code, _, stderr, _) =
        check("[providers.p]\nkind = \"openai\"\nbase_url = \"ftp://example.com\"\n");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("providers.p.base_url"), "{stderr}");

    let (code, _, stderr, _) = check("[providers.p]\nkind = \"carrier-pigeon\"\n");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("carrier-pigeon"), "{stderr}");
}

#[test]
fn serve_on_all_interfaces_without_keys_refuses_to_start() {
    let stderr = serve_refusal(
        "[server]\nlisten = \"0.0.0.0:0\"\n\n[providers.m]\nkind = \"mock\"\n\n[models.mock]\ntargets = [{ provider = \"m\", model = \"m\" }]\n",
        &[],
    );
    assert!(stderr.contains("0.0.0.0"), "{stderr}");
    assert!(
        stderr.contains("key") && stderr.contains("server.listen"),
        "the message should say why and what to change: {stderr}"
    );

    // The same config with a key is accepted by check.
    let (code, stdout, stderr, _) = check(
        "[server]\nlisten = \"0.0.0.0:0\"\nmaster_key = \"mk-1\"\n\n[providers.m]\nkind = \"mock\"\n\n[models.mock]\ntargets = [{ provider = \"m\", model = \"m\" }]\n",
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
}

#[test]
fn check_without_a_config_file_validates_the_built_in_default() {
    let dir = temp_path("empty-dir");
    std::fs::create_dir_all(&dir).unwrap();
    let (output, stdout, stderr) = run(proxima().arg("check").current_dir(&dir));
    let _ = std::fs::remove_dir(&dir);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("built-in default") && stdout.contains("valid"),
        "{stdout}"
    );
}

#[test]
fn check_reads_proxima_config_from_the_environment_and_proxima_toml_from_cwd() {
    let path = temp_file("env.toml", "[providers.envp]\nkind = \"mock\"\n\n[models.m]\ntargets = [{ provider = \"envp\", model = \"m\" }]\n");
    let (output, stdout, stderr) = run(proxima().arg("check").env("PROXIMA_CONFIG", &path));
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains(&path.display().to_string()), "{stdout}");
    let _ = std::fs::remove_file(&path);

    let dir = temp_path("cwd");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("proxima.toml"), "[server]\nbogus = 1\n").unwrap();
    let (output, _, stderr) = run(proxima().arg("check").current_dir(&dir));
    let _ = std::fs::remove_file(dir.join("proxima.toml"));
    let _ = std::fs::remove_dir(&dir);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("proxima.toml:2"), "{stderr}");
}

#[test]
fn check_of_a_missing_file_fails_saying_so() {
    let path = temp_path("does-not-exist.toml");
    let (output, _, stderr) = run(proxima().args(["check", "--config"]).arg(&path));
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
}
