//! The write recorder: one kernel event per `write(2)`, made by a small BPF program on the raw
//! `sys_exit` tracepoint (`bpf/writes.bpf.c`, C compiled by clang in `build.rs`, loaded with aya
//! like the argument recorder) and queued in a BPF ring buffer that the trace reader drains on
//! its timer, beside the tracefs per-CPU buffers.
//!
//! Why: through tracefs a call costs two kernel events, `sys_enter_write` for the arguments and
//! `sys_exit_write` for the result, about 250 ns each here (docs/KERNEL.md); a storm of writes then
//! runs at 4-5x. At the raw `sys_exit` tracepoint the task's saved registers still hold the
//! arguments, so one event carries the call whole: fd, buffer, count and result. Writes are the
//! calls storms are made of; every other call keeps its tracefs enter/exit pair, whose enter
//! time matters (a blocked lock, a held gate). A raw `sys_exit` program runs for every syscall on
//! the machine, which is why it is opt-in.
//!
//! It selects processes in the kernel so that untraced processes pay one helper call:
//! - [`Select::Cgroup`]: tasks in one cgroup v2 (launched scope: a launched process joins the
//!   capture's cgroup before exec, and its descendants inherit it);
//! - [`Select::Netns`]: tasks in one network namespace (netns scope: a netns host), read from
//!   the task with CO-RE (`bpf/select.h`), so a busy process elsewhere on the machine fills no
//!   ring this host needs.
//!
//! Stamps come from `bpf_ktime_get_ns`, CLOCK_MONOTONIC, the clock of the tracefs instance
//! (`trace_clock mono`), so records merge with the tracefs streams by time. Records that do not
//! fit the ring are counted in the kernel and reported as lost, never dropped silently.

use std::collections::VecDeque;

use aya::maps::{Array, MapData, RingBuf};
use aya::programs::RawTracePoint;
use aya::{Ebpf, EbpfLoader};

use crate::error::AgentError;
use crate::rawtrace::{Field, Format, Pool, Record};

/// The record id the write recorder's records carry (tracefs event ids are small).
pub const WRITE_ID: u16 = 0xfff0;

/// Bytes of one record: stamp, pid_tgid, fd, buf, count, ret.
const RECORD_BYTES: usize = 48;

/// The object, 8-byte aligned: ELF headers are read in place.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/writes.bpf.o"));

/// Which tasks the BPF recorders select.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Select {
    /// Tasks in the cgroup v2 with this id (its directory's inode number).
    Cgroup(u64),
    /// Tasks in the network namespace with this inode number.
    Netns(u64),
}

impl Select {
    /// The value of the programs' `target_cgroup` global: 0 for any cgroup.
    pub fn cgroup_id(self) -> u64 {
        match self {
            Select::Cgroup(id) => id,
            Select::Netns(_) => 0,
        }
    }

    /// The value of the programs' `target_netns` global: 0 for any namespace.
    pub fn netns_inode(self) -> u64 {
        match self {
            Select::Netns(inode) => inode,
            Select::Cgroup(_) => 0,
        }
    }
}

/// Loads a BPF object built by `build.rs`, with its `target_cgroup` set for `select`.
pub fn load_object(object: &[u8], select: Select, what: &str) -> Result<Ebpf, AgentError> {
    let missing = env!("HEISEN_BPF_MISSING");
    if !missing.is_empty() || object.is_empty() {
        return Err(AgentError::Unavailable(format!("the BPF {what} was not built: {missing}")));
    }
    let (cgroup, netns) = (select.cgroup_id(), select.netns_inode());
    EbpfLoader::new()
        .set_global("target_cgroup", &cgroup, true)
        .set_global("target_netns", &netns, true)
        .load(object)
        .map_err(|e| AgentError::Unavailable(format!("the kernel refused the {what}'s object: {e}")))
}

/// Moves every record of `ring` into `out` as records with `id`, in time order.
pub fn drain_ring(ring: &mut RingBuf<MapData>, id: u16, min_bytes: usize, out: &mut VecDeque<Record>, pool: &mut Pool) {
    let before = out.len();
    while let Some(item) = ring.next() {
        let bytes: &[u8] = &item;
        if bytes.len() < min_bytes {
            continue;
        }
        let mono_ns = i64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes"));
        let pid = i32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        out.push_back(Record { mono_ns, id, pid, data: pool.take(bytes) });
    }
    // Records are in the order tasks committed them, which two CPUs (and, for the argument
    // recorder, entry stamps) can interleave against their stamps: restore time order.
    if out.len() > before {
        out.make_contiguous().sort_by_key(|r| r.mono_ns);
    }
}

/// A map of the object, by name.
pub fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map, AgentError> {
    ebpf.take_map(name).ok_or_else(|| AgentError::Unavailable(format!("the BPF object has no map {name}")))
}

