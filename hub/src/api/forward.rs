//! Forwarding: a hub asked about a function that moved away passes the
//! request on to the hub its forward pointer names (which may forward it
//! again), so callers never need to know where a function runs. Hubs always
//! speak gRPC to each other, whatever transport the request came in on; the
//! hop count travels in [`HOPS_HEADER`].

use ferry_discovery::PeerState;
use ferry_proto::internal::v1::ForwardPointer;
use ferry_proto::v1::hub_client::HubClient;
use ferry_proto::v1::{FunctionInfo, FunctionState, GetFunctionRequest, ListFunctionsRequest, ListFunctionsResponse};
use ferry_proto::{ErrorCode, ServiceError};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::HubApi;
use crate::connector::Purpose;
use crate::error::HubError;

/// Request header counting how often a request was forwarded.
pub const HOPS_HEADER: &str = "ferry-forward-hops";
/// A request forwarded this often is in a loop of stale pointers.
pub const MAX_HOPS: u32 = 8;

/// How long `ps` waits for the hub a function moved to.
const MOVED_INFO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// A request about one function: it names the function.
pub trait AboutFunction {
    fn function_name(&self) -> &str;
}

macro_rules! about_function {
    ($($message:ty),*) => {
        $(impl AboutFunction for $message {
            fn function_name(&self) -> &str {
                &self.name
            }
        })*
    };
}
about_function!(
    ferry_proto::v1::StopRequest,
    ferry_proto::v1::CheckpointRequest,
    ferry_proto::v1::SuspendRequest,
    ferry_proto::v1::ResumeRequest,
    ferry_proto::v1::InvokeRequest
);

/// A hub to forward to: its id (when known, TLS accepts only that hub's
/// certificate), its name and its address.
#[derive(Debug, Clone)]
pub(super) struct PeerAt {
    pub id: Option<String>,
    pub name: String,
    pub address: String,
}

impl From<&ForwardPointer> for PeerAt {
    fn from(pointer: &ForwardPointer) -> PeerAt {
        PeerAt {
            id: Some(pointer.hub_id.clone()).filter(|id| !id.is_empty()),
            name: pointer.hub_name.clone(),
            address: pointer.address.clone(),
        }
    }
}

impl HubApi {
    /// Runs `local` here, or, if the function moved away, asks the hub it
    /// moved to with `remote`, one hop further.
    pub(super) async fn forward_or_run<M: AboutFunction, R>(
        &self,
        request: M,
        hops: u32,
        remote: impl AsyncFnOnce(HubClient<Channel>, Request<M>) -> Result<Response<R>, Status>,
        local: impl AsyncFnOnce(M) -> Result<R, HubError>,
    ) -> Result<R, HubError> {
        match self.elsewhere(request.function_name(), hops).await? {
            Some(peer) => self.forward_to(&peer, request, hops, remote).await,
            None => local(request).await,
        }
    }

    /// The hub a request about `name` goes to instead of this one: where
    /// the function's forward pointer says it moved, or, for a name this
    /// hub never heard of and a request no hub forwarded yet, the peer that
    /// runs it. `None`: answer here. A name no hub that answered knows,
    /// while some peer did not answer, is refused naming that peer: the
    /// function may be there.
    pub(super) async fn elsewhere(&self, name: &str, hops: u32) -> Result<Option<PeerAt>, HubError> {
        if let Some(pointer) = self.supervisor().forward_pointer(name) {
            return Ok(Some(self.pointed_peer(&pointer)));
        }
        if hops == 0 && self.supervisor().phase(name).is_none() {
            return self
                .locate(name)
                .await
                .or_not_found(name, &self.supervisor().identity().name);
        }
        Ok(None)
    }

