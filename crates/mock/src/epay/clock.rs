//! Wall-clock time at a fixed UTC offset: Beijing's, as an epay gateway
//! writes it — `addtime` and `endtime` (`2024-05-01 12:00:00`) and the date
//! that starts its trade numbers (`20240501120000`) — and a statement's,
//! at its day cut's offset ([`crate::statement`]).
//!
//! Why it is built so: gateways run on China time (UTC+8, no daylight
//! saving), statements name a fixed offset too, and the mock needs nothing
//! more than formatting a Unix second, so the civil date is computed here
//! (Howard Hinnant's `civil_from_days`) rather than by adding a date crate.

/// Beijing's offset from UTC, in seconds.
pub(crate) const BEIJING: i64 = 8 * 3600;

/// A second of wall-clock time, broken down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl Stamp {
    /// Beijing time at a Unix millisecond.
    pub fn at_ms(unix_ms: i64) -> Stamp {
        Stamp::at(unix_ms.div_euclid(1000))
    }

    /// Beijing time at a Unix second.
    pub fn at(unix: i64) -> Stamp {
        Stamp::in_offset(unix, BEIJING)
    }

    /// The time at a Unix second where clocks are `offset` seconds ahead of UTC.
    pub fn in_offset(unix: i64, offset: i64) -> Stamp {
        let local = unix.saturating_add(offset);
        let (days, secs) = (local.div_euclid(86_400), local.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        // `secs` is within 0..86_400, so these fit.
        let secs = secs as u32;
        Stamp {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
        }
    }

    /// `2024-05-01 12:00:00`.
    pub fn text(&self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// `20240501120000`.
    pub fn compact(&self) -> String {
        format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// `2024-05-01`: the date of a day counted from 1970-01-01.
pub(crate) fn date(days: i64) -> String {
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}")
}

/// (year, month, day) of a day counted from 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_beijing_time() {
        assert_eq!(Stamp::at(0).text(), "1970-01-01 08:00:00");
        // 2024-02-29T16:30:05Z is past midnight in Beijing.
        let leap = Stamp::at(1_709_224_205);
        assert_eq!(leap.text(), "2024-03-01 00:30:05");
        assert_eq!(leap.compact(), "20240301003005");
        assert_eq!(Stamp::at(1_709_137_805).text(), "2024-02-29 00:30:05");
        assert_eq!(Stamp::at(4_102_415_999).text(), "2099-12-31 23:59:59");
        assert_eq!(Stamp::at_ms(-1).text(), "1970-01-01 07:59:59", "floored");
    }

    #[test]
    fn formats_other_offsets_and_dates() {
        assert_eq!(Stamp::in_offset(0, 0).text(), "1970-01-01 00:00:00");
        assert_eq!(Stamp::in_offset(0, -5 * 3600).text(), "1969-12-31 19:00:00");
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(-1), "1969-12-31");
        assert_eq!(date(19_782), "2024-02-29");
    }
}
