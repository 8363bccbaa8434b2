//! The aggregated API server for `subresources.aexec.dev/v1alpha1`: the session subresources
//! (`approve`, `deny`; the broker adds `attach`, `terminate`, `recording`) behind the API server.
//!
//! Trust: the API server authenticates the caller and forwards the identity in `X-Remote-*`
//! headers over a TLS client certificate signed by its front-proxy CA. Those headers are believed
//! only on a connection that presented such a certificate with an allowed common name (both read
//! from `kube-system/extension-apiserver-authentication`); every request is then authorized by a
//! SubjectAccessReview and by the business rules in [`crate::control::lifecycle`]. A watch forwarded by
//! another replica arrives over the operator's own certificate instead ([`crate::api::peer`]).

use std::{collections::BTreeMap, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use aexec_crds::{ExecPolicy, ExecSession, SUBRESOURCE_GROUP, UserRef, VERSION};
use anyhow::{Context as _, Result, anyhow, bail};
use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path as UrlPath, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, put},
};
use chrono::Utc;
use k8s_openapi::api::{
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
    core::v1::ConfigMap,
};
use kube::{Api, Client, api::PostParams};
use rustls::{RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    control::lifecycle,
    control::metrics::{ApprovalLabel, Metrics},
    control::policy::Refusal,
    record::storage::Storage as _,
};

/// Largest request body accepted (an approval comment is at most 1 KiB).
pub const MAX_BODY: usize = 64 * 1024;

/// Who the API server says is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub user: UserRef,
    pub uid: Option<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// How to recognise the API server's front proxy, from
/// `kube-system/extension-apiserver-authentication`.
#[derive(Clone, Debug)]
pub struct FrontProxy {
    pub ca_pem: String,
    pub allowed_names: Vec<String>,
    pub username_headers: Vec<String>,
    pub group_headers: Vec<String>,
    pub uid_headers: Vec<String>,
    pub extra_prefixes: Vec<String>,
}

impl FrontProxy {
    /// Reads the ConfigMap the API server publishes for extension API servers.
    pub async fn load(client: &Client) -> Result<Self> {
        let cm = Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
            .get("extension-apiserver-authentication")
            .await
            .context("reading kube-system/extension-apiserver-authentication (the operator needs the extension-apiserver-authentication-reader role)")?;
        Self::from_data(&cm.data.unwrap_or_default())
    }

    /// Parses the ConfigMap's data (pure, for tests).
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<Self> {
        let list = |key: &str, default: &[&str]| -> Result<Vec<String>> {
            match data.get(key) {
                Some(v) if !v.trim().is_empty() => serde_json::from_str(v)
                    .with_context(|| format!("{key} is not a JSON list: {v}")),
                _ => Ok(default.iter().map(|s| (*s).to_owned()).collect()),
            }
        };
        let ca_pem = data
            .get("requestheader-client-ca-file")
            .filter(|s| !s.trim().is_empty())
            .cloned()
            .ok_or_else(|| {
                anyhow!(
                    "the API server publishes no requestheader-client-ca-file: it is not configured \
                     for the aggregation layer (--requestheader-client-ca-file)"
                )
            })?;
        Ok(FrontProxy {
            ca_pem,
            allowed_names: list("requestheader-allowed-names", &[])?,
            username_headers: list("requestheader-username-headers", &["X-Remote-User"])?,
            group_headers: list("requestheader-group-headers", &["X-Remote-Group"])?,
            uid_headers: list("requestheader-uid-headers", &["X-Remote-Uid"])?,
            extra_prefixes: list("requestheader-extra-headers-prefix", &["X-Remote-Extra-"])?,
        })
    }

    /// The identity in the headers of a request that came through the front proxy. Callers must
    /// first have checked the connection's certificate ([`Peer::FrontProxy`]).
    pub fn caller(&self, headers: &HeaderMap) -> Option<Caller> {
        let first = |names: &[String]| {
            names
                .iter()
                .find_map(|n| headers.get(n.as_str()).and_then(|v| v.to_str().ok()))
                .map(str::to_owned)
        };
        let username = first(&self.username_headers).filter(|u| !u.is_empty())?;
        let groups = self
            .group_headers
            .iter()
            .flat_map(|n| headers.get_all(n.as_str()).iter())
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in headers {
            for prefix in &self.extra_prefixes {
                let n = name.as_str();
                let Some(key) = n
                    .get(..prefix.len())
                    .filter(|p| p.eq_ignore_ascii_case(prefix) && n.len() > prefix.len())
                    .map(|_| &n[prefix.len()..])
                else {
                    continue;
                };
                if let Ok(v) = value.to_str() {
                    // Header names carry extra keys percent-encoded and lower-cased.
                    extra
                        .entry(percent_decode(key))
                        .or_default()
                        .push(v.to_owned());
                }
            }
        }
        Some(Caller {
            user: UserRef { username, groups },
            uid: first(&self.uid_headers),
            extra,
        })
    }
}

