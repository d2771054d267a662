//! `ferry agent`: opens the store, restores functions and serves the gRPC API
//! until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferry_migrator::transfer::RoundPolicy;
use ferry_proto::internal::v1::join_server::JoinServer;
use ferry_proto::internal::v1::membership_server::MembershipServer;
use ferry_proto::internal::v1::migration_server::MigrationServer;
use ferry_proto::v1::hub_server::HubServer;
use thiserror::Error;
use tokio::net::TcpListener;

use ferry_discovery::{Discovery, DiscoveryConfig, DiscoveryError, DiscoveryHandle, HubAdvert};

use crate::api::{ApiParts, HubApi};
use crate::config::AgentConfig;
use crate::connector::PeerConnector;
use crate::error::HubError;
use crate::events::HubEvents;
use crate::logs::LogHub;
use crate::migration::{MigrationContext, MigrationService};
use crate::peers::{HubProber, LoadGauge, PeerFigures, spawn_load_meter};
use crate::rebalance::figures::HubFigures;
use crate::rebalance::policy::Settings;
use crate::rebalance::run::Rebalancer;
use crate::runtime::Runtime;
use crate::service::HubService;
use crate::store::dir_lock::{DataDirLock, DirLockError};
use crate::store::reserve::DiskReserve;
use crate::store::{Store, StoreError};
use crate::supervisor::{HubIdentity, Supervisor, SupervisorConfig};
use crate::trust::join::{JoinError, JoinService, Signer};
use crate::trust::renewal::MembershipService;
use crate::trust::setup::JoinPlan;
use crate::trust::{AccessLayer, ClientTls, HubTrust, TrustError};

