//! Credential files: one PEM file holds what a client or a hub needs to
//! take part — its private key, its certificate, and the cluster CA's
//! certificate — in that order. Written with mode 0600.

use std::io::Write;
use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TrustError;
use super::names::CertifiedIdentity;

/// A private key, its certificate and the CA that signed it, in PEM.
#[derive(Clone)]
pub struct Credential {
    key_pem: String,
    certificate_pem: String,
    ca_pem: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Credential").finish_non_exhaustive()
    }
}

impl Credential {
    pub fn new(key_pem: String, certificate_pem: String, ca_pem: String) -> Credential {
        Credential {
            key_pem,
            certificate_pem,
            ca_pem,
        }
    }

    /// Reads a credential file, refusing anything that is not one whole
    /// credential (a truncated file, a certificate without its key).
    pub fn read(path: &Path) -> Result<Credential, TrustError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrustError::Read {
            path: path.to_owned(),
            source,
        })?;
        Credential::parse(&text).map_err(|reason| TrustError::BadCredential {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses the text of a credential file.
    pub fn parse(text: &str) -> Result<Credential, String> {
        let mut keys = Vec::new();
        let mut certificates = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("-----BEGIN ") {
            let block = &rest[start..];
            let label_end = block[11..]
                .find("-----")
                .map(|end| end + 11)
                .ok_or("a PEM header is cut off")?;
            let label = &block[11..label_end];
            let end_marker = format!("-----END {label}-----");
            let end = block
                .find(&end_marker)
                .ok_or_else(|| format!("the {label} block has no end (the file is truncated?)"))?;
            let pem = &block[..end + end_marker.len()];
            match label {
                "PRIVATE KEY" | "EC PRIVATE KEY" | "RSA PRIVATE KEY" => keys.push(pem.to_owned()),
                "CERTIFICATE" => certificates.push(pem.to_owned()),
                other => return Err(format!("unexpected {other} block")),
            }
            rest = &block[end + end_marker.len()..];
        }
        let [key] = &keys[..] else {
            return Err(format!("it holds {} private keys, not one", keys.len()));
        };
        let [certificate, ca] = &certificates[..] else {
            return Err(format!(
                "it holds {} certificates, not two (its own, then the cluster CA's)",
                certificates.len()
            ));
        };
        let credential = Credential::new(key.clone() + "\n", certificate.clone() + "\n", ca.clone() + "\n");
        PrivateKeyDer::from_pem_slice(credential.key_pem.as_bytes())
            .map_err(|error| format!("its private key does not decode: {error}"))?;
        let der = credential.certificate_der().map_err(|error| error.to_string())?;
        CertifiedIdentity::from_der(&der).map_err(|error| error.to_string())?;
        CertificateDer::from_pem_slice(credential.ca_pem.as_bytes())
            .map_err(|error| format!("its CA certificate does not decode: {error}"))?;
        Ok(credential)
    }

    /// The file's text.
    pub fn to_pem(&self) -> String {
        let identity = self.identity().ok();
        let header = identity.map_or_else(String::new, |identity| {
            format!("# ferry credential: {} ({})\n", identity.name, identity.role)
        });
        format!("{header}{}{}{}", self.key_pem, self.certificate_pem, self.ca_pem)
    }

    /// Writes the credential to `path`, readable by its owner only.
    pub fn write(&self, path: &Path) -> Result<(), TrustError> {
        write_private(path, self.to_pem().as_bytes())
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn certificate_der(&self) -> Result<CertificateDer<'static>, TrustError> {
        CertificateDer::from_pem_slice(self.certificate_pem.as_bytes())
            .map_err(|error| TrustError::Parse(error.to_string()))
    }

    pub fn ca_der(&self) -> Result<CertificateDer<'static>, TrustError> {
        CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).map_err(|error| TrustError::Parse(error.to_string()))
    }

    pub fn key_der(&self) -> Result<PrivateKeyDer<'static>, TrustError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|error| TrustError::Parse(error.to_string()))
    }

    /// Who the certificate names.
    pub fn identity(&self) -> Result<CertifiedIdentity, TrustError> {
        CertifiedIdentity::from_der(&self.certificate_der()?)
    }
}

/// The JSON file at `path`, or `T::default()` if there is none yet.
pub fn read_json_or_default<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T, TrustError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| TrustError::BadCredential {
            path: path.to_owned(),
            reason: error.to_string(),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(source) => Err(TrustError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `bytes` to `path` with mode 0600 (set before anything is written),
/// replacing the file whole.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TrustError> {
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |source| TrustError::Write {
        path: path.to_owned(),
        source,
    };
    let temporary = path.with_extension("partial");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(failed)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(failed)?;
    std::fs::rename(&temporary, path).map_err(failed)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::trust::authority::{ClusterAuthority, Subject};
    use crate::trust::names::Role;

    fn operator() -> Credential {
        let authority = ClusterAuthority::create("test").unwrap();
        let subject = Subject {
            name: "admin".to_owned(),
            role: Role::Operator,
            lifetime: Duration::from_secs(3600),
        };
        authority.issue(&subject).unwrap()
    }

    #[test]
    fn a_written_credential_reads_back_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.cred");
        operator().write(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let read = Credential::read(&path).unwrap();
        assert_eq!(read.identity().unwrap().role, Role::Operator);
    }

    #[test]
    fn a_truncated_or_foreign_file_is_refused_with_the_reason() {
        let text = operator().to_pem();
        let cut = &text[..text.len() - 40];
        let error = Credential::parse(cut).unwrap_err();
        assert!(error.contains("truncated"), "{error}");
        let certificates_only: String = text
            .split_inclusive('\n')
            .skip_while(|line| !line.contains("END PRIVATE"))
            .skip(1)
            .collect();
        let error = Credential::parse(&certificates_only).unwrap_err();
        assert!(error.contains("0 private keys"), "{error}");
        assert!(Credential::parse("hello").unwrap_err().contains("0 private keys"));
    }
}
