//! Client credentials and join tokens: a hub that holds the cluster CA key
//! signs a viewer or operator certificate for a client's own key, and makes
//! the tokens new hubs join with.

use std::time::Duration;

use ferry_proto::v1::{
    CreateJoinTokenRequest, IssueCredentialRequest, IssueCredentialResponse, JoinToken, ListJoinTokensResponse,
    RemoveHubRequest, RemoveHubResponse, RemoveJoinTokenRequest,
};

use super::HubApi;
use crate::error::HubError;
use crate::trust::authority::Subject;
use crate::trust::names::is_hub_id;
use crate::trust::{Role, TrustError};

/// Lifetime of a credential issued without a TTL.
pub const DEFAULT_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// Lifetime of a join token made without a TTL.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// The longest a join token may live.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// The longest lifetime a credential may be issued for.
pub const MAX_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(5 * 365 * 24 * 3600);

fn token_info(info: crate::trust::tokens::TokenInfo, token: String) -> JoinToken {
    JoinToken {
        token,
        id: info.id,
        expires_at: info.expires_at,
        uses_left: info.uses_left,
    }
}

impl HubApi {
    fn signer(&self) -> Result<(&crate::trust::ClusterAuthority, &crate::trust::tokens::JoinTokens), HubError> {
        match (&self.inner.authority, &self.inner.tokens) {
            (Some(authority), Some(tokens)) => Ok((authority, tokens)),
            _ => Err(TrustError::NotAnAuthority.into()),
        }
    }

    pub fn create_join_token(&self, request: CreateJoinTokenRequest) -> Result<JoinToken, HubError> {
        let (authority, tokens) = self.signer()?;
        let lifetime = match request.ttl_seconds {
            0 => DEFAULT_TOKEN_LIFETIME,
            seconds => Duration::from_secs(seconds),
        };
        if lifetime > MAX_TOKEN_LIFETIME {
            return Err(HubError::InvalidRequest(format!(
                "a join token lives at most {}",
                humantime::format_duration(MAX_TOKEN_LIFETIME)
            )));
        }
        let fingerprint = crate::trust::tokens::ca_fingerprint(&authority.certificate_der()?);
        let (token, info) = tokens.create(&fingerprint, lifetime, request.uses.max(1))?;
        tracing::info!(id = %info.id, uses = info.uses_left, lifetime_s = lifetime.as_secs(), "made a join token");
        Ok(token_info(info, token))
    }

    pub fn list_join_tokens(&self) -> Result<ListJoinTokensResponse, HubError> {
        let (_, tokens) = self.signer()?;
        Ok(ListJoinTokensResponse {
            tokens: tokens
                .list()
                .into_iter()
                .map(|info| token_info(info, String::new()))
                .collect(),
        })
    }

    pub fn remove_join_token(&self, request: RemoveJoinTokenRequest) -> Result<(), HubError> {
        let (_, tokens) = self.signer()?;
        match tokens.remove(&request.id)? {
            true => {
                tracing::info!(id = %request.id, "revoked a join token");
                Ok(())
            }
            false => Err(HubError::TokenNotFound { id: request.id }),
        }
    }

    pub fn issue_credential(&self, request: IssueCredentialRequest) -> Result<IssueCredentialResponse, HubError> {
        let (authority, _) = self.signer()?;
        let role: Role = request.role.parse().map_err(HubError::InvalidRequest)?;
        if role == Role::Hub {
            return Err(HubError::InvalidRequest(
                "hub certificates are given to hubs that join with a token, not issued as credentials".to_owned(),
            ));
        }
        let name = request.name.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(HubError::InvalidRequest(format!(
                "a credential name is 1 to 64 printable characters, not {:?}",
                request.name
            )));
        }
        let lifetime = match request.ttl_seconds {
            0 => DEFAULT_CREDENTIAL_LIFETIME,
            seconds => Duration::from_secs(seconds),
        };
        if lifetime > MAX_CREDENTIAL_LIFETIME {
            return Err(HubError::InvalidRequest(format!(
                "a credential lives at most {}",
                humantime::format_duration(MAX_CREDENTIAL_LIFETIME)
            )));
        }
        let subject = Subject {
            name: name.to_owned(),
            role,
            lifetime,
        };
        let certificate_pem = authority.sign_request(&request.signing_request_pem, &subject)?;
        tracing::info!(name, %role, lifetime_s = lifetime.as_secs(), "issued a client credential");
        Ok(IssueCredentialResponse {
            certificate_pem,
            ca_pem: authority.certificate_pem().to_owned(),
        })
    }

    /// Removes a hub from the cluster: it goes on the revocation list,
    /// which this hub signs and its peers pick up from their next probe of
    /// it. `hub` is a hub id, or the name of exactly one known peer; an id
    /// no peer has now (a hub long gone) is taken as it is.
    pub fn remove_hub(&self, request: RemoveHubRequest) -> Result<RemoveHubResponse, HubError> {
        let (authority, _) = self.signer()?;
        let revocations = self.inner.revocations.as_ref().ok_or(TrustError::NotAnAuthority)?;
        let wanted = request.hub.trim();
        let identity = self.supervisor().identity();
        if wanted == identity.id || wanted == identity.name {
            return Err(HubError::InvalidRequest(
                "this hub holds the cluster CA key and cannot remove itself".to_owned(),
            ));
        }
        let known: Vec<String> = self
            .inner
            .peers
            .borrow()
            .iter()
            .filter(|peer| peer.id() == Some(wanted) || peer.name() == Some(wanted))
            .filter_map(|peer| peer.id().map(str::to_owned))
            .collect();
        let hub_id = match known.as_slice() {
            [hub_id] => hub_id.clone(),
            [] if is_hub_id(wanted) => wanted.to_owned(),
            [] => {
                return Err(HubError::HubNotFound { hub: wanted.to_owned() });
            }
            _ => {
                return Err(HubError::InvalidRequest(format!(
                    "several hubs are named {wanted:?}; give the hub id"
                )));
            }
        };
        let functions_total = self
            .inner
            .figures
            .get(&hub_id)
            .map_or(0, |figures| figures.functions_total);
        if revocations.is_revoked(&hub_id) {
            return Ok(RemoveHubResponse {
                hub_id,
                sequence: revocations.sequence(),
                functions_total,
            });
        }
        let sequence = revocations.revoke(authority, &hub_id)?;
        tracing::warn!(%hub_id, sequence, functions_total, "removed a hub from the cluster");
        Ok(RemoveHubResponse {
            hub_id,
            sequence,
            functions_total,
        })
    }
}
