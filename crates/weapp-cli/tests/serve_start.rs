//! What `weapp serve` does before it serves, run as a user runs it: a configuration checked,
//! and the listener bound, before anything is printed (a problem is one line on stderr and
//! nothing on stdout); misspelt `WEAPP_*` variables named; and a sandbox that, restarted on its
//! database, is the same sandbox — the same app secret, client key, admin key and subscribe
//! template, all working against the new simulator.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::{json, Value};
use weapp_test_support::free_port;

/// `weapp` with no `WEAPP_*` variable of the caller's environment: each test sets its own.
fn weapp() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weapp"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("WEAPP_") {
            c.env_remove(name);
        }
    }
    c
}

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "weapp-serve-start-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the run failed with exactly one `weapp: error:` line containing `needle`, and
/// printed nothing on stdout.
fn one_error_line(o: &Output, needle: &str) {
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(!o.status.success(), "exit {:?}\n{out}\n{err}", o.status);
    assert_eq!(out, "", "nothing on stdout; stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr:\n{err}");
    assert!(lines[0].starts_with("weapp: error: "), "{err}");
    assert!(lines[0].contains(needle), "{needle:?} not in: {err}");
}

/// A running `weapp serve --sandbox` and what it printed.
struct Sandbox {
    child: Child,
    printed: String,
    /// The `export NAME=value` lines.
    env: HashMap<String, String>,
}

