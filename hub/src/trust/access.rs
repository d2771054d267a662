//! Which role each call needs, and the layer that refuses a caller whose
//! certificate does not carry it. Runs before any service sees the call.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rustls::pki_types::CertificateDer;

use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower_layer::Layer;
use tower_service::Service;

use super::names::{CertifiedIdentity, Role};
use super::revocation::Revocations;

/// The calls a `viewer` may make: reads only.
const VIEWER_CALLS: &[&str] = &[
    "/ferry.v1.Hub/GetHubInfo",
    "/ferry.v1.Hub/ListFunctions",
    "/ferry.v1.Hub/GetFunction",
    "/ferry.v1.Hub/Logs",
    "/ferry.v1.Hub/ListPeers",
    "/ferry.v1.Hub/Events",
];

/// The one service a caller without a certificate may use.
const JOIN_SERVICE: &str = "ferry.internal.v1.Join";

/// The role a call at `path` (`/package.Service/Method`) needs; `None`:
/// anyone who completed the TLS handshake (joining).
pub fn required_role(path: &str) -> Option<Role> {
    let service = path.trim_start_matches('/').split('/').next().unwrap_or_default();
    Some(if service == JOIN_SERVICE {
        return None;
    } else if VIEWER_CALLS.contains(&path)
        || service == "grpc.health.v1.Health"
        || service.starts_with("grpc.reflection.")
    {
        Role::Viewer
    } else if service == "ferry.v1.Hub" {
        Role::Operator
    } else {
        // The hub-to-hub services, and anything not named above.
        Role::Hub
    })
}

/// Wraps the server's services: a call from a certificate without the
/// role it needs ends with `PermissionDenied` naming that role, one from a
/// hub removed from the cluster (over a connection made before) with
/// `Unauthenticated`. On an insecure hub (`None`) every call goes through.
#[derive(Debug, Clone, Default)]
pub struct AccessLayer {
    enforce: Option<Arc<Enforcement>>,
}

impl AccessLayer {
    /// Checks every call against the caller's role and `revocations`.
    pub fn enforcing(revocations: Arc<Revocations>) -> AccessLayer {
        AccessLayer {
            enforce: Some(Arc::new(Enforcement {
                revocations,
                identities: IdentityCache::default(),
            })),
        }
    }

    /// Lets every call through (an insecure hub).
    pub fn open() -> AccessLayer {
        AccessLayer::default()
    }

    /// Why `request` may not go on (`None`: it may, or nothing is enforced).
    pub fn refusal<B>(&self, request: &http::Request<B>) -> Option<tonic::Status> {
        refusal(request, self.enforce.as_deref()?)
    }
}

/// What the check of a call needs.
#[derive(Debug)]
struct Enforcement {
    revocations: Arc<Revocations>,
    identities: IdentityCache,
}

impl<S> Layer<S> for AccessLayer {
    type Service = Access<S>;

