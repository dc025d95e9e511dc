//! The receiver (signature check, envelope parse, AES decrypt, framing, appid check) must never
//! panic on any body or `Encrypt` value.
#![no_main]
use weapp::push::{signature, EncodingAesKey, PushConfig, PushQuery, Receiver};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let key = EncodingAesKey::new("kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR").unwrap();
    let text = String::from_utf8_lossy(data);
    let _ = key.decrypt(&text, "wx49f0ab532d5d035a");
    // No timestamp window: the fixed timestamp below is ancient.
    let receiver = Receiver::new(PushConfig::new("wx49f0ab532d5d035a", "tok", Some("kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR")).unwrap())
        .without_replay_protection();
    let query = PushQuery {
        signature: Some(signature(&["tok", "1", "n"])),
        timestamp: Some("1".into()),
        nonce: Some("n".into()),
        msg_signature: Some(signature(&["tok", "1", "n", &text])),
        encrypt_type: Some("aes".into()),
        ..PushQuery::default()
    };
    let _ = receiver.receive(&query, data);
});
