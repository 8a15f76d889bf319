use std::borrow::Cow;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use russh::client::{self, AuthResult, Handle, Msg};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh::{Channel, ChannelMsg, Disconnect, MethodKind, Preferred, Sig};
use tokio::net::TcpStream;
use tokio::sync::mpsc::Sender;

use super::host_key::{HostKeyChecking, HostKeyVerifier, Notices, handshake_error};
use super::{Exit, LineSplitter, OutputLine, Stream, TransportError};
use crate::text::lower_first;

/// The remote login shell prints this with its own pid before running the command.
/// sshd starts every session command in a new session (`setsid`), so that pid is also
/// the process group of everything the command starts: a timeout can kill the whole
/// group, where closing the channel or an SSH `signal` request would leave children
/// running.
const PGID_MARKER: &str = "__planrun_pgid__ ";

/// How long the kill of a timed-out command may take before we give up on it.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// A dead peer (host powered off, network gone) is noticed after about
/// `KEEPALIVE_INTERVAL * KEEPALIVE_MAX` instead of hanging a step forever; commands
/// may legitimately print nothing for a long time, so there is no inactivity timeout.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
const KEEPALIVE_MAX: usize = 3;

/// Everything needed to open the SSH connection to one host.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// Address or host name, as written in the plan (and as looked up in known_hosts).
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Keys offered after the agent's, in order. Empty: `~/.ssh/id_ed25519`, then
    /// `~/.ssh/id_rsa`, where they exist.
    pub identity_files: Vec<PathBuf>,
    /// Only `identity_files` are offered, not the agent's keys (`IdentitiesOnly yes`):
    /// an agent holding many keys would otherwise use up the server's `MaxAuthTries`.
    pub identities_only: bool,
    pub known_hosts: PathBuf,
    pub host_key_checking: HostKeyChecking,
    /// Applies to the TCP connect (or the jump host's channel) plus the SSH handshake,
    /// and to each authentication exchange (not to a passphrase prompt).
    pub connect_timeout: Duration,
    /// The host this one is reached through, by a `direct-tcpip` channel of its
    /// connection; it may itself sit behind another.
    pub jump: Option<Box<SshTarget>>,
}

impl SshTarget {
    /// A target with the defaults of `ssh`: port 22, `~/.ssh/known_hosts`, strict host
    /// key checking, keys from ssh-agent or `~/.ssh`, and a 10 s connect timeout.
    pub fn new(host: impl Into<String>, user: impl Into<String>) -> Self {
        SshTarget {
            host: host.into(),
            port: 22,
            user: user.into(),
            identity_files: Vec::new(),
            identities_only: false,
            known_hosts: home_dir().join(".ssh").join("known_hosts"),
            host_key_checking: HostKeyChecking::Strict,
            connect_timeout: Duration::from_secs(10),
            jump: None,
        }
    }

    /// `user@host:port`, the name used in every message about this host.
    pub fn display_name(&self) -> String {
        if self.host.contains(':') {
            format!("{}@[{}]:{}", self.user, self.host, self.port)
        } else {
            format!("{}@{}:{}", self.user, self.host, self.port)
        }
    }

    /// The host as known_hosts and `ssh-keygen -R` spell it.
    fn known_hosts_pattern(&self) -> String {
        if self.port == 22 { self.host.clone() } else { format!("[{}]:{}", self.host, self.port) }
    }
}

/// One authenticated SSH connection. Every `exec` opens its own channel on it, so
/// steps on one host may run concurrently (up to the server's `MaxSessions`, 10 by
/// default in OpenSSH).
pub struct SshSession {
    // Shared with the kill that a cancelled `exec` leaves behind (see `RemoteOutput`);
    // replaced when `ensure_alive` reconnects.
    handle: std::sync::RwLock<Arc<Handle<HostKeyVerifier>>>,
    target: String,
    // How to connect again.
    spec: SshTarget,
    notices: Option<Notices>,
    // The jump host's connection carries this one: it must live as long as this does.
    via: Option<Arc<SshSession>>,
}

