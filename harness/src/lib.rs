//! The multi-host harness: one agent per host, each in its own network namespace (veth pair into
//! a bridge, addresses of our own in 10.213.N.0/24) when root, or on loopback ports otherwise.
//! Used by `heisen demo`/`--local` and by the end-to-end tests. Everything is torn down on drop,
//! including after errors. Only loopback and these namespaces' addresses are ever used.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What went wrong starting or using local hosts, as a sentence for the user.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("ip {args} failed: {stderr}")]
    Ip { args: String, stderr: String },
    /// Network namespaces cannot be used here (the reason), or another precondition is missing.
    #[error("{0}")]
    NoNetns(&'static str),
    #[error("agent for host {host} did not come up: {source}; its log: {log}")]
    AgentDown { host: String, source: Box<HarnessError>, log: String },
    #[error("agent {host} logged no clock skew origin (was it started with a skew?)")]
    NoSkewOrigin { host: String },
    #[error("bad agent address `{addr}`")]
    BadAddress { addr: String },
    #[error("nothing listening on {addr} after {secs} s")]
    NotListening { addr: String, secs: u64 },
    #[error("the agent exited before it listened ({status})")]
    Exited { status: String },
    #[error("no agent program given")]
    NoAgentProgram,
    #[error("no free bridge id in 20..220 (stale hzbr* links?)")]
    NoBridge,
    #[error("cannot make the hosts' TLS certificates: {0}")]
    Certs(#[from] heisen_certs::CertError),
}

pub type Result<T> = std::result::Result<T, HarnessError>;

fn context<T>(r: std::io::Result<T>, what: &str) -> Result<T> {
    r.map_err(|source| HarnessError::Io { what: what.to_string(), source })
}

/// How the local hosts are isolated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Netns,
    /// Loopback fallback, with the reason netns could not be used.
    Loopback(String),
}

/// The TLS files a client of netns hosts needs.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub client: heisen_certs::Pair,
}

/// What to start.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Use loopback even when network namespaces are possible.
    pub loopback: bool,
    /// host -> `--clock-skew` value for its agent (a testing option of the agent).
    pub skews: BTreeMap<String, String>,
}

/// Running local hosts.
pub struct Hosts {
    pub mode: Mode,
    /// host -> agent address (HOST:PORT).
    pub agents: BTreeMap<String, String>,
    /// host -> address other hosts reach it at (for `{host:NAME}`).
    pub host_addrs: BTreeMap<String, String>,
    pub token: Option<String>,
    /// Agents off loopback (netns) speak mutual TLS: the authority and the client's pair.
    pub tls: Option<TlsFiles>,
    children: Vec<Child>,
    namespaces: Vec<String>,
    host_netns: BTreeMap<String, String>,
    bridge: Option<String>,
    dir: tempfile::TempDir,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = context(Command::new("ip").args(args).output(), "cannot run `ip` (install iproute2: ./scripts/setup)")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(HarnessError::Ip { args: args.join(" "), stderr });
    }
    Ok(())
}

/// Whether network namespaces can be used here, or why not.
pub fn netns_possible() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(HarnessError::NoNetns("not root: network namespaces need CAP_SYS_ADMIN"));
    }
    match Command::new("ip").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => Ok(()),
        _ => Err(HarnessError::NoNetns("`ip` (iproute2) is not installed; run ./scripts/setup")),
    }
}

/// A free TCP port on loopback (bound and released; a tiny race is acceptable for local hosts).
pub fn free_port() -> Result<u16> {
    let listener = context(std::net::TcpListener::bind("127.0.0.1:0"), "cannot bind a loopback port")?;
    Ok(context(listener.local_addr(), "no local address")?.port())
}

impl Hosts {
    /// A directory every local host sees at the same path (`{shared}` in scenarios), like an
    /// NFS share mounted on every machine.
    pub fn shared_dir(&self) -> Result<std::path::PathBuf> {
        let dir = self.dir.path().join("shared");
        context(std::fs::create_dir_all(&dir), "cannot create the shared directory")?;
        Ok(dir)
    }

    /// The network namespace a host's agent runs in (netns mode), e.g. to run a program there
    /// with `ip netns exec`.
    pub fn netns(&self, host: &str) -> Option<&str> {
        self.host_netns.get(host).map(String::as_str)
    }

    /// The file holding the agents' token.
    pub fn token_file(&self) -> std::path::PathBuf {
        self.dir.path().join("token")
    }

    /// What a `heisen` command needs to reach these hosts: `--token-file` and, in netns mode,
    /// `--ca --cert --key`.
    pub fn client_args(&self) -> Vec<String> {
        let mut args = vec!["--token-file".to_string(), self.token_file().display().to_string()];
        if let Some(tls) = &self.tls {
            for (flag, path) in [("--ca", &tls.ca), ("--cert", &tls.client.cert), ("--key", &tls.client.key)] {
                args.extend([flag.to_string(), path.display().to_string()]);
            }
        }
        args
    }

