//! Host selection: `--local` hosts started by the harness, or the `--agent NAME=ADDR`s given,
//! connected and with the placeholders a scenario needs.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};
use heisen_recordings::Scenario;

use crate::output::progress;
use crate::{client, session, Access, Target};

/// The token and TLS files of `--token-file --ca --cert --key`, read (the key only when no one
/// else can read it).
pub fn credentials(access: &Access) -> Result<client::Credentials> {
    let token = match &access.token_file {
        None => None,
        Some(p) => {
            let t = std::fs::read_to_string(p).with_context(|| format!("cannot read token file {}", p.display()))?;
            Some(t.trim().to_string())
        }
    };
    let tls = match (&access.ca, &access.cert, &access.key) {
        (Some(ca), Some(cert), Some(key)) => Some(client::ClientTls {
            ca: heisen_certs::read(ca, "CA certificate")?,
            cert: heisen_certs::read(cert, "client certificate")?,
            key: heisen_certs::read_private(key, "client key")?,
        }),
        _ => None,
    };
    Ok(client::Credentials { token, tls })
}

/// The credentials of local hosts the harness started: their token, and mutual TLS when they
/// listen off loopback.
pub fn local_credentials(hosts: &heisen_harness::Hosts) -> Result<client::Credentials> {
    let tls = match &hosts.tls {
        Some(files) => Some(client::ClientTls {
            ca: heisen_certs::read(&files.ca, "CA certificate")?,
            cert: heisen_certs::read(&files.client.cert, "client certificate")?,
            key: heisen_certs::read_private(&files.client.key, "client key")?,
        }),
        None => None,
    };
    Ok(client::Credentials { token: hosts.token.clone(), tls })
}

pub fn parse_agents(specs: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let (name, addr) = spec.split_once('=').ok_or_else(|| anyhow!("--agent `{spec}` must be NAME=HOST:PORT"))?;
        if name.is_empty() || addr.is_empty() {
            return Err(anyhow!("--agent `{spec}` must be NAME=HOST:PORT"));
        }
        out.insert(name.to_string(), addr.to_string());
    }
    Ok(out)
}

pub struct Hosts {
    pub agents: BTreeMap<String, client::Agent>,
    pub vars: session::Placeholders,
    pub harness: Option<heisen_harness::Hosts>,
}

pub async fn connect(scenario: &Scenario, target: &Target) -> Result<Hosts> {
    let (addrs, credentials, harness) = if target.local {
        use heisen_harness as hosts;
        let exe = std::env::current_exe().context("cannot find the heisen binary")?;
        let options = hosts::Options { loopback: target.loopback, skews: parse_agents(&target.skews)? };
        let h = hosts::Hosts::start(&[exe, "agent".into()], &scenario.hosts, &options)?;
        if let hosts::Mode::Loopback(why) = &h.mode {
            progress(&format!("note: local hosts on loopback ({why})"));
        }
        (h.agents.clone(), local_credentials(&h)?, Some(h))
    } else {
        (parse_agents(&target.agents)?, credentials(&target.access)?, None)
    };
    let missing: Vec<_> = scenario.hosts.iter().filter(|h| !addrs.contains_key(*h)).cloned().collect();
    if !missing.is_empty() {
        return Err(anyhow!(
            "scenario `{}` needs hosts {}; pass --agent NAME=HOST:PORT for each, or --local",
            scenario.name,
            missing.join(", ")
        ));
    }
    let mut agents = BTreeMap::new();
    let mut host_addrs = BTreeMap::new();
    for (name, addr) in &addrs {
        agents.insert(name.clone(), client::Agent::connect(name, addr, &credentials).await?);
        let ip = harness.as_ref().and_then(|h| h.host_addrs.get(name).cloned());
        host_addrs.insert(
            name.clone(),
            ip.unwrap_or_else(|| addr.rsplit_once(':').map(|(h, _)| h.to_string()).unwrap_or_default()),
        );
    }
    let shared = match (&target.shared, &harness) {
        (Some(dir), _) => Some(dir.display().to_string()),
        (None, Some(h)) => Some(h.shared_dir()?.display().to_string()),
        (None, None) => None,
    };
    if shared.is_none() && scenario.text.contains("{shared}") {
        return Err(anyhow!(
            "scenario `{}` uses {{shared}}: pass --shared DIR, a directory every host sees at the same path",
            scenario.name
        ));
    }
    if scenario.dir.is_none() && scenario.text.contains("{scenario_dir}") {
        return Err(anyhow!(
            "scenario `{}` uses {{scenario_dir}}, but its file is not at hand (an embedded scenario, or a bundle's \
             whose file has moved): run it from its file",
            scenario.name
        ));
    }
    let port = heisen_harness::free_port()?;
    let vars = session::Placeholders { host_addrs, port, shared, scenario_dir: scenario.dir.clone() };
    Ok(Hosts { agents, vars, harness })
}
