//! Notifications: the operator posts signed webhooks as sessions move, and a receiver that is
//! down or never answers costs the sessions nothing.

use std::{path::PathBuf, time::Duration};

use aexec_testenv::{TestEnv, User};
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::common::{aexec, env, policy, target_with_operator_exclusive};
use crate::plugin::text;

const SECRET: &str = "a-test-secret-of-32-bytes-length";

/// A request a receiver got.
#[derive(Debug)]
struct Received {
    path: String,
    event: String,
    signature: String,
    content_type: String,
    body: Vec<u8>,
}

/// A local webhook receiver answering every request with `status`.
struct Receiver {
    port: u16,
    rx: mpsc::UnboundedReceiver<Received>,
    /// Received and not asked for yet (the two webhooks' requests interleave).
    seen: Vec<Received>,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(status: u16) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let header = |name: &str| {
                                req.headers()
                                    .get(name)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_owned()
                            };
                            let (path, event, signature, content_type) = (
                                req.uri().path().to_owned(),
                                header("x-aexec-event"),
                                header("x-aexec-signature-256"),
                                header("content-type"),
                            );
                            let body = req.into_body().collect().await?.to_bytes().to_vec();
                            let _ = tx.send(Received {
                                path,
                                event,
                                signature,
                                content_type,
                                body,
                            });
                            let mut resp =
                                Response::new(http_body_util::Empty::<hyper::body::Bytes>::new());
                            *resp.status_mut() =
                                hyper::StatusCode::from_u16(status).expect("status");
                            Ok::<_, hyper::Error>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            port,
            rx,
            seen: Vec::new(),
            _task: task,
        }
    }

    /// The next request, within 30 s.
    async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(30), self.rx.recv())
            .await
            .expect("a notification within 30s")
            .expect("receiver running")
    }

    /// The first request to `path` for `event` (received already, or within 30 s), after
    /// checking every request's signature.
    async fn until(&mut self, path: &str, event: &str) -> Value {
        loop {
            if let Some(i) = self
                .seen
                .iter()
                .position(|r| r.path == path && r.event == event)
            {
                let r = self.seen.remove(i);
                let v: Value = serde_json::from_slice(&r.body).expect("JSON body");
                match path {
                    "/events" => assert_eq!(r.content_type, "application/cloudevents+json"),
                    _ => assert_eq!(r.content_type, "application/json"),
                }
                return v;
            }
            let r = self.next().await;
            assert_eq!(r.signature, sign(&r.body), "a wrong signature on {r:?}");
            self.seen.push(r);
        }
    }
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Restarts the shared operator with `webhooks` (a notifications file), or without any.
async fn restart_with(env: &TestEnv, webhooks: Option<(&tempfile::TempDir, Value)>) {
    let file: Option<PathBuf> = webhooks.map(|(dir, v)| {
        let path = dir.path().join("webhooks.yaml");
        std::fs::write(&path, serde_yaml::to_string(&v).expect("yaml")).expect("write");
        path
    });
    env.set_notifications(file);
    env.stop_operator().await.expect("stopped");
    env.ensure_operator().await.expect("started");
}

