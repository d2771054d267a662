//! A hub's trust material in its data directory, made on first start:
//! `tls/ca.key` and `tls/ca.crt` (the cluster CA, on the hub that founded
//! the cluster), `tls/hub.cred` (the hub's own credential) and `admin.cred`
//! (an operator credential for the CLI on the same machine).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::TrustError;
use super::authority::{ClusterAuthority, Subject};
use super::credential::Credential;
use super::join::{JoinError, join_cluster};
use super::members::Members;
use super::names::Role;
use super::renewal::renewal_due;
use super::revocation::Revocations;
use super::tls::HubCertificate;
use super::tokens::{JoinTokens, ParsedToken};

/// How long a hub certificate is valid unless configured otherwise.
pub const HUB_CERTIFICATE_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long the operator credential written at founding is valid.
pub const ADMIN_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// The name of the operator credential file in the data directory.
pub const ADMIN_CREDENTIAL_FILE: &str = "admin.cred";

/// What a hub holds: its credential (as loaded at start; renewal replaces
/// `certificate` and the file), the revocation list, and the CA key (with
/// the join tokens it made) if it can sign.
#[derive(Debug)]
pub struct HubTrust {
    pub credential: Credential,
    /// Where `credential` is kept (`tls/hub.cred`).
    pub credential_path: PathBuf,
    /// What the hub's server presents now.
    pub certificate: Arc<HubCertificate>,
    pub revocations: Arc<Revocations>,
    pub authority: Option<Arc<ClusterAuthority>>,
    pub tokens: Option<Arc<JoinTokens>>,
    /// The hub ids that joined through this hub (with the CA key only).
    pub members: Option<Arc<Members>>,
}

/// How a hub without trust material gets it: by joining through a member.
#[derive(Debug, Clone)]
pub struct JoinPlan {
    pub token: ParsedToken,
    /// `HOST:PORT` of a member that holds the CA key.
    pub peer: String,
}

fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

impl HubTrust {
    /// Loads the hub's trust material, or founds a new cluster if the data
    /// directory has none: a new CA, a certificate for `hub_id`, and
    /// `admin.cred`. A hub certificate near its end is renewed (on a hub
    /// that holds the CA key; others renew once they reach a signer).
    pub fn load_or_found(
        data_dir: &Path,
        hub_id: &str,
        cluster_name: &str,
        hub_lifetime: Duration,
    ) -> Result<HubTrust, TrustError> {
        let dir = tls_dir(data_dir);
        create_private_dir(&dir)?;
        let credential_path = dir.join("hub.cred");
        let mut authority = ClusterAuthority::load(&dir)?;
        let existing = match credential_path.exists() {
            true => Some(Credential::read(&credential_path)?),
            false => None,
        };
        if authority.is_none() && existing.is_none() {
            // A hub that joined has a credential and no CA: this is a new
            // data directory, and without `--join` it founds a cluster.
            let founded = ClusterAuthority::create(cluster_name)?;
            founded.save(&dir)?;
            tracing::info!(dir = %dir.display(), "founded a new cluster: made its certificate authority");
            authority = Some(founded);
        }
        let credential = match (existing, &authority) {
            (Some(credential), Some(authority)) if needs_renewal(&credential, hub_id)? => {
                let renewed = authority.issue(&Subject::hub(hub_id, hub_lifetime))?;
                renewed.write(&credential_path)?;
                tracing::info!("renewed this hub's certificate");
                renewed
            }
            (Some(credential), Some(_)) => credential,
            (Some(credential), None) => {
                let identity = credential.identity()?;
                if identity.hub_id.as_deref() != Some(hub_id) {
                    tracing::warn!(
                        certificate_names = ?identity.hub_id,
                        "this hub's certificate names another hub; peers refuse it: join again with a new token (move tls/hub.cred away first)"
                    );
                } else if identity.not_after <= OffsetDateTime::now_utc().unix_timestamp() {
                    tracing::warn!(
                        not_after = identity.not_after,
                        "this hub's certificate has expired and peers refuse it: join again with a new token (move tls/hub.cred away first)"
                    );
                }
                credential
            }
            (None, Some(authority)) => {
                let issued = authority.issue(&Subject::hub(hub_id, hub_lifetime))?;
                issued.write(&credential_path)?;
                issued
            }
            (None, None) => unreachable!("a cluster was founded above"),
        };
        if let Some(authority) = &authority {
            let admin = data_dir.join(ADMIN_CREDENTIAL_FILE);
            if !admin.exists() {
                let subject = Subject {
                    name: "admin".to_owned(),
                    role: Role::Operator,
                    lifetime: ADMIN_CREDENTIAL_LIFETIME,
                };
                authority.issue(&subject)?.write(&admin)?;
                tracing::info!(path = %admin.display(), "wrote an operator credential for the cli");
            }
        }
        let (tokens, members) = match &authority {
            Some(_) => (
                Some(Arc::new(JoinTokens::open(&dir)?)),
                Some(Arc::new(Members::open(&dir, hub_id)?)),
            ),
            None => (None, None),
        };
        HubTrust::assemble(&dir, credential, authority.map(Arc::new), tokens, members)
    }

