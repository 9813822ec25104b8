//! The write recorder: one kernel event per `write(2)`, made by a small BPF program on the raw
//! `sys_exit` tracepoint and queued in a BPF ring buffer that the trace reader drains on its
//! timer, beside the tracefs per-CPU buffers.
//!
//! Why: through tracefs a call costs two kernel events, `sys_enter_write` for the arguments and
//! `sys_exit_write` for the result, about 250 ns each here (docs/KERNEL.md); a storm of writes then
//! runs at 4-5x. At the raw `sys_exit` tracepoint the task's saved registers still hold the
//! arguments, so one event carries the call whole: fd, buffer, count and result. Writes are the
//! calls storms are made of; every other call keeps its tracefs enter/exit pair, whose enter
//! time matters (a blocked lock, a held gate).
//!
//! The program is written here in BPF instructions (no clang, no nightly toolchain on the
//! machines heisen targets), about forty of them, and checked by the kernel's verifier at load.
//! It selects processes in the kernel so that untraced processes pay one helper call:
//! - [`Select::Cgroup`]: tasks in one cgroup v2 (launched scope: a launched process joins the
//!   capture's cgroup before exec, and its descendants inherit it);
//! - [`Select::All`]: every task's writes (netns scope; the decoder keeps the host's own, as it
//!   does for the tracefs events).
//!
//! Stamps come from `bpf_ktime_get_ns`, CLOCK_MONOTONIC, the clock of the tracefs instance
//! (`trace_clock mono`), so records merge with the tracefs streams by time. Records that do not
//! fit the ring are counted in the kernel and reported as lost, never dropped silently.

use crate::error::AgentError;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::rawtrace::{Field, Format, Pool, Record};

/// The record id the write recorder's records carry (tracefs event ids are small).
pub const WRITE_ID: u16 = 0xfff0;

/// Bytes of one record: stamp, pid_tgid, fd, buf, count, ret.
const RECORD_BYTES: usize = 48;

/// Ring buffer size: a storm queues ~2,000 records (112 KB) per millisecond, faster than the
/// reader decodes and stores them; 32 MiB holds a backlog of 600,000 writes (the tracefs
/// buffers hold 8 MiB per CPU).
const RING_BYTES: usize = 32 << 20;

/// x86_64 syscall number of `write`.
const NR_WRITE: i32 = 1;

/// Which tasks' writes the program records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Select {
    /// Tasks in the cgroup v2 with this id (its directory's inode number).
    Cgroup(u64),
    /// Every task.
    All,
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
    _prog: OwnedFd,
    _link: OwnedFd,
    _ring_map: OwnedFd,
    lost_map: OwnedFd,
    ring: Ring,
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
        let ring_map = map_create(MAP_TYPE_RINGBUF, 0, 0, RING_BYTES as u32, "heisen_writes")?;
        let lost_map = map_create(MAP_TYPE_ARRAY, 4, 8, 1, "heisen_lost")?;
        let ring = Ring::map(ring_map.as_raw_fd(), RING_BYTES)?;
        let insns = program(select, ring_map.as_raw_fd(), lost_map.as_raw_fd());
        let prog = prog_load(&insns, "heisen_writes")?;
        let link = raw_tracepoint_open("sys_exit", prog.as_raw_fd())?;
        Ok(WriteRecorder { _prog: prog, _link: link, _ring_map: ring_map, lost_map, ring })
    }

    /// Writes the kernel could not queue because the ring was full.
    pub fn lost(&self) -> u64 {
        let key = 0u32;
        let mut value = 0u64;
        let mut attr = Attr::default();
        attr.u32(0, self.lost_map.as_raw_fd() as u32);
        attr.u64(8, &key as *const u32 as u64);
        attr.u64(16, &mut value as *mut u64 as u64);
        match sys_bpf(CMD_MAP_LOOKUP_ELEM, &mut attr) {
            Ok(_) => value,
            Err(_) => 0,
        }
    }
}

