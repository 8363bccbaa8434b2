//! Who may talk to the console: pure decisions on a request's method, path, query and headers.
//!
//! The console listens on 127.0.0.1 only, but other local users and every web page the browser
//! opens can send it requests. So, as Jupyter does, it prints a URL with a random token; the
//! first visit trades the token for a cookie (HttpOnly, SameSite=Strict, named after the port so
//! two consoles do not share it) and is redirected to a URL without it. Then every request must:
//! - name this console in its `Host` (a DNS-rebinding page names its own host, and is refused);
//! - carry the cookie (a page on another site cannot: SameSite=Strict);
//! - when it changes something (POST), come from this origin (`Origin`, `Sec-Fetch-Site`) and
//!   be JSON (a cross-site form cannot send `application/json` without a CORS preflight, which
//!   this server never grants).

use http::{HeaderMap, Method, StatusCode, header};

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it.
    Allow,
    /// The token came in the URL and is right: set the cookie and send the browser to
    /// `location` (the same path, without the token).
    Welcome { location: String, cookie: String },
    /// Refuse it with this status and message.
    Refuse(StatusCode, String),
}

/// A fresh token: 32 random bytes from the operating system, as hex.
pub fn new_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The cookie's name: one per port, so two consoles on one machine do not overwrite each
/// other's (cookies are shared by every port of a host).
pub fn cookie_name(port: u16) -> String {
    format!("aexec_ui_{port}")
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The hosts this console answers to.
fn our_host(host: &str, port: u16) -> bool {
    host == format!("127.0.0.1:{port}") || host == format!("localhost:{port}")
}

/// `name`'s value in the request's cookies.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The query without its `token` parameter, as a path to redirect to.
fn without_token(path: &str, query: &str) -> String {
    let rest: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k != "token")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if rest.is_empty() {
        return path.to_owned();
    }
    let q = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(rest)
        .finish();
    format!("{path}?{q}")
}

const OPEN_THE_URL: &str = "this console needs the URL that `kubectl aexec ui` printed (it \
     carries a one-time token); open that URL, or start the console again";

