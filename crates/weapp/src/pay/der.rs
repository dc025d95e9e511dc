//! The little PEM and DER this SDK reads: a PEM block, an RSA `SubjectPublicKeyInfo`, and from
//! an X.509 certificate its serial number, validity and public key.
//!
//! Why by hand rather than with an X.509 crate: we need four fields, and we do not rely on the
//! certificate's own signature chain — a platform certificate is trusted because it arrives
//! encrypted with the merchant's APIv3 key (AES-GCM authenticates it), or because the merchant
//! configured it. A bounds-checked TLV walk of ~150 lines keeps three crates out of the tree.
//! Every length is checked against its parent; nothing here indexes without a check.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use crate::pay::error::KeyError;
use crate::pay::time::{days_from_civil, days_in_month};

/// DER tags used here.
const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const VERSION_TAG: u8 = 0xA0;

/// `1.2.840.113549.1.1.1` rsaEncryption, as DER content bytes.
const RSA_ENCRYPTION: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];

/// The first PEM block in `text` whose label is one of `labels`: (label, DER bytes).
pub(crate) fn pem_decode<'l>(
    text: &str,
    labels: &[&'l str],
    expected: &'static str,
) -> Result<(&'l str, Vec<u8>), KeyError> {
    for label in labels {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        let Some(start) = text.find(&begin) else {
            continue;
        };
        let after = &text[start + begin.len()..];
        let Some(stop) = after.find(&end) else {
            return Err(KeyError::NotPem { expected });
        };
        let body: String = after[..stop]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let der = B64.decode(body).map_err(|_| KeyError::Base64)?;
        return Ok((label, der));
    }
    Err(KeyError::NotPem { expected })
}

/// A reader over DER TLVs.
struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8], what: &'static str) -> Self {
        Self { rest: data, what }
    }

    fn err(&self, reason: &'static str) -> KeyError {
        KeyError::Malformed {
            what: self.what,
            reason,
        }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The next TLV: (tag, content, whole encoding).
    fn any(&mut self) -> Result<(u8, &'a [u8], &'a [u8]), KeyError> {
        let data = self.rest;
        let (&tag, after_tag) = data.split_first().ok_or(self.err("truncated"))?;
        if tag & 0x1F == 0x1F {
            return Err(self.err("multi-byte tags are not used here"));
        }
        let (&first, mut after_len) = after_tag.split_first().ok_or(self.err("truncated"))?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7F);
            if n == 0 || n > 4 || after_len.len() < n {
                return Err(self.err("bad length"));
            }
            let mut len = 0usize;
            for &b in &after_len[..n] {
                len = (len << 8) | usize::from(b);
            }
            after_len = &after_len[n..];
            if len < 0x80 {
                return Err(self.err("non-minimal length"));
            }
            len
        };
        if after_len.len() < len {
            return Err(self.err("length past the end"));
        }
        let header = data.len() - after_len.len();
        let (content, rest) = after_len.split_at(len);
        self.rest = rest;
        Ok((tag, content, &data[..header + len]))
    }

    /// The next TLV, which must have tag `tag`: its content.
    fn expect(&mut self, tag: u8, reason: &'static str) -> Result<&'a [u8], KeyError> {
        match self.any()? {
            (t, content, _) if t == tag => Ok(content),
            _ => Err(self.err(reason)),
        }
    }
}

/// The PKCS#1 `RSAPublicKey` inside an RSA `SubjectPublicKeyInfo`.
pub(crate) fn rsa_key_from_spki(spki: &[u8]) -> Result<Vec<u8>, KeyError> {
    let mut outer = Reader::new(spki, "public key");
    let seq = outer.expect(SEQUENCE, "not a SubjectPublicKeyInfo")?;
    if !outer.is_empty() {
        return Err(outer.err("trailing data"));
    }
    let mut r = Reader::new(seq, "public key");
    let alg = r.expect(SEQUENCE, "no algorithm")?;
    let oid = Reader::new(alg, "public key").expect(OID, "no algorithm OID")?;
    if oid != RSA_ENCRYPTION {
        return Err(r.err("not an RSA key"));
    }
    let bits = r.expect(BIT_STRING, "no key bits")?;
    match bits.split_first() {
        Some((0, key)) if !key.is_empty() => Ok(key.to_vec()),
        _ => Err(r.err("bad key bit string")),
    }
}

