//! Replicas talking to each other: a watch that reaches a replica which does not relay the
//! session is forwarded to the one that does (`docs/watch.md`, "Across replicas").
//!
//! Trust between replicas is mutual TLS with the operator's own serving certificate, pinned
//! byte for byte both ways: every replica mounts the same one (the chart's Secret), and it is
//! already what the API server trusts as this API (the APIService's caBundle). The forwarding
//! replica presents it as its client certificate; the broker recognises it as a peer
//! ([`crate::api::server::Peer::Replica`]) and believes the identity headers the peer copied from
//! the front proxy's request, for the observe subresource only, then checks RBAC and the
//! business rules again itself. The forwarding replica accepts the broker only if it presents
//! the same certificate, whatever address it was told: a forged `status.brokerAddress` leads
//! nowhere.
//!
//! rustls has no verifier that pins a certificate, so the two small ones here are written out
//! (docs/watch.md says why a TokenReview of a ServiceAccount token was not used instead).

use std::{net::SocketAddr, path::Path, sync::Arc};

use anyhow::{Context, Result, anyhow};
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{self, client::IntoClientRequest, protocol::WebSocketConfig},
};

/// The certificate chain and private key of a PEM pair.
pub fn read_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).with_context(|| format!("opening {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("reading certificates from {}", cert.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("no certificate in {}", cert.display()));
    }
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).with_context(|| format!("opening {}", key.display()))?,
    ))?
    .ok_or_else(|| anyhow!("no private key in {}", key.display()))?;
    Ok((certs, key))
}

/// What a replica needs to reach its peers and to recognise them.
pub struct Peers {
    /// This replica's serving certificate (the leaf): what a peer presents, and what this
    /// replica expects a peer to present.
    own: CertificateDer<'static>,
    /// Where the other replicas reach this one (written into the sessions it brokers as
    /// `status.brokerAddress`); `None` when not configured: nothing is forwarded here then.
    pub address: Option<SocketAddr>,
    client: Arc<ClientConfig>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Peers {
    /// From the serving certificate and key, and this replica's address for its peers.
    pub fn load(cert: &Path, key: &Path, address: Option<SocketAddr>) -> Result<Self> {
        let (certs, key) = read_identity(cert, key)?;
        let own = certs[0].clone();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pinned = Arc::new(Pinned {
            own: own.clone(),
            algorithms: provider.signature_verification_algorithms,
        });
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(pinned)
            .with_client_auth_cert(certs, key)
            .context("the serving certificate cannot be used as a client certificate")?;
        Ok(Peers {
            own,
            address,
            client: Arc::new(client),
        })
    }

    /// Whether a client certificate is this operator's own: the connection is from a replica.
    pub fn is_peer(&self, leaf: &CertificateDer<'_>) -> bool {
        leaf.as_ref() == self.own.as_ref()
    }

    /// The server's client-certificate verifier: `inner` (the front proxy's CA), and besides
    /// it the replicas' own certificate.
    pub fn client_verifier(
        &self,
        inner: Arc<dyn ClientCertVerifier>,
    ) -> Arc<dyn ClientCertVerifier> {
        Arc::new(FrontProxyOrPeer {
            inner,
            own: self.own.clone(),
        })
    }

    /// Opens a WebSocket to the replica at `address`, at `path_and_query`, with `headers`
    /// added (the caller's identity as the front proxy sent it, the subprotocol). A refusal
    /// by the peer (an HTTP status instead of the upgrade) is [`Forward::Refused`].
    pub async fn connect(
        &self,
        address: &str,
        path_and_query: &str,
        headers: impl IntoIterator<Item = (http::HeaderName, http::HeaderValue)>,
        config: WebSocketConfig,
    ) -> Result<(PeerWs, http::HeaderMap), Forward> {
        let mut request = format!("wss://{address}{path_and_query}")
            .into_client_request()
            .map_err(|e| Forward::Unreachable(format!("the address {address}: {e}")))?;
        request.headers_mut().extend(headers);
        let connect = async {
            let tcp = TcpStream::connect(address)
                .await
                .map_err(|e| Forward::Unreachable(format!("connecting to {address}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from("aexec-operator-peer").expect("a valid DNS name");
            let tls = TlsConnector::from(self.client.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| Forward::Unreachable(format!("TLS with {address}: {e}")))?;
            match tokio_tungstenite::client_async_with_config(request, tls, Some(config)).await {
                Ok((ws, response)) => Ok((ws, response.headers().clone())),
                Err(tungstenite::Error::Http(response)) => Err(Forward::Refused {
                    code: response.status().as_u16(),
                    body: response.body().clone().unwrap_or_default(),
                }),
                Err(e) => Err(Forward::Unreachable(format!(
                    "the WebSocket handshake with {address}: {e}"
                ))),
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), connect)
            .await
            .unwrap_or_else(|_| {
                Err(Forward::Unreachable(format!(
                    "{address} did not answer in 10 s"
                )))
            })
    }
}

/// A WebSocket to a peer replica.
pub type PeerWs = WebSocketStream<TlsStream<TcpStream>>;

/// Why a forwarded request did not become a WebSocket.
#[derive(Debug)]
pub enum Forward {
    /// The peer could not be reached (connection, TLS, handshake): the reason.
    Unreachable(String),
    /// The peer answered with an HTTP status (a Kubernetes `Status` in the body): passed on to
    /// the caller as it is, since it is the broker's own decision.
    Refused { code: u16, body: Vec<u8> },
}

/// Accepts a server that presents exactly the operator's own certificate.
#[derive(Debug)]
struct Pinned {
    own: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.own.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the peer does not present this operator's serving certificate".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The front proxy's verifier, which also accepts the operator's own certificate (a peer). The
/// handshake's signature proves the peer holds the certificate's key.
#[derive(Debug)]
struct FrontProxyOrPeer {
    inner: Arc<dyn ClientCertVerifier>,
    own: CertificateDer<'static>,
}

impl ClientCertVerifier for FrontProxyOrPeer {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.own.as_ref() {
            Ok(ClientCertVerified::assertion())
        } else {
            self.inner
                .verify_client_cert(end_entity, intermediates, now)
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The default provider's signature algorithms (for tests).
#[cfg(test)]
fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(name: &str) -> CertificateDer<'static> {
        let c = rcgen::generate_simple_self_signed(vec![name.into()]).expect("cert");
        c.cert.der().clone()
    }

    #[test]
    fn only_the_pinned_certificate_is_a_peer() {
        let (own, other) = (cert("aexec-operator"), cert("aexec-operator"));
        let pinned = Pinned {
            own: own.clone(),
            algorithms: algorithms(),
        };
        let name = ServerName::try_from("anything").expect("name");
        let now = UnixTime::now();
        assert!(
            pinned
                .verify_server_cert(&own, &[], &name, &[], now)
                .is_ok()
        );
        let refused = pinned
            .verify_server_cert(&other, &[], &name, &[], now)
            .expect_err("another certificate with the same name is not the peer");
        assert!(
            refused.to_string().contains("serving certificate"),
            "{refused}"
        );
    }
}
