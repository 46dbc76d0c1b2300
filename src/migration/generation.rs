//! Which generation of HubSpot's API a path calls (`legacy-v3`, `2026-03`, `unversioned`), and
//! what HubSpot says about that generation on a given day: the one table of deadlines.

use std::borrow::Cow;

use super::calendar::Date;

/// The deadlines, from HubSpot's developer changelog (2026: "API versioning" and the v1-v4
/// retirement posts, https://developers.hubspot.com/changelog). Next year's dates are a change
/// here and nowhere else. Where HubSpot named only a month, the first of that month is used.
pub(crate) const SUNSET: Sunset = Sunset {
    // v1, v2 and v3 (with legacy public and private apps): unsupported in September 2027.
    // v4: unsupported on 2027-03-30.
    legacy_unsupported_from: [
        Date::new(2027, 9, 1),
        Date::new(2027, 9, 1),
        Date::new(2027, 9, 1),
        Date::new(2027, 3, 30),
    ],
    // The first date-versioned release (2026-03) is when v1-v4 got their published end dates.
    legacy_deprecated_from: Date::new(2026, 3, 1),
    // A dated version is "current" for 6 months after its month, and supported until 18.
    dated_current_months: 6,
    dated_unsupported_after_months: 18,
    // Our rule: a dated version is "deprecated" in its last 6 months (once two newer releases
    // are out), "supported" between. See README, "The migration report".
    dated_deprecated_window_months: 6,
    migration_guide: "https://developers.hubspot.com/changelog",
};

pub(crate) struct Sunset {
    pub(crate) legacy_unsupported_from: [Date; 4],
    pub(crate) legacy_deprecated_from: Date,
    pub(crate) dated_current_months: u32,
    pub(crate) dated_unsupported_after_months: u32,
    pub(crate) dated_deprecated_window_months: u32,
    pub(crate) migration_guide: &'static str,
}

/// HubSpot releases dated versions each March and September, from 2025 on; other `YYYY-MM`
/// segments are not versions (and would only grow the label set).
const DATED_YEARS: std::ops::RangeInclusive<u16> = 2025..=2040;
const DATED_MONTHS: [u8; 2] = [3, 9];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Generation {
    /// `v1`..`v4`.
    Legacy(u8),
    Dated {
        year: u16,
        month: u8,
        beta: bool,
    },
    Unversioned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum State {
    Current,
    Supported,
    Deprecated,
    Unsupported,
}

impl State {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            State::Current => "current",
            State::Supported => "supported",
            State::Deprecated => "deprecated",
            State::Unsupported => "unsupported",
        }
    }

    /// Callers of these should move; they get Deprecation/Sunset headers when enabled.
    pub(crate) fn needs_migration(self) -> bool {
        matches!(self, State::Deprecated | State::Unsupported)
    }
}

/// A generation's state on one day, with HubSpot's end date and when the state began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Support {
    pub(crate) state: State,
    pub(crate) unsupported_from: Option<Date>,
    /// When it became deprecated (for the `Deprecation` header); set when deprecated or later.
    pub(crate) deprecated_from: Option<Date>,
}

impl Generation {
    /// The version at the 2nd or the 3rd path segment (`/crm/v3/…`, `/crm/objects/2026-03/…`,
    /// `/integrators/timeline/v3/…`); the first one found counts.
    pub(crate) fn of_path(path: &str) -> Generation {
        path.trim_start_matches('/')
            .split('/')
            .skip(1)
            .take(2)
            .find_map(Generation::of_segment)
            .unwrap_or(Generation::Unversioned)
    }

    fn of_segment(segment: &str) -> Option<Generation> {
        match segment.as_bytes() {
            [b'v', d @ b'1'..=b'4'] => Some(Generation::Legacy(d - b'0')),
            [y @ .., b'-', m1, m2] | [y @ .., b'-', m1, m2, b'-', b'b', b'e', b't', b'a']
                if y.len() == 4 =>
            {
                let year: u16 = std::str::from_utf8(y).ok()?.parse().ok()?;
                let month = [m1, m2]
                    .iter()
                    .all(|b| b.is_ascii_digit())
                    .then(|| (m1 - b'0') * 10 + (m2 - b'0'))?;
                let valid = DATED_YEARS.contains(&year) && DATED_MONTHS.contains(&month);
                let beta = segment.ends_with("-beta");
                valid.then_some(Generation::Dated { year, month, beta })
            }
            _ => None,
        }
    }