impl FrontProxy {
    /// Whether a header carries the caller's identity (user, groups, UID, extra): what a
    /// replica copies onto a watch it forwards.
    pub fn is_identity_header(&self, name: &str) -> bool {
        let is = |names: &[String]| names.iter().any(|n| n.eq_ignore_ascii_case(name));
        is(&self.username_headers)
            || is(&self.group_headers)
            || is(&self.uid_headers)
            || self.extra_prefixes.iter().any(|p| {
                name.len() > p.len()
                    && name
                        .get(..p.len())
                        .is_some_and(|h| h.eq_ignore_ascii_case(p))
            })
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the TLS handshake established about the other end of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// The API server's front proxy: its headers are trusted.
    FrontProxy,
    /// Another replica of this operator (it presented the serving certificate), forwarding a
    /// watch it received from the front proxy: its identity headers are trusted for `observe`.
    Replica,
    /// Anyone else (no certificate, or one from another CA or with a name not allowed).
    Untrusted(String),
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub client: Client,
    pub front_proxy: Arc<FrontProxy>,
    pub metrics: Metrics,
    /// Publishes an Event on the session for every decision recorded.
    pub recorder: kube::runtime::events::Recorder,
    /// This replica's name, written into the status of the sessions it brokers.
    pub instance: String,
    /// The sessions this replica relays.
    pub sessions: crate::broker::attach::Sessions,
    /// Where recordings are written.
    pub recordings: std::sync::Arc<crate::record::spool::Spool>,
    /// The keys that sign session records (their public halves are served as `signingkeys`).
    pub signer: crate::record::signing::Signer,
    /// How this replica reaches the others, and recognises them.
    pub peers: Arc<crate::api::peer::Peers>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// Serves the aggregated API on `bind` until `shutdown` resolves.
pub async fn serve(
    bind: SocketAddr,
    cert: &Path,
    key: &Path,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let tls = tls_config(cert, key, &state.front_proxy, &state.peers)?;
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("binding the aggregated API to {bind}"))?;
    info!(%bind, "aggregated API listening");
    let app = router(state.clone());
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => { warn!(error = %e, "accepting a connection"); continue; }
            },
        };
        // Small writes (a frame, a status line) go out at once: with Nagle's algorithm on, a
        // write behind an unacknowledged one waits for the peer's delayed ACK (up to 40 ms).
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let allowed = state.front_proxy.allowed_names.clone();
        let peers = state.peers.clone();
        tokio::spawn(
            async move {
                let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return debug!(error = %e, "TLS handshake failed"),
                    Err(_) => return debug!("TLS handshake timed out"),
                };
                let peer = classify_peer(tls.get_ref().1.peer_certificates(), &allowed, &peers);
                let svc = app.map_request(move |req: http::Request<hyper::body::Incoming>| {
                    let mut req = req.map(axum::body::Body::new);
                    req.extensions_mut().insert(peer.clone());
                    req
                });
                let svc = hyper_util::service::TowerToHyperService::new(svc);
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                if let Err(e) = builder
                    .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), svc)
                    .await
                {
                    debug!(error = %e, "connection ended with an error");
                }
            }
            .instrument(info_span!("conn", %remote)),
        );
    }
    Ok(())
}

fn tls_config(
    cert: &Path,
    key: &Path,
    fp: &FrontProxy,
    peers: &crate::api::peer::Peers,
) -> Result<ServerConfig> {
    let (certs, key) = crate::api::peer::read_identity(cert, key)?;
    let mut roots = RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut fp.ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    if roots.is_empty() {
        bail!("the front-proxy CA bundle holds no certificate");
    }
    // Unauthenticated clients may connect, so that they get a Kubernetes Status saying why they
    // are refused rather than a bare handshake failure.
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .allow_unauthenticated()
        .build()?;
    let verifier = peers.client_verifier(verifier);
    let mut config = ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A certificate verified against the front-proxy CA (rustls did that) is trusted when its
/// common name is allowed (an empty list allows any); the operator's own is a replica's.
fn classify_peer(
    certs: Option<&[rustls::pki_types::CertificateDer<'_>]>,
    allowed: &[String],
    peers: &crate::api::peer::Peers,
) -> Peer {
    let Some(leaf) = certs.and_then(|c| c.first()) else {
        return Peer::Untrusted("no client certificate".into());
    };
    if peers.is_peer(leaf) {
        return Peer::Replica;
    }
    let Ok((_, x509)) = x509_parser::parse_x509_certificate(leaf) else {
        return Peer::Untrusted("unparseable client certificate".into());
    };
    let cn = x509
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    if allowed.is_empty() || allowed.contains(&cn) {
        Peer::FrontProxy
    } else {
        Peer::Untrusted(format!(
            "client certificate CN={cn} is not an allowed front proxy"
        ))
    }
}

fn router(state: AppState) -> Router {
    let base = format!("/apis/{SUBRESOURCE_GROUP}/{VERSION}");
    Router::new()
        .route("/apis", get(api_group_list))
        .route(&format!("/apis/{SUBRESOURCE_GROUP}"), get(api_group))
        .route(&base, get(api_resources))
        .route(
            &format!("{base}/namespaces/{{namespace}}/execsessions/{{name}}/approve"),
            put(approve),
        )
        .route(
            &format!("{base}/namespaces/{{namespace}}/execsessions/{{name}}/deny"),
            put(deny),
        )
        .route(
            &format!("{base}/namespaces/{{namespace}}/execsessions/{{name}}/attach"),
            get(attach),
        )
        .route(
            &format!("{base}/namespaces/{{namespace}}/execsessions/{{name}}/terminate"),
            put(terminate),
        )
        .route(
            &format!("{base}/namespaces/{{namespace}}/execsessions/{{name}}/observe"),
            get(observe),
        )
        .route(
            &format!("{base}/namespaces/{{namespace}}/execsessions/{{name}}/recording"),
            get(recording),
        )
        .route(
            &format!("{base}/namespaces/{{namespace}}/execsessions/{{name}}/withdraw"),
            put(withdraw),
        )
        .route(&format!("{base}/recordings"), get(list_all_recordings))
        .route(
            &format!("{base}/namespaces/{{namespace}}/recordings"),
            get(list_recordings),
        )
        .route(
            &format!("{base}/namespaces/{{namespace}}/recordings/{{name}}"),
            get(get_recording),
        )
        .route(
            &format!("{base}/namespaces/{{namespace}}/recordings/{{name}}/content"),
            get(recording_content),
        )
        .route(&format!("{base}/signingkeys"), get(signing_keys))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies are read with their own bound (read_body), which answers with a Status.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// A Kubernetes `Status` error: what every refusal of this API looks like on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusError {
    pub code: u16,
    pub reason: String,
    pub message: String,
}

/// A [`StatusError`].
pub fn status_error(code: u16, reason: &str, message: impl Into<String>) -> StatusError {
    StatusError {
        code,
        reason: reason.to_owned(),
        message: message.into(),
    }
}

impl IntoResponse for StatusError {
    fn into_response(self) -> Response {
        let body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code,
        });
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, Json(body)).into_response()
    }
}

