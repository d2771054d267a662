//! The cluster's certificate authority: made by the first hub of a cluster,
//! kept in its data directory (`tls/ca.key`, mode 0600, and `tls/ca.crt`),
//! and used to sign the certificates of hubs and clients.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use time::OffsetDateTime;

use super::TrustError;
use super::credential::{Credential, write_private};
use super::names::{ANY_HUB, Role, hub_dns_name, hub_uri, role_uri};

/// How long the cluster CA is valid.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates are valid from a little before they are made: clocks of
/// edge boards drift.
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// What a certificate is issued for.
#[derive(Debug, Clone)]
pub struct Subject {
    /// The common name: a client's name, or the hub id.
    pub name: String,
    pub role: Role,
    pub lifetime: Duration,
}

impl Subject {
    pub fn hub(hub_id: &str, lifetime: Duration) -> Subject {
        Subject {
            name: hub_id.to_owned(),
            role: Role::Hub,
            lifetime,
        }
    }

    fn params(&self) -> Result<CertificateParams, TrustError> {
        let mut params = CertificateParams::default();
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + self.lifetime;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, self.name.as_str());
        params.distinguished_name = name;
        params.subject_alt_names = vec![SanType::URI(role_uri(self.role).try_into()?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if self.role == Role::Hub {
            params.subject_alt_names.extend([
                SanType::URI(hub_uri(&self.name).try_into()?),
                SanType::DnsName(ANY_HUB.try_into()?),
                SanType::DnsName(hub_dns_name(&self.name).try_into()?),
            ]);
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        let mut serial = [0u8; 16];
        getrandom::fill(&mut serial).expect("the operating system provides randomness");
        serial[0] &= 0x7f;
        params.serial_number = Some(serial.to_vec().into());
        Ok(params)
    }
}

/// The cluster CA: its certificate and the key that signs.
pub struct ClusterAuthority {
    certificate_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for ClusterAuthority {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("ClusterAuthority").finish_non_exhaustive()
    }
}

impl ClusterAuthority {
    /// A new CA for a new cluster.
    pub fn create(cluster_name: &str) -> Result<ClusterAuthority, TrustError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + CA_LIFETIME;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, format!("ferry cluster {cluster_name}"));
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let certificate = params.self_signed(&key)?;
        Ok(ClusterAuthority {
            certificate_pem: certificate.pem(),
            key,
        })
    }

    fn paths(dir: &Path) -> (PathBuf, PathBuf) {
        (dir.join("ca.key"), dir.join("ca.crt"))
    }

    /// The CA kept in `dir`, if there is one. A key file that others may
    /// read is refused: whoever reads it can make members of the cluster.
    pub fn load(dir: &Path) -> Result<Option<ClusterAuthority>, TrustError> {
        let (key_path, certificate_path) = Self::paths(dir);
        if !key_path.exists() {
            return Ok(None);
        }
        check_private(&key_path)?;
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| TrustError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let key = KeyPair::from_pem(&read(&key_path)?).map_err(|error| TrustError::BadCredential {
            path: key_path.clone(),
            reason: error.to_string(),
        })?;
        let certificate_pem = read(&certificate_path)?;
        Issuer::from_ca_cert_pem(&certificate_pem, &key).map_err(|error| TrustError::BadCredential {
            path: certificate_path,
            reason: error.to_string(),
        })?;
        Ok(Some(ClusterAuthority { certificate_pem, key }))
    }

    /// Writes the CA into `dir` (the key with mode 0600).
    pub fn save(&self, dir: &Path) -> Result<(), TrustError> {
        let (key_path, certificate_path) = Self::paths(dir);
        write_private(&key_path, self.key.serialize_pem().as_bytes())?;
        std::fs::write(&certificate_path, &self.certificate_pem).map_err(|source| TrustError::Write {
            path: certificate_path,
            source,
        })
    }

    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    pub fn certificate_der(&self) -> Result<rustls::pki_types::CertificateDer<'static>, TrustError> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(self.certificate_pem.as_bytes())
            .map_err(|error| TrustError::Parse(error.to_string()))
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, TrustError> {
        Ok(Issuer::from_ca_cert_pem(&self.certificate_pem, &self.key)?)
    }

