//! Renewing hub certificates while hubs run.
//!
//! A hub certificate is short-lived (`hub-certificate-lifetime`, 30 days by
//! default). When a third of its lifetime is left, its hub asks for a new
//! one: a hub holding the CA key signs it itself, a member asks a signer
//! over the `Membership` service, authenticated by the certificate it is
//! replacing. The signer names the hub the caller's certificate names —
//! never one the request asks for — and refuses a hub removed from the
//! cluster. The new certificate is used for handshakes from then on;
//! connections open keep the old one, which is still valid.

use std::time::Duration;

use ferry_proto::internal::v1::membership_client::MembershipClient;
use ferry_proto::internal::v1::membership_server::Membership;
use ferry_proto::internal::v1::{RenewCertificateRequest, RenewCertificateResponse};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::TrustError;
use super::access::caller_identity;
use super::authority::{CLOCK_SKEW, Subject, new_signing_request};
use super::credential::Credential;
use super::join::Signer;
use super::names::{CertifiedIdentity, Role};

/// Whether a certificate with `identity` should be renewed at `now` (Unix
/// seconds): a third or less of its lifetime is left.
pub fn renewal_due(identity: &CertifiedIdentity, now: i64) -> bool {
    identity.not_after - now <= lifetime(identity).as_secs() as i64 / 3
}

/// How long a certificate was issued for (its validity starts
/// [`CLOCK_SKEW`] before it was made).
pub fn lifetime(identity: &CertifiedIdentity) -> Duration {
    let issued = identity.not_before + CLOCK_SKEW.as_secs() as i64;
    Duration::from_secs((identity.not_after - issued).max(0) as u64)
}

/// How often a hub looks at its certificate's lifetime: often enough that
/// a renewal has many tries before the certificate ends.
pub fn check_interval(lifetime: Duration) -> Duration {
    (lifetime / 20).clamp(Duration::from_millis(500), Duration::from_secs(600))
}

/// Asks the signer behind `channel` for a new certificate of this hub, for
/// a new key; checks that it names `hub_id` and chains to the same CA.
pub async fn renew_through(channel: Channel, current: &Credential, hub_id: &str) -> Result<Credential, RenewalError> {
    let (key_pem, signing_request_pem) = new_signing_request(hub_id)?;
    let response = MembershipClient::new(channel)
        .renew_certificate(RenewCertificateRequest { signing_request_pem })
        .await
        .map_err(|status| RenewalError::Refused(status.message().to_owned()))?
        .into_inner();
    let renewed = Credential::new(key_pem, response.certificate_pem, response.ca_pem);
    check_renewed(current, &renewed, hub_id)?;
    Ok(renewed)
}

/// A renewed credential must name the same hub under the same CA.
pub fn check_renewed(current: &Credential, renewed: &Credential, hub_id: &str) -> Result<(), RenewalError> {
    let identity = renewed.identity()?;
    if identity.role != Role::Hub || identity.hub_id.as_deref() != Some(hub_id) {
        return Err(RenewalError::Refused(format!(
            "the signer returned a certificate for {:?}, not hub {hub_id}",
            identity.name
        )));
    }
    if renewed.ca_der()? != current.ca_der()? {
        return Err(RenewalError::Refused(
            "the signer returned a certificate of another CA".to_owned(),
        ));
    }
    Ok(())
}

/// Why a renewal failed.
#[derive(Debug, thiserror::Error)]
pub enum RenewalError {
    #[error("no hub that holds the cluster CA key is reachable")]
    NoSigner,
    #[error("the signer refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Trust(#[from] TrustError),
}

/// The signer's side of renewal.
#[derive(Debug)]
pub struct MembershipService {
    signer: Option<Signer>,
}

impl MembershipService {
    pub fn new(signer: Option<Signer>) -> MembershipService {
        MembershipService { signer }
    }
}

#[tonic::async_trait]
impl Membership for MembershipService {
    async fn renew_certificate(
        &self,
        request: Request<RenewCertificateRequest>,
    ) -> Result<Response<RenewCertificateResponse>, Status> {
        let Some(signer) = &self.signer else {
            return Err(Status::failed_precondition(
                "this hub does not hold the cluster CA key and cannot renew certificates",
            ));
        };
        let hub_id = caller_identity(&request)
            .filter(|identity| identity.role == Role::Hub)
            .and_then(|identity| identity.hub_id)
            .ok_or_else(|| Status::permission_denied("only a hub renews its certificate"))?;
        if signer.revocations.is_revoked(&hub_id) {
            return Err(Status::permission_denied(format!(
                "hub {hub_id} was removed from this cluster"
            )));
        }
        let certificate_pem = signer
            .authority
            .sign_request(
                &request.get_ref().signing_request_pem,
                &Subject::hub(&hub_id, signer.hub_lifetime),
            )
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        tracing::info!(%hub_id, lifetime_s = signer.hub_lifetime.as_secs(), "renewed a member's certificate");
        Ok(Response::new(RenewCertificateResponse {
            certificate_pem,
            ca_pem: signer.authority.certificate_pem().to_owned(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(not_before: i64, not_after: i64) -> CertifiedIdentity {
        CertifiedIdentity {
            role: Role::Hub,
            name: "hub-0000000000000001".to_owned(),
            hub_id: Some("hub-0000000000000001".to_owned()),
            not_before: not_before - CLOCK_SKEW.as_secs() as i64,
            not_after,
        }
    }

    #[test]
    fn a_certificate_is_renewed_when_a_third_of_its_life_is_left() {
        let certificate = identity(1_000, 1_900);
        assert!(!renewal_due(&certificate, 1_000));
        assert!(!renewal_due(&certificate, 1_599));
        assert!(renewal_due(&certificate, 1_600));
        assert!(renewal_due(&certificate, 2_000));
    }

    #[test]
    fn checks_come_often_for_short_lives_and_at_most_every_ten_minutes() {
        assert_eq!(check_interval(Duration::from_secs(20)), Duration::from_secs(1));
        assert_eq!(
            check_interval(Duration::from_secs(30 * 24 * 3600)),
            Duration::from_secs(600)
        );
    }

    #[test]
    fn a_renewed_certificate_must_name_the_same_hub_under_the_same_ca() {
        let authority = crate::trust::ClusterAuthority::create("test").unwrap();
        let current = authority
            .issue(&Subject::hub("hub-0000000000000001", Duration::from_secs(60)))
            .unwrap();
        let renewed = authority
            .issue(&Subject::hub("hub-0000000000000001", Duration::from_secs(60)))
            .unwrap();
        check_renewed(&current, &renewed, "hub-0000000000000001").unwrap();
        let other = authority
            .issue(&Subject::hub("hub-0000000000000002", Duration::from_secs(60)))
            .unwrap();
        assert!(check_renewed(&current, &other, "hub-0000000000000001").is_err());
        let stranger = crate::trust::ClusterAuthority::create("other")
            .unwrap()
            .issue(&Subject::hub("hub-0000000000000001", Duration::from_secs(60)))
            .unwrap();
        assert!(check_renewed(&current, &stranger, "hub-0000000000000001").is_err());
    }
}