impl From<Refusal> for StatusError {
    fn from(r: Refusal) -> Self {
        status_error(r.code, r.reason, r.message)
    }
}

async fn not_found(uri: axum::http::Uri) -> StatusError {
    status_error(
        404,
        "NotFound",
        format!(
            "the server could not find the requested resource {}",
            uri.path()
        ),
    )
}

/// A known path with the wrong method: a `Status` naming the method to use (axum would answer
/// with an empty body, which kubectl shows as a bare 405).
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> StatusError {
    status_error(
        405,
        "MethodNotAllowed",
        wrong_method_message(&method, uri.path()),
    )
}

/// What to say about `method` on `path` (pure, for tests).
fn wrong_method_message(method: &axum::http::Method, path: &str) -> String {
    let sub = path.rsplit('/').next().unwrap_or_default();
    let how = match sub {
        "approve" | "deny" => format!(
            "use PUT, with an optional JSON body {{\"comment\": \"why\"}} (kubectl aexec {sub} does)"
        ),
        "terminate" => "use PUT (kubectl aexec terminate does)".to_owned(),
        "attach" => format!(
            "use GET with a WebSocket upgrade offering {} (kubectl aexec attach does; the SPDY POST of kubectl exec is not supported)",
            crate::broker::frames::V5
        ),
        "recording" => "use GET (kubectl aexec replay, export and verify do)".to_owned(),
        _ => "use GET".to_owned(),
    };
    format!("{method} is not allowed on {path}: {how}")
}

fn group_version() -> serde_json::Value {
    json!({"groupVersion": format!("{SUBRESOURCE_GROUP}/{VERSION}"), "version": VERSION})
}

async fn api_group_list() -> Json<serde_json::Value> {
    Json(json!({
        "kind": "APIGroupList", "apiVersion": "v1",
        "groups": [{"name": SUBRESOURCE_GROUP, "versions": [group_version()], "preferredVersion": group_version()}]
    }))
}

async fn api_group() -> Json<serde_json::Value> {
    Json(json!({
        "kind": "APIGroup", "apiVersion": "v1", "name": SUBRESOURCE_GROUP,
        "versions": [group_version()], "preferredVersion": group_version()
    }))
}

async fn api_resources() -> Json<serde_json::Value> {
    let sub = |name: &str, verbs: &[&str]| {
        json!({"name": format!("execsessions/{name}"), "singularName": "", "namespaced": true,
               "kind": "ExecSession", "verbs": verbs})
    };
    Json(json!({
        "kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": format!("{SUBRESOURCE_GROUP}/{VERSION}"),
        // The operator's version, for `kubectl aexec version` (clients ignore unknown keys; any
        // authenticated user may read discovery, so no role is needed to see it).
        "aexecVersion": env!("CARGO_PKG_VERSION"),
        "resources": [sub("approve", &["update"]), sub("deny", &["update"]), sub("attach", &["get", "create"]),
            sub("terminate", &["update"]),
            sub("observe", &["get"]),
            sub("recording", &["get"]),
            sub("withdraw", &["update"]),
            {"name": "recordings", "singularName": "recording", "namespaced": true, "kind": "Recording",
             "verbs": ["get", "list"]},
            {"name": "recordings/content", "singularName": "", "namespaced": true, "kind": "Recording",
             "verbs": ["get"]},
            {"name": "signingkeys", "singularName": "signingkey", "namespaced": false, "kind": "SigningKey",
             "verbs": ["list"]}]
    }))
}

/// The body of `approve` and `deny`: an optional comment.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    #[serde(default)]
    pub comment: Option<String>,
}

/// Reads at most [`MAX_BODY`] bytes: a larger body is refused, never buffered.
async fn read_body(body: axum::body::Body) -> Result<Bytes, StatusError> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        status_error(
            413,
            "RequestEntityTooLarge",
            format!("the request body exceeds {MAX_BODY} bytes"),
        )
    })
}

fn parse_body(body: &Bytes) -> Result<DecisionBody, StatusError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DecisionBody::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        status_error(
            400,
            "BadRequest",
            format!("the body must be JSON like {{\"comment\": \"why\"}}: {e}"),
        )
    })
}

/// Authenticates (front proxy + headers) and authorizes (SubjectAccessReview) a request on a
/// session subresource.
async fn authorize(
    state: &AppState,
    peer: &Peer,
    headers: &HeaderMap,
    namespace: &str,
    name: &str,
    verb: &str,
    subresource: &str,
) -> Result<Caller, StatusError> {
    authorize_on(
        state,
        peer,
        headers,
        &Target {
            resource: "execsessions",
            subresource: Some(subresource),
            namespace: Some(namespace),
            name: Some(name),
        },
        verb,
    )
    .await
}

/// What a request acts on, for its SubjectAccessReview.
#[derive(Clone, Copy, Debug)]
struct Target<'a> {
    resource: &'a str,
    subresource: Option<&'a str>,
    /// `None` for cluster-scoped resources and lists across namespaces.
    namespace: Option<&'a str>,
    name: Option<&'a str>,
}

impl Target<'_> {
    /// `execsessions/approve`, `recordings`, ...
    fn path(&self) -> String {
        match self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.to_owned(),
        }
    }

    /// The user role that grants it, for a refusal's hint.
    fn role(&self) -> &'static str {
        match (self.resource, self.subresource) {
            (_, Some("approve" | "deny")) => "aexec-approver",
            (_, Some("observe")) => "aexec-approver or aexec-auditor",
            (_, Some("recording")) | ("recordings" | "signingkeys", _) => "aexec-auditor",
            _ => "aexec-requester",
        }
    }
}