    fn assemble(
        dir: &Path,
        credential: Credential,
        authority: Option<Arc<ClusterAuthority>>,
        tokens: Option<Arc<JoinTokens>>,
        members: Option<Arc<Members>>,
    ) -> Result<HubTrust, TrustError> {
        Ok(HubTrust {
            credential_path: dir.join("hub.cred"),
            certificate: Arc::new(HubCertificate::new(&credential)?),
            revocations: Arc::new(Revocations::open(dir, &credential.ca_der()?)?),
            credential,
            authority,
            tokens,
            members,
        })
    }

    /// The trust of a hub started with `--join`: if its data directory has
    /// no credential yet, it joins through `plan.peer` first; a hub that is
    /// a member already ignores the token.
    pub async fn join_or_load(
        data_dir: &Path,
        hub_id: &str,
        cluster_name: &str,
        hub_lifetime: Duration,
        plan: &JoinPlan,
    ) -> Result<HubTrust, JoinError> {
        let dir = tls_dir(data_dir);
        let credential_path = dir.join("hub.cred");
        if credential_path.exists() || dir.join("ca.key").exists() {
            tracing::info!("this hub is a member of a cluster already; the join token is not used");
            return Ok(HubTrust::load_or_found(data_dir, hub_id, cluster_name, hub_lifetime)?);
        }
        create_private_dir(&dir)?;
        let credential = join_cluster(&plan.peer, &plan.token, hub_id).await?;
        credential.write(&credential_path)?;
        tracing::info!(peer = %plan.peer, "joined the cluster");
        Ok(HubTrust::assemble(&dir, credential, None, None, None)?)
    }
}

/// Whether `credential` must be replaced: it names another hub, or a third
/// or less of its lifetime is left.
fn needs_renewal(credential: &Credential, hub_id: &str) -> Result<bool, TrustError> {
    let identity = credential.identity()?;
    Ok(
        identity.hub_id.as_deref() != Some(hub_id)
            || renewal_due(&identity, OffsetDateTime::now_utc().unix_timestamp()),
    )
}

fn create_private_dir(dir: &Path) -> Result<(), TrustError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).recursive(true).create(dir) {
        Ok(()) => Ok(()),
        Err(source) => Err(TrustError::Write {
            path: dir.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_data_directory_founds_a_cluster_and_a_restart_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = HubTrust::load_or_found(dir.path(), "hub-01", "test", HUB_CERTIFICATE_LIFETIME).unwrap();
        assert!(first.authority.is_some());
        let identity = first.credential.identity().unwrap();
        assert_eq!((identity.role, identity.hub_id.as_deref()), (Role::Hub, Some("hub-01")));
        let admin = Credential::read(&dir.path().join(ADMIN_CREDENTIAL_FILE)).unwrap();
        assert_eq!(admin.identity().unwrap().role, Role::Operator);
        assert_eq!(admin.ca_pem(), first.credential.ca_pem());

        let again = HubTrust::load_or_found(dir.path(), "hub-01", "test", HUB_CERTIFICATE_LIFETIME).unwrap();
        assert_eq!(again.credential.certificate_pem(), first.credential.certificate_pem());
        assert_eq!(again.credential.ca_pem(), first.credential.ca_pem());
    }
}