/// How long the round trip of `ensure_alive` may take before the connection counts as gone.
const ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

impl std::fmt::Debug for SshSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshSession").field("target", &self.target).finish_non_exhaustive()
    }
}

/// A jump host's connection, or why it could not be opened (shared by every host
/// behind it, so the error is kept as text).
type JumpCell = Arc<tokio::sync::OnceCell<Result<Arc<SshSession>, String>>>;

/// Opens SSH connections for a run: one connection per jump host, shared by all the
/// hosts behind it, however many connect at once.
#[derive(Default)]
pub struct Connector {
    jumps: tokio::sync::Mutex<HashMap<String, JumpCell>>,
    notices: Option<Notices>,
}

impl Connector {
    /// A connector whose notices are dropped.
    pub fn new() -> Self {
        Connector::default()
    }

    pub fn with_notices(notices: Notices) -> Self {
        Connector { notices: Some(notices), ..Connector::default() }
    }

    /// Connects to `target`, through its jump hosts if it has any.
    pub async fn connect(&self, target: &SshTarget) -> Result<SshSession, TransportError> {
        let via = match &target.jump {
            Some(jump) => Some(self.jump(jump).await.map_err(|reason| TransportError::Jump {
                target: target.display_name(),
                jump: jump.display_name(),
                reason,
            })?),
            None => None,
        };
        SshSession::open(target, via, self.notices.clone()).await
    }

    /// Boxed: a jump host may itself be behind a jump host.
    fn jump<'a>(
        &'a self,
        jump: &'a SshTarget,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Arc<SshSession>, String>> + Send + 'a>> {
        Box::pin(async move {
            // Keyed by every setting, not the name alone: two plans' worth of settings
            // for one bastion (another user, another key) are two connections.
            let cell = self.jumps.lock().await.entry(format!("{jump:?}")).or_default().clone();
            cell.get_or_init(|| async { self.connect(jump).await.map(Arc::new).map_err(|e| e.to_string()) })
                .await
                .clone()
        })
    }
}

impl SshSession {
    /// Connects to `target` on its own, opening its jump hosts' connections too.
    pub async fn connect(target: &SshTarget) -> Result<SshSession, TransportError> {
        Connector::new().connect(target).await
    }

    async fn open(
        target: &SshTarget,
        via: Option<Arc<SshSession>>,
        notices: Option<Notices>,
    ) -> Result<SshSession, TransportError> {
        let name = target.display_name();
        let notices_for_reconnect = notices.clone();
        let verifier = HostKeyVerifier {
            target: name.clone(),
            host: target.host.clone(),
            port: target.port,
            pattern: target.known_hosts_pattern(),
            known_hosts: target.known_hosts.clone(),
            mode: target.host_key_checking,
            notices,
        };
        let handshake = async {
            match &via {
                Some(jump) => {
                    let stream = jump.direct_tcpip(&target.host, target.port).await?;
                    client::connect_stream(client_config(), stream, verifier).await
                }
                None => {
                    let stream = open_tcp(target, &name).await?;
                    client::connect_stream(client_config(), stream, verifier).await
                }
            }
            .map_err(|e| handshake_error(e, &name))
        };
        let mut handle = tokio::time::timeout(target.connect_timeout, handshake)
            .await
            .map_err(|_| TransportError::ConnectTimeout { target: name.clone(), after: target.connect_timeout })??;

        authenticate(&mut handle, target, &name).await?;
        Ok(SshSession {
            handle: std::sync::RwLock::new(Arc::new(handle)),
            target: name,
            spec: target.clone(),
            notices: notices_for_reconnect,
            via,
        })
    }

