//! Mini program codes: real, decodable QR images (PNG) that encode the path (or
//! `page?scene=…` for unlimited codes), with WeChat's validation rules.
//! (WeChat draws its round "sun" codes; a square QR with the same content is what tests need.)

use qrcode::{Color, EcLevel, QrCode};
use serde_json::Value;

use crate::state::WxError;

/// Lifetime quota shared by `getwxacode` and `createwxaqrcode`.
pub const LIFETIME_QUOTA: u64 = 100_000;
/// `getwxacodeunlimit` calls per minute.
pub const UNLIMITED_PER_MINUTE: u32 = 5000;
/// The pages an app has when none were registered.
pub const DEFAULT_PAGES: &[&str] = &["pages/index/index"];

const SCENE_CHARS: &str = "!#$&'()*+,/:;=?@-._~";

/// Checks a `scene`: 1–32 characters of `[0-9A-Za-z!#$&'()*+,/:;=?@\-._~]`.
///
/// # Errors
/// 40169 empty or too long, 40129 a character outside the set.
pub fn check_scene(scene: &str) -> Result<(), WxError> {
    if scene.is_empty() || scene.chars().count() > 32 {
        return Err(WxError::new(
            40169,
            "invalid length for scene, or the data is not json string",
        ));
    }
    if !scene
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || SCENE_CHARS.contains(c))
    {
        return Err(WxError::new(40129, "invalid scene"));
    }
    Ok(())
}

/// Reads and checks `width` (280–1280, default 430).
///
/// # Errors
/// 40097 outside the range or not a number.
pub fn width(body: &Value) -> Result<u32, WxError> {
    match body.get("width") {
        None | Some(Value::Null) => Ok(430),
        Some(v) => v
            .as_u64()
            .filter(|w| (280..=1280).contains(w))
            .map(|w| w as u32)
            .ok_or_else(|| WxError::new(40097, "invalid args: width must be 280-1280")),
    }
}

/// Checks `env_version` (release, trial, develop; default release).
///
/// # Errors
/// 40097 (85402 for links) otherwise.
pub fn env_version(body: &Value, code: i64) -> Result<String, WxError> {
    match body
        .get("env_version")
        .and_then(Value::as_str)
        .unwrap_or("release")
    {
        e @ ("release" | "trial" | "develop") => Ok(e.to_owned()),
        _ => Err(WxError::new(code, "invalid env_version")),
    }
}

fn line_color(body: &Value) -> Option<[u8; 3]> {
    if body
        .get("auto_color")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return None;
    }
    let c = body.get("line_color")?;
    let part = |k: &str| {
        c.get(k)
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .map(|v| v.min(255) as u8)
    };
    Some([part("r")?, part("g")?, part("b")?])
}

/// Renders `content` as a QR code PNG about `width` pixels wide.
pub fn render(content: &str, width: u32, body: &Value) -> Result<Vec<u8>, WxError> {
    let code = QrCode::with_error_correction_level(content.as_bytes(), EcLevel::M)
        .map_err(|_| WxError::new(40097, "invalid args: content too long"))?;
    let modules = code.width() as u32;
    let quiet = 4;
    let scale = (width / (modules + 2 * quiet)).max(1);
    let size = (modules + 2 * quiet) * scale;
    let dark = line_color(body).unwrap_or([0, 0, 0]);
    let hyaline = body
        .get("is_hyaline")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let colors = code.to_colors();
    let mut pixels = Vec::with_capacity((size * size * 4) as usize);
    for y in 0..size {
        for x in 0..size {
            let (mx, my) = (
                (x / scale) as i64 - quiet as i64,
                (y / scale) as i64 - quiet as i64,
            );
            let is_dark = mx >= 0
                && my >= 0
                && (mx as u32) < modules
                && (my as u32) < modules
                && colors[(my as u32 * modules + mx as u32) as usize] == Color::Dark;
            if is_dark {
                pixels.extend_from_slice(&[dark[0], dark[1], dark[2], 255]);
            } else if hyaline {
                pixels.extend_from_slice(&[255, 255, 255, 0]);
            } else {
                pixels.extend_from_slice(&[255, 255, 255, 255]);
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, size, size);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc
            .write_header()
            .map_err(|_| WxError::new(-1, "system error"))?;
        w.write_image_data(&pixels)
            .map_err(|_| WxError::new(-1, "system error"))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scene_rules() {
        assert!(check_scene("a=1&b=2").is_ok());
        assert!(check_scene(&"x".repeat(32)).is_ok());
        assert_eq!(check_scene(&"x".repeat(33)).unwrap_err().code, 40169);
        assert_eq!(check_scene("").unwrap_err().code, 40169);
        assert_eq!(check_scene("中文").unwrap_err().code, 40129);
        assert_eq!(check_scene("a b").unwrap_err().code, 40129);
    }
}
