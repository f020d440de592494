//! Kernel attestation of a Unix-socket peer.
//!
//! The caller's word counts for nothing: its uid, gid and pid come from SO_PEERCRED, taken by
//! the kernel when it connected; its executable is read through `/proc/<pid>/exe` (the file the
//! process is running, even if the path was since replaced or deleted), hashed with SHA-256;
//! its user name comes from `/etc/passwd`. To guard against the pid being reused by another
//! process while we look, the process start time (`/proc/<pid>/stat`, field 22) is read before
//! and after; if it changed, or the process is gone, attestation fails. Anything that cannot be
//! read yields no selector — entries that require it then do not match (fail closed).
//!
//! SO_PEERCRED names the process that connected, not the program it runs when it calls: a
//! process could connect and then exec a program whose entry it wants. So what a process runs
//! is sampled when it connects ([`ExeSample`]), and a call is refused if the process has since
//! exec'd something else. (That a call's bytes come from the connecting process at all is
//! checked per message by the Workload API's front, from SCM_CREDENTIALS.)

use std::{
    io::Read,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use identity::Selector;
use sha2::{Digest, Sha256};
use tokio::net::UnixStream;

/// Why a peer could not be attested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// SO_PEERCRED failed.
    #[error("cannot read the peer's credentials: {0}")]
    PeerCred(String),
    /// The kernel gave no pid (not a local process).
    #[error("the peer has no process id")]
    NoPid,
    /// The process exited or its pid was reused while being examined.
    #[error("process {0} exited or was replaced during attestation")]
    ProcessChanged(i32),
    /// The process runs another program than when it connected (it exec'd since).
    #[error("process {0} runs another executable than when it connected")]
    ExecutableChanged(i32),
}

/// What a process was running when it connected: its start time and its executable (the
/// path and the file's identity), read from `/proc` without hashing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExeSample {
    start: u64,
    exe: Option<PathBuf>,
    file: Option<FileKey>,
}

impl ExeSample {
    /// Samples process `pid` now; `None` if it is gone. Blocking (it reads `/proc`).
    pub fn of(pid: i32) -> Option<Self> {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let start = start_time(&proc_dir)?;
        let exe = std::fs::read_link(proc_dir.join("exe")).ok();
        let file = std::fs::metadata(proc_dir.join("exe"))
            .ok()
            .map(|meta| file_key(&meta));
        // The pid must still be the process whose executable was read.
        (start_time(&proc_dir) == Some(start)).then_some(Self { start, exe, file })
    }
}

/// What the kernel says about a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    /// Process id.
    pub pid: i32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// User name, if `/etc/passwd` has the uid.
    pub user: Option<String>,
    /// Absolute path of the executable, if readable.
    pub exe: Option<PathBuf>,
    /// SHA-256 of the executable, lowercase hex, if readable.
    pub exe_sha256: Option<String>,
}

impl Attestation {
    /// The selectors this attestation proves.
    pub fn selectors(&self) -> Vec<Selector> {
        let mut out = vec![
            Selector::parse(&format!("unix:uid:{}", self.uid)),
            Selector::parse(&format!("unix:gid:{}", self.gid)),
        ];
        if let Some(user) = &self.user {
            out.push(Selector::parse(&format!("unix:user:{user}")));
        }
        if let Some(exe) = self.exe.as_ref().and_then(|p| p.to_str()) {
            out.push(Selector::parse(&format!("unix:path:{exe}")));
        }
        if let Some(hash) = &self.exe_sha256 {
            out.push(Selector::parse(&format!("unix:sha256:{hash}")));
        }
        // A value the selector grammar refuses (e.g. a user name with capitals) is simply not
        // offered: entries can never require it anyway.
        out.into_iter().filter_map(Result::ok).collect()
    }
}

/// Most executable digests kept; past it the least-used make way (TinyLFU), so the agents'
/// own executables stay hashed while a stream of one-off programs comes and goes.
const MAX_CACHED_DIGESTS: u64 = 4096;

/// Identity of an executable file: device, inode, size, mtime seconds and nanoseconds.
type FileKey = (u64, u64, u64, i64, i64);

/// Attests peers, caching executable digests by file identity so a busy agent's executable is
/// hashed once, not on every connection.
#[derive(Debug)]
pub struct Attestor {
    // file identity -> sha256 hex
    digests: moka::sync::Cache<FileKey, String>,
}

impl Default for Attestor {
    fn default() -> Self {
        Self {
            digests: moka::sync::Cache::new(MAX_CACHED_DIGESTS),
        }
    }
}

impl Attestor {
    /// A new attestor with an empty digest cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attests the process at the other end of `stream`. Blocking (it reads `/proc` and may
    /// hash an executable): call it from `spawn_blocking` in async code.
    pub fn attest(&self, stream: &UnixStream) -> Result<Attestation, AttestError> {
        let cred = stream
            .peer_cred()
            .map_err(|e| AttestError::PeerCred(e.to_string()))?;
        let pid = cred.pid().ok_or(AttestError::NoPid)?;
        self.attest_cred(pid, cred.uid(), cred.gid())
    }

