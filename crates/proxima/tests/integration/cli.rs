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

#[test]
fn the_example_config_passes_check_in_a_clean_environment() {
    let (output, example, _) = run(proxima().args(["config", "example"]));
    assert!(output.status.success());
    assert!(example.contains("[providers."), "{example}");
    assert!(example.contains("[models."), "{example}");
    assert!(example.contains('#'), "the example should be commented");

    let (code, stdout, stderr, path) = check(&example);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains(&path) && stdout.contains("valid"),
        "{stdout}"
    );
}

#[test]
fn check_reports_an_unknown_key_with_its_line() {
    let (code, _, stderr, path) = check(
        "[server]\nlisten = \"127.0.0.1:8080\"\nlisten_port = 9090\n\n[providers.m]\nkind = \"mock\"\n",
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("listen_port"), "{stderr}");
    assert!(stderr.contains(&format!("{path}:3")), "{stderr}");

    let (code, _, stderr, path) = check(
        "[providers.m]\nkind = \"mock\"\n\n[models.x]\ntargets = [{ provider = \"m\", model = \"a\" }]\nstrategy = \"priority\"\nretry = 3\n",
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("retry"), "{stderr}");
    assert!(stderr.contains(&format!("{path}:7")), "{stderr}");
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
    let path = temp_file(
        "open.toml",
        "[server]\nlisten = \"0.0.0.0:0\"\n\n[providers.m]\nkind = \"mock\"\n\n[models.mock]\ntargets = [{ provider = \"m\", model = \"m\" }]\n",
    );
    let mut child = proxima()
        .args(["serve", "--config"])
        .arg(&path)
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
            panic!("proxima started serving on 0.0.0.0 without any key");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success());
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
