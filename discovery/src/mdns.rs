//! The only module that talks to mdns-sd: advertises our [`HubAdvert`],
//! browses for peers, and turns mdns-sd events into table inputs.
//!
//! Names: the instance name and the host name are derived from the hub id,
//! which is unique in a cluster, so the service is registered without the
//! RFC 6762 probing step (it would delay the first announcement by about
//! 750 ms). The human-readable hub name travels in the TXT record.

use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use mdns_sd::{DaemonEvent, IfKind, Receiver, ResolvedService, ScopedIp, ServiceDaemon, ServiceEvent, ServiceInfo};
use tracing::{debug, info, trace, warn};

use crate::txt::{HubAdvert, SERVICE_TYPE, TxtError};

/// Longest DNS label (RFC 1035 §2.3.4).
const LABEL_MAX_LEN: usize = 63;

/// Prefix of our mDNS host names.
const HOST_PREFIX: &str = "ferry-";

/// How long shutdown waits for mdns-sd to confirm each step.
const SHUTDOWN_STEP_TIMEOUT: Duration = Duration::from_secs(1);

/// What browsing found, ready for the peer table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MdnsEvent {
    /// A valid advert was resolved (or refreshed).
    Advert {
        /// mDNS instance full name, e.g. `hub-b._ferry._tcp.local.`.
        instance: String,
        /// The parsed TXT record.
        advert: HubAdvert,
        /// The advertised addresses, with the TXT gRPC port.
        addrs: Vec<SocketAddr>,
    },
    /// An instance said goodbye, or its records expired.
    Removed {
        /// mDNS instance full name.
        instance: String,
    },
}

/// The mDNS instance name of a hub: its id, cut to one DNS label.
pub(crate) fn instance_name(hub_id: &str) -> &str {
    // Hub ids are ASCII, so any byte index is a character boundary.
    &hub_id[..hub_id.len().min(LABEL_MAX_LEN)]
}

/// The mDNS host name of a hub: `ferry-<id>.local.`, cut to one DNS label.
pub(crate) fn host_name(hub_id: &str) -> String {
    let id_len = hub_id.len().min(LABEL_MAX_LEN - HOST_PREFIX.len());
    format!("{HOST_PREFIX}{}.local.", &hub_id[..id_len])
}

/// The service registration for `advert`, no name probing. Its address is
/// `address` when the hub listens on one address only; otherwise addresses
/// follow the enabled interfaces (`addr_auto`).
pub(crate) fn service_info(advert: &HubAdvert, address: Option<IpAddr>) -> Result<ServiceInfo, mdns_sd::Error> {
    let properties = advert.to_properties();
    let mut info = match address {
        Some(address) => ServiceInfo::new(
            SERVICE_TYPE,
            instance_name(&advert.id),
            &host_name(&advert.id),
            address,
            advert.port,
            &properties[..],
        )?,
        None => ServiceInfo::new(
            SERVICE_TYPE,
            instance_name(&advert.id),
            &host_name(&advert.id),
            (),
            advert.port,
            &properties[..],
        )?
        .enable_addr_auto(),
    };
    info.set_requires_probe(false);
    Ok(info)
}

/// A resolved address as a socket address; link-local IPv6 keeps the
/// interface it was found on as scope id.
pub(crate) fn socket_addr(ip: &ScopedIp, port: u16) -> SocketAddr {
    match ip {
        ScopedIp::V6(v6) if v6.addr().is_unicast_link_local() => {
            SocketAddr::V6(SocketAddrV6::new(*v6.addr(), port, 0, v6.scope_id().index))
        }
        other => SocketAddr::new(other.to_ip_addr(), port),
    }
}

/// Parses the TXT record of a resolved service; addresses get the TXT port.
pub(crate) fn resolved_advert(resolved: &ResolvedService) -> Result<(HubAdvert, Vec<SocketAddr>), TxtError> {
    let advert = HubAdvert::parse(
        resolved
            .get_properties()
            .iter()
            .map(|property| (property.key(), property.val())),
    )?;
    let mut addrs: Vec<SocketAddr> = resolved
        .get_addresses()
        .iter()
        .map(|ip| socket_addr(ip, advert.port))
        .collect();
    addrs.sort();
    Ok((advert, addrs))
}

/// Turns an mdns-sd browse event into a table input; invalid adverts are
/// logged at debug level and dropped.
pub(crate) fn interpret(event: ServiceEvent) -> Option<MdnsEvent> {
    match event {
        ServiceEvent::ServiceResolved(resolved) => match resolved_advert(&resolved) {
            Ok((advert, addrs)) => Some(MdnsEvent::Advert {
                instance: resolved.get_fullname().to_owned(),
                advert,
                addrs,
            }),
            Err(error) => {
                debug!(instance = resolved.get_fullname(), %error, "ignoring invalid mdns advert");
                None
            }
        },
        ServiceEvent::ServiceRemoved(_, instance) => Some(MdnsEvent::Removed { instance }),
        ServiceEvent::SearchStarted(detail) => {
            trace!(%detail, "mdns search sent");
            None
        }
        other => {
            trace!(event = ?other, "mdns event");
            None
        }
    }
}

/// A running mdns-sd daemon that advertises us and browses for peers.
pub(crate) struct Mdns {
    daemon: ServiceDaemon,
    /// Full name of our registered instance.
    fullname: String,
    events: Receiver<ServiceEvent>,
    monitor: Receiver<DaemonEvent>,
    monitor_open: bool,
    browsing: bool,
    /// Whether mdns-sd has told which interfaces it browses on.
    interfaces_reported: bool,
    /// Whether `shutdown` ran; otherwise dropping stops the daemon.
    stopped: bool,
    /// The one address advertised, if the hub listens on one only.
    address: Option<IpAddr>,
}

