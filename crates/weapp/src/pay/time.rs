//! [`PayTime`]: an instant as WeChat Pay writes it, RFC 3339 with the China offset
//! (`2018-06-08T10:34:56+08:00`). Kept as Unix seconds; written with `+08:00`; read with any
//! offset. Civil-date arithmetic is done here (no date crate needed for one format).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// China Standard Time, +08:00, in seconds.
const CST: i64 = 8 * 3600;

/// An instant with one-second precision, written as RFC 3339 in `+08:00`.
///
/// ```
/// use weapp::pay::PayTime;
/// let t: PayTime = "2018-06-08T10:34:56+08:00".parse().unwrap();
/// assert_eq!(t.unix(), 1528425296);
/// assert_eq!(PayTime::from_unix(1528425296).to_string(), "2018-06-08T10:34:56+08:00");
/// assert_eq!("2018-06-08T02:34:56Z".parse::<PayTime>().unwrap(), t);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PayTime(i64);

impl PayTime {
    /// The instant `secs` seconds after the Unix epoch.
    pub const fn from_unix(secs: i64) -> PayTime {
        PayTime(secs)
    }

    /// Seconds since the Unix epoch.
    pub const fn unix(self) -> i64 {
        self.0
    }

    /// `self + secs` (saturating).
    pub fn plus_secs(self, secs: i64) -> PayTime {
        PayTime(self.0.saturating_add(secs))
    }

    /// The date in China (`yyyy-MM-dd`), as bill dates are given.
    pub fn china_date(self) -> String {
        let (y, m, d) = civil_from_days((self.0 + CST).div_euclid(86_400));
        format!("{y:04}-{m:02}-{d:02}")
    }
}

/// Why a time did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 date-time with an offset: {0:?}")]
pub struct ParseTimeError(String);

impl std::str::FromStr for PayTime {
    type Err = ParseTimeError;

    /// `yyyy-MM-ddTHH:mm:ss[.fraction](Z|±HH:MM)`; the fraction is dropped.
    fn from_str(s: &str) -> Result<PayTime, ParseTimeError> {
        parse_rfc3339(s).ok_or_else(|| ParseTimeError(s.chars().take(40).collect()))
    }
}

fn parse_rfc3339(s: &str) -> Option<PayTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let ob = rest.as_bytes();
            if ob.len() != 6 || ob[3] != b':' {
                return None;
            }
            let sign = match ob[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            // Digits only: `parse` alone would take `+08:-1` or `+08:+1`.
            if !ob[1..3].iter().chain(&ob[4..6]).all(u8::is_ascii_digit) {
                return None;
            }
            let oh: i64 = rest[1..3].parse().ok()?;
            let om: i64 = rest[4..6].parse().ok()?;
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(y, mo, d);
    Some(PayTime(
        days * 86_400 + h * 3600 + mi * 60 + sec.min(59) - offset,
    ))
}

impl std::fmt::Display for PayTime {
    /// RFC 3339 in `+08:00`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let local = self.0 + CST;
        let (y, m, d) = civil_from_days(local.div_euclid(86_400));
        let secs = local.rem_euclid(86_400);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+08:00",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        )
    }
}

impl Serialize for PayTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PayTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PayTime, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

pub(crate) fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_offsets() {
        for (text, unix) in [
            ("1970-01-01T08:00:00+08:00", 0),
            ("2000-02-29T00:00:00+08:00", 951_753_600),
            ("2021-06-24T16:37:26+08:00", 1_624_523_846),
            ("2099-12-31T23:59:59+08:00", 4_102_415_999),
        ] {
            let t: PayTime = text.parse().unwrap();
            assert_eq!(t.unix(), unix, "{text}");
            assert_eq!(t.to_string(), text);
        }
        let z: PayTime = "2021-06-24T08:37:26.123Z".parse().unwrap();
        assert_eq!(z.unix(), 1_624_523_846);
        let minus: PayTime = "2021-06-24T03:37:26-05:00".parse().unwrap();
        assert_eq!(minus.unix(), 1_624_523_846);
        assert_eq!(
            PayTime::from_unix(1_624_550_400 - 1).china_date(),
            "2021-06-24"
        );
        assert_eq!(PayTime::from_unix(1_624_550_400).china_date(), "2021-06-25");
    }

    #[test]
    fn malformed_times_are_refused() {
        for bad in [
            "",
            "2021-06-24",
            "2021-06-24T16:37:26",
            "2021-02-29T00:00:00+08:00",
            "2021-13-01T00:00:00+08:00",
            "2021-06-24T24:00:00+08:00",
            "2021-06-24T16:37:26+0800",
            "2021-06-24T16:37:26.+08:00",
            "2021-06-24T16:37:26+08:00x",
            "２021-06-24T16:37:26+08:00",
            "2026-01-01T00:00:00+08:-1",
            "2026-01-01T00:00:00+08:+1",
            "2026-01-01T00:00:00+-8:00",
            "2026-01-01T00:00:00++8:00",
        ] {
            assert!(bad.parse::<PayTime>().is_err(), "{bad}");
        }
    }

    #[test]
    fn civil_conversion_matches_across_four_centuries() {
        let mut day = days_from_civil(1900, 1, 1);
        for y in 1900..2300 {
            for m in 1..=12 {
                for d in 1..=days_in_month(y, m) {
                    assert_eq!(days_from_civil(y, m, d), day);
                    assert_eq!(civil_from_days(day), (y, m, d));
                    day += 1;
                }
            }
        }
    }
}
