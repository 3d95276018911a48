//! Calendar periods (UTC day, ISO week, month) for quotas: which period `now` is in and when it ends.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::limit_rules::Period;

/// The period containing `now_us`: an id used in bucket keys (`2026-11-22`, `w2026-11-16`,
/// `2026-11`) and its end in µs since the epoch.
pub(crate) fn period_bounds(period: Period, now_us: u64) -> (String, u64) {
    let fallback_day = || {
        let day = 86_400_000_000u64;
        (format!("d{}", now_us / day), (now_us / day + 1) * day)
    };
    let Some(date) = i64::try_from(now_us)
        .ok()
        .and_then(|us| Timestamp::from_microsecond(us).ok())
        .map(|ts| ts.to_zoned(TimeZone::UTC).date())
    else {
        return fallback_day();
    };
    let bounds = match period {
        Period::Day => date.tomorrow().ok().map(|end| (date.to_string(), end)),
        Period::Week => {
            let back = i64::from(date.weekday().to_monday_zero_offset());
            date.checked_sub(back.days())
                .ok()
                .and_then(|monday| Some((format!("w{monday}"), monday.checked_add(7.days()).ok()?)))
        }
        Period::Month => date
            .last_of_month()
            .tomorrow()
            .ok()
            .map(|end| (format!("{:04}-{:02}", date.year(), date.month()), end)),
    };
    match bounds.and_then(|(id, end)| Some((id, midnight_us(end)?))) {
        Some(b) => b,
        None => fallback_day(),
    }
}

fn midnight_us(date: Date) -> Option<u64> {
    let ts = date.to_zoned(TimeZone::UTC).ok()?.timestamp();
    u64::try_from(ts.as_microsecond()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(text: &str) -> u64 {
        u64::try_from(text.parse::<Timestamp>().unwrap().as_microsecond()).unwrap()
    }

    #[test]
    fn day_week_month_bounds_in_utc() {
        let now = us("2026-11-22T20:43:14Z"); // a Sunday
        assert_eq!(
            period_bounds(Period::Day, now),
            ("2026-11-22".to_owned(), us("2026-11-23T00:00:00Z"))
        );
        assert_eq!(
            period_bounds(Period::Week, now),
            ("w2026-11-16".to_owned(), us("2026-11-23T00:00:00Z"))
        );
        assert_eq!(
            period_bounds(Period::Month, now),
            ("2026-11".to_owned(), us("2026-12-01T00:00:00Z"))
        );
        let monday = us("2026-11-23T00:00:00Z");
        assert_eq!(period_bounds(Period::Week, monday).0, "w2026-11-23");
        let dec = us("2026-12-31T23:59:59Z");
        assert_eq!(
            period_bounds(Period::Month, dec),
            ("2026-12".to_owned(), us("2027-01-01T00:00:00Z"))
        );
    }
}
