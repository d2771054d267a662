//! The WASI calls the hub implements, one module per family. Each call
//! checks every pointer and length the guest passes against its memory
//! before it reads, writes or allocates anything, and answers a bad one with
//! an errno (`EFAULT`, `EINVAL`, `EOVERFLOW`), never with a trap or a panic.

pub mod args;
pub mod clock;
pub mod fd;
pub mod file;
pub mod path;
pub mod poll;
pub mod proc;
pub mod random;

use wasmer::FunctionEnvMut;

use super::super::guest::GuestEnv;

pub type Env<'a> = FunctionEnvMut<'a, GuestEnv>;
