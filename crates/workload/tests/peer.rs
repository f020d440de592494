//! Attestation over a real Unix socket: another process (a Python interpreter) connects, and
//! what the kernel reports about it — pid, uid, executable path and digest — is what we get.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

use std::{io::Read, process::Stdio, time::Duration};

use sha2::{Digest, Sha256};
use tokio::net::UnixListener;
use workload::Attestor;

#[tokio::test]
async fn attests_another_process_from_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("attest.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let script = format!(
        "import os, socket, sys\n\
         s = socket.socket(socket.AF_UNIX)\n\
         s.connect({sock:?})\n\
         print(os.getpid(), os.path.realpath(sys.executable), flush=True)\n\
         s.recv(1)\n"
    );
    let mut child = match std::process::Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "python3 is needed for this test in CI: {e}"
            );
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "skipped: python3 not found ({e})");
            return;
        }
    };
    let (stream, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
        .await
        .expect("python3 connected")
        .unwrap();
    let mut line = String::new();
    let mut out = child.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    while out.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(byte[0] as char);
    }
    let (pid, exe) = line.split_once(' ').unwrap();

    let att = Attestor::new().attest(&stream).unwrap();
    assert_eq!(att.pid.to_string(), pid);
    assert_eq!(att.exe.as_deref().unwrap().to_str().unwrap(), exe);
    let digest: String = Sha256::digest(std::fs::read(exe).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(att.exe_sha256.as_deref(), Some(digest.as_str()));
    let selectors: Vec<String> = att.selectors().iter().map(ToString::to_string).collect();
    assert!(
        selectors.contains(&format!("unix:path:{exe}")),
        "{selectors:?}"
    );
    assert!(
        selectors.contains(&format!("unix:sha256:{digest}")),
        "{selectors:?}"
    );
    assert!(selectors.iter().any(|s| s.starts_with("unix:uid:")));

    // Let it exit; the connection keeps the credentials the kernel took at connect time, but
    // the process behind them is gone, so it no longer attests.
    stream.writable().await.unwrap();
    stream.try_write(b"x").unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        Attestor::new().attest(&stream),
        Err(workload::AttestError::ProcessChanged(att.pid))
    );
}
