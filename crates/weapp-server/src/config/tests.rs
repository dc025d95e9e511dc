//! Tests of the configuration: parsing, the environment, checks, messages.

use super::env::*;
use super::parse_errors::*;
use super::*;
use weapp::push::PushMode;
use weapp::TokenMode;

#[test]
fn an_allow_list_entry_for_every_address_is_refused() {
    for everything in ["0.0.0.0/0", "::/0"] {
        let config = Config {
            webhook_allow_private: vec![everything.into()],
            ..Config::default()
        };
        let err = config.webhook_allow_nets().unwrap_err().to_string();
        assert!(err.contains("allows every address"), "{err}");
    }
}

const DESIGN_EXAMPLE: &str = r#"
listen = "127.0.0.1:8080"
database_url = "sqlite://weapp.db"
redis_url = "redis://127.0.0.1:6379"
session_ttl_secs = 604800

[[apps]]
appid = "wx1234567890abcdef"
secret = "s3cret"
api_base = "https://api.weixin.qq.com"
token_mode = "stable"
[apps.push]
token = "t0ken"
encoding_aes_key = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
webhook_url = "http://127.0.0.1:9000/hook"
webhook_secret = "whsec_0123456789abcdef"

[[clients]]
name = "billing"
key = "0123456789abcdef0123"
apps = ["wx1234567890abcdef"]
"#;

#[test]
fn the_design_example_parses_and_validates() {
    let c: Config = toml::from_str(DESIGN_EXAMPLE).unwrap();
    c.validate().unwrap();
    assert_eq!(c.apps[0].token_mode, TokenMode::Stable);
    assert_eq!(c.session_ttl_secs, 604800);
    assert_eq!(
        c.apps[0].push.as_ref().unwrap().effective_mode().unwrap(),
        PushMode::Safe
    );
    assert_eq!(
        c.clients[0].resolved_scopes().unwrap(),
        ["token:read", "token:invalidate"]
    );
}

fn invalid(text: &str) -> String {
    let c: Config = toml::from_str(text).unwrap();
    c.validate().unwrap_err().to_string()
}

#[test]
fn session_tokens_are_timed_unless_set_to_random() {
    assert_eq!(Config::default().session_tokens, SessionTokens::Timed);
    let c: Config = toml::from_str("session_tokens = \"random\"").unwrap();
    assert_eq!(c.session_tokens, SessionTokens::Random);
    let bad = toml::from_str::<Config>("session_tokens = \"sequential\"").unwrap_err();
    assert!(bad.to_string().contains("session_tokens"), "{bad}");
}

#[test]
fn problems_are_named() {
    let bad: Result<Config, _> = toml::from_str("listen = \"127.0.0.1:1\"\nbogus = 1");
    assert!(bad.unwrap_err().to_string().contains("bogus"));
    assert!(invalid("[[apps]]\nappid = \"wx1\"").contains("secret"));
    assert!(invalid(
        "[[apps]]\nappid = \"wx1\"\nsecret = \"s\"\n[[clients]]\nname = \"x\"\nkey = \"0123456789abcdef\"\napps = [\"wx 2\"]",
    )
    .contains("`wx 2` is not an appid"));
    assert!(invalid("[[admins]]\nname = \"ops\"\nkey = \"short\"").contains("at least 24"));
    assert!(invalid("fleet_lease_ms = 10").contains("fleet_lease_ms"));
}

#[test]
fn push_settings_are_checked_at_start_up() {
    let app = "[[apps]]\nappid = \"wx1\"\nsecret = \"s\"\n[apps.push]\n";
    // Plain mode is a choice, not a default.
    assert!(invalid(&format!("{app}token = \"t0ken\"")).contains("mode = \"plain\""));
    let c: Config = toml::from_str(&format!("{app}token = \"t0ken\"\nmode = \"plain\"")).unwrap();
    c.validate().unwrap();
    assert!(invalid(&format!("{app}token = \"\"\nmode = \"plain\"")).contains("token"));
    assert!(
        invalid(&format!("{app}token = \"t\"\nmode = \"safe\"")).contains("needs encoding_aes_key")
    );
    assert!(invalid(&format!(
        "{app}token = \"t\"\nmode = \"plain\"\nwebhook_url = \"http://h/x\""
    ))
    .contains("webhook_secret"));
    assert!(invalid(&format!(
        "{app}token = \"t\"\nmode = \"plain\"\nwebhook_url = \"ftp://h/x\"\nwebhook_secret = \"0123456789abcdef\""
    ))
    .contains("http(s)"));
    assert!(
        invalid(&format!("{app}token = \"t\"\nencoding_aes_key = \"short\""))
            .contains("EncodingAESKey")
    );
}