/// File in the data directory holding the address the hub listens on.
pub const ADDRESS_FILE: &str = "hub.addr";

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("cannot create data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    DataDirLock(#[from] DirLockError),
    #[error("cannot open the store in {path}")]
    Store {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("cannot listen on {address}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    AddressFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot restore functions")]
    Restore(#[source] HubError),
    #[error("gRPC server failed")]
    Serve(#[source] tonic::transport::Error),
    #[error("cannot build the reflection service")]
    Reflection(#[source] tonic_reflection::server::Error),
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    #[error("cannot start peer discovery")]
    Discovery(#[source] DiscoveryError),
    #[error("cannot set up cluster trust")]
    Trust(#[source] TrustError),
    #[error("cannot join the cluster")]
    Join(#[source] JoinError),
}

/// Loads or creates the hub's id, and settles its name.
fn identity(store: &Store, configured_name: Option<&str>) -> Result<HubIdentity, StoreError> {
    let id = match store.meta("hub_id")? {
        Some(id) => id,
        None => {
            let mut bytes = [0u8; 8];
            getrandom::fill(&mut bytes).expect("the operating system provides randomness");
            let id = format!("hub-{}", hex::encode(bytes));
            store.set_meta("hub_id", &id)?;
            id
        }
    };
    let name = match (configured_name, store.meta("hub_name")?) {
        (Some(name), _) => name.to_owned(),
        (None, Some(name)) => name,
        (None, None) => {
            let host = hostname::get()
                .ok()
                .and_then(|host| host.into_string().ok())
                .unwrap_or_else(|| "hub".to_owned());
            format!("{host}-{}", &id[4..8])
        }
    };
    store.set_meta("hub_name", &name)?;
    // The id must survive a kill -9 right after the first start.
    store.flush()?;
    Ok(HubIdentity { id, name })
}

fn write_address_file(data_dir: &Path, address: SocketAddr) -> Result<(), AgentError> {
    let path = data_dir.join(ADDRESS_FILE);
    let temporary = data_dir.join(format!("{ADDRESS_FILE}.tmp"));
    std::fs::write(&temporary, format!("{address}\n"))
        .and_then(|()| std::fs::rename(&temporary, &path))
        .map_err(|source| AgentError::AddressFile { path, source })
}

/// SIGTERM and SIGINT handlers, installed before the hub starts so that a
/// signal arriving during start-up is not lost.
struct ShutdownSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> Result<ShutdownSignals, AgentError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignals {
            terminate: signal(SignalKind::terminate()).map_err(AgentError::Signals)?,
            interrupt: signal(SignalKind::interrupt()).map_err(AgentError::Signals)?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// How long the server waits for clients to close their connections at
/// shutdown before it closes them itself.
const CONNECTION_DRAIN: Duration = Duration::from_secs(3);
/// How long the shutdown waits for the last log entries to be written.
const LOGS_CLOSE: Duration = Duration::from_secs(5);

/// A hub serving in this process.
pub struct RunningHub {
    pub address: SocketAddr,
    pub identity: HubIdentity,
    supervisor: Supervisor,
    logs: Arc<LogHub>,
    discovery: Arc<DiscoveryHandle>,
    load_meter: tokio::task::JoinHandle<()>,
    rebalancer: tokio::task::JoinHandle<()>,
    periodic_checkpoints: Option<tokio::task::JoinHandle<()>>,
    reserve_checks: tokio::task::JoinHandle<()>,
    /// Renews the hub certificate (with TLS).
    renewer: Option<tokio::task::JoinHandle<()>>,
    log_flusher: crate::logs::LogFlusher,
    health: tonic_health::server::HealthReporter,
    stop_serving: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<Result<(), AgentError>>,
    /// Held until the hub has shut down (see `store::dir_lock`).
    data_dir_lock: DataDirLock,
}

impl RunningHub {
    /// Stops every function (keeping what should run after a restart), ends
    /// log followers, and closes the server; connections that clients keep
    /// open are closed after a short drain period.
    pub async fn shutdown(self) -> Result<(), AgentError> {
        self.health.set_not_serving::<HubServer<HubService>>().await;
        self.reserve_checks.abort();
        if let Some(renewer) = &self.renewer {
            renewer.abort();
        }
        self.rebalancer.abort();
        if let Some(periodic) = self.periodic_checkpoints {
            periodic.abort();
        }
        // Say goodbye on mDNS first so peers see this hub leave at once.
        self.load_meter.abort();
        let _ = self.load_meter.await;
        match Arc::try_unwrap(self.discovery) {
            Ok(discovery) => {
                if let Err(error) = discovery.shutdown().await {
                    tracing::warn!(error = %ferry_proto::error_chain(&error), "discovery did not shut down cleanly");
                }
            }
            Err(_) => tracing::warn!("discovery is still in use at shutdown; not sending an mDNS goodbye"),
        }
        self.supervisor.shutdown().await;
        self.log_flusher.stop();
        // On a full disk the database can block forever: never wait for it
        // on the runtime's threads, nor longer than the other shutdown steps.
        let logs = Arc::clone(&self.logs);
        let closed = tokio::time::timeout(LOGS_CLOSE, tokio::task::spawn_blocking(move || logs.close_all())).await;
        if closed.is_err() {
            tracing::error!("writing the last log entries timed out at shutdown; the store does not answer");
        }
        // A server that already ended has dropped the receiver; nothing to stop then.
        let _ = self.stop_serving.send(());
        let mut served = self.served;
        let result = match tokio::time::timeout(CONNECTION_DRAIN, &mut served).await {
            Ok(Ok(result)) => result,
            Ok(Err(error)) => {
                tracing::error!(%error, "server task failed");
                Ok(())
            }
            Err(_) => {
                tracing::info!("closing connections clients left open");
                served.abort();
                Ok(())
            }
        };
        // Gone before the lock is: a hub started next in this directory
        // writes its own.
        let _ = std::fs::remove_file(self.data_dir_lock.dir().join(ADDRESS_FILE));
        result
    }
}

/// How often a degraded hub looks for room on its data disk.
const RESERVE_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Looks for room on the data disk now and then: sets the reserve aside
/// once there is room, and keeps what `ferry info` says about a degraded
/// hub current.
fn spawn_reserve_checks(reserve: Arc<DiskReserve>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RESERVE_CHECK_INTERVAL).await;
            // A statvfs and a stat, inline: a blocking-pool job every few
            // seconds would keep the pool's idle threads alive forever. (The
            // rare write of the reserve itself blocks this worker briefly.)
            reserve.recheck();
        }
    })
}

/// Opens the store, restores functions and starts serving in the background.
pub async fn start(config: AgentConfig) -> Result<RunningHub, AgentError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| AgentError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    // Before anything else in the directory: another hub may be using it.
    let data_dir_lock = DataDirLock::acquire(&config.data_dir)?;
    let store_path = config.data_dir.join("db");
    // A full disk must not keep the hub from starting: the reserve gives
    // the database room to open.
    let reserve = Arc::new(DiskReserve::new(&config.data_dir));
    reserve.make_room_to_start();
    let store = match Store::open(&store_path) {
        Ok(store) => store,
        Err(first) if reserve.release() => {
            tracing::warn!(error = %first, "cannot open the database; gave up the disk reserve to try again");
            reserve.set_degraded(Some(format!(
                "the database could not open ({first}); the hub gave up its disk reserve to start: free space on the data disk"
            )));
            Store::open(&store_path).map_err(|source| AgentError::Store {
                path: store_path.clone(),
                source,
            })?
        }
        Err(source) => {
            return Err(AgentError::Store {
                path: store_path.clone(),
                source,
            });
        }
    };
    reserve.watch_database(store.clone());
    reserve.recheck();
    let identity = identity(&store, config.name.as_deref()).map_err(|source| AgentError::Store {
        path: store_path,
        source,
    })?;
    // Cluster trust: this hub's certificate (a new cluster's CA on first
    // start) and the TLS every connection uses, unless `--insecure`.
    let trust = match config.insecure {
        true => {
            tracing::warn!(
                listen = %config.listen,
                "insecure: plaintext and no authentication; anyone who reaches this port can deploy, read and move functions"
            );
            None
        }
        false => Some(match &config.join {
            Some(token) => {
                let plan = JoinPlan {
                    token: token.clone(),
                    peer: config.peers[0].clone(),
                };
                HubTrust::join_or_load(
                    &config.data_dir,
                    &identity.id,
                    &config.cluster_id,
                    config.hub_certificate_lifetime,
                    &plan,
                )
                .await
                .map_err(AgentError::Join)?
            }
            None => HubTrust::load_or_found(
                &config.data_dir,
                &identity.id,
                &config.cluster_id,
                config.hub_certificate_lifetime,
            )
            .map_err(AgentError::Trust)?,
        }),
    };
    let runtime = Runtime::new(store.clone());
    if let Some(cpus) = config.cpus {
        runtime.governor().set_capacity(cpus);
    }
    tracing::info!(
        cpus = runtime.governor().capacity(),
        rebalance = config.rebalance.mode.as_str(),
        "cpu for functions"
    );
    let logs = Arc::new(LogHub::new(store.clone()));
    let checkpoints = crate::supervisor::open_checkpoint_store(store.db(), &config.data_dir.join("chunks"))
        .map_err(AgentError::Restore)?;
    let supervisor = Supervisor::new(
        identity.clone(),
        SupervisorConfig {
            default_memory_limit_bytes: config.default_memory_limit.as_u64(),
            default_invoke_timeout: config.invoke_timeout,
            resources: config.resources.clone(),
            data_dir: config.data_dir.clone(),
        },
        store,
        checkpoints,
        runtime,
        Arc::clone(&logs),
        Arc::clone(&reserve),
    );
    let reserve_checks = spawn_reserve_checks(reserve);
    let log_flusher = logs.spawn_flusher();
    supervisor.restore().await.map_err(AgentError::Restore)?;
    let periodic_checkpoints = (!config.checkpoint_interval.is_zero())
        .then(|| supervisor.spawn_periodic_checkpoints(config.checkpoint_interval));

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| AgentError::Bind {
            address: config.listen,
            source,
        })?;
    let address = listener.local_addr().map_err(|source| AgentError::Bind {
        address: config.listen,
        source,
    })?;

    // Every channel to another hub is built here: probes, forwarding, moves.
    let connector = match &trust {
        Some(trust) => {
            PeerConnector::with_tls(ClientTls::new(&trust.credential)).with_revocations(Arc::clone(&trust.revocations))
        }
        None => PeerConnector::new(),
    };
    let gauge = Arc::new(LoadGauge::default());
    let hub_figures = HubFigures::new(supervisor.clone(), Arc::clone(&gauge), rebalance_settings(&config));
    let migration_context = MigrationContext {
        cluster_id: config.cluster_id.clone(),
        listen_address: address,
        policy: RoundPolicy::default(),
        connector: connector.clone(),
        admission: Some(Arc::new(hub_figures.clone())),
    };
    let figures = PeerFigures::default();
    let events = Arc::new(HubEvents::default());
    let discovery =
        Arc::new(start_discovery(&config, &identity, address.port(), connector.clone(), figures.clone()).await?);
    let load_meter = spawn_load_meter(supervisor.clone(), Arc::clone(&discovery), Arc::clone(&gauge));
    let rebalancer = Rebalancer {
        mode: config.rebalance.mode,
        figures: hub_figures,
        peers: discovery.watch_peers(),
        peer_figures: figures.clone(),
        migration: migration_context.clone(),
        events: Arc::clone(&events),
    }
    .spawn();

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<HubServer<HubService>>().await;
    // `v1alpha` too: Python's grpcio-reflection, older grpcurl, Postman and
    // Evans speak only that one.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ferry_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder().build_v1().map_err(AgentError::Reflection)?;
    let reflection_v1alpha = reflection_builder().build_v1alpha().map_err(AgentError::Reflection)?;
    let api = HubApi::new(ApiParts {
        supervisor: supervisor.clone(),
        listen_address: address.to_string(),
        cluster_id: config.cluster_id.clone(),
        load: gauge,
        peers: discovery.watch_peers(),
        suggester: discovery.suggester(),
        migration: migration_context.clone(),
        figures: figures.clone(),
        rebalance: config.rebalance.mode,
        events: Arc::clone(&events),
        authority: trust.as_ref().and_then(|trust| trust.authority.clone()),
        tokens: trust.as_ref().and_then(|trust| trust.tokens.clone()),
        revocations: trust.as_ref().map(|trust| Arc::clone(&trust.revocations)),
    });
    let access = match &trust {
        Some(trust) => AccessLayer::enforcing(Arc::clone(&trust.revocations)),
        None => AccessLayer::open(),
    };
    let http_access = match (&trust, config.http_remote) {
        (Some(_), _) => crate::http::HttpAccess::ClusterCredentials(access.clone()),
        (None, false) => crate::http::HttpAccess::LoopbackOnly,
        (None, true) => crate::http::HttpAccess::Anyone,
    };
    let http_routes = crate::http::router(api.clone(), http_access);
    let hub_service = HubServer::new(HubService::new(api))
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);

    let migration_service = MigrationServer::new(MigrationService::new(supervisor.clone(), migration_context))
        .max_decoding_message_size(crate::migration::MAX_FRAME_BYTES)
        .max_encoding_message_size(crate::migration::MAX_FRAME_BYTES);

    // A hub holding the CA key signs joins and renewals.
    let signer = trust.as_ref().and_then(|trust| {
        Some(Signer {
            authority: Arc::clone(trust.authority.as_ref()?),
            tokens: Arc::clone(trust.tokens.as_ref()?),
            revocations: Arc::clone(&trust.revocations),
            members: Arc::clone(trust.members.as_ref()?),
            hub_lifetime: config.hub_certificate_lifetime,
        })
    });
    let (stop_serving, stop_serving_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        // A dropped sender means the same as a sent one.
        let _ = stop_serving_rx.await;
    };
    // Moves stream memory in 64 KiB frames: windows large enough to keep the
    // link busy, and HTTP/2 frames that fit a whole chunk.
    let server = tonic::transport::Server::builder()
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(16 << 20)
        .max_frame_size(Some(1 << 20))
        .layer(access)
        // The HTTP API shares the port: HTTP/1.1 as well as HTTP/2.
        .accept_http1(true)
        .add_routes(tonic::service::Routes::from(
            tonic::service::Routes::new(health_service)
                .add_service(reflection)
                .add_service(reflection_v1alpha)
                .add_service(hub_service)
                .add_service(migration_service)
                .add_service(JoinServer::new(JoinService::new(signer.clone())))
                .add_service(MembershipServer::new(MembershipService::new(signer)))
                .into_axum_router()
                .merge(http_routes)
                .fallback(crate::http::fallback),
        ));
    let renewer = trust.as_ref().map(|trust| {
        crate::renewer::Renewer::new(
            trust,
            &identity.id,
            config.hub_certificate_lifetime,
            connector.clone(),
            discovery.watch_peers(),
            figures.clone(),
        )
        .spawn()
    });
    let served = match &trust {
        Some(trust) => {
            let tls = crate::trust::tls::server_config(
                &trust.credential,
                Arc::clone(&trust.certificate),
                Arc::clone(&trust.revocations),
            )
            .map_err(AgentError::Trust)?;
            let serving = server.serve_with_incoming_shutdown(crate::trust::tls::incoming(listener, tls), shutdown);
            tokio::spawn(async move { serving.await.map_err(AgentError::Serve) })
        }
        None => {
            let serving = server.serve_with_incoming_shutdown(incoming(listener), shutdown);
            tokio::spawn(async move { serving.await.map_err(AgentError::Serve) })
        }
    };
    write_address_file(&config.data_dir, address)?;
    // Functions received but never committed wait for their sources' word.
    crate::migration::spawn_resolvers(&supervisor, &connector);
    tracing::info!(
        hub_id = %identity.id,
        hub_name = %identity.name,
        %address,
        data_dir = %config.data_dir.display(),
        "hub is serving"
    );
    Ok(RunningHub {
        address,
        identity,
        supervisor,
        logs,
        discovery,
        load_meter,
        rebalancer,
        periodic_checkpoints,
        reserve_checks,
        renewer,
        log_flusher,
        health: health_reporter,
        stop_serving,
        served,
        data_dir_lock,
    })
}