    /// The peer that runs a function this hub has never heard of: every
    /// usable peer is asked at once (one hop, so none of them asks its own
    /// peers), and the one running it wins over one that merely points to
    /// it; and the peers that could not say (down, or silent for a second).
    pub(super) async fn locate(&self, name: &str) -> Located {
        let asks = self.usable_peers().into_iter().map(|peer| async move {
            let request = GetFunctionRequest { name: name.to_owned() };
            let asked = self.forward_to(&peer, request, 0, async |mut hub, request| {
                hub.get_function(request).await
            });
            match tokio::time::timeout(MOVED_INFO_TIMEOUT, asked).await {
                Ok(Ok(info)) => Ok((peer, info)),
                Ok(Err(error)) if error.error_code() == ErrorCode::NotFound => Err(None),
                Ok(Err(_)) | Err(_) => Err(Some(format!("{} (no answer)", peer.name))),
            }
        });
        let mut found = Vec::new();
        let mut silent = self.unusable_peers();
        for answer in futures::future::join_all(asks).await {
            match answer {
                Ok(located) => found.push(located),
                Err(Some(peer)) => silent.push(peer),
                Err(None) => {}
            }
        }
        let running_there = found.iter().position(|(_, info)| !info.forwarded);
        let peer = found.into_iter().nth(running_there.unwrap_or(0)).map(|(peer, info)| {
            tracing::debug!(function = %name, hub = %info.hub_name, "located on a peer");
            peer
        });
        Located { peer, silent }
    }

    /// Peers known but not reachable now (down, not answering, never
    /// answered), each as `name (state)`. One that answers but is not
    /// usable (another cluster or protocol) runs none of this cluster's
    /// functions, and is left out.
    fn unusable_peers(&self) -> Vec<String> {
        self.inner
            .peers
            .borrow()
            .iter()
            .filter(|peer| !peer.is_usable() && peer.state != PeerState::Up)
            .map(|peer| {
                let name = peer
                    .name()
                    .map(str::to_owned)
                    .or_else(|| peer.address.map(|address| address.to_string()))
                    .unwrap_or_else(|| "a peer".to_owned());
                format!("{name} ({})", peer_state_words(peer))
            })
            .collect()
    }

    /// The peers this hub may ask now.
    pub(super) fn usable_peers(&self) -> Vec<PeerAt> {
        self.inner
            .peers
            .borrow()
            .iter()
            .filter(|peer| peer.is_usable())
            .filter_map(|peer| {
                Some(PeerAt {
                    id: peer.id().map(str::to_owned),
                    name: peer.name().unwrap_or_default().to_owned(),
                    address: peer.address?.to_string(),
                })
            })
            .collect()
    }

    /// Every function of the cluster, each once, as the hub running it sees
    /// it: this hub's and every usable peer's, asked at once (a peer that
    /// does not answer within a second is left out). A function a hub only
    /// points to is shown from the hub running it when that one answered.
    pub async fn cluster_functions(&self) -> ListFunctionsResponse {
        let asks = self.usable_peers().into_iter().map(|peer| async move {
            let asked = self.forward_to(&peer, ListFunctionsRequest::default(), 0, async |mut hub, request| {
                hub.list_functions(request).await
            });
            match tokio::time::timeout(MOVED_INFO_TIMEOUT, asked).await {
                Ok(Ok(answer)) => answer.functions,
                _ => Vec::new(),
            }
        });
        let (mut functions, theirs) =
            futures::future::join(self.list_functions(0), futures::future::join_all(asks)).await;
        functions.functions.extend(theirs.into_iter().flatten());
        ListFunctionsResponse {
            functions: one_per_function(functions.functions),
        }
    }

    /// Asks the hub `pointer` names with `remote`, one hop further.
    pub(super) async fn forward<M, R>(
        &self,
        pointer: &ForwardPointer,
        request: M,
        hops: u32,
        remote: impl AsyncFnOnce(HubClient<Channel>, Request<M>) -> Result<Response<R>, Status>,
    ) -> Result<R, HubError> {
        self.forward_to(&self.pointed_peer(pointer), request, hops, remote)
            .await
    }

    /// The hub a forward pointer names, at the address it answers at now:
    /// one that restarted on another address is found where discovery last
    /// reached it, not at the address it had when the function moved.
    fn pointed_peer(&self, pointer: &ForwardPointer) -> PeerAt {
        let mut peer = PeerAt::from(pointer);
        let current = self.inner.peers.borrow().iter().find_map(|known| {
            (peer.id.is_some() && known.state == PeerState::Up && known.id() == peer.id.as_deref())
                .then_some(known.address)
                .flatten()
        });
        if let Some(address) = current {
            peer.address = address.to_string();
        }
        peer
    }

