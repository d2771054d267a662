//! Conversion between a runtime [`Snapshot`] and the checkpoint format of
//! `ferry-migrator` (protobuf manifest + memory image).

use std::time::Duration;

use ferry_proto::internal::v1::{self as wire, global_value, pending_call};
use ferry_proto::v1::FunctionSpec;

use crate::runtime::{GlobalValue, HostSnapshot, PendingCall, ReplyAddress, Snapshot, SnapshotFiles, SnapshotMemory};

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn pending_to_wire(pending: PendingCall) -> wire::PendingCall {
    let call = match pending {
        PendingCall::Preempt => pending_call::Call::Preempt(pending_call::Preempt {}),
        PendingCall::Sleep { until } => pending_call::Call::Sleep(pending_call::Sleep {
            until_monotonic_ns: nanos(until),
        }),
        PendingCall::Recv { deadline } => pending_call::Call::Recv(pending_call::Recv {
            buf: 0,
            cap: 0,
            has_deadline: deadline.is_some(),
            deadline_monotonic_ns: deadline.map(nanos).unwrap_or_default(),
        }),
        PendingCall::Poll { until } => pending_call::Call::Poll(pending_call::PollOneoff {
            until_monotonic_ns: nanos(until),
            ..Default::default()
        }),
        PendingCall::SchedYield => pending_call::Call::SchedYield(pending_call::SchedYield {}),
        PendingCall::Outbound { one_way, outcome } => {
            let (outcome_hub_id, outcome_number) =
                outcome.map(|kept| (kept.hub_id, kept.invocation)).unwrap_or_default();
            pending_call::Call::Outbound(pending_call::Outbound {
                one_way,
                outcome_hub_id,
                outcome_number,
            })
        }
    };
    wire::PendingCall { call: Some(call) }
}

fn pending_from_wire(pending: Option<&wire::PendingCall>) -> Result<PendingCall, String> {
    let call = pending
        .and_then(|pending| pending.call.as_ref())
        .ok_or("the checkpoint has no pending call")?;
    Ok(match call {
        pending_call::Call::Preempt(_) => PendingCall::Preempt,
        pending_call::Call::Sleep(sleep) => PendingCall::Sleep {
            until: Duration::from_nanos(sleep.until_monotonic_ns),
        },
        pending_call::Call::Recv(recv) => PendingCall::Recv {
            deadline: recv
                .has_deadline
                .then(|| Duration::from_nanos(recv.deadline_monotonic_ns)),
        },
        pending_call::Call::Poll(poll) => PendingCall::Poll {
            until: Duration::from_nanos(poll.until_monotonic_ns),
        },
        pending_call::Call::SchedYield(_) => PendingCall::SchedYield,
        pending_call::Call::Outbound(outbound) => PendingCall::Outbound {
            one_way: outbound.one_way,
            outcome: (outbound.outcome_number != 0 && !outbound.outcome_hub_id.is_empty()).then(|| ReplyAddress {
                hub_id: outbound.outcome_hub_id.clone(),
                invocation: outbound.outcome_number,
            }),
        },
    })
}

fn global_to_wire(index: u32, value: GlobalValue) -> wire::GlobalValue {
    let value = match value {
        GlobalValue::I32(v) => global_value::Value::I32(v),
        GlobalValue::I64(v) => global_value::Value::I64(v),
        GlobalValue::F32(bits) => global_value::Value::F32Bits(bits),
        GlobalValue::F64(bits) => global_value::Value::F64Bits(bits),
        GlobalValue::V128(v) => global_value::Value::V128(v.to_le_bytes().to_vec()),
    };
    wire::GlobalValue {
        index,
        value: Some(value),
    }
}

fn global_from_wire(global: &wire::GlobalValue) -> Result<(u32, GlobalValue), String> {
    let value = match global
        .value
        .as_ref()
        .ok_or_else(|| format!("global {} has no value", global.index))?
    {
        global_value::Value::I32(v) => GlobalValue::I32(*v),
        global_value::Value::I64(v) => GlobalValue::I64(*v),
        global_value::Value::F32Bits(bits) => GlobalValue::F32(*bits),
        global_value::Value::F64Bits(bits) => GlobalValue::F64(*bits),
        global_value::Value::V128(bytes) => {
            let bytes: [u8; 16] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| format!("v128 global {} has {} bytes", global.index, bytes.len()))?;
            GlobalValue::V128(u128::from_le_bytes(bytes))
        }
    };
    Ok((global.index, value))
}