    pub(crate) fn label(self) -> Cow<'static, str> {
        match self {
            Generation::Legacy(n) => Cow::Borrowed(
                ["legacy-v1", "legacy-v2", "legacy-v3", "legacy-v4"][usize::from(n - 1)],
            ),
            Generation::Dated { year, month, beta } => Cow::Owned(format!(
                "{year:04}-{month:02}{}",
                if beta { "-beta" } else { "" }
            )),
            Generation::Unversioned => Cow::Borrowed("unversioned"),
        }
    }

    /// HubSpot's word on this generation on `today`.
    pub(crate) fn support(self, today: Date) -> Support {
        match self {
            Generation::Legacy(n) => {
                let end = SUNSET.legacy_unsupported_from[usize::from(n - 1)];
                let deprecated = SUNSET.legacy_deprecated_from;
                let state = if today >= end {
                    State::Unsupported
                } else if today >= deprecated {
                    State::Deprecated
                } else {
                    State::Supported
                };
                Support {
                    state,
                    unsupported_from: Some(end),
                    deprecated_from: (state >= State::Deprecated).then_some(deprecated),
                }
            }
            // A beta follows the dates of its month's release.
            Generation::Dated { year, month, .. } => {
                let released = Date::new(i32::from(year), month, 1);
                let end = released.plus_months(SUNSET.dated_unsupported_after_months);
                let deprecated = released.plus_months(
                    SUNSET.dated_unsupported_after_months - SUNSET.dated_deprecated_window_months,
                );
                let state = if today >= end {
                    State::Unsupported
                } else if today >= deprecated {
                    State::Deprecated
                } else if today >= released.plus_months(SUNSET.dated_current_months) {
                    State::Supported
                } else {
                    State::Current
                };
                Support {
                    state,
                    unsupported_from: Some(end),
                    deprecated_from: (state >= State::Deprecated).then_some(deprecated),
                }
            }
            // No end date is published for unversioned paths (OAuth, files, …).
            Generation::Unversioned => Support {
                state: State::Supported,
                unsupported_from: None,
                deprecated_from: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen(path: &str) -> String {
        Generation::of_path(path).label().into_owned()
    }

    #[test]
    fn versions_at_the_second_or_third_segment() {
        assert_eq!(gen("/contacts/v1/lists/all/contacts/all"), "legacy-v1");
        assert_eq!(gen("/crm/v3/objects/contacts"), "legacy-v3");
        assert_eq!(gen("/crm/v4/associations/x"), "legacy-v4");
        assert_eq!(gen("/crm/objects/2026-03/contacts"), "2026-03");
        assert_eq!(gen("/crm/2026-09/objects/contacts"), "2026-09");
        assert_eq!(gen("/crm/objects/2026-09-beta/contacts"), "2026-09-beta");
        assert_eq!(gen("/integrators/timeline/v3/events"), "legacy-v3");
        assert_eq!(
            gen("/crm/objects/contacts/v3"),
            "unversioned",
            "4th segment"
        );
        assert_eq!(gen("/crm/v5/x"), "unversioned");
        assert_eq!(gen("/crm/objects/1999-03/x"), "unversioned");
        assert_eq!(gen("/crm/objects/2026-13/x"), "unversioned");
        assert_eq!(
            gen("/crm/objects/2026-04/x"),
            "unversioned",
            "not a release month"
        );
        assert_eq!(gen("/crm/objects/2041-03/x"), "unversioned");
        assert_eq!(gen("/crm/objects/2026-0a/x"), "unversioned");
        assert_eq!(gen("/crm/objects/2026-03-alpha/x"), "unversioned");
        assert_eq!(gen("/v1/x"), "unversioned", "the 1st segment is the family");
        assert_eq!(gen("/"), "unversioned");
        assert_eq!(gen(""), "unversioned");
    }

    fn state(path: &str, today: &str) -> (&'static str, Option<String>) {
        let s = Generation::of_path(path).support(Date::parse(today).unwrap());
        (s.state.as_str(), s.unsupported_from.map(|d| d.to_string()))
    }

    #[test]
    fn legacy_versions_follow_the_table() {
        let v1 = "/contacts/v1/x";
        let v4 = "/crm/v4/x";
        assert_eq!(
            state(v1, "2026-01-15"),
            ("supported", Some("2027-09-01".into()))
        );
        assert_eq!(
            state(v1, "2026-06-15"),
            ("deprecated", Some("2027-09-01".into()))
        );
        assert_eq!(state(v1, "2027-08-31").0, "deprecated");
        assert_eq!(state(v1, "2027-09-01").0, "unsupported");
        assert_eq!(
            state(v4, "2027-03-29"),
            ("deprecated", Some("2027-03-30".into()))
        );
        assert_eq!(
            state(v4, "2027-03-30"),
            ("unsupported", Some("2027-03-30".into()))
        );
        assert_eq!(state("/crm/v3/x", "2027-04-01").0, "deprecated");
    }

    #[test]
    fn dated_versions_age_from_their_month() {
        let p = "/crm/objects/2026-03/contacts";
        let end = Some("2027-09-01".to_string());
        assert_eq!(state(p, "2026-03-01"), ("current", end.clone()));
        assert_eq!(state(p, "2026-08-31"), ("current", end.clone()));
        assert_eq!(state(p, "2026-09-01"), ("supported", end.clone()));
        assert_eq!(state(p, "2027-02-28"), ("supported", end.clone()));
        assert_eq!(state(p, "2027-03-01"), ("deprecated", end.clone()));
        assert_eq!(state(p, "2027-09-01"), ("unsupported", end));
        assert_eq!(
            state("/crm/objects/2026-09-beta/x", "2026-10-01"),
            ("current", Some("2028-03-01".into()))
        );
        // A version not yet released (a client ahead of the table) is current.
        assert_eq!(state("/crm/objects/2027-03/x", "2026-10-01").0, "current");
        assert_eq!(state("/crm/objects/x", "2030-01-01"), ("supported", None));
    }

    #[test]
    fn deprecation_dates_only_when_deprecated() {
        let today = Date::new(2027, 4, 1);
        let s = Generation::Legacy(4).support(today);
        assert_eq!(s.deprecated_from, Some(Date::new(2026, 3, 1)));
        let dated = Generation::Dated {
            year: 2026,
            month: 3,
            beta: false,
        };
        assert_eq!(
            dated.support(today).deprecated_from,
            Some(Date::new(2027, 3, 1))
        );
        assert_eq!(dated.support(Date::new(2026, 4, 1)).deprecated_from, None);
    }
}
