//! consul-template's `timestamp` and confd's `datetime`: the current time
//! formatted with Go's reference-time layouts ("2006-01-02T15:04:05Z07:00").
//! consul-template's `now` is UTC; confd's `time.Now` is the host's local
//! time, found as Go finds it (`tz`).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Object, Value};
use minijinja::{Environment, Error, ErrorKind, State};

use super::tz::{self, Offset};

pub(super) fn register(env: &mut Environment<'static>) {
    env.add_function("timestamp", |layout: Option<String>| {
        let t = Instant::now()?.utc();
        Ok::<_, Error>(match layout.as_deref() {
            None => format(&t, RFC3339),
            Some("unix") => t.secs.to_string(),
            Some(layout) => format(&t, layout),
        })
    });
    env.add_function("datetime", || {
        Ok::<_, Error>(Value::from_object(Instant::now()?.local()))
    });
}

const RFC3339: &str = "2006-01-02T15:04:05Z07:00";

/// A moment: seconds since the Unix epoch and nanoseconds, in a zone.
#[derive(Debug, Clone)]
struct Instant {
    secs: i64,
    nanos: u32,
    zone: Offset,
}

impl Instant {
    fn now() -> Result<Instant, Error> {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Error::new(ErrorKind::InvalidOperation, "the clock is before 1970"))?;
        let secs = i64::try_from(since.as_secs())
            .map_err(|_| Error::new(ErrorKind::InvalidOperation, "the clock is out of range"))?;
        Ok(Instant {
            secs,
            nanos: since.subsec_nanos(),
            zone: Offset::utc(),
        })
    }

    fn utc(self) -> Instant {
        Instant {
            zone: Offset::utc(),
            ..self
        }
    }

    fn local(self) -> Instant {
        Instant {
            zone: tz::local_at(self.secs),
            ..self
        }
    }
}

/// `datetime()` prints as Go prints a time.Time (without the monotonic
/// clock reading), and has Go's `Format(layout)`, `Unix()`, `UTC()` and
/// `Local()` methods.
impl Object for Instant {
    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        match (method, args) {
            ("Format", [layout]) => {
                let layout = layout.as_str().ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        "Format: the layout is a string",
                    )
                })?;
                Ok(Value::from(format(self, layout)))
            }
            ("Unix", []) => Ok(Value::from(self.secs)),
            ("UTC", []) => Ok(Value::from_object(Instant::clone(self).utc())),
            ("Local", []) => Ok(Value::from_object(Instant::clone(self).local())),
            _ => Err(Error::new(
                ErrorKind::UnknownMethod,
                format!("datetime has Format(layout), Unix(), UTC() and Local(), not {method}"),
            )),
        }
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result
    where
        Self: Sized + 'static,
    {
        f.write_str(&format(self, "2006-01-02 15:04:05.999999999 -0700 MST"))
    }
}

/// The calendar fields of an instant, in UTC.
struct Civil {
    year: i64,
    month: usize,
    day: i64,
    yday: i64,
    weekday: usize,
    hour: i64,
    min: i64,
    sec: i64,
}

