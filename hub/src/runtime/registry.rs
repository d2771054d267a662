//! The one table of host functions a guest may import, by import module and
//! name: WASI preview1 and the `ferry` host API. Deploy-time checks and
//! instantiation both resolve imports here and nowhere else.
//!
//! A new call is one row here and its body in `wasi::calls` or `host_api`.

use ferry_migrator::{MEMORY_GROW_IMPORT, PREEMPT_IMPORT};
use wasmer::{Function, FunctionEnv, Store};

use super::guest::GuestEnv;
use super::host_api;
use super::wasi::{self, calls};

/// One host function a guest may import.
pub struct HostFunction {
    pub module: &'static str,
    pub name: &'static str,
    make: fn(&mut Store, &FunctionEnv<GuestEnv>) -> Function,
}

impl HostFunction {
    /// The Wasmer function for one instance.
    pub fn function(&self, store: &mut Store, env: &FunctionEnv<GuestEnv>) -> Function {
        (self.make)(store, env)
    }
}

macro_rules! host {
    ($module:expr, $name:expr, $call:path) => {
        HostFunction {
            module: $module,
            name: $name,
            make: |store, env| Function::new_typed_with_env(store, env, $call),
        }
    };
}

static FUNCTIONS: &[HostFunction] = &[
    host!(wasi::MODULE, "args_get", calls::args::args_get),
    host!(wasi::MODULE, "args_sizes_get", calls::args::args_sizes_get),
    host!(wasi::MODULE, "environ_get", calls::args::environ_get),
    host!(wasi::MODULE, "environ_sizes_get", calls::args::environ_sizes_get),
    host!(wasi::MODULE, "clock_res_get", calls::clock::clock_res_get),
    host!(wasi::MODULE, "clock_time_get", calls::clock::clock_time_get),
    host!(wasi::MODULE, "fd_close", calls::fd::fd_close),
    host!(wasi::MODULE, "fd_fdstat_get", calls::fd::fd_fdstat_get),
    host!(wasi::MODULE, "fd_prestat_get", calls::fd::fd_prestat_get),
    host!(wasi::MODULE, "fd_prestat_dir_name", calls::fd::fd_prestat_dir_name),
    host!(wasi::MODULE, "fd_read", calls::fd::fd_read),
    host!(wasi::MODULE, "fd_seek", calls::fd::fd_seek),
    host!(wasi::MODULE, "fd_write", calls::fd::fd_write),
    host!(wasi::MODULE, "fd_pread", calls::file::fd_pread),
    host!(wasi::MODULE, "fd_pwrite", calls::file::fd_pwrite),
    host!(wasi::MODULE, "fd_tell", calls::file::fd_tell),
    host!(wasi::MODULE, "fd_filestat_get", calls::file::fd_filestat_get),
    host!(wasi::MODULE, "fd_filestat_set_size", calls::file::fd_filestat_set_size),
    host!(
        wasi::MODULE,
        "fd_filestat_set_times",
        calls::file::fd_filestat_set_times
    ),
    host!(wasi::MODULE, "fd_readdir", calls::file::fd_readdir),
    host!(wasi::MODULE, "fd_sync", calls::file::fd_sync),
    host!(wasi::MODULE, "fd_datasync", calls::file::fd_datasync),
    host!(wasi::MODULE, "fd_advise", calls::file::fd_advise),
    host!(wasi::MODULE, "fd_allocate", calls::file::fd_allocate),
    host!(wasi::MODULE, "fd_fdstat_set_flags", calls::file::fd_fdstat_set_flags),
    host!(wasi::MODULE, "fd_renumber", calls::file::fd_renumber),
    host!(wasi::MODULE, "path_open", calls::path::path_open),
    host!(wasi::MODULE, "path_filestat_get", calls::path::path_filestat_get),
    host!(
        wasi::MODULE,
        "path_filestat_set_times",
        calls::path::path_filestat_set_times
    ),
    host!(
        wasi::MODULE,
        "path_create_directory",
        calls::path::path_create_directory
    ),
    host!(
        wasi::MODULE,
        "path_remove_directory",
        calls::path::path_remove_directory
    ),
    host!(wasi::MODULE, "path_unlink_file", calls::path::path_unlink_file),
    host!(wasi::MODULE, "path_rename", calls::path::path_rename),
    host!(wasi::MODULE, "path_link", calls::path::path_link),
    host!(wasi::MODULE, "path_symlink", calls::path::path_symlink),
    host!(wasi::MODULE, "path_readlink", calls::path::path_readlink),
    host!(wasi::MODULE, "poll_oneoff", calls::poll::poll_oneoff),
    host!(wasi::MODULE, "proc_exit", calls::proc::proc_exit),
    host!(wasi::MODULE, "random_get", calls::random::random_get),
    host!(wasi::MODULE, "sched_yield", calls::proc::sched_yield),
    host!(host_api::MODULE, "log", host_api::log),
    host!(host_api::MODULE, "sleep_ms", host_api::sleep_ms),
    host!(host_api::MODULE, "recv", host_api::recv),
    host!(host_api::MODULE, "reply", host_api::reply),
    host!(host_api::MODULE, "send", host_api::send),
    host!(host_api::MODULE, "call", host_api::call),
    host!(host_api::MODULE, PREEMPT_IMPORT, host_api::preempt),
    host!(host_api::MODULE, MEMORY_GROW_IMPORT, host_api::memory_grow),
];

