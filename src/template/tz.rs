//! The host's time zone as Go's `time.Local` finds it, for confd's
//! `datetime` (Go's `time.Now()`, local time): `$TZ` unset is
//! /etc/localtime, `$TZ=""` is UTC, `$TZ=/path` or `$TZ=:/path` that file,
//! `$TZ=Area/City` that zone under $ZONEINFO or /usr/share/zoneinfo; a zone
//! that cannot be loaded is UTC, as in Go. The TZif file is read as Go
//! reads it, its footer (`CET-1CEST,M3.5.0,M10.5.0/3`) included for times
//! after the last transition.

use std::sync::OnceLock;

/// A zone at one moment: seconds east of UTC and the abbreviation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Offset {
    pub(super) secs: i64,
    pub(super) abbr: String,
}

impl Offset {
    pub(super) fn utc() -> Offset {
        Offset {
            secs: 0,
            abbr: "UTC".into(),
        }
    }
}

/// The local zone's offset at `secs` since the epoch. The zone is loaded
/// once per process, as Go loads `time.Local` once.
pub(super) fn local_at(secs: i64) -> Offset {
    static LOCAL: OnceLock<Option<Zone>> = OnceLock::new();
    LOCAL
        .get_or_init(load_local)
        .as_ref()
        .map_or_else(Offset::utc, |z| z.at(secs))
}

fn load_local() -> Option<Zone> {
    let read = |path: &std::path::Path| std::fs::read(path).ok().and_then(|d| parse(&d));
    let Some(tz) = std::env::var_os("TZ") else {
        return read("/etc/localtime".as_ref());
    };
    let tz = tz.to_str()?;
    let tz = tz.strip_prefix(':').unwrap_or(tz);
    if tz.starts_with('/') {
        return read(tz.as_ref());
    }
    if tz.is_empty() || tz == "UTC" {
        return None;
    }
    let dirs = std::env::var_os("ZONEINFO").into_iter().chain(
        [
            "/usr/share/zoneinfo/",
            "/usr/share/lib/zoneinfo/",
            "/usr/lib/locale/TZ/",
            "/etc/zoneinfo/",
        ]
        .map(Into::into),
    );
    dirs.filter(|d| !d.is_empty())
        .find_map(|d| read(&std::path::Path::new(&d).join(tz)))
}

/// A TZif file: transitions, zone types and the footer rule.
#[derive(Debug)]
struct Zone {
    /// (when, index into `types`), sorted.
    transitions: Vec<(i64, usize)>,
    types: Vec<(Offset, bool)>,
    footer: String,
}

impl Zone {
    /// Go's Location.lookup.
    fn at(&self, secs: i64) -> Offset {
        if self.types.is_empty() {
            return Offset::utc();
        }
        let first = self.transitions.first().map_or(i64::MIN, |t| t.0);
        if secs < first {
            return self.types[self.first_type()].0.clone();
        }
        let i = self.transitions.partition_point(|t| t.0 <= secs) - 1;
        if i + 1 == self.transitions.len() && !self.footer.is_empty() {
            if let Some(o) = tzset(&self.footer, secs) {
                return o;
            }
        }
        self.types[self.transitions[i].1].0.clone()
    }

    /// Go's lookupFirstZone: the zone before the first transition.
    fn first_type(&self) -> usize {
        if !self.transitions.iter().any(|t| t.1 == 0) {
            return 0;
        }
        if let Some(&(_, first)) = self.transitions.first() {
            if self.types[first].1 {
                if let Some(i) = (0..first).rev().find(|&i| !self.types[i].1) {
                    return i;
                }
            }
        }
        self.types.iter().position(|t| !t.1).unwrap_or(0)
    }
}

/// Reads big-endian numbers off a byte slice; `None` past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn int(&mut self, n: usize) -> Option<i64> {
        let b = self.take(n)?;
        Some(match n {
            4 => i64::from(i32::from_be_bytes(b.try_into().ok()?)),
            _ => i64::from_be_bytes(b.try_into().ok()?),
        })
    }

    /// The header's six counts: isutcnt, isstdcnt, leapcnt, timecnt,
    /// typecnt, charcnt.
    fn header(&mut self) -> Option<(u8, [usize; 6])> {
        let head = self.take(44)?;
        if &head[..4] != b"TZif" {
            return None;
        }
        let mut counts = [0; 6];
        for (i, c) in counts.iter_mut().enumerate() {
            let at = 20 + 4 * i;
            *c = usize::try_from(u32::from_be_bytes(head[at..at + 4].try_into().ok()?)).ok()?;
        }
        Some((head[4], counts))
    }
}

