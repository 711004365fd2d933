//! `%START_TIME(format)%` against a real Envoy 1.40 on the same YAML: a local reply whose
//! `body_format` writes the request's start time in every specifier sluice accepts. Both
//! proxies are asked within one second (asked again when a second boundary fell between the
//! two), so everything but the fraction of the second must be the same text; the fractions
//! must have the same shape (width, dot, no trailing zero where `*` asks for none, at most
//! microseconds: Envoy's clock reads no finer).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_tests::{
    admin_run::{get, hcm_bootstrap, start_text},
    conformance::proxy::free_ports,
};

/// Whole-second text, then the fractions: `%E3S %E*S %f %3f %*f %E6f %E*f`.
const FORMAT: &str = "%s|%Y-%m-%dT%H:%M:%S|%a %A %b %B %h|%j %e %u %w %U %W %V %G %g %C %y|\
%I %l %p %P %k|%T %D %F %R|%z %Z %Ez %E*z %E4Y%ET|%%s %% x|%c|%x|%X|%r|\
%-m/%-d %_H %0e %^a %^b %-j %_m|%E3S %E*S %f %3f %*f %E6f %E*f";

fn config(port: u16) -> String {
    let hcm = format!(
        "route_config: {{virtual_hosts: [{{name: v, domains: [\"*\"], routes: []}}]}}\n          \
         local_reply_config: {{body_format: {{text_format: \"%START_TIME({FORMAT})%\"}}}}"
    );
    hcm_bootstrap(port, &hcm, "", "")
}

/// The fraction tokens reduced to their shape: digits as `d`, a dynamic width's run of
/// digits as `d+` (checked to end in a digit other than 0 when there is more than one).
fn fraction_shape(fractions: &str) -> String {
    let tokens: Vec<&str> = fractions.split(' ').collect();
    assert_eq!(tokens.len(), 7, "{fractions:?}");
    let fixed = |t: &str| {
        t.chars()
            .map(|c| if c.is_ascii_digit() { 'd' } else { c })
            .collect::<String>()
    };
    let dynamic = |t: &str| {
        assert!(
            t.chars().all(|c| c.is_ascii_digit()) && !t.is_empty(),
            "{t:?}"
        );
        assert!(t.len() == 1 || !t.ends_with('0'), "trailing zero in {t:?}");
        // Envoy's clock reads microseconds.
        assert!(t.len() <= 6, "more than microseconds in {t:?}");
        "d+".to_string()
    };
    let star_s = match tokens[1].split_once('.') {
        Some((s, f)) => format!("{}.{}", fixed(s), dynamic(f)),
        None => fixed(tokens[1]),
    };
    [
        fixed(tokens[0]),
        star_s,
        fixed(tokens[2]),
        fixed(tokens[3]),
        dynamic(tokens[4]),
        fixed(tokens[5]),
        dynamic(tokens[6]),
    ]
    .join(" ")
}

/// Sleeps until 50 ms into the next second, so two requests sent at once fall in the same one.
fn to_next_second() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let left = Duration::from_secs(1) - Duration::from_nanos(u64::from(now.subsec_nanos()));
    std::thread::sleep(left + Duration::from_millis(50));
}

#[test]
fn start_time_formats_as_envoys() {
    let [ep, sp] = free_ports::<2>();
    let _envoy = start_text("start-time", &config(ep), true);
    let _sluice = start_text("start-time", &config(sp), false);
    for attempt in 0..5 {
        to_next_second();
        let sent = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        // At once: a local reply's connection closes a second late (delayed_close_timeout).
        let ((es, envoy), (ss, sluice)) = std::thread::scope(|s| {
            let e = s.spawn(|| get(&format!("127.0.0.1:{ep}"), "GET", "/x"));
            let l = s.spawn(|| get(&format!("127.0.0.1:{sp}"), "GET", "/x"));
            (
                e.join().expect("envoy request"),
                l.join().expect("sluice request"),
            )
        });
        assert_eq!((es, ss), (404, 404), "envoy {envoy:?} sluice {sluice:?}");
        let (e_whole, e_frac) = envoy.rsplit_once('|').expect("fractions");
        let (s_whole, s_frac) = sluice.rsplit_once('|').expect("fractions");
        let second = |s: &str| s.split('|').next().unwrap_or_default().to_string();
        if second(&envoy) != second(&sluice) {
            eprintln!("attempt {attempt}: a second boundary fell between the two requests (sent at {sent:?}):\n  envoy:  {envoy}\n  sluice: {sluice}");
            continue;
        }
        eprintln!("envoy:  {envoy}\nsluice: {sluice}");
        assert_eq!(s_whole, e_whole);
        assert_eq!(fraction_shape(s_frac), fraction_shape(e_frac));
        return;
    }
    panic!("the two requests never fell in the same second in 5 tries");
}