/// `aexec_notifications_total{result}` of the shared operator.
async fn notifications(result: &str) -> u64 {
    let (_, metrics) = TestEnv::shared_replica()
        .ops_get("/metrics")
        .await
        .expect("metrics");
    let line = format!("aexec_notifications_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn webhook_delivered_and_signed() {
    let (t, _op) = target_with_operator_exclusive().await;
    let env = env();
    let mut rcv = Receiver::start(200).await;
    let dir = tempfile::tempdir().expect("tmp");
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", rcv.port);
    restart_with(
        env,
        Some((
            &dir,
            json!({"webhooks": [
                {"name": "chat", "url": url("/chat"), "format": "slack", "secret": SECRET,
                 "namespaces": [t.namespace]},
                {"name": "events", "url": url("/events"), "format": "cloudevents",
                 "secret": SECRET, "namespaces": [t.namespace]},
            ]}),
        )),
    )
    .await;
    policy(
        &t,
        "notify",
        json!({"decision": "RequireApproval", "approval": {"required": 1, "users": ["bob"]}}),
    )
    .await;
    let ns = t.namespace.as_str();
    let asked = aexec(
        User::Alice,
        &[
            "--no-wait",
            "-n",
            ns,
            "-r",
            "INC-77",
            &t.pod,
            "--",
            "sh",
            "-c",
            "echo notified; exit 4",
        ],
        None,
    )
    .await;
    assert_eq!(asked.status.code(), Some(0), "{}", text(&asked.stderr));
    let name = text(&asked.stdout).trim().to_owned();

    // The approvers' channel hears of the request, with the exact command to approve it.
    let chat = rcv.until("/chat", "requested").await;
    let line = chat["text"].as_str().expect("text");
    assert!(
        line.contains(&format!("kubectl aexec approve {name} -n {ns}"))
            && line.contains("alice")
            && line.contains("INC-77"),
        "{line}"
    );
    let approved = aexec(User::Bob, &["approve", &name, "-n", ns, "-m", "ok"], None).await;
    assert_eq!(
        approved.status.code(),
        Some(0),
        "{}",
        text(&approved.stderr)
    );
    let ran = aexec(User::Alice, &["attach", &name, "-n", ns], None).await;
    assert_eq!(ran.status.code(), Some(4), "{}", text(&ran.stderr));

    // The CloudEvents receiver sees every step of this session.
    let mut seen = Vec::new();
    for event in ["requested", "approved", "started", "ended"] {
        let e = rcv.until("/events", event).await;
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["type"], format!("dev.aexec.session.{event}"));
        assert_eq!(e["subject"], name.as_str());
        assert_eq!(
            e["source"],
            format!("/apis/aexec.dev/v1alpha1/namespaces/{ns}/execsessions/{name}")
        );
        seen.push(e);
    }
    assert_eq!(seen[3]["data"]["exitCode"], 4, "{}", seen[3]);
    assert_eq!(seen[0]["data"]["requester"], "alice");
    assert!(notifications("delivered").await >= 5);
    restart_with(env, None).await;
}

#[tokio::test]
async fn webhook_down_session_unaffected() {
    let (t, _op) = target_with_operator_exclusive().await;
    let env = env();
    // One receiver refuses everything; another accepts connections and never answers; a
    // third URL has nobody listening.
    let mut refusing = Receiver::start(500).await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    let _hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let dir = tempfile::tempdir().expect("tmp");
    restart_with(
        env,
        Some((
            &dir,
            json!({"webhooks": [
                {"name": "refusing", "url": format!("http://127.0.0.1:{}/", refusing.port),
                 "format": "slack", "secret": SECRET},
                {"name": "silent", "url": format!("http://127.0.0.1:{silent_port}/"),
                 "format": "cloudevents", "secret": SECRET},
                {"name": "closed", "url": format!("http://127.0.0.1:{closed}/"),
                 "format": "slack", "secret": SECRET},
            ]}),
        )),
    )
    .await;
    policy(&t, "notify", json!({"decision": "AutoApprove"})).await;
    let ns = t.namespace.as_str();
    let started = std::time::Instant::now();
    for i in 0..3 {
        let out = aexec(
            User::Alice,
            &["-n", ns, &t.pod, "--", "sh", "-c", &format!("echo run-{i}")],
            None,
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), format!("run-{i}\n"));
    }
    eprintln!(
        "3 sessions with every webhook down took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // The refusing receiver was tried, and tried again.
    let first = refusing.next().await;
    assert_eq!(first.signature, sign(&first.body));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while notifications("failed").await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no notification was given up on within 60s (retried: {})",
            notifications("retried").await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(notifications("retried").await >= 4);
    restart_with(env, None).await;
}
