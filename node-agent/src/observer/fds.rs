//! The fd table, built from the recorded calls: what each process's fds name *at the time of
//! each call*. openat's result gets its path and flags, dup* and fcntl(F_DUPFD*) copy an entry,
//! close and close_range drop it, a forked child gets a copy of its parent's table (a thread
//! shares its process's), an exec drops the O_CLOEXEC fds; socket, connect, bind and accept
//! name sockets and their peers. A file unlinked (or replaced by a rename) while open is
//! marked `(deleted)`; one renamed keeps the name it was opened under plus the rename.
//!
//! Only an fd the table never saw opened (before the capture began, or by a call heisen does not
//! record) is asked of `/proc` as the event is decoded, and marked as such: by then it may
//! name a later file.

use fxhash::FxHashMap;
use heisen_recordings::{opens_cloexec, PathFrom};

/// One open file description as an fd names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Open {
    pub(super) name: String,
    pub(super) cloexec: bool,
    pub(super) from: PathFrom,
    deleted: bool,
    renamed_to: Option<String>,
}

impl Open {
    fn new(name: String, cloexec: bool, from: PathFrom) -> Open {
        Open { name, cloexec, from, deleted: false, renamed_to: None }
    }

    /// The name as a call on it shows it: `/a.tmp (renamed to /a)`, `/x (deleted)`.
    pub(super) fn shown(&self) -> String {
        match (&self.renamed_to, self.deleted) {
            (_, true) => format!("{} (deleted)", self.renamed_to.as_deref().unwrap_or(&self.name)),
            (Some(to), false) => format!("{} (renamed to {to})", self.name),
            (None, false) => self.name.clone(),
        }
    }

    fn current_path(&self) -> &str {
        self.renamed_to.as_deref().unwrap_or(&self.name)
    }
}

/// `AT_FDCWD` as an argument register holds it.
const AT_FDCWD: i32 = -100;

#[derive(Default)]
pub(super) struct Fds {
    /// Process (thread group leader) -> fd -> what it names.
    tables: FxHashMap<i32, FxHashMap<u64, Open>>,
    /// Thread -> its process, for threads seen forked from a process.
    owner: FxHashMap<i32, i32>,
}

impl Fds {
    /// The process (thread group) of `tid`, as far as its forks showed.
    pub(super) fn owner(&self, tid: i32) -> i32 {
        self.owner.get(&tid).copied().unwrap_or(tid)
    }

    fn table(&mut self, tid: i32) -> &mut FxHashMap<u64, Open> {
        let pid = self.owner(tid);
        self.tables.entry(pid).or_default()
    }

    /// What `fd` of `tid` names now, if the table knows.
    pub(super) fn get(&self, tid: i32, fd: u64) -> Option<&Open> {
        self.tables.get(&self.owner(tid))?.get(&fd)
    }

    /// `fd` of `tid`, asking `proc` when the table never saw it opened (the answer is kept).
    pub(super) fn name(&mut self, tid: i32, fd: u64, proc: impl FnOnce() -> Option<String>) -> Option<Open> {
        if let Some(open) = self.get(tid, fd) {
            return Some(open.clone());
        }
        let name = proc()?;
        let open = Open::new(name, false, PathFrom::Proc);
        self.table(tid).insert(fd, open.clone());
        Some(open)
    }

    /// A new thread (`thread`: it shares `parent`'s table) or process (a copy of it).
    pub(super) fn fork(&mut self, parent: i32, child: i32, thread: bool) {
        let owner = self.owner(parent);
        if thread {
            self.owner.insert(child, owner);
        } else if let Some(table) = self.tables.get(&owner).cloned() {
            self.tables.insert(child, table);
        }
    }

    /// An exec: the process keeps its fds but those opened with O_CLOEXEC.
    pub(super) fn exec(&mut self, tid: i32) {
        self.table(tid).retain(|_, open| !open.cloexec);
    }

    /// A thread or process ended: a process's table goes with it.
    pub(super) fn exit(&mut self, tid: i32, group_dead: bool) {
        if self.owner.remove(&tid).is_none() && group_dead {
            self.tables.remove(&tid);
        }
    }

    /// A path as the call named it, made absolute against its directory fd where the table
    /// knows it (or the process's working directory, asked of `cwd`).
    pub(super) fn resolve(
        &self,
        tid: i32,
        dirfd: Option<u64>,
        path: &str,
        cwd: impl FnOnce() -> Option<String>,
    ) -> String {
        if path.starts_with('/') {
            return path.to_string();
        }
        let base = match dirfd.map(|d| d as i32) {
            None | Some(AT_FDCWD) => cwd(),
            Some(fd) => self.get(tid, fd as u64).map(|o| o.current_path().to_string()),
        };
        match base {
            Some(base) => format!("{}/{}", base.trim_end_matches('/'), path.trim_start_matches("./")),
            None => path.to_string(),
        }
    }

    /// `fd` now names `name` (open, socket, accept).
    pub(super) fn open(&mut self, tid: i32, fd: u64, name: String, flags: u64) {
        self.table(tid).insert(fd, Open::new(name, opens_cloexec(flags), PathFrom::Trace));
    }

    /// `new` is a copy of `old` (dup*, F_DUPFD*); the copy's close-on-exec is its own.
    pub(super) fn dup(&mut self, tid: i32, old: u64, new: u64, cloexec: bool) {
        let table = self.table(tid);
        match table.get(&old).cloned() {
            Some(open) => {
                table.insert(new, Open { cloexec, ..open });
            }
            None => {
                table.remove(&new);
            }
        }
    }

    pub(super) fn close(&mut self, tid: i32, fd: u64) {
        self.table(tid).remove(&fd);
    }

    /// close_range(first, last, flags): closes them, or with CLOSE_RANGE_CLOEXEC marks them.
    pub(super) fn close_range(&mut self, tid: i32, first: u64, last: u64, flags: u64) {
        const CLOSE_RANGE_CLOEXEC: u64 = 1 << 2;
        let table = self.table(tid);
        if flags & CLOSE_RANGE_CLOEXEC != 0 {
            table.iter_mut().filter(|(fd, _)| (first..=last).contains(*fd)).for_each(|(_, o)| o.cloexec = true);
        } else {
            table.retain(|fd, _| !(first..=last).contains(fd));
        }
    }

    pub(super) fn set_cloexec(&mut self, tid: i32, fd: u64, on: bool) {
        if let Some(open) = self.table(tid).get_mut(&fd) {
            open.cloexec = on;
        }
    }

    /// A socket's name now says more (its peer after connect or accept, its address after bind).
    pub(super) fn rename_fd(&mut self, tid: i32, fd: u64, name: String) {
        if let Some(open) = self.table(tid).get_mut(&fd) {
            open.name = name;
        }
    }

    /// `path` was unlinked: every fd on the host still open on it names a deleted file.
    pub(super) fn unlinked(&mut self, path: &str) {
        for open in self.tables.values_mut().flat_map(|t| t.values_mut()) {
            if open.current_path() == path {
                open.deleted = true;
            }
        }
    }

    /// `from` was renamed to `to`: fds open on `from` follow it; fds open on the file `to`
    /// replaced name a deleted file.
    pub(super) fn renamed(&mut self, from: &str, to: &str) {
        for open in self.tables.values_mut().flat_map(|t| t.values_mut()) {
            if open.deleted {
                continue;
            }
            if open.current_path() == to {
                open.deleted = true;
            } else if open.current_path() == from {
                open.renamed_to = Some(to.to_string());
            }
        }
    }
}