#[test]
fn timeouts_leases_and_limits_are_checked() {
    assert!(invalid("request_timeout_secs = 0").contains("request_timeout_secs"));
    assert!(invalid("header_read_timeout_secs = 0").contains("header_read_timeout_secs"));
    assert!(invalid("connection_idle_timeout_secs = 0").contains("connection_idle_timeout_secs"));
    assert!(invalid("session_ttl_secs = 0").contains("session_ttl_secs"));
    assert!(invalid("webhook_timeout_secs = 30\nwebhook_lease_secs = 30").contains("must exceed"));
    assert!(invalid("webhook_max_attempts = 0").contains("webhook_max_attempts"));
    assert!(invalid("database_pool_size = 0").contains("database_pool_size"));
    assert!(invalid("rate_limit_backend = \"redis\"").contains("redis_url"));
    assert!(invalid("trusted_proxies = [\"10.0.0.0/33\"]").contains("trusted_proxies"));
    assert!(invalid("data_key = \"c2hvcnQ=\"").contains("32 bytes"));
    // Overflow is an error, not a wrap-around.
    assert!(toml::from_str::<Config>("login_rate_limit_per_minute = 99999999999").is_err());
    assert!(toml::from_str::<Config>("session_ttl_secs = -1").is_err());
}

#[test]
fn environment_values_are_parsed_strictly_and_named() {
    // (Each nextest test is its own process; these variables are this test's alone.)
    std::env::set_var("WEAPP_LOGIN_RATE_LIMIT", "99999999999");
    let e = Config::load(None).unwrap_err().to_string();
    assert!(e.contains("WEAPP_LOGIN_RATE_LIMIT"), "{e}");
    std::env::set_var("WEAPP_LOGIN_RATE_LIMIT", "12");
    std::env::set_var("WEAPP_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.1");
    std::env::set_var("WEAPP_EXPOSE_LINKED_ACCOUNTS", "true");
    std::env::set_var("WEAPP_WEBHOOK_MAX_ATTEMPTS", "7");
    let c = Config::load(None).unwrap();
    assert_eq!(c.login_rate_limit_per_minute, 12);
    assert_eq!(c.trusted_proxies, ["10.0.0.0/8", "192.168.1.1"]);
    assert!(c.expose_linked_accounts);
    assert_eq!(c.webhook_max_attempts, 7);
    std::env::set_var("WEAPP_WEBHOOK_MAX_ATTEMPTS", "seven");
    let e = Config::load(None).unwrap_err().to_string();
    assert!(e.contains("WEAPP_WEBHOOK_MAX_ATTEMPTS"), "{e}");
    std::env::set_var("WEAPP_WEBHOOK_MAX_ATTEMPTS", "-3");
    assert!(Config::load(None).is_err());
    for v in [
        "WEAPP_LOGIN_RATE_LIMIT",
        "WEAPP_TRUSTED_PROXIES",
        "WEAPP_EXPOSE_LINKED_ACCOUNTS",
        "WEAPP_WEBHOOK_MAX_ATTEMPTS",
    ] {
        std::env::remove_var(v);
    }
}

