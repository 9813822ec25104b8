//! The argument recorder: the paths and socket addresses a syscall was given, read from the
//! caller's memory at the time of the call by BPF programs on that syscall's own tracepoints
//! (`bpf/args.bpf.c`, C compiled by clang against libbpf's headers in `build.rs`; loaded with
//! aya). tracefs events carry only the pointers.
//!
//! Only the programs of syscalls the capture records are loaded and attached, so a syscall heisen
//! does not record pays no BPF dispatch. Records are queued in a BPF ring buffer that the trace
//! reader drains beside the tracefs per-CPU buffers; each is stamped with its call's entry time
//! (CLOCK_MONOTONIC, the instance's clock), so it sorts before the tracefs exit of the same call,
//! where the decoder attaches its strings.
//!
//! Why aya: a maintained loader in pure Rust (ELF, BTF maps, relocations, ring buffer), so the
//! agent links no C library; libbpf-rs would link libbpf and libelf.

use std::collections::VecDeque;

use aya::maps::{Array, MapData, RingBuf};
use aya::programs::TracePoint;
use aya::Ebpf;

use crate::bpf::Select;
use crate::error::AgentError;
use crate::rawtrace::{Field, Format, Pool, Record};

/// The record id the argument recorder's records carry (tracefs ids are small; the write
/// recorder's is 0xfff0).
pub const ARGS_ID: u16 = 0xfff1;

/// The event name the decoder sees for an argument record.
pub const ARGS_EVENT: &str = "heisen_args";

/// The object, 8-byte aligned: ELF headers are read in place.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/args.bpf.o"));

/// Byte layout of a record (`struct record` in the C program).
const STR_OFFSET: usize = 40;
const RECORD_BYTES: usize = STR_OFFSET + 3 * 256 + 128;

/// The record layout for the decoder: the syscall number, three strings and an address, as
/// `__data_loc` fields like tracefs's own.
pub fn args_format() -> Format {
    let field = |name: &str, offset: usize, size: usize, data_loc: bool| Field {
        name: name.to_string(),
        offset,
        size,
        signed: false,
        data_loc,
        array: false,
    };
    Format {
        name: ARGS_EVENT.to_string(),
        enter: false,
        exit: false,
        fields: vec![
            field("nr", 16, 4, false),
            field("flags", 20, 4, false),
            field("s0", 24, 4, true),
            field("s1", 28, 4, true),
            field("s2", 32, 4, true),
            field("addr", 36, 4, true),
        ],
    }
}

/// A loaded argument recorder; dropping it detaches its programs and frees its maps.
pub struct ArgsRecorder {
    /// Owned, so they can be detached all at once (see `Drop`).
    links: Vec<aya::programs::trace_point::TracePointLink>,
    _ebpf: Ebpf,
    ring: RingBuf<MapData>,
    lost: Array<MapData, u64>,
    /// The tracepoints it is attached to.
    pub attached: Vec<String>,
}

impl ArgsRecorder {
    /// Loads the programs of those of `syscalls` (tracepoint names) it has, for `select`.
    pub fn start(select: Select, syscalls: &[&str]) -> Result<ArgsRecorder, AgentError> {
        let mut ebpf = crate::bpf::load_object(OBJECT, select, "argument recorder")?;
        let mut attached = Vec::new();
        let mut links = Vec::new();
        // Exec's path and argv always: an exec is rare, and /proc read later may show the next
        // program already (`ip netns exec` becomes `sh` within a millisecond).
        // The object's programs are named after the tracepoints (`enter_openat`, `exit_openat`):
        // a syscall it has none for is simply not read.
        for name in syscalls.iter().copied().chain(["execve", "execveat"]) {
            for (prefix, event) in [("enter_", "sys_enter_"), ("exit_", "sys_exit_")] {
                let Some(program) = ebpf.program_mut(&format!("{prefix}{name}")) else { continue };
                let program: &mut TracePoint = program
                    .try_into()
                    .map_err(|e| AgentError::Unavailable(format!("program {prefix}{name} is no tracepoint: {e}")))?;
                let refused = |e: aya::programs::ProgramError| {
                    AgentError::Unavailable(format!("argument recorder on {event}{name}: {e}"))
                };
                program.load().map_err(refused)?;
                let link = program.attach("syscalls", &format!("{event}{name}")).map_err(refused)?;
                links.push(program.take_link(link).map_err(refused)?);
                attached.push(format!("{event}{name}"));
            }
        }
        let ring = RingBuf::try_from(crate::bpf::take_map(&mut ebpf, "records")?)
            .map_err(|e| AgentError::Unavailable(format!("the records map: {e}")))?;
        let lost = Array::try_from(crate::bpf::take_map(&mut ebpf, "lost")?)
            .map_err(|e| AgentError::Unavailable(format!("the lost map: {e}")))?;
        Ok(ArgsRecorder { links, _ebpf: ebpf, ring, lost, attached })
    }

    /// Calls whose arguments were not recorded: the ring was full, or the per-thread slot
    /// between entry and exit could not be kept.
    pub fn lost(&self) -> u64 {
        (0..2).filter_map(|i| self.lost.get(&i, 0).ok()).sum()
    }
}