    fn layer(&self, inner: S) -> Access<S> {
        Access {
            inner,
            enforce: self.enforce.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Access<S> {
    inner: S,
    enforce: Option<Arc<Enforcement>>,
}

/// A connection's certificate list (the same `Arc` for every call on it).
type PeerCertificates = Arc<Vec<CertificateDer<'static>>>;

/// How many connections' identities are kept.
const CACHED_CONNECTIONS: usize = 64;

/// The identities of the last connections' certificates, so that a call
/// does not parse the certificate its connection already showed. An entry
/// holds the connection's certificate list, so the pointer it is found by
/// cannot be reused by another list while it is cached.
#[derive(Debug, Default)]
struct IdentityCache {
    entries: Mutex<Vec<(PeerCertificates, Result<CertifiedIdentity, String>)>>,
}

impl IdentityCache {
    fn identity(&self, certificates: &PeerCertificates) -> Result<CertifiedIdentity, String> {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, identity)) = entries.iter().find(|(cached, _)| Arc::ptr_eq(cached, certificates)) {
            return identity.clone();
        }
        let identity = match certificates.first() {
            Some(first) => CertifiedIdentity::from_der(first).map_err(|error| error.to_string()),
            None => Err("the caller presented no certificate".to_owned()),
        };
        if entries.len() >= CACHED_CONNECTIONS {
            drop(entries.remove(0));
        }
        entries.push((Arc::clone(certificates), identity.clone()));
        identity
    }
}

/// The caller's identity, from the certificate its TLS handshake proved.
fn caller<B>(request: &http::Request<B>, identities: &IdentityCache) -> Result<CertifiedIdentity, String> {
    let certificates = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
        .ok_or("the caller presented no certificate")?;
    identities.identity(&certificates)
}

/// Who made a gRPC call, by the certificate its TLS handshake proved
/// (`None` on an insecure hub, or for a caller without one).
pub fn caller_identity<T>(request: &tonic::Request<T>) -> Option<CertifiedIdentity> {
    let certificates = request.peer_certs()?;
    CertifiedIdentity::from_der(certificates.first()?).ok()
}

/// Whether `path` is the HTTP API's (the rest are gRPC methods).
pub fn is_http_path(path: &str) -> bool {
    path == "/" || path == "/metrics" || path.starts_with("/v1/")
}

/// The role an HTTP request needs: reading takes a viewer, anything else
/// an operator.
pub fn required_http_role(method: &http::Method) -> Role {
    if method == http::Method::GET || method == http::Method::HEAD {
        Role::Viewer
    } else {
        Role::Operator
    }
}

/// Why `request` may not go on, or `None`.
fn refusal<B>(request: &http::Request<B>, enforcement: &Enforcement) -> Option<tonic::Status> {
    let path = request.uri().path();
    let needed = if is_http_path(path) {
        required_http_role(request.method())
    } else {
        required_role(path)?
    };
    match caller(request, &enforcement.identities) {
        Ok(CertifiedIdentity {
            hub_id: Some(hub_id), ..
        }) if enforcement.revocations.is_revoked(&hub_id) => Some(tonic::Status::unauthenticated(format!(
            "the certificate of hub {hub_id}: that hub was removed from the cluster (ferry cluster rm)"
        ))),
        Ok(identity) if identity.role.allows(needed) => None,
        Ok(identity) => Some(tonic::Status::permission_denied(format!(
            "{path} needs the {needed} role; the credential of {:?} has the {} role",
            identity.name, identity.role
        ))),
        Err(reason) => Some(tonic::Status::unauthenticated(format!(
            "{reason}: a credential of this cluster is needed (ferry --credentials FILE)"
        ))),
    }
}

impl<S, B, R> Service<http::Request<B>> for Access<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = futures::future::Either<futures::future::Ready<Result<http::Response<R>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The HTTP API asks `AccessLayer::refusal` itself, to answer as HTTP does.
        let checked_here = !is_http_path(request.uri().path());
        match self
            .enforce
            .as_ref()
            .filter(|_| checked_here)
            .and_then(|revocations| refusal(&request, revocations))
        {
            Some(status) => {
                tracing::info!(path = request.uri().path(), reason = status.message(), "call refused");
                futures::future::Either::Left(futures::future::ready(Ok(status.into_http())))
            }
            None => futures::future::Either::Right(self.inner.call(request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewers_read_operators_act_hubs_move() {
        assert_eq!(required_role("/ferry.v1.Hub/ListFunctions"), Some(Role::Viewer));
        assert_eq!(required_role("/grpc.health.v1.Health/Check"), Some(Role::Viewer));
        assert_eq!(
            required_role("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Some(Role::Viewer)
        );
        assert_eq!(required_role("/ferry.v1.Hub/Deploy"), Some(Role::Operator));
        assert_eq!(required_role("/ferry.v1.Hub/Migrate"), Some(Role::Operator));
        assert_eq!(required_role("/ferry.internal.v1.Migration/Transfer"), Some(Role::Hub));
        assert_eq!(required_role("/something.Else/Call"), Some(Role::Hub));
        assert_eq!(required_role("/ferry.internal.v1.Join/JoinCluster"), None);
    }

    #[test]
    fn http_reads_need_a_viewer_and_everything_else_an_operator() {
        assert!(is_http_path("/v1/functions/echo/invoke"));
        assert!(is_http_path("/metrics"));
        assert!(!is_http_path("/ferry.v1.Hub/Invoke"));
        assert_eq!(required_http_role(&http::Method::GET), Role::Viewer);
        assert_eq!(required_http_role(&http::Method::GET), Role::Viewer);
        assert_eq!(required_http_role(&http::Method::POST), Role::Operator);
        assert_eq!(required_http_role(&http::Method::DELETE), Role::Operator);
    }

    /// What the layer checks calls against in a cluster with no hub removed.
    fn enforcement_of_a_new_cluster() -> Enforcement {
        let authority = crate::trust::ClusterAuthority::create("test").unwrap();
        Enforcement {
            revocations: Arc::new(Revocations::in_memory(&authority.certificate_der().unwrap()).unwrap()),
            identities: IdentityCache::default(),
        }
    }

    #[test]
    fn an_http_request_without_a_certificate_is_unauthenticated_with_the_reason() {
        let request = http::Request::builder().uri("/v1/functions").body(()).unwrap();
        let enforcement = enforcement_of_a_new_cluster();
        let status = refusal(&request, &enforcement).unwrap();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(status.message().contains("credential"), "{status:?}");
    }

    #[test]
    fn a_call_without_a_certificate_is_unauthenticated() {
        let request = http::Request::builder()
            .uri("/ferry.v1.Hub/ListFunctions")
            .body(())
            .unwrap();
        let enforcement = enforcement_of_a_new_cluster();
        let status = refusal(&request, &enforcement).unwrap();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn a_connection_is_identified_once_and_each_connection_by_its_own_certificate() {
        let authority = crate::trust::ClusterAuthority::create("test").unwrap();
        let certificates = |hub_id: &str| -> PeerCertificates {
            let credential = authority
                .issue(&crate::trust::authority::Subject::hub(
                    hub_id,
                    std::time::Duration::from_secs(60),
                ))
                .unwrap();
            Arc::new(vec![credential.certificate_der().unwrap()])
        };
        let cache = IdentityCache::default();
        let first = certificates("hub-0000000000000001");
        let second = certificates("hub-0000000000000002");
        for _ in 0..3 {
            assert_eq!(
                cache.identity(&first).unwrap().hub_id.as_deref(),
                Some("hub-0000000000000001")
            );
            assert_eq!(
                cache.identity(&second).unwrap().hub_id.as_deref(),
                Some("hub-0000000000000002")
            );
        }
        assert_eq!(cache.entries.lock().unwrap().len(), 2);
        for index in 0..CACHED_CONNECTIONS + 5 {
            cache.identity(&certificates(&format!("hub-{index:016x}"))).unwrap();
        }
        assert_eq!(cache.entries.lock().unwrap().len(), CACHED_CONNECTIONS);
        assert!(cache.identity(&Arc::new(Vec::new())).is_err());
    }
}