impl crate::rawtrace::SideBuffer for WriteRecorder {
    /// Moves every committed record into `out`, as records of [`write_format`], in time order.
    fn drain(&mut self, out: &mut VecDeque<Record>, pool: &mut Pool) {
        let before = out.len();
        self.ring.consume(|bytes| {
            if bytes.len() < RECORD_BYTES {
                return;
            }
            let mono_ns = i64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes"));
            let pid = i32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
            out.push_back(Record { mono_ns, id: WRITE_ID, pid, data: pool.take(bytes) });
        });
        // Records are in the order tasks reserved them, which two CPUs can interleave against
        // their stamps: restore time order (nearly sorted already, so this is cheap).
        if out.len() > before {
            out.make_contiguous().sort_by_key(|r| r.mono_ns);
        }
    }
}

// --- the program -------------------------------------------------------------------------------

/// One BPF instruction.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: dst | (src << 4), off, imm }
}

// Opcodes (include/uapi/linux/bpf.h, bpf_common.h).
const MOV64_REG: u8 = 0xbf;
const MOV64_IMM: u8 = 0xb7;
const ADD64_IMM: u8 = 0x07;
const LDX_DW: u8 = 0x79;
const STX_DW: u8 = 0x7b;
const ST_W: u8 = 0x62;
const LD_IMM64: u8 = 0x18;
const JNE_IMM: u8 = 0x55;
const JNE_REG: u8 = 0x5d;
const JEQ_IMM: u8 = 0x15;
const JA: u8 = 0x05;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const ATOMIC_DW: u8 = 0xdb;
const PSEUDO_MAP_FD: u8 = 1;

// Helpers.
const FN_MAP_LOOKUP_ELEM: i32 = 1;
const FN_KTIME_GET_NS: i32 = 5;
const FN_GET_CURRENT_PID_TGID: i32 = 14;
const FN_GET_CURRENT_CGROUP_ID: i32 = 80;
const FN_PROBE_READ_KERNEL: i32 = 113;
const FN_RINGBUF_RESERVE: i32 = 131;
const FN_RINGBUF_SUBMIT: i32 = 132;
const RB_NO_WAKEUP: i32 = 1;

/// x86_64 `struct pt_regs`: dx, si, di, orig_ax are contiguous from byte 96.
const REGS_DX: i32 = 96;

/// A tiny assembler: instructions plus forward jumps patched to named labels.
#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    jumps: Vec<(usize, &'static str)>,
    labels: Vec<(&'static str, usize)>,
}

impl Asm {
    fn op(&mut self, i: Insn) {
        self.insns.push(i);
    }

    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: &'static str) {
        self.jumps.push((self.insns.len(), to));
        self.insns.push(insn(code, dst, src, 0, imm));
    }

    fn label(&mut self, name: &'static str) {
        self.labels.push((name, self.insns.len()));
    }

    fn ld_imm64(&mut self, dst: u8, src: u8, value: u64) {
        self.op(insn(LD_IMM64, dst, src, 0, value as u32 as i32));
        self.op(insn(0, 0, 0, 0, (value >> 32) as u32 as i32));
    }

    fn finish(mut self) -> Vec<Insn> {
        for (at, to) in &self.jumps {
            let target = self.labels.iter().find(|(n, _)| n == to).map(|(_, i)| *i).expect("label defined");
            self.insns[*at].off = (target as i64 - *at as i64 - 1) as i16;
        }
        self.insns
    }
}

