//! How identities are written into certificates and read back.
//!
//! - Every certificate carries its role as a URI subject alternative name,
//!   `ferry:role:<role>`, and its name as the subject's common name.
//! - A hub certificate also carries the DNS names [`ANY_HUB`] (what a client
//!   that wants "a hub of this cluster" verifies) and `<hub-id>.hub.ferry`
//!   (what a hub that wants one particular peer verifies), and the URI
//!   `ferry:hub:<hub-id>`.
//!
//! The names are not real DNS names: they are checked against the
//! certificate only, never looked up.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::TrustError;

/// The DNS name every hub certificate carries.
pub const ANY_HUB: &str = "hub.ferry";
const ROLE_URI: &str = "ferry:role:";
const HUB_URI: &str = "ferry:hub:";

/// What a certificate lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads: `ps`, `logs`, `peers`, `info`, `events`.
    Viewer,
    /// Everything a user does.
    Operator,
    /// A hub of the cluster: everything, and the hub-to-hub services.
    Hub,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Hub => "hub",
        }
    }

    /// Whether a holder of `self` may do what needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        match text {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "hub" => Ok(Role::Hub),
            other => Err(format!("unknown role {other:?} (viewer, operator or hub)")),
        }
    }
}

/// A hub id as hubs make them: `hub-` and 16 hex digits.
pub fn is_hub_id(id: &str) -> bool {
    id.strip_prefix("hub-")
        .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|byte| byte.is_ascii_hexdigit()))
}

/// The DNS name that only the certificate of hub `hub_id` carries.
pub fn hub_dns_name(hub_id: &str) -> String {
    format!("{hub_id}.{ANY_HUB}")
}

pub fn role_uri(role: Role) -> String {
    format!("{ROLE_URI}{role}")
}

pub fn hub_uri(hub_id: &str) -> String {
    format!("{HUB_URI}{hub_id}")
}

/// Who a verified certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertifiedIdentity {
    pub role: Role,
    /// The subject's common name: the client's name or the hub's id.
    pub name: String,
    /// For hub certificates, the hub id they were issued to.
    pub hub_id: Option<String>,
    /// Seconds since the epoch before which the certificate is not valid.
    pub not_before: i64,
    /// Seconds since the epoch after which the certificate is expired.
    pub not_after: i64,
}

impl CertifiedIdentity {
    /// Reads the identity out of a DER certificate. A certificate without
    /// exactly one role is refused: it was not issued by a Ferry cluster.
    pub fn from_der(der: &[u8]) -> Result<CertifiedIdentity, TrustError> {
        let (_, certificate) = X509Certificate::from_der(der).map_err(|error| TrustError::Parse(error.to_string()))?;
        let name = certificate
            .subject()
            .iter_common_name()
            .next()
            .and_then(|name| name.as_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut roles = Vec::new();
        let mut hub_id = None;
        if let Ok(Some(names)) = certificate.subject_alternative_name() {
            for general in &names.value.general_names {
                if let GeneralName::URI(uri) = general {
                    if let Some(role) = uri.strip_prefix(ROLE_URI) {
                        roles.push(role.parse::<Role>().map_err(TrustError::Parse)?);
                    } else if let Some(id) = uri.strip_prefix(HUB_URI) {
                        hub_id = Some(id.to_owned());
                    }
                }
            }
        }
        let [role] = roles[..] else {
            return Err(TrustError::Parse(format!(
                "the certificate of {name:?} names {} roles, not one",
                roles.len()
            )));
        };
        Ok(CertifiedIdentity {
            role,
            name,
            hub_id,
            not_before: certificate.validity().not_before.timestamp(),
            not_after: certificate.validity().not_after.timestamp(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_order_from_viewer_to_hub() {
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(Role::Hub.allows(Role::Operator));
        assert!(!Role::Viewer.allows(Role::Operator));
        assert!(!Role::Operator.allows(Role::Hub));
        assert_eq!("viewer".parse::<Role>(), Ok(Role::Viewer));
        assert!("root".parse::<Role>().unwrap_err().contains("root"));
    }
}
