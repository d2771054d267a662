//! Joining a cluster with a token, both sides.
//!
//! The joiner connects with TLS but no certificate of its own, and accepts
//! the server only if the chain the server sends ends in a CA whose
//! fingerprint is the token's and its hub certificate verifies under that
//! CA. Only then does it send the token's id and secret, with a signing
//! request for its own new key; the server redeems the token and returns a
//! hub certificate naming the joiner's hub id. A wrong fingerprint ends the
//! handshake before any request is written.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use ferry_proto::internal::v1::join_client::JoinClient;
use ferry_proto::internal::v1::join_server::Join;
use ferry_proto::internal::v1::{JoinRequest, JoinResponse};
use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;
use tonic::{Request, Response, Status};

use super::TrustError;
use super::authority::{ClusterAuthority, Subject, new_signing_request};
use super::credential::Credential;
use super::members::Members;
use super::names::{ANY_HUB, is_hub_id};
use super::revocation::Revocations;
use super::tokens::{JoinTokens, ParsedToken, RedeemError, ca_fingerprint};

const JOIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("bad peer address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error(
        "the hub at {address} is not a member of the cluster the token names, or cannot be reached over TLS: {reason} (nothing was sent to it)"
    )]
    NotTheCluster { address: String, reason: String },
    #[error("the hub at {address} refused the join: {message}")]
    Refused { address: String, message: String },
    #[error(transparent)]
    Trust(#[from] TrustError),
}