    /// Asks the hub `peer` names with `remote`, one hop further.
    pub(super) async fn forward_to<M, R>(
        &self,
        peer: &PeerAt,
        request: M,
        hops: u32,
        remote: impl AsyncFnOnce(HubClient<Channel>, Request<M>) -> Result<Response<R>, Status>,
    ) -> Result<R, HubError> {
        let (hub_name, address) = (peer.name.as_str(), peer.address.as_str());
        let client = self.client(address, peer.id.as_deref())?;
        let request = onward(request, hops, hub_name)?;
        remote(client, request)
            .await
            .map(Response::into_inner)
            .map_err(|status| unreachable(hub_name, address, &status))
    }

    fn client(&self, address: &str, hub_id: Option<&str>) -> Result<HubClient<Channel>, HubError> {
        self.inner
            .migration
            .connector
            .hub_client(address, Purpose::Control, hub_id)
            .map_err(|error| HubError::Internal(format!("cannot forward to {address}: {error}")))
    }

    /// What `ps` shows for a function that moved away: the hub running it
    /// answers for it; if it cannot be reached, the pointer is shown.
    /// `None`: that hub, asked and identified, no longer has the function
    /// (it was removed there), and the pointer here is forgotten.
    pub(super) async fn moved_info(&self, local: FunctionInfo, hops: u32) -> Option<FunctionInfo> {
        let name = local.spec.as_ref().map(|spec| spec.name.clone()).unwrap_or_default();
        let Some(pointer) = self.supervisor().forward_pointer(&name) else {
            return Some(local);
        };
        let request = GetFunctionRequest { name: name.clone() };
        let asked = self.forward(&pointer, request, hops, async |mut hub, request| {
            hub.get_function(request).await
        });
        match tokio::time::timeout(MOVED_INFO_TIMEOUT, asked).await {
            Ok(Ok(mut info)) => {
                info.forwarded = true;
                Some(info)
            }
            Ok(Err(HubError::Remote {
                code: ErrorCode::NotFound,
                ..
            })) if self.is_the_pointed_hub(&pointer, hops).await => {
                tracing::info!(function = %name, hub = %pointer.hub_name, "function removed where it moved to; forgetting its forward pointer");
                match self.supervisor().forget(&name) {
                    Ok(()) => None,
                    Err(error) => {
                        tracing::warn!(function = %name, error = %error, "cannot forget a forward pointer");
                        Some(local)
                    }
                }
            }
            Ok(Err(error)) => {
                tracing::debug!(function = %name, to = %pointer.hub_name, error = %error, "moved function did not answer");
                let why = match error {
                    // Another hub answers at that address now.
                    HubError::Remote {
                        code: ErrorCode::NotFound,
                        ..
                    } => format!(
                        "hub {} ({}) is no longer at {}",
                        pointer.hub_name, pointer.hub_id, pointer.address
                    ),
                    _ => format!("hub {} does not answer", pointer.hub_name),
                };
                Some(FunctionInfo { failure: why, ..local })
            }
            Err(_) => Some(FunctionInfo {
                failure: format!("hub {} does not answer", pointer.hub_name),
                ..local
            }),
        }
    }

    /// Whether the hub answering at the pointer's address is the one the
    /// function moved to (not another hub given that address since).
    async fn is_the_pointed_hub(&self, pointer: &ForwardPointer, hops: u32) -> bool {
        let asked = self.forward(
            pointer,
            ferry_proto::v1::GetHubInfoRequest::default(),
            hops,
            async |mut hub, request| hub.get_hub_info(request).await,
        );
        matches!(
            tokio::time::timeout(MOVED_INFO_TIMEOUT, asked).await,
            Ok(Ok(info)) if !pointer.hub_id.is_empty() && info.hub_id == pointer.hub_id
        )
    }
}

/// What [`HubApi::locate`] found: the peer running the function, if one
/// answered, and the peers that could not say.
pub(super) struct Located {
    pub(super) peer: Option<PeerAt>,
    pub(super) silent: Vec<String>,
}

impl Located {
    /// The peer, `None` when nobody has the function and every peer
    /// answered, or the refusal naming those that did not.
    fn or_not_found(self, name: &str, hub: &str) -> Result<Option<PeerAt>, HubError> {
        match (self.peer, self.silent) {
            (Some(peer), _) => Ok(Some(peer)),
            (None, silent) if silent.is_empty() => Ok(None),
            (None, silent) => Err(HubError::FunctionNotFoundYet {
                name: name.to_owned(),
                hub: hub.to_owned(),
                silent: silent.join(", "),
            }),
        }
    }

