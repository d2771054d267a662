//! TLS configurations built from a credential: the hub's server side (a
//! client certificate of the cluster is required) and the client side of
//! every connection a hub or the CLI makes.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::TrustError;
use super::credential::Credential;
use super::names::{ANY_HUB, CertifiedIdentity, hub_dns_name};
use super::revocation::Revocations;

/// A handshake that has not finished by then is dropped: a slow or silent
/// client must not hold a connection slot.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The hub's server configuration. It sends the hub's current certificate
/// ([`HubCertificate`], replaced when renewed) and the CA's (a joining hub
/// checks the CA against its token's fingerprint). A client certificate, if
/// presented, must chain to the cluster CA and must not name a hub removed
/// from the cluster; a client without one completes the handshake but may
/// only ask to join ([`super::access`] refuses everything else).
pub fn server_config(
    hub: &Credential,
    certificate: Arc<HubCertificate>,
    revocations: Arc<Revocations>,
) -> Result<Arc<rustls::ServerConfig>, TrustError> {
    let mut roots = RootCertStore::empty();
    roots.add(hub.ca_der()?)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|error| TrustError::Parse(error.to_string()))?;
    let verifier = Arc::new(MembersOnly {
        inner: verifier,
        revocations,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certificate);
    // gRPC speaks HTTP/2; the HTTP API takes HTTP/1.1 clients (curl, scripts) too.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificate a hub's server presents: the current one, swapped in
/// place when it is renewed (handshakes under way keep the one they took).
#[derive(Debug)]
pub struct HubCertificate {
    current: RwLock<Arc<CertifiedKey>>,
}

fn certified_key(hub: &Credential) -> Result<Arc<CertifiedKey>, TrustError> {
    let key = provider().key_provider.load_private_key(hub.key_der()?)?;
    Ok(Arc::new(CertifiedKey::new(
        vec![hub.certificate_der()?, hub.ca_der()?],
        key,
    )))
}

impl HubCertificate {
    pub fn new(hub: &Credential) -> Result<HubCertificate, TrustError> {
        Ok(HubCertificate {
            current: RwLock::new(certified_key(hub)?),
        })
    }

    /// Presents `hub` from the next handshake on.
    pub fn replace(&self, hub: &Credential) -> Result<(), TrustError> {
        let key = certified_key(hub)?;
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = key;
        Ok(())
    }
}

impl ResolvesServerCert for HubCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()),
        ))
    }
}

/// The client-certificate check: the cluster CA's verifier, and a hub
/// certificate must not name a hub on the revocation list.
#[derive(Debug)]
struct MembersOnly {
    inner: Arc<dyn ClientCertVerifier>,
    revocations: Arc<Revocations>,
}

impl ClientCertVerifier for MembersOnly {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
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
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let hub_id = CertifiedIdentity::from_der(end_entity)
            .ok()
            .and_then(|identity| identity.hub_id);
        if let Some(hub_id) = hub_id.filter(|hub_id| self.revocations.is_revoked(hub_id)) {
            tracing::info!(%hub_id, "refused the certificate of a hub removed from the cluster");
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
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
