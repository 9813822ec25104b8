//! Local hosts for `heisen demo` and `--local`: one agent per scenario host, each in its own
//! network namespace (veth pair into a bridge, addresses of our own in 10.213.N.0/24) when root,
//! or on loopback ports otherwise. Everything is torn down on drop, including after errors.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

/// How the local hosts are isolated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Netns,
    /// Loopback fallback, with the reason netns could not be used.
    Loopback(String),
}

/// Running local hosts.
pub struct Harness {
    pub mode: Mode,
    /// host -> agent address (HOST:PORT).
    pub agents: BTreeMap<String, String>,
    /// host -> address other hosts reach it at (for `{host:NAME}`).
    pub host_addrs: BTreeMap<String, String>,
    pub token: Option<String>,
    children: Vec<Child>,
    namespaces: Vec<String>,
    bridge: Option<String>,
    _dir: tempfile::TempDir,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (install iproute2: ./scripts/setup)")?;
    if !out.status.success() {
        return Err(anyhow!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Whether network namespaces can be used here, or why not.
pub fn netns_possible() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root: network namespaces need CAP_SYS_ADMIN".into());
    }
    match Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        _ => Err("`ip` (iproute2) is not installed; run ./scripts/setup".into()),
    }
}

impl Harness {
    /// Starts one agent per host; netns when possible, else loopback.
    pub fn start(hosts: &[String], force_loopback: bool) -> Result<Harness> {
        let dir = tempfile::Builder::new()
            .prefix("heisen-hosts-")
            .tempdir()
            .context("cannot create a temp dir")?;
        let mode = if force_loopback {
            Mode::Loopback("loopback requested".into())
        } else {
            match netns_possible() {
                Ok(()) => Mode::Netns,
                Err(why) => Mode::Loopback(why),
            }
        };
        let mut harness = Harness {
            mode: mode.clone(),
            agents: BTreeMap::new(),
            host_addrs: BTreeMap::new(),
            token: None,
            children: Vec::new(),
            namespaces: Vec::new(),
            bridge: None,
            _dir: dir,
        };
        match mode {
            Mode::Netns => harness.start_netns(hosts)?,
            Mode::Loopback(_) => harness.start_loopback(hosts)?,
        }
        for (host, addr) in harness.agents.clone() {
            wait_listening(&addr, Duration::from_secs(15))
                .with_context(|| format!("agent for host {host} did not come up"))?;
        }
        Ok(harness)
    }

    fn dir(&self) -> PathBuf {
        self._dir.path().to_path_buf()
    }

    fn start_netns(&mut self, hosts: &[String]) -> Result<()> {
        let id = 20 + std::process::id() % 200;
        let bridge = format!("hzbr{id}");
        let _ = ip(&["link", "del", &bridge]);
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        self.bridge = Some(bridge.clone());
        ip(&["addr", "add", &format!("10.213.{id}.1/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        let token = format!("{:x}{:x}", client_nonce(), std::process::id());
        let token_file = self.dir().join("token");
        std::fs::write(&token_file, &token)?;
        self.token = Some(token);
        for (i, host) in hosts.iter().enumerate() {
            let ns = format!("heisen{id}-{i}");
            let _ = ip(&["netns", "del", &ns]);
            ip(&["netns", "add", &ns])?;
            self.namespaces.push(ns.clone());
            let (outer, inner) = (format!("hz{id}v{i}a"), format!("hz{id}v{i}b"));
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ])?;
            ip(&["link", "set", &outer, "master", &bridge, "up"])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            let addr = format!("10.213.{id}.{}", i + 2);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &inner,
            ])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let listen = format!("{addr}:7800");
            let args = vec![
                "--listen".to_string(),
                listen.clone(),
                "--name".into(),
                host.clone(),
                "--data".into(),
                self.dir()
                    .join(format!("agent-{host}"))
                    .display()
                    .to_string(),
                "--token-file".into(),
                token_file.display().to_string(),
                "--scope".into(),
                "netns".into(),
            ];
            let child = spawn_agent(
                &args,
                Some(&ns),
                &self.dir().join(format!("agent-{host}.log")),
            )?;
            self.children.push(child);
            self.agents.insert(host.clone(), listen);
            self.host_addrs.insert(host.clone(), addr);
        }
        Ok(())
    }

    fn start_loopback(&mut self, hosts: &[String]) -> Result<()> {
        for host in hosts {
            let port = free_port()?;
            let listen = format!("127.0.0.1:{port}");
            let args = vec![
                "--listen".to_string(),
                listen.clone(),
                "--name".into(),
                host.clone(),
                "--data".into(),
                self.dir()
                    .join(format!("agent-{host}"))
                    .display()
                    .to_string(),
                "--scope".into(),
                "launched".into(),
            ];
            let child = spawn_agent(&args, None, &self.dir().join(format!("agent-{host}.log")))?;
            self.children.push(child);
            self.agents.insert(host.clone(), listen);
            self.host_addrs.insert(host.clone(), "127.0.0.1".into());
        }
        Ok(())
    }
}

fn client_nonce() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A free TCP port on loopback (bound and released; a tiny race is acceptable for local hosts).
pub fn free_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// Starts `heisen agent ARGS` (this binary), inside netns `ns` when given.
fn spawn_agent(args: &[String], ns: Option<&str>, log: &std::path::Path) -> Result<Child> {
    let exe = std::env::current_exe().context("cannot find the heisen binary")?;
    let log_file = std::fs::File::create(log)?;
    let mut cmd = Command::new(exe);
    cmd.arg("agent")
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    if let Some(ns) = ns {
        let path = format!("/run/netns/{ns}");
        let file = std::fs::File::open(&path).with_context(|| format!("cannot open {path}"))?;
        let fd = file.as_raw_fd();
        // SAFETY: setns on an fd opened before fork; async-signal-safe. `file` outlives spawn.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().context("cannot start an agent")?;
        drop(file);
        return Ok(child);
    }
    cmd.spawn().context("cannot start an agent")
}

fn wait_listening(addr: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let sock: std::net::SocketAddr = addr.parse()?;
    loop {
        if std::net::TcpStream::connect_timeout(&sock, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(anyhow!(
                "nothing listening on {addr} after {} s",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Harness {
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