    /// A byte stream to `host:port` as seen from this server (`ssh -J`'s way): the
    /// server connects, so `host` may be a private address only it can reach.
    async fn direct_tcpip(&self, host: &str, port: u16) -> Result<russh::ChannelStream<Msg>, TransportError> {
        let channel = self.handle().channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0).await.map_err(
            |e| match e {
                russh::Error::ChannelOpenFailure(reason) => TransportError::Channel {
                    target: self.target.clone(),
                    reason: format!(
                        "the jump host refused to forward to `{host}:{port}` ({reason:?}); is `AllowTcpForwarding` on there, and can it reach that address?"
                    ),
                },
                other => self.channel_error(other),
            },
        )?;
        Ok(channel.into_stream())
    }

    fn handle(&self) -> Arc<Handle<HostKeyVerifier>> {
        self.handle.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// A round trip to the server; when the connection turns out to be gone (an idle
    /// connection cut by a firewall, a restarted sshd), one new connection replaces it.
    /// `Ok(true)`: it reconnected.
    pub async fn ensure_alive(&self) -> Result<bool, TransportError> {
        let handle = self.handle();
        if !handle.is_closed() && matches!(tokio::time::timeout(ALIVE_TIMEOUT, handle.send_ping()).await, Ok(Ok(()))) {
            return Ok(false);
        }
        let fresh = SshSession::open(&self.spec, self.via.clone(), self.notices.clone()).await?;
        let new_handle = fresh.handle();
        *self.handle.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = new_handle;
        Ok(true)
    }

    /// `user@host:port`.
    pub fn target(&self) -> &str {
        &self.target
    }

    pub(super) async fn exec(
        &self,
        command: &str,
        timeout: Option<Duration>,
        lines: Sender<OutputLine>,
    ) -> Result<Exit, TransportError> {
        let mut output = RemoteOutput::new(lines, self.handle());
        let mut channel = None;
        let run = self.run(command, &mut channel, &mut output);
        let outcome = match timeout {
            Some(limit) => tokio::time::timeout(limit, run).await.ok(),
            None => Some(run.await),
        };
        match outcome {
            Some(result) => {
                output.finish().await;
                result
            }
            None => {
                let killed = match (output.pgid, channel.as_mut()) {
                    (Some(pgid), Some(open)) => {
                        // What the command still prints is read and dropped meanwhile: a
                        // channel left full (its reader was waiting for the consumer)
                        // holds up the whole connection, the `kill` channel too.
                        let handle = self.handle();
                        let kill = kill_group(&handle, pgid);
                        tokio::pin!(kill);
                        loop {
                            tokio::select! {
                                killed = &mut kill => break killed,
                                message = open.wait() => if message.is_none() { break (&mut kill).await },
                            }
                        }
                    }
                    (Some(pgid), None) => kill_group(&self.handle(), pgid).await,
                    (None, _) => false,
                };
                if let (false, Some(channel)) = (killed, channel.as_ref()) {
                    // Without the process group (the marker not seen yet, or no
                    // channel left for `kill`), at least the shell goes: OpenSSH 7.9+
                    // honours `signal` requests.
                    let _ = channel.signal(Sig::KILL).await;
                }
                if let Some(channel) = channel {
                    let _ = channel.close().await;
                }
                output.finish().await;
                Err(TransportError::Timeout { target: self.target.clone(), after: timeout.unwrap_or_default() })
            }
        }
    }

    /// Runs the command to completion. The channel is handed out through `slot` so the
    /// caller can still close it when this future is dropped on timeout.
    async fn run(
        &self,
        command: &str,
        slot: &mut Option<Channel<Msg>>,
        output: &mut RemoteOutput,
    ) -> Result<Exit, TransportError> {
        let channel = self.handle().channel_open_session().await.map_err(|e| self.channel_error(e))?;
        let channel = slot.insert(channel);
        // A newline, not `;`, so the command is parsed exactly as if it came alone
        // (a leading comment or a here-document keeps working).
        channel.exec(true, format!("echo {PGID_MARKER}$$\n{command}")).await.map_err(|e| self.channel_error(e))?;
        // Like stdin from /dev/null locally: a command that reads stdin (a prompt)
        // gets EOF instead of hanging until its timeout.
        channel.eof().await.map_err(|e| self.channel_error(e))?;

        let mut code = None;
        let mut signal = None;
        let mut closed = false;
        while let Some(msg) = channel.wait().await {
            match msg {
                // Awaited: while the consumer is behind, the channel is not read, and
                // the server stops sending once the SSH window is used up.
                ChannelMsg::Data { data } => output.stdout(&data).await,
                ChannelMsg::ExtendedData { data, ext: 1 } => output.stderr(&data).await,
                ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => signal = Some(sig_name(&signal_name)),
                ChannelMsg::Failure => {
                    return Err(TransportError::Channel {
                        target: self.target.clone(),
                        reason: "the server refused to execute the command (a `ForceCommand` or a restricted key?)"
                            .into(),
                    });
                }
                ChannelMsg::Close => {
                    closed = true;
                    break;
                }
                _ => {}
            }
        }
        if !closed && code.is_none() && signal.is_none() {
            return Err(TransportError::ConnectionLost {
                target: self.target.clone(),
                reason: "the connection ended while the command was running; it may still be running or may have been killed".into(),
            });
        }
        Ok(Exit { code, signal })
    }

    fn channel_error(&self, e: russh::Error) -> TransportError {
        if self.handle().is_closed() {
            TransportError::ConnectionLost { target: self.target.clone(), reason: lower_first(&e.to_string()) }
        } else {
            TransportError::Channel {
                target: self.target.clone(),
                reason: match e {
                    russh::Error::ChannelOpenFailure(reason) => format!(
                        "the server refused a new channel ({reason:?}); too many commands at once for its `MaxSessions`?"
                    ),
                    other => lower_first(&other.to_string()),
                },
            }
        }
    }

    pub async fn close(self) {
        let _ = self.handle().disconnect(Disconnect::ByApplication, "", "en").await;
        // The last host behind a jump host closes the jump connection too, so its
        // server sees an orderly goodbye rather than a dropped socket.
        if let Some(via) = self.via.and_then(|via| Arc::try_unwrap(via).ok()) {
            Box::pin(via.close()).await;
        }
    }
}

