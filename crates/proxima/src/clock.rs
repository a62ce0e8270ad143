//! Wall-clock time as the ledger, budgets and reports see it: milliseconds since the Unix
//! epoch, UTC calendar periods, and the time formats users type and read.

use std::time::{SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, Time};

use crate::config::{BudgetPeriod, ConfigDuration};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn datetime(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn millis(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Seconds since the Unix epoch, for `created` fields.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `2026-11-27T04:23:21.123Z`.
pub fn rfc3339(ms: i64) -> String {
    datetime(ms)
        .format(&Rfc3339)
        .unwrap_or_else(|_| ms.to_string())
}

/// The UTC day of `ms`, as `2026-11-27`.
pub fn day(ms: i64) -> String {
    let date = datetime(ms).date();
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// A point in time as users write it: RFC 3339 (`2026-11-27T10:00:00Z`), a UTC date
/// (`2026-11-27`, its midnight), epoch milliseconds, or an age (`7d`, `24h`: that long ago).
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(millis(at));
    }
    if let Some(date) = parse_date(text) {
        return Ok(millis(date.with_time(Time::MIDNIGHT).assume_utc()));
    }
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(age) = ConfigDuration::parse(text) {
        return Ok(now_ms - i64::try_from(age.0.as_millis()).unwrap_or(i64::MAX));
    }
    Err(format!(
        "`{text}` is not a time: write 2026-11-27, 2026-11-27T10:00:00Z, or an age like 7d or 24h"
    ))
}

fn parse_date(text: &str) -> Option<Date> {
    let mut parts = text.splitn(3, '-');
    let year: i32 = parts.next()?.parse().ok()?;
    let month: u8 = parts.next()?.parse().ok()?;
    let day: u8 = parts.next()?.parse().ok()?;
    Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()
}

impl BudgetPeriod {
    /// The period holding `ms`: when it began and when it ends (the next reset), in epoch
    /// milliseconds. A `total` budget began at the epoch and never resets (`i64::MAX`).
    pub fn bounds(self, ms: i64) -> (i64, i64) {
        // Days and weeks are plain arithmetic on UTC days (asked on every request with a
        // budget); only months need the calendar.
        const DAY: i64 = 86_400_000;
        let day_start = ms - ms.rem_euclid(DAY);
        match self {
            BudgetPeriod::Total => (0, i64::MAX),
            BudgetPeriod::Day => (day_start, day_start + DAY),
            BudgetPeriod::Week => {
                // 1970-01-01 was a Thursday: three days after a Monday.
                let monday = day_start - (ms.div_euclid(DAY) + 3).rem_euclid(7) * DAY;
                (monday, monday + 7 * DAY)
            }
            BudgetPeriod::Month => {
                let date = datetime(ms).date();
                let first = date.replace_day(1).unwrap_or(date);
                let next = match first.month() {
                    time::Month::December => {
                        Date::from_calendar_date(first.year() + 1, time::Month::January, 1).ok()
                    }
                    month => Date::from_calendar_date(first.year(), month.next(), 1).ok(),
                };
                let at_midnight = |d: Date| millis(d.with_time(Time::MIDNIGHT).assume_utc());
                (at_midnight(first), next.map_or(i64::MAX, at_midnight))
            }
        }
    }

    /// `daily`, `weekly`, `monthly` or `total`, for messages.
    pub fn adjective(self) -> &'static str {
        match self {
            BudgetPeriod::Day => "daily",
            BudgetPeriod::Week => "weekly",
            BudgetPeriod::Month => "monthly",
            BudgetPeriod::Total => "total",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const NOV_27_2026_10H: i64 = 1_795_773_600_000; // Friday 2026-11-27T10:00:00Z

    #[test]
    fn periods_follow_the_utc_calendar() {
        assert_eq!(rfc3339(NOV_27_2026_10H), "2026-11-27T10:00:00Z");
        let day = BudgetPeriod::Day.bounds(NOV_27_2026_10H);
        assert_eq!(
            (rfc3339(day.0), rfc3339(day.1)),
            ("2026-11-27T00:00:00Z".into(), "2026-11-28T00:00:00Z".into())
        );
        let week = BudgetPeriod::Week.bounds(NOV_27_2026_10H);
        assert_eq!(
            (rfc3339(week.0), rfc3339(week.1)),
            ("2026-11-23T00:00:00Z".into(), "2026-11-30T00:00:00Z".into())
        );
        let month = BudgetPeriod::Month.bounds(NOV_27_2026_10H);
        assert_eq!(
            (rfc3339(month.0), rfc3339(month.1)),
            ("2026-11-01T00:00:00Z".into(), "2026-12-01T00:00:00Z".into())
        );
        let december = parse_time("2026-12-31T23:59:59Z", 0).unwrap();
        assert_eq!(
            rfc3339(BudgetPeriod::Month.bounds(december).1),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(BudgetPeriod::Total.bounds(NOV_27_2026_10H), (0, i64::MAX));
    }

    #[test]
    fn times_parse_as_users_write_them() {
        assert_eq!(parse_time("2026-11-27T10:00:00Z", 0), Ok(NOV_27_2026_10H));
        assert_eq!(
            parse_time("2026-11-27", 0),
            Ok(NOV_27_2026_10H - 10 * 3_600_000)
        );
        assert_eq!(
            parse_time("24h", NOV_27_2026_10H),
            Ok(NOV_27_2026_10H - 86_400_000)
        );
        assert_eq!(day(NOV_27_2026_10H), "2026-11-27");
        assert!(parse_time("yesterday", 0)
            .unwrap_err()
            .contains("2026-11-27"));
    }
}