    /// The peer, or the error `not_found` (with the peers that did not
    /// answer, if any).
    pub(super) fn or(self, not_found: HubError) -> Result<PeerAt, HubError> {
        match not_found {
            HubError::FunctionNotFound { name, hub } => self
                .or_not_found(&name, &hub)?
                .ok_or(HubError::FunctionNotFound { name, hub }),
            other => self.peer.ok_or(other),
        }
    }
}

fn peer_state_words(peer: &ferry_discovery::PeerSnapshot) -> &'static str {
    match peer.state {
        PeerState::Unknown => "never answered",
        PeerState::Up => "up",
        PeerState::Suspect => "not answering",
        PeerState::Down => "down",
    }
}

/// The functions of several hubs' lists, each once: every entry of a hub
/// running its function (functions of one name deployed on two hubs are
/// two functions), and a forwarded entry or a bare pointer only for a name
/// no hub running it answered for.
fn one_per_function(functions: Vec<FunctionInfo>) -> Vec<FunctionInfo> {
    let name = |function: &FunctionInfo| function.spec.as_ref().map(|spec| spec.name.clone()).unwrap_or_default();
    let (mut chosen, second_hand): (Vec<FunctionInfo>, Vec<FunctionInfo>) = functions
        .into_iter()
        .partition(|function| !function.forwarded && function.state != FunctionState::Moved as i32);
    for function in second_hand {
        if !chosen.iter().any(|kept| name(kept) == name(&function)) {
            chosen.push(function);
        }
    }
    chosen.sort_by_key(|function| (name(function), function.hub_name.clone()));
    chosen
}

/// `message` as a request forwarded once more than one that came `hops` times.
fn onward<T>(message: T, hops: u32, hub_name: &str) -> Result<Request<T>, HubError> {
    if hops >= MAX_HOPS {
        return Err(HubError::ForwardLoop {
            hops,
            hub: hub_name.to_owned(),
        });
    }
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(HOPS_HEADER, MetadataValue::from(hops + 1));
    Ok(request)
}

/// The error to pass on for a status from the hub a request was forwarded
/// to: its own, unless that hub could not be reached, which is said, or
/// the connection broke while the request was under way, in which case the
/// request may have been carried out there (an invocation handled, a
/// checkpoint taken) and the caller must not assume either.
fn unreachable(hub_name: &str, address: &str, status: &Status) -> HubError {
    if !matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Unknown) {
        return HubError::from_status(status.clone());
    }
    let message = match transport_failure(status) {
        TransportFailure::None | TransportFailure::NotConnected => format!(
            "the function runs on hub {hub_name} ({address}), which cannot be reached: {}",
            status.message()
        ),
        TransportFailure::BrokeDuringRequest => format!(
            "the connection to hub {hub_name} ({address}), where the function runs, broke during the request: \
             it may or may not have been carried out there ({})",
            status.message()
        ),
    };
    HubError::Remote {
        code: ErrorCode::Unavailable,
        message,
    }
}

/// An item of a stream from the hub `peer` (logs, move progress) that is
/// an error: when the connection under the stream failed, it says so, with
/// the hub named, as unavailable.
pub(super) fn stream_error(peer: &PeerAt, status: Status) -> HubError {
    if transport_failure(&status) == TransportFailure::None {
        return HubError::from_status(status);
    }
    HubError::Remote {
        code: ErrorCode::Unavailable,
        message: format!(
            "the stream from hub {} ({}), where the function runs, broke: {}",
            peer.name,
            peer.address,
            status.message()
        ),
    }
}

/// What a status says of the connection it came over.
#[derive(Debug, PartialEq, Eq)]
enum TransportFailure {
    /// An answer of the other hub: no transport error under it.
    None,
    /// No connection was made, so the request was never sent.
    NotConnected,
    /// The connection failed after the request may have left.
    BrokeDuringRequest,
}

