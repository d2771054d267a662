//! Every WASI call of the subset on a real Wasmer memory, with the
//! arguments a guest should pass and the ones a hostile guest might:
//! huge lengths, pointers at the end of memory, ranges that wrap past 2^32,
//! iovec and subscription arrays that are themselves out of range.

mod args_clock;
mod fd;
mod files;
mod poll;
mod random;
mod volume;

use super::abi::{Errno, SUCCESS};

const EBADF: i32 = Errno::Badf as i32;
const EFAULT: i32 = Errno::Fault as i32;
const EINVAL: i32 = Errno::Inval as i32;
const ESPIPE: i32 = Errno::Spipe as i32;
const OK: i32 = SUCCESS;