/// What the hub does with one function import.
pub enum Resolution {
    /// A host function of the table.
    Provided(&'static HostFunction),
    /// A WASI call outside the subset: a stand-in that returns `ENOSYS`
    /// (see [`wasi::unsupported`]).
    Unsupported,
    /// Nothing: a module importing it is refused at deploy.
    Refused,
}

/// How the hub satisfies the import `module.name`.
pub fn resolve(module: &str, name: &str) -> Resolution {
    match FUNCTIONS
        .iter()
        .find(|function| function.module == module && function.name == name)
    {
        Some(function) => Resolution::Provided(function),
        None if module == wasi::MODULE => Resolution::Unsupported,
        None => Resolution::Refused,
    }
}

#[cfg(test)]
mod tests {
    use wasmer::{Instance, Module, TypedFunction};

    use super::*;
    use crate::runtime::RuntimeError;
    use crate::runtime::imports::{build_imports, check_module};

    /// Every import of the table with the signature wasi-libc (and `ferry.h`
    /// and the instrumentation) declare it with, plus calls into three of
    /// them from wasm.
    const ALL_IMPORTS: &str = r#"
    (module
      (import "wasi_snapshot_preview1" "args_get" (func (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "args_sizes_get" (func (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "environ_get" (func (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "environ_sizes_get" (func (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "clock_res_get" (func (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "clock_time_get" (func (param i32 i64 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_close" (func (param i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_fdstat_get" (func (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_prestat_get" (func (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func (param i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_read" (func (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_seek" (func (param i32 i64 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "poll_oneoff" (func (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
      (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "sched_yield" (func (result i32)))
      (import "wasi_snapshot_preview1" "fd_pread" (func (param i32 i32 i32 i64 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_pwrite" (func (param i32 i32 i32 i64 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_tell" (func (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_filestat_get" (func (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_filestat_set_size" (func (param i32 i64) (result i32)))
      (import "wasi_snapshot_preview1" "fd_filestat_set_times" (func (param i32 i64 i64 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_readdir" (func (param i32 i32 i32 i64 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_sync" (func (param i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_datasync" (func (param i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_advise" (func (param i32 i64 i64 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_allocate" (func (param i32 i64 i64) (result i32)))
      (import "wasi_snapshot_preview1" "fd_fdstat_set_flags" (func (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_renumber" (func (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "path_open"
        (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "path_filestat_get" (func (param i32 i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "path_filestat_set_times"
        (func (param i32 i32 i32 i32 i64 i64 i32) (result i32)))
      (import "wasi_snapshot_preview1" "path_create_directory" (func (param i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "path_remove_directory" (func (param i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "path_unlink_file" (func (param i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "path_rename" (func (param i32 i32 i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "path_link" (func (param i32 i32 i32 i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "path_symlink" (func (param i32 i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "path_readlink" (func (param i32 i32 i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "sock_accept" (func $sock_accept (param i32 i32 i32) (result i32)))
      (import "ferry" "log" (func (param i32 i32 i32)))
      (import "ferry" "sleep_ms" (func (param i64)))
      (import "ferry" "recv" (func (param i32 i32 i64) (result i32)))
      (import "ferry" "reply" (func (param i32 i32) (result i32)))
      (import "ferry" "send" (func (param i32 i32 i32 i32) (result i32)))
      (import "ferry" "call" (func (param i32 i32 i32 i32 i32 i32 i64) (result i32)))
      (import "ferry" "__preempt" (func (result i32)))
      (import "ferry" "__memory_grow" (func (param i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_start"))
      (func (export "random") (param i32 i32) (result i32)
        (call $random_get (local.get 0) (local.get 1)))
      (func (export "write") (param i32 i32 i32 i32) (result i32)
        (call $fd_write (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
      (func (export "open") (result i32)
        (call $path_open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
          (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 0)))
      (func (export "accept") (result i32)
        (call $sock_accept (i32.const 3) (i32.const 0) (i32.const 0))))
    "#;

    fn compile(store: &Store, wat: &str) -> Module {
        Module::new(store, wat::parse_str(wat).expect("valid WAT")).expect("compiles")
    }

    #[test]
    fn each_import_has_one_row() {
        for (index, function) in FUNCTIONS.iter().enumerate() {
            let same = FUNCTIONS[index + 1..]
                .iter()
                .any(|other| other.module == function.module && other.name == function.name);
            assert!(!same, "{}.{} has two rows", function.module, function.name);
        }
    }

    #[test]
    fn every_row_has_the_signature_guests_import_it_with() {
        let store = Store::default();
        let module = compile(&store, ALL_IMPORTS);
        check_module(store.engine(), &module).unwrap();
        let provided = module
            .imports()
            .filter(|import| matches!(resolve(import.module(), import.name()), Resolution::Provided(_)))
            .count();
        assert_eq!(provided, FUNCTIONS.len(), "the module imports every row");
    }

    #[test]
    fn a_wasi_call_outside_the_subset_is_accepted_and_anything_else_unknown_is_refused() {
        assert!(matches!(resolve(wasi::MODULE, "sock_accept"), Resolution::Unsupported));
        assert!(matches!(resolve(host_api::MODULE, "path_open"), Resolution::Refused));
        assert!(matches!(resolve("env", "random_get"), Resolution::Refused));
        let store = Store::default();
        let wrong = r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32) (result i32)))
            (memory (export "memory") 1) (func (export "_start")))"#;
        let error = check_module(store.engine(), &compile(&store, wrong)).unwrap_err();
        assert!(
            matches!(&error, RuntimeError::ImportSignature { name, .. } if name == "fd_write"),
            "{error}"
        );
    }

    #[test]
    fn calls_from_wasm_reach_the_registered_bodies_and_get_errnos_for_bad_ranges() {
        let mut store = Store::default();
        let module = compile(&store, ALL_IMPORTS);
        let env = FunctionEnv::new(&mut store, GuestEnv::detached());
        let imports = build_imports(&mut store, &env, &module);
        let instance = Instance::new(&mut store, &module, &imports).unwrap();
        env.as_mut(&mut store).memory = Some(instance.exports.get_memory("memory").unwrap().clone());
        let random: TypedFunction<(i32, i32), i32> = instance.exports.get_typed_function(&store, "random").unwrap();
        let write: TypedFunction<(i32, i32, i32, i32), i32> =
            instance.exports.get_typed_function(&store, "write").unwrap();
        let open: TypedFunction<(), i32> = instance.exports.get_typed_function(&store, "open").unwrap();
        let accept: TypedFunction<(), i32> = instance.exports.get_typed_function(&store, "accept").unwrap();
        assert_eq!(random.call(&mut store, 16, 0xFFFF_FF00_u32 as i32).unwrap(), 21);
        assert_eq!(random.call(&mut store, 0, 16).unwrap(), 0);
        assert_eq!(write.call(&mut store, 1, -8, 2, 0).unwrap(), 21);
        assert_eq!(write.call(&mut store, 1, 0, 4096, 0).unwrap(), 28);
        // No preopen: fd 3 is not open.
        assert_eq!(open.call(&mut store).unwrap(), 8);
        assert_eq!(accept.call(&mut store).unwrap(), 52);
    }
}