/// Decides a request (see the module's documentation).
pub fn decide(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    token: &str,
    port: u16,
) -> Verdict {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !our_host(host, port) {
        return Verdict::Refuse(
            StatusCode::FORBIDDEN,
            format!(
                "this console answers only at http://127.0.0.1:{port} (the request named host {host:?}; \
                 a page on another site may be trying to reach it)"
            ),
        );
    }
    let given = query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    if let Some(given) = given {
        if method != Method::GET || !same(&given, token) {
            return Verdict::Refuse(StatusCode::UNAUTHORIZED, OPEN_THE_URL.into());
        }
        return Verdict::Welcome {
            location: without_token(path, query.unwrap_or_default()),
            cookie: format!(
                "{}={token}; Path=/; HttpOnly; SameSite=Strict",
                cookie_name(port)
            ),
        };
    }
    if !cookie(headers, &cookie_name(port)).is_some_and(|c| same(c, token)) {
        return Verdict::Refuse(StatusCode::UNAUTHORIZED, OPEN_THE_URL.into());
    }
    if method == Method::GET || method == Method::HEAD {
        return Verdict::Allow;
    }
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let ours = |o: &str| o.strip_prefix("http://").is_some_and(|h| our_host(h, port));
    let site = headers.get("sec-fetch-site").and_then(|s| s.to_str().ok());
    if origin.is_some_and(|o| !ours(o)) || site.is_some_and(|s| s != "same-origin") {
        return Verdict::Refuse(
            StatusCode::FORBIDDEN,
            "changes are accepted only from the console's own page".into(),
        );
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if !json {
        return Verdict::Refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send JSON (Content-Type: application/json)".into(),
        );
    }
    Verdict::Allow
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "0123abcd";
    const PORT: u16 = 4242;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("header"));
        }
        h
    }

    fn get(path: &str, query: Option<&str>, pairs: &[(&'static str, &str)]) -> Verdict {
        decide(&Method::GET, path, query, &headers(pairs), T, PORT)
    }

    #[test]
    fn tokens_are_random_and_long() {
        let (a, b) = (new_token().expect("token"), new_token().expect("token"));
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn the_token_in_the_url_becomes_a_cookie_and_leaves_the_url() {
        let v = get("/", Some("token=0123abcd"), &[("host", "127.0.0.1:4242")]);
        assert_eq!(
            v,
            Verdict::Welcome {
                location: "/".into(),
                cookie: "aexec_ui_4242=0123abcd; Path=/; HttpOnly; SameSite=Strict".into()
            }
        );
        let v = get(
            "/",
            Some("a=1&token=0123abcd&b=x%20y"),
            &[("host", "localhost:4242")],
        );
        assert!(matches!(v, Verdict::Welcome { location, .. } if location == "/?a=1&b=x+y"));
    }

    #[test]
    fn no_token_or_a_wrong_one_is_401() {
        for v in [
            get("/", None, &[("host", "127.0.0.1:4242")]),
            get("/", Some("token=0123abce"), &[("host", "127.0.0.1:4242")]),
            get("/", Some("token=0123abc"), &[("host", "127.0.0.1:4242")]),
            get(
                "/api/sessions",
                None,
                &[("host", "127.0.0.1:4242"), ("cookie", "aexec_ui_4242=nope")],
            ),
            // Another console's cookie is not this one's.
            get(
                "/api/sessions",
                None,
                &[
                    ("host", "127.0.0.1:4242"),
                    ("cookie", "aexec_ui_4243=0123abcd"),
                ],
            ),
        ] {
            assert!(
                matches!(&v, Verdict::Refuse(StatusCode::UNAUTHORIZED, m) if m.contains("kubectl aexec ui")),
                "{v:?}"
            );
        }
    }

    #[test]
    fn the_cookie_lets_reads_in() {
        let v = get(
            "/api/sessions",
            None,
            &[
                ("host", "127.0.0.1:4242"),
                ("cookie", "theme=dark; aexec_ui_4242=0123abcd"),
            ],
        );
        assert_eq!(v, Verdict::Allow);
    }

    #[test]
    fn another_host_is_refused_even_with_the_token() {
        for host in ["evil.example:4242", "127.0.0.1:80", "127.0.0.1", ""] {
            let v = get(
                "/",
                Some("token=0123abcd"),
                &[("host", host), ("cookie", "aexec_ui_4242=0123abcd")],
            );
            assert!(
                matches!(&v, Verdict::Refuse(StatusCode::FORBIDDEN, m) if m.contains("127.0.0.1:4242")),
                "{host}: {v:?}"
            );
        }
    }

    #[test]
    fn changes_come_from_our_page_as_json() {
        let post = |pairs: &[(&'static str, &str)]| {
            let mut all = vec![
                ("host", "127.0.0.1:4242"),
                ("cookie", "aexec_ui_4242=0123abcd"),
            ];
            all.extend_from_slice(pairs);
            decide(&Method::POST, "/api/x", None, &headers(&all), T, PORT)
        };
        assert_eq!(
            post(&[
                ("origin", "http://127.0.0.1:4242"),
                ("sec-fetch-site", "same-origin"),
                ("content-type", "application/json")
            ]),
            Verdict::Allow
        );
        assert!(matches!(
            post(&[
                ("origin", "http://evil.example"),
                ("content-type", "application/json")
            ]),
            Verdict::Refuse(StatusCode::FORBIDDEN, _)
        ));
        assert!(matches!(
            post(&[
                ("sec-fetch-site", "cross-site"),
                ("content-type", "application/json")
            ]),
            Verdict::Refuse(StatusCode::FORBIDDEN, _)
        ));
        assert!(matches!(
            post(&[("content-type", "application/x-www-form-urlencoded")]),
            Verdict::Refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, _)
        ));
        // A token in a POST's URL is refused, not traded for a cookie.
        let v = decide(
            &Method::POST,
            "/api/x",
            Some("token=0123abcd"),
            &headers(&[("host", "127.0.0.1:4242")]),
            T,
            PORT,
        );
        assert!(matches!(v, Verdict::Refuse(StatusCode::UNAUTHORIZED, _)));
    }
}
