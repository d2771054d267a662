//! The hub's own WASI preview1 subset.
//!
//! Implemented here rather than taken from `wasmer-wasix` because every bit of
//! state a guest can observe (clocks, arguments, pending sleeps) must be
//! owned by the hub so it can be captured and moved. Calls outside the subset
//! return `ENOSYS` and are logged once per function.
//!
//! `abi` holds the numbers and layouts of the ABI, `fds` the descriptor
//! table, `files` the preopened directories and the rules of the
//! filesystem calls, `volume` the capture and restore of a function's files, `calls` the calls themselves; `runtime::registry` is where each
//! import name is bound to its call.

pub mod abi;
pub mod calls;
pub mod fds;
pub mod files;
pub mod volume;

use ferry_proto::v1::LogStream;
use wasmer::{Function, FunctionEnv, FunctionEnvMut, FunctionType, RuntimeError, Store, Type, Value};

use super::guest::GuestEnv;
use abi::Errno;

/// Import module name of WASI preview1.
pub const MODULE: &str = "wasi_snapshot_preview1";

/// A stand-in for a WASI call outside the subset: returns `ENOSYS` (or traps
/// if the signature has no errno result) and logs the first use.
pub fn unsupported(store: &mut Store, env: &FunctionEnv<GuestEnv>, name: &str, ty: FunctionType) -> Function {
    let name = name.to_owned();
    Function::new_with_env(
        store,
        env,
        ty.clone(),
        move |mut env: FunctionEnvMut<'_, GuestEnv>, _args: &[Value]| {
            let guest = env.data_mut();
            if guest.unsupported_reported.insert(name.clone()) {
                tracing::warn!(function = %guest.name, call = %name, "guest called an unsupported wasi function");
                let line = format!("unsupported WASI call {MODULE}.{name}: returning ENOSYS\n");
                guest.services.output(&guest.name, LogStream::Hub, line.as_bytes());
            }
            match ty.results() {
                [Type::I32] => Ok(vec![Value::I32(Errno::Nosys.raw())]),
                _ => Err(RuntimeError::new(format!("unsupported WASI call {MODULE}.{name}"))),
            }
        },
    )
}

#[cfg(test)]
mod tests;