/// Parses a TZif file (RFC 8536); from version 2 on, the 64-bit data and
/// the footer.
fn parse(data: &[u8]) -> Option<Zone> {
    let mut r = Reader(data);
    let (version, mut n) = r.header()?;
    let mut size = 4;
    if version >= b'2' {
        let [isut, isstd, leap, time, types, chars] = n;
        r.take(time * 5 + types * 6 + chars + leap * 8 + isstd + isut)?;
        n = r.header()?.1;
        size = 8;
    }
    let [isut, isstd, leap, time, types, chars] = n;
    let mut whens = Vec::new();
    for _ in 0..time {
        whens.push(r.int(size)?);
    }
    let indices = r.take(time)?;
    let mut raw = Vec::new();
    for _ in 0..types {
        let off = r.int(4)?;
        let t = r.take(2)?;
        raw.push((off, t[0] != 0, usize::from(t[1])));
    }
    let abbrs = r.take(chars)?;
    r.take(leap * (size + 4) + isstd + isut)?;
    let types: Vec<(Offset, bool)> = raw
        .into_iter()
        .map(|(secs, dst, at)| {
            let name = abbrs.get(at..).unwrap_or_default();
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            let abbr = String::from_utf8_lossy(&name[..end]).into_owned();
            (Offset { secs, abbr }, dst)
        })
        .collect();
    let mut transitions = Vec::new();
    for (when, &i) in whens.into_iter().zip(indices) {
        let i = usize::from(i);
        if i >= types.len() {
            return None;
        }
        transitions.push((when, i));
    }
    // A zone without transitions (Etc/GMT-3) is its first type, or its
    // footer, at every time, as Go gives it.
    if transitions.is_empty() {
        transitions.push((i64::MIN, 0));
    }
    let footer = if version >= b'2' {
        let rest = String::from_utf8_lossy(r.0);
        rest.strip_prefix('\n')
            .and_then(|f| f.split('\n').next())
            .unwrap_or_default()
            .to_string()
    } else {
        String::new()
    };
    Some(Zone {
        transitions,
        types,
        footer,
    })
}

const DAY: i64 = 86_400;

/// A POSIX TZ rule's start or end: `Jn`, `n` or `Mm.w.d`, and the time
/// of day (seconds, default 02:00).
#[derive(Debug, Clone, Copy)]
enum Rule {
    Julian(i64, i64),
    DayOfYear(i64, i64),
    MonthWeekDay {
        mon: i64,
        week: i64,
        day: i64,
        time: i64,
    },
}

/// Go's tzset: the zone the footer rule gives at `secs`.
fn tzset(s: &str, secs: i64) -> Option<Offset> {
    let (std_name, s) = tz_name(s)?;
    let (std_off, s) = tz_offset(s)?;
    let std = Offset {
        secs: -std_off,
        abbr: std_name.to_string(),
    };
    if s.is_empty() || s.starts_with(',') {
        return Some(std);
    }
    let (dst_name, mut s) = tz_name(s)?;
    let dst_secs = if s.is_empty() || s.starts_with(',') {
        std.secs + 3600
    } else {
        let (off, rest) = tz_offset(s)?;
        s = rest;
        -off
    };
    let dst = Offset {
        secs: dst_secs,
        abbr: dst_name.to_string(),
    };
    let s = if s.is_empty() { ",M3.2.0,M11.1.0" } else { s };
    let s = s.strip_prefix([',', ';'])?;
    let (start, s) = tz_rule(s)?;
    let (end, s) = tz_rule(s.strip_prefix(',')?)?;
    if !s.is_empty() {
        return None;
    }
    let (year, yday) = year_and_day(secs);
    let ysec = yday * DAY + secs.rem_euclid(DAY);
    let mut start_sec = rule_time(year, start, std.secs);
    let mut end_sec = rule_time(year, end, dst.secs);
    let (mut std, mut dst) = (std, dst);
    // Southern hemisphere: the "DST" rule ends before it starts.
    if end_sec < start_sec {
        std::mem::swap(&mut start_sec, &mut end_sec);
        std::mem::swap(&mut std, &mut dst);
    }
    Some(if ysec < start_sec || ysec >= end_sec {
        std
    } else {
        dst
    })
}