/// Accepts a server whose chain ends in the CA the token names.
#[derive(Debug)]
struct FingerprintVerifier {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// The CA certificate, once a server proved it holds a certificate under it.
    ca: Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for FingerprintVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|certificate| ca_fingerprint(certificate) == self.fingerprint)
            .ok_or_else(|| rustls::Error::General("the server's CA is not the one the join token names".to_owned()))?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&self.provider))
            .build()
            .map_err(|error| rustls::Error::General(error.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)?;
        *self.ca.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(ca.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Connects TCP, then TLS with the join verifier.
#[derive(Clone)]
struct JoinConnector {
    config: Arc<rustls::ClientConfig>,
}

impl tower_service::Service<Uri> for JoinConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = Arc::clone(&self.config);
        Box::pin(async move {
            let authority = uri
                .authority()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no host:port"))?
                .to_string();
            let tcp = TcpStream::connect(authority).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(ANY_HUB).expect("a valid DNS name");
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// Joins the cluster `token` names through the hub at `peer`: a new key,
/// and a hub certificate for `hub_id` signed by the cluster CA.
pub async fn join_cluster(peer: &str, token: &ParsedToken, hub_id: &str) -> Result<Credential, JoinError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(FingerprintVerifier {
        fingerprint: token.ca_fingerprint.clone(),
        provider: Arc::clone(&provider),
        ca: Mutex::new(None),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TrustError::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::clone(&verifier) as Arc<dyn ServerCertVerifier>)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{peer}"))
        .map_err(|error| JoinError::Address {
            address: peer.to_owned(),
            reason: error.to_string(),
        })?
        .connect_timeout(JOIN_TIMEOUT)
        .timeout(JOIN_TIMEOUT);
    let not_the_cluster = |reason: String| JoinError::NotTheCluster {
        address: peer.to_owned(),
        reason,
    };
    let channel = endpoint
        .connect_with_connector(JoinConnector {
            config: Arc::new(config),
        })
        .await
        .map_err(|error| not_the_cluster(crate::connector::innermost_reason(&error)))?;
    let ca = verifier
        .ca
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
        .ok_or_else(|| not_the_cluster("the server's certificate was never checked".to_owned()))?;
    let (key_pem, signing_request_pem) = new_signing_request(hub_id)?;
    let response = JoinClient::new(channel)
        .join_cluster(JoinRequest {
            token_id: token.id.clone(),
            secret: token.secret.clone(),
            hub_id: hub_id.to_owned(),
            signing_request_pem,
        })
        .await
        .map_err(|status| JoinError::Refused {
            address: peer.to_owned(),
            message: status.message().to_owned(),
        })?
        .into_inner();
    let credential = Credential::new(key_pem, response.certificate_pem, response.ca_pem);
    if credential.ca_der()? != ca {
        return Err(not_the_cluster(
            "the hub answered with another CA than its handshake showed".to_owned(),
        ));
    }
    Ok(credential)
}

/// What a hub that holds the CA key signs with: the CA, its join tokens,
/// and the revocation list (a removed hub id is never signed again).
#[derive(Debug, Clone)]
pub struct Signer {
    pub authority: Arc<ClusterAuthority>,
    pub tokens: Arc<JoinTokens>,
    pub revocations: Arc<Revocations>,
    /// The hub ids that joined: never signed for another joiner.
    pub members: Arc<Members>,
    /// How long the hub certificates it signs are valid.
    pub hub_lifetime: Duration,
}

/// The server side: redeems tokens and signs hub certificates, on a hub
/// that holds the CA key.
#[derive(Debug)]
pub struct JoinService {
    signer: Option<Signer>,
}

impl JoinService {
    pub fn new(signer: Option<Signer>) -> JoinService {
        JoinService { signer }
    }
}

#[tonic::async_trait]
impl Join for JoinService {
    async fn join_cluster(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let remote = request.remote_addr();
        let request = request.into_inner();
        let Some(Signer {
            authority,
            tokens,
            revocations,
            members,
            hub_lifetime,
        }) = &self.signer
        else {
            return Err(Status::failed_precondition(
                "this hub does not hold the cluster CA key and cannot sign joins: join through the hub that made the token",
            ));
        };
        if !is_hub_id(&request.hub_id) {
            return Err(Status::invalid_argument(format!(
                "{:?} is not a hub id",
                request.hub_id
            )));
        }
        if revocations.is_revoked(&request.hub_id) {
            return Err(Status::permission_denied(format!(
                "hub {} was removed from this cluster; a hub joins again with a new data directory (a new hub id)",
                request.hub_id
            )));
        }
        // The id is taken first (a token never buys a member's id), then
        // the certificate signed (a bad request does not use up the token),
        // then the token redeemed; a failure gives the id back.
        match members.admit(&request.hub_id) {
            Ok(Ok(())) => {}
            Ok(Err(taken)) => {
                tracing::warn!(?remote, hub_id = %request.hub_id, "join refused: the hub id is a member's");
                return Err(Status::permission_denied(taken.to_string()));
            }
            Err(error) => return Err(Status::internal(error.to_string())),
        }
        let subject = Subject::hub(&request.hub_id, *hub_lifetime);
        let certificate_pem = match authority.sign_request(&request.signing_request_pem, &subject) {
            Ok(certificate_pem) => certificate_pem,
            Err(error) => {
                members.release(&request.hub_id);
                return Err(Status::invalid_argument(error.to_string()));
            }
        };
        if let Err(error) = tokens.redeem(&request.token_id, &request.secret) {
            members.release(&request.hub_id);
            tracing::warn!(?remote, hub_id = %request.hub_id, %error, "join refused");
            return Err(match error {
                RedeemError::Refused(refusal) => Status::permission_denied(refusal.to_string()),
                RedeemError::Store(error) => Status::internal(error.to_string()),
            });
        }
        tracing::info!(?remote, hub_id = %request.hub_id, token = %request.token_id, "a hub joined the cluster");
        Ok(Response::new(JoinResponse {
            certificate_pem,
            ca_pem: authority.certificate_pem().to_owned(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(dir: &std::path::Path) -> Signer {
        let authority = ClusterAuthority::create("test").unwrap();
        let revocations = Revocations::in_memory(&authority.certificate_der().unwrap()).unwrap();
        Signer {
            authority: Arc::new(authority),
            tokens: Arc::new(JoinTokens::open(dir).unwrap()),
            revocations: Arc::new(revocations),
            members: Arc::new(Members::open(dir, "hub-00000000000000f0").unwrap()),
            hub_lifetime: Duration::from_secs(3600),
        }
    }

    fn request(signer: &Signer, hub_id: &str) -> Request<JoinRequest> {
        let fingerprint = ca_fingerprint(&signer.authority.certificate_der().unwrap());
        let (token, _) = signer.tokens.create(&fingerprint, Duration::from_secs(60), 1).unwrap();
        let token: ParsedToken = token.parse().unwrap();
        let (_, signing_request_pem) = new_signing_request(hub_id).unwrap();
        Request::new(JoinRequest {
            token_id: token.id,
            secret: token.secret,
            hub_id: hub_id.to_owned(),
            signing_request_pem,
        })
    }

    #[tokio::test]
    async fn a_token_never_buys_the_id_of_a_member_or_of_the_signer() {
        let dir = tempfile::tempdir().unwrap();
        let signer = signer(dir.path());
        let service = JoinService::new(Some(signer.clone()));
        service
            .join_cluster(request(&signer, "hub-0000000000000001"))
            .await
            .unwrap();
        for taken in ["hub-0000000000000001", "hub-00000000000000f0"] {
            let second = request(&signer, taken);
            let token_id = second.get_ref().token_id.clone();
            let status = service.join_cluster(second).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::PermissionDenied);
            assert!(status.message().contains("already a member"), "{}", status.message());
            // The refused join did not use up its token.
            assert!(signer.tokens.list().iter().any(|token| token.id == token_id));
        }
        // A failed join gives the id back: a wrong secret, then the right one.
        let mut wrong = request(&signer, "hub-0000000000000002");
        wrong.get_mut().secret = "0".repeat(32);
        assert_eq!(
            service.join_cluster(wrong).await.unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        service
            .join_cluster(request(&signer, "hub-0000000000000002"))
            .await
            .unwrap();
    }
}