/// Kills the process group of a remote command through a second channel and waits
/// for that to finish, so the command is gone when `exec` returns. False when it could
/// not be done (connection gone, no channel available).
async fn kill_group(handle: &Handle<HostKeyVerifier>, pgid: u32) -> bool {
    let kill = async {
        let mut channel = handle.channel_open_session().await.ok()?;
        channel.exec(true, format!("kill -9 -{pgid} 2>/dev/null; true")).await.ok()?;
        let _ = channel.eof().await;
        let mut status = None;
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        (status == Some(0)).then_some(())
    };
    matches!(tokio::time::timeout(KILL_TIMEOUT, kill).await, Ok(Some(())))
}

fn client_config() -> Arc<client::Config> {
    // curve25519 first: the hybrid post-quantum exchanges cost noticeably more CPU
    // per connection, which adds up over a fleet; the rest of russh's safe defaults
    // (and the ext-info/strict-kex markers) follow.
    let mut kex = vec![russh::kex::CURVE25519, russh::kex::CURVE25519_PRE_RFC_8731];
    kex.extend(Preferred::DEFAULT.kex.iter().filter(|name| !kex.contains(name)).copied().collect::<Vec<_>>());
    Arc::new(client::Config {
        preferred: Preferred { kex: Cow::Owned(kex), ..Preferred::DEFAULT },
        keepalive_interval: Some(KEEPALIVE_INTERVAL),
        keepalive_max: KEEPALIVE_MAX,
        // Commands are short request/response exchanges; Nagle would delay them.
        nodelay: true,
        ..Default::default()
    })
}

async fn open_tcp(target: &SshTarget, name: &str) -> Result<TcpStream, TransportError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|e| TransportError::Resolve { target: name.to_string(), reason: lower_first(&e.to_string()) })?
        .collect();
    let mut last_error = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(match last_error {
        None => TransportError::Resolve { target: name.to_string(), reason: "the name has no addresses".into() },
        Some(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            TransportError::ConnectionRefused { target: name.to_string(), port: target.port }
        }
        Some(e) => TransportError::Connect { target: name.to_string(), reason: lower_first(&e.to_string()) },
    })
}

