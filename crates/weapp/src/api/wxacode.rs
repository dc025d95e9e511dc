//! Mini program codes (`getwxacode`, `getwxacodeunlimit`, `createwxaqrcode`): image bytes on
//! success. Arguments are checked before sending with WeChat's own rules and errcodes.

use serde::Serialize;

use super::EnvVersion;
use crate::client::Client;
use crate::error::{rejected_locally, Result};
use crate::http::{Binary, Body, Endpoint};

/// Mini program code APIs. Get one with [`Client::wxacode`].
#[derive(Debug, Clone)]
pub struct WxacodeApi {
    client: Client,
}

impl Client {
    /// Mini program code APIs.
    pub fn wxacode(&self) -> WxacodeApi {
        WxacodeApi {
            client: self.clone(),
        }
    }
}

const SCENE_CHARS: &str = "!#$&'()*+,/:;=?@-._~";

/// `scene`: 1–32 characters of `[0-9A-Za-z!#$&'()*+,/:;=?@\-._~]`.
///
/// # Errors
/// 40169 empty or too long; 40129 a character outside the set.
pub fn validate_scene(scene: &str) -> Result<()> {
    const E: &str = "/wxa/getwxacodeunlimit";
    if scene.is_empty() || scene.chars().count() > 32 {
        return Err(rejected_locally(E, 40169, "scene must be 1-32 characters"));
    }
    if let Some(c) = scene
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || SCENE_CHARS.contains(*c)))
    {
        return Err(rejected_locally(
            E,
            40129,
            format!("scene contains `{c}`, outside [0-9A-Za-z!#$&'()*+,/:;=?@-._~]"),
        ));
    }
    Ok(())
}

/// `page` of an unlimited code: no leading `/`, no query.
///
/// # Errors
/// 41030.
pub fn validate_page(page: &str) -> Result<()> {
    if page.starts_with('/') || page.contains('?') {
        return Err(rejected_locally(
            "/wxa/getwxacodeunlimit",
            41030,
            "page must not start with / nor carry a query",
        ));
    }
    Ok(())
}

/// `width`: 280–1280.
///
/// # Errors
/// 40097.
pub fn validate_width(endpoint: &'static str, width: u32) -> Result<()> {
    if !(280..=1280).contains(&width) {
        return Err(rejected_locally(
            endpoint,
            40097,
            format!("width {width} is outside 280-1280"),
        ));
    }
    Ok(())
}

/// `path` of a limited code: 1–`max` characters, no `scancode_time` query key.
///
/// # Errors
/// 40159 length, 85096 `scancode_time`.
pub fn validate_path(endpoint: &'static str, path: &str, max: usize) -> Result<()> {
    if path.is_empty() || path.chars().count() > max {
        return Err(rejected_locally(
            endpoint,
            40159,
            format!("path must be 1-{max} characters"),
        ));
    }
    if path.split_once('?').is_some_and(|(_, q)| {
        q.split('&')
            .any(|kv| kv.split('=').next() == Some("scancode_time"))
    }) {
        return Err(rejected_locally(
            endpoint,
            85096,
            "scancode_time is a reserved query key",
        ));
    }
    Ok(())
}

/// An RGB line color.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LineColor {
    /// Red.
    pub r: u8,
    /// Green.
    pub g: u8,
    /// Blue.
    pub b: u8,
}

/// Appearance options shared by the code builders.
#[derive(Debug, Clone, Default, Serialize)]
struct Look {
    #[serde(skip_serializing_if = "Option::is_none")]
    width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auto_color: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line_color: Option<LineColor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_hyaline: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    env_version: Option<EnvVersion>,
}

macro_rules! look_setters {
    () => {
        /// Image width in pixels, 280–1280 (default 430).
        pub fn width(mut self, width: u32) -> Self {
            self.look.width = Some(width);
            self
        }
        /// Let WeChat pick the line color.
        pub fn auto_color(mut self, auto: bool) -> Self {
            self.look.auto_color = Some(auto);
            self
        }
        /// Line color (when `auto_color` is off).
        pub fn line_color(mut self, r: u8, g: u8, b: u8) -> Self {
            self.look.line_color = Some(LineColor { r, g, b });
            self
        }
        /// Transparent background.
        pub fn hyaline(mut self, hyaline: bool) -> Self {
            self.look.is_hyaline = Some(hyaline);
            self
        }
        /// Which version the code opens.
        pub fn env_version(mut self, env: EnvVersion) -> Self {
            self.look.env_version = Some(env);
            self
        }
    };
}

/// `getwxacode`: a code for a path, counted against the 100,000 lifetime quota.
#[derive(Debug, Clone, Serialize)]
#[must_use = "call .send()"]
pub struct GetWxacode {
    #[serde(skip)]
    client: Client,
    path: String,
    #[serde(flatten)]
    look: Look,
}

impl GetWxacode {
    look_setters!();

    /// Makes the code.
    ///
    /// # Errors
    /// Local checks (40159, 85096, 40097), then WeChat's: 45029 lifetime quota, 40097, 85079.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let png = client.wxacode().get("pages/item/item?id=42").width(430).send().await?;
    /// std::fs::write("code.png", &png.bytes).unwrap();
    /// # Ok(()) }
    /// ```
    pub async fn send(self) -> Result<Binary> {
        validate_path(Self::PATH, &self.path, 1024)?;
        if let Some(w) = self.look.width {
            validate_width(Self::PATH, w)?;
        }
        self.client.send(&self).await
    }
}

impl Endpoint for GetWxacode {
    type Output = Binary;
    const PATH: &'static str = "/wxa/getwxacode";
    fn body(&self) -> Result<Body> {
        Body::json(self)
    }
}