/// The program: on every syscall exit, if the task is selected and the call was `write`, queue
/// {stamp, pid_tgid, fd, buf, count, ret}; if the ring is full, count one lost write.
fn program(select: Select, ring: RawFd, lost: RawFd) -> Vec<Insn> {
    let mut a = Asm::default();
    a.op(insn(MOV64_REG, 6, 1, 0, 0)); // r6 = ctx (args[0] = regs, args[1] = ret)
    if let Select::Cgroup(id) = select {
        a.op(insn(CALL, 0, 0, 0, FN_GET_CURRENT_CGROUP_ID));
        a.ld_imm64(1, 0, id);
        a.jump(JNE_REG, 0, 1, 0, "out");
    }
    // Copy regs->dx, si, di, orig_ax to the stack at r10-32.
    a.op(insn(MOV64_REG, 1, 10, 0, 0));
    a.op(insn(ADD64_IMM, 1, 0, 0, -32));
    a.op(insn(MOV64_IMM, 2, 0, 0, 32));
    a.op(insn(LDX_DW, 3, 6, 0, 0));
    a.op(insn(ADD64_IMM, 3, 0, 0, REGS_DX));
    a.op(insn(CALL, 0, 0, 0, FN_PROBE_READ_KERNEL));
    a.jump(JNE_IMM, 0, 0, 0, "out");
    a.op(insn(LDX_DW, 1, 10, -8, 0)); // orig_ax: the syscall number
    a.jump(JNE_IMM, 1, 0, NR_WRITE, "out");
    a.ld_imm64(1, PSEUDO_MAP_FD, ring as u64);
    a.op(insn(MOV64_IMM, 2, 0, 0, RECORD_BYTES as i32));
    a.op(insn(MOV64_IMM, 3, 0, 0, 0));
    a.op(insn(CALL, 0, 0, 0, FN_RINGBUF_RESERVE));
    a.jump(JEQ_IMM, 0, 0, 0, "full");
    a.op(insn(MOV64_REG, 7, 0, 0, 0)); // r7 = record
    a.op(insn(CALL, 0, 0, 0, FN_KTIME_GET_NS));
    a.op(insn(STX_DW, 7, 0, 0, 0));
    a.op(insn(CALL, 0, 0, 0, FN_GET_CURRENT_PID_TGID));
    a.op(insn(STX_DW, 7, 0, 8, 0));
    for (stack, field) in [(-16, 16), (-24, 24), (-32, 32)] {
        // di (fd), si (buf), dx (count)
        a.op(insn(LDX_DW, 1, 10, stack, 0));
        a.op(insn(STX_DW, 7, 1, field, 0));
    }
    a.op(insn(LDX_DW, 1, 6, 8, 0)); // ret
    a.op(insn(STX_DW, 7, 1, 40, 0));
    a.op(insn(MOV64_REG, 1, 7, 0, 0));
    a.op(insn(MOV64_IMM, 2, 0, 0, RB_NO_WAKEUP));
    a.op(insn(CALL, 0, 0, 0, FN_RINGBUF_SUBMIT));
    a.label("out");
    a.op(insn(MOV64_IMM, 0, 0, 0, 0));
    a.op(insn(EXIT, 0, 0, 0, 0));
    a.label("full");
    a.op(insn(ST_W, 10, 0, -36, 0)); // key 0
    a.op(insn(MOV64_REG, 2, 10, 0, 0));
    a.op(insn(ADD64_IMM, 2, 0, 0, -36));
    a.ld_imm64(1, PSEUDO_MAP_FD, lost as u64);
    a.op(insn(CALL, 0, 0, 0, FN_MAP_LOOKUP_ELEM));
    a.jump(JEQ_IMM, 0, 0, 0, "out");
    a.op(insn(MOV64_IMM, 1, 0, 0, 1));
    a.op(insn(ATOMIC_DW, 0, 1, 0, 0)); // lock *(u64 *)(r0 + 0) += r1
    a.jump(JA, 0, 0, 0, "out");
    a.finish()
}

// --- the bpf(2) system call --------------------------------------------------------------------

const CMD_MAP_CREATE: i32 = 0;
const CMD_MAP_LOOKUP_ELEM: i32 = 1;
const CMD_PROG_LOAD: i32 = 5;
const CMD_RAW_TRACEPOINT_OPEN: i32 = 17;
const MAP_TYPE_ARRAY: u32 = 2;
const MAP_TYPE_RINGBUF: u32 = 27;
const PROG_TYPE_RAW_TRACEPOINT: u32 = 17;