/// What this SDK reads from an X.509 certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertFields {
    /// The serial number in upper-case hex, without a sign byte (as WeChat and
    /// `openssl x509 -serial` print it).
    pub(crate) serial: String,
    /// notBefore, Unix seconds.
    pub(crate) not_before: i64,
    /// notAfter, Unix seconds.
    pub(crate) not_after: i64,
    /// The PKCS#1 `RSAPublicKey`.
    pub(crate) rsa_public_key: Vec<u8>,
}

/// Reads serial, validity and RSA key from a DER certificate.
pub(crate) fn parse_certificate(der: &[u8]) -> Result<CertFields, KeyError> {
    let mut outer = Reader::new(der, "certificate");
    let cert = outer.expect(SEQUENCE, "not a certificate")?;
    if !outer.is_empty() {
        return Err(outer.err("trailing data"));
    }
    let tbs = Reader::new(cert, "certificate").expect(SEQUENCE, "no tbsCertificate")?;
    let mut r = Reader::new(tbs, "certificate");
    if r.peek_tag() == Some(VERSION_TAG) {
        r.any()?;
    }
    let serial = r.expect(INTEGER, "no serial number")?;
    if serial.is_empty() || serial.len() > 32 {
        return Err(r.err("bad serial number"));
    }
    let serial = match serial {
        [0, rest @ ..] if !rest.is_empty() => rest,
        s => s,
    };
    r.expect(SEQUENCE, "no signature algorithm")?;
    r.expect(SEQUENCE, "no issuer")?;
    let validity = r.expect(SEQUENCE, "no validity")?;
    let mut v = Reader::new(validity, "certificate");
    let not_before = read_time(&mut v)?;
    let not_after = read_time(&mut v)?;
    r.expect(SEQUENCE, "no subject")?;
    let (tag, _, spki) = r.any()?;
    if tag != SEQUENCE {
        return Err(r.err("no subjectPublicKeyInfo"));
    }
    Ok(CertFields {
        serial: hex::encode_upper(serial),
        not_before,
        not_after,
        rsa_public_key: rsa_key_from_spki(spki)?,
    })
}

