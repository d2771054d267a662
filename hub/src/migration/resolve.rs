//! A destination that holds a prepared function but saw neither `Commit`
//! nor `Abort` (the stream broke, or it restarted) asks the source, until it
//! gets an answer, whether the source recorded the move. It never starts the
//! function on its own: a source that is gone keeps it waiting.

use std::sync::Arc;
use std::time::Duration;

use ferry_proto::internal::v1::{HandoffOutcome, PendingHandoff, ResolveHandoffRequest};

use super::migration_client;
use crate::connector::PeerConnector;
use crate::runtime::Snapshot;
use crate::supervisor::Supervisor;
use tracing::Instrument;

const RETRY: Duration = Duration::from_millis(300);

/// Starts a resolver for every received function that waits for its source.
pub fn spawn_resolvers(supervisor: &Supervisor, connector: &PeerConnector) {
    for (name, epoch, source) in supervisor.pending_arrivals() {
        spawn_resolver(supervisor.clone(), connector.clone(), name, epoch, source, None);
    }
}

/// Asks `source` how the handoff of `name` under `epoch` ended, and starts
/// (from `snapshot` if given, else its stored checkpoint) or discards it.
pub fn spawn_resolver(
    supervisor: Supervisor,
    connector: PeerConnector,
    name: String,
    epoch: u64,
    source: PendingHandoff,
    snapshot: Option<Arc<Snapshot>>,
) {
    let task = async move {
        tracing::info!(function = %name, epoch, source = %source.source_hub_name, "asking the source how the handoff ended");
        // One lazily connected channel for all attempts: it reconnects by itself.
        let client = migration_client(&connector, &source.source_address, &source.source_hub_id)
            .map_err(|error| error.to_string());
        let mut attempts = 0u64;
        loop {
            if !supervisor
                .pending_arrivals()
                .iter()
                .any(|(pending, ..)| *pending == name)
            {
                return;
            }
            let outcome = async {
                let mut client = client.clone()?;
                let request = ResolveHandoffRequest {
                    name: name.clone(),
                    epoch,
                    destination_hub_id: supervisor.identity().id.clone(),
                };
                let response = tokio::time::timeout(Duration::from_secs(2), client.resolve_handoff(request))
                    .await
                    .map_err(|_| "no answer within 2 s".to_owned())?
                    .map_err(|status| status.message().to_owned())?;
                Ok::<_, String>(response.into_inner().outcome())
            }
            .await;
            match outcome {
                Ok(HandoffOutcome::Committed) => {
                    tracing::info!(function = %name, epoch, "the source committed the handoff; starting");
                    if let Err(error) = supervisor.commit_arrival(&name, snapshot.clone(), (None, None)).await {
                        tracing::error!(function = %name, error = %ferry_proto::error_chain(&error), "could not start a committed arrival");
                    }
                    return;
                }
                Ok(HandoffOutcome::Aborted) => {
                    tracing::info!(function = %name, epoch, "the source kept the function; discarding the copy");
                    if let Err(error) = supervisor.discard_arrival(&name, epoch.saturating_sub(1)) {
                        tracing::error!(function = %name, error = %ferry_proto::error_chain(&error), "could not discard an aborted arrival");
                    }
                    return;
                }
                Ok(HandoffOutcome::Pending | HandoffOutcome::Unspecified) => {}
                Err(reason) => {
                    if attempts.is_multiple_of(20) {
                        tracing::warn!(function = %name, source = %source.source_address, %reason, "cannot reach the source to resolve the handoff; retrying");
                    }
                }
            }
            attempts += 1;
            tokio::time::sleep(RETRY).await;
        }
    };
    // A resolver started by an arrival logs under that arrival's move id.
    tokio::spawn(task.instrument(tracing::Span::current()));
}
