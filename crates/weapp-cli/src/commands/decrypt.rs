//! `weapp decrypt`: decrypt `encryptedData` with a session_key, checking the watermark.

use weapp::crypto::{decrypt_user_data, DecryptOptions};
use weapp::SessionKey;

use super::CmdResult;

/// Arguments of `weapp decrypt`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The appid the data must be watermarked for.
    #[arg(long)]
    appid: String,
    /// The user's session_key (base64).
    #[arg(long, env = "WEAPP_SESSION_KEY", hide_env_values = true)]
    session_key: String,
    /// The `iv` from the mini program (base64).
    #[arg(long)]
    iv: String,
    /// The `encryptedData` from the mini program (base64).
    #[arg(long)]
    data: String,
    /// Reject data whose watermark is older than this many seconds.
    #[arg(long, value_name = "SECS")]
    max_age: Option<u64>,
}

/// Prints the decrypted JSON, pretty.
pub fn run(args: Args) -> CmdResult {
    let options = DecryptOptions {
        max_age_secs: args.max_age,
        now_secs: None,
    };
    let value = decrypt_user_data(
        &args.appid,
        &SessionKey::new(args.session_key),
        &args.iv,
        &args.data,
        &options,
    )
    .map_err(|e| format!("cannot decrypt: {e} (official code {})", e.official_code()))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?
    );
    Ok(())
}
