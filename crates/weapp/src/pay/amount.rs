//! [`Fen`]: an amount of money in fen (分, 1/100 yuan) as an integer, the only unit WeChat Pay's
//! JSON uses. There is no float anywhere: `9.8 * 100 = 980.0000000000001` has broken payments
//! in other SDKs. Yuan text (bills are in yuan) is parsed digit by digit.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An amount in fen, from 0 to `i64::MAX` (WeChat's fields are signed 64-bit integers).
///
/// Arithmetic is checked: [`Fen::checked_add`], [`Fen::checked_sub`] (refuses to go below
/// zero), [`Fen::checked_mul`]; there is no `Add` that could wrap or panic.
///
/// ```
/// use weapp::pay::Fen;
/// let price = Fen::from_yuan_str("9.80").unwrap();
/// assert_eq!(price, Fen::new(980));
/// assert_eq!(price.checked_mul(3), Some(Fen::new(2940)));
/// assert_eq!(Fen::new(100).checked_sub(Fen::new(101)), None);
/// assert_eq!(price.to_string(), "9.80");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Fen(u64);

/// The largest amount: WeChat's amount fields are signed 64-bit integers.
const MAX: u64 = i64::MAX as u64;

/// The amount does not fit WeChat's signed 64-bit fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("amount above i64::MAX fen")]
pub struct FenOverflow;

impl TryFrom<u64> for Fen {
    type Error = FenOverflow;

    /// `fen` fen, refusing an amount above `i64::MAX` (where [`Fen::new`] clamps).
    fn try_from(fen: u64) -> Result<Fen, FenOverflow> {
        if fen > MAX {
            Err(FenOverflow)
        } else {
            Ok(Fen(fen))
        }
    }
}

impl Fen {
    /// Zero.
    pub const ZERO: Fen = Fen(0);

    /// `fen` fen, for amounts known to fit (constants, amounts already checked).
    ///
    /// **Clamps**: an amount above `i64::MAX` (WeChat's largest) becomes `i64::MAX`, silently —
    /// never pass unchecked input here; use [`Fen::try_new`] or `Fen::try_from(u64)`, which
    /// refuse it.
    ///
    /// ```
    /// use weapp::pay::Fen;
    /// assert_eq!(Fen::new(u64::MAX), Fen::new(i64::MAX as u64)); // clamped
    /// assert_eq!(Fen::try_from(u64::MAX).ok(), None); // refused
    /// assert_eq!(Fen::try_from(980u64).ok(), Some(Fen::new(980)));
    /// ```
    pub const fn new(fen: u64) -> Fen {
        if fen > MAX {
            Fen(MAX)
        } else {
            Fen(fen)
        }
    }

    /// `fen` fen, or `None` when it is negative or does not fit.
    pub fn try_new(fen: i64) -> Option<Fen> {
        u64::try_from(fen).ok().map(Fen)
    }

    /// The number of fen.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The number of fen as WeChat's signed 64-bit integer.
    pub const fn as_i64(self) -> i64 {
        self.0 as i64
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Fen) -> Option<Fen> {
        self.0.checked_add(other.0).filter(|v| *v <= MAX).map(Fen)
    }

    /// `self - other`, or `None` when the result would be negative.
    pub fn checked_sub(self, other: Fen) -> Option<Fen> {
        self.0.checked_sub(other.0).map(Fen)
    }

    /// `self * n` (a quantity), or `None` on overflow.
    pub fn checked_mul(self, n: u64) -> Option<Fen> {
        self.0.checked_mul(n).filter(|v| *v <= MAX).map(Fen)
    }

    /// The sum of `amounts`, or `None` on overflow.
    pub fn checked_sum<I: IntoIterator<Item = Fen>>(amounts: I) -> Option<Fen> {
        amounts
            .into_iter()
            .try_fold(Fen::ZERO, |acc, a| acc.checked_add(a))
    }

