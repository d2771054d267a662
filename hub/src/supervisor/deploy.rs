//! Deploying a function: checking the request, preparing the module,
//! recording and starting it.

use std::sync::Arc;

use ferry_proto::RECORD_FORMAT_VERSION;
use ferry_proto::internal::v1::FunctionRecord;
use ferry_proto::v1::{DeployRequest, FunctionInfo, FunctionSpec, Limits};

use super::{MAX_MEMORY_LIMIT, MAX_PRIORITY, MIN_MEMORY_LIMIT, MIN_PRIORITY, Phase, Slot, Supervisor, records};
use crate::error::{HubError, validate_function_name};
use crate::logs::unix_ms_now;
use crate::runtime::PreparedModule;

/// Bytes of arguments and environment a function may have (Linux gives a
/// process 2 MiB for both): they live in the function's record, in every
/// `ps` answer and in every move.
pub const MAX_ARGS_AND_ENV_BYTES: usize = 1 << 20;

impl Supervisor {
    /// Stores, prepares and starts a function. Returns it, whether the
    /// compiled artifact was cached, and the preparation time.
    pub async fn deploy(&self, request: DeployRequest) -> Result<(FunctionInfo, PreparedModule), HubError> {
        self.inner.refuse_if_shutting_down()?;
        validate_function_name(&request.name)?;
        if request.module.is_empty() {
            return Err(HubError::InvalidRequest("the module is empty".to_owned()));
        }
        let memory_limit_bytes = match request.limits.as_ref().map(|limits| limits.memory_limit_bytes) {
            None | Some(0) => self.inner.config.default_memory_limit_bytes,
            Some(bytes) if !(MIN_MEMORY_LIMIT..=MAX_MEMORY_LIMIT).contains(&bytes) => {
                let size = |bytes: u64| bytesize::ByteSize::b(bytes).display().iec().to_string();
                return Err(HubError::InvalidRequest(format!(
                    "memory limit {} is outside {}..={} (wasm32 memory is at most 4 GiB)",
                    size(bytes),
                    size(MIN_MEMORY_LIMIT),
                    size(MAX_MEMORY_LIMIT)
                )));
            }
            Some(bytes) => bytes,
        };
        let cpus = match request.limits.as_ref().map(|limits| limits.cpus) {
            None | Some(0.0) => 0.0,
            Some(cpus) => crate::runtime::cpu::check_cpus(cpus)
                .map_err(|reason| HubError::InvalidRequest(format!("cpus: {reason}")))?,
        };
        let command_line: usize = request.args.iter().map(|arg| arg.len() + 1).sum::<usize>()
            + request
                .env
                .iter()
                .map(|(key, value)| key.len() + value.len() + 2)
                .sum::<usize>();
        if command_line > MAX_ARGS_AND_ENV_BYTES {
            return Err(HubError::InvalidRequest(format!(
                "the arguments and environment take {command_line} bytes, over the {MAX_ARGS_AND_ENV_BYTES} a function may have: pass bulk data in a message or a file of its volume"
            )));
        }
        let placement = request.placement.unwrap_or_default();
        if !(MIN_PRIORITY..=MAX_PRIORITY).contains(&placement.priority) {
            return Err(HubError::InvalidRequest(format!(
                "priority {} is outside {MIN_PRIORITY}..={MAX_PRIORITY}",
                placement.priority
            )));
        }
        crate::resources::check_files(
            request.volume.as_ref(),
            &request.mounts,
            request.messaging.as_ref(),
            &self.inner.config.resources,
            &self.inner.identity.name,
        )
        .map_err(HubError::InvalidRequest)?;
        if self.draining() {
            return Err(HubError::Draining {
                hub: self.inner.identity.name.clone(),
            });
        }
        if let Some(pointer) = self.forward_pointer(&request.name) {
            return Err(HubError::MovedAway {
                name: request.name,
                hub: pointer.hub_name,
            });
        }
        if !request.replace && self.inner.lock_slots().contains_key(&request.name) {
            return Err(HubError::FunctionExists { name: request.name });
        }

        let runtime = Arc::clone(&self.inner.runtime);
        let module = request.module;
        let prepared = tokio::task::spawn_blocking(move || runtime.prepare(&module))
            .await
            .map_err(|error| HubError::Internal(format!("prepare task failed: {error}")))??;
        let needed_bytes = prepared.module.initial_memory_bytes();
        if needed_bytes > memory_limit_bytes {
            return Err(HubError::MemoryLimitBelowModule {
                name: request.name,
                needed_bytes,
                limit_bytes: memory_limit_bytes,
            });
        }
        // Only a module that can run replaces the one running: a redeploy
        // that fails above leaves the function as it was.
        if self.inner.lock_slots().contains_key(&request.name) {
            if !request.replace {
                return Err(HubError::FunctionExists { name: request.name });
            }
            self.check_kept_volume_fits(&request.name, request.volume.as_ref())
                .await?;
            // A redeploy keeps the function's files: it is an upgrade. One
            // removed meanwhile (a `rm`, a redeploy racing this one) is gone
            // all the same.
            match self.remove_keeping(&request.name, true).await {
                Ok(()) | Err(HubError::FunctionNotFound { .. }) => {}
                Err(error) => return Err(error),
            }
        }

        let mut env: Vec<_> = request.env.into_iter().collect();
        env.sort();
        let mut record = FunctionRecord {
            format_version: RECORD_FORMAT_VERSION,
            spec: Some(FunctionSpec {
                name: request.name.clone(),
                module_hash: prepared.hash.clone(),
                args: request.args,
                env: env.into_iter().collect(),
                limits: Some(Limits {
                    memory_limit_bytes,
                    cpus,
                }),
                placement: Some(placement),
                volume: request.volume,
                mounts: request.mounts,
                messaging: request.messaging,
            }),
            deployed_unix_ms: unix_ms_now(),
            ..Default::default()
        };
        records::write_phase(&mut record, Phase::Starting);
        let launch = {
            let mut slots = self.inner.lock_slots();
            if slots.contains_key(&request.name) {
                // Deployed by another request while this one replaced it.
                return Err(match request.replace {
                    true => deployed_meanwhile(request.name),
                    false => HubError::FunctionExists { name: request.name },
                });
            }
            let slot = slots
                .entry(request.name.clone())
                .or_insert(Slot::new(record, Phase::Starting));
            self.inner.prepare_launch(slot, &prepared, None, None)
        };
        self.inner
            .logs
            .event(&request.name, &format!("deployed module {}", prepared.hash));
        let launched = self.inner.launch(launch);
        // An acknowledged deploy survives a crash.
        self.inner.save_durably(&request.name)?;
        self.wait_instantiated(&request.name, launched).await;
        let info = self.get(&request.name).map_err(|error| match error {
            // Replaced at once by a redeploy racing this one.
            HubError::FunctionNotFound { name, .. } => deployed_meanwhile(name),
            error => error,
        })?;
        Ok((info, prepared))
    }
}

