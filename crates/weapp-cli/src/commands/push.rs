//! `weapp push verify | decrypt | encrypt`: check, open and build WeChat push payloads by hand.

use weapp::push::message::{value_to_xml, Format};
use weapp::push::{signature, EncodingAesKey};

use super::CmdResult;

/// Arguments of `weapp push`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Check a `signature` (or, with `--encrypt`, a `msg_signature`); exit 0 when valid.
    Verify {
        /// The Token from the WeChat console.
        #[arg(long, env = "WEAPP_PUSH_TOKEN", hide_env_values = true)]
        token: String,
        /// `timestamp` query parameter.
        #[arg(long)]
        timestamp: String,
        /// `nonce` query parameter.
        #[arg(long)]
        nonce: String,
        /// `signature` (or `msg_signature` with `--encrypt`).
        #[arg(long)]
        signature: String,
        /// The `Encrypt` value, to check a `msg_signature`.
        #[arg(long)]
        encrypt: Option<String>,
    },
    /// Check the `msg_signature` and print the decrypted message.
    Decrypt {
        /// The Token.
        #[arg(long, env = "WEAPP_PUSH_TOKEN", hide_env_values = true)]
        token: String,
        /// The 43-character EncodingAESKey.
        #[arg(long, env = "WEAPP_PUSH_AES_KEY", hide_env_values = true)]
        aes_key: String,
        /// The appid the message must be for.
        #[arg(long)]
        appid: String,
        /// `timestamp` query parameter.
        #[arg(long)]
        timestamp: String,
        /// `nonce` query parameter.
        #[arg(long)]
        nonce: String,
        /// `msg_signature` query parameter.
        #[arg(long)]
        msg_signature: String,
        /// The `Encrypt` value from the body.
        #[arg(long)]
        encrypt: String,
    },
    /// Build a safe-mode push: prints `{timestamp, nonce, signature, msg_signature, encrypt, body}`.
    Encrypt {
        /// The Token.
        #[arg(long, env = "WEAPP_PUSH_TOKEN", hide_env_values = true)]
        token: String,
        /// The 43-character EncodingAESKey.
        #[arg(long, env = "WEAPP_PUSH_AES_KEY", hide_env_values = true)]
        aes_key: String,
        /// The appid to encrypt for.
        #[arg(long)]
        appid: String,
        /// The plaintext message (XML or JSON).
        #[arg(long)]
        message: String,
        /// `timestamp` (default: now).
        #[arg(long)]
        timestamp: Option<String>,
        /// `nonce` (default: random).
        #[arg(long)]
        nonce: Option<String>,
        /// Envelope format (default: that of the message).
        #[arg(long, value_parser = ["xml", "json"])]
        format: Option<String>,
    },
}

/// Runs a `weapp push` subcommand.
pub fn run(args: Args) -> CmdResult {
    match args.command {
        Sub::Verify {
            token,
            timestamp,
            nonce,
            signature: given,
            encrypt,
        } => {
            let mut parts = vec![token.as_str(), timestamp.as_str(), nonce.as_str()];
            if let Some(e) = &encrypt {
                parts.push(e);
            }
            if weapp::push::crypto::signature_matches(&signature(&parts), &given) {
                println!("valid");
                Ok(())
            } else {
                Err("signature does not match (official code -40001)".into())
            }
        }
        Sub::Decrypt {
            token,
            aes_key,
            appid,
            timestamp,
            nonce,
            msg_signature,
            encrypt,
        } => {
            let key = EncodingAesKey::new(&aes_key).map_err(|e| e.to_string())?;
            if !weapp::push::crypto::signature_matches(
                &signature(&[&token, &timestamp, &nonce, &encrypt]),
                &msg_signature,
            ) {
                return Err("msg_signature does not match (official code -40001)".into());
            }
            let plain = key
                .decrypt(&encrypt, &appid)
                .map_err(|e| format!("{e} (official code {})", e.official_code()))?;
            println!("{plain}");
            Ok(())
        }
        Sub::Encrypt {
            token,
            aes_key,
            appid,
            message,
            timestamp,
            nonce,
            format,
        } => {
            let key = EncodingAesKey::new(&aes_key).map_err(|e| e.to_string())?;
            let format = match format.as_deref() {
                Some("xml") => Format::Xml,
                Some(_) => Format::Json,
                None => {
                    Format::detect(message.as_bytes()).ok_or("--message must be XML or JSON")?
                }
            };
            let timestamp = timestamp.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
                    .to_string()
            });
            let nonce = nonce.unwrap_or_else(|| rand::random::<u32>().to_string());
            let encrypt = key.encrypt(&message, &appid);
            let envelope = serde_json::json!({"ToUserName": appid, "Encrypt": encrypt});
            let body = match format {
                Format::Xml => value_to_xml(&envelope),
                Format::Json => envelope.to_string(),
            };
            let out = serde_json::json!({
                "timestamp": timestamp,
                "nonce": nonce,
                "signature": signature(&[&token, &timestamp, &nonce]),
                "msg_signature": signature(&[&token, &timestamp, &nonce, &encrypt]),
                "encrypt": encrypt,
                "body": body,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
            );
            Ok(())
        }
    }
}