/// What authentication attempts are reported when all fail.
#[derive(Default)]
struct AuthLog {
    tried: Vec<String>,
    accepted: Vec<String>,
    /// Keys already offered, by `key_description`.
    offered: std::collections::HashSet<String>,
}

impl AuthLog {
    fn record(&mut self, what: String, result: &AuthResult) {
        self.tried.push(what);
        if let AuthResult::Failure { remaining_methods, .. } = result {
            self.accepted = remaining_methods.iter().map(|m: &MethodKind| <&str>::from(m).to_string()).collect();
        }
    }
}

async fn authenticate(
    handle: &mut Handle<HostKeyVerifier>,
    target: &SshTarget,
    name: &str,
) -> Result<(), TransportError> {
    // OpenSSH's order: the agent's keys, then the identity files (those the agent
    // already offered are not offered twice).
    let mut log = AuthLog::default();
    if !target.identities_only && try_agent(handle, target, name, &mut log).await? {
        return Ok(());
    }
    let explicit = !target.identity_files.is_empty();
    let files = if explicit { target.identity_files.clone() } else { default_identity_files() };
    // The plan's one key: when it cannot be used, that is the answer, not a line of a list.
    let sole = explicit && target.identities_only && files.len() == 1;
    for path in files {
        if !sole && !path.exists() {
            if explicit {
                log.tried.push(format!("`{}` (skipped: the file does not exist)", path.display()));
            }
            continue;
        }
        match load_identity(&path).await {
            Ok(key) => {
                if log.offered.contains(&key_description(key.public_key())) {
                    continue;
                }
                if try_key(handle, target, name, &path, key, &mut log).await? {
                    return Ok(());
                }
            }
            Err(e) if sole => return Err(e),
            Err(e) => log.tried.push(format!("`{}` (skipped: {e})", path.display())),
        }
    }
    Err(TransportError::AuthFailed { target: name.to_string(), tried: log.tried, accepted: log.accepted })
}

fn default_identity_files() -> Vec<PathBuf> {
    let ssh = home_dir().join(".ssh");
    vec![ssh.join("id_ed25519"), ssh.join("id_rsa")]
}

async fn try_key(
    handle: &mut Handle<HostKeyVerifier>,
    target: &SshTarget,
    name: &str,
    path: &Path,
    key: Arc<PrivateKey>,
    log: &mut AuthLog,
) -> Result<bool, TransportError> {
    log.offered.insert(key_description(key.public_key()));
    let what = format!("`{}` ({})", path.display(), key_description(key.public_key()));
    let hash = rsa_hash(handle, &key.public_key().clone()).await;
    let attempt = handle.authenticate_publickey(&target.user, PrivateKeyWithHashAlg::new(key, hash));
    let result = within(target, name, attempt).await?.map_err(|e| auth_error(e, name))?;
    let ok = result.success();
    log.record(what, &result);
    Ok(ok)
}

async fn try_agent(
    handle: &mut Handle<HostKeyVerifier>,
    target: &SshTarget,
    name: &str,
    log: &mut AuthLog,
) -> Result<bool, TransportError> {
    let Some(socket) = std::env::var_os("SSH_AUTH_SOCK") else {
        return Ok(false);
    };
    let socket = PathBuf::from(socket);
    let mut agent = match AgentClient::connect_uds(&socket).await {
        Ok(agent) => agent,
        Err(e) => {
            log.tried.push(format!(
                "ssh-agent at `{}` (unreachable: {})",
                socket.display(),
                lower_first(&e.to_string())
            ));
            return Ok(false);
        }
    };
    let identities = match agent.request_identities().await {
        Ok(ids) => ids,
        Err(e) => {
            log.tried.push(format!(
                "ssh-agent at `{}` (cannot list keys: {})",
                socket.display(),
                lower_first(&e.to_string())
            ));
            return Ok(false);
        }
    };
    if identities.is_empty() {
        log.tried.push("ssh-agent (holds no keys)".into());
    }
    for identity in identities {
        // Agent-held certificates would need the server's CA policy; plain keys cover
        // the deploy-key setups planrun is for.
        let AgentIdentity::PublicKey { key, comment } = identity else {
            continue;
        };
        log.offered.insert(key_description(&key));
        let what = format!("ssh-agent key `{comment}` ({})", key_description(&key));
        let hash = rsa_hash(handle, &key).await;
        let attempt = handle.authenticate_publickey_with(&target.user, key, hash, &mut agent);
        match within(target, name, attempt).await? {
            Ok(result) => {
                if result.success() {
                    return Ok(true);
                }
                log.record(what, &result);
            }
            Err(e) => log.tried.push(format!("{what} (the agent did not sign: {})", lower_first(&e.to_string()))),
        }
    }
    Ok(false)
}