    /// Parses yuan text as bills write it: `12`, `12.3`, `12.34`, optionally with a leading
    /// `` ` `` (the bill CSV's text marker) or `¥`. `None` for a sign, more than two decimals,
    /// anything that is not a digit, or overflow.
    pub fn from_yuan_str(text: &str) -> Option<Fen> {
        let t = text.trim();
        let t = t.strip_prefix('`').unwrap_or(t);
        let t = t.strip_prefix('¥').unwrap_or(t);
        let (whole, frac) = match t.split_once('.') {
            Some((w, f)) => (w, f),
            None => (t, ""),
        };
        if whole.is_empty() || frac.len() > 2 || (t.contains('.') && frac.is_empty()) {
            return None;
        }
        if !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let mut fen: u64 = 0;
        for b in whole.bytes() {
            fen = fen.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        }
        let mut cents = 0u64;
        for (i, b) in frac.bytes().enumerate() {
            cents += u64::from(b - b'0') * if i == 0 { 10 } else { 1 };
        }
        fen.checked_mul(100)?
            .checked_add(cents)
            .filter(|v| *v <= MAX)
            .map(Fen)
    }
}

/// Yuan with two decimals: `Fen::new(980)` is `9.80`.
impl std::fmt::Display for Fen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

impl Serialize for Fen {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.as_i64())
    }
}

/// Only JSON integers from 0 to `i64::MAX`: a float (`1.5`, even `100.0`), a string or a
/// negative number is refused.
impl<'de> Deserialize<'de> for Fen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Fen, D::Error> {
        let v = u64::deserialize(d)?;
        if v > MAX {
            return Err(serde::de::Error::custom("amount exceeds i64::MAX fen"));
        }
        Ok(Fen(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_text_is_parsed_without_floats() {
        assert_eq!(Fen::from_yuan_str("9.8"), Some(Fen(980)));
        assert_eq!(Fen::from_yuan_str("`0.01"), Some(Fen(1)));
        assert_eq!(Fen::from_yuan_str("¥12"), Some(Fen(1200)));
        assert_eq!(Fen::from_yuan_str("92233720368547758.07"), Some(Fen(MAX)));
        for bad in [
            "",
            "-1",
            "+1",
            "1.",
            ".5",
            "1.234",
            "1e3",
            "NaN",
            "1,00",
            "92233720368547758.08",
        ] {
            assert_eq!(Fen::from_yuan_str(bad), None, "{bad}");
        }
    }

    #[test]
    fn arithmetic_refuses_overflow_and_negatives() {
        assert_eq!(Fen::new(u64::MAX), Fen(MAX));
        assert_eq!(Fen::try_new(-1), None);
        assert_eq!(Fen::try_new(5), Some(Fen(5)));
        assert_eq!(Fen(MAX).checked_add(Fen(1)), None);
        assert_eq!(Fen(MAX - 1).checked_add(Fen(1)), Some(Fen(MAX)));
        assert_eq!(Fen(1).checked_sub(Fen(2)), None);
        assert_eq!(Fen(MAX / 2 + 1).checked_mul(2), None);
        assert_eq!(Fen::checked_sum([Fen(1), Fen(2), Fen(3)]), Some(Fen(6)));
        assert_eq!(Fen::checked_sum([Fen(MAX), Fen(1)]), None);
    }

    #[test]
    fn json_takes_integers_only() {
        assert_eq!(serde_json::from_str::<Fen>("100").unwrap(), Fen(100));
        for bad in ["1.5", "100.0", "-1", "\"100\"", "9223372036854775808"] {
            assert!(serde_json::from_str::<Fen>(bad).is_err(), "{bad}");
        }
        assert_eq!(serde_json::to_string(&Fen(1)).unwrap(), "1");
        assert_eq!(Fen(5).to_string(), "0.05");
        assert_eq!(Fen(123456).to_string(), "1234.56");
    }
}