/// The manifest fields a snapshot decides (everything but the memory chunks,
/// which the checkpoint store fills in).
pub fn manifest_template(
    snapshot: &Snapshot,
    spec: FunctionSpec,
    epoch: u64,
    sequence: u64,
    created_unix_ms: u64,
) -> wire::CheckpointManifest {
    let host = &snapshot.host;
    wire::CheckpointManifest {
        module_hash: spec.module_hash.clone(),
        spec: Some(spec),
        epoch,
        sequence,
        created_unix_ms,
        globals: snapshot
            .globals
            .iter()
            .map(|(index, value)| global_to_wire(*index, *value))
            .collect(),
        host: Some(wire::HostState {
            monotonic_ns: nanos(host.monotonic),
            inbox: host
                .inbox
                .iter()
                .map(|data| wire::InboxMessage {
                    data: data.clone(),
                    invocation_id: 0,
                })
                .collect(),
            pending: Some(pending_to_wire(host.pending.clone())),
            log_seq: host.log_seq,
            cpu_micros: u64::try_from(host.cpu.as_micros()).unwrap_or(u64::MAX),
            has_caller: host.has_caller,
            caller_invocation_id: host.caller.as_ref().map_or(0, |caller| caller.invocation),
            caller_hub_id: host
                .caller
                .as_ref()
                .map(|caller| caller.hub_id.clone())
                .unwrap_or_default(),
        }),
        stack: snapshot.stack.clone(),
        volume: snapshot.files.as_ref().and_then(|files| files.volume.clone()),
        descriptors: snapshot
            .files
            .as_ref()
            .map(|files| files.descriptors.clone())
            .unwrap_or_default(),
        instrumentation_version: ferry_migrator::INSTRUMENTATION_VERSION,
        ..Default::default()
    }
}

/// A snapshot from a verified manifest and its memory.
pub fn snapshot_from_manifest(manifest: &wire::CheckpointManifest, memory: SnapshotMemory) -> Result<Snapshot, String> {
    let host = manifest.host.as_ref().ok_or("the checkpoint has no host state")?;
    Ok(Snapshot {
        memory,
        stack: manifest.stack.clone(),
        globals: manifest
            .globals
            .iter()
            .map(global_from_wire)
            .collect::<Result<_, _>>()?,
        host: HostSnapshot {
            monotonic: Duration::from_nanos(host.monotonic_ns),
            inbox: host.inbox.iter().map(|message| message.data.clone()).collect(),
            pending: pending_from_wire(host.pending.as_ref())?,
            log_seq: host.log_seq,
            cpu: Duration::from_micros(host.cpu_micros),
            has_caller: host.has_caller,
            caller: (host.has_caller && host.caller_invocation_id != 0 && !host.caller_hub_id.is_empty()).then(|| {
                ReplyAddress {
                    hub_id: host.caller_hub_id.clone(),
                    invocation: host.caller_invocation_id,
                }
            }),
        },
        files: (manifest.volume.is_some() || !manifest.descriptors.is_empty()).then(|| SnapshotFiles {
            volume: manifest.volume.clone(),
            descriptors: manifest.descriptors.clone(),
            ..SnapshotFiles::default()
        }),
        hold: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_survives_the_manifest_round_trip() {
        let snapshot = Snapshot {
            memory: SnapshotMemory::Whole(vec![1; 65_536]),
            stack: vec![8, 0, 0, 0, 0, 0, 0x80, 0, 42],
            globals: vec![
                (0, GlobalValue::I32(-5)),
                (1, GlobalValue::I64(i64::MIN)),
                (2, GlobalValue::F32(f32::NAN.to_bits() | 1)),
                (3, GlobalValue::F64((-0.0f64).to_bits())),
                (4, GlobalValue::V128(u128::MAX - 7)),
            ],
            host: HostSnapshot {
                monotonic: Duration::from_nanos(123_456_789),
                inbox: vec![b"hello".to_vec(), Vec::new()],
                pending: PendingCall::Recv {
                    deadline: Some(Duration::from_secs(9)),
                },
                log_seq: 77,
                cpu: Duration::from_micros(5_000),
                has_caller: true,
                caller: Some(ReplyAddress {
                    hub_id: "a-hub".to_owned(),
                    invocation: u64::MAX - 1,
                }),
            },
            files: None,
            hold: None,
        };
        let manifest = manifest_template(&snapshot, FunctionSpec::default(), 1, 2, 3);
        let back = snapshot_from_manifest(&manifest, snapshot.memory.clone()).unwrap();
        assert_eq!(back, snapshot);
    }

    #[test]
    fn every_pending_call_round_trips() {
        for pending in [
            PendingCall::Preempt,
            PendingCall::SchedYield,
            PendingCall::Sleep {
                until: Duration::from_millis(1500),
            },
            PendingCall::Recv { deadline: None },
            PendingCall::Poll {
                until: Duration::from_nanos(1),
            },
            PendingCall::Outbound {
                one_way: false,
                outcome: Some(ReplyAddress {
                    hub_id: "hub-a".into(),
                    invocation: u64::MAX,
                }),
            },
            PendingCall::Outbound {
                one_way: true,
                outcome: None,
            },
        ] {
            assert_eq!(
                pending_from_wire(Some(&pending_to_wire(pending.clone()))).unwrap(),
                pending
            );
        }
    }
}