/// RSA keys need the SHA-2 signature variant the server supports; other keys have one.
async fn rsa_hash(handle: &Handle<HostKeyVerifier>, key: &PublicKey) -> Option<HashAlg> {
    if !key.algorithm().is_rsa() {
        return None;
    }
    handle.best_supported_rsa_hash().await.ok().flatten().flatten()
}

/// Bounds one authentication exchange with the server by the connect timeout.
async fn within<T>(target: &SshTarget, name: &str, attempt: impl Future<Output = T>) -> Result<T, TransportError> {
    tokio::time::timeout(target.connect_timeout, attempt).await.map_err(|_| TransportError::Handshake {
        target: name.to_string(),
        reason: format!(
            "the server did not answer an authentication request within {}",
            humantime::format_duration(target.connect_timeout)
        ),
    })
}

fn auth_error(e: russh::Error, name: &str) -> TransportError {
    TransportError::ConnectionLost {
        target: name.to_string(),
        reason: format!("during authentication: {}", lower_first(&e.to_string())),
    }
}

fn key_description(key: &PublicKey) -> String {
    format!("{} {}", key.algorithm().as_str(), key.fingerprint(HashAlg::Sha256))
}

/// Decrypted keys, so a passphrase is asked once per run, not once per host.
static KEY_CACHE: OnceLock<tokio::sync::Mutex<HashMap<PathBuf, Arc<PrivateKey>>>> = OnceLock::new();

async fn load_identity(path: &Path) -> Result<Arc<PrivateKey>, TransportError> {
    // Held across the prompt: hosts connecting in parallel wait for the one prompt
    // instead of each asking.
    let mut cache = KEY_CACHE.get_or_init(Default::default).lock().await;
    if let Some(key) = cache.get(path) {
        return Ok(key.clone());
    }
    let text = match crate::bounded::read_to_string(path, crate::bounded::MAX_IDENTITY_BYTES) {
        Ok(text) => text,
        Err(e) if e.is_missing() => return Err(key_error(path, "the file does not exist")),
        Err(e) => return Err(key_error(path, &e.reason())),
    };
    let key = match russh::keys::decode_secret_key(&text, None) {
        Ok(key) => key,
        Err(russh::keys::Error::KeyIsEncrypted) => {
            if !std::io::stdin().is_terminal() {
                return Err(TransportError::KeyEncrypted { path: path.to_path_buf() });
            }
            let owned = path.to_path_buf();
            tokio::task::spawn_blocking(move || decrypt_with_prompt(&owned, &text))
                .await
                .map_err(|e| key_error(path, &e.to_string()))??
        }
        Err(e) => return Err(key_error(path, &e.to_string())),
    };
    let key = Arc::new(key);
    cache.insert(path.to_path_buf(), key.clone());
    Ok(key)
}

fn decrypt_with_prompt(path: &Path, text: &str) -> Result<PrivateKey, TransportError> {
    let passphrase = rpassword::prompt_password(format!("enter passphrase for key `{}`: ", path.display()))
        .map_err(|e| key_error(path, &format!("cannot read the passphrase: {e}")))?;
    russh::keys::decode_secret_key(text, Some(&passphrase))
        .map_err(|e| key_error(path, &format!("cannot decrypt it (wrong passphrase?): {e}")))
}