    /// Makes the agents' token (random, in a file only we can read) and returns it.
    fn write_token(&self) -> Result<String> {
        use std::io::{Read, Write};
        use std::os::unix::fs::OpenOptionsExt;
        let mut bytes = [0u8; 16];
        context(
            std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)),
            "cannot read /dev/urandom for a token",
        )?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut file = context(
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(self.token_file()),
            "cannot create the token file",
        )?;
        context(file.write_all(token.as_bytes()), "cannot write the token file")?;
        Ok(token)
    }

    /// Starts one agent per host with `agent_cmd` (program and leading arguments, e.g.
    /// `[heisen, agent]`); network namespaces when possible, loopback otherwise.
    pub fn start(agent_cmd: &[PathBuf], hosts: &[String], options: &Options) -> Result<Hosts> {
        let dir = context(tempfile::Builder::new().prefix("heisen-hosts-").tempdir(), "cannot create a temp dir")?;
        let mode = if options.loopback {
            Mode::Loopback("loopback requested".into())
        } else {
            match netns_possible() {
                Ok(()) => Mode::Netns,
                Err(why) => Mode::Loopback(why.to_string()),
            }
        };
        let mut started = Hosts {
            mode: mode.clone(),
            agents: BTreeMap::new(),
            host_addrs: BTreeMap::new(),
            token: None,
            tls: None,
            children: Vec::new(),
            namespaces: Vec::new(),
            host_netns: BTreeMap::new(),
            bridge: None,
            dir,
        };
        // Every agent requires a token (loopback too): one for all of them, readable by us only.
        started.token = Some(started.write_token()?);
        let id = if mode == Mode::Netns { started.bridge_up()? } else { 0 };
        // Off loopback an agent requires TLS: an authority of the hosts' own, a certificate per
        // agent naming its address, and one for the client.
        let tls_dir = started.dir.path().join("tls");
        if mode == Mode::Netns {
            let ca = heisen_certs::init(&tls_dir, 2)?;
            let client = heisen_certs::issue(&tls_dir, "coordinator", &heisen_certs::Role::Client, 2)?;
            started.tls = Some(TlsFiles { ca: ca.cert, client });
        }
        let mut spawned = Vec::new();
        for (i, host) in hosts.iter().enumerate() {
            let data = started.dir.path().join(format!("agent-{host}"));
            let mut args: Vec<String> =
                vec!["--name".into(), host.clone(), "--data".into(), data.display().to_string()];
            if let Some(skew) = options.skews.get(host) {
                args.push(format!("--clock-skew={skew}"));
            }
            let (listen, addr, ns) = match mode {
                Mode::Netns => {
                    let (ns, addr) = started.netns_host(id, i)?;
                    started.host_netns.insert(host.clone(), ns.clone());
                    args.extend(["--scope".into(), "netns".into()]);
                    let pair = heisen_certs::issue(
                        &tls_dir,
                        &format!("agent-{i}"),
                        &heisen_certs::Role::Agent { sans: vec![addr.clone()] },
                        2,
                    )?;
                    for (flag, path) in
                        [("--tls-cert", &pair.cert), ("--tls-key", &pair.key), ("--client-ca", &tls_dir.join("ca.pem"))]
                    {
                        args.extend([flag.into(), path.display().to_string()]);
                    }
                    (format!("{addr}:7800"), addr, Some(ns))
                }
                Mode::Loopback(_) => {
                    // Port 0: the agent picks a free port and announces it (below). A port
                    // picked here and released could be taken by a parallel test's agent first.
                    args.extend(["--scope".into(), "launched".into()]);
                    ("127.0.0.1:0".to_string(), "127.0.0.1".to_string(), None)
                }
            };
            args.extend(["--listen".into(), listen.clone(), "--token-file".into()]);
            args.push(started.token_file().display().to_string());
            let child = spawn_agent(agent_cmd, &args, ns.as_deref(), &started.log_path(host))?;
            started.children.push(child);
            spawned.push((host.clone(), started.children.len() - 1));
            started.agents.insert(host.clone(), listen);
            started.host_addrs.insert(host.clone(), addr);
        }
        for (host, i) in spawned {
            let addr = started.agents[&host].clone();
            let log_path = started.log_path(&host);
            let up = if addr.ends_with(":0") {
                wait_announced(&log_path, &mut started.children[i], Duration::from_secs(15))
            } else {
                wait_listening(&addr, Duration::from_secs(15)).map(|()| addr)
            };
            match up {
                Ok(addr) => {
                    started.agents.insert(host, addr);
                }
                Err(e) => {
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    return Err(HarnessError::AgentDown { host, source: Box::new(e), log: log.trim().to_string() });
                }
            }
        }
        Ok(started)
    }

    /// The agent log of `host` (its stdout and stderr).
    pub fn log_path(&self, host: &str) -> PathBuf {
        self.dir.path().join(format!("agent-{host}.log"))
    }

    /// The true-clock instant (ns) from which a skewed agent's drift accrues, as the agent logged
    /// it (a testing aid that never goes over the wire): the ground truth for clock estimates.
    pub fn skew_origin(&self, host: &str) -> Result<f64> {
        let log = context(std::fs::read_to_string(self.log_path(host)), "cannot read the agent log")?;
        log.lines()
            .find(|l| l.starts_with("clock skew (testing option)"))
            .and_then(|l| l.split("origin_ns=").nth(1))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| HarnessError::NoSkewOrigin { host: host.into() })
    }

    /// Claims a free id (bridge `hzbrID`, subnet 10.213.ID.0/24) and brings its bridge up.
    /// A bridge that exists belongs to another harness (another test, in this process or not):
    /// never delete it, take the next id.
    fn bridge_up(&mut self) -> Result<u32> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let start = std::process::id() + NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst) * 7;
        let mut claimed = None;
        for k in 0..200 {
            let id = 20 + (start + k) % 200;
            let bridge = format!("hzbr{id}");
            match ip(&["link", "add", &bridge, "type", "bridge"]) {
                Ok(_) => {
                    claimed = Some((id, bridge));
                    break;
                }
                Err(HarnessError::Ip { stderr, .. }) if stderr.contains("File exists") => continue,
                Err(e) => return Err(e),
            }
        }
        let (id, bridge) = claimed.ok_or(HarnessError::NoBridge)?;
        self.bridge = Some(bridge.clone());
        ip(&["addr", "add", &format!("10.213.{id}.1/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        Ok(id)
    }

    /// Namespace `i` on the bridge: returns its name and address.
    fn netns_host(&mut self, id: u32, i: usize) -> Result<(String, String)> {
        let bridge = self.bridge.clone().expect("bridge is up");
        let ns = format!("heisen{id}-{i}");
        let _ = ip(&["netns", "del", &ns]);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        let (outer, inner) = (format!("hz{id}v{i}a"), format!("hz{id}v{i}b"));
        // The id is ours (its bridge was free): a veth of that name is a killed harness's
        // leftover, as a namespace of that name is.
        let _ = ip(&["link", "del", &outer]);
        ip(&["link", "add", &outer, "type", "veth", "peer", "name", &inner])?;
        ip(&["link", "set", &outer, "master", &bridge, "up"])?;
        ip(&["link", "set", &inner, "netns", &ns])?;
        // Every host calls its link eth0, like real machines: interface names never differ by construction.
        ip(&["-n", &ns, "link", "set", &inner, "name", "eth0"])?;
        let addr = format!("10.213.{id}.{}", i + 2);
        ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok((ns, addr))
    }
}

/// Starts an agent, inside netns `ns` and a mount namespace of its own when given.
fn spawn_agent(agent_cmd: &[PathBuf], args: &[String], ns: Option<&str>, log: &Path) -> Result<Child> {
    let (program, leading) = agent_cmd.split_first().ok_or(HarnessError::NoAgentProgram)?;
    let log_file = context(std::fs::File::create(log), "cannot create an agent log")?;
    let mut cmd = Command::new(program);
    cmd.args(leading).args(args).stdin(Stdio::null());
    cmd.stdout(context(log_file.try_clone(), "agent log")?).stderr(log_file);
    let netns = match ns {
        Some(ns) => {
            Some(context(std::fs::File::open(format!("/run/netns/{ns}")), &format!("cannot open /run/netns/{ns}"))?)
        }
        None => None,
    };
    if let Some(file) = &netns {
        let fd = file.as_raw_fd();
        // SAFETY: setns on an fd opened before fork is async-signal-safe; `file` outlives spawn.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Its own mount namespace, so host mount tables can differ (story 3). Mounts of
                // the machine still show inside (slave propagation); the host's own never leak out.
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let root = c"/";
                if libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_SLAVE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    context(cmd.spawn(), &format!("cannot start the agent {}", program.display()))
}

/// The address an agent started on port 0 announced in its log (`heisen-agent NAME listening on
/// ADDR`), once it is listening; an error when it exits first or says nothing in time.
fn wait_announced(log: &Path, child: &mut Child, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let announced = text
            .lines()
            .filter(|l| l.starts_with("heisen-agent "))
            .find_map(|l| l.split(" listening on ").nth(1))
            .map(|a| a.trim().to_string());
        if let Some(addr) = announced {
            return Ok(addr);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(HarnessError::Exited { status: status.to_string() });
        }
        if Instant::now() >= deadline {
            return Err(HarnessError::NotListening { addr: "127.0.0.1:0".into(), secs: timeout.as_secs() });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_listening(addr: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let sock: std::net::SocketAddr = addr.parse().map_err(|_| HarnessError::BadAddress { addr: addr.into() })?;
    loop {
        if std::net::TcpStream::connect_timeout(&sock, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(HarnessError::NotListening { addr: addr.into(), secs: timeout.as_secs() });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for child in &mut self.children {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for child in &mut self.children {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in &self.namespaces {
            let _ = ip(&["netns", "del", ns]);
        }
        if let Some(bridge) = &self.bridge {
            let _ = ip(&["link", "del", bridge]);
        }
    }
}
