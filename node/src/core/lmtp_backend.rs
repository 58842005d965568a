//! The LMTP layer's backend over the core: recipients are resolved from the
//! account directory; a message is delivered sealed to the user's public
//! key, so the node needs no password and cannot read it back.

use super::{CoreGone, CoreHandle, CoreState};
use crate::accounts::Accounts;
use crate::lmtp::backend::{AddressMap, Backend, DeliverError, RcptError};
use aerogramme_proto::crypto::PublicKey;
use aerogramme_proto::ids::{MailboxId, UserId};
use aerogramme_proto::replica::{NewMessage, ReplicaError, MAX_MESSAGE_SIZE};

/// A resolved recipient.
#[derive(Clone, Debug)]
pub struct LmtpRecipient {
    user: UserId,
    public: PublicKey,
    /// `+detail` of the address: a mailbox of that name, when the user has
    /// one (only known where the user is logged in), else INBOX.
    detail: Option<String>,
}

/// Delivery into the core.
#[derive(Clone)]
pub struct LmtpBackend {
    core: CoreHandle,
    accounts: Accounts,
    addresses: AddressMap,
}

impl LmtpBackend {
    /// A backend over `core`; `addresses` maps recipients to login names.
    pub fn new(core: CoreHandle, accounts: Accounts, addresses: AddressMap) -> Self {
        LmtpBackend {
            core,
            accounts,
            addresses,
        }
    }
}

impl Backend for LmtpBackend {
    type Recipient = LmtpRecipient;

    async fn resolve(
        &self,
        address: &str,
        declared_size: Option<u64>,
    ) -> Result<LmtpRecipient, RcptError> {
        let mapped = self.addresses.map(address)?;
        if declared_size.is_some_and(|s| s > MAX_MESSAGE_SIZE as u64) {
            return Err(RcptError::OverQuota);
        }
        let accounts = self.accounts.clone();
        let name = mapped.user.to_ascii_lowercase();
        let found = tokio::task::spawn_blocking(move || accounts.find(&name))
            .await
            .map_err(|e| RcptError::Temporary(e.to_string()))?
            .map_err(|e| RcptError::Temporary(e.to_string()))?;
        match found {
            Some((user, _, keys)) => Ok(LmtpRecipient {
                user,
                public: keys.public,
                detail: mapped.detail,
            }),
            None => Err(RcptError::UnknownUser),
        }
    }

    async fn deliver(
        &self,
        rcpt: &LmtpRecipient,
        _envelope_from: &str,
        message: &[u8],
    ) -> Result<(), DeliverError> {
        if message.len() > MAX_MESSAGE_SIZE {
            return Err(DeliverError::TooLarge);
        }
        let rcpt = rcpt.clone();
        let raw = message.to_vec();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.core
            .run(move |st| {
                let user = rcpt.user;
                let mailbox = rcpt
                    .detail
                    .as_deref()
                    .and_then(|d| st.replica.lookup(&user, d).ok())
                    .unwrap_or_else(|| MailboxId::inbox_of(&user));
                let now = CoreState::now();
                let msg = NewMessage {
                    raw: &raw,
                    flags: Vec::new(),
                    internal_date_ms: now as i64,
                };
                match st
                    .replica
                    .deliver(now, &mut st.rng, user, &rcpt.public, mailbox, msg)
                {
                    // 250 as soon as the sealed message is durable: its UID
                    // comes from the ledger later (a node that holds the
                    // keys shows it then), and never holds up the MTA.
                    Ok(_ticket) => st.after_flush(move |flushed| {
                        let _ = tx.send(flushed.map_err(DeliverError::Temporary));
                    }),
                    Err(e) => {
                        let e = match e {
                            ReplicaError::TooLarge => DeliverError::TooLarge,
                            other => DeliverError::Temporary(other.to_string()),
                        };
                        st.after_flush(move |_| {
                            let _ = tx.send(Err(e));
                        });
                    }
                }
            })
            .map_err(|e: CoreGone| DeliverError::Temporary(e.to_string()))?;
        rx.await
            .map_err(|_| DeliverError::Temporary(CoreGone.to_string()))?
    }
}
