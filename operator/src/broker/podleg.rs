//! Opening the pod's exec stream (the broker's leg to the API server) as a WebSocket with
//! small buffers.
//!
//! kube-rs's `Client::connect` opens it with tungstenite's defaults: buffers that grow to
//! 128 KiB per direction and stay, held by every attached session even while idle
//! (`docs/performance.md`, memory per idle session). It offers no way to pass a config, so the
//! upgrade is done here with kube's own `Client::send` (its auth, TLS and connection pool), as
//! its `connect` does, and the stream is made with [`config`].

use http::{HeaderValue, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use kube::{Client, client::Body};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        handshake::{client::generate_key, derive_accept_key},
        protocol::{Role, WebSocketConfig},
    },
};

use crate::broker::frames;

/// The pod's leg.
pub type PodWs = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// The largest error body read from a refused upgrade.
const MAX_ERROR_BODY: usize = 64 << 10;

/// Small buffers: an idle session keeps what its buffers grew to. Reads of 4 KiB cost calls
/// into the TLS layer's already decrypted record, not system calls. Measured with 1,000 idle
/// sessions (`AEXEC_BENCH_ONLY=footprint`): kube's defaults 214 KiB per session, 16 KiB buffers
/// 101 KiB, 4 KiB reads 77 KiB (4 KiB writes changed nothing). Messages are not bounded beyond
/// the library's default: the API server decides their size, and every byte is relayed and
/// recorded.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 << 10)
        .write_buffer_size(16 << 10)
        .max_write_buffer_size(4 << 20)
}

/// Opens `request` (a `pods/exec` URL) as a WebSocket offering the v5 and v4 channel
/// protocols. A refusal is the API server's `Status` message when it sent one.
pub async fn connect(client: &Client, request: Request<Vec<u8>>) -> Result<PodWs, String> {
    let (mut parts, body) = request.into_parts();
    let key = generate_key();
    let h = &mut parts.headers;
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    h.insert(
        header::SEC_WEBSOCKET_KEY,
        HeaderValue::from_str(&key).map_err(|e| e.to_string())?,
    );
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_str(&format!("{}, {}", frames::V5, frames::V4))
            .map_err(|e| e.to_string())?,
    );
    let res = client
        .send(Request::from_parts(parts, Body::from(body)))
        .await
        .map_err(|e| e.to_string())?;
    if res.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(refusal(res).await);
    }
    let accept = res
        .headers()
        .get(header::SEC_WEBSOCKET_ACCEPT)
        .and_then(|v| v.to_str().ok());
    if accept != Some(derive_accept_key(key.as_bytes()).as_str()) {
        return Err("the API server's upgrade answer has a wrong Sec-WebSocket-Accept".into());
    }
    let protocol = res
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if protocol != frames::V5 && protocol != frames::V4 {
        return Err(format!(
            "the API server chose the WebSocket subprotocol {protocol:?}, not {} or {}",
            frames::V5,
            frames::V4
        ));
    }
    let upgraded = hyper::upgrade::on(res)
        .await
        .map_err(|e| format!("the upgrade failed: {e}"))?;
    Ok(
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, Some(config()))
            .await,
    )
}

/// What a refused upgrade says: the `Status` message of its body when there is one.
async fn refusal(res: http::Response<Body>) -> String {
    use http_body_util::BodyExt as _;
    let code = res.status();
    let body = http_body_util::Limited::new(res.into_body(), MAX_ERROR_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
    format!("{} ({})", message.trim(), code.as_u16())
}
