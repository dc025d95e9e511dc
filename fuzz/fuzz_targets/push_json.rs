//! The JSON push parser must never panic, whatever the bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = weapp::push::PushMessage::parse(text, weapp::push::Format::Json);
    }
});