/// The error `Config::load` gives for a file holding `text`.
fn load_error(text: &str) -> String {
    let path = std::env::temp_dir().join(format!(
        "weapp-config-{}-{}.toml",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::write(&path, text).unwrap();
    let e = Config::load(Some(&path)).unwrap_err().to_string();
    let _ = std::fs::remove_file(&path);
    e
}

#[test]
fn an_unknown_key_names_the_known_key_it_resembles() {
    let e = load_error("listen = \"127.0.0.1:1\"\nacess_token_ttl_secs = 60\n");
    assert!(
        e.ends_with(
            "line 2: unknown key \"acess_token_ttl_secs\" — did you mean \"access_token_ttl_secs\"?"
        ),
        "{e}"
    );
    assert!(!e.contains("listen"), "no list of every key: {e}");
    for (text, wanted) in [
        (
            "[[apps]]\nappid = \"wx1\"\nsecert = \"s\"\n",
            "line 3: unknown key \"secert\" in [[apps]] — did you mean \"secret\"?",
        ),
        (
            "[[apps]]\nappid = \"wx1\"\nsecret = \"s\"\n[apps.push]\ntoken = \"t\"\nencoding_aes_kye = \"k\"\n",
            "line 6: unknown key \"encoding_aes_kye\" in [apps.push] — did you mean \"encoding_aes_key\"?",
        ),
        (
            "[[clients]]\nname = \"billing\"\nkey = \"0123456789abcdef\"\napps = [\"*\"]\nscope = [\"token:read\"]\n",
            "line 5: unknown key \"scope\" in [[clients]] — did you mean \"scopes\"?",
        ),
        (
            "[[platforms]]\ncomponent_appid = \"wxc\"\ncomponent_secret = \"s\"\n",
            "unknown key \"component_secret\" in [[platforms]]",
        ),
        (
            "[[admins]]\nname = \"ops\"\nkey-env = \"OPS_KEY\"\n",
            "line 3: unknown key \"key-env\" in [[admins]] — did you mean \"key_env\"?",
        ),
        (
            "[[app]]\nappid = \"wx1\"\n",
            "line 1: unknown table [[app]] — did you mean [[apps]]?",
        ),
        (
            "[[apps]]\nappid = \"wx1\"\nsecret = \"s\"\ncolour = \"red\"\n",
            "line 4: unknown key \"colour\" in [[apps]] (known keys: appid, secret, secret_env, api_base, token_mode, push, warm, access_tokens)",
        ),
    ] {
        let e = load_error(text);
        assert!(e.contains(wanted), "{wanted}\nnot in: {e}");
        assert!(!e.contains("expected one of"), "{e}");
    }
}

#[test]
fn a_table_where_an_array_of_tables_is_meant_gets_a_hint() {
    for list in ["apps", "clients", "admins", "platforms", "merchants"] {
        let e = load_error(&format!(
            "listen = \"127.0.0.1:1\"\n\n[{list}]\nname = \"x\"\n"
        ));
        assert!(
            e.contains(&format!(
                "line 3: {list} must be an array of tables: write [[{list}]] (double brackets)"
            )),
            "{e}"
        );
    }
    let e = load_error("[[apps]]\nappid = \"wx1\"\nsecret = \"s\"\n[[apps.push]]\ntoken = \"t\"\n");
    assert!(
        e.contains("line 4: an app has one push receiver: write [apps.push]"),
        "{e}"
    );
}

#[test]
fn every_top_level_setting_has_an_environment_variable() {
    // serde names every key it knows when it meets an unknown one: the same keys as the
    // environment mapping, plus the five arrays of tables.
    let e = toml::from_str::<Config>("zzz = 1").unwrap_err();
    let message = e.message().to_owned();
    let mut from_serde: Vec<&str> = message.split('`').skip(3).step_by(2).collect();
    let mut ours: Vec<&str> = ENV_SETTINGS
        .iter()
        .map(|(n, _)| *n)
        .chain(["apps", "clients", "admins", "platforms", "merchants"])
        .collect();
    from_serde.sort_unstable();
    ours.sort_unstable();
    assert_eq!(from_serde, ours, "{message}");
}

#[test]
fn misspellings_are_matched_by_edit_distance() {
    assert_eq!(edit_distance("lsiten", "listen"), 1);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(did_you_mean("LISTEN", ["listen", "warm"]), Some("listen"));
    assert_eq!(did_you_mean("colour", ["listen", "warm"]), None);
    assert_eq!(did_you_mean("wrm", ["listen", "warm"]), Some("warm"));
}

#[test]
fn unknown_weapp_variables_are_found_and_known_ones_are_not() {
    let names = [
        "WEAPP_LSITEN",
        "WEAPP_LISTEN",
        "WEAPP_CONFIG",
        "WEAPP_LOGIN_RATE_LIMIT",
        "WEAPP_LOG",
        "WEAPP_URL",
        "WEAPP_CLIENT_KEY",
        "WEAPP_ADMIN_KEY",
        "WEAPP_TEST_POSTGRES_URL",
        "WEAPP_BIN",
        "WEAPP_DATA_KY",
        "WEAPP_SOMETHING_ELSE_ENTIRELY",
        "PATH",
        "weapp_listen",
    ]
    .map(std::ffi::OsString::from);
    let unknown = unknown_env_vars(names);
    assert_eq!(
        unknown,
        [
            UnknownEnvVar {
                name: "WEAPP_DATA_KY".into(),
                suggestion: Some("WEAPP_DATA_KEY".into())
            },
            UnknownEnvVar {
                name: "WEAPP_LSITEN".into(),
                suggestion: Some("WEAPP_LISTEN".into())
            },
            UnknownEnvVar {
                name: "WEAPP_SOMETHING_ELSE_ENTIRELY".into(),
                suggestion: None
            },
        ]
    );
    assert_eq!(
        unknown[1].to_string(),
        "environment variable WEAPP_LSITEN is not a weapp setting and is ignored — did you mean WEAPP_LISTEN?"
    );
}

#[test]
fn errors_never_quote_a_secret() {
    let text = "databse_url = \"postgres://u:hunter2pw@h/db\"";
    let e = toml::from_str::<Config>(text)
        .map_err(|e| one_line(text, &e))
        .unwrap_err();
    assert!(!e.contains("hunter2pw"), "{e}");
    let text = "data_keys = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"";
    let e = toml::from_str::<Config>(text)
        .map_err(|e| one_line(text, &e))
        .unwrap_err();
    assert!(!e.contains("MDEyMzQ1"), "{e}");
    assert!(e.contains("line 1"), "{e}");
}

#[test]
fn clients_and_proxies_that_cannot_be_told_apart_are_refused() {
    let two = "[[apps]]\nappid = \"wx1\"\nsecret = \"s\"\n[[clients]]\nname = \"a\"\nkey = \"0123456789abcdef\"\napps = [\"wx1\"]\n[[clients]]\nname = \"b\"\nkey = \"0123456789abcdef\"\napps = [\"wx1\"]";
    assert!(invalid(two).contains("same key"));
    assert!(invalid("trusted_proxies = [\"0.0.0.0/0\"]").contains("every address"));
    assert!(
        invalid("request_timeout_secs = 2\ndatabase_acquire_timeout_ms = 5000")
            .contains("database_acquire_timeout_ms")
    );
}

#[test]
fn debug_output_shows_no_secret() {
    let mut c: Config = toml::from_str(DESIGN_EXAMPLE).unwrap();
    c.redis_url = Some("redis://:hunter2pass@10.0.0.1:6379/0".into());
    c.database_url = "postgres://weapp:dbpass42@db/weapp".into();
    c.data_key = Some("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into());
    c.apps[0].api_base = "https://u:apipass9@sim.local/".into();
    c.apps[0].push.as_mut().unwrap().webhook_url =
        Some("https://hook:hookpass7@hooks.local/x?token=qtok".into());
    let text = format!("{c:?}");
    for secret in [
        "s3cret",
        "t0ken",
        "kWxPEV2UEDyxWpmPdKC3F4",
        "whsec_0123456789abcdef",
        "0123456789abcdef0123",
        "hunter2pass",
        "dbpass42",
        "apipass9",
        "hookpass7",
        "qtok",
        "MDEyMzQ1Njc4",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert_eq!(
        redact_url("redis://:pw@h:1/2?password=x"),
        "redis://***@h:1/2"
    );
    // A password with an unencoded `/`, `?`, `#` or `@` (an invalid URL, so shown in an error).
    for (url, shown) in [
        ("redis://:ab/cd+ef@h:6379/0", "redis://***@h:6379/0"),
        ("redis://:ab?cd@h:6379", "redis://***@h:6379"),
        ("redis://:ab#cd@h:6379/1", "redis://***@h:6379/1"),
        (
            "redis+sentinel://:p@ss/w@a:1,b:2/m",
            "redis+sentinel://***@a:1,b:2/m",
        ),
    ] {
        assert_eq!(redact_url(url), shown, "{url}");
    }
}

/// A `redis_url` the configuration refuses is named in the error without its password, however
/// broken the URL is.
#[test]
fn a_refused_redis_url_never_shows_its_password() {
    for url in [
        "redis://:ab/cd+ef@h:6379/0",
        "memcached://:zz/pw9+x@h:1",
        "redis+sentinel://:sentpw/9@a:1",
        "redis+cluster://:clupw/9@a:1/4",
    ] {
        let mut c: Config = toml::from_str(DESIGN_EXAMPLE).unwrap();
        c.redis_url = Some(url.into());
        let e = c.validate().unwrap_err().to_string();
        for secret in ["cd+ef", "pw9", "sentpw", "clupw"] {
            assert!(!e.contains(secret), "{secret} in {e}");
        }
        assert!(e.contains("redis_url"), "{e}");
    }
}

#[test]
fn webhook_urls_are_shown_without_their_path_query_or_credentials() {
    for (url, shown) in [
        (
            "https://u:pw@hooks.example.com:8443/t/s3cret?token=q#f",
            "https://***@hooks.example.com:8443/***",
        ),
        (
            "https://hooks.example.com/x",
            "https://hooks.example.com/***",
        ),
        (
            "https://hooks.example.com?token=q",
            "https://hooks.example.com/***",
        ),
        ("http://[::1]:9/hook", "http://[::1]:9/***"),
        ("https://hooks.example.com", "https://hooks.example.com/"),
        ("not a url", "<not a URL>"),
    ] {
        assert_eq!(redact_webhook_url(url), shown, "{url}");
    }
}