/// `getwxacodeunlimit`: a code for a page and a `scene`, unlimited in number.
#[derive(Debug, Clone, Serialize)]
#[must_use = "call .send()"]
pub struct UnlimitedWxacode {
    #[serde(skip)]
    client: Client,
    scene: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    check_path: Option<bool>,
    #[serde(flatten)]
    look: Look,
}

impl UnlimitedWxacode {
    look_setters!();

    /// The page it opens (no leading `/`, no query; default: the home page).
    pub fn page(mut self, page: impl Into<String>) -> Self {
        self.page = Some(page.into());
        self
    }

    /// Whether WeChat checks that the page exists in the published version (default true).
    pub fn check_path(mut self, check: bool) -> Self {
        self.check_path = Some(check);
        self
    }

    /// Makes the code.
    ///
    /// # Errors
    /// Local checks (40169, 40129, 41030, 40097), then WeChat's: 41030 unknown page, 45011.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let png = client.wxacode().unlimited("id=42").page("pages/item/item").send().await?;
    /// # Ok(()) }
    /// ```
    pub async fn send(self) -> Result<Binary> {
        validate_scene(&self.scene)?;
        if let Some(p) = &self.page {
            validate_page(p)?;
        }
        if let Some(w) = self.look.width {
            validate_width(Self::PATH, w)?;
        }
        self.client.send(&self).await
    }
}

impl Endpoint for UnlimitedWxacode {
    type Output = Binary;
    const PATH: &'static str = "/wxa/getwxacodeunlimit";
    // Unlimited in number (5000/min): making the same code twice is harmless.
    const IDEMPOTENT: bool = true;
    fn body(&self) -> Result<Body> {
        Body::json(self)
    }
}

/// `createwxaqrcode`: a square QR code for a path (≤ 128), sharing the lifetime quota.
#[derive(Debug, Clone, Serialize)]
#[must_use = "call .send()"]
pub struct CreateQrcode {
    #[serde(skip)]
    client: Client,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    width: Option<u32>,
}

impl CreateQrcode {
    /// Image width, 280–1280.
    pub fn width(mut self, width: u32) -> Self {
        self.width = Some(width);
        self
    }

    /// Makes the code.
    ///
    /// # Errors
    /// Local checks (40159, 85096, 40097), then 45029.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let png = client.wxacode().qrcode("pages/index/index").send().await?;
    /// # Ok(()) }
    /// ```
    pub async fn send(self) -> Result<Binary> {
        validate_path(Self::PATH, &self.path, 128)?;
        if let Some(w) = self.width {
            validate_width(Self::PATH, w)?;
        }
        self.client.send(&self).await
    }
}

impl Endpoint for CreateQrcode {
    type Output = Binary;
    const PATH: &'static str = "/cgi-bin/wxaapp/createwxaqrcode";
    fn body(&self) -> Result<Body> {
        Body::json(self)
    }
}

impl WxacodeApi {
    /// A limited code for `path` (may carry a query); see [`GetWxacode`].
    pub fn get(&self, path: impl Into<String>) -> GetWxacode {
        GetWxacode {
            client: self.client.clone(),
            path: path.into(),
            look: Look::default(),
        }
    }

    /// An unlimited code carrying `scene`; see [`UnlimitedWxacode`].
    pub fn unlimited(&self, scene: impl Into<String>) -> UnlimitedWxacode {
        UnlimitedWxacode {
            client: self.client.clone(),
            scene: scene.into(),
            page: None,
            check_path: None,
            look: Look::default(),
        }
    }

    /// A square QR code for `path`; see [`CreateQrcode`].
    pub fn qrcode(&self, path: impl Into<String>) -> CreateQrcode {
        CreateQrcode {
            client: self.client.clone(),
            path: path.into(),
            width: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrCode;

    fn code(r: Result<()>) -> Option<ErrCode> {
        r.err().and_then(|e| e.errcode())
    }

    #[test]
    fn boundaries_match_wechat() {
        assert_eq!(code(validate_scene(&"a".repeat(32))), None);
        assert_eq!(
            code(validate_scene(&"a".repeat(33))),
            Some(ErrCode::InvalidSceneLength)
        );
        assert_eq!(code(validate_scene("")), Some(ErrCode::InvalidSceneLength));
        assert_eq!(code(validate_scene("id=1&from=qr!#$'()*+,/:;?@-._~")), None);
        assert_eq!(code(validate_scene("a b")), Some(ErrCode::InvalidScene));
        assert_eq!(code(validate_scene("中")), Some(ErrCode::InvalidScene));
        assert_eq!(code(validate_page("pages/index/index")), None);
        assert_eq!(
            code(validate_page("/pages/index/index")),
            Some(ErrCode::InvalidPage)
        );
        assert_eq!(
            code(validate_page("pages/a?x=1")),
            Some(ErrCode::InvalidPage)
        );
        for (w, ok) in [(279, false), (280, true), (1280, true), (1281, false)] {
            assert_eq!(validate_width("/x", w).is_ok(), ok, "{w}");
        }
        assert_eq!(code(validate_path("/x", &"p".repeat(128), 128)), None);
        assert_eq!(
            code(validate_path("/x", &"p".repeat(129), 128)),
            Some(ErrCode::InvalidPathLength)
        );
        assert_eq!(
            code(validate_path("/x", "", 128)),
            Some(ErrCode::InvalidPathLength)
        );
        assert_eq!(
            code(validate_path("/x", "pages/a?scancode_time=1", 128)),
            Some(ErrCode::ScancodeTimeForbidden)
        );
        assert_eq!(
            code(validate_path("/x", "pages/a?x_scancode_time=1", 128)),
            None
        );
    }
}