/// The layout of the recorder's records, for the decoder: a `sys_write` that is enter and exit
/// at once (the arguments and the result in one record).
pub fn write_format() -> Format {
    let field = |name: &str, offset: usize| Field {
        name: name.to_string(),
        offset,
        size: 8,
        signed: name == "ret",
        data_loc: false,
        array: false,
    };
    Format {
        name: "sys_write".to_string(),
        enter: true,
        exit: true,
        fields: vec![field("fd", 16), field("buf", 24), field("count", 32), field("ret", 40)],
    }
}

/// A loaded and attached write recorder. Dropping it detaches the program and frees its maps.
pub struct WriteRecorder {
    _ebpf: Ebpf,
    ring: RingBuf<MapData>,
    lost: Array<MapData, u64>,
}

impl WriteRecorder {
    /// Loads the program for `select` and attaches it to `sys_exit`.
    pub fn start(select: Select) -> Result<WriteRecorder, AgentError> {
        if std::env::consts::ARCH != "x86_64" {
            return Err(AgentError::Unavailable(format!(
                "the write recorder reads x86_64 registers; this is {}",
                std::env::consts::ARCH
            )));
        }
        let mut ebpf = load_object(OBJECT, select, "write recorder")?;
        let refused = |e: aya::programs::ProgramError| AgentError::Unavailable(format!("write recorder: {e}"));
        let program: &mut RawTracePoint = ebpf
            .program_mut("on_sys_exit")
            .ok_or_else(|| AgentError::Unavailable("the write recorder's object has no program".into()))?
            .try_into()
            .map_err(refused)?;
        program.load().map_err(refused)?;
        program.attach("sys_exit").map_err(refused)?;
        let ring = RingBuf::try_from(take_map(&mut ebpf, "writes")?)
            .map_err(|e| AgentError::Unavailable(format!("the writes map: {e}")))?;
        let lost = Array::try_from(take_map(&mut ebpf, "lost")?)
            .map_err(|e| AgentError::Unavailable(format!("the lost map: {e}")))?;
        Ok(WriteRecorder { _ebpf: ebpf, ring, lost })
    }

    /// Writes the kernel could not queue because the ring was full.
    pub fn lost(&self) -> u64 {
        self.lost.get(&0, 0).unwrap_or(0)
    }
}

impl crate::rawtrace::SideBuffer for WriteRecorder {
    /// Moves every committed record into `out`, as records of [`write_format`], in time order.
    fn drain(&mut self, out: &mut VecDeque<Record>, pool: &mut Pool) {
        drain_ring(&mut self.ring, WRITE_ID, RECORD_BYTES, out, pool);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real kernel: a process in the capture's cgroup has every write recorded whole; the
    /// test's own writes (outside the group) are not.
    #[test]
    fn records_every_write_of_its_cgroup_and_nothing_else() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED records_every_write_of_its_cgroup_and_nothing_else: BPF and cgroups need root");
            return;
        }
        let group = crate::cgroup::Cgroup::create(&format!("heisen-bpftest-{}", std::process::id())).unwrap();
        let mut recorder = WriteRecorder::start(Select::Cgroup(group.id())).unwrap();
        let mut cmd = std::process::Command::new("dd");
        cmd.args(["if=/dev/zero", "of=/dev/null", "bs=7", "count=300", "status=none"]);
        group.join_before_exec(&mut cmd);
        let child = cmd.spawn().unwrap();
        let pid = child.id() as i32;
        let mut own = std::fs::OpenOptions::new().write(true).open("/dev/null").unwrap();
        for _ in 0..200 {
            std::io::Write::write_all(&mut own, b"12345").unwrap();
        }
        assert!(child.wait_with_output().unwrap().status.success());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (mut out, mut pool) = (VecDeque::new(), Pool::default());
        crate::rawtrace::SideBuffer::drain(&mut recorder, &mut out, &mut pool);
        let f = write_format();
        let get = |r: &Record, k: &str| crate::rawtrace::int(&r.data, f.field(k).unwrap()).unwrap();
        let dd: Vec<&Record> = out.iter().filter(|r| get(r, "count") == 7).collect();
        assert_eq!(dd.len(), 300, "one record per write of dd");
        assert!(dd.iter().all(|r| r.pid == pid && get(r, "ret") == 7 && get(r, "fd") == 1));
        assert!(out.iter().all(|r| r.pid == pid), "only the group's writes");
        assert!(out.iter().zip(out.iter().skip(1)).all(|(a, b)| a.mono_ns <= b.mono_ns));
        assert_eq!(recorder.lost(), 0);
    }

    #[test]
    fn the_format_reads_a_record() {
        let f = write_format();
        let mut r = vec![0u8; RECORD_BYTES];
        r[16..24].copy_from_slice(&3u64.to_le_bytes());
        r[40..48].copy_from_slice(&(-9i64).to_le_bytes());
        assert_eq!(crate::rawtrace::int(&r, f.field("fd").unwrap()), Some(3));
        assert_eq!(crate::rawtrace::int(&r, f.field("ret").unwrap()), Some(-9));
    }
}