impl Supervisor {
    /// Refuses a redeploy whose volume quota is below what the volume it
    /// keeps already holds: every write of the upgraded function would fail
    /// with `ENOSPC`. Nothing is changed when it refuses.
    async fn check_kept_volume_fits(
        &self,
        name: &str,
        volume: Option<&ferry_proto::v1::Volume>,
    ) -> Result<(), HubError> {
        let Some(volume) = volume else { return Ok(()) };
        let quota = match volume.quota_bytes {
            0 => crate::resources::DEFAULT_VOLUME_QUOTA.as_u64(),
            bytes => bytes,
        };
        let dir = crate::resources::volume_dir(&self.inner.config.data_dir, name);
        let used = tokio::task::spawn_blocking(move || {
            let root = cap_std::fs::Dir::open_ambient_dir(&dir, cap_std::ambient_authority()).ok()?;
            crate::runtime::volume_usage(&root).ok()
        })
        .await
        .ok()
        .flatten();
        match used {
            Some(used) if used > quota => Err(HubError::InvalidRequest(format!(
                "volume.quota: the volume that {name:?} keeps across a redeploy holds {}, more than the new quota of {}: give a quota of at least that, or `ferry rm {name}` first to start with an empty volume",
                bytesize::ByteSize::b(used).display().iec(),
                bytesize::ByteSize::b(quota).display().iec()
            ))),
            _ => Ok(()),
        }
    }
}

/// A redeploy that lost a race with another deploy of the same name.
fn deployed_meanwhile(name: String) -> HubError {
    HubError::Busy {
        name,
        state: "being deployed by another request at the same time",
    }
}
