//! The real `llmgate` binary: configuration errors name their key and exit
//! with status 2 before anything is bound; a good configuration serves and
//! stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_llmgate");

/// The environment overrides `llmgate serve` reads; cleared for the child
/// so that the caller's environment cannot change the outcome.
const ENV_VARS: [&str; 9] = [
    "LLMGATE_LOG_FORMAT",
    "ROUTING_STRATEGY",
    "ENABLE_GPU_AWARE",
    "MAX_RETRIES",
    "HEALTH_CHECK_INTERVAL",
    "LLMGATE_LISTEN",
    "LLMGATE_METRICS_LISTEN",
    "LLMGATE_ADMIN_LISTEN",
    "LLMGATE_ADMIN_TOKEN",
];

/// A config file in the temp dir, removed on drop.
struct TempConfig(PathBuf);

impl TempConfig {
    fn new(name: &str, text: &str) -> TempConfig {
        let path = std::env::temp_dir().join(format!(
            "llmgate-cli-test-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        TempConfig(path)
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `llmgate serve` on ephemeral loopback ports, plus `args`.
fn serve(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "warn");
    for v in ENV_VARS {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Waits up to 10 s for the child to exit; kills it (by its own handle)
/// and fails if it does not.
fn wait_bounded(child: &mut Child) -> ExitStatus {
    for _ in 0..500 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("llmgate did not exit within 10 s");
}

/// The lines of a child's output, read on a thread so that a silent child
/// cannot block the test.
fn lines_of(out: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// SIGTERM, to this child only, by its PID; then waits for it (bounded).
fn terminate(child: &mut Child) -> ExitStatus {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_bounded(child)
}

/// Runs a `serve` that must be refused; returns its stderr.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut child = serve(args, env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut child);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(
        status.code(),
        Some(2),
        "config errors exit with 2: {status}; stderr: {stderr}"
    );
    assert!(
        stderr.contains("config error"),
        "stderr says what failed: {stderr}"
    );
    stderr
}

#[test]
fn unknown_key_is_named() {
    let file = TempConfig::new("unknown-key", "[routing]\nstrategyy = \"p2c\"\n");
    let stderr = refused(&["--config", file.0.to_str().unwrap()], &[]);
    assert!(stderr.contains("strategyy"), "{stderr}");
    assert!(stderr.contains("[routing]"), "the section too: {stderr}");
    assert!(
        stderr.contains(file.0.to_str().unwrap()),
        "and the file: {stderr}"
    );

    let file = TempConfig::new("unknown-section", "[serverr]\nlisten = \"127.0.0.1:1\"\n");
    let stderr = refused(&["--config", file.0.to_str().unwrap()], &[]);
    assert!(stderr.contains("serverr"), "{stderr}");
}

#[test]
fn bad_values_name_their_key() {
    for (name, text, key) in [
        (
            "strategy",
            "[routing]\nstrategy = \"fastest\"\n",
            "routing.strategy",
        ),
        ("capacity", "[queue]\ncapacity = 0\n", "queue.capacity"),
        (
            "type",
            "[retry]\nmax_retries = \"two\"\n",
            "retry.max_retries",
        ),
        (
            "url",
            "[[replicas]]\nid = \"a\"\nurl = \"not a url\"\n",
            "replicas[0].url",
        ),
    ] {
        let file = TempConfig::new(name, text);
        let stderr = refused(&["--config", file.0.to_str().unwrap()], &[]);
        assert!(stderr.contains(key), "{name}: {key} not named: {stderr}");
    }
    // The bad strategy's message lists the accepted ones.
    let file = TempConfig::new("strategy-list", "[routing]\nstrategy = \"fastest\"\n");
    let stderr = refused(&["--config", file.0.to_str().unwrap()], &[]);
    assert!(
        stderr.contains("fastest") && stderr.contains("round_robin"),
        "{stderr}"
    );
}

#[test]
fn bad_environment_override_names_the_variable() {
    for (var, value) in [("ROUTING_STRATEGY", "nope"), ("LLMGATE_LOG_FORMAT", "xml")] {
        let stderr = refused(&[], &[(var, value)]);
        assert!(stderr.contains(var), "{stderr}");
        assert!(stderr.contains(value), "{stderr}");
    }
    let stderr = refused(&[], &[("MAX_RETRIES", "many")]);
    assert!(stderr.contains("MAX_RETRIES"), "{stderr}");
    // The environment wins over a good file.
    let file = TempConfig::new("env-wins", "[routing]\nstrategy = \"p2c\"\n");
    let stderr = refused(
        &["--config", file.0.to_str().unwrap()],
        &[("ROUTING_STRATEGY", "nope")],
    );
    assert!(stderr.contains("ROUTING_STRATEGY"), "{stderr}");
}

#[test]
fn missing_config_file_is_an_error() {
    let path = std::env::temp_dir().join(format!(
        "llmgate-cli-test-{}-does-not-exist.toml",
        std::process::id()
    ));
    let stderr = refused(&["--config", path.to_str().unwrap()], &[]);
    assert!(stderr.contains("does-not-exist.toml"), "{stderr}");
}

/// Sends `GET path` on a fresh connection and returns the status line.
fn http_get_status(addr: &str, path: &str) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: llmgate\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

#[test]
fn serves_with_a_valid_config_and_stops_on_sigterm() {
    let file = TempConfig::new(
        "valid",
        "[routing]\nstrategy = \"least-loaded\"\n[sim]\nspeedup = 20.0\n",
    );
    let mut child = serve(&["--config", file.0.to_str().unwrap()], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines_of(child.stdout.take().unwrap());
    let mut addr = None;
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        if let Some(rest) = line.strip_prefix("llmgate: serving on http://") {
            addr = rest.split_whitespace().next().map(str::to_string);
            break;
        }
        seen.push(line);
    }
    let Some(addr) = addr else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("no 'serving on' line; stdout so far: {seen:?}");
    };
    assert!(
        seen.iter().any(|l| l.contains("embedded simulated fleet")),
        "no replicas configured: says it serves the simulated fleet: {seen:?}"
    );
    assert_eq!(http_get_status(&addr, "/health"), "HTTP/1.1 200 OK");

    let status = terminate(&mut child);
    assert_eq!(status.code(), Some(0), "clean exit on SIGTERM: {status}");
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "nothing listens after exit"
    );
}

/// Starts `llmgate serve` (embedded fleet) logging at info with `env`,
/// reads its stderr until the fleet's first endpoint is logged, stops it
/// with SIGTERM and returns the lines read.
fn first_log_lines(env: &[(&str, &str)]) -> Vec<String> {
    let mut child = serve(&[], env)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    let mut found = false;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        found = line.contains("endpoint added") || line.contains("healthy");
        seen.push(line);
        if found {
            break;
        }
    }
    terminate(&mut child);
    assert!(found, "no endpoint was logged; stderr: {seen:?}");
    seen
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let lines = first_log_lines(&[]);
    assert!(lines.iter().any(|l| l.contains("INFO")), "{lines:?}");
    assert!(
        lines.iter().all(|l| !l.contains('\u{1b}')),
        "escape codes in a piped log: {lines:?}"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let lines = first_log_lines(&[("LLMGATE_LOG_FORMAT", "json")]);
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        assert!(v["timestamp"].is_string(), "{line}");
        assert!(v["level"].is_string(), "{line}");
        assert!(v["target"].is_string(), "{line}");
        assert!(v["message"].is_string(), "{line}");
    }
    let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(last["level"], "INFO");
    // The event's fields sit beside the message, not nested.
    assert!(
        last["endpoint"]
            .as_str()
            .is_some_and(|e| e.starts_with("sim-")),
        "{last}"
    );
}
