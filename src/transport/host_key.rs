//! Host key verification against `known_hosts`, in the three modes of
//! `host_key_checking`; the verdict is the russh handler's answer to the server's key.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use russh::client;
use russh::keys::{HashAlg, PublicKey, PublicKeyOrCertificate};

use super::TransportError;
use crate::text::lower_first;

/// What to do with a server host key that is not (or differently) in known_hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostKeyChecking {
    /// Unknown or changed keys are errors.
    #[default]
    Strict,
    /// Unknown keys are recorded in known_hosts; changed keys are errors.
    AcceptNew,
    /// Any key is accepted, with a warning on stderr.
    Off,
}

/// Where a connection's notices for the operator go (a key learned with `accept-new`,
/// host key checking turned off): transport prints nothing itself.
pub type Notices = Arc<dyn Fn(String) + Send + Sync>;

pub(super) fn handshake_error(e: HandlerError, name: &str) -> TransportError {
    match e {
        HandlerError::Rejected(e) => *e,
        HandlerError::Ssh(russh::Error::Disconnect) => TransportError::Handshake {
            target: name.to_string(),
            reason: "the server closed the connection (see its log; too many connections at once for `MaxStartups`?)"
                .into(),
        },
        HandlerError::Ssh(e) => {
            TransportError::Handshake { target: name.to_string(), reason: lower_first(&e.to_string()) }
        }
    }
}

#[derive(Debug)]
pub(super) enum HandlerError {
    Ssh(russh::Error),
    /// Boxed: a host key verdict is rare and the error is large.
    Rejected(Box<TransportError>),
}

impl From<russh::Error> for HandlerError {
    fn from(e: russh::Error) -> Self {
        HandlerError::Ssh(e)
    }
}

/// Serializes appends to known_hosts, so connecting to many new hosts at once with
/// `accept-new` cannot interleave lines.
static KNOWN_HOSTS_WRITE: Mutex<()> = Mutex::new(());

pub(super) struct HostKeyVerifier {
    pub target: String,
    pub host: String,
    pub port: u16,
    pub pattern: String,
    pub known_hosts: PathBuf,
    pub mode: HostKeyChecking,
    pub notices: Option<Notices>,
}

impl HostKeyVerifier {
    fn notice(&self, text: String) {
        if let Some(notices) = &self.notices {
            notices(text);
        }
    }

    fn verify(&self, key: &PublicKey) -> Result<(), TransportError> {
        let fingerprint = format!("{} {}", key.algorithm().as_str(), key.fingerprint(HashAlg::Sha256));
        if self.mode == HostKeyChecking::Off {
            self.notice(format!(
                "warning: host key checking is off for `{}` ({fingerprint}); the connection is not protected against a man-in-the-middle",
                self.target
            ));
            return Ok(());
        }
        match self.check(key) {
            Ok(true) => Ok(()),
            Ok(false) if self.mode == HostKeyChecking::AcceptNew => self.learn(key, &fingerprint),
            Ok(false) => Err(TransportError::HostKeyUnknown {
                target: self.target.clone(),
                host: self.host.clone(),
                port: self.port,
                known_hosts: self.known_hosts.clone(),
                fingerprint,
            }),
            Err(russh::keys::Error::KeyChanged { line }) => Err(TransportError::HostKeyChanged {
                target: self.target.clone(),
                host_pattern: self.pattern.clone(),
                known_hosts: self.known_hosts.clone(),
                line,
                fingerprint,
            }),
            Err(e) => Err(self.known_hosts_error(&e.to_string())),
        }
    }

    fn check(&self, key: &PublicKey) -> Result<bool, russh::keys::Error> {
        // russh reads the file by path, blocking and unbounded: a FIFO or a device there
        // is refused first (a missing file is an empty known_hosts, as for russh).
        match crate::bounded::check(&self.known_hosts, crate::bounded::MAX_KNOWN_HOSTS_BYTES) {
            Err(e) if !e.is_missing() => return Err(russh::keys::Error::IO(std::io::Error::other(e.reason()))),
            _ => {}
        }
        russh::keys::check_known_hosts_path(&self.host, self.port, key, &self.known_hosts)
    }

    fn learn(&self, key: &PublicKey, fingerprint: &str) -> Result<(), TransportError> {
        let _guard = KNOWN_HOSTS_WRITE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Another connection to the same host may have recorded it meanwhile.
        if matches!(self.check(key), Ok(true)) {
            return Ok(());
        }
        russh::keys::known_hosts::learn_known_hosts_path(&self.host, self.port, key, &self.known_hosts)
            .map_err(|e| self.known_hosts_error(&e.to_string()))?;
        self.notice(format!(
            "notice: added the host key of `{}` ({fingerprint}) to `{}`",
            self.target,
            self.known_hosts.display()
        ));
        Ok(())
    }

    fn known_hosts_error(&self, reason: &str) -> TransportError {
        TransportError::KnownHosts {
            target: self.target.clone(),
            path: self.known_hosts.clone(),
            reason: lower_first(reason),
        }
    }
}

impl client::Handler for HostKeyVerifier {
    type Error = HandlerError;

    async fn check_server_key(&mut self, server_public_key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                self.verify(key).map(|()| true).map_err(|e| HandlerError::Rejected(Box::new(e)))
            }
            // Certificate host-key algorithms are never advertised, so a server that
            // sends one anyway is not following the negotiation.
            PublicKeyOrCertificate::Certificate(_) => {
                Err(HandlerError::Rejected(Box::new(TransportError::Handshake {
                    target: self.target.clone(),
                    reason: "the server presented a host certificate, which was not asked for".into(),
                })))
            }
        }
    }
}
