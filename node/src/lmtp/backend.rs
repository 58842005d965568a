//! What the LMTP layer needs from the node: resolving recipients and
//! delivering messages durably. The node's core implements [`Backend`];
//! [`crate::lmtp::MemoryBackend`] is the in-memory one used by tests and
//! benchmarks.

use super::reply::Reply;
use std::future::Future;

/// Storage side of the LMTP server.
///
/// Both calls may be made concurrently from many sessions. Implementations
/// write `async fn` for both methods; the futures must be `Send`.
pub trait Backend: Send + Sync + 'static {
    /// What a resolved recipient is for this backend (a user id, a public
    /// key, a target mailbox…). It is kept from RCPT until the delivery.
    type Recipient: Send + Sync + 'static;

    /// RCPT TO: maps `address` (the path without angle brackets and source
    /// route, e.g. `alice+lists@example.org` or `postmaster`) to a
    /// recipient, or refuses it. `declared_size` is the MAIL FROM `SIZE=`
    /// parameter when the client gave one (for a quota check).
    /// [`AddressMap`] does the usual address → user (+detail) mapping.
    fn resolve(
        &self,
        address: &str,
        declared_size: Option<u64>,
    ) -> impl Future<Output = Result<Self::Recipient, RcptError>> + Send;

    /// Delivers one copy to one recipient. `envelope_from` is the
    /// reverse-path without angle brackets (`""` for the null sender);
    /// `message` is the whole message with the trace headers
    /// (`Return-Path`, `Delivered-To`) already at its top, CRLF line ends.
    ///
    /// Must return `Ok` only once the message is durable: the client is
    /// told `250` for this recipient right after. On `Err`, nothing of it
    /// may remain visible (the client will retry a temporary failure).
    fn deliver(
        &self,
        recipient: &Self::Recipient,
        envelope_from: &str,
        message: &[u8],
    ) -> impl Future<Output = Result<(), DeliverError>> + Send;
}

/// Why a recipient is refused at RCPT time.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RcptError {
    /// No such user here: `550 5.1.1`.
    #[error("no such user")]
    UnknownUser,
    /// The address's domain is not served here: `550 5.1.2`.
    #[error("domain not served here")]
    UnknownDomain,
    /// The mailbox is disabled: `550 5.2.1`.
    #[error("mailbox disabled")]
    Disabled,
    /// Over quota (possibly with the declared size): `552 5.2.2`.
    #[error("mailbox over quota")]
    OverQuota,
    /// Cannot decide now (storage busy, user record not replicated yet):
    /// `451 4.3.0`; the client retries later.
    #[error("temporary failure: {0}")]
    Temporary(String),
}

impl RcptError {
    /// The RCPT reply for this error.
    pub fn reply(&self) -> Reply {
        match self {
            RcptError::UnknownUser => Reply::new(550, "5.1.1", "No such user here"),
            RcptError::UnknownDomain => Reply::new(550, "5.1.2", "Domain not served here"),
            RcptError::Disabled => Reply::new(550, "5.2.1", "Mailbox disabled"),
            RcptError::OverQuota => Reply::new(552, "5.2.2", "Mailbox over quota"),
            RcptError::Temporary(m) => {
                Reply::with_text(451, "4.3.0", format!("Temporary failure: {m}"))
            }
        }
    }
}

/// Why a delivery failed. Whatever the error, the message is not stored
/// for that recipient.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeliverError {
    /// Could not make it durable (storage error, flush failed, shutting
    /// down): `451 4.3.0`; the client retries.
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// Over quota: `552 5.2.2`.
    #[error("mailbox over quota")]
    OverQuota,
    /// Too large for this recipient's storage: `552 5.3.4`.
    #[error("message too large")]
    TooLarge,
    /// Refused for good: `554 5.3.0`.
    #[error("rejected: {0}")]
    Permanent(String),
}

impl DeliverError {
    /// The per-recipient reply after DATA for this error.
    pub fn reply(&self) -> Reply {
        match self {
            DeliverError::Temporary(m) => {
                Reply::with_text(451, "4.3.0", format!("Temporary failure, not stored: {m}"))
            }
            DeliverError::OverQuota => Reply::new(552, "5.2.2", "Mailbox over quota"),
            DeliverError::TooLarge => Reply::new(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            ),
            DeliverError::Permanent(m) => {
                Reply::with_text(554, "5.3.0", format!("Delivery refused: {m}"))
            }
        }
    }
}

