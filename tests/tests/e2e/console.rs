//! `kubectl aexec ui`, the review console: the real plugin serving it, driven over HTTP and in
//! real headless Chromium (Debian's `chromium` and `chromium-driver`, through WebDriver).
//! Screenshots of every page are saved under the run directory (`screenshots/`), and copied
//! to `$AEXEC_SCREENSHOTS` when it is set (how docs/images/ is refreshed).

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use aexec_crds::{ExecSession, Phase};
use aexec_testenv::{Target, User};
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use http_body_util::BodyExt;
use kube::Api;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::common::{env, plugin_bin, policy, target_with_operator, wait_phase, wait_record};
use crate::plugin::{sre_approval, text};

/// A console served by the real plugin as `user`.
struct Console {
    _child: tokio::process::Child,
    port: u16,
    token: String,
}

impl Console {
    async fn start(user: User, namespace: &str) -> Console {
        let mut c = tokio::process::Command::new(plugin_bin());
        c.arg("--kubeconfig")
            .arg(env().kubeconfig(user))
            .args(["ui", "--no-browser", "-n", namespace])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = c.spawn().expect("the console starts");
        let mut out = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut err = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        let url = tokio::time::timeout(Duration::from_secs(20), out.next_line())
            .await
            .expect("the console prints its URL within 20s")
            .expect("read stdout")
            .unwrap_or_else(|| panic!("the console exited without a URL"));
        let said = err.next_line().await.ok().flatten().unwrap_or_default();
        assert!(
            said.contains(&format!("acting as {}", user.name())) && said.contains("127.0.0.1"),
            "{said}"
        );
        tokio::spawn(async move { while let Ok(Some(_)) = err.next_line().await {} });
        let rest = url
            .strip_prefix("http://127.0.0.1:")
            .unwrap_or_else(|| panic!("not a loopback URL: {url}"));
        let (port, token) = rest.split_once("/?token=").expect("a token in the URL");
        Console {
            _child: child,
            port: port.parse().expect("port"),
            token: token.to_owned(),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/?token={}", self.port, self.token)
    }

    fn cookie(&self) -> String {
        format!("aexec_ui_{}={}", self.port, self.token)
    }

    async fn get(&self, path: &str) -> Reply {
        let cookie = self.cookie();
        request(self.port, "GET", path, &[("cookie", &cookie)], "").await
    }

    async fn post(&self, path: &str, body: &Value) -> Reply {
        let (cookie, origin) = (self.cookie(), format!("http://127.0.0.1:{}", self.port));
        request(
            self.port,
            "POST",
            path,
            &[
                ("cookie", &cookie),
                ("origin", &origin),
                ("content-type", "application/json"),
            ],
            &body.to_string(),
        )
        .await
    }
}

/// An HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&self.body)))
    }

    fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port` (hyper's client; `Host` is the console's unless
/// `headers` name another).
async fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the console");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let mut req = http::Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req = req.header("host", format!("127.0.0.1:{port}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(http_body_util::Full::new(hyper::body::Bytes::from(
            body.to_owned(),
        )))
        .expect("request");
    let res = tokio::time::timeout(Duration::from_secs(60), sender.send_request(req))
        .await
        .expect("an answer within 60s")
        .expect("answer");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

/// Alice asks for `sh` with `-i`, typing `script`; returns her process and the session's name
/// once the plugin prints the line for approvers.
async fn alice_asks(t: &Target, script: &str) -> (tokio::process::Child, String) {
    let mut c = tokio::process::Command::new(plugin_bin());
    c.arg("--kubeconfig")
        .arg(env().kubeconfig(User::Alice))
        .args(["-n", &t.namespace, "-r", "INC-42", "-i", &t.pod, "--", "sh"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = c.spawn().expect("plugin starts");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(script.as_bytes()).await.expect("type");
    drop(stdin);
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let name = tokio::time::timeout(Duration::from_secs(20), async {
        let mut seen = String::new();
        while let Some(l) = lines.next_line().await.expect("read stderr") {
            if let Some(rest) = l.split("kubectl aexec approve ").nth(1) {
                return rest.split_whitespace().next().expect("name").to_owned();
            }
            seen.push_str(&l);
            seen.push('\n');
        }
        panic!("no approver line in: {seen}");
    })
    .await
    .expect("the approver line within 20s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    wait_phase(t, &name, Phase::Pending, 15).await;
    (child, name)
}

async fn session(t: &Target, name: &str) -> ExecSession {
    let admin = env().client(User::Admin).await.expect("admin");
    Api::<ExecSession>::namespaced(admin, &t.namespace)
        .get(name)
        .await
        .expect("session")
}

#[tokio::test]
async fn ui_token_required() {
    let (t, _op) = target_with_operator().await;
    let ns = t.namespace.as_str();
    let c = Console::start(User::Carol, ns).await;
    // No token, a wrong one, a cookie with a wrong one: 401, saying what to open.
    for (path, headers) in [
        ("/", vec![]),
        ("/api/sessions", vec![]),
        ("/?token=0000", vec![]),
        (
            "/api/whoami",
            vec![("cookie", format!("aexec_ui_{}=0000", c.port))],
        ),
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = request(c.port, "GET", path, &h, "").await;
        assert_eq!(r.status, 401, "{path}: {}", text(&r.body));
        assert!(r.message().contains("kubectl aexec ui"), "{}", r.message());
    }
    // The right token: a cookie (HttpOnly, SameSite=Strict) and a redirect that drops it.
    let r = request(c.port, "GET", &format!("/?token={}", c.token), &[], "").await;
    assert_eq!(r.status, 303);
    assert_eq!(r.headers["location"], "/");
    let cookie = r.headers["set-cookie"].to_str().expect("cookie");
    assert!(cookie.starts_with(&c.cookie()), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert_eq!(r.headers["referrer-policy"], "no-referrer");
    // With the cookie: the page, and the API as carol.
    let page = c.get("/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.headers["content-security-policy"]
            .to_str()
            .expect("csp")
            .contains("default-src 'self'")
    );
    let me = c.get("/api/whoami").await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["user"], "carol");
    // Refused even with the cookie: another Host (a DNS-rebinding page); a change from another
    // origin; a change not sent as JSON.
    let cookie = c.cookie();
    let approve = format!("/api/sessions/{ns}/x/approve");
    for (method, path, headers, status) in [
        ("GET", "/api/whoami", vec![("host", "evil.example:80")], 403),
        (
            "POST",
            approve.as_str(),
            vec![
                ("origin", "http://evil.example"),
                ("content-type", "application/json"),
            ],
            403,
        ),
        (
            "POST",
            approve.as_str(),
            vec![("content-type", "text/plain")],
            415,
        ),
    ] {
        let mut h = headers.clone();
        h.push(("cookie", &cookie));
        let r = request(c.port, method, path, &h, "{}").await;
        assert_eq!(
            r.status,
            status,
            "{method} {path} {headers:?}: {}",
            text(&r.body)
        );
    }
    // Bound to loopback only: the listening socket is 127.0.0.1's, and another address of
    // this machine is refused.
    let tcp = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let listening: Vec<&str> = tcp
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(3) == Some(&"0A") && f[1].ends_with(&format!(":{:04X}", c.port))).then_some(f[1])
        })
        .collect();
    assert_eq!(listening, [format!("0100007F:{:04X}", c.port)]);
    let other = aexec_testenv::netns::APISERVER_IP;
    let refused = tokio::net::TcpStream::connect((other, c.port)).await;
    assert!(refused.is_err(), "the console answered on {other}");
}

#[tokio::test]
async fn ui_acts_as_the_user() {
    let (t, _op) = target_with_operator().await;
    let ns = t.namespace.as_str();
    policy(&t, "console-user", sre_approval()).await;
    let (alice_proc, name) = alice_asks(&t, "echo never-runs\n").await;
    // mallory sees nothing: the API server's refusals, with their status.
    let mallory = Console::start(User::Mallory, ns).await;
    for path in [
        format!("/api/sessions?namespace={ns}"),
        format!("/api/sessions/{ns}/{name}"),
        format!("/api/sessions/{ns}/{name}/recording"),
        format!("/api/sessions/{ns}/{name}/live"),
        format!("/api/search?pattern=x&namespace={ns}"),
    ] {
        let r = mallory.get(&path).await;
        assert_eq!(r.status, 403, "{path}: {}", text(&r.body));
        assert!(r.message().contains("mallory"), "{path}: {}", r.message());
    }
    let r = mallory
        .post(&format!("/api/sessions/{ns}/{name}/approve"), &json!({}))
        .await;
    assert_eq!(r.status, 403, "{}", text(&r.body));
    // alice sees her session, cannot approve it, nor search recordings.
    let alice = Console::start(User::Alice, ns).await;
    let list = alice.get(&format!("/api/sessions?namespace={ns}")).await;
    assert_eq!(list.status, 200, "{}", text(&list.body));
    assert_eq!(list.json()["items"][0]["metadata"]["name"], name.as_str());
    let detail = alice
        .get(&format!("/api/sessions/{ns}/{name}"))
        .await
        .json();
    assert_eq!(detail["canApprove"], false);
    assert_eq!(detail["canReadRecording"], false);
    let r = alice
        .post(
            &format!("/api/sessions/{ns}/{name}/approve"),
            &json!({"comment": "self"}),
        )
        .await;
    assert_eq!(r.status, 403, "{}", text(&r.body));
    assert!(r.message().contains("approving session"), "{}", r.message());
    let r = alice
        .get(&format!("/api/search?pattern=never&namespace={ns}"))
        .await;
    assert_eq!(r.status, 403, "{}", text(&r.body));
    assert!(r.message().contains("aexec-auditor"), "{}", r.message());
    assert_eq!(session(&t, &name).await.phase(), Phase::Pending);
    // bob may decide; his denial (with its reason) ends alice's request.
    let bob = Console::start(User::Bob, ns).await;
    let detail = bob.get(&format!("/api/sessions/{ns}/{name}")).await.json();
    assert_eq!(detail["canApprove"], true);
    assert_eq!(detail["canDeny"], true);
    let r = bob
        .post(
            &format!("/api/sessions/{ns}/{name}/deny"),
            &json!({"comment": "not during the freeze"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", text(&r.body));
    assert_eq!(r.json()["session"]["status"]["phase"], "Denied");
    let out = tokio::time::timeout(Duration::from_secs(30), alice_proc.wait_with_output())
        .await
        .expect("alice's request ends")
        .expect("wait");
    assert_eq!(out.status.code(), Some(1));
    let denial = session(&t, &name).await.status.and_then(|s| s.denial);
    let denial = denial.expect("a denial");
    assert_eq!(denial.user.username, "bob");
    assert_eq!(denial.comment.as_deref(), Some("not during the freeze"));
}

/// Chromium, headless, through chromedriver. Its profile, and the home, configuration, cache
/// and data directories it would otherwise create under $HOME (crash reports, dconf), are a
/// directory of the run; [`Chromium::finish`] checks that $HOME got nothing new.
struct Chromium {
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
    client: Browser,
    home_before: Vec<String>,
}

/// The entries of $HOME, $HOME/.config and $HOME/.cache.
fn home_entries() -> Vec<String> {
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
    let mut all = Vec::new();
    for dir in [home.clone(), home.join(".config"), home.join(".cache")] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            all.extend(entries.flatten().map(|e| e.path().display().to_string()));
        }
    }
    all.sort();
    all
}

impl Chromium {
    async fn start() -> Chromium {
        let home_before = home_entries();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let profile = tempfile::tempdir_in(&env().dir).expect("profile dir");
        let p = profile.path();
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .env("HOME", p)
            .env("XDG_CONFIG_HOME", p.join("config"))
            .env("XDG_CACHE_HOME", p.join("cache"))
            .env("XDG_DATA_HOME", p.join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; ./dev installs it)");
        let caps = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1280,800", "--no-first-run", "--no-default-browser-check",
                    "--disable-breakpad", "--disable-crash-reporter",
                    format!("--user-data-dir={}", p.join("profile").display()),
                ]
            }
        });
        let caps = caps.as_object().cloned().expect("object");
        let started = Instant::now();
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => break c,
                // chromedriver is still starting.
                Err(_) if started.elapsed() < Duration::from_secs(30) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("chromium did not start through chromedriver: {e}"),
            }
        };
        Chromium {
            _driver: driver,
            _profile: profile,
            client,
            home_before,
        }
    }

    /// Closes the browser; $HOME must hold what it held before.
    async fn finish(self) {
        self.client
            .clone()
            .close()
            .await
            .expect("close the browser");
        assert_eq!(
            home_entries(),
            self.home_before,
            "the browser wrote to $HOME"
        );
    }

    /// Waits until `script` (a JS expression) is truthy; returns its value.
    async fn until(&self, what: &str, script: &str, secs: u64) -> Value {
        let started = Instant::now();
        loop {
            let v = self
                .client
                .execute(&format!("return ({script});"), vec![])
                .await
                .unwrap_or(Value::Null);
            if !(v.is_null() || v == false || v == "") {
                return v;
            }
            if started.elapsed() > Duration::from_secs(secs) {
                let body = self
                    .client
                    .execute("return document.body.innerText", vec![])
                    .await
                    .unwrap_or_default();
                self.shot(&format!("failed-{}", what.replace(' ', "-")))
                    .await;
                panic!("{what}: not within {secs}s; the page says:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits for the page's first render of `route` to finish.
    async fn ready(&self, route: &str) {
        self.until(
            &format!("route {route} ready"),
            &format!(
                "document.body.dataset.ready === '1' && document.body.dataset.route === '{route}'"
            ),
            20,
        )
        .await;
    }

    /// The text of the element `css` selects, read in the page (a live list may replace the
    /// element between a lookup and a read).
    async fn text(&self, css: &str) -> String {
        let v = self
            .client
            .execute(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
                vec![json!(css)],
            )
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        v.as_str()
            .unwrap_or_else(|| panic!("no element {css} in the page"))
            .to_owned()
    }

    /// Saves a screenshot of the page as NAME.png.
    async fn shot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = env().dir.join("screenshots");
        std::fs::create_dir_all(&dir).expect("screenshots dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, &png).expect("write screenshot");
        if let Some(out) = std::env::var_os("AEXEC_SCREENSHOTS") {
            let out = PathBuf::from(out);
            std::fs::create_dir_all(&out).expect("AEXEC_SCREENSHOTS dir");
            std::fs::write(out.join(format!("{name}.png")), &png).expect("copy screenshot");
        }
        eprintln!("screenshot: {}", path.display());
        path
    }
}

#[tokio::test]
async fn ui_in_chromium_approve_play_search() {
    let (t, _op) = target_with_operator().await;
    let ns = t.namespace.as_str();
    policy(&t, "console", sre_approval()).await;
    let bob = Console::start(User::Bob, ns).await;
    let carol = Console::start(User::Carol, ns).await;
    let browser = Chromium::start().await;
    let b = &browser.client;

    // bob's console lists alice's pending request, live (it arrives after the page loaded).
    b.goto(&bob.url()).await.expect("open bob's console");
    browser.ready("sessions").await;
    let (alice, name) = alice_asks(&t, "echo console-marker-$((6*7))\nexit 0\n").await;
    let row = format!("tr[data-session=\"{ns}/{name}\"]");
    browser
        .until(
            "the pending session in the list",
            &format!("document.querySelector('{row}')"),
            20,
        )
        .await;
    let row_text = browser.text(&row).await;
    assert!(row_text.contains("Pending"), "{row_text}");
    assert!(row_text.contains("alice"), "{row_text}");
    assert!(browser.text("#whoami").await.contains("bob"));
    browser.shot("console-sessions").await;

    // His session page: approve with a comment.
    b.find(Locator::Css(&format!("{row} a")))
        .await
        .expect("the row's link")
        .click()
        .await
        .expect("open the session");
    browser.ready("session").await;
    assert!(browser.text("#phase-badge").await.contains("Pending"));
    let page = browser.text("main").await;
    assert!(page.contains("INC-42") && page.contains("alice"), "{page}");
    b.find(Locator::Css("#decision-comment"))
        .await
        .expect("comment box")
        .send_keys("approved in the console")
        .await
        .expect("type the comment");
    browser.shot("console-session-pending").await;
    // By keyboard: Tab from the comment reaches Approve, and Enter presses it.
    let mut reached = false;
    for _ in 0..6 {
        b.active_element()
            .await
            .expect("the focused element")
            .send_keys("\u{e004}") // Tab
            .await
            .expect("Tab");
        let id = b
            .execute("return document.activeElement.id", vec![])
            .await
            .expect("focused id");
        if id == "approve-button" {
            reached = true;
            break;
        }
    }
    assert!(
        reached,
        "Tab from the comment box never reached the Approve button"
    );
    b.active_element()
        .await
        .expect("the Approve button")
        .send_keys("\u{e007}") // Enter
        .await
        .expect("Enter");
    browser
        .until(
            "the session approved",
            "['Approved','Active','Succeeded'].some(p => (document.querySelector('#phase-badge')||{}).textContent.includes(p))",
            20,
        )
        .await;

    // alice's command ran, and the approval is bob's, with his comment.
    let out = tokio::time::timeout(Duration::from_secs(30), alice.wait_with_output())
        .await
        .expect("alice's command ends")
        .expect("wait");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("console-marker-42"));
    let s = wait_record(&t, &name).await;
    let approvals = s.status.expect("status").approvals;
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].user.username, "bob");
    assert_eq!(
        approvals[0].comment.as_deref(),
        Some("approved in the console")
    );

    // carol opens the recording: verified, and the player shows the command's output.
    b.goto(&carol.url()).await.expect("open carol's console");
    browser.ready("sessions").await;
    b.goto(&format!(
        "http://127.0.0.1:{}/#/sessions/{ns}/{name}",
        carol.port
    ))
    .await
    .expect("open the session");
    browser.ready("session").await;
    browser
        .until(
            "the verification result",
            "/verified/i.test((document.querySelector('#verify-result')||{}).textContent||'')",
            30,
        )
        .await;
    assert!(
        !browser.text("#verify-result").await.contains("FAILED"),
        "{}",
        browser.text("#verify-result").await
    );
    browser
        .until(
            "the player showing the output",
            "((document.querySelector('#player')||{}).textContent||'').includes('console-marker-42')",
            30,
        )
        .await;
    b.execute(
        "document.querySelector('#recording').scrollIntoView()",
        vec![],
    )
    .await
    .expect("scroll to the recording");
    browser.shot("console-recording").await;

    // Search finds what alice typed (the shell's arithmetic, as typed) and what it showed.
    b.goto(&format!("http://127.0.0.1:{}/#/search", carol.port))
        .await
        .expect("open search");
    browser.ready("search").await;
    b.find(Locator::Css("#search-pattern"))
        .await
        .expect("pattern box")
        .send_keys("console-marker")
        .await
        .expect("type the pattern");
    b.find(Locator::Css("#search-form button[type=submit]"))
        .await
        .expect("search button")
        .click()
        .await
        .expect("search");
    browser
        .until(
            "two search hits",
            "document.querySelectorAll('#search-results [data-hit]').length >= 2",
            30,
        )
        .await;
    let hits = browser.text("#search-results").await;
    assert!(hits.contains("echo console-marker-$((6*7))"), "{hits}");
    assert!(hits.contains(&name), "{hits}");
    assert!(
        hits.contains(&format!("kubectl aexec replay {name} -n {ns} --from")),
        "{hits}"
    );
    browser.shot("console-search").await;

    // A narrow window: nothing spills out of the page.
    b.set_window_size(420, 800).await.expect("narrow window");
    b.goto(&format!("http://127.0.0.1:{}/#/", carol.port))
        .await
        .expect("open the list");
    browser.ready("sessions").await;
    let overflow = browser
        .until(
            "the page's width",
            "String(document.documentElement.scrollWidth - document.documentElement.clientWidth)",
            5,
        )
        .await;
    assert_eq!(overflow, "0", "the page is wider than a narrow window");
    browser.shot("console-narrow").await;
    browser.finish().await;
}

#[tokio::test]
async fn ui_in_chromium_live_view() {
    let (t, _op) = target_with_operator().await;
    let ns = t.namespace.as_str();
    policy(&t, "console-live", json!({"decision": "AutoApprove"})).await;
    // alice's command shows a line, and another 4 s later.
    let mut c = tokio::process::Command::new(plugin_bin());
    c.arg("--kubeconfig")
        .arg(env().kubeconfig(User::Alice))
        .args(["-n", ns, &t.pod, "--", "sh", "-c"])
        .arg("echo live-one; sleep 4; echo live-two; sleep 60")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let alice = c.spawn().expect("alice's command starts");
    let name = {
        let admin = env().client(User::Admin).await.expect("admin");
        let api = Api::<ExecSession>::namespaced(admin, ns);
        let started = Instant::now();
        loop {
            let l = api.list(&Default::default()).await.expect("list").items;
            if let Some(s) = l.first() {
                break s.metadata.name.clone().expect("name");
            }
            assert!(started.elapsed() < Duration::from_secs(20), "no session");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    wait_phase(&t, &name, Phase::Active, 20).await;
    let carol = Console::start(User::Carol, ns).await;
    // The live endpoint is the observe subresource's: refused to whoever may not watch.
    let alice_console = Console::start(User::Alice, ns).await;
    let r = alice_console
        .get(&format!("/api/sessions/{ns}/{name}/live"))
        .await;
    assert_eq!(r.status, 403, "{}", text(&r.body));
    let browser = Chromium::start().await;
    let b = &browser.client;
    b.goto(&carol.url()).await.expect("open carol's console");
    browser.ready("sessions").await;
    b.goto(&format!(
        "http://127.0.0.1:{}/#/sessions/{ns}/{name}",
        carol.port
    ))
    .await
    .expect("open the session");
    browser.ready("session").await;
    assert!(browser.text("#phase-badge").await.contains("Active"));
    // What was shown before the page opened (the backlog), then what comes after.
    browser
        .until(
            "the live player showing the first line",
            "((document.querySelector('#live-player')||{}).textContent||'').includes('live-one')",
            20,
        )
        .await;
    browser
        .until(
            "the live player showing the second line",
            "((document.querySelector('#live-player')||{}).textContent||'').includes('live-two')",
            20,
        )
        .await;
    b.execute("document.querySelector('#live').scrollIntoView()", vec![])
        .await
        .expect("scroll to the live view");
    browser.shot("console-live").await;
    // The session ends: the page says so.
    let bob = crate::common::aexec(User::Bob, &["terminate", &name, "-n", ns], None).await;
    assert_eq!(bob.status.code(), Some(0), "{}", text(&bob.stderr));
    browser
        .until(
            "the live view saying the session ended",
            "/ended/.test((document.querySelector('#live-status')||{}).textContent||'')",
            20,
        )
        .await;
    drop(alice);
    browser.finish().await;
}

#[tokio::test]
async fn search_archived_records() {
    let (t, _op) = target_with_operator().await;
    let ns = t.namespace.as_str();
    policy(&t, "archived", json!({"decision": "AutoApprove"})).await;
    let ran = crate::common::aexec(
        User::Alice,
        &[
            "-n",
            ns,
            &t.pod,
            "--",
            "sh",
            "-c",
            "echo archived-marker-$((6*7))",
        ],
        None,
    )
    .await;
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran.stderr));
    let name = crate::plugin::only_session(&t)
        .await
        .metadata
        .name
        .expect("name");
    let s = wait_record(&t, &name).await;
    crate::evidence::delete_and_wait_gone(&t, &s).await;
    // The session is gone: a plain search does not see it, --archived does, from the store.
    let plain =
        crate::common::aexec(User::Carol, &["search", "-n", ns, "archived-marker"], None).await;
    assert_eq!(plain.status.code(), Some(0), "{}", text(&plain.stderr));
    assert!(text(&plain.stdout).is_empty(), "{}", text(&plain.stdout));
    let found = crate::common::aexec(
        User::Carol,
        &["search", "-n", ns, "--archived", "archived-marker-42"],
        None,
    )
    .await;
    assert_eq!(found.status.code(), Some(0), "{}", text(&found.stderr));
    let out = text(&found.stdout);
    assert!(
        out.contains(&format!("{ns}/{name} (archived)"))
            && out.contains("output  archived-marker-42"),
        "{out}"
    );
    assert!(
        text(&found.stderr).contains("1 match in 1 session"),
        "{}",
        text(&found.stderr)
    );
    // The replay command it prints works for the deleted session (from its signed record).
    let replay = crate::common::aexec(User::Carol, &["replay", &name, "-n", ns], None).await;
    assert_eq!(replay.status.code(), Some(0), "{}", text(&replay.stderr));
    assert!(text(&replay.stdout).contains("archived-marker-42"));
    // A requester may not read the store's records either.
    let alice = crate::common::aexec(
        User::Alice,
        &["search", "-n", ns, "--archived", "archived-marker"],
        None,
    )
    .await;
    assert_eq!(alice.status.code(), Some(1));
    // The console's search has the same option.
    let carol = Console::start(User::Carol, ns).await;
    let r = carol
        .get(&format!(
            "/api/search?pattern=archived-marker&namespace={ns}&archived=1"
        ))
        .await;
    assert_eq!(r.status, 200, "{}", text(&r.body));
    let hits = r.json()["hits"].as_array().cloned().unwrap_or_default();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0]["archived"], true);
    assert_eq!(hits[0]["session"], name.as_str());
    let r = carol
        .get(&format!(
            "/api/search?pattern=archived-marker&namespace={ns}"
        ))
        .await;
    assert_eq!(r.json()["hits"].as_array().map(Vec::len), Some(0));
    // The requester filter: alice's session is found for alice, not for bob.
    for (who, n) in [("alice", 1), ("bob", 0)] {
        let r = carol
            .get(&format!(
                "/api/search?pattern=archived-marker&namespace={ns}&archived=1&requester={who}"
            ))
            .await;
        assert_eq!(r.json()["hits"].as_array().map(Vec::len), Some(n), "{who}");
    }
}