impl Sandbox {
    /// Starts `weapp serve --sandbox` on `db` and reads its banner.
    fn start(db: &Path, port: u16) -> Self {
        let mut child = weapp()
            .args([
                "serve",
                "--sandbox",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["--database-url", &format!("sqlite://{}", db.display())])
            .env("WEAPP_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run weapp serve --sandbox");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut printed = String::new();
        let mut env = HashMap::new();
        // The banner is one write; its last line is the template's export.
        while !env.contains_key("WEAPP_TEMPLATE_ID") {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("the banner ended early:\n{printed}"))
                .unwrap();
            if let Some((name, value)) = line
                .strip_prefix("export ")
                .and_then(|l| l.split_whitespace().next())
                .and_then(|l| l.split_once('='))
            {
                env.insert(name.to_owned(), value.to_owned());
            }
            printed.push_str(&line);
            printed.push('\n');
        }
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            printed,
            env,
        }
    }

    /// The value after `prefix` on the banner line that starts with it (leading spaces aside).
    fn line(&self, prefix: &str) -> String {
        self.printed
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{}", self.printed))
            .trim()
            .to_owned()
    }

    fn var(&self, name: &str) -> String {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in:\n{}", self.printed))
            .clone()
    }

    /// SIGTERM, as a user's ctrl-c, and waits for the exit.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "a stopped sandbox exits 0: {status:?}");
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // A failed test leaves no server behind (after `stop`, the child is gone already).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the credentials printed by a sandbox can do: a broker token with the client key, an
/// admin call with the admin key, a login with a code of the simulator.
async fn credentials_work(s: &Sandbox) {
    let http = reqwest::Client::new();
    let (server, sim, appid) = (
        s.var("WEAPP_URL"),
        s.var("WECHAT_API_BASE"),
        s.var("WEAPP_APPID"),
    );
    let token = http
        .get(format!("{server}/v1/apps/{appid}/access_token"))
        .bearer_auth(s.var("WEAPP_CLIENT_KEY"))
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 200, "broker token with the client key");
    let token: Value = token.json().await.unwrap();
    assert!(
        token["access_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{token}"
    );
    let apps = http
        .get(format!("{server}/v1/admin/apps"))
        .bearer_auth(s.var("WEAPP_ADMIN_KEY"))
        .send()
        .await
        .unwrap();
    assert_eq!(apps.status(), 200, "admin API with the admin key");
    let apps: Value = apps.json().await.unwrap();
    assert_eq!(apps["apps"][0]["appid"], appid.as_str(), "{apps}");
    let code: Value = http
        .post(format!("{sim}/_sim/login"))
        .json(&json!({"appid": appid}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let login = http
        .post(format!("{server}/v1/login"))
        .json(&json!({"appid": appid, "code": code["code"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200, "login with a simulator code");
    let login: Value = login.json().await.unwrap();
    assert_eq!(login["openid"], code["openid"], "{login}");
    // The printed app secret is the simulator's: WeChat's own token endpoint accepts it.
    let wechat: Value = http
        .get(format!("{sim}/cgi-bin/token"))
        .query(&[
            ("grant_type", "client_credential"),
            ("appid", appid.as_str()),
            ("secret", s.line(&format!("app {appid} secret ")).as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(wechat["access_token"].is_string(), "{wechat}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_sandbox_keeps_its_app_secret_client_key_and_admin_key() {
    let dir = scratch("restart");
    let db = dir.join("sandbox.db");
    let port = free_port();
    let first = Sandbox::start(&db, port);
    let appid = first.var("WEAPP_APPID");
    let kept = |s: &Sandbox| {
        (
            s.line(&format!("app {appid} secret ")),
            s.line("broker client key: "),
            s.line("admin key: "),
            s.var("WEAPP_TEMPLATE_ID"),
        )
    };
    let printed = kept(&first);
    assert!(
        printed.1.starts_with("wck_") && printed.2.starts_with("wak_"),
        "{printed:?}"
    );
    // The block for a backend says what the lines above say.
    assert_eq!(first.var("WEAPP_CLIENT_KEY"), printed.1);
    assert_eq!(first.var("WEAPP_ADMIN_KEY"), printed.2);
    assert_eq!(first.var("WEAPP_URL"), format!("http://127.0.0.1:{port}"));
    assert_eq!(first.var("WEAPP_ISSUER"), "weapp-server");
    assert_eq!(appid, "wxdemo0000000001");
    assert!(
        first.printed.contains("a restart on it uses the same"),
        "{}",
        first.printed
    );
    credentials_work(&first).await;
    first.stop();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&db).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the sandbox database is its owner's alone"
        );
    }
    for round in 0..2 {
        let again = Sandbox::start(&db, port);
        assert_eq!(kept(&again), printed, "restart {round}:\n{}", again.printed);
        assert_eq!(again.var("WEAPP_CLIENT_KEY"), printed.1);
        assert_eq!(again.var("WEAPP_ADMIN_KEY"), printed.2);
        assert!(
            again.printed.contains("the same as the last start"),
            "{}",
            again.printed
        );
        credentials_work(&again).await;
        again.stop();
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_printed_subscribe_template_is_in_the_simulator_and_carries_a_message() {
    let dir = scratch("template");
    let s = Sandbox::start(&dir.join("sandbox.db"), free_port());
    let (server, sim, appid) = (
        s.var("WEAPP_URL"),
        s.var("WECHAT_API_BASE"),
        s.var("WEAPP_APPID"),
    );
    let template_id = s.var("WEAPP_TEMPLATE_ID");
    assert_eq!(template_id.len(), 43, "{template_id}");
    let http = reqwest::Client::new();
    let templates: Value = http
        .get(format!("{sim}/_sim/apps/{appid}/templates"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        templates["templates"][0]["priTmplId"],
        template_id.as_str(),
        "{templates}"
    );
    assert!(
        s.printed.contains(&format!(
            "subscribe template of {appid}: {template_id} (订单配送通知: thing1, time2, phrase3)"
        )),
        "{}",
        s.printed
    );
    // The journey: the user logs in and accepts the popup; a backend sends with a broker token.
    let user: Value = http
        .post(format!("{sim}/_sim/login"))
        .json(&json!({"appid": appid}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let openid = user["openid"].as_str().unwrap().to_owned();
    let granted: Value = http
        .post(format!("{sim}/_sim/subscribe-grant"))
        .json(&json!({"appid": appid, "openid": openid, "template_id": template_id}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(granted["remaining"], 1, "{granted}");
    // The popup's event reached the server, verified and decrypted.
    let token: Value = http
        .get(format!("{server}/v1/apps/{appid}/access_token"))
        .bearer_auth(s.var("WEAPP_CLIENT_KEY"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sent: Value = http
        .post(format!("{sim}/cgi-bin/message/subscribe/send"))
        .query(&[("access_token", token["access_token"].as_str().unwrap())])
        .json(&json!({
            "touser": openid,
            "template_id": template_id,
            "data": {
                "thing1": {"value": "黄焖鸡米饭"},
                "time2": {"value": "2023-11-10 12:30"},
                "phrase3": {"value": "已送达"},
            },
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sent["errcode"], 0, "{sent}");
    let inbox: Value = http
        .get(format!("{sim}/_sim/messages"))
        .query(&[("appid", appid.as_str()), ("openid", openid.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        inbox["messages"][0]["template_id"],
        template_id.as_str(),
        "{inbox}"
    );
    assert_eq!(
        inbox["messages"][0]["data"]["phrase3"]["value"], "已送达",
        "{inbox}"
    );
    s.stop();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_misspelt_key_is_one_line_naming_the_right_one_and_nothing_is_printed() {
    let dir = scratch("typo");
    let config = dir.join("weapp.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\nacess_token_ttl_secs = 60\n",
    )
    .unwrap();
    for sandbox in [false, true] {
        let mut c = weapp();
        c.args(["serve", "--config"]).arg(&config);
        c.args([
            "--database-url",
            &format!("sqlite://{}/db.db", dir.display()),
        ]);
        if sandbox {
            c.arg("--sandbox");
        }
        let o = c.output().unwrap();
        one_error_line(
            &o,
            "line 2: unknown key \"acess_token_ttl_secs\" — did you mean \"access_token_ttl_secs\"?",
        );
        assert!(
            !text(&o.stderr).contains("expected one of"),
            "no list of every key"
        );
        assert!(
            !dir.join("db.db").exists(),
            "nothing was set up (sandbox: {sandbox})"
        );
    }
    // Inside an array of tables too.
    std::fs::write(
        &config,
        "[[apps]]\nappid = \"wx1\"\nsecret = \"s\"\ntoken_mod = \"classic\"\n",
    )
    .unwrap();
    let o = weapp()
        .args(["serve", "--sandbox", "--config"])
        .arg(&config)
        .args([
            "--database-url",
            &format!("sqlite://{}/db.db", dir.display()),
        ])
        .output()
        .unwrap();
    one_error_line(
        &o,
        "line 4: unknown key \"token_mod\" in [[apps]] — did you mean \"token_mode\"?",
    );
    // A value out of range in sandbox mode: no key is printed either.
    std::fs::write(&config, "webhook_max_attempts = 0\n").unwrap();
    let o = weapp()
        .args(["serve", "--sandbox", "--config"])
        .arg(&config)
        .args([
            "--database-url",
            &format!("sqlite://{}/db.db", dir.display()),
        ])
        .output()
        .unwrap();
    one_error_line(&o, "webhook_max_attempts must be between 1 and 1000");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_table_written_for_an_array_of_tables_gets_a_plain_hint() {
    let dir = scratch("brackets");
    let config = dir.join("weapp.toml");
    for (list, one) in [("apps", "app"), ("clients", "broker client")] {
        std::fs::write(&config, format!("[{list}]\nname = \"x\"\n")).unwrap();
        let o = weapp()
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        one_error_line(
            &o,
            &format!(
                "line 1: {list} must be an array of tables: write [[{list}]] (double brackets), one block per {one}, not [{list}]"
            ),
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_port_in_use_is_one_line_and_no_key_is_printed() {
    let dir = scratch("port");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let db = dir.join("sandbox.db");
    for sandbox in [false, true] {
        let mut c = weapp();
        c.args(["serve", "--listen", &addr])
            .args(["--database-url", &format!("sqlite://{}", db.display())])
            .env(
                "WEAPP_DATA_KEY",
                "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            );
        if sandbox {
            c.arg("--sandbox");
        }
        let o = c.output().unwrap();
        one_error_line(&o, &format!("cannot listen on {addr}"));
        assert!(!text(&o.stdout).contains("listening on"));
        assert!(!db.exists(), "no database set up (sandbox: {sandbox})");
    }
    // The simulator's port taken: the same.
    let o = weapp()
        .args([
            "serve",
            "--sandbox",
            "--listen",
            "127.0.0.1:0",
            "--sim-listen",
            &addr,
        ])
        .args(["--database-url", &format!("sqlite://{}", db.display())])
        .output()
        .unwrap();
    one_error_line(&o, "sandbox simulator");
    drop(taken);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_missing_data_key_is_one_line_and_nothing_is_printed() {
    let dir = scratch("datakey");
    let o = weapp()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args([
            "--database-url",
            &format!("sqlite://{}/db.db", dir.display()),
        ])
        .output()
        .unwrap();
    one_error_line(&o, "no data key");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_weapp_variable_is_a_warning_and_the_server_starts() {
    let dir = scratch("env");
    let port = free_port();
    let mut child = weapp()
        .args([
            "serve",
            "--sandbox",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args([
            "--database-url",
            &format!("sqlite://{}/db.db", dir.display()),
        ])
        .env("WEAPP_LOG", "warn")
        .env("WEAPP_LSITEN", "127.0.0.1:1")
        // Variables the project reads elsewhere are no noise.
        .env("WEAPP_URL", "http://127.0.0.1:8080")
        .env("WEAPP_CLIENT_KEY", "wck_x")
        .env("WEAPP_TEST_ANYTHING", "1")
        .env("WEAPP_BIN", "/bin/true")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    while !printed.contains("listening on") {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        printed.push_str(&line);
    }
    let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .unwrap();
    assert_eq!(
        health.status(),
        200,
        "it serves, on --listen and not on WEAPP_LSITEN"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    child.wait().unwrap();
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("WEAPP_")).collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning, for WEAPP_LSITEN alone:\n{err}"
    );
    assert!(
        warnings[0].contains(
            "environment variable WEAPP_LSITEN is not a weapp setting and is ignored — did you mean WEAPP_LISTEN?"
        ),
        "{err}"
    );
    assert!(warnings[0].contains("WARN"), "{err}");
    assert!(!err.contains("127.0.0.1:1"), "never a value: {err}");
    let _ = std::fs::remove_dir_all(dir);
}
