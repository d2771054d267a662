//! Which role each call needs, and the layer that refuses a caller whose
//! certificate does not carry it. Runs before any service sees the call.

use std::sync::Arc;
use std::task::{Context, Poll};

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
    pub enforce: Option<Arc<Revocations>>,
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
    enforce: Option<Arc<Revocations>>,
}

/// The caller's identity, from the certificate its TLS handshake proved.
fn caller<B>(request: &http::Request<B>) -> Result<CertifiedIdentity, String> {
    let certificates = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
        .ok_or("the caller presented no certificate")?;
    let first = certificates.first().ok_or("the caller presented no certificate")?;
    CertifiedIdentity::from_der(first).map_err(|error| error.to_string())
}

/// Who made a gRPC call, by the certificate its TLS handshake proved
/// (`None` on an insecure hub, or for a caller without one).
pub fn caller_identity<T>(request: &tonic::Request<T>) -> Option<CertifiedIdentity> {
    let certificates = request.peer_certs()?;
    CertifiedIdentity::from_der(certificates.first()?).ok()
}

/// Why `request` may not go on, or `None`.
pub fn refusal<B>(request: &http::Request<B>, revocations: &Revocations) -> Option<tonic::Status> {
    let path = request.uri().path();
    let needed = required_role(path)?;
    match caller(request) {
        Ok(CertifiedIdentity {
            hub_id: Some(hub_id), ..
        }) if revocations.is_revoked(&hub_id) => Some(tonic::Status::unauthenticated(format!(
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
        match self
            .enforce
            .as_ref()
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
    fn a_call_without_a_certificate_is_unauthenticated() {
        let request = http::Request::builder()
            .uri("/ferry.v1.Hub/ListFunctions")
            .body(())
            .unwrap();
        let authority = crate::trust::ClusterAuthority::create("test").unwrap();
        let revocations = Revocations::in_memory(&authority.certificate_der().unwrap()).unwrap();
        let status = refusal(&request, &revocations).unwrap();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }
}
