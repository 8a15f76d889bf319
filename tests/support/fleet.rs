//! A fleet of real OpenSSH servers on loopback addresses, one per "host", for tests
//! that need SSH without mocks.
//!
//! Each fleet takes its own `127.X.Y.0/24` block (X ≥ 11, away from `127.0.0.0/16`
//! where real services live), chosen from the process id and a per-process counter,
//! so fleets of test binaries running in parallel do not collide; when an address is
//! taken anyway, the fleet moves to another block.
//!
//! Everything lives in one temporary directory, removed on drop:
//!
//! ```text
//! <tmp>/client_key{,.pub}     the key the tests authenticate with (ed25519, no passphrase)
//! <tmp>/authorized_keys       shared by all hosts
//! <tmp>/known_hosts           every host's key, as `[127.X.Y.i]:2222 ssh-ed25519 …`
//! <tmp>/host-i/               host i's app directory, for the tests' scripts
//! <tmp>/host-i/.sshd/         host i's sshd: config, host key, pid file, log
//! ```

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use planrun::transport::{HostKeyChecking, SshTarget};

use super::find_tool;

/// Port of every host's sshd; hosts differ by address.
pub const SSH_PORT: u16 = 2222;

/// How long a started sshd may take to bind and write its pid file.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

static NEXT_BLOCK: AtomicU32 = AtomicU32::new(0);

pub struct Host {
    /// 1-based, as in the address `127.X.Y.<index>` and the directory `host-<index>`.
    pub index: usize,
    pub addr: String,
    pub port: u16,
    /// The host's app directory: empty, for the test's own files.
    pub dir: PathBuf,
    /// sshd's log (`LogLevel VERBOSE`, or `DEBUG1` when asked): connections,
    /// authentications, sessions.
    pub log_path: PathBuf,
    /// The host's public key line (`ssh-ed25519 AAAA… host-i`).
    pub host_public_key: String,
    sshd: Child,
}

impl Host {
    /// The sshd log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Number of successful SSH logins to this host so far.
    pub fn accepted_logins(&self) -> usize {
        self.log().matches("Accepted publickey").count()
    }

    /// The pid of this host's sshd listener (`-D`, our child); its sessions are its
    /// descendants.
    pub fn sshd_pid(&self) -> u32 {
        self.sshd.id()
    }

    /// Number of TCP connections sshd accepted so far.
    pub fn connections(&self) -> usize {
        self.log().matches("Connection from ").count()
    }
}

pub struct Fleet {
    hosts: Vec<Host>,
    /// Private key authorized on every host.
    pub client_key: PathBuf,
    /// known_hosts listing every host of the fleet.
    pub known_hosts: PathBuf,
    /// The login user: whoever runs the tests (root here).
    pub user: String,
    // Last, so the directory goes only after the servers are stopped in `drop`.
    dir: tempfile::TempDir,
}

impl Fleet {
    /// Starts `n` sshd servers (1 ≤ n ≤ 254). Panics with sshd's log when one cannot
    /// start: tests cannot do anything useful without their fleet. Call
    /// [`super::require`]`("sshd")` first to skip cleanly where sshd is missing.
    pub fn start(n: usize) -> Fleet {
        Fleet::start_with_debug(n, &[])
    }

    /// Like [`Fleet::start`], with `LogLevel DEBUG1` on the hosts listed (1-based): their
    /// logs then show channel requests, such as the `direct-tcpip` a jump host serves.
    pub fn start_with_debug(n: usize, debug: &[usize]) -> Fleet {
        assert!((1..=254).contains(&n), "a fleet has 1 to 254 hosts, not {n}");
        let mut last_error = String::new();
        for _ in 0..8 {
            match Fleet::try_start(n, next_block(), debug) {
                Ok(fleet) => return fleet,
                Err(StartError::AddressInUse(e)) => last_error = e,
                Err(StartError::Other(e)) => panic!("cannot start the test fleet: {e}"),
            }
        }
        panic!("cannot start the test fleet, every address block tried was in use: {last_error}");
    }