/// Starts mDNS advertisement/browsing (unless disabled) and probing of peers.
async fn start_discovery(
    config: &AgentConfig,
    identity: &HubIdentity,
    port: u16,
    connector: PeerConnector,
    figures: PeerFigures,
) -> Result<DiscoveryHandle, AgentError> {
    let mut discovery_config = DiscoveryConfig::new(HubAdvert {
        id: identity.id.clone(),
        name: identity.name.clone(),
        port,
        proto: ferry_proto::PROTOCOL_VERSION,
        cluster: config.cluster_id.clone(),
        load: 0,
    });
    discovery_config.mdns_enabled = config.mdns;
    discovery_config.mdns_interfaces = config.mdns_interfaces.clone();
    // A hub bound to one address is reachable there only: advertise just it.
    discovery_config.advertised_address = (!config.listen.ip().is_unspecified()).then(|| config.listen.ip());
    discovery_config.static_peers = ferry_discovery::resolve_static_peers(&config.peers)
        .await
        .map_err(AgentError::Discovery)?;
    tracing::info!(
        mdns = config.mdns,
        interfaces = ?config.mdns_interfaces,
        static_peers = ?discovery_config.static_peers,
        cluster_id = %config.cluster_id,
        "starting peer discovery"
    );
    Discovery::start(
        discovery_config,
        HubProber::new(identity.id.clone(), port, connector, figures),
    )
    .map_err(AgentError::Discovery)
}

/// Runs a hub until SIGINT or SIGTERM, then shuts it down gracefully.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    let mut signals = ShutdownSignals::install()?;
    let hub = start(config).await?;
    let signal = signals.recv().await;
    tracing::info!(%signal, "shutting down");
    hub.shutdown().await?;
    tracing::info!("hub stopped");
    Ok(())
}

/// The policy's settings: the configured watermarks, window and cooldown,
/// the rest at their defaults.
fn rebalance_settings(config: &AgentConfig) -> Settings {
    Settings {
        high_watermark: config.rebalance.high_watermark,
        low_watermark: config.rebalance.low_watermark,
        window: config.rebalance.window,
        cooldown: config.rebalance.cooldown,
        // A one-second sample and a probe before a move shows at its peer.
        settle: Duration::from_secs(3),
        ..Settings::default()
    }
}

/// The accepted connections, with Nagle's algorithm off: a move's small
/// answers (accept, need, prepared, started) must not wait for the
/// acknowledgement of the frame before them, which the peer delays by up to
/// 40 ms (measured: every accept of a move arrived 41 ms late).
fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}
