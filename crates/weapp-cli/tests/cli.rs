//! The `weapp` binary, run as a user runs it, against weapp-sim and a private Redis.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use serde_json::json;
use weapp_sim::TokenKind;
use weapp_test_support::{free_port, sim_with_app, unique_prefix, RedisServer};

fn weapp() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weapp"));
    c.env_remove("WEAPP_SECRET").env_remove("WEAPP_APPID");
    c
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_processes_sharing_redis_cause_one_fetch() {
    let redis = RedisServer::start();
    let (sim, appid, secret) = sim_with_app().await;
    let prefix = unique_prefix("cli");
    let children: Vec<_> = (0..8)
        .map(|_| {
            weapp()
                .args([
                    "token",
                    "--appid",
                    &appid,
                    "--api-base",
                    sim.url(),
                    "--mode",
                    "classic",
                ])
                .args(["--store", &redis.url(), "--redis-prefix", &prefix])
                .env("WEAPP_SECRET", &secret)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect()
    })
    .await
    .unwrap();
    for o in &outputs {
        assert!(o.status.success(), "{}", stderr(o));
    }
    let first = stdout(&outputs[0]);
    assert!(first.len() > 100, "a real token: {first}");
    assert!(
        outputs.iter().all(|o| stdout(o) == first),
        "all 8 processes print the same token"
    );
    assert_eq!(sim.sim().tokens_issued(&appid, TokenKind::Classic), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_prints_json_and_force_gets_a_new_one() {
    let (sim, appid, secret) = sim_with_app().await;
    let run = |extra: &[&str]| {
        weapp()
            .args([
                "token",
                "--appid",
                &appid,
                "--secret",
                &secret,
                "--api-base",
                sim.url(),
                "--json",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let a = run(&[]);
    assert!(a.status.success(), "{}", stderr(&a));
    let a: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    assert!(a["expires_in"].as_i64().unwrap() > 7000);
    let b = run(&["--force"]);
    let b: serde_json::Value = serde_json::from_str(&stdout(&b)).unwrap();
    assert_ne!(a["access_token"], b["access_token"]);
    assert_eq!(sim.sim().tokens_issued(&appid, TokenKind::Stable), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_errors_are_one_line_with_a_nonzero_exit() {
    let (sim, appid, _secret) = sim_with_app().await;
    let o = weapp()
        .args([
            "token",
            "--appid",
            &appid,
            "--secret",
            "wrong-secret",
            "--api-base",
            sim.url(),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("40125"), "{err}");
    assert!(err.contains("rid"), "{err}");
    assert!(
        !err.contains("wrong-secret"),
        "the secret never appears: {err}"
    );
    assert!(stdout(&o).is_empty());

    let o = weapp()
        .args([
            "token",
            "--appid",
            &appid,
            "--secret",
            "s",
            "--store",
            "mysql://x",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--store"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decrypt_prints_the_json_and_fails_clearly() {
    let (sim, appid, _secret) = sim_with_app().await;
    let (_, openid) = sim.sim().login(&appid, None, None, false).unwrap();
    let key = sim
        .sim()
        .user(&appid, &openid)
        .unwrap()
        .session_key
        .unwrap();
    let (data, iv) = sim
        .sim()
        .open_data(&appid, &openid, json!({"nickName": "测试"}))
        .unwrap();
    let run = |appid: &str, key: &str, iv: &str, data: &str| {
        weapp()
            .args([
                "decrypt",
                "--appid",
                appid,
                "--session-key",
                key,
                "--iv",
                iv,
                "--data",
                data,
            ])
            .output()
            .unwrap()
    };
    let o = run(&appid, &key, &iv, &data);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["nickName"], "测试");
    assert_eq!(v["watermark"]["appid"], appid.as_str());

    for (args, needle) in [
        ((appid.as_str(), key.as_str(), iv.as_str(), "%%%"), "base64"),
        (
            ("wxsomeoneelse", key.as_str(), iv.as_str(), data.as_str()),
            "does not match",
        ),
        (
            (appid.as_str(), "AAAA", iv.as_str(), data.as_str()),
            "key must be 16 bytes",
        ),
    ] {
        let o = run(args.0, args.1, args.2, args.3);
        assert!(!o.status.success());
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
        assert!(stdout(&o).is_empty());
    }
}

#[test]
fn sim_prints_its_url_and_serves_the_control_api() {
    let port = free_port();
    let mut child = weapp()
        .args([
            "sim",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--app",
            "wxcli0000000001:s3cret",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), format!("http://127.0.0.1:{port}"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let body: serde_json::Value = rt.block_on(async {
        reqwest::get(format!(
            "{}/cgi-bin/token?grant_type=client_credential&appid=wxcli0000000001&secret=s3cret",
            line.trim()
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(body["expires_in"], 7200);

    let o = weapp().args(["sim", "--app", "no-colon"]).output().unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("APPID:SECRET"));
}

#[test]
fn demo_runs_the_whole_journey() {
    let o = weapp().arg("demo").output().unwrap();
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    for step in [
        "POST /v1/login",
        "GET /v1/me",
        "POST /v1/me/phone",
        "POST /v1/me/decrypt",
        "access_token",
        "POST /v1/logout",
    ] {
        assert!(out.contains(step), "missing step {step}:\n{out}");
    }
    assert!(out.contains("all 9 steps passed"), "{out}");
}

#[test]
fn serve_sandbox_prints_what_to_use_and_serves() {
    let port = free_port();
    let db = std::env::temp_dir().join(format!("weapp-cli-serve-{port}.db"));
    let mut child = weapp()
        .args([
            "serve",
            "--sandbox",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--database-url", &format!("sqlite://{}", db.display())])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    while !printed.contains("listening") {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        printed.push_str(&line);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let health: serde_json::Value = rt.block_on(async {
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    // The simulator's pushes are wired to the server: a message the user writes lands in the
    // event log, verified and decrypted (safe mode).
    let sim = printed
        .lines()
        .find_map(|l| l.strip_prefix("sandbox WeChat simulator: "))
        .unwrap()
        .trim()
        .to_owned();
    let key = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("broker client key: "))
        .unwrap()
        .to_owned();
    let events: serde_json::Value = rt.block_on(async {
        let http = reqwest::Client::new();
        let appid = "wxdemo0000000001";
        let login: serde_json::Value = http
            .post(format!("{sim}/_sim/login"))
            .json(&serde_json::json!({"appid": appid}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let pushed: serde_json::Value = http
            .post(format!("{sim}/_sim/user-message"))
            .json(&serde_json::json!({"appid": appid, "openid": login["openid"], "kind": "text", "content": "你好"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(pushed["pushed"]["delivered"], true, "{pushed}");
        http.get(format!("http://127.0.0.1:{port}/v1/apps/{appid}/events"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        events["events"][0]["payload"]["Content"], "你好",
        "{events}"
    );
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    assert!(
        printed.contains("sandbox WeChat simulator: http://127.0.0.1:"),
        "{printed}"
    );
    assert!(
        printed.contains("app wxdemo0000000001 secret "),
        "{printed}"
    );
    assert!(printed.contains("broker client key: wck_"), "{printed}");
    assert_eq!(health["status"], "ok");
}

#[test]
fn serve_rejects_a_bad_config_with_one_line() {
    let dir = std::env::temp_dir().join(format!("weapp-cli-badconf-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("listen = 5\n", "listen"),
        ("[[apps]]\nappid = \"wx1\"\n", "secret"),
        (
            "[[apps]]\nappid = \"wx1\"\nsecret = \"s\"\ncolour = \"red\"\n",
            "colour",
        ),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let path = dir.join(format!("{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let o = weapp()
            .args([
                "serve",
                "--config",
                path.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args([
                "--database-url",
                &format!("sqlite://{}/db{i}.db", dir.display()),
            ])
            .output()
            .unwrap();
        assert!(!o.status.success(), "{text}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(last.starts_with("weapp: error: "), "{err}");
        assert!(last.contains(needle), "{needle} not in: {last}");
    }
    let o = weapp()
        .args(["serve", "--config", "/nonexistent/weapp.toml"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cannot read /nonexistent/weapp.toml"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn push_commands_verify_decrypt_and_build_payloads() {
    // The decrypt vector of the specification.
    let encrypt = "RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHCrsTyeDXzF6Bv283dGymzxh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXpXaG4+BiYyolBug/gYNx410cvkKR2/nPwBiT+P4hIiOAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkVQiMS6td7vXUaWOMZnYZlF3So2SjHnwh4jYFxdgpkHHqIrH/54SNdshoQgWYEvccTKe7FS709/5t6NMxuGhcUGAPOQipvWTT4dShyqio7mlsl5noTrb++x6En749zCpQVhDpbV6GDnTbcX2e8K9QaNWHp91eBdCRxthuL0=";
    let key = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
    let common = [
        "--token",
        "123456",
        "--timestamp",
        "1411525903",
        "--nonce",
        "461056294",
    ];
    let o = weapp()
        .args([
            "push",
            "decrypt",
            "--aes-key",
            key,
            "--appid",
            "wx49f0ab532d5d035a",
            "--msg-signature",
            "74d92dfeb87ba7c714f89d98870ae5eb62dff26d",
            "--encrypt",
            encrypt,
        ])
        .args(common)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("<Content><![CDATA[test]]></Content>"));

    let o = weapp()
        .args([
            "push",
            "verify",
            "--signature",
            "74d92dfeb87ba7c714f89d98870ae5eb62dff26d",
            "--encrypt",
            encrypt,
        ])
        .args(common)
        .output()
        .unwrap();
    assert!(o.status.success());
    let o = weapp()
        .args(["push", "verify", "--signature", "0000"])
        .args(common)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert_eq!(stderr(&o).lines().count(), 1);
    assert!(stderr(&o).contains("-40001"));
    let o = weapp()
        .args([
            "push",
            "decrypt",
            "--aes-key",
            key,
            "--appid",
            "wxother",
            "--msg-signature",
            "74d92dfeb87ba7c714f89d98870ae5eb62dff26d",
            "--encrypt",
            encrypt,
        ])
        .args(common)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("-40005"), "{}", stderr(&o));

    // encrypt → decrypt with the CLI alone.
    let o = weapp()
        .args([
            "push",
            "encrypt",
            "--token",
            "tok",
            "--aes-key",
            key,
            "--appid",
            "wx1",
            "--message",
            r#"{"MsgType":"text","Content":"hi"}"#,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let built: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let o = weapp()
        .args([
            "push",
            "decrypt",
            "--token",
            "tok",
            "--aes-key",
            key,
            "--appid",
            "wx1",
        ])
        .args([
            "--timestamp",
            built["timestamp"].as_str().unwrap(),
            "--nonce",
            built["nonce"].as_str().unwrap(),
        ])
        .args([
            "--msg-signature",
            built["msg_signature"].as_str().unwrap(),
            "--encrypt",
            built["encrypt"].as_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&o), r#"{"MsgType":"text","Content":"hi"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_calls_any_endpoint_and_qrcode_writes_an_image() {
    let (sim, appid, secret) = sim_with_app().await;
    let dir = std::env::temp_dir().join(format!("weapp-cli-api-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let app = [
        "--appid",
        appid.as_str(),
        "--secret",
        secret.as_str(),
        "--api-base",
        sim.url(),
    ];

    let o = weapp()
        .args(["api"])
        .args(app)
        .args([
            "POST",
            "/cgi-bin/openapi/quota/get",
            "--json",
            r#"{"cgi_path":"/cgi-bin/stable_token"}"#,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["quota"]["daily_limit"], 500000);

    let png = dir.join("u.png");
    let o = weapp()
        .args(["api"])
        .args(app)
        .args([
            "POST",
            "/wxa/getwxacodeunlimit",
            "--json",
            r#"{"scene":"a=1"}"#,
            "-o",
            png.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    let o = weapp()
        .args(["api"])
        .args(app)
        .args([
            "POST",
            "/wxa/getwxacodeunlimit",
            "--json",
            r#"{"scene":"a=1"}"#,
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("-o FILE"), "{}", stderr(&o));

    let upload = dir.join("card.png");
    std::fs::write(&upload, b"\x89PNG\r\n\x1a\nx").unwrap();
    let o = weapp()
        .args(["api"])
        .args(app)
        .args([
            "POST",
            "/cgi-bin/media/upload?type=image",
            "--form",
            &format!("media=@{}", upload.display()),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let media: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(media["type"], "image");

    let o = weapp()
        .args(["api"])
        .args(app)
        .args([
            "GET",
            "/wxa/checksession?openid=nobody&signature=x&sig_method=hmac_sha256",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("40003") && err.contains("rid"), "{err}");

    let code = dir.join("code.png");
    let o = weapp()
        .args(["qrcode"])
        .args(app)
        .args([
            "--path",
            "pages/index/index?id=7",
            "--width",
            "430",
            "-o",
            code.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(&code).unwrap().starts_with(b"\x89PNG"));
    let o = weapp()
        .args(["qrcode"])
        .args(app)
        .args(["--scene", "bad scene", "-o", code.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("40129"), "{}", stderr(&o));
    let o = weapp()
        .args(["qrcode"])
        .args(app)
        .args(["-o", code.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success(), "--scene or --path is required");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn serve_logs_json_lines_with_log_format_json() {
    let port = free_port();
    let db = std::env::temp_dir().join(format!("weapp-cli-json-{port}.db"));
    let mut child = weapp()
        .args([
            "--log-format",
            "json",
            "serve",
            "--sandbox",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--database-url", &format!("sqlite://{}", db.display())])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening") {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .unwrap()
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    child.wait().unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "the server logged something");
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v.get("level").is_some() && v.get("fields").is_some(), "{l}");
    }
    assert!(
        lines.iter().any(|l| l.contains("fetched access token")),
        "{err}"
    );
}