/// [`authorize`] for any resource of this API.
async fn authorize_on(
    state: &AppState,
    peer: &Peer,
    headers: &HeaderMap,
    target: &Target<'_>,
    verb: &str,
) -> Result<Caller, StatusError> {
    match peer {
        Peer::FrontProxy => {}
        // A replica forwards watches, nothing else: the identity it passes on is believed
        // only there (the SubjectAccessReview below is this replica's own).
        Peer::Replica if target.subresource == Some("observe") => {}
        Peer::Replica => {
            return Err(status_error(
                401,
                "Unauthorized",
                format!(
                    "operator replicas forward only watches (observe) to each other, not {}",
                    target.path()
                ),
            ));
        }
        Peer::Untrusted(why) => {
            return Err(status_error(
                401,
                "Unauthorized",
                format!(
                    "this API is served through the Kubernetes API server (kubectl aexec, or \
                     kubectl --raw); direct requests are refused ({why})"
                ),
            ));
        }
    }
    let caller = state.front_proxy.caller(headers).ok_or_else(|| {
        status_error(
            401,
            "Unauthorized",
            "the front proxy sent no user (X-Remote-User)",
        )
    })?;
    if !review(state, &caller, target, verb).await? {
        let role = target.role();
        let scope = match target.namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_owned(),
        };
        return Err(status_error(
            403,
            "Forbidden",
            format!(
                "User \"{}\" cannot {verb} resource \"{}\" in API group \
                 \"{SUBRESOURCE_GROUP}\" {scope}: ask for the {role} role",
                caller.user.username,
                target.path()
            ),
        ));
    }
    Ok(caller)
}

