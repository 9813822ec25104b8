//! Compiles the BPF argument recorder (`bpf/args.bpf.c`) with clang against libbpf's headers
//! (Debian's `clang` and `libbpf-dev`, installed by `scripts/setup`). Without clang the agent is
//! built without it: `HEISEN_BPF_ARGS` is then empty and the capture says paths are not recorded
//! and why.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "bpf/args.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("args.bpf.o");
    let arch_include = format!("/usr/include/{}-linux-gnu", std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default());
    let result = Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{arch_include}"))
        .args(["-c", src, "-o"])
        .arg(&out)
        .output();
    let why_not = match result {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!("clang failed on {src}: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Some(format!("clang not found ({e}); run ./scripts/setup")),
    };
    if let Some(why) = &why_not {
        println!("cargo:warning=BPF argument recorder not built: {}", why.lines().next().unwrap_or_default());
        std::fs::write(&out, b"").expect("write an empty object");
    }
    println!("cargo:rustc-env=HEISEN_BPF_ARGS_MISSING={}", why_not.unwrap_or_default().replace('\n', " "));
}
