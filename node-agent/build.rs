//! Compiles the BPF programs (`bpf/*.bpf.c`: the argument recorder and the opt-in write
//! recorder) with clang against libbpf's headers (Debian's `clang` and `libbpf-dev`, installed by
//! `scripts/setup`). Without clang the agent is built without them: `HEISEN_BPF_MISSING` then says
//! why, and a capture records without paths and says so.

use std::path::PathBuf;
use std::process::Command;

const OBJECTS: &[&str] = &["args", "writes"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch_include = format!("/usr/include/{}-linux-gnu", std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default());
    let mut why_not = None;
    for name in OBJECTS {
        let src = format!("bpf/{name}.bpf.c");
        println!("cargo:rerun-if-changed={src}");
        println!("cargo:rerun-if-changed=bpf/select.h");
        let out = out_dir.join(format!("{name}.bpf.o"));
        let result = Command::new("clang")
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I{arch_include}"))
            .args(["-c", &src, "-o"])
            .arg(&out)
            .output();
        let failed = match result {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!("clang failed on {src}: {}", String::from_utf8_lossy(&o.stderr).trim())),
            Err(e) => Some(format!("clang not found ({e}); run ./scripts/setup")),
        };
        if let Some(why) = failed {
            println!("cargo:warning=BPF program {name} not built: {}", why.lines().next().unwrap_or_default());
            std::fs::write(&out, b"").expect("write an empty object");
            why_not.get_or_insert(why);
        }
    }
    println!("cargo:rustc-env=HEISEN_BPF_MISSING={}", why_not.unwrap_or_default().replace('\n', " "));
}