    /// Host `index`, 1-based like the addresses.
    pub fn host(&self, index: usize) -> &Host {
        assert!((1..=self.hosts.len()).contains(&index), "the fleet has hosts 1 to {}, not {index}", self.hosts.len());
        &self.hosts[index - 1]
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The fleet's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The plan's `servers:` list lines for the fleet: `h1`…`hN` at their addresses, role
    /// `app`, each with its app directory as `options.dir`.
    pub fn servers_yaml(&self) -> String {
        self.hosts
            .iter()
            .map(|host| {
                format!(
                    "  - {{ host: \"{}\", name: h{}, roles: [app], options: {{ dir: \"{}\" }} }}\n",
                    host.addr,
                    host.index,
                    host.dir.display()
                )
            })
            .collect()
    }

    /// The plan's `ssh:` block that reaches every host of the fleet: the login user, the
    /// port, the client key and the fleet's known_hosts.
    pub fn ssh_yaml(&self) -> String {
        format!(
            "ssh:\n  user: {}\n  port: {}\n  identity_file: {}\n  known_hosts: {}\n",
            self.user,
            self.host(1).port,
            self.client_key.display(),
            self.known_hosts.display()
        )
    }

    /// An `SshTarget` for host `index` that works as is: the fleet's client key and
    /// known_hosts, strict checking, a short connect timeout.
    pub fn target(&self, index: usize) -> SshTarget {
        let host = self.host(index);
        SshTarget {
            host: host.addr.clone(),
            port: host.port,
            user: self.user.clone(),
            identity_files: vec![self.client_key.clone()],
            identities_only: true,
            known_hosts: self.known_hosts.clone(),
            host_key_checking: HostKeyChecking::Strict,
            connect_timeout: Duration::from_secs(5),
            jump: None,
        }
    }

    /// Generates another unencrypted ed25519 key pair (`<tmp>/<name>`), not authorized
    /// anywhere, and returns the private key's path.
    pub fn generate_key(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        keygen(&path, name).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    fn try_start(n: usize, (x, y): (u8, u8), debug: &[usize]) -> Result<Fleet, StartError> {
        let sshd_bin = find_tool("sshd")
            .ok_or_else(|| StartError::Other("`sshd` is not installed (apt-get install -y openssh-server)".into()))?;
        ensure_privsep_dir().map_err(StartError::Other)?;

        let dir = tempfile::Builder::new()
            .prefix("planrun-fleet-")
            .tempdir()
            .map_err(|e| StartError::Other(format!("cannot create a temp dir: {e}")))?;
        let root = dir.path().to_path_buf();
        let client_key = root.join("client_key");
        keygen(&client_key, "planrun-test-client").map_err(StartError::Other)?;
        let authorized = root.join("authorized_keys");
        fs::copy(client_key.with_extension("pub"), &authorized)
            .map_err(|e| StartError::Other(format!("cannot write authorized_keys: {e}")))?;
        let known_hosts = root.join("known_hosts");
        let user = current_user();

        let mut hosts = Vec::with_capacity(n);
        let mut known = String::new();
        for index in 1..=n {
            let addr = format!("127.{x}.{y}.{index}");
            let app_dir = root.join(format!("host-{index}"));
            let sshd_dir = app_dir.join(".sshd");
            fs::create_dir_all(&sshd_dir)
                .map_err(|e| StartError::Other(format!("cannot create {}: {e}", sshd_dir.display())))?;
            let host_key = sshd_dir.join("ssh_host_ed25519_key");
            keygen(&host_key, &format!("host-{index}")).map_err(StartError::Other)?;
            let host_public_key = fs::read_to_string(host_key.with_extension("pub"))
                .map_err(|e| StartError::Other(format!("cannot read host key: {e}")))?
                .trim()
                .to_string();
            known.push_str(&format!("[{addr}]:{SSH_PORT} {host_public_key}\n"));

            let config = sshd_dir.join("sshd_config");
            let pid_file = sshd_dir.join("sshd.pid");
            let log_path = sshd_dir.join("sshd.log");
            let level = if debug.contains(&index) { "DEBUG1" } else { "VERBOSE" };
            fs::write(&config, sshd_config(&addr, &host_key, &pid_file, &authorized, level))
                .map_err(|e| StartError::Other(format!("cannot write sshd_config: {e}")))?;
            let stderr = fs::File::create(sshd_dir.join("sshd.stderr"))
                .map_err(|e| StartError::Other(format!("cannot create sshd.stderr: {e}")))?;
            // `-D`: sshd stays our child, so drop can kill and reap it at once rather than
            // chase a daemon through its pid file (and mistake a zombie for a live one).
            let sshd = Command::new(&sshd_bin)
                .arg("-D")
                .arg("-f")
                .arg(&config)
                .arg("-E")
                .arg(&log_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .map_err(|e| StartError::Other(format!("cannot run {}: {e}", sshd_bin.display())))?;
            hosts.push(Host { index, addr, port: SSH_PORT, dir: app_dir, log_path, host_public_key, sshd });
        }
        fs::write(&known_hosts, known).map_err(|e| StartError::Other(format!("cannot write known_hosts: {e}")))?;

        let mut fleet = Fleet { hosts, client_key, known_hosts, user, dir };
        fleet.wait_ready()?;
        Ok(fleet)
    }

    /// sshd writes its pid file only once its listening socket is bound.
    fn wait_ready(&mut self) -> Result<(), StartError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        for host in &mut self.hosts {
            let pid_file = host.log_path.with_file_name("sshd.pid");
            loop {
                if pid_file.exists() {
                    break;
                }
                if let Ok(Some(status)) = host.sshd.try_wait() {
                    let log = fs::read_to_string(&host.log_path).unwrap_or_default()
                        + &fs::read_to_string(host.log_path.with_file_name("sshd.stderr")).unwrap_or_default();
                    let message = format!("sshd for {}:{} exited ({status}):\n{log}", host.addr, host.port);
                    return Err(if log.contains("Address already in use") {
                        StartError::AddressInUse(message)
                    } else {
                        StartError::Other(message)
                    });
                }
                if Instant::now() > deadline {
                    return Err(StartError::Other(format!(
                        "sshd for {}:{} did not start within {READY_TIMEOUT:?}:\n{}",
                        host.addr,
                        host.port,
                        host.log()
                    )));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for host in &mut self.hosts {
            // Sessions still open keep their own sshd processes until the client goes;
            // the listener is what must not outlive the test.
            let _ = host.sshd.kill();
            let _ = host.sshd.wait();
        }
    }
}

enum StartError {
    AddressInUse(String),
    Other(String),
}

fn next_block() -> (u8, u8) {
    // Spread processes by pid and fleets within a process by a counter, over
    // 127.11.0.0 – 127.250.255.0.
    let blocks = 240 * 256;
    let n = NEXT_BLOCK.fetch_add(1, Ordering::Relaxed);
    let block = (std::process::id().wrapping_mul(7919).wrapping_add(n.wrapping_mul(257))) % blocks;
    ((11 + block / 256) as u8, (block % 256) as u8)
}

fn sshd_config(addr: &str, host_key: &Path, pid_file: &Path, authorized: &Path, log_level: &str) -> String {
    format!(
        "\
ListenAddress {addr}:{SSH_PORT}
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {authorized}
# keys live in a world-readable temp dir
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
LogLevel {log_level}
# the default sntrup761 exchange costs ~0.1 s of CPU per connection here; nistp256 last,
# for net-ssh (Capistrano) without the x25519 gem, which Debian does not package: clients
# that know curve25519 prefer it
KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256
# bash skips ~/.bashrc (and its slow pyenv init) when SHLVL says it is nested
SetEnv SHLVL=1
PrintMotd no
# tests open many connections at once
MaxStartups 100:30:200
",
        host_key = host_key.display(),
        pid_file = pid_file.display(),
        authorized = authorized.display(),
    )
}

fn keygen(path: &Path, comment: &str) -> Result<(), String> {
    let keygen = find_tool("ssh-keygen").ok_or("`ssh-keygen` is not installed (apt-get install -y openssh-client)")?;
    let output = Command::new(keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ssh-keygen: {e}"))?;
    if !output.status.success() {
        return Err(format!("ssh-keygen failed for {}: {}", path.display(), String::from_utf8_lossy(&output.stderr)));
    }
    Ok(())
}

/// sshd refuses to start without its privilege separation directory, which a fresh
/// machine only has once something created it.
fn ensure_privsep_dir() -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = Path::new("/run/sshd");
    if !dir.is_dir() {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create /run/sshd: {e}"))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("cannot chmod /run/sshd: {e}"))?;
    }
    Ok(())
}

fn current_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            Command::new("id").arg("-un").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "root".to_string())
}
