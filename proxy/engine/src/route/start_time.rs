//! `%START_TIME(format)%`: Envoy's `DateFormatter`. The format is cut where Envoy's own
//! specifiers stand (`%s` the Unix time in seconds; `%f`, `%1f`..`%9f`, `%*f`, `%E1f`..`%E9f`,
//! `%E*f` the fraction of the second in that many digits, `*` without trailing zeros but at
//! least one; `%E1S`..`%E9S`, `%E*S` the seconds with a dot and the fraction, `%E*S` without
//! the dot when the fraction is zero); the text between is Abseil's `FormatTime` in UTC, the C
//! library's `strftime` in the C locale plus `%Ez` / `%E*z` (`+00:00`, `+00:00:00`), `%E4Y` and
//! `%ET` (`T`), `%c`, `%x`, `%X`, `%r` as the C locale spells them (Envoy never sets one), and
//! glibc's `-`, `_`, `0`, `^` flags. Conversions `strftime` lacks are refused at load, naming
//! them.

use std::{fmt::Write, time::SystemTime};

use jiff::{tz::TimeZone, Timestamp};

/// A compiled `%START_TIME(...)%` format.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StartTimeFormat {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    /// `strftime` text, in jiff's spelling.
    Text(String),
    /// `%s`.
    UnixSeconds,
    /// A fraction of the second: `digits` 1..=9, or `None` for `*` (trailing zeros dropped).
    /// `dot`: `%E#S` / `%E*S` (a dot before the digits, nothing when `*` leaves none), else at
    /// least one digit.
    Fraction { digits: Option<u8>, dot: bool },
}

/// The `strftime` conversions jiff writes as glibc does in the C locale.
const PLAIN: &str = "YmdeHMSyCjaAbhBpPIlkTDFRzZuwntGgVUW%";

impl StartTimeFormat {
    /// Compiles `format` (the text inside the parentheses); `Err` names what is refused.
    pub fn parse(format: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut text = String::new();
        let b = format.as_bytes();
        let (mut i, mut start) = (0, 0);
        while i < b.len() {
            let Some((seg, len, seconds_first)) = envoy_specifier(&b[i..]) else {
                i += 1;
                continue;
            };
            text.push_str(&format[start..i]);
            if seconds_first {
                text.push_str("%S");
            }
            if !text.is_empty() {
                segments.push(Segment::Text(strftime(&text, format)?));
                text.clear();
            }
            segments.push(seg);
            i += len;
            start = i;
        }
        if start < b.len() {
            segments.push(Segment::Text(strftime(&format[start..], format)?));
        }
        Ok(Self { segments })
    }

    /// `t` in this format (UTC).
    pub fn render(&self, t: SystemTime, out: &mut String) {
        let Ok(ts) = Timestamp::try_from(t) else {
            return;
        };
        let zoned = ts.to_zoned(TimeZone::UTC);
        // Envoy's clock reads microseconds: `%f` ends in `000`, `%*f` has at most 6 digits.
        let nanos = ts.subsec_nanosecond().unsigned_abs() / 1000 * 1000;
        for s in &self.segments {
            match s {
                Segment::Text(f) => {
                    let _ = write!(out, "{}", zoned.strftime(f));
                }
                Segment::UnixSeconds => {
                    let _ = write!(out, "{}", ts.as_second());
                }
                Segment::Fraction { digits, dot } => fraction(nanos, *digits, *dot, out),
            }
        }
    }
}

/// Envoy's specifier at the start of `b` (its pattern `%[1-9*]?f|%s|%E[1-9*][Sf]`): the
/// segment, its length, and whether the seconds go before it (`%E#S`).
fn envoy_specifier(b: &[u8]) -> Option<(Segment, usize, bool)> {
    let width = |c: u8| match c {
        b'1'..=b'9' => Some(Some(c - b'0')),
        b'*' => Some(None),
        _ => None,
    };
    match b {
        [b'%', b'E', w, k @ (b'S' | b'f'), ..] => {
            let digits = width(*w)?;
            let dot = *k == b'S';
            Some((Segment::Fraction { digits, dot }, 4, dot))
        }
        [b'%', b's', ..] => Some((Segment::UnixSeconds, 2, false)),
        [b'%', b'f', ..] => {
            let seg = Segment::Fraction {
                digits: Some(9),
                dot: false,
            };
            Some((seg, 2, false))
        }
        [b'%', w, b'f', ..] => {
            let digits = width(*w)?;
            Some((Segment::Fraction { digits, dot: false }, 3, false))
        }
        _ => None,
    }
}

