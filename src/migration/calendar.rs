//! Civil dates for the migration report: HubSpot's deadlines are calendar days (UTC), and the
//! report prints RFC 3339 timestamps. Small enough not to need a date crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A proleptic Gregorian date, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Date {
    pub(crate) year: i32,
    pub(crate) month: u8,
    pub(crate) day: u8,
}

impl Date {
    pub(crate) const fn new(year: i32, month: u8, day: u8) -> Date {
        Date { year, month, day }
    }

    /// The UTC day `at` falls on.
    pub(crate) fn of(at: SystemTime) -> Date {
        let secs = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Date::from_days(secs.div_euclid(86_400))
    }

    /// Days since 1970-01-01 to a date (Howard Hinnant's `civil_from_days`).
    pub(crate) fn from_days(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }

    /// Days since 1970-01-01 (`days_from_civil`).
    pub(crate) fn days(self) -> i64 {
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let m = i64::from(self.month);
        let doy = (153 * if m > 2 { m - 3 } else { m + 9 } + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// Midnight UTC at the start of this day.
    pub(crate) fn start(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.days().max(0) as u64 * 86_400)
    }

    /// The same day `months` later; only used on the first of a month, where it always exists.
    pub(crate) fn plus_months(self, months: u32) -> Date {
        let index = self.year * 12 + i32::from(self.month) - 1 + months as i32;
        Date::new(
            index.div_euclid(12),
            (index.rem_euclid(12) + 1) as u8,
            self.day,
        )
    }

    /// `YYYY-MM-DD`.
    pub(crate) fn parse(text: &str) -> Option<Date> {
        let b = text.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let year = text[..4].parse().ok()?;
        let month: u8 = text[5..7].parse().ok()?;
        let day: u8 = text[8..].parse().ok()?;
        let date = Date::new(year, month, day);
        // Round-tripping through day numbers rejects 2027-02-30 and the like.
        (month >= 1 && Date::from_days(date.days()) == date).then_some(date)
    }
}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// `2027-03-30T08:15:00Z`: RFC 3339 in UTC, to the second.
pub(crate) fn rfc3339(at: SystemTime) -> String {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        Date::from_days(days),
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Reads what [`rfc3339`] writes (`2027-03-30T08:15:07Z`).
pub(crate) fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let date = Date::parse(date)?;
    let mut parts = time.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    (h < 24 && m < 60 && s < 61).then(|| date.start() + Duration::from_secs(h * 3600 + m * 60 + s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip_and_known_points() {
        assert_eq!(Date::from_days(0), Date::new(1970, 1, 1));
        assert_eq!(Date::new(2027, 9, 1).days(), 21_062);
        for days in (-1000..40_000).step_by(7) {
            assert_eq!(Date::from_days(days).days(), days);
        }
        assert_eq!(Date::new(2026, 9, 1).plus_months(18), Date::new(2028, 3, 1));
        assert_eq!(Date::new(2026, 3, 1).plus_months(6), Date::new(2026, 9, 1));
        assert_eq!(Date::new(2026, 12, 1).plus_months(1), Date::new(2027, 1, 1));
    }

    #[test]
    fn parse_rejects_impossible_days() {
        assert_eq!(Date::parse("2027-03-30"), Some(Date::new(2027, 3, 30)));
        assert_eq!(Date::parse("2027-02-29"), None);
        assert_eq!(Date::parse("2028-02-29"), Some(Date::new(2028, 2, 29)));
        assert_eq!(Date::parse("2027-13-01"), None);
        assert_eq!(Date::parse("2027-3-1"), None);
    }

    #[test]
    fn rfc3339_is_utc_seconds() {
        let at = Date::new(2027, 3, 30).start() + Duration::from_secs(8 * 3600 + 15 * 60 + 7);
        assert_eq!(rfc3339(at), "2027-03-30T08:15:07Z");
        assert_eq!(parse_rfc3339("2027-03-30T08:15:07Z"), Some(at));
        assert_eq!(parse_rfc3339("2027-03-30T08:15:07"), None);
    }
}
