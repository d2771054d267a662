//! Where a request goes: the peer a `migrate` names, and the forwarding of
//! requests about functions that moved away.

use super::HubService;
use crate::error::HubError;
use crate::forward;
use crate::migration::Target;
use ferry_discovery::{Compatibility, PeerSnapshot, PeerState};
use ferry_proto::v1::FunctionInfo;

/// Passes `$request` on to the hub `$pointer` names, one hop further:
/// `Result<Response<_>, Status>` of `$method` there.
macro_rules! forward_call {
    ($service:expr, $request:ident, $pointer:expr, $method:ident) => {{
        let pointer = &$pointer;
        let hops = crate::forward::hops(&$request);
        let mut client = $service.forwarder.client(&pointer.address)?;
        let onward = crate::forward::onward($request.into_inner(), hops, &pointer.hub_name)?;
        client
            .$method(onward)
            .await
            .map_err(|status| crate::forward::unreachable(&pointer.hub_name, &pointer.address, &status))
    }};
}
pub(super) use forward_call;

/// Returns the answer of the hub running the function, if it moved away.
macro_rules! forward_if_moved {
    ($service:expr, $request:ident, $method:ident) => {
        if let Some(pointer) = $service.supervisor.forward_pointer(&$request.get_ref().name) {
            return crate::service::routing::forward_call!($service, $request, pointer, $method);
        }
    };
}
pub(super) use forward_if_moved;

impl HubService {
    /// The peer `to` names (hub id or name), if this hub may move a function there.
    pub(super) fn resolve_target(&self, to: &str) -> Result<Target, HubError> {
        let unusable = |reason: String| HubError::PeerUnusable {
            hub: to.to_owned(),
            reason,
        };
        let identity = self.supervisor.identity();
        if to == identity.id || to == identity.name {
            return Err(unusable("that is this hub".to_owned()));
        }
        let peers = self.peers.borrow();
        let matches: Vec<&PeerSnapshot> = peers
            .iter()
            .filter(|peer| peer.id() == Some(to) || peer.name() == Some(to))
            .collect();
        let peer = match matches.as_slice() {
            [] => {
                return Err(unusable(
                    "no hub of that name or id is in the peer table (see `ferry peers`)".to_owned(),
                ));
            }
            [peer] => *peer,
            _ => return Err(unusable("several hubs have that name; give the hub id".to_owned())),
        };
        if !peer.is_usable() {
            let reason = match (peer.state, peer.compatibility) {
                (_, Some(Compatibility::ForeignCluster)) => format!(
                    "it belongs to cluster {:?}, this hub to {:?}",
                    peer.identity
                        .as_ref()
                        .map(|identity| identity.cluster_id.as_str())
                        .unwrap_or_default(),
                    self.cluster_id
                ),
                (_, Some(Compatibility::IncompatibleProtocol)) => "it speaks another protocol version".to_owned(),
                (PeerState::Down, _) => "it is down".to_owned(),
                (PeerState::Suspect, _) => "it missed its last probes (suspect)".to_owned(),
                _ => "it has not answered a probe yet".to_owned(),
            };
            return Err(unusable(reason));
        }
        let address = peer
            .address
            .ok_or_else(|| unusable("its address is unknown".to_owned()))?;
        Ok(Target {
            hub_id: peer.id().unwrap_or_default().to_owned(),
            hub_name: peer.name().unwrap_or_default().to_owned(),
            address,
        })
    }

    /// What `ps` shows for a function that moved away: the hub running it
    /// answers for it; if it cannot be reached, the pointer is shown.
    pub(super) async fn moved_info(&self, local: FunctionInfo, hops: u32) -> FunctionInfo {
        let name = local.spec.as_ref().map(|spec| spec.name.clone()).unwrap_or_default();
        let Some(pointer) = self.supervisor.forward_pointer(&name) else {
            return local;
        };
        let asked = async {
            let mut client = self.forwarder.client(&pointer.address)?;
            let request = forward::onward(
                ferry_proto::v1::GetFunctionRequest { name: name.clone() },
                hops,
                &pointer.hub_name,
            )?;
            client.get_function(request).await.map(tonic::Response::into_inner)
        };
        match tokio::time::timeout(std::time::Duration::from_secs(1), asked).await {
            Ok(Ok(mut info)) => {
                info.forwarded = true;
                info
            }
            Ok(Err(status)) => {
                tracing::debug!(function = %name, to = %pointer.hub_name, error = %status.message(), "moved function did not answer");
                local
            }
            Err(_) => local,
        }
    }
}
