//! Resident memory of a process, from `/proc/<pid>/status` (Linux).

use anyhow::Context;

/// `VmRSS` and `VmHWM` of a process, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResidentMemory {
    /// Resident set size now.
    pub current_bytes: u64,
    /// The largest it has been since the process started, or since the
    /// last [`reset_peak`].
    pub peak_bytes: u64,
}

/// Reads the resident memory of process `pid`.
pub fn resident_memory(pid: u32) -> anyhow::Result<ResidentMemory> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_status(&status).with_context(|| format!("{path} has no VmRSS and VmHWM"))
}

/// Makes the peak (`VmHWM`) of process `pid` its current size, so a later
/// reading shows the peak of what happened in between.
pub fn reset_peak(pid: u32) -> anyhow::Result<()> {
    let path = format!("/proc/{pid}/clear_refs");
    std::fs::write(&path, "5").with_context(|| format!("writing 5 to {path} (Linux 4.0 or later)"))
}

fn parse_status(status: &str) -> Option<ResidentMemory> {
    let kib = |key: &str| -> Option<u64> {
        let line = status.lines().find(|line| line.starts_with(key))?;
        let value = line[key.len()..].trim().strip_suffix("kB")?.trim();
        value.parse::<u64>().ok().map(|kib| kib * 1024)
    };
    Some(ResidentMemory {
        current_bytes: kib("VmRSS:")?,
        peak_bytes: kib("VmHWM:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_in_kib() {
        let status = "Name:\tferry\nVmPeak:\t  900 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(
            parse_status(status),
            Some(ResidentMemory {
                current_bytes: 1 << 20,
                peak_bytes: 2 << 20
            })
        );
        assert_eq!(parse_status("VmRSS:\t1 kB\n"), None);
    }

    #[test]
    fn this_process_reports_a_peak_no_smaller_than_its_size() {
        let memory = resident_memory(std::process::id()).unwrap();
        assert!(memory.peak_bytes >= memory.current_bytes, "{memory:?}");
    }
}
