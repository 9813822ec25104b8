//! `heisen agents`: reachability, versions, capabilities and clock offset of each agent.

use anyhow::Result;

use crate::hosts::{credentials, parse_agents};
use crate::{client, AgentsArgs};

pub async fn run(a: AgentsArgs) -> Result<i32> {
    let credentials = credentials(&a.access)?;
    let mut rows = Vec::new();
    let mut unreachable = false;
    for (name, addr) in parse_agents(&a.agents)? {
        match client::Agent::connect(&name, &addr, &credentials).await {
            Ok(mut agent) => {
                let samples = agent.probe(16).await?;
                let clock = client::fit(&name, &samples)?;
                let caps = agent.info.capabilities.clone();
                rows.push(serde_json::json!({
                    "name": name, "addr": addr, "reachable": true, "version": agent.info.version,
                    "kernel": agent.info.kernel, "offset_ns": clock.offset_ns, "error_ns": clock.error_ns, "at_ns": clock.ref_ns,
                    "capabilities": {"root": caps.root, "kernel_tracing": caps.kernel_tracing, "ptrace": caps.ptrace,
                                     "seccomp_notify": caps.seccomp_notify, "tracing_unavailable_reason": caps.tracing_unavailable_reason},
                }));
            }
            Err(e) => {
                unreachable = true;
                rows.push(
                    serde_json::json!({"name": name, "addr": addr, "reachable": false, "error": format!("{e:#}")}),
                );
            }
        }
    }
    if a.json {
        println!("{}", serde_json::Value::Array(rows));
    } else {
        for r in &rows {
            if r["reachable"] == true {
                println!(
                    "{:<10} {:<22} v{} kernel {} offset {} ns ± {} ns  tracing={} seccomp={}",
                    r["name"].as_str().unwrap_or(""),
                    r["addr"].as_str().unwrap_or(""),
                    r["version"].as_str().unwrap_or(""),
                    r["kernel"].as_str().unwrap_or(""),
                    r["offset_ns"],
                    r["error_ns"],
                    r["capabilities"]["kernel_tracing"],
                    r["capabilities"]["seccomp_notify"]
                );
            } else {
                println!(
                    "{:<10} {:<22} UNREACHABLE: {}",
                    r["name"].as_str().unwrap_or(""),
                    r["addr"].as_str().unwrap_or(""),
                    r["error"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(if unreachable { 2 } else { 0 })
}
