//! Signing: the five-line request message and the `Authorization` header, the three-line
//! response/notification message, and `paySign` for `wx.requestPayment`.
//!
//! The message builders and [`AuthorizationHeader::parse`] are public so a simulator (or a
//! test playing WeChat) checks requests with the same code the SDK signs them with.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::pay::error::{KeyError, PayError};
use crate::pay::keys::MerchantPrivateKey;

/// The `Authorization` scheme of RSA requests.
pub const AUTH_SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";

/// `METHOD\nCANONICAL_URL\nTIMESTAMP\nNONCE\nBODY\n`: what a request signature covers.
/// `canonical_url` is the path and query exactly as sent (no scheme or host); `body` the exact
/// bytes sent (empty for GET, so a GET message ends in `\n\n`).
pub fn request_message(
    method: &str,
    canonical_url: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut m =
        Vec::with_capacity(method.len() + canonical_url.len() + nonce.len() + body.len() + 20);
    m.extend_from_slice(method.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(canonical_url.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(timestamp.to_string().as_bytes());
    m.push(b'\n');
    m.extend_from_slice(nonce.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// `TIMESTAMP\nNONCE\nBODY\n`: what a response or notification signature covers (the raw
/// body; an empty body gives `TS\nNONCE\n\n`).
pub fn response_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(timestamp.len() + nonce.len() + body.len() + 3);
    m.extend_from_slice(timestamp.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(nonce.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// A random nonce of 32 upper-case alphanumerics (as the official SDKs send).
pub fn nonce() -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::thread_rng();
    (0..32)
        .map(|_| char::from(CHARS[rng.gen_range(0..CHARS.len())]))
        .collect()
}

/// The five items of an `Authorization: WECHATPAY2-SHA256-RSA2048 …` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationHeader {
    /// `mchid`.
    pub mchid: String,
    /// `nonce_str`.
    pub nonce_str: String,
    /// `timestamp`, Unix seconds.
    pub timestamp: i64,
    /// `serial_no`: the merchant certificate's serial.
    pub serial_no: String,
    /// `signature`, base64.
    pub signature: String,
}

impl AuthorizationHeader {
    /// Parses the header as WeChat does: the scheme, then `key="value"` items in any order.
    /// `None` when the scheme differs, an item is missing or repeated, or the timestamp is not
    /// a number.
    pub fn parse(header: &str) -> Option<AuthorizationHeader> {
        let rest = header.strip_prefix(AUTH_SCHEME)?.strip_prefix(' ')?;
        let (mut mchid, mut nonce, mut ts, mut serial, mut sig) = (None, None, None, None, None);
        for item in rest.split(',') {
            let (k, v) = item.trim().split_once('=')?;
            let v = v.strip_prefix('"')?.strip_suffix('"')?;
            let slot = match k {
                "mchid" => &mut mchid,
                "nonce_str" => &mut nonce,
                "timestamp" => &mut ts,
                "serial_no" => &mut serial,
                "signature" => &mut sig,
                _ => return None,
            };
            if slot.replace(v.to_owned()).is_some() {
                return None;
            }
        }
        Some(AuthorizationHeader {
            mchid: mchid?,
            nonce_str: nonce?,
            timestamp: ts?.parse().ok()?,
            serial_no: serial?,
            signature: sig?,
        })
    }
}

impl std::fmt::Display for AuthorizationHeader {
    /// `WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",timestamp="…",serial_no="…",signature="…"`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            r#"{AUTH_SCHEME} mchid="{}",nonce_str="{}",timestamp="{}",serial_no="{}",signature="{}""#,
            self.mchid, self.nonce_str, self.timestamp, self.serial_no, self.signature
        )
    }
}

/// The five parameters of `wx.requestPayment`, in the names the mini program passes them
/// (`serde` writes `timeStamp`, `nonceStr`, `package`, `signType`, `paySign`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestPayment {
    /// Unix seconds as a string.
    #[serde(rename = "timeStamp")]
    pub time_stamp: String,
    /// A random string (≤ 32 characters).
    #[serde(rename = "nonceStr")]
    pub nonce_str: String,
    /// `prepay_id=<prepay_id>`.
    pub package: String,
    /// Always `RSA`.
    #[serde(rename = "signType")]
    pub sign_type: String,
    /// base64 SHA256withRSA over `appId\ntimeStamp\nnonceStr\npackage\n`.
    #[serde(rename = "paySign")]
    pub pay_sign: String,
}

/// `appId\ntimeStamp\nnonceStr\npackage\n`: what `paySign` covers.
pub fn pay_sign_message(appid: &str, time_stamp: &str, nonce_str: &str, package: &str) -> Vec<u8> {
    format!("{appid}\n{time_stamp}\n{nonce_str}\n{package}\n").into_bytes()
}

/// A merchant's signing identity: mchid, merchant API certificate serial, private key.
/// `Debug` never shows the key. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Merchant {
    mchid: String,
    serial_no: String,
    key: MerchantPrivateKey,
}

/// True for what may sit between the quotes of an `Authorization` item.
fn header_safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b',')
}

