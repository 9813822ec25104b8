//! `heisen certs`: a small authority and certificates for agents and coordinators.

use anyhow::Result;
use heisen_certs::Role;

use crate::CertsCommand;

pub fn run(command: CertsCommand) -> Result<i32> {
    match command {
        CertsCommand::Init { dir, days, json } => {
            let ca = heisen_certs::init(&dir, days)?;
            if json {
                println!("{}", serde_json::json!({"ca": ca.cert, "ca_key": ca.key}));
            } else {
                println!("authority: {} (key {}, keep it off the agents' hosts)", ca.cert.display(), ca.key.display());
                println!("next: heisen certs issue HOST --dir {} --ip ADDR   (one per agent)", dir.display());
                println!("      heisen certs issue coordinator --dir {} --client", dir.display());
            }
        }
        CertsCommand::Issue { name, dir, ip, dns, client, days, json } => {
            let role = if client {
                Role::Client
            } else {
                Role::Agent { sans: ip.iter().map(|a| a.to_string()).chain(dns).collect() }
            };
            let pair = heisen_certs::issue(&dir, &name, &role, days)?;
            let ca = heisen_certs::ca_files(&dir).cert;
            if json {
                let kind = if client { "client" } else { "agent" };
                println!(
                    "{}",
                    serde_json::json!({"name": name, "kind": kind, "cert": pair.cert, "key": pair.key, "ca": ca})
                );
            } else if client {
                println!("client {name}: {} (key {})", pair.cert.display(), pair.key.display());
                println!(
                    "use: heisen ... --ca {} --cert {} --key {} --token-file TOKEN",
                    ca.display(),
                    pair.cert.display(),
                    pair.key.display()
                );
            } else {
                println!("agent {name}: {} (key {})", pair.cert.display(), pair.key.display());
                println!(
                    "copy both and {} to the host, then: heisen-agent --listen ADDR:7800 --tls-cert {} --tls-key {} \
                     --client-ca {} --token-file TOKEN",
                    ca.display(),
                    pair.cert.display(),
                    pair.key.display(),
                    ca.display()
                );
            }
        }
    }
    Ok(0)
}