impl Drop for ArgsRecorder {
    /// Detaching a tracepoint program waits for an RCU grace period: one after the other, the
    /// 62 programs of a default capture took ~4.5 s here. Detached from threads of their own at
    /// once, their waits overlap.
    fn drop(&mut self) {
        let detaching: Vec<_> = self.links.drain(..).map(|link| std::thread::spawn(move || drop(link))).collect();
        for t in detaching {
            let _ = t.join();
        }
    }
}

impl crate::rawtrace::SideBuffer for ArgsRecorder {
    /// Moves every committed record into `out`, as records of [`args_format`], in time order.
    fn drain(&mut self, out: &mut VecDeque<Record>, pool: &mut Pool) {
        // Committed at the call's exit, stamped at its entry: drain_ring restores time order.
        crate::bpf::drain_ring(&mut self.ring, ARGS_ID, RECORD_BYTES, out, pool);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real kernel: a child in the capture's cgroup renames and opens files; every path comes
    /// back as the call saw it, stamped in time order; the test's own calls are not recorded.
    #[test]
    fn records_paths_of_its_cgroup_at_call_time() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED records_paths_of_its_cgroup_at_call_time: BPF and cgroups need root");
            return;
        }
        let group = crate::cgroup::Cgroup::create(&format!("heisen-argstest-{}", std::process::id())).unwrap();
        let mut recorder = ArgsRecorder::start(Select::Cgroup(group.id()), &["openat", "renameat2", "rename"]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.tmp"), dir.path().join("b"));
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c").arg(format!("echo x > {a}; mv {a} {b}", a = a.display(), b = b.display()));
        group.join_before_exec(&mut cmd);
        assert!(cmd.status().unwrap().success());
        std::fs::read_to_string(&b).unwrap(); // the test's own openat: outside the group
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (mut out, mut pool) = (VecDeque::new(), Pool::default());
        crate::rawtrace::SideBuffer::drain(&mut recorder, &mut out, &mut pool);
        let f = args_format();
        let text = |r: &Record, k: &str| crate::rawtrace::string(&r.data, f.field(k).unwrap()).unwrap_or_default();
        let seen: Vec<String> = out
            .iter()
            .filter(|r| text(r, "s0").starts_with(dir.path().to_str().unwrap()))
            .map(|r| {
                format!(
                    "{} {} {}",
                    crate::rawtrace::int(&r.data, f.field("nr").unwrap()).unwrap(),
                    text(r, "s0"),
                    text(r, "s1")
                )
            })
            .collect();
        let (a, b) = (a.display(), b.display());
        // openat(a) by the shell's redirection, then mv's rename (renameat2 on this coreutils,
        // rename on others) from a to b.
        assert_eq!(seen.first().map(String::as_str), Some(format!("257 {a} ").as_str()), "{seen:?}");
        assert!(
            seen.iter().any(|s| *s == format!("316 {a} {b}") || *s == format!("82 {a} {b}")),
            "the rename with both paths: {seen:?}"
        );
        assert!(out.iter().zip(out.iter().skip(1)).all(|(x, y)| x.mono_ns <= y.mono_ns));
        assert_eq!(recorder.lost(), 0);
    }

    /// Netns scope: the programs keep the calls of tasks in the host's network namespace and
    /// nobody else's. This process opens a file; a recorder for its own namespace sees it, one
    /// for another namespace (a fresh one, made by `unshare` for the test) does not.
    #[test]
    fn records_only_the_calls_of_its_network_namespace() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED records_only_the_calls_of_its_network_namespace: BPF needs root");
            return;
        }
        use std::os::unix::fs::MetadataExt;
        let own = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        // A network namespace nobody here is in: a sleeping child of its own.
        let mut other = std::process::Command::new("unshare").args(["--net", "sleep", "5"]).spawn().unwrap();
        let other_ns = (0..100)
            .find_map(|_| {
                std::thread::sleep(std::time::Duration::from_millis(10));
                let ino = std::fs::metadata(format!("/proc/{}/ns/net", other.id())).ok()?.ino();
                (ino != own).then_some(ino)
            })
            .expect("unshare --net made a namespace");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("netns-probe");
        let mut mine = ArgsRecorder::start(Select::Netns(own), &["openat"]).unwrap();
        let mut theirs = ArgsRecorder::start(Select::Netns(other_ns), &["openat"]).unwrap();
        std::fs::write(&file, "x").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let f = args_format();
        let probe = file.display().to_string();
        let saw = |recorder: &mut ArgsRecorder| {
            let (mut out, mut pool) = (VecDeque::new(), Pool::default());
            crate::rawtrace::SideBuffer::drain(recorder, &mut out, &mut pool);
            out.iter().any(|r| crate::rawtrace::string(&r.data, f.field("s0").unwrap()).as_deref() == Some(&probe))
        };
        assert!(saw(&mut mine), "the recorder of this namespace missed the open of {probe}");
        assert!(!saw(&mut theirs), "the recorder of another namespace recorded the open of {probe}");
        let _ = other.kill();
        let _ = other.wait();
    }
}