/// A recipient as the ready-made mapping sees it (the type
/// [`crate::lmtp::MemoryBackend`] uses; other backends may use their own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The address as given in RCPT TO.
    pub address: String,
    /// Login name of the user.
    pub user: String,
    /// Target mailbox from the `+detail`, if any (the backend decides what
    /// to do when no such mailbox exists; INBOX is the usual answer).
    pub mailbox: Option<String>,
}

/// An address mapped by [`AddressMap`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    /// Login name: the local part without its detail (quotes removed).
    pub user: String,
    /// The detail after the separator (`alice+lists` → `lists`), if any
    /// and not empty.
    pub detail: Option<String>,
}

/// Address → user mapping: `user[+detail]@domain` → user name and optional
/// target mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressMap {
    /// Domains served, compared without case. Empty: every domain.
    pub domains: Vec<String>,
    /// Separates the user from the detail (`+`). `None`: no details.
    pub detail_separator: Option<char>,
}

impl Default for AddressMap {
    fn default() -> Self {
        AddressMap {
            domains: Vec::new(),
            detail_separator: Some('+'),
        }
    }
}

impl AddressMap {
    /// A mapping for these domains (empty: any), with `+` details.
    pub fn new(domains: Vec<String>) -> Self {
        AddressMap {
            domains,
            detail_separator: Some('+'),
        }
    }

    /// Maps an address as the LMTP layer passes it to
    /// [`Backend::resolve`]. A bare `postmaster` (RFC 5321 §4.5.1) maps to
    /// the user `postmaster`. The user part keeps its case; the backend
    /// decides whether login names are case-sensitive.
    pub fn map(&self, address: &str) -> Result<Mapped, RcptError> {
        let (local, domain) = split_address(address);
        if let Some(d) = domain {
            let d = d.strip_suffix('.').unwrap_or(d);
            if !self.domains.is_empty() && !self.domains.iter().any(|x| x.eq_ignore_ascii_case(d)) {
                return Err(RcptError::UnknownDomain);
            }
        } else if !local.eq_ignore_ascii_case("postmaster") {
            return Err(RcptError::UnknownUser);
        }
        let local = unquote(local);
        let (user, detail) = match self.detail_separator.and_then(|s| local.split_once(s)) {
            Some((u, d)) => (u.to_string(), (!d.is_empty()).then(|| d.to_string())),
            None => (local, None),
        };
        if user.is_empty() {
            return Err(RcptError::UnknownUser);
        }
        Ok(Mapped { user, detail })
    }
}

/// Splits `local@domain` at the `@` after the local part (a quoted local
/// part may contain `@`).
fn split_address(address: &str) -> (&str, Option<&str>) {
    let bytes = address.as_bytes();
    let mut i = 0;
    if bytes.first() == Some(&b'"') {
        i = 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'"' => {
                    i += 1;
                    break;
                }
                _ => i += 1,
            }
        }
    }
    match address.get(i..).and_then(|r| r.find('@')) {
        Some(p) => (&address[..i + p], Some(&address[i + p + 1..])),
        None => (address, None),
    }
}

/// Removes the quotes and backslash escapes of a quoted local part.
fn unquote(local: &str) -> String {
    let Some(inner) = local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) else {
        return local.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for c in inner.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_users_details_and_domains() {
        let m = AddressMap::new(vec!["example.org".into()]);
        assert_eq!(
            m.map("alice@Example.ORG").unwrap(),
            Mapped {
                user: "alice".into(),
                detail: None
            }
        );
        assert_eq!(
            m.map("alice+lists@example.org").unwrap(),
            Mapped {
                user: "alice".into(),
                detail: Some("lists".into())
            }
        );
        assert_eq!(m.map("alice+@example.org").unwrap().detail, None);
        assert_eq!(m.map("alice@other.org"), Err(RcptError::UnknownDomain));
        assert_eq!(m.map("+x@example.org"), Err(RcptError::UnknownUser));
        assert_eq!(m.map("Postmaster").unwrap().user, "Postmaster");
        assert_eq!(m.map("bob"), Err(RcptError::UnknownUser));
        assert_eq!(
            m.map("\"a@b\\\"c\"@example.org").unwrap().user,
            "a@b\"c".to_string()
        );
        let any = AddressMap {
            domains: vec![],
            detail_separator: None,
        };
        assert_eq!(any.map("a+b@x.y").unwrap().user, "a+b");
    }

    #[test]
    fn error_replies() {
        assert_eq!(RcptError::UnknownUser.reply().code, 550);
        assert_eq!(RcptError::UnknownUser.reply().status, Some("5.1.1"));
        assert_eq!(RcptError::OverQuota.reply().status, Some("5.2.2"));
        let r = DeliverError::Temporary("x".into()).reply();
        assert_eq!((r.code, r.status), (451, Some("4.3.0")));
    }
}
