//! Mini program codes: real, decodable QR images (PNG) that encode the path (or
//! `page?scene=…` for unlimited codes), with WeChat's validation rules, the app's published
//! pages, the 100,000 lifetime quota and the per-minute rate of unlimited codes.
//! (WeChat draws its round "sun" codes; a square QR with the same content is what tests need.)

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use qrcode::{Color, EcLevel, QrCode};
use serde_json::Value;

use crate::clock::minute_of;
use crate::error::{WxError, WxResult};
use crate::http::{json_body, p, s, wx_error, Params};
pub use crate::state::wxacode::DEFAULT_PAGES;
use crate::world::Sim;

/// Lifetime quota shared by `getwxacode` and `createwxaqrcode`.
pub const LIFETIME_QUOTA: u64 = 100_000;
/// `getwxacodeunlimit` calls per minute.
pub const UNLIMITED_PER_MINUTE: u32 = 5000;

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
            .ok_or_else(|| WxError::new(40097, "invalid args")),
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
        // The code endpoints answer 40097 with the generic text; the link endpoints 85402.
        _ => Err(WxError::new(
            code,
            if code == 40097 {
                "invalid args"
            } else {
                "invalid env_version"
            },
        )),
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
        .map_err(|_| WxError::new(40097, "invalid args"))?;
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

impl Sim {
    /// Replaces an app's published pages (what `check_path` accepts).
    ///
    /// # Errors
    /// 40013 unknown app.
    pub fn set_pages(&self, appid: &str, pages: Vec<String>) -> WxResult<()> {
        self.world().app_mut(appid)?.codes.pages = pages;
        Ok(())
    }

    /// Counts one limited code (getwxacode / createwxaqrcode); returns the number used.
    ///
    /// # Errors
    /// 45029 past the lifetime quota.
    pub fn take_lifetime_code(&self, appid: &str) -> WxResult<u64> {
        let mut w = self.world();
        let app = w.app_mut(appid)?;
        if app.codes.qrcodes_used >= LIFETIME_QUOTA {
            return Err(WxError::new(45029, "qrcode count out of limit"));
        }
        app.codes.qrcodes_used += 1;
        Ok(app.codes.qrcodes_used)
    }

    /// Sets the lifetime counter (to test the quota without making 100,000 codes).
    ///
    /// # Errors
    /// 40013 unknown app.
    pub fn set_codes_used(&self, appid: &str, used: u64) -> WxResult<()> {
        self.world().app_mut(appid)?.codes.qrcodes_used = used;
        Ok(())
    }

    /// How many limited codes the app has made.
    pub fn codes_used(&self, appid: &str) -> u64 {
        self.world()
            .apps
            .get(appid)
            .map_or(0, |a| a.codes.qrcodes_used)
    }

    /// Checks an unlimited code's page and the per-minute rate.
    ///
    /// # Errors
    /// 41030 invalid page, 45011 over 5000 a minute.
    pub fn check_unlimited(
        &self,
        appid: &str,
        page: Option<&str>,
        check_path: bool,
    ) -> WxResult<()> {
        let mut w = self.world();
        let now = self.now_in(&w);
        let app = w.app_mut(appid)?;
        if let Some(page) = page {
            if page.starts_with('/') || page.contains('?') {
                return Err(WxError::new(41030, INVALID_PAGE));
            }
            if check_path && !app.codes.pages.iter().any(|p| p == page) {
                return Err(WxError::new(41030, INVALID_PAGE));
            }
        }
        if !app.take("wxacode_unlimited", minute_of(now), UNLIMITED_PER_MINUTE) {
            return Err(WxError::new(
                45011,
                "api minute-quota reach limit, must slower, retry next minute",
            ));
        }
        Ok(())
    }
}

/// 41030's errmsg (it read "invalid page rid" before the rid was added).
const INVALID_PAGE: &str = "invalid page";

fn png(bytes: Vec<u8>, used: Option<u64>) -> Response {
    let mut resp = (StatusCode::OK, bytes).into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("image/png"),
    );
    if let Some(n) = used {
        resp.headers_mut().insert("Num-Used", HeaderValue::from(n));
    }
    resp
}

/// Runs a code endpoint: token check, then `f` returns the image or an error.
fn image_call(
    sim: &Sim,
    path: &str,
    q: &HashMap<String, String>,
    f: impl FnOnce(&str) -> WxResult<(Vec<u8>, Option<u64>)>,
) -> Response {
    match sim
        .check_api_token(p(q, "access_token"), path)
        .and_then(|appid| {
            sim.count_app_call(&appid, path);
            f(&appid)
        }) {
        Ok((bytes, used)) => png(bytes, used),
        Err(e) => wx_error(sim, path, &e),
    }
}

fn path_arg(b: &Value, max: usize) -> WxResult<String> {
    let path = s(b, "path").filter(|p| !p.is_empty()).ok_or_else(|| {
        WxError::new(
            40159,
            "invalid length for path, or the data is not json string",
        )
    })?;
    if path.chars().count() > max {
        return Err(WxError::new(
            40159,
            "invalid length for path, or the data is not json string",
        ));
    }
    if path.split_once('?').is_some_and(|(_, q)| {
        q.split('&')
            .any(|kv| kv.split('=').next() == Some("scancode_time"))
    }) {
        return Err(WxError::new(85096, "not allow include scancode_time field"));
    }
    Ok(path.to_owned())
}

async fn getwxacode(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    image_call(&sim, "/wxa/getwxacode", &q, |appid| {
        let b = json_body(&body)?;
        let path = path_arg(&b, 1024)?;
        let width = width(&b)?;
        env_version(&b, 40097)?;
        let used = sim.take_lifetime_code(appid)?;
        Ok((render(&path, width, &b)?, Some(used)))
    })
}

async fn createwxaqrcode(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    image_call(&sim, "/cgi-bin/wxaapp/createwxaqrcode", &q, |appid| {
        let b = json_body(&body)?;
        let path = path_arg(&b, 128)?;
        let width = width(&b)?;
        let used = sim.take_lifetime_code(appid)?;
        Ok((render(&path, width, &b)?, Some(used)))
    })
}

async fn getwxacodeunlimit(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    image_call(&sim, "/wxa/getwxacodeunlimit", &q, |appid| {
        let b = json_body(&body)?;
        let scene = s(&b, "scene").unwrap_or_default();
        check_scene(scene)?;
        let page = s(&b, "page").filter(|p| !p.is_empty());
        let check_path = b.get("check_path").and_then(Value::as_bool).unwrap_or(true);
        let width = width(&b)?;
        env_version(&b, 40097)?;
        sim.check_unlimited(appid, page, check_path)?;
        let content = format!("{}?scene={scene}", page.unwrap_or(DEFAULT_PAGES[0]));
        Ok((render(&content, width, &b)?, None))
    })
}

/// The WeChat routes of this domain.
pub(crate) fn routes() -> Router<Sim> {
    Router::new()
        .route("/wxa/getwxacode", post(getwxacode))
        .route("/wxa/getwxacodeunlimit", post(getwxacodeunlimit))
        .route("/cgi-bin/wxaapp/createwxaqrcode", post(createwxaqrcode))
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
