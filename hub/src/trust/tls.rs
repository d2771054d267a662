//! TLS configurations built from a credential: the hub's server side (a
//! client certificate of the cluster is required) and the client side of
//! every connection a hub or the CLI makes.

use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::TrustError;
use super::credential::Credential;
use super::names::{ANY_HUB, hub_dns_name};

/// A handshake that has not finished by then is dropped: a slow or silent
/// client must not hold a connection slot.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The hub's server configuration. It sends its own certificate and the
/// CA's (a joining hub checks the CA against its token's fingerprint). A
/// client certificate, if presented, must chain to the cluster CA; a client
/// without one completes the handshake but may only ask to join
/// ([`super::access`] refuses everything else).
pub fn server_config(hub: &Credential) -> Result<Arc<rustls::ServerConfig>, TrustError> {
    let mut roots = RootCertStore::empty();
    roots.add(hub.ca_der()?)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|error| TrustError::Parse(error.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![hub.certificate_der()?, hub.ca_der()?], hub.key_der()?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts TCP connections on `listener` and hands out those whose TLS
/// handshake succeeded. Handshakes run concurrently, each with a time
/// limit, so one slow client does not hold up the others. Ends when the
/// returned stream is dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = sender.closed() => return,
            };
            let (stream, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let sender = sender.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = sender.send(Ok(stream)).await;
                    }
                    Ok(Err(error)) => tracing::info!(%remote, %error, "tls handshake refused"),
                    Err(_) => tracing::info!(%remote, "tls handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// What a client presents and trusts: its credential and the cluster CA.
#[derive(Clone)]
pub struct ClientTls {
    ca: Certificate,
    identity: Identity,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

impl ClientTls {
    pub fn new(credential: &Credential) -> ClientTls {
        ClientTls {
            ca: Certificate::from_pem(credential.ca_pem()),
            identity: Identity::from_pem(credential.certificate_pem(), credential.key_pem()),
        }
    }

    /// The configuration for a connection to any hub of the cluster
    /// (`hub_id` `None`) or to that one hub only.
    pub fn config(&self, hub_id: Option<&str>) -> ClientTlsConfig {
        let server_name = hub_id.map_or_else(|| ANY_HUB.to_owned(), hub_dns_name);
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            .domain_name(server_name)
    }
}
