//! Property tests of the push parsers and crypto: arbitrary input never panics, and encryption
//! round-trips for arbitrary messages.

use proptest::prelude::*;
use weapp::push::message::{parse_tree, value_to_xml, xml_to_value, Format};
use weapp::push::{signature, EncodingAesKey, PushConfig, PushMessage, PushQuery, Receiver};

const KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";

/// No timestamp window: the queries below carry a fixed, ancient timestamp.
fn receiver() -> Receiver {
    Receiver::new(PushConfig::new("wx49f0ab532d5d035a", "tok", Some(KEY)).unwrap())
        .without_replay_protection()
}

fn signed_query(encrypt: Option<&str>) -> PushQuery {
    PushQuery {
        signature: Some(signature(&["tok", "1", "n"])),
        timestamp: Some("1".into()),
        nonce: Some("n".into()),
        msg_signature: encrypt.map(|e| signature(&["tok", "1", "n", e])),
        encrypt_type: encrypt.map(|_| "aes".into()),
        ..PushQuery::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let r = receiver();
        let _ = r.receive(&signed_query(None), &body);
        let _ = r.receive(&signed_query(Some("AAAA")), &body);
        if let Ok(text) = std::str::from_utf8(&body) {
            let _ = xml_to_value(text);
            let _ = PushMessage::parse(text, Format::Json);
            let _ = PushMessage::parse(text, Format::Xml);
        }
    }

    #[test]
    fn xml_like_text_never_panics(body in "(<[a-zA-Z]{1,6}>|</[a-zA-Z]{1,6}>|<!\\[CDATA\\[[^\\]]{0,8}\\]\\]>|[a-z0-9&;]{0,6}){0,40}") {
        let _ = xml_to_value(&format!("<xml>{body}</xml>"));
        let _ = xml_to_value(&body);
    }

    #[test]
    fn arbitrary_ciphertext_never_panics(encrypt in "[A-Za-z0-9+/=]{0,400}") {
        let key = EncodingAesKey::new(KEY).unwrap();
        let _ = key.decrypt(&encrypt, "wx49f0ab532d5d035a");
        let body = serde_json::json!({"ToUserName": "gh", "Encrypt": encrypt}).to_string();
        let _ = receiver().receive(&signed_query(Some(&encrypt)), body.as_bytes());
    }

    #[test]
    fn encrypt_then_decrypt_round_trips(msg in any::<String>(), appid in "wx[0-9a-f]{16}", prefix in any::<[u8; 16]>()) {
        let key = EncodingAesKey::new(KEY).unwrap();
        let enc = key.encrypt_with_prefix(&msg, &appid, &prefix);
        prop_assert_eq!(key.decrypt(&enc, &appid).unwrap(), msg);
    }

    #[test]
    fn an_encrypted_text_push_round_trips(content in any::<String>(), msg_id in any::<i64>()) {
        let plain = serde_json::json!({"ToUserName": "gh", "FromUserName": "oU", "CreateTime": 1, "MsgType": "text", "Content": content, "MsgId": msg_id}).to_string();
        let enc = EncodingAesKey::new(KEY).unwrap().encrypt(&plain, "wx49f0ab532d5d035a");
        let body = serde_json::json!({"ToUserName": "gh", "Encrypt": enc}).to_string();
        let got = receiver().receive(&signed_query(Some(&enc)), body.as_bytes()).unwrap();
        prop_assert_eq!(got.message.kind, weapp::push::MessageKind::Text { content, msg_id });
    }

    #[test]
    fn xml_rendering_preserves_text(content in "[^\u{0}-\u{8}\u{b}\u{c}\u{e}-\u{1f}\u{fffe}\u{ffff}]{0,64}") {
        let v = serde_json::json!({"Content": content});
        let back = parse_tree(&value_to_xml(&v), Format::Xml).unwrap();
        // Strings go out as CDATA, which keeps every character, blanks included.
        prop_assert_eq!(back.get("Content").and_then(|c| c.as_str()).unwrap_or(""), content);
    }
}
