//! Keeps this hub's certificate fresh while it runs: when a third of its
//! lifetime is left, a new one is signed (here, if this hub holds the CA
//! key; otherwise by a peer that does, found through the probe answers),
//! written to `tls/hub.cred`, and used for every handshake from then on.
//! Connections already open keep the old certificate, which is still
//! valid: a move under way is not disturbed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_discovery::PeerSnapshot;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::connector::{PeerConnector, Purpose};
use crate::peers::PeerFigures;
use crate::trust::authority::Subject;
use crate::trust::renewal::{RenewalError, check_interval, lifetime, renew_through, renewal_due};
use crate::trust::tls::HubCertificate;
use crate::trust::{ClientTls, ClusterAuthority, Credential, HubTrust};

/// What renewal reads and replaces.
pub struct Renewer {
    hub_id: String,
    current: Credential,
    credential_path: PathBuf,
    certificate: Arc<HubCertificate>,
    connector: PeerConnector,
    /// The CA, on a hub that holds its key.
    authority: Option<Arc<ClusterAuthority>>,
    /// How long certificates this hub signs itself are valid.
    lifetime: Duration,
    peers: watch::Receiver<Vec<PeerSnapshot>>,
    figures: PeerFigures,
}

impl Renewer {
    pub fn new(
        trust: &HubTrust,
        hub_id: &str,
        lifetime: Duration,
        connector: PeerConnector,
        peers: watch::Receiver<Vec<PeerSnapshot>>,
        figures: PeerFigures,
    ) -> Renewer {
        Renewer {
            hub_id: hub_id.to_owned(),
            current: trust.credential.clone(),
            credential_path: trust.credential_path.clone(),
            certificate: Arc::clone(&trust.certificate),
            connector,
            authority: trust.authority.clone(),
            lifetime,
            peers,
            figures,
        }
    }

    /// Checks the certificate's lifetime periodically and renews it when due.
    pub fn spawn(mut self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let Ok(identity) = self.current.identity() else { return };
                tokio::time::sleep(check_interval(lifetime(&identity))).await;
                if !renewal_due(&identity, OffsetDateTime::now_utc().unix_timestamp()) {
                    continue;
                }
                match self.renew().await {
                    Ok(renewed) => {
                        if let Err(error) = self.take(renewed) {
                            tracing::warn!(%error, "cannot use this hub's renewed certificate");
                        }
                    }
                    Err(error) => tracing::warn!(
                        %error,
                        not_after = identity.not_after,
                        "cannot renew this hub's certificate yet; trying again"
                    ),
                }
            }
        })
    }

    async fn renew(&self) -> Result<Credential, RenewalError> {
        if let Some(authority) = &self.authority {
            return Ok(authority.issue(&Subject::hub(&self.hub_id, self.lifetime))?);
        }
        let signers: Vec<(String, String)> = self
            .peers
            .borrow()
            .iter()
            .filter(|peer| peer.is_usable())
            .filter_map(|peer| Some((peer.id()?.to_owned(), peer.address?.to_string())))
            .filter(|(id, _)| self.figures.get(id).is_some_and(|info| info.signer))
            .collect();
        let mut last = RenewalError::NoSigner;
        for (id, address) in signers {
            let channel = match self.connector.channel_to(&address, Purpose::Control, Some(&id)) {
                Ok(channel) => channel,
                Err(error) => {
                    last = RenewalError::Refused(error.to_string());
                    continue;
                }
            };
            match renew_through(channel, &self.current, &self.hub_id).await {
                Ok(renewed) => return Ok(renewed),
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    /// Keeps `renewed` on disk, then presents it on new connections.
    fn take(&mut self, renewed: Credential) -> Result<(), crate::trust::TrustError> {
        renewed.write(&self.credential_path)?;
        self.certificate.replace(&renewed)?;
        self.connector.replace_tls(ClientTls::new(&renewed));
        tracing::info!(
            not_after = renewed.identity()?.not_after,
            "renewed this hub's certificate"
        );
        self.current = renewed;
        Ok(())
    }
}