    /// A new key and a certificate for `subject`, in one credential.
    pub fn issue(&self, subject: &Subject) -> Result<Credential, TrustError> {
        let key = KeyPair::generate()?;
        let certificate = subject.params()?.signed_by(&key, &self.issuer()?)?;
        Ok(Credential::new(
            key.serialize_pem(),
            certificate.pem(),
            self.certificate_pem.clone(),
        ))
    }

    /// The CA key's signature (ECDSA P-256, SHA-256, ASN.1) over `message`:
    /// what vouches for a revocation list.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, TrustError> {
        use rcgen::SigningKey;
        Ok(self.key.sign(message)?)
    }

    /// A certificate for `subject` on the public key of a signing request
    /// (whatever else the request asks for is ignored): the key never left
    /// the requester. Returns the certificate in PEM.
    pub fn sign_request(&self, request_pem: &str, subject: &Subject) -> Result<String, TrustError> {
        let request = CertificateSigningRequestParams::from_pem(request_pem)
            .map_err(|error| TrustError::Parse(format!("not a certificate signing request: {error}")))?;
        sign_key(&subject.params()?, &request.public_key, &self.issuer()?)
    }
}

fn sign_key(
    params: &CertificateParams,
    key: &impl PublicKeyData,
    issuer: &Issuer<'_, &KeyPair>,
) -> Result<String, TrustError> {
    Ok(params.signed_by(key, issuer)?.pem())
}

/// Refuses a private key file that users other than its owner may read.
fn check_private(path: &Path) -> Result<(), TrustError> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path).map_err(|source| TrustError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TrustError::LooseKeyPermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// A signing request for a new key: what a client sends so that its key
/// never leaves it. Returns the key and the request, both in PEM.
pub fn new_signing_request(name: &str) -> Result<(String, String), TrustError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut distinguished = DistinguishedName::new();
    distinguished.push(DnType::CommonName, name);
    params.distinguished_name = distinguished;
    let request = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), request.pem()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::names::CertifiedIdentity;

    #[test]
    fn an_issued_certificate_names_its_role_and_hub() {
        let authority = ClusterAuthority::create("test").unwrap();
        let hub = authority
            .issue(&Subject::hub("hub-0011", Duration::from_secs(3600)))
            .unwrap();
        let identity = CertifiedIdentity::from_der(&hub.certificate_der().unwrap()).unwrap();
        assert_eq!(identity.role, Role::Hub);
        assert_eq!(identity.hub_id.as_deref(), Some("hub-0011"));
        let viewer = Subject {
            name: "dashboard".to_owned(),
            role: Role::Viewer,
            lifetime: Duration::from_secs(60),
        };
        let (key, request) = new_signing_request("asks-for-anything").unwrap();
        let signed = authority.sign_request(&request, &viewer).unwrap();
        let credential = Credential::new(key, signed, authority.certificate_pem().to_owned());
        let identity = CertifiedIdentity::from_der(&credential.certificate_der().unwrap()).unwrap();
        assert_eq!(
            (identity.role, identity.name.as_str(), identity.hub_id),
            (Role::Viewer, "dashboard", None)
        );
    }

    #[test]
    fn a_saved_authority_loads_and_a_loose_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let authority = ClusterAuthority::create("test").unwrap();
        authority.save(dir.path()).unwrap();
        let loaded = ClusterAuthority::load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.certificate_pem(), authority.certificate_pem());
        let key = dir.path().join("ca.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = ClusterAuthority::load(dir.path()).unwrap_err();
        assert!(error.to_string().contains("0600"), "{error}");
        assert!(ClusterAuthority::load(&dir.path().join("none")).unwrap().is_none());
    }
}