fn transport_failure(status: &Status) -> TransportFailure {
    let Some(mut cause) = std::error::Error::source(status) else {
        return TransportFailure::None;
    };
    loop {
        if cause.downcast_ref::<tonic::ConnectError>().is_some() {
            return TransportFailure::NotConnected;
        }
        match cause.source() {
            Some(deeper) => cause = deeper,
            None => return TransportFailure::BrokeDuringRequest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::ServiceError;

    fn listed(name: &str, hub: &str, state: FunctionState, forwarded: bool) -> FunctionInfo {
        FunctionInfo {
            spec: Some(ferry_proto::v1::FunctionSpec {
                name: name.to_owned(),
                ..Default::default()
            }),
            state: state as i32,
            hub_name: hub.to_owned(),
            forwarded,
            ..Default::default()
        }
    }

    #[test]
    fn the_cluster_list_shows_each_function_once_from_the_hub_running_it_and_namesakes_on_other_hubs_too() {
        let functions = one_per_function(vec![
            listed("b", "hub-0", FunctionState::Moved, false),
            listed("a", "hub-1", FunctionState::Running, true),
            listed("a", "hub-1", FunctionState::Running, false),
            listed("b", "hub-2", FunctionState::Running, false),
            listed("c", "hub-0", FunctionState::Moved, false),
            listed("c", "hub-1", FunctionState::Moved, false),
            listed("d", "hub-1", FunctionState::Running, false),
            listed("d", "hub-0", FunctionState::Stopped, false),
        ]);
        let shown: Vec<(String, String, bool)> = functions
            .iter()
            .map(|function| {
                (
                    function.spec.as_ref().unwrap().name.clone(),
                    function.hub_name.clone(),
                    function.forwarded,
                )
            })
            .collect();
        assert_eq!(
            shown,
            vec![
                ("a".to_owned(), "hub-1".to_owned(), false),
                ("b".to_owned(), "hub-2".to_owned(), false),
                // Only pointers answered for it: shown once, as the first.
                ("c".to_owned(), "hub-0".to_owned(), false),
                // Two functions of one name on two hubs: both.
                ("d".to_owned(), "hub-0".to_owned(), false),
                ("d".to_owned(), "hub-1".to_owned(), false),
            ]
        );
    }

    #[test]
    fn a_request_forwarded_too_often_is_refused_as_a_loop() {
        let request = onward((), MAX_HOPS - 1, "hub-b").unwrap();
        let hops: u32 = request
            .metadata()
            .get(HOPS_HEADER)
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(hops, MAX_HOPS);
        let error = onward((), MAX_HOPS, "hub-b").unwrap_err();
        assert_eq!(error.error_code(), ErrorCode::FailedPrecondition);
        assert!(error.to_string().contains("form a loop"), "{error}");
    }

    #[test]
    fn a_peer_that_cannot_be_reached_is_named_and_other_errors_pass_through() {
        let error = unreachable("hub-b", "10.0.0.2:7070", &Status::unavailable("connection refused"));
        assert_eq!(error.error_code(), ErrorCode::Unavailable);
        assert!(error.to_string().contains("hub hub-b (10.0.0.2:7070)"), "{error}");

        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let not_connected = Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        assert_eq!(transport_failure(&not_connected), TransportFailure::NotConnected);
        let error = unreachable("hub-b", "10.0.0.2:7070", &not_connected);
        assert!(error.to_string().contains("which cannot be reached"), "{error}");

        let error = unreachable("hub-b", "10.0.0.2:7070", &Status::not_found("function \"x\" not found"));
        assert_eq!(error.error_code(), ErrorCode::NotFound);
        assert_eq!(error.to_string(), "function \"x\" not found");
    }

    #[test]
    fn a_connection_that_broke_under_a_request_says_it_may_have_been_carried_out() {
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
        let broke = Status::from_error(Box::new(reset));
        assert_eq!(transport_failure(&broke), TransportFailure::BrokeDuringRequest);
        let error = unreachable("hub-b", "10.0.0.2:7070", &broke);
        assert_eq!(error.error_code(), ErrorCode::Unavailable);
        let text = error.to_string();
        assert!(text.contains("hub hub-b (10.0.0.2:7070)"), "{text}");
        assert!(text.contains("may or may not have been carried out"), "{text}");
        // A deadline the caller set passing is that, not a broken link.
        let error = unreachable("hub-b", "10.0.0.2:7070", &Status::cancelled("timeout expired"));
        assert_eq!(error.error_code(), ErrorCode::DeadlineExceeded);
    }
}