/// `union bpf_attr`, as bytes written at the offsets of the uapi header.
#[repr(C, align(8))]
struct Attr([u8; 144]);

impl Default for Attr {
    fn default() -> Attr {
        Attr([0; 144])
    }
}

impl Attr {
    fn u32(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }

    fn u64(&mut self, at: usize, v: u64) {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    }

    fn name(&mut self, at: usize, name: &str) {
        let n = name.len().min(15);
        self.0[at..at + n].copy_from_slice(&name.as_bytes()[..n]);
    }
}

fn sys_bpf(cmd: i32, attr: &mut Attr) -> std::io::Result<i64> {
    // SAFETY: attr is a valid, fully initialised bpf_attr of the size passed; pointers inside it
    // point to live buffers of the caller.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut Attr, std::mem::size_of::<Attr>()) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn fd_result(rc: std::io::Result<i64>, what: &str) -> Result<OwnedFd, AgentError> {
    match rc {
        // SAFETY: the kernel just returned this fd to us.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
        Err(e) => {
            let hint = if e.raw_os_error() == Some(libc::EPERM) { " (BPF needs root)" } else { "" };
            Err(AgentError::Syscall { op: what.to_string(), source: e, hint: hint.into() })
        }
    }
}

fn map_create(kind: u32, key: u32, value: u32, entries: u32, name: &str) -> Result<OwnedFd, AgentError> {
    let mut attr = Attr::default();
    attr.u32(0, kind);
    attr.u32(4, key);
    attr.u32(8, value);
    attr.u32(12, entries);
    attr.name(28, name);
    fd_result(sys_bpf(CMD_MAP_CREATE, &mut attr), &format!("cannot create BPF map {name}"))
}

fn prog_load(insns: &[Insn], name: &str) -> Result<OwnedFd, AgentError> {
    let license = c"Dual MIT/GPL";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = Attr::default();
    attr.u32(0, PROG_TYPE_RAW_TRACEPOINT);
    attr.u32(4, insns.len() as u32);
    attr.u64(8, insns.as_ptr() as u64);
    attr.u64(16, license.as_ptr() as u64);
    attr.u32(24, 1); // log level: say why, if the verifier refuses
    attr.u32(28, log.len() as u32);
    attr.u64(32, log.as_mut_ptr() as u64);
    attr.name(48, name);
    fd_result(sys_bpf(CMD_PROG_LOAD, &mut attr), "the kernel refused the write recorder program").map_err(|e| {
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        let text = String::from_utf8_lossy(&log[..end]);
        let tail: Vec<&str> = text.lines().rev().take(4).collect();
        match e {
            AgentError::Syscall { op, source, mut hint } if !tail.is_empty() => {
                hint.push_str(&format!("; verifier: {}", tail.into_iter().rev().collect::<Vec<_>>().join(" / ")));
                AgentError::Syscall { op, source, hint }
            }
            e => e,
        }
    })
}

fn raw_tracepoint_open(name: &str, prog: RawFd) -> Result<OwnedFd, AgentError> {
    let name_c = std::ffi::CString::new(name)
        .map_err(|_| AgentError::BadInput(format!("raw tracepoint name {name:?} contains NUL")))?;
    let mut attr = Attr::default();
    attr.u64(0, name_c.as_ptr() as u64);
    attr.u32(8, prog as u32);
    fd_result(sys_bpf(CMD_RAW_TRACEPOINT_OPEN, &mut attr), &format!("cannot attach to raw tracepoint {name}"))
}

// --- the ring buffer's consumer side -----------------------------------------------------------

/// The user-space view of a BPF ring buffer: a writable consumer page, then the read-only
/// producer page and the data area, mapped twice in a row so a record never wraps.
struct Ring {
    consumer: *mut u8,
    producer: *mut u8,
    page: usize,
    size: usize,
}

// SAFETY: the mappings belong to this value alone; only the reader thread consumes.
unsafe impl Send for Ring {}

const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;

