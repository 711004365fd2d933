//! Envoy's `PercentEncoding::urlDecodeQueryComponent`: a query key or value as Envoy's
//! `parseAndDecodeQueryString` reads it (the admin's query parameters, jwt_authn's
//! `from_params`).

/// Decodes `%XX` and `+` (a space) in a query component; a bad escape stays as sent.
pub(crate) fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len()
                && b[i + 1].is_ascii_hexdigit()
                && b[i + 2].is_ascii_hexdigit() =>
            {
                let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(b[i + 1]) << 4 | hex(b[i + 2]));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_and_plus_are_decoded_and_bad_escapes_kept() {
        assert_eq!(super::decode("a%2Bb+c%zz%4"), "a+b c%zz%4");
        assert_eq!(super::decode("%41"), "A");
        assert_eq!(super::decode("%+A"), "% A", "two hex digits, no sign");
    }
}
