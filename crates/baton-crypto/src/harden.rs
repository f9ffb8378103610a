//! Process hardening for a server that holds the root key: no core dumps, no ptrace by other
//! processes of the same user, and memory locked so that key material is never swapped out.

/// What [`harden_process`] achieved; the server logs it at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hardening {
    /// Core dumps are off (RLIMIT_CORE 0) and the process is not dumpable (no core file, no
    /// ptrace or /proc/<pid>/mem by other processes of the same user).
    pub core_dumps_off: bool,
    /// All memory, now and later, is locked in RAM (never swapped).
    pub memory_locked: bool,
    /// Why something could not be done, for the operator.
    pub warnings: Vec<String>,
}

/// Turns off core dumps and locks memory, where the system allows it.
///
/// Memory is locked with `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)` only when the
/// locked-memory limit cannot be exceeded (it is unlimited, or the process runs as root): with a
/// small limit, locking future allocations would make them fail later, which is worse than
/// swap. The warning says how to raise the limit.
pub fn harden_process() -> Hardening {
    use rustix::process::{DumpableBehavior, Resource, Rlimit};
    let mut warnings = Vec::new();
    let core = rustix::process::setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    );
    let dumpable = rustix::process::set_dumpable_behavior(DumpableBehavior::NotDumpable);
    if let Err(e) = &core {
        warnings.push(format!("could not set the core-file limit to 0: {e}"));
    }
    if let Err(e) = &dumpable {
        warnings.push(format!("could not make the process non-dumpable: {e}"));
    }
    let limit = rustix::process::getrlimit(Resource::Memlock);
    let root = rustix::process::geteuid().is_root();
    let memory_locked = if limit.current.is_none() || root {
        match rustix::mm::mlockall(
            rustix::mm::MlockAllFlags::CURRENT
                | rustix::mm::MlockAllFlags::FUTURE
                | rustix::mm::MlockAllFlags::ONFAULT,
        ) {
            Ok(()) => true,
            Err(e) => {
                warnings.push(format!(
                    "could not lock memory ({e}): key material may be swapped to disk"
                ));
                false
            }
        }
    } else {
        warnings.push(format!(
            "memory is not locked: the locked-memory limit is {} KiB; set it to unlimited \
             (systemd: LimitMEMLOCK=infinity; shell: ulimit -l unlimited) so key material is \
             never swapped to disk",
            limit.current.unwrap_or_default() / 1024
        ));
        false
    };
    Hardening {
        core_dumps_off: core.is_ok() && dumpable.is_ok(),
        memory_locked,
        warnings,
    }
}