/// Whether `caller` may `verb` the target, as a SubjectAccessReview answers.
async fn review(
    state: &AppState,
    caller: &Caller,
    target: &Target<'_>,
    verb: &str,
) -> Result<bool, StatusError> {
    let sar = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(caller.user.username.clone()),
            groups: Some(caller.user.groups.clone()),
            uid: caller.uid.clone(),
            extra: Some(caller.extra.clone()),
            resource_attributes: Some(ResourceAttributes {
                group: Some(SUBRESOURCE_GROUP.into()),
                version: Some(VERSION.into()),
                resource: Some(target.resource.into()),
                subresource: target.subresource.map(Into::into),
                namespace: target.namespace.map(Into::into),
                name: target.name.map(Into::into),
                verb: Some(verb.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let review = Api::<SubjectAccessReview>::all(state.client.clone())
        .create(&PostParams::default(), &sar)
        .await
        .map_err(|e| {
            warn!(error = %e, "SubjectAccessReview failed");
            status_error(
                500,
                "InternalError",
                "could not check authorization (SubjectAccessReview failed); try again",
            )
        })?;
    Ok(review.status.map(|s| s.allowed).unwrap_or(false))
}

/// Whether an authenticated caller may also `verb` a session subresource: a second right checked
/// in the middle of a request (a watcher asking to terminate needs `update` on `terminate`).
pub async fn may(
    state: &AppState,
    caller: &Caller,
    namespace: &str,
    name: &str,
    verb: &str,
    subresource: &str,
) -> Result<bool, StatusError> {
    let target = Target {
        resource: "execsessions",
        subresource: Some(subresource),
        namespace: Some(namespace),
        name: Some(name),
    };
    review(state, caller, &target, verb).await
}

async fn approve(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    decide(state, peer, namespace, name, headers, body, Action::Approve).await
}

async fn attach(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    req: axum::extract::Request,
) -> Response {
    let headers = req.headers().clone();
    match authorize(&state, &peer, &headers, &namespace, &name, "get", "attach").await {
        Ok(caller) => crate::broker::attach::attach(state, caller, namespace, name, req).await,
        Err(e) => e.into_response(),
    }
}

async fn observe(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    req: axum::extract::Request,
) -> Response {
    let headers = req.headers().clone();
    match authorize(&state, &peer, &headers, &namespace, &name, "get", "observe").await {
        Ok(caller) => {
            let forwarded = peer == Peer::Replica;
            crate::api::observe::observe(state, caller, namespace, name, forwarded, req).await
        }
        Err(e) => e.into_response(),
    }
}

async fn terminate(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let caller = match authorize(
        &state,
        &peer,
        &headers,
        &namespace,
        &name,
        "update",
        "terminate",
    )
    .await
    {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    match crate::broker::attach::terminate(&state, &caller, &namespace, &name).await {
        Ok(s) => (StatusCode::OK, Json(s)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Reads a session, or the `Status` a caller should see: 404 naming it, 500 on a read failure.
pub async fn get_session(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<ExecSession, StatusError> {
    Api::<ExecSession>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| status_error(500, "InternalError", format!("reading the session: {e}")))?
        .ok_or_else(|| {
            status_error(
                404,
                "NotFound",
                format!("execsessions.aexec.dev \"{name}\" not found in namespace \"{namespace}\""),
            )
        })
}

/// `?format=v3|v2|text|tar|files` of `recording` (`tar` and `files`: a copy's files).
#[derive(Debug, Deserialize)]
struct RecordingQuery {
    #[serde(default)]
    format: Option<String>,
    /// One stored object as it is (`manifest.json`, `seg-NNNNNN.cast`, `seg-NNNNNN.json`), not
    /// verified: for clients that verify the chain themselves (`kubectl aexec verify`).
    #[serde(default)]
    object: Option<String>,
}

async fn recording(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<RecordingQuery>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        authorize(
            &state,
            &peer,
            &headers,
            &namespace,
            &name,
            "get",
            "recording",
        )
        .await?;
        let session = get_session(&state.client, &namespace, &name).await?;
        if let Some(object) = q.object.as_deref() {
            return raw_object(&state, &crate::record::recorder::prefix(&session), object).await;
        }
        match q.format.as_deref() {
            Some("files") => {
                let list = crate::record::recorder::file_list(&state.recordings, &session)
                    .await
                    .map_err(read_error)?;
                return Ok(Json(list).into_response());
            }
            Some("tar") => {
                if session.spec.copy.is_none() {
                    return Err(status_error(
                        404,
                        "NotFound",
                        "the session is not a copy (kubectl aexec cp): it has no files",
                    ));
                }
                let verified =
                    crate::record::recorder::verify(state.recordings.clone(), &session, None)
                        .await
                        .map_err(read_error)?;
                return Ok(stream_tar(verified));
            }
            _ => {}
        }
        let (export, ctype) = export_format(q.format.as_deref())?;
        // Two passes, so that memory does not grow with the recording: verify everything
        // first (a failure is still a Status), then stream it, checking each segment again.
        let verified = crate::record::recorder::verify(state.recordings.clone(), &session, export)
            .await
            .map_err(read_error)?;
        Ok::<_, StatusError>(stream_verified(verified, export, ctype))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `?format=` of a recording: the conversion and the content type.
fn export_format(
    format: Option<&str>,
) -> Result<(Option<crate::recording::cast::Export>, &'static str), StatusError> {
    use crate::recording::cast::Export;
    Ok(match format.unwrap_or("v3") {
        "v3" => (None, "application/x-asciicast"),
        "v2" => (Some(Export::V2), "application/x-asciicast"),
        "text" => (Some(Export::Text), "text/plain; charset=utf-8"),
        other => {
            return Err(status_error(
                400,
                "BadRequest",
                format!(
                    "unknown format {other:?}: use v3, v2 or text (or, for a copy, tar or files)"
                ),
            ));
        }
    })
}

fn read_error(e: crate::record::recorder::ReadError) -> StatusError {
    match e {
        crate::record::recorder::ReadError::Verification(e) => status_error(
            409,
            "Conflict",
            format!("the recording failed verification or cannot be read: {e}"),
        ),
        crate::record::recorder::ReadError::Cast(e) => status_error(
            500,
            "InternalError",
            format!("the recording is not valid asciicast: {e}"),
        ),
        crate::record::recorder::ReadError::Empty(e) => status_error(404, "NotFound", e),
    }
}

/// The second pass of serving a verified recording: its body, streamed.
fn stream_verified(
    verified: crate::record::recorder::Verified,
    export: Option<crate::recording::cast::Export>,
    ctype: &'static str,
) -> Response {
    use futures::TryStreamExt as _;
    let length = verified.cast_bytes();
    let body = axum::body::Body::from_stream(
        verified
            .stream(export)
            .map_ok(Bytes::from)
            .map_err(std::io::Error::other),
    );
    let mut resp = ([(axum::http::header::CONTENT_TYPE, ctype)], body).into_response();
    if export.is_none() {
        // The cast's size is known: a client can tell a cut transfer from a short file.
        resp.headers_mut()
            .insert(axum::http::header::CONTENT_LENGTH, length.into());
    }
    resp
}

/// A copy's tar stream, verified (with the rest of its recording) and then streamed.
fn stream_tar(verified: crate::record::recorder::Verified) -> Response {
    use futures::TryStreamExt as _;
    let length = verified.tar_bytes();
    let body = axum::body::Body::from_stream(
        verified
            .stream_tar()
            .map_ok(Bytes::from)
            .map_err(std::io::Error::other),
    );
    let mut resp = (
        [(axum::http::header::CONTENT_TYPE, "application/x-tar")],
        body,
    )
        .into_response();
    resp.headers_mut()
        .insert(axum::http::header::CONTENT_LENGTH, length.into());
    resp
}

/// One stored object of a session's recording (under `prefix`), byte for byte.
async fn raw_object(state: &AppState, prefix: &str, object: &str) -> Result<Response, StatusError> {
    if crate::recording::chain::parse_file_name(object).is_none()
        && object != crate::recording::record::RECORD_NAME
    {
        return Err(status_error(
            400,
            "BadRequest",
            format!(
                "unknown recording object {object:?}: use record.json, manifest.json, seg-NNNNNN.cast, seg-NNNNNN.tar, seg-NNNNNN.files.json or seg-NNNNNN.json"
            ),
        ));
    }
    let key = format!("{prefix}/{object}");
    match state
        .recordings
        .get(&key, crate::record::recorder::MAX_OBJECT)
        .await
    {
        Ok(bytes) => Ok((
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            bytes,
        )
            .into_response()),
        Err(e) => Err(status_error(
            404,
            "NotFound",
            format!("recording object {object:?} cannot be read: {e:#}"),
        )),
    }
}

async fn deny(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    decide(state, peer, namespace, name, headers, body, Action::Deny).await
}

async fn withdraw(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    decide(
        state,
        peer,
        namespace,
        name,
        headers,
        body,
        Action::Withdraw,
    )
    .await
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Approve,
    Deny,
    Withdraw,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Approve => "approve",
            Action::Deny => "deny",
            Action::Withdraw => "withdraw",
        }
    }
}

async fn decide(
    state: AppState,
    peer: Peer,
    namespace: String,
    name: String,
    headers: HeaderMap,
    body: axum::body::Body,
    action: Action,
) -> Response {
    let span = info_span!("decision", action = action.as_str(), %namespace, session = %name);
    async {
        let res = decide_inner(&state, &peer, &namespace, &name, &headers, body, action).await;
        let result = match &res {
            Ok(_) => "accepted".to_owned(),
            Err(e) => e.reason.clone(),
        };
        state
            .metrics
            .approvals
            .get_or_create(&ApprovalLabel {
                action: action.as_str().into(),
                result,
            })
            .inc();
        match res {
            Ok(s) => (StatusCode::OK, Json(s)).into_response(),
            Err(e) => e.into_response(),
        }
    }
    .instrument(span)
    .await
}

async fn decide_inner(
    state: &AppState,
    peer: &Peer,
    namespace: &str,
    name: &str,
    headers: &HeaderMap,
    body: axum::body::Body,
    action: Action,
) -> Result<ExecSession, StatusError> {
    let caller = authorize(
        state,
        peer,
        headers,
        namespace,
        name,
        "update",
        action.as_str(),
    )
    .await?;
    let body = parse_body(&read_body(body).await?)?;
    let sessions: Api<ExecSession> = Api::namespaced(state.client.clone(), namespace);
    let policies: Api<ExecPolicy> = Api::all(state.client.clone());
    let internal =
        |what: &str, e: kube::Error| status_error(500, "InternalError", format!("{what}: {e}"));
    // Optimistic concurrency: read, decide, write with the resourceVersion read; on conflict
    // (the controller or another approver wrote meanwhile) decide again on the new version.
    for _ in 0..5 {
        let session = get_session(&state.client, namespace, name).await?;
        let policy = match session.status.as_ref().and_then(|s| s.policy.clone()) {
            Some(p) if action != Action::Withdraw => policies
                .get_opt(&p)
                .await
                .map_err(|e| internal("reading the policy", e))?,
            _ => None,
        };
        let now = Utc::now();
        let decided = match action {
            Action::Approve => lifecycle::approve(
                &session,
                policy.as_ref(),
                &caller.user,
                body.comment.clone(),
                now,
            ),
            Action::Deny => lifecycle::deny(
                &session,
                policy.as_ref(),
                &caller.user,
                body.comment.clone(),
                now,
            ),
            Action::Withdraw => {
                lifecycle::withdraw(&session, &caller.user, body.comment.clone(), now)
            }
        };
        let status = decided.inspect_err(|r| {
            info!(user = %caller.user.username, reason = r.reason, "refused: {}", r.message);
        })?;
        let mut updated = session.clone();
        updated.status = Some(status);
        match sessions
            .replace_status(name, &PostParams::default(), &updated)
            .await
        {
            Ok(s) => {
                info!(user = %caller.user.username, "{} recorded", action.as_str());
                publish_decision(state, &s, &caller.user.username, action).await;
                return Ok(s);
            }
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(internal("writing the session", e)),
        }
    }
    Err(status_error(
        409,
        "Conflict",
        "the session kept changing while recording the decision; try again",
    ))
}

/// An Event saying who decided what, so `kubectl describe` shows the approvals as they come.
async fn publish_decision(state: &AppState, session: &ExecSession, user: &str, action: Action) {
    use kube::{
        Resource,
        runtime::events::{Event, EventType},
    };
    let st = session.status.as_ref();
    let comment = match action {
        Action::Approve => st
            .and_then(|s| s.approvals.last())
            .and_then(|d| d.comment.clone()),
        Action::Deny => st
            .and_then(|s| s.denial.as_ref())
            .and_then(|d| d.comment.clone()),
        Action::Withdraw => st
            .and_then(|s| s.withdrawal.as_ref())
            .and_then(|d| d.comment.clone()),
    };
    let (type_, reason, mut note) = match action {
        Action::Approve => (
            EventType::Normal,
            "ApprovalGiven",
            format!(
                "approved by {user} ({})",
                st.and_then(|s| s.approval_summary.clone())
                    .unwrap_or_default()
            ),
        ),
        Action::Deny => (EventType::Warning, "Denied", format!("denied by {user}")),
        Action::Withdraw => (
            EventType::Normal,
            "Withdrawn",
            format!("withdrawn by {user}"),
        ),
    };
    if let Some(c) = comment {
        note = format!("{note}: {c}");
    }
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: action.as_str().into(),
        secondary: None,
    };
    if let Err(e) = state
        .recorder
        .publish(&event, &session.object_ref(&()))
        .await
    {
        warn!(error = %e, "publishing an event");
    }
}

// ---- review from the store: recordings and the keys that sign them

/// The query of a `recordings` list.
#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    /// `requester=alice,pod=web-0,session=exec-1,phase=Succeeded`.
    #[serde(default, rename = "fieldSelector")]
    field_selector: Option<String>,
    /// Sessions still going on (or ended) at or after this time (RFC 3339).
    #[serde(default)]
    since: Option<String>,
    /// Sessions requested at or before this time (RFC 3339).
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    /// Where the previous page stopped (its `metadata.continue`).
    #[serde(default, rename = "continue")]
    continue_after: Option<String>,
}

/// Records in one list response when the caller sets no `limit` (each costs a read from the
/// store): the response's `metadata.continue` fetches the next page.
pub const DEFAULT_LIST_LIMIT: usize = 500;
/// Records read from the store at once while listing.
const LIST_READS: usize = 16;

async fn list_all_recordings(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    axum::extract::Query(q): axum::extract::Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    recordings_page(&state, &peer, &headers, None, q)
        .await
        .map_or_else(IntoResponse::into_response, |v| Json(v).into_response())
}

async fn list_recordings(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    UrlPath(namespace): UrlPath<String>,
    axum::extract::Query(q): axum::extract::Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    recordings_page(&state, &peer, &headers, Some(&namespace), q)
        .await
        .map_or_else(IntoResponse::into_response, |v| Json(v).into_response())
}

/// The public keys that verify records, or the `Status` saying why they cannot be read.
async fn public_keys(state: &AppState) -> Result<crate::recording::record::KeyRing, StatusError> {
    state.signer.public_keys().await.map_err(|e| {
        warn!(error = %e, "reading the signing keys");
        status_error(
            500,
            "InternalError",
            format!("the operator cannot read its signing keys: {e}"),
        )
    })
}

/// One page of session records from the store, newest directories last (by name).
async fn recordings_page(
    state: &AppState,
    peer: &Peer,
    headers: &HeaderMap,
    namespace: Option<&str>,
    q: ListQuery,
) -> Result<serde_json::Value, StatusError> {
    use crate::record::archive::{self, Checked};
    use futures::StreamExt as _;
    authorize_on(
        state,
        peer,
        headers,
        &Target {
            resource: "recordings",
            subresource: None,
            namespace,
            name: None,
        },
        "list",
    )
    .await?;
    let filter = archive::Filter::parse(
        q.field_selector.as_deref(),
        q.since.as_deref(),
        q.until.as_deref(),
    )
    .map_err(|e| status_error(400, "BadRequest", e))?;
    let limit = q.limit.filter(|l| *l > 0).unwrap_or(DEFAULT_LIST_LIMIT);
    let keys = public_keys(state).await?;
    let store = state.recordings.store();
    let starts_with = filter
        .session
        .as_ref()
        .map(|s| format!("{s}-"))
        .unwrap_or_default();
    let dirs = archive::list(store, namespace, &starts_with)
        .await
        .map_err(|e| {
            status_error(
                503,
                "ServiceUnavailable",
                format!("the recording store cannot be listed: {e:#}"),
            )
        })?;
    let after = q.continue_after.unwrap_or_default();
    let mut pending = dirs.into_iter().filter(|d| d.key() > after).peekable();
    let mut items = Vec::new();
    let mut last = None;
    let mut cut = false;
    while !cut && items.len() < limit && pending.peek().is_some() {
        let batch: Vec<archive::Dir> = pending.by_ref().take(LIST_READS).collect();
        let read: Vec<(archive::Dir, anyhow::Result<Option<Vec<u8>>>)> =
            futures::stream::iter(batch)
                .map(|d| async move {
                    let r = archive::read_record(store, &d).await;
                    (d, r)
                })
                .buffered(LIST_READS)
                .collect()
                .await;
        for (dir, bytes) in read {
            if items.len() >= limit {
                // Not taken: the next page starts with it.
                cut = true;
                break;
            }
            last = Some(dir.key());
            let bytes = match bytes {
                Ok(Some(b)) => b,
                // No record: a session still going on, or one that ended before records.
                Ok(None) => continue,
                Err(e) => {
                    warn!(dir = %dir.key(), error = %format!("{e:#}"), "reading a session record");
                    Vec::new()
                }
            };
            let checked = archive::check(&bytes, &keys);
            let keep = match &checked {
                Checked::Valid { record, .. } | Checked::Invalid { record, .. } => {
                    filter.matches(record)
                }
                // Unreadable: shown unless the caller filters (it matches nothing specific).
                Checked::Unreadable(_) => !filter.selects_any(),
            };
            if keep {
                let uri = store.uri(&format!(
                    "{}/{}",
                    dir.key(),
                    crate::recording::record::RECORD_NAME
                ));
                items.push(archive::recording_object(&dir, &uri, &checked, true));
            }
        }
    }
    let more = cut || pending.peek().is_some();
    let mut metadata = json!({"resourceVersion": ""});
    if more && let Some(last) = last {
        metadata["continue"] = json!(last);
    }
    Ok(json!({
        "apiVersion": format!("{SUBRESOURCE_GROUP}/{VERSION}"),
        "kind": "RecordingList",
        "metadata": metadata,
        "items": items,
    }))
}

/// Reads and checks the record of `namespace/name` (a `<session>-<uid>` directory).
async fn find_record(
    state: &AppState,
    namespace: &str,
    name: &str,
) -> Result<(crate::record::archive::Dir, Vec<u8>), StatusError> {
    let dir = crate::record::archive::Dir {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    let missing = || {
        status_error(
            404,
            "NotFound",
            format!(
                "recordings.{SUBRESOURCE_GROUP} \"{name}\" not found in namespace \"{namespace}\" \
                 (no session record in the store; list them with kubectl aexec list --archived)"
            ),
        )
    };
    if crate::record::storage::check_key(namespace).is_err()
        || crate::record::storage::check_key(name).is_err()
    {
        return Err(missing());
    }
    match crate::record::archive::read_record(state.recordings.store(), &dir).await {
        Ok(Some(bytes)) => Ok((dir, bytes)),
        Ok(None) => Err(missing()),
        Err(e) => Err(status_error(
            503,
            "ServiceUnavailable",
            format!("the session record cannot be read from the store: {e:#}"),
        )),
    }
}

async fn get_recording(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        authorize_on(
            &state,
            &peer,
            &headers,
            &Target {
                resource: "recordings",
                subresource: None,
                namespace: Some(&namespace),
                name: Some(&name),
            },
            "get",
        )
        .await?;
        let keys = public_keys(&state).await?;
        let (dir, bytes) = find_record(&state, &namespace, &name).await?;
        let uri = state.recordings.store().uri(&format!(
            "{}/{}",
            dir.key(),
            crate::recording::record::RECORD_NAME
        ));
        let checked = crate::record::archive::check(&bytes, &keys);
        Ok::<_, StatusError>(Json(crate::record::archive::recording_object(
            &dir, &uri, &checked, false,
        )))
    }
    .await;
    result.map_or_else(IntoResponse::into_response, IntoResponse::into_response)
}

/// `GET .../recordings/{name}/content?format=v3|v2|text` (verified against the signed record)
/// or `?object=NAME` (one stored object as it is, for clients that verify themselves).
async fn recording_content(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<RecordingQuery>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        authorize_on(
            &state,
            &peer,
            &headers,
            &Target {
                resource: "recordings",
                subresource: Some("content"),
                namespace: Some(&namespace),
                name: Some(&name),
            },
            "get",
        )
        .await?;
        let (dir, bytes) = find_record(&state, &namespace, &name).await?;
        if let Some(object) = q.object.as_deref() {
            return raw_object(&state, &dir.key(), object).await;
        }
        // A copy's files (`export --files`), verified with the rest of the recording.
        let tar = q.format.as_deref() == Some("tar");
        let (export, ctype) = match tar {
            true => (None, "application/x-tar"),
            false => export_format(q.format.as_deref())?,
        };
        let keys = public_keys(&state).await?;
        let verified = crate::recording::record::open(&bytes, &keys).map_err(|e| {
            status_error(
                409,
                "Conflict",
                format!("the session record failed verification: {e}"),
            )
        })?;
        let record = verified.record;
        let Some(rec) = record.recording.as_ref() else {
            return Err(status_error(
                404,
                "NotFound",
                format!(
                    "session {namespace}/{} never ran ({}: {}): it has no recording",
                    record.session.name, record.end.phase, record.end.message
                ),
            ));
        };
        if tar && record.spec.copy.is_none() {
            return Err(status_error(
                404,
                "NotFound",
                "the session was not a copy (kubectl aexec cp): it has no files",
            ));
        }
        let verified = crate::record::recorder::verify_at(
            state.recordings.clone(),
            dir.key(),
            &rec.head,
            Some(&record),
            export,
        )
        .await
        .map_err(read_error)?;
        Ok::<_, StatusError>(match tar {
            true => stream_tar(verified),
            false => stream_verified(verified, export, ctype),
        })
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET .../signingkeys`: the public keys that verify session records (the newest signs).
async fn signing_keys(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        authorize_on(
            &state,
            &peer,
            &headers,
            &Target {
                resource: "signingkeys",
                subresource: None,
                namespace: None,
                name: None,
            },
            "list",
        )
        .await?;
        let signing = state
            .signer
            .keys()
            .await
            .map(|k| k.signing.id().to_owned())
            .ok();
        let ring = public_keys(&state).await?;
        let items: Vec<serde_json::Value> = ring
            .keys()
            .iter()
            .map(|k| {
                json!({
                    "apiVersion": format!("{SUBRESOURCE_GROUP}/{VERSION}"),
                    "kind": "SigningKey",
                    "metadata": {"name": k.id()},
                    "algorithm": crate::recording::record::ALGORITHM,
                    "publicKey": k.to_pem(),
                    "signing": signing.as_deref() == Some(k.id()),
                })
            })
            .collect();
        Ok::<_, StatusError>(Json(json!({
            "apiVersion": format!("{SUBRESOURCE_GROUP}/{VERSION}"),
            "kind": "SigningKeyList",
            "metadata": {"resourceVersion": ""},
            "items": items,
        })))
    }
    .await;
    result.map_or_else(IntoResponse::into_response, IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp() -> FrontProxy {
        FrontProxy::from_data(&BTreeMap::from([
            ("requestheader-client-ca-file".into(), "PEM".into()),
            (
                "requestheader-allowed-names".into(),
                "[\"front-proxy-client\"]".into(),
            ),
            (
                "requestheader-username-headers".into(),
                "[\"X-Remote-User\"]".into(),
            ),
            (
                "requestheader-group-headers".into(),
                "[\"X-Remote-Group\"]".into(),
            ),
            (
                "requestheader-extra-headers-prefix".into(),
                "[\"X-Remote-Extra-\"]".into(),
            ),
        ]))
        .expect("front proxy")
    }

    #[test]
    fn configmap_without_ca_is_a_clear_error() {
        let err = FrontProxy::from_data(&BTreeMap::new()).expect_err("no CA");
        assert!(
            err.to_string()
                .contains("not configured for the aggregation layer")
        );
        let bad = FrontProxy::from_data(&BTreeMap::from([
            ("requestheader-client-ca-file".into(), "PEM".into()),
            (
                "requestheader-allowed-names".into(),
                "front-proxy-client".into(),
            ),
        ]))
        .expect_err("not JSON");
        assert!(
            bad.to_string()
                .contains("requestheader-allowed-names is not a JSON list")
        );
    }

    #[test]
    fn caller_from_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-remote-user", "bob".parse().expect("hv"));
        h.append("x-remote-group", "sre".parse().expect("hv"));
        h.append(
            "x-remote-group",
            "system:authenticated".parse().expect("hv"),
        );
        h.insert("x-remote-extra-scopes%2fa", "x".parse().expect("hv"));
        let c = fp().caller(&h).expect("caller");
        assert_eq!(c.user.username, "bob");
        assert_eq!(c.user.groups, vec!["sre", "system:authenticated"]);
        assert_eq!(c.extra.get("scopes/a"), Some(&vec!["x".to_owned()]));
        assert!(
            fp().caller(&HeaderMap::new()).is_none(),
            "no user header, no caller"
        );
    }

    #[test]
    fn peers_are_classified() {
        let dir = tempfile::tempdir().expect("tempdir");
        let own = rcgen::generate_simple_self_signed(vec!["aexec-operator".into()]).expect("cert");
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, own.cert.pem()).expect("write");
        std::fs::write(&key, own.signing_key.serialize_pem()).expect("write");
        let peers = crate::api::peer::Peers::load(&cert, &key, None).expect("peers");
        let allowed = ["front-proxy-client".to_owned()];
        assert_eq!(
            classify_peer(None, &allowed, &peers),
            Peer::Untrusted("no client certificate".into())
        );
        assert_eq!(
            classify_peer(Some(&[own.cert.der().clone()]), &allowed, &peers),
            Peer::Replica
        );
        // Another certificate with the same name is not a replica, nor an allowed front proxy.
        let other =
            rcgen::generate_simple_self_signed(vec!["aexec-operator".into()]).expect("cert");
        assert!(matches!(
            classify_peer(Some(&[other.cert.der().clone()]), &allowed, &peers),
            Peer::Untrusted(why) if why.contains("not an allowed front proxy")
        ));
    }

    #[test]
    fn bodies_are_parsed_strictly() {
        assert_eq!(
            parse_body(&Bytes::from_static(b"")).expect("empty").comment,
            None
        );
        assert_eq!(
            parse_body(&Bytes::from_static(br#"{"comment":"ok"}"#))
                .expect("json")
                .comment
                .as_deref(),
            Some("ok")
        );
        assert!(parse_body(&Bytes::from_static(b"{not json")).is_err());
        assert!(parse_body(&Bytes::from_static(br#"{"comment":"x","approve":true}"#)).is_err());
    }

    #[test]
    fn a_wrong_method_is_told_which_to_use() {
        let base = "/apis/subresources.aexec.dev/v1alpha1/namespaces/ns/execsessions/s1";
        let m = wrong_method_message(&axum::http::Method::POST, &format!("{base}/approve"));
        assert!(
            m.starts_with("POST is not allowed on ") && m.contains("/s1/approve: use PUT"),
            "{m}"
        );
        let m = wrong_method_message(&axum::http::Method::POST, &format!("{base}/attach"));
        assert!(
            m.contains("use GET with a WebSocket upgrade offering v5.channel.k8s.io"),
            "{m}"
        );
        let m = wrong_method_message(&axum::http::Method::DELETE, "/apis");
        assert_eq!(m, "DELETE is not allowed on /apis: use GET");
    }

    #[test]
    fn percent_decoding_of_extra_keys() {
        assert_eq!(percent_decode("scopes%2fa"), "scopes/a");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%2"), "end%2");
    }
}