fn civil(secs: i64) -> Civil {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    const BEFORE: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let month = usize::try_from(month).unwrap_or(1);
    let yday = BEFORE[month - 1] + day + i64::from(leap && month > 2);
    Civil {
        year,
        month,
        day,
        yday,
        // 1970-01-01 was a Thursday.
        weekday: usize::try_from((days + 4).rem_euclid(7)).unwrap_or(0),
        hour: rem / 3600,
        min: rem % 3600 / 60,
        sec: rem % 60,
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// The layout elements Go's time.Format knows, longest first where one is
/// a prefix of another; `None` for a plain character.
fn element(rest: &str) -> Option<&'static str> {
    const ELEMENTS: &[&str] = &[
        "January",
        "Jan",
        "Monday",
        "Mon",
        "MST",
        "2006",
        "2",
        "_2006",
        "__2",
        "_2",
        "002",
        "01",
        "02",
        "03",
        "04",
        "05",
        "06",
        "15",
        "1",
        "3",
        "4",
        "5",
        "PM",
        "pm",
        "-07:00:00",
        "-070000",
        "-07:00",
        "-0700",
        "-07",
        "Z07:00:00",
        "Z070000",
        "Z07:00",
        "Z0700",
        "Z07",
    ];
    let lower_follows = |n: usize| rest[n..].starts_with(|c: char| c.is_ascii_lowercase());
    let found = ELEMENTS.iter().find(|e| rest.starts_with(**e)).copied()?;
    match found {
        // "Jan" and "Mon" count only when no lower-case letter follows.
        "Jan" | "Mon" if lower_follows(3) => None,
        // "_2006" is a literal "_" then the year.
        "_2006" => None,
        _ => Some(found),
    }
}

/// Go's time.Format, in the instant's zone.
fn format(t: &Instant, layout: &str) -> String {
    let c = civil(t.secs + t.zone.secs);
    let mut out = String::new();
    let mut i = 0;
    while i < layout.len() {
        let rest = &layout[i..];
        if let Some((text, used)) = fraction(rest, t.nanos) {
            out.push_str(&text);
            i += used;
            continue;
        }
        let Some(e) = element(rest) else {
            let ch = rest.chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
            continue;
        };
        let h12 = if c.hour % 12 == 0 { 12 } else { c.hour % 12 };
        let _ = match e {
            "January" => write!(out, "{}", MONTHS[c.month - 1]),
            "Jan" => write!(out, "{}", &MONTHS[c.month - 1][..3]),
            "Monday" => write!(out, "{}", DAYS[c.weekday]),
            "Mon" => write!(out, "{}", &DAYS[c.weekday][..3]),
            "MST" => write!(out, "{}", zone_name(&t.zone)),
            "2006" => write!(out, "{:04}", c.year),
            "06" => write!(out, "{:02}", c.year.rem_euclid(100)),
            "01" => write!(out, "{:02}", c.month),
            "1" => write!(out, "{}", c.month),
            "02" => write!(out, "{:02}", c.day),
            "_2" => write!(out, "{:>2}", c.day),
            "2" => write!(out, "{}", c.day),
            "002" => write!(out, "{:03}", c.yday),
            "__2" => write!(out, "{:>3}", c.yday),
            "15" => write!(out, "{:02}", c.hour),
            "03" => write!(out, "{h12:02}"),
            "3" => write!(out, "{h12}"),
            "04" => write!(out, "{:02}", c.min),
            "4" => write!(out, "{}", c.min),
            "05" => write!(out, "{:02}", c.sec),
            "5" => write!(out, "{}", c.sec),
            "PM" => write!(out, "{}", if c.hour >= 12 { "PM" } else { "AM" }),
            "pm" => write!(out, "{}", if c.hour >= 12 { "pm" } else { "am" }),
            // The Z forms print "Z" for UTC.
            z if z.starts_with('Z') && t.zone.secs == 0 => write!(out, "Z"),
            numeric => write!(out, "{}", offset(t.zone.secs, numeric)),
        };
        i += e.len();
    }
    out
}

/// Go's "MST": the abbreviation, or `-0700` when the zone has none.
fn zone_name(zone: &Offset) -> String {
    if zone.abbr.is_empty() {
        offset(zone.secs, "-0700")
    } else {
        zone.abbr.clone()
    }
}

/// An offset as a numeric layout element (`-07:00:00`, `Z0700`, `-07` …)
/// writes it: sign, hours, then minutes and seconds as the element has
/// them, with its colons.
fn offset(secs: i64, element: &str) -> String {
    let form = element.trim_start_matches(['-', 'Z']);
    let sign = if secs < 0 { '-' } else { '+' };
    let abs = secs.abs();
    let (h, m, s) = (abs / 3600, abs / 60 % 60, abs % 60);
    match form {
        "07:00:00" => format!("{sign}{h:02}:{m:02}:{s:02}"),
        "070000" => format!("{sign}{h:02}{m:02}{s:02}"),
        "07:00" => format!("{sign}{h:02}:{m:02}"),
        "0700" => format!("{sign}{h:02}{m:02}"),
        _ => format!("{sign}{h:02}"),
    }
}

/// `.000` (fixed digits) or `.999` (trailing zeros and a bare dot dropped),
/// also with `,`, when no digit follows.
fn fraction(rest: &str, nanos: u32) -> Option<(String, usize)> {
    let mut chars = rest.chars();
    let sep = chars.next().filter(|c| *c == '.' || *c == ',')?;
    let digit = chars.next().filter(|c| *c == '0' || *c == '9')?;
    let n = 1 + rest[2..].chars().take_while(|c| *c == digit).count();
    if rest[1 + n..].starts_with(|c: char| c.is_ascii_digit()) || n > 9 {
        return None;
    }
    let all = format!("{nanos:09}");
    let digits = &all[..n];
    let text = if digit == '0' {
        format!("{sep}{digits}")
    } else {
        let trimmed = digits.trim_end_matches('0');
        if trimmed.is_empty() {
            String::new()
        } else {
            format!("{sep}{trimmed}")
        }
    };
    Some((text, 1 + n))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Go's reference time, Mon Jan 2 15:04:05 MST 2006, is 22:04:05 UTC.
    fn at(secs: i64, nanos: u32, zone: (i64, &str)) -> Instant {
        Instant {
            secs,
            nanos,
            zone: Offset {
                secs: zone.0,
                abbr: zone.1.into(),
            },
        }
    }

    #[test]
    fn layouts_format_as_go_formats_them() {
        let reference = at(1_136_239_445, 120_000_000, (0, "UTC"));
        assert_eq!(format(&reference, RFC3339), "2006-01-02T22:04:05Z");
        assert_eq!(
            format(&reference, "Mon Jan _2 15:04:05 2006"),
            "Mon Jan  2 22:04:05 2006"
        );
        assert_eq!(
            format(
                &reference,
                "Monday, 02-January-06 03:04:05.000 PM -0700 MST"
            ),
            "Monday, 02-January-06 10:04:05.120 PM +0000 UTC"
        );
        assert_eq!(
            format(&reference, "2006-01-02 15:04:05.999999999"),
            "2006-01-02 22:04:05.12"
        );
        assert_eq!(
            format(&reference, "002 __2 1/2 3:4:5 pm"),
            "002   2 1/2 10:4:5 pm"
        );
        // Not elements: "Jane" and "Month" stay text, as in Go.
        assert_eq!(format(&reference, "Jane Month"), "Jane Month");
        assert_eq!(
            format(&at(951_782_400, 0, (0, "UTC")), "2006-01-02 Mon 002 .999"),
            "2000-02-29 Tue 060 "
        );
    }

    #[test]
    fn a_zone_shifts_the_clock_and_names_itself() {
        // Go's reference time, in its own zone.
        let t = at(1_136_239_445, 0, (-7 * 3600, "MST"));
        assert_eq!(
            format(
                &t,
                "2006-01-02 15:04:05 MST -0700 -07:00 -07 Z07:00 Z0700 -07:00:00"
            ),
            "2006-01-02 15:04:05 MST -0700 -07:00 -07 -07:00 -0700 -07:00:00"
        );
        let india = at(1_136_239_445, 0, (19_800, ""));
        assert_eq!(
            format(&india, "15:04 MST Z07:00 -070000"),
            "03:34 +0530 +05:30 +053000"
        );
        let utc = at(0, 0, (0, "UTC"));
        assert_eq!(format(&utc, "Z07:00 Z0700 Z07 -07:00"), "Z Z Z +00:00");
    }
}