impl Ring {
    fn map(fd: RawFd, size: usize) -> Result<Ring, AgentError> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let prot_rw = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: mapping a ring buffer map's pages as the kernel documents them; results checked.
        let consumer = unsafe { libc::mmap(std::ptr::null_mut(), page, prot_rw, libc::MAP_SHARED, fd, 0) };
        if consumer == libc::MAP_FAILED {
            return Err(AgentError::syscall("cannot map the BPF ring buffer")(std::io::Error::last_os_error()));
        }
        // SAFETY: as above; the producer side is read-only and twice the data size long.
        let producer = unsafe {
            libc::mmap(std::ptr::null_mut(), page + 2 * size, libc::PROT_READ, libc::MAP_SHARED, fd, page as i64)
        };
        if producer == libc::MAP_FAILED {
            let err = std::io::Error::last_os_error();
            // SAFETY: unmapping what was mapped just above.
            unsafe { libc::munmap(consumer, page) };
            return Err(AgentError::syscall("cannot map the BPF ring buffer's data")(err));
        }
        Ok(Ring { consumer: consumer.cast(), producer: producer.cast(), page, size })
    }

    /// Hands every committed record's payload to `each`, then tells the kernel the space is free.
    fn consume(&mut self, mut each: impl FnMut(&[u8])) {
        // SAFETY: both positions are 8-byte aligned u64s at the start of their pages, which stay
        // mapped while self lives; the kernel updates them atomically.
        let (consumer_pos, producer_pos) =
            unsafe { (&*(self.consumer as *const AtomicU64), &*(self.producer as *const AtomicU64)) };
        let mut pos = consumer_pos.load(Ordering::Acquire);
        let end = producer_pos.load(Ordering::Acquire);
        let data = self.producer.wrapping_add(self.page);
        while pos < end {
            let at = (pos as usize) & (self.size - 1);
            // SAFETY: `at` is inside the data area; a header is an aligned u32 written atomically.
            let header = unsafe { (*(data.add(at) as *const AtomicU32)).load(Ordering::Acquire) };
            if header & BUSY != 0 {
                break; // reserved, not yet committed: later records wait behind it
            }
            let len = (header & !(BUSY | DISCARD)) as usize;
            if header & DISCARD == 0 {
                // SAFETY: the record lies in the double mapping right after its 8-byte header.
                let payload = unsafe { std::slice::from_raw_parts(data.add(at + 8), len) };
                each(payload);
            }
            pos += ((len + 8 + 7) & !7) as u64;
        }
        consumer_pos.store(pos, Ordering::Release);
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the two mappings made in `map`.
        unsafe {
            libc::munmap(self.consumer.cast(), self.page);
            libc::munmap(self.producer.cast(), self.page + 2 * self.size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_land_on_their_labels() {
        let insns = program(Select::Cgroup(7), 3, 4);
        // The cgroup check's jump goes to "out": r0 = 0 then exit.
        let exit = insns.iter().position(|i| i.code == EXIT).unwrap();
        let check = insns.iter().position(|i| i.code == JNE_REG).unwrap();
        assert_eq!(check as i64 + 1 + insns[check].off as i64, exit as i64 - 1);
        assert_eq!(insns[exit - 1].code, MOV64_IMM);
        // Without a cgroup there is no cgroup helper call.
        let all = program(Select::All, 3, 4);
        assert!(!all.iter().any(|i| i.code == CALL && i.imm == FN_GET_CURRENT_CGROUP_ID));
        assert_eq!(all.len() + 4, insns.len());
    }

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
        let procs = group.procs().as_raw_fd();
        let mut cmd = std::process::Command::new("dd");
        cmd.args(["if=/dev/zero", "of=/dev/null", "bs=7", "count=300", "status=none"]);
        // SAFETY: pre_exec makes only async-signal-safe calls (getpid, write).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                let pid = libc::getpid().to_string();
                libc::write(procs, pid.as_ptr().cast(), pid.len());
                Ok(())
            });
        }
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
