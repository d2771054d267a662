//! The corpus of real programs (`integration-tests/corpus/`: SQLite, Lua,
//! QuickJS, zstd, zlib) and wasmtime, the reference runtime their output is
//! compared against (the PyPI package in the venv `scripts/install-deps`
//! makes).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// One corpus program and the arguments of its test runs.
#[derive(Debug, Clone, Copy)]
pub struct Program {
    pub name: &'static str,
    /// A run of a few seconds on a hub, long enough for three checkpoints.
    pub args: &'static [&'static str],
    /// A run of ten to twenty seconds on a hub, long enough for five moves
    /// (the first one compiling the module at the destination). SQLite's is
    /// longer (about 16 s on wasmtime): its module takes the longest to
    /// prepare, 17 s on a busy CI machine, and a run of 7 s once ended
    /// before the fourth move.
    pub long_args: &'static [&'static str],
    /// Prefix of the progress lines it prints (`round N ...`).
    pub progress_prefix: &'static str,
}

pub const SQLITE: Program = Program {
    name: "sqlite",
    args: &["64", "3000"],
    long_args: &["600", "3000"],
    progress_prefix: "round ",
};
pub const LUA: Program = Program {
    name: "lua",
    args: &["48", "60000"],
    long_args: &["40", "200000"],
    progress_prefix: "round ",
};
pub const QUICKJS: Program = Program {
    name: "quickjs",
    args: &["32", "20000"],
    long_args: &["48", "60000"],
    progress_prefix: "round ",
};
pub const ZSTD: Program = Program {
    name: "zstd",
    args: &["48", "2"],
    long_args: &["100", "4"],
    progress_prefix: "round ",
};
pub const ZLIB: Program = Program {
    name: "zlib",
    args: &["32", "2"],
    long_args: &["24", "4"],
    progress_prefix: "round ",
};

pub const PROGRAMS: [Program; 5] = [SQLITE, LUA, QUICKJS, ZSTD, ZLIB];

impl Program {
    /// The committed module.
    pub fn module(&self) -> PathBuf {
        crate::guest(&format!("integration-tests/corpus/{}.wasm", self.name))
    }

    /// The program's stdout on wasmtime, with `args`.
    pub fn wasmtime_stdout(&self, args: &[&str]) -> anyhow::Result<String> {
        wasmtime_stdout(&self.module(), args)
    }
}

/// The Python of the venv `scripts/install-deps` creates (`FERRY_VENV`
/// names another).
pub fn venv_python() -> Option<PathBuf> {
    let venv = std::env::var_os("FERRY_VENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/ferry-venv")))?;
    let python = venv.join("bin/python");
    python.exists().then_some(python)
}

/// `integration-tests/python/run_wasmtime.py`.
pub fn wasmtime_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/run_wasmtime.py")
}

/// Runs `module` with `args` on wasmtime and returns its stdout.
pub fn wasmtime_stdout(module: &std::path::Path, args: &[&str]) -> anyhow::Result<String> {
    let python = venv_python().context("the test venv is missing: run scripts/install-deps (or set FERRY_VENV)")?;
    let output = Command::new(python)
        .arg(wasmtime_script())
        .arg(module)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running run_wasmtime.py")?;
    if !output.status.success() {
        bail!(
            "wasmtime run of {} failed ({}): {}",
            module.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}
