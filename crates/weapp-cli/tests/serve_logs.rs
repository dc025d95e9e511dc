//! How `weapp serve` writes its logs when they go to a file (a pipe, a log shipper): with
//! `log_format = "json"`, one JSON object a line; as text, no colour escapes; an unknown format
//! is one error line.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use weapp_test_support::free_port;

/// `weapp` with no `WEAPP_*` variable of the caller's environment.
fn weapp() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weapp"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("WEAPP_") {
            c.env_remove(name);
        }
    }
    c
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "weapp-serve-logs-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `weapp serve --sandbox --config <dir>/weapp.toml` (the file holding `config`) with its
/// stderr going to a file, serves one request, stops it with SIGTERM; returns what it logged.
fn serve_and_log(dir: &Path, config: &str) -> String {
    let file = dir.join("weapp.toml");
    std::fs::write(&file, config).unwrap();
    let log = dir.join("stderr.log");
    let port = free_port();
    let mut child = weapp()
        .args(["serve", "--sandbox", "--config"])
        .arg(&file)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--database-url",
            &format!("sqlite://{}", dir.join("sandbox.db").display()),
        ])
        // Debug: enough lines (the requests' spans among them) to judge the format by.
        .env("WEAPP_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("run weapp serve --sandbox");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines {
        if line.unwrap().starts_with("export WEAPP_TEMPLATE_ID") {
            break;
        }
    }
    // One request (plain HTTP/1.1 over a socket: no async runtime needed).
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    std::fs::read_to_string(&log).unwrap()
}

#[test]
fn json_log_format_writes_one_json_object_a_line_and_no_escape_codes() {
    let logged = serve_and_log(&scratch("json"), "log_format = \"json\"\n");
    let lines: Vec<&str> = logged.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty(), "nothing logged");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
        assert!(v["timestamp"].is_string(), "{line}");
    }
    assert!(!logged.contains("\x1b["), "{logged}");
}

#[test]
fn text_logs_to_a_file_carry_no_colour_escapes() {
    let logged = serve_and_log(&scratch("text"), "");
    assert!(
        logged
            .lines()
            .any(|l| l.contains("DEBUG") || l.contains("INFO")),
        "{logged}"
    );
    assert!(!logged.contains("\x1b["), "{logged:?}");
    assert!(
        serde_json::from_str::<serde_json::Value>(logged.lines().next().unwrap()).is_err(),
        "text, not JSON: {logged}"
    );
}

#[test]
fn an_unknown_log_format_is_one_error_line() {
    let dir = scratch("unknown");
    let file = dir.join("weapp.toml");
    std::fs::write(&file, "log_format = \"yaml\"\n").unwrap();
    let out = weapp()
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(out.stdout, b"", "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("weapp: error: "), "{err}");
    assert!(lines[0].contains("log_format"), "{err}");
    // The environment variable is read the same way.
    let out = weapp()
        .args(["serve"])
        .env("WEAPP_LOG_FORMAT", "yaml")
        .output()
        .unwrap();
    assert!(!out.status.success());
}