    /// Attests a process from credentials the kernel reported (SO_PEERCRED), as a gRPC
    /// server receives them. Blocking, like [`Attestor::attest`].
    pub fn attest_cred(&self, pid: i32, uid: u32, gid: u32) -> Result<Attestation, AttestError> {
        self.attest_pid(pid, uid, gid)
            .map(|(attestation, _)| attestation)
    }

    /// Attests a process that connected running `at_connect`, refusing it if it now runs
    /// something else ([`AttestError::ExecutableChanged`]) or is another process. Blocking.
    pub fn attest_connected(
        &self,
        pid: i32,
        uid: u32,
        gid: u32,
        at_connect: &ExeSample,
    ) -> Result<Attestation, AttestError> {
        // What the attestation read is what the process runs now.
        let (attestation, now) = self.attest_pid(pid, uid, gid)?;
        if now.start != at_connect.start {
            return Err(AttestError::ProcessChanged(pid));
        }
        if now != *at_connect {
            return Err(AttestError::ExecutableChanged(pid));
        }
        Ok(attestation)
    }

    /// The attestation, and what the process runs as an [`ExeSample`] from the same reads.
    fn attest_pid(
        &self,
        pid: i32,
        uid: u32,
        gid: u32,
    ) -> Result<(Attestation, ExeSample), AttestError> {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let started = start_time(&proc_dir).ok_or(AttestError::ProcessChanged(pid))?;
        let exe = std::fs::read_link(proc_dir.join("exe")).ok();
        let digest = exe
            .as_ref()
            .and_then(|_| self.digest(&proc_dir.join("exe")));
        let (file, exe_sha256) = digest.map_or((None, None), |(key, hex)| (Some(key), Some(hex)));
        // The pid must still name the same process: same start time, same real uid.
        if start_time(&proc_dir) != Some(started) || real_uid(&proc_dir) != Some(uid) {
            return Err(AttestError::ProcessChanged(pid));
        }
        let sample = ExeSample {
            start: started,
            exe: exe.clone(),
            file,
        };
        let attestation = Attestation {
            pid,
            uid,
            gid,
            user: user_name(uid),
            exe,
            exe_sha256,
        };
        Ok((attestation, sample))
    }

    /// The executable's file identity and SHA-256 (lowercase hex).
    fn digest(&self, exe: &Path) -> Option<(FileKey, String)> {
        let mut file = std::fs::File::open(exe).ok()?;
        let key = file_key(&file.metadata().ok()?);
        if let Some(hex) = self.digests.get(&key) {
            return Some((key, hex));
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let hex: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.digests.insert(key, hex.clone());
        Some((key, hex))
    }
}

fn file_key(meta: &std::fs::Metadata) -> FileKey {
    (
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
    )
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot). The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
fn start_time(proc_dir: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards: field 22 is the 20th of those.
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The real uid from `/proc/<pid>/status`.
fn real_uid(proc_dir: &Path) -> Option<u32> {
    let status = std::fs::read_to_string(proc_dir.join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The user name for `uid` from `/etc/passwd`.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let dir = tempfile::tempdir().unwrap();
        let fields: Vec<String> = (3..=22).map(|i| i.to_string()).collect();
        std::fs::write(
            dir.path().join("stat"),
            format!("123 (evil ) name (x)) {}\n", fields.join(" ")),
        )
        .unwrap();
        assert_eq!(start_time(dir.path()), Some(22));
        std::fs::write(dir.path().join("stat"), "123 (short) S 1").unwrap();
        assert_eq!(start_time(dir.path()), None);
    }

    #[test]
    fn own_process_attests_itself() {
        let a = Attestor::new();
        let me = std::process::id() as i32;
        let uid = real_uid(Path::new("/proc/self")).unwrap();
        let att = a.attest_cred(me, uid, 0).unwrap();
        assert_eq!(att.exe, std::env::current_exe().ok());
        let sel = att.selectors();
        assert!(sel.contains(&Selector::parse(&format!("unix:uid:{uid}")).unwrap()));
        // The digest is cached: a second attestation returns the same value.
        assert_eq!(
            a.attest_cred(me, uid, 0).unwrap().exe_sha256,
            att.exe_sha256
        );
        // Sampled at connect and unchanged since: attested. A sample of another program (here
        // another path) is an exec since connecting: refused.
        let sample = ExeSample::of(me).unwrap();
        assert_eq!(
            a.attest_connected(me, uid, 0, &sample).unwrap().exe,
            att.exe
        );
        let other = ExeSample {
            exe: Some(PathBuf::from("/usr/bin/true")),
            ..sample.clone()
        };
        assert_eq!(
            a.attest_connected(me, uid, 0, &other),
            Err(AttestError::ExecutableChanged(me))
        );
        let restarted = ExeSample {
            start: sample.start + 1,
            ..sample
        };
        assert_eq!(
            a.attest_connected(me, uid, 0, &restarted),
            Err(AttestError::ProcessChanged(me))
        );
        // A wrong uid claim (the pid's real uid differs) is refused.
        assert_eq!(
            a.attest_cred(me, uid.wrapping_add(1), 0),
            Err(AttestError::ProcessChanged(me))
        );
    }
}
