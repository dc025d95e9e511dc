//! Time as WeChat Pay writes it: RFC 3339 in Beijing time (`2018-06-08T10:34:56+08:00`),
//! bill dates (`2018-06-08`) and bill times (`2018-06-08 10:34:56`), and the compact form in
//! prepay ids.
//!
//! A leaf: it imports nothing of the crate.

const BEIJING: i64 = 8 * 3600;

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's civil-from-days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// UTC calendar fields of a Unix time: (year, month, day, hour, minute, second).
pub(crate) fn civil(unix_secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let (y, m, d) = civil_from_days(unix_secs.div_euclid(86_400));
    let s = unix_secs.rem_euclid(86_400);
    (
        y,
        m,
        d,
        (s / 3600) as u32,
        (s % 3600 / 60) as u32,
        (s % 60) as u32,
    )
}

/// `2018-06-08T10:34:56+08:00` for a Unix time in ms.
pub(crate) fn rfc3339(ms: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(ms.div_euclid(1000) + BEIJING);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}+08:00")
}

/// `2018-06-08 10:34:56` (Beijing) for a Unix time in ms: the bills' time column.
pub(crate) fn bill_time(ms: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(ms.div_euclid(1000) + BEIJING);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

/// `20180608103456` (Beijing), as in prepay ids.
pub(crate) fn compact(ms: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(ms.div_euclid(1000) + BEIJING);
    format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}")
}

/// The Beijing day (days since 1970-01-01) a Unix time in ms falls on.
pub(crate) fn beijing_day(ms: i64) -> i64 {
    (ms.div_euclid(1000) + BEIJING).div_euclid(86_400)
}

/// `2018-06-08` for a Beijing day number.
pub(crate) fn day_string(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// A Beijing day number from `yyyy-MM-dd`; `None` unless the text is exactly a real date.
pub(crate) fn parse_day(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = &text[r];
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let day = days_from_civil(y, u32::try_from(m).ok()?, u32::try_from(d).ok()?);
    (day_string(day) == text).then_some(day)
}

/// A Unix time in ms from RFC 3339 (`2018-06-08T10:34:56+08:00`, fractions and `Z` accepted);
/// `None` when it is not one.
pub(crate) fn parse_rfc3339(text: &str) -> Option<i64> {
    if text.len() < 20 || !text.is_ascii() {
        return None;
    }
    let day = parse_day(&text[..10])?;
    let b = text.as_bytes();
    if b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let two = |i: usize| -> Option<i64> {
        let s = &text[i..i + 2];
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (h, mi, s) = (two(11)?, two(14)?, two(17)?);
    if h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut frac_ms = 0;
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded = format!("{:0<3}", &r[..digits.min(3)]);
        frac_ms = padded.parse::<i64>().ok()?;
        rest = &r[digits..];
    }
    let offset = if rest == "Z" {
        0
    } else {
        let sign = match rest.as_bytes().first()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        if rest.len() != 6 || rest.as_bytes()[3] != b':' {
            return None;
        }
        let oh: i64 = rest[1..3].parse().ok()?;
        let om: i64 = rest[4..6].parse().ok()?;
        sign * (oh * 3600 + om * 60)
    };
    Some(((day * 86_400 + h * 3600 + mi * 60 + s) - offset) * 1000 + frac_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beijing_time_round_trips() {
        // 2018-06-08T10:34:56+08:00 is 1528425296.
        assert_eq!(rfc3339(1_528_425_296_000), "2018-06-08T10:34:56+08:00");
        assert_eq!(
            parse_rfc3339("2018-06-08T10:34:56+08:00"),
            Some(1_528_425_296_000)
        );
        assert_eq!(
            parse_rfc3339("2018-06-08T02:34:56Z"),
            Some(1_528_425_296_000)
        );
        assert_eq!(
            parse_rfc3339("2018-06-08T02:34:56.5Z"),
            Some(1_528_425_296_500)
        );
        assert_eq!(parse_rfc3339("2018-02-30T02:34:56Z"), None);
        assert_eq!(parse_rfc3339("2018-06-08 02:34:56Z"), None);
        assert_eq!(bill_time(1_528_425_296_000), "2018-06-08 10:34:56");
        assert_eq!(compact(1_528_425_296_000), "20180608103456");
        assert_eq!(day_string(beijing_day(1_528_425_296_000)), "2018-06-08");
        assert_eq!(
            parse_day("2018-06-08"),
            Some(beijing_day(1_528_425_296_000))
        );
    }
}