/// Abseil's `FormatTime` text in jiff's spelling; `Err` names a specifier not supported.
fn strftime(text: &str, whole: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    let refuse =
        |spec: &str| {
            format!(
            "%START_TIME({whole})%: {spec} is not supported (supported: %s, %f, %1f..%9f, %*f, \
             %E1S..%E9S, %E*S, %E1f..%E9f, %E*f, %Ez, %E*z, %E4Y, %ET, %c, %x, %X, %r and %{}, \
             the last ones also with a -, _, 0 or ^ flag)",
            PLAIN.chars().map(String::from).collect::<Vec<_>>().join(", %")
        )
        };
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            // A lone `%` at the end stays (strftime writes it).
            None => out.push_str("%%"),
            Some('E') => match (chars.next(), chars.clone().next()) {
                (Some('z'), _) => out.push_str("%:z"),
                (Some('*'), Some('z')) => {
                    chars.next();
                    out.push_str("%::z");
                }
                (Some('4'), Some('Y')) => {
                    chars.next();
                    out.push_str("%Y");
                }
                (Some('T'), _) => out.push('T'),
                (Some(n), _) => return Err(refuse(&format!("%E{n}"))),
                (None, _) => return Err(refuse("%E")),
            },
            Some(n) if PLAIN.contains(n) => {
                out.push('%');
                out.push(n);
            }
            // The C locale's spellings (Envoy never sets a locale).
            Some('c') => out.push_str("%a %b %e %H:%M:%S %Y"),
            Some('x') => out.push_str("%m/%d/%y"),
            Some('X') => out.push_str("%H:%M:%S"),
            Some('r') => out.push_str("%I:%M:%S %p"),
            // glibc's flags: no padding, space padding, zero padding, upper case.
            Some(f @ ('-' | '_' | '0' | '^')) => match chars.next() {
                Some(n) if PLAIN.contains(n) && n != '%' => {
                    out.push('%');
                    out.push(f);
                    out.push(n);
                }
                Some(n) => return Err(refuse(&format!("%{f}{n}"))),
                None => return Err(refuse(&format!("%{f}"))),
            },
            Some(n) => return Err(refuse(&format!("%{n}"))),
        }
    }
    Ok(out)
}

/// The fraction of a second as Envoy's `subsecondsToString` writes it.
fn fraction(nanos: u32, digits: Option<u8>, dot: bool, out: &mut String) {
    let all = format!("{nanos:09}");
    let n = match digits {
        Some(d) => usize::from(d),
        None => all.trim_end_matches('0').len(),
    };
    if dot {
        if n > 0 {
            out.push('.');
            out.push_str(&all[..n]);
        }
    } else {
        out.push_str(&all[..n.max(1)]);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    /// 2024-02-29T13:04:05.120450000Z, a Thursday (and 789 ns Envoy's clock does not see).
    fn t() -> SystemTime {
        UNIX_EPOCH + Duration::new(1_709_211_845, 120_450_789)
    }

    fn render(f: &str, t: SystemTime) -> String {
        let mut out = String::new();
        StartTimeFormat::parse(f)
            .unwrap_or_else(|e| panic!("{e}"))
            .render(t, &mut out);
        out
    }

    #[test]
    fn strftime_text_is_written_as_the_c_library_writes_it() {
        assert_eq!(render("%Y-%m-%dT%H:%M:%SZ", t()), "2024-02-29T13:04:05Z");
        assert_eq!(
            render("%a %A %b %B %h %j %e", t()),
            "Thu Thursday Feb February Feb 060 29"
        );
        assert_eq!(render("%I %l %p %P %k", t()), "01  1 PM pm 13");
        assert_eq!(
            render("%T %D %F %R", t()),
            "13:04:05 02/29/24 2024-02-29 13:04"
        );
        assert_eq!(render("%z %Z %Ez %E*z", t()), "+0000 UTC +00:00 +00:00:00");
        assert_eq!(render("%E4Y%ETx %u %w %C %y %%", t()), "2024Tx 4 4 20 24 %");
        assert_eq!(render("%G-W%V %U %W", t()), "2024-W09 08 09");
        assert_eq!(
            render("%c|%x|%X|%r", t()),
            "Thu Feb 29 13:04:05 2024|02/29/24|13:04:05|01:04:05 PM"
        );
        assert_eq!(render("%-m/%-d %_H %0e %^a %^b", t()), "2/29 13 29 THU FEB");
    }

    #[test]
    fn envoys_own_specifiers_write_seconds_and_fractions() {
        assert_eq!(render("%s", t()), "1709211845");
        assert_eq!(
            render("%f|%3f|%*f|%E6f|%E*f", t()),
            "120450000|120|12045|120450|12045"
        );
        assert_eq!(render("%E3S|%E*S|%E1S", t()), "05.120|05.12045|05.1");
        let whole = UNIX_EPOCH + Duration::from_secs(1_709_211_845);
        assert_eq!(render("%E*S|%*f|%E*f|%f", whole), "05|0|0|000000000");
        // Envoy's default format, as `%START_TIME%` writes it.
        assert_eq!(
            render("%Y-%m-%dT%H:%M:%E3SZ", t()),
            crate::http::access_log::format_time(t())
        );
        // Envoy's pattern finds `%s` after a `%%` too; the lone `%` before it stays.
        assert_eq!(render("%%s", t()), "%1709211845");
    }

    #[test]
    fn unknown_specifiers_are_refused_by_name() {
        for (f, spec) in [
            ("%Q", "%Q"),
            ("at %K", "%K"),
            ("%-q", "%-q"),
            ("%^", "%^"),
            ("%E5Y", "%E5"),
            ("%Eq", "%Eq"),
        ] {
            let e = StartTimeFormat::parse(f).unwrap_err();
            assert!(e.contains(&format!("{spec} is not supported")), "{f}: {e}");
        }
    }
}
