//! The merchant's day-cut: when "today" starts for `daily_limit`.
//!
//! Written `HH:MM+HH:MM` (local time of the cut, then the UTC offset of that
//! local time), e.g. `00:00+08:00` for midnight in China. A fixed offset, not a
//! time-zone name: settlement days are fixed-offset in practice, and it keeps
//! the day index a pure function of the clock (Redis can compute the same).

use std::time::{SystemTime, UNIX_EPOCH};

const DAY_SECS: i64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DayCut {
    /// Seconds to add to UTC Unix time so that a day starts at a multiple of 86400.
    /// Within ±38 hours, so 4 bytes: the cut is stored once per merchant.
    shift_secs: i32,
}

impl DayCut {
    pub fn parse(s: &str) -> Result<DayCut, String> {
        let bad = || format!("day_starts {s:?} must look like \"00:00+08:00\"");
        let (time, offset) = if let Some(time) = s.strip_suffix('Z') {
            (time, "+00:00")
        } else {
            let at = s.find(['+', '-']).ok_or_else(bad)?;
            s.split_at(at)
        };
        let local = hh_mm(time).ok_or_else(bad)?;
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let off = hh_mm(&offset[1..]).ok_or_else(bad)?;
        if local >= DAY_SECS || off > 14 * 3600 {
            return Err(bad());
        }
        Ok(DayCut {
            shift_secs: (sign * off - local) as i32, // |x| < 38 h, checked above
        })
    }

    /// Index of the merchant's current day (days since the epoch, shifted to the cut).
    pub fn day_index(&self, unix_secs: i64) -> i64 {
        (unix_secs + i64::from(self.shift_secs)).div_euclid(DAY_SECS)
    }

    /// Unix time (seconds) at which `day` ends.
    pub fn day_ends(&self, day: i64) -> i64 {
        (day + 1) * DAY_SECS - i64::from(self.shift_secs)
    }

    pub fn today(&self) -> i64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.day_index(now)
    }
}

impl Default for DayCut {
    fn default() -> DayCut {
        DayCut { shift_secs: 8 * 3600 }
    }
}

fn hh_mm(s: &str) -> Option<i64> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 3600 + m * 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn midnight_in_china_is_16_utc() {
        let cut = DayCut::parse("00:00+08:00").unwrap();
        assert_eq!(cut, DayCut::default());
        // 2026-11-23T15:59:59Z is 23:59:59 in UTC+8; one second later is a new day.
        let before = 1_795_449_599;
        assert_eq!(cut.day_index(before) + 1, cut.day_index(before + 1));
        assert_eq!(cut.day_ends(cut.day_index(before)), before + 1);
    }

    #[test]
    fn cut_at_local_time_with_offset() {
        let cut = DayCut::parse("06:30-05:00").unwrap();
        // 06:30 at UTC-5 is 11:30 UTC.
        let day_start_utc = 20_000 * DAY_SECS + 11 * 3600 + 30 * 60;
        assert_eq!(cut.day_index(day_start_utc - 1) + 1, cut.day_index(day_start_utc));
        assert_eq!(DayCut::parse("00:00Z").unwrap().day_index(DAY_SECS), 1);
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["", "24:00+08:00", "0:00+08:00", "00:00", "00:60+01:00", "00:00+15:00"] {
            assert!(DayCut::parse(bad).is_err(), "{bad}");
        }
    }
}