impl Mdns {
    /// Starts the daemon on `interfaces` (every interface that is up when
    /// empty), browses, then advertises `advert`.
    ///
    /// Browsing starts before the advert goes out so that our browser is
    /// ready for the answers that the announcement triggers.
    pub(crate) fn start(
        advert: &HubAdvert,
        interfaces: &[String],
        address: Option<IpAddr>,
    ) -> Result<Self, mdns_sd::Error> {
        let info = service_info(advert, address)?;
        let daemon = ServiceDaemon::new()?;
        let fullname = info.get_fullname().to_owned();
        let (monitor, events) = match Self::configure(&daemon, info, interfaces) {
            Ok(channels) => channels,
            Err(error) => {
                // The daemon thread only ends when told to.
                let _ = daemon.shutdown();
                return Err(error);
            }
        };
        info!(
            instance = %fullname,
            interfaces = ?interfaces,
            "mdns advertising and browsing"
        );
        Ok(Self {
            daemon,
            address,
            fullname,
            events,
            monitor,
            monitor_open: true,
            browsing: true,
            interfaces_reported: false,
            stopped: false,
        })
    }

    /// Restricts the interfaces, then browses, then registers.
    fn configure(
        daemon: &ServiceDaemon,
        info: ServiceInfo,
        interfaces: &[String],
    ) -> Result<(Receiver<DaemonEvent>, Receiver<ServiceEvent>), mdns_sd::Error> {
        if !interfaces.is_empty() {
            // mdns-sd applies selections in order and the last match wins.
            daemon.disable_interface(IfKind::All)?;
            let names: Vec<IfKind> = interfaces.iter().map(|name| IfKind::Name(name.clone())).collect();
            daemon.enable_interface(names)?;
        }
        let monitor = daemon.monitor()?;
        let events = daemon.browse(SERVICE_TYPE)?;
        daemon.register(info)?;
        Ok((monitor, events))
    }

    /// Re-announces `advert` (a new load figure) without probing the name again.
    pub(crate) fn republish(&self, advert: &HubAdvert) -> Result<(), mdns_sd::Error> {
        self.daemon.register(service_info(advert, self.address)?)
    }

    /// The next event for the table. Pending forever once the daemon is gone.
    pub(crate) async fn next_event(&mut self) -> MdnsEvent {
        loop {
            tokio::select! {
                received = self.events.recv_async(), if self.browsing => match received {
                    Ok(ServiceEvent::SearchStarted(detail)) if !self.interfaces_reported => {
                        // mdns-sd says here which interfaces it really uses
                        // ("... on 1 interfaces [lo (1)]"): a misspelt
                        // --mdns-interface shows up as 0 interfaces.
                        info!(%detail, "mdns browsing started");
                        self.interfaces_reported = true;
                    }
                    Ok(event) => {
                        if let Some(event) = interpret(event) {
                            return event;
                        }
                    }
                    Err(_) => self.browse_again(),
                },
                received = self.monitor.recv_async(), if self.monitor_open => match received {
                    Ok(event) => log_daemon_event(event),
                    Err(_) => self.monitor_open = false,
                },
                () = std::future::pending(), if !self.browsing && !self.monitor_open => {}
            }
        }
    }

    /// mdns-sd ends a browse whose receiver falls behind: start a new one.
    fn browse_again(&mut self) {
        match self.daemon.browse(SERVICE_TYPE) {
            Ok(events) => {
                warn!("mdns browse ended, browsing again");
                self.events = events;
            }
            Err(error) => {
                warn!(%error, "mdns browse ended and cannot restart");
                self.browsing = false;
            }
        }
    }

    /// Unregisters our instance (mdns-sd sends the goodbye) and shuts the daemon down.
    pub(crate) async fn shutdown(mut self) {
        self.stopped = true;
        match self.daemon.unregister(&self.fullname) {
            Ok(status) => match tokio::time::timeout(SHUTDOWN_STEP_TIMEOUT, status.recv_async()).await {
                Ok(Ok(status)) => debug!(instance = %self.fullname, ?status, "mdns unregistered"),
                Ok(Err(_)) => debug!(instance = %self.fullname, "mdns daemon gone before unregistering"),
                Err(_) => warn!(instance = %self.fullname, "mdns unregister not confirmed in time"),
            },
            Err(error) => warn!(instance = %self.fullname, %error, "mdns unregister failed"),
        }
        match self.daemon.shutdown() {
            Ok(status) => match tokio::time::timeout(SHUTDOWN_STEP_TIMEOUT, status.recv_async()).await {
                Ok(Ok(status)) => debug!(?status, "mdns daemon stopped"),
                Ok(Err(_)) => debug!("mdns daemon already gone"),
                Err(_) => warn!("mdns daemon shutdown not confirmed in time"),
            },
            Err(error) => debug!(%error, "mdns daemon shutdown failed"),
        }
    }
}

impl Drop for Mdns {
    /// Dropped without [`Mdns::shutdown`] (its task was cancelled): tell the
    /// daemon thread to stop; its own cleanup still sends the goodbye.
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.daemon.shutdown();
        }
    }
}

fn log_daemon_event(event: DaemonEvent) {
    match event {
        DaemonEvent::Error(error) => warn!(%error, "mdns daemon error"),
        DaemonEvent::NameChange(change) => warn!(
            original = %change.original,
            new_name = %change.new_name,
            "mdns renamed our record: another host uses the same hub id"
        ),
        DaemonEvent::IpAdd(ip) => debug!(%ip, "mdns interface address added"),
        DaemonEvent::IpDel(ip) => debug!(%ip, "mdns interface address removed"),
        other => trace!(event = ?other, "mdns daemon event"),
    }
}

#[cfg(test)]
mod tests;
