//! Finds the token in the request headers, from the configured sources.
//!
//! A token may carry the scannable prefix (`tsr_`, [`crate::token::API_TOKEN_PREFIX`]):
//! extraction removes it, so everything after (size limit, cache, parser, ambiguity) sees
//! the compact JWS, and a token sent with and without the prefix is one token.

use crate::config::TokenSource;
use crate::decision::Reason;
use crate::token::strip_api_prefix;

/// A token found in a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found<'a> {
    /// The token text.
    pub token: &'a str,
    /// The (lower-case) header that carried it.
    pub header: &'a str,
}

fn from_value<'a>(source: &TokenSource, value: &'a str) -> Option<&'a str> {
    let value = value.trim();
    if source.schemes.is_empty() {
        return (!value.is_empty()).then_some(strip_api_prefix(value));
    }
    let (scheme, rest) = value.split_once([' ', '\t'])?;
    if !source
        .schemes
        .iter()
        .any(|s| s.eq_ignore_ascii_case(scheme))
    {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(strip_api_prefix(token))
}

/// Looks through `headers` (name, value) for a token. Two different tokens are refused;
/// the same token in several places is one token.
pub fn extract<'a>(
    sources: &'a [TokenSource],
    headers: &'a [(String, String)],
) -> Result<Option<Found<'a>>, Reason> {
    let mut found: Option<Found<'a>> = None;
    for source in sources {
        for (name, value) in headers {
            if !name.eq_ignore_ascii_case(&source.header) {
                continue;
            }
            // Hosts may join repeated headers with commas (Envoy does for Authorization).
            // A compact JWS never contains a comma, so each part is a candidate on its own.
            for part in value.split(',') {
                let Some(token) = from_value(source, part) else {
                    continue;
                };
                match found {
                    None => {
                        found = Some(Found {
                            token,
                            header: &source.header,
                        })
                    }
                    Some(f) if f.token == token => {}
                    Some(_) => return Err(Reason::TokenAmbiguous),
                }
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> Vec<TokenSource> {
        vec![
            TokenSource {
                header: "authorization".into(),
                schemes: vec!["bearer".into(), "token".into()],
            },
            TokenSource {
                header: "csp-auth-token".into(),
                schemes: vec![],
            },
        ]
    }

    fn check(headers: &[(&str, &str)], want: Result<Option<(&str, &str)>, Reason>) {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let s = sources();
        let got = extract(&s, &headers).map(|o| o.map(|f| (f.token, f.header)));
        assert_eq!(got, want, "{headers:?}");
    }

    #[test]
    fn table() {
        check(&[], Ok(None));
        check(
            &[("authorization", "Bearer abc")],
            Ok(Some(("abc", "authorization"))),
        );
        check(
            &[("Authorization", "bearer   abc  ")],
            Ok(Some(("abc", "authorization"))),
        );
        check(
            &[("authorization", "Token abc")],
            Ok(Some(("abc", "authorization"))),
        );
        check(&[("authorization", "Basic abc")], Ok(None));
        check(&[("authorization", "Bearer")], Ok(None));
        check(&[("authorization", "Bearer ")], Ok(None));
        check(&[("authorization", "")], Ok(None));
        check(
            &[("csp-auth-token", "abc")],
            Ok(Some(("abc", "csp-auth-token"))),
        );
        check(&[("csp-auth-token", "  ")], Ok(None));
        check(
            &[("authorization", "Bearer abc"), ("csp-auth-token", "abc")],
            Ok(Some(("abc", "authorization"))),
        );
        check(
            &[("authorization", "Bearer abc"), ("csp-auth-token", "xyz")],
            Err(Reason::TokenAmbiguous),
        );
        check(
            &[
                ("authorization", "Bearer abc"),
                ("authorization", "Token xyz"),
            ],
            Err(Reason::TokenAmbiguous),
        );
        check(
            &[
                ("authorization", "Basic zzz"),
                ("authorization", "Token xyz"),
            ],
            Ok(Some(("xyz", "authorization"))),
        );
        check(&[("x-other", "Bearer abc")], Ok(None));
        // Envoy joins repeated Authorization headers with a comma.
        check(
            &[("authorization", "Bearer abc,Bearer xyz")],
            Err(Reason::TokenAmbiguous),
        );
        check(
            &[("authorization", "Bearer abc, Bearer abc")],
            Ok(Some(("abc", "authorization"))),
        );
        check(
            &[("authorization", "Basic zz, Bearer abc")],
            Ok(Some(("abc", "authorization"))),
        );
    }

    #[test]
    fn the_scannable_prefix_is_removed() {
        check(
            &[("authorization", "Bearer tsr_abc")],
            Ok(Some(("abc", "authorization"))),
        );
        check(
            &[("csp-auth-token", "tsr_abc")],
            Ok(Some(("abc", "csp-auth-token"))),
        );
        // With and without the prefix, the same token.
        check(
            &[
                ("authorization", "Bearer tsr_abc"),
                ("csp-auth-token", "abc"),
            ],
            Ok(Some(("abc", "authorization"))),
        );
        check(
            &[("authorization", "Bearer tsr_abc, Bearer abc")],
            Ok(Some(("abc", "authorization"))),
        );
        check(
            &[
                ("authorization", "Bearer tsr_abc"),
                ("csp-auth-token", "tsr_xyz"),
            ],
            Err(Reason::TokenAmbiguous),
        );
        // Only the exact prefix, once: the rest is the token (refused later as malformed).
        check(
            &[("authorization", "Bearer TSR_abc")],
            Ok(Some(("TSR_abc", "authorization"))),
        );
        check(
            &[("authorization", "Bearer tsr_tsr_abc")],
            Ok(Some(("tsr_abc", "authorization"))),
        );
        check(
            &[("authorization", "Bearer tsr_")],
            Ok(Some(("", "authorization"))),
        );
    }
}