fn key_error(path: &Path, reason: &str) -> TransportError {
    TransportError::KeyLoad { path: path.to_path_buf(), reason: lower_first(reason) }
}

fn home_dir() -> PathBuf {
    std::env::home_dir().unwrap_or_else(|| PathBuf::from("/"))
}

fn sig_name(sig: &Sig) -> String {
    match sig {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(name) => name,
    }
    .to_string()
}

/// Splits channel data into lines and picks the process-group marker out of stdout.
///
/// Also the command's kill switch when `exec` is cancelled (its future dropped, as on
/// a second Ctrl-C): russh does not close a dropped channel, and sshd would let the
/// command run on, so dropping this before `finish` kills the remote process group.
struct RemoteOutput {
    lines: Sender<OutputLine>,
    stdout: LineSplitter,
    stderr: LineSplitter,
    pgid: Option<u32>,
    kill_on_drop: Option<Arc<Handle<HostKeyVerifier>>>,
}

impl RemoteOutput {
    fn new(lines: Sender<OutputLine>, handle: Arc<Handle<HostKeyVerifier>>) -> Self {
        RemoteOutput {
            lines,
            stdout: LineSplitter::new(Stream::Stdout),
            stderr: LineSplitter::new(Stream::Stderr),
            pgid: None,
            kill_on_drop: Some(handle),
        }
    }

    async fn stdout(&mut self, data: &[u8]) {
        for line in self.stdout.push(data) {
            // Scanned for (not just the first line) because a noisy `.bashrc` may print
            // before it.
            if self.pgid.is_none()
                && let Some(pid) = line.line.strip_prefix(PGID_MARKER)
                && let Ok(pid) = pid.trim().parse()
            {
                self.pgid = Some(pid);
                continue;
            }
            let _ = self.lines.send(line).await;
        }
    }

    async fn stderr(&mut self, data: &[u8]) {
        for line in self.stderr.push(data) {
            let _ = self.lines.send(line).await;
        }
    }

    /// Flushes partial lines; the command is over (or was killed), so disarms the kill.
    async fn finish(&mut self) {
        self.kill_on_drop = None;
        for line in [self.stdout.finish(), self.stderr.finish()].into_iter().flatten() {
            let _ = self.lines.send(line).await;
        }
    }
}

impl Drop for RemoteOutput {
    fn drop(&mut self) {
        let (Some(handle), Some(pgid)) = (self.kill_on_drop.take(), self.pgid) else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                kill_group(&handle, pgid).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn marker_is_removed_and_pgid_kept() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(crate::transport::LINES_AHEAD);
        let mut out = RemoteOutput {
            lines: tx,
            stdout: LineSplitter::new(Stream::Stdout),
            stderr: LineSplitter::new(Stream::Stderr),
            pgid: None,
            kill_on_drop: None,
        };
        out.stdout(b"motd\n__planrun_pgid__ 4242\nhello\n__planrun_pgid__ 1\n").await;
        out.finish().await;
        assert_eq!(out.pgid, Some(4242));
        let mut got = Vec::new();
        while let Ok(line) = rx.try_recv() {
            got.push(line.line);
        }
        // Only the first marker is ours; a later identical line is the command's output.
        assert_eq!(got, ["motd", "hello", "__planrun_pgid__ 1"]);
    }

    #[test]
    fn names_and_patterns() {
        let mut t = SshTarget::new("10.0.0.1", "deploy");
        assert_eq!(t.display_name(), "deploy@10.0.0.1:22");
        assert_eq!(t.known_hosts_pattern(), "10.0.0.1");
        t.port = 2222;
        assert_eq!(t.known_hosts_pattern(), "[10.0.0.1]:2222");
        t.host = "::1".into();
        assert_eq!(t.display_name(), "deploy@[::1]:2222");
    }
}