/// A UTCTime (`YYMMDDHHMMSSZ`, 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) in Unix
/// seconds.
fn read_time(r: &mut Reader<'_>) -> Result<i64, KeyError> {
    let (tag, content, _) = r.any()?;
    let text = std::str::from_utf8(content).map_err(|_| r.err("bad time"))?;
    let digits = text
        .strip_suffix('Z')
        .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
        .ok_or(r.err("time must be UTC, to the second"))?;
    let n = |s: &str| s.parse::<i64>().map_err(|_| r.err("bad time"));
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy = n(&digits[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (GENERALIZED_TIME, 14) => (n(&digits[..4])?, &digits[4..]),
        _ => return Err(r.err("bad time")),
    };
    let (mo, d, h, mi, s) = (
        n(&rest[..2])?,
        n(&rest[2..4])?,
        n(&rest[4..6])?,
        n(&rest[6..8])?,
        n(&rest[8..10])?,
    );
    if !(1..=12).contains(&mo)
        || d < 1
        || d > days_in_month(year, mo)
        || h > 23
        || mi > 59
        || s > 59
    {
        return Err(r.err("bad time"));
    }
    Ok(days_from_civil(year, mo, d) * 86_400 + h * 3600 + mi * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else if len < 0x100 {
            out.extend([0x81, len as u8]);
        } else {
            out.extend([0x82, (len >> 8) as u8, len as u8]);
        }
        out.extend_from_slice(content);
        out
    }

    #[test]
    fn lengths_are_bounds_checked() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x05, 0x00],
            &[0x30, 0x80],
            &[0x30, 0x85, 0, 0, 0, 0, 1],
            &[0x30, 0x81, 0x05, 0, 0, 0, 0, 0],
            &[0x1F, 0x01, 0x00],
        ] {
            assert!(Reader::new(bad, "x").any().is_err(), "{bad:?}");
        }
        let mut r = Reader::new(&[0x02, 0x01, 0x07, 0x05, 0x00], "x");
        assert_eq!(r.any().unwrap().1, &[0x07]);
        assert_eq!(r.any().unwrap().0, 0x05);
        assert!(r.is_empty());
    }

    #[test]
    fn times_in_both_encodings() {
        let t = |tag, s: &str| read_time(&mut Reader::new(&tlv(tag, s.as_bytes()), "x"));
        assert_eq!(t(UTC_TIME, "700101000000Z").unwrap(), 0);
        assert_eq!(t(UTC_TIME, "491231235959Z").unwrap(), 2_524_607_999);
        assert_eq!(t(UTC_TIME, "500101000000Z").unwrap(), -631_152_000);
        assert_eq!(
            t(GENERALIZED_TIME, "20540423181739Z").unwrap(),
            2_660_581_059
        );
        for (tag, bad) in [
            (UTC_TIME, "7001010000Z"),
            (UTC_TIME, "700101000000+0800"),
            (UTC_TIME, "701301000000Z"),
            (UTC_TIME, "700230000000Z"),
            (GENERALIZED_TIME, "700101000000Z"),
            (GENERALIZED_TIME, "20540423181739.5Z"),
            (INTEGER, "700101000000Z"),
        ] {
            assert!(t(tag, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn spki_must_be_rsa() {
        let alg = tlv(
            SEQUENCE,
            &[tlv(OID, RSA_ENCRYPTION), vec![0x05, 0x00]].concat(),
        );
        let good = tlv(
            SEQUENCE,
            &[alg.clone(), tlv(BIT_STRING, &[0, 0x30, 0x00])].concat(),
        );
        assert_eq!(rsa_key_from_spki(&good).unwrap(), vec![0x30, 0x00]);
        let ec = tlv(
            SEQUENCE,
            &[
                tlv(
                    SEQUENCE,
                    &tlv(OID, &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01]),
                ),
                tlv(BIT_STRING, &[0, 4]),
            ]
            .concat(),
        );
        assert!(rsa_key_from_spki(&ec).is_err());
        let unused_bits = tlv(SEQUENCE, &[alg, tlv(BIT_STRING, &[1, 0x30])].concat());
        assert!(rsa_key_from_spki(&unused_bits).is_err());
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(rsa_key_from_spki(&trailing).is_err());
    }

    #[test]
    fn pem_labels_and_base64() {
        let pem = "junk\n-----BEGIN PUBLIC KEY-----\nAAEC\nAw==\n-----END PUBLIC KEY-----\n";
        assert_eq!(
            pem_decode(pem, &["PUBLIC KEY"], "PUBLIC KEY").unwrap(),
            ("PUBLIC KEY", vec![0, 1, 2, 3])
        );
        assert!(matches!(
            pem_decode(pem, &["PRIVATE KEY"], "PRIVATE KEY"),
            Err(KeyError::NotPem { .. })
        ));
        let bad = "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----";
        assert_eq!(pem_decode(bad, &["PUBLIC KEY"], "x"), Err(KeyError::Base64));
        let unterminated = "-----BEGIN PUBLIC KEY-----\nAAEC\n";
        assert!(pem_decode(unterminated, &["PUBLIC KEY"], "x").is_err());
    }
}
