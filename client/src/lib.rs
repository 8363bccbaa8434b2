//! The connection to the API server: kube's client, built as `kube::Client::try_from` builds
//! it, with one change: its TCP sockets have `TCP_NODELAY` set.
//!
//! **Why this crate exists.** kube-rs 5 opens its connections with Nagle's algorithm on (it
//! never calls `set_nodelay`: kube-rs/kube#2056, open). On a fresh connection the TLS
//! handshake's last flight and the request that follows are two small writes; with Nagle on,
//! the second waits for the API server to acknowledge the first, and the server delays that
//! acknowledgement by up to 40 ms. Every `kubectl aexec` opens several connections (the pod and
//! the caller's identity at once, the watch for the approval, the attach), and the operator
//! opens one per session for the pod's stream: measured on the benchmark's `-- true`, about
//! 40 ms per connection (docs/performance.md). Go's HTTP client, which `kubectl` uses, sets
//! `TCP_NODELAY` by default.
//!
//! kube offers no setting for it, but exposes the pieces its own builder is made of
//! ([`ConfigExt`]); [`client`] assembles them the same way, with a connector of its own. What
//! it leaves out of kube's builder: the tracing spans of each request (debug level), and the
//! expiry of a client certificate handed out by an exec credential plugin (kube only records
//! it, for callers that ask; neither binary does). A kubeconfig with a proxy gets kube's own
//! client, Nagle and all: tunnelling through a proxy is kube's to get right.

use std::time::Duration;

use hyper_util::{
    client::legacy::{Builder, connect::HttpConnector},
    rt::TokioExecutor,
};
use kube::{
    Client, Config,
    client::{ConfigExt, retry::RetryPolicy},
};
use tower::{BoxError, ServiceBuilder, retry::RetryLayer};

/// How long an idle pooled connection is kept (hyper's default is 90 s; the API server closes
/// idle connections itself after a while).
const POOL_IDLE: Duration = Duration::from_secs(90);

/// A client for `config`, its connections opened with `TCP_NODELAY`.
pub fn client(config: Config) -> kube::Result<Client> {
    if config.proxy_url.is_some() {
        return Client::try_from(config);
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = config.rustls_https_connector_with_connector(http)?;
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let hyper = Builder::new(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(hyper);
    Ok(Client::new(service, config.default_namespace))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// The client assembled here is a working kube client: the config's base URI and extra
    /// headers are on its requests, and the answer is read. (Whether the socket has
    /// TCP_NODELAY shows only in timings: `./dev bench`'s ttfb section.)
    #[tokio::test]
    async fn requests_go_out_with_the_configs_base_uri_and_headers() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            use std::io::Write;
            let body = br#"{"major":"1","minor":"35","gitVersion":"v1.35.0"}"#;
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(body);
            String::from_utf8_lossy(&got).into_owned()
        });
        let mut config = Config::new(format!("http://{addr}/base").parse().expect("url"));
        config.headers = vec![(
            http::HeaderName::from_static("x-aexec-test"),
            http::HeaderValue::from_static("1"),
        )];
        let client = client(config).expect("client");
        let version = client.apiserver_version().await.expect("version");
        assert_eq!(version.git_version, "v1.35.0");
        let request = server.join().expect("server");
        assert!(request.starts_with("GET /base/version"), "{request}");
        assert!(
            request.to_ascii_lowercase().contains("x-aexec-test: 1"),
            "{request}"
        );
    }
}