impl Merchant {
    /// A merchant identity.
    ///
    /// # Errors
    /// [`KeyError::InvalidId`] when the mchid or serial is empty or has characters a header
    /// item cannot carry.
    pub fn new(
        mchid: impl Into<String>,
        serial_no: impl Into<String>,
        key: MerchantPrivateKey,
    ) -> Result<Self, KeyError> {
        let (mchid, serial_no) = (mchid.into(), serial_no.into());
        if !header_safe(&mchid) {
            return Err(KeyError::InvalidId("mchid"));
        }
        if !header_safe(&serial_no) {
            return Err(KeyError::InvalidId("merchant certificate serial"));
        }
        Ok(Self {
            mchid,
            serial_no,
            key,
        })
    }

    /// The mchid.
    pub fn mchid(&self) -> &str {
        &self.mchid
    }

    /// The merchant API certificate serial.
    pub fn serial_no(&self) -> &str {
        &self.serial_no
    }

    /// The private key.
    pub fn private_key(&self) -> &MerchantPrivateKey {
        &self.key
    }

    /// The `Authorization` header value for one request.
    ///
    /// # Errors
    /// [`PayError::Sign`] if signing fails.
    pub fn authorization(
        &self,
        method: &str,
        canonical_url: &str,
        body: &[u8],
        timestamp: i64,
        nonce_str: &str,
    ) -> Result<String, PayError> {
        let signature = self.key.sign(&request_message(
            method,
            canonical_url,
            timestamp,
            nonce_str,
            body,
        ))?;
        Ok(AuthorizationHeader {
            mchid: self.mchid.clone(),
            nonce_str: nonce_str.to_owned(),
            timestamp,
            serial_no: self.serial_no.clone(),
            signature,
        }
        .to_string())
    }

    /// The `wx.requestPayment` parameters for `prepay_id`, signed for `appid` (the appid the
    /// order was placed with), at `timestamp` with `nonce_str`.
    ///
    /// # Errors
    /// [`PayError::Sign`] if signing fails; [`PayError::InvalidArgument`] for an empty appid
    /// or prepay_id.
    pub fn request_payment(
        &self,
        appid: &str,
        prepay_id: &str,
        timestamp: i64,
        nonce_str: &str,
    ) -> Result<RequestPayment, PayError> {
        if appid.is_empty() || prepay_id.is_empty() {
            return Err(PayError::InvalidArgument(
                "appid and prepay_id must not be empty".into(),
            ));
        }
        let time_stamp = timestamp.to_string();
        let package = format!("prepay_id={prepay_id}");
        let pay_sign = self
            .key
            .sign(&pay_sign_message(appid, &time_stamp, nonce_str, &package))?;
        Ok(RequestPayment {
            time_stamp,
            nonce_str: nonce_str.to_owned(),
            package,
            sign_type: "RSA".into(),
            pay_sign,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_a_newline_after_every_line() {
        assert_eq!(
            request_message(
                "GET",
                "/v3/pay/transactions/id/4200003100202606015015753674?mchid=1900007291",
                1554208460,
                "593BEC0C930BF1AFEB40B4A08C8FB242",
                b""
            ),
            b"GET\n/v3/pay/transactions/id/4200003100202606015015753674?mchid=1900007291\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n"
        );
        assert_eq!(
            response_message(
                "1722850421",
                "d824f2e086d3c1df967785d13fcd22ef",
                br#"{"code_url":"weixin://wxpay/bizpayurl?pr=JyC91EIz1"}"#
            ),
            b"1722850421\nd824f2e086d3c1df967785d13fcd22ef\n{\"code_url\":\"weixin://wxpay/bizpayurl?pr=JyC91EIz1\"}\n"
        );
        assert_eq!(
            pay_sign_message(
                "wx8888888888888888",
                "1414561699",
                "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
                "prepay_id=wx201410272009395522657a690389285100"
            ),
            b"wx8888888888888888\n1414561699\n5K8264ILTKCH16CQ2502SI8ZNMTM67VS\nprepay_id=wx201410272009395522657a690389285100\n"
        );
    }

    #[test]
    fn authorization_items_parse_in_any_order() {
        let doc = r#"WECHATPAY2-SHA256-RSA2048 mchid="1900009191",nonce_str="593BEC0C930BF1AFEB40B4A08C8FB242",signature="uOVRnA4qG/MNnYzdQxJanN+zU+lT",timestamp="1554208460",serial_no="1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C""#;
        let h = AuthorizationHeader::parse(doc).unwrap();
        assert_eq!(h.mchid, "1900009191");
        assert_eq!(h.timestamp, 1554208460);
        assert_eq!(h.serial_no, "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C");
        assert_eq!(AuthorizationHeader::parse(&h.to_string()), Some(h));
        for bad in [
            "",
            r#"WECHATPAY2-SHA256-RSA2048 mchid="1""#,
            &doc.replace("WECHATPAY2-SHA256-RSA2048", "Bearer"),
            &doc.replace(r#"timestamp="1554208460""#, r#"timestamp="x""#),
            &format!(r#"{doc},mchid="2""#),
            &doc.replace(r#"mchid="1900009191""#, "mchid=1900009191"),
        ] {
            assert_eq!(AuthorizationHeader::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn nonces_are_32_alphanumerics_and_differ() {
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