fn tz_name(s: &str) -> Option<(&str, &str)> {
    if let Some(quoted) = s.strip_prefix('<') {
        let end = quoted.find('>')?;
        return Some((&quoted[..end], &quoted[end + 1..]));
    }
    let end = s
        .find(|c: char| c.is_ascii_digit() || matches!(c, ',' | '-' | '+'))
        .unwrap_or(s.len());
    (end >= 3).then(|| s.split_at(end))
}

/// `[+-]hh[:mm[:ss]]` in seconds, as written (west of UTC positive).
fn tz_offset(s: &str) -> Option<(i64, &str)> {
    let (neg, s) = match s.as_bytes().first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let (hours, mut s) = tz_num(s, 0, 24 * 7)?;
    let mut off = hours * 3600;
    for unit in [60, 1] {
        let Some(rest) = s.strip_prefix(':') else {
            break;
        };
        let (n, rest) = tz_num(rest, 0, 59)?;
        off += n * unit;
        s = rest;
    }
    Some((if neg { -off } else { off }, s))
}

fn tz_num(s: &str, min: i64, max: i64) -> Option<(i64, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 || end > 4 {
        return None;
    }
    let n: i64 = s[..end].parse().ok()?;
    (min..=max).contains(&n).then_some((n, &s[end..]))
}

fn tz_rule(s: &str) -> Option<(Rule, &str)> {
    let (kind, s) = if let Some(rest) = s.strip_prefix('J') {
        let (day, rest) = tz_num(rest, 1, 365)?;
        ((0, day, 0, 0), rest)
    } else if let Some(rest) = s.strip_prefix('M') {
        let (mon, rest) = tz_num(rest, 1, 12)?;
        let (week, rest) = tz_num(rest.strip_prefix('.')?, 1, 5)?;
        let (day, rest) = tz_num(rest.strip_prefix('.')?, 0, 6)?;
        ((2, day, week, mon), rest)
    } else {
        let (day, rest) = tz_num(s, 0, 365)?;
        ((1, day, 0, 0), rest)
    };
    let (time, s) = match s.strip_prefix('/') {
        Some(rest) => tz_offset(rest)?,
        None => (2 * 3600, s),
    };
    let rule = match kind {
        (0, day, _, _) => Rule::Julian(day, time),
        (1, day, _, _) => Rule::DayOfYear(day, time),
        (_, day, week, mon) => Rule::MonthWeekDay {
            mon,
            week,
            day,
            time,
        },
    };
    Some((rule, s))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// The year of `secs` (UTC) and the day in it, from 0.
fn year_and_day(secs: i64) -> (i64, i64) {
    let days = secs.div_euclid(DAY);
    // Howard Hinnant's days-to-civil, for the year; the day of the year
    // is counted from its 1 January.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let year = yoe + era * 400 + i64::from(mp >= 10);
    (year, days - days_before_year(year))
}

/// Days from 1970-01-01 to 1 January of `year`.
fn days_before_year(year: i64) -> i64 {
    let y = year - 1;
    365 * (year - 1970) + (y / 4 - y / 100 + y / 400) - (1969 / 4 - 1969 / 100 + 1969 / 400)
}

/// Go's tzruleTime: seconds from the start of `year` (UTC) to the rule's
/// moment, given the offset in force before it.
fn rule_time(year: i64, rule: Rule, off: i64) -> i64 {
    const BEFORE: [i64; 13] = [0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let (s, time) = match rule {
        Rule::Julian(day, time) => (
            (day - 1) * DAY + if is_leap(year) && day >= 60 { DAY } else { 0 },
            time,
        ),
        Rule::DayOfYear(day, time) => (day * DAY, time),
        Rule::MonthWeekDay {
            mon,
            week,
            day,
            time,
        } => {
            // Zeller's congruence: the weekday of the month's first day.
            let m1 = (mon + 9) % 12 + 1;
            let yy0 = if mon <= 2 { year - 1 } else { year };
            let (yy1, yy2) = (yy0 / 100, yy0 % 100);
            let dow = ((26 * m1 - 2) / 10 + 1 + yy2 + yy2 / 4 + yy1 / 4 - 2 * yy1).rem_euclid(7);
            let mut d = (day - dow).rem_euclid(7);
            let idx = usize::try_from(mon).unwrap_or(1);
            let days_in = if mon == 12 {
                31
            } else {
                BEFORE[idx + 1] - BEFORE[idx]
            } + i64::from(mon == 2 && is_leap(year));
            for _ in 1..week {
                if d + 7 >= days_in {
                    break;
                }
                d += 7;
            }
            d += BEFORE[idx] + i64::from(is_leap(year) && mon > 2);
            (d * DAY, time)
        }
    };
    s + time - off
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_rules_give_summer_and_winter_time() {
        let paris = "CET-1CEST,M3.5.0,M10.5.0/3";
        // 2026-07-01 12:00 UTC and 2026-01-15 12:00 UTC.
        let summer = tzset(paris, 1_782_907_200).unwrap();
        assert_eq!((summer.secs, summer.abbr.as_str()), (7200, "CEST"));
        let winter = tzset(paris, 1_768_478_400).unwrap();
        assert_eq!((winter.secs, winter.abbr.as_str()), (3600, "CET"));
        // 2026-03-29 00:59:59 and 01:00:00 UTC: the switch in Paris.
        assert_eq!(tzset(paris, 1_774_745_999).unwrap().abbr, "CET");
        assert_eq!(tzset(paris, 1_774_746_000).unwrap().abbr, "CEST");
        // Southern hemisphere, and a quoted numeric name.
        let sydney = "AEST-10AEDT,M10.1.0,M4.1.0/3";
        assert_eq!(tzset(sydney, 1_768_478_400).unwrap().abbr, "AEDT");
        assert_eq!(tzset(sydney, 1_782_907_200).unwrap().abbr, "AEST");
        let fixed = tzset("<+0530>-5:30", 0).unwrap();
        assert_eq!((fixed.secs, fixed.abbr.as_str()), (19_800, "+0530"));
        assert_eq!(tzset("X", 0), None);
    }

    #[test]
    fn year_and_day_of_the_year() {
        assert_eq!(year_and_day(0), (1970, 0));
        assert_eq!(year_and_day(951_782_400), (2000, 59));
        assert_eq!(year_and_day(-1), (1969, 364));
        assert_eq!(days_before_year(2000), 10_957);
    }

    #[test]
    fn a_tzif_file_with_transitions_and_a_footer() {
        // Version 2: one transition at 1000 to type 1 (+3600 "B", DST),
        // type 0 (0, "A"), footer "A0".
        let mut v2 = Vec::new();
        let header = |time: u32, types: u32, chars: u32| {
            let mut h = b"TZif2".to_vec();
            h.extend([0; 15]);
            for n in [0, 0, 0, time, types, chars] {
                h.extend(u32::to_be_bytes(n));
            }
            h
        };
        v2.extend(header(0, 1, 2));
        v2.extend([0, 0, 0, 0, 0, 0, b'A', 0]);
        v2.extend(header(1, 2, 4));
        v2.extend(1000_i64.to_be_bytes());
        v2.push(1);
        v2.extend([0, 0, 0, 0, 0, 0]);
        v2.extend([0, 0, 0x0e, 0x10, 1, 2]);
        v2.extend(b"A\0B\0");
        v2.extend(b"\nA0\n");
        let zone = parse(&v2).unwrap();
        assert_eq!(
            zone.at(999),
            Offset {
                secs: 0,
                abbr: "A".into()
            }
        );
        // After the last transition the footer rules, unless Go cannot
        // read it ("A0": a name has three letters at least).
        assert_eq!(
            zone.at(1000),
            Offset {
                secs: 3600,
                abbr: "B".into()
            }
        );
        assert!(parse(&v2[..60]).is_none());
    }
}
