//! An in-memory [`Backend`]: a single-node store with no persistence, used
//! by the IMAP tests and as a reference for what the trait means. All users'
//! sessions share one state; changes are broadcast to every session that
//! selected the mailbox.

use super::backend::*;
use super::summary::Summary;
use aerogramme_proto::ids::MailboxId;
use aerogramme_proto::mailbox::tree::validate_name;
use aerogramme_proto::mailbox::{Flag, SpecialUse};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

/// Capacity of each mailbox's event channel; a slower session resyncs.
const EVENT_CAPACITY: usize = 1024;

/// One event as a batch of its own (this backend sends them one by one).
fn one(ev: Event) -> Events {
    Arc::from([ev])
}

/// Largest message accepted.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// The in-memory store. Cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct MemoryBackend {
    users: Arc<Mutex<HashMap<String, UserEntry>>>,
}

/// Password and account of a user.
type UserEntry = (Vec<u8>, Arc<Mutex<Account>>);

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a user with an empty INBOX (replaces an existing one).
    pub fn add_user(&self, name: &str, password: &str) {
        let mut acc = Account {
            next_uidvalidity: 1_700_000_000,
            ..Default::default()
        };
        acc.create("INBOX", None).ok();
        lock(&self.users).insert(
            name.to_owned(),
            (password.as_bytes().to_vec(), Arc::new(Mutex::new(acc))),
        );
    }

    /// A user's handle without a password (for tests that set up data).
    pub fn user(&self, name: &str) -> Option<MemoryMailboxes> {
        lock(&self.users)
            .get(name)
            .map(|(_, a)| MemoryMailboxes { account: a.clone() })
    }
}

impl Backend for MemoryBackend {
    type Mailboxes = MemoryMailboxes;

    async fn authenticate(
        &self,
        user: &str,
        password: &[u8],
        _peer: SocketAddr,
    ) -> Result<MemoryMailboxes, AuthError> {
        let users = lock(&self.users);
        match users.get(user) {
            Some((pw, acc)) if pw.as_slice() == password => Ok(MemoryMailboxes {
                account: acc.clone(),
            }),
            _ => Err(AuthError::InvalidCredentials),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A user's mailboxes in the in-memory store.
#[derive(Clone)]
pub struct MemoryMailboxes {
    account: Arc<Mutex<Account>>,
}

#[derive(Default)]
struct Account {
    boxes: BTreeMap<MailboxId, MemBox>,
    next_id: u64,
    next_uidvalidity: u32,
}

struct MemBox {
    name: String,
    special_use: Option<SpecialUse>,
    subscribed: bool,
    uidvalidity: u32,
    uidnext: u32,
    modseq: u64,
    messages: BTreeMap<u32, MemMsg>,
    vanished: Vec<(u64, u32)>,
    tx: broadcast::Sender<Events>,
}

#[derive(Clone)]
struct MemMsg {
    raw: Arc<Vec<u8>>,
    flags: Vec<Flag>,
    date: i64,
    modseq: u64,
}

impl Account {
    fn id_of(&self, name: &str) -> BackendResult<MailboxId> {
        self.boxes
            .iter()
            .find(|(_, b)| b.name == name)
            .map(|(id, _)| *id)
            .ok_or(BackendError::NoSuchMailbox)
    }

    fn get(&mut self, id: &MailboxId) -> BackendResult<&mut MemBox> {
        self.boxes.get_mut(id).ok_or(BackendError::NoSuchMailbox)
    }

    fn named(&mut self, name: &str) -> BackendResult<&mut MemBox> {
        let id = self.id_of(name)?;
        self.get(&id)
    }

    fn create(&mut self, name: &str, special_use: Option<SpecialUse>) -> BackendResult<()> {
        validate_name(name).map_err(|e| BackendError::InvalidName(e.to_string()))?;
        if self.id_of(name).is_ok() {
            return Err(BackendError::AlreadyExists);
        }
        self.next_id += 1;
        self.next_uidvalidity += 1;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.next_id.to_be_bytes());
        let (tx, _) = broadcast::channel(EVENT_CAPACITY);
        self.boxes.insert(
            MailboxId(id),
            MemBox {
                name: name.to_owned(),
                special_use,
                subscribed: false,
                uidvalidity: self.next_uidvalidity,
                uidnext: 1,
                modseq: 1,
                messages: BTreeMap::new(),
                vanished: Vec::new(),
                tx,
            },
        );
        Ok(())
    }
}

impl MemBox {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            uidvalidity: self.uidvalidity,
            uidnext: self.uidnext,
            highest_modseq: self.modseq,
            uids: Arc::new(self.messages.keys().copied().collect()),
            modseqs: Arc::new(self.messages.values().map(|m| m.modseq).collect()),
            first_unseen: self
                .messages
                .values()
                .position(|m| !m.flags.contains(&Flag::Seen))
                .map(|i| i as u32 + 1),
            keywords: self
                .messages
                .values()
                .flat_map(|m| m.flags.iter().filter(|f| matches!(f, Flag::Keyword(_))))
                .cloned()
                .collect::<BTreeSet<Flag>>()
                .into_iter()
                .collect(),
        }
    }

    fn add(&mut self, msg: MemMsg) -> u32 {
        let uid = self.uidnext;
        self.uidnext += 1;
        self.modseq += 1;
        let mut msg = msg;
        msg.modseq = self.modseq;
        self.messages.insert(uid, msg);
        let _ = self.tx.send(one(Event::Exists { uid }));
        uid
    }

    fn expunge(&mut self, uids: &[u32]) -> Vec<u32> {
        let mut done = Vec::new();
        for &uid in uids {
            if self.messages.remove(&uid).is_some() {
                self.modseq += 1;
                self.vanished.push((self.modseq, uid));
                let _ = self.tx.send(one(Event::Expunged { uid }));
                done.push(uid);
            }
        }
        done
    }
}

fn apply(mode: FlagMode, current: &[Flag], flags: &[Flag]) -> Vec<Flag> {
    let mut set: BTreeSet<Flag> = current.iter().cloned().collect();
    match mode {
        FlagMode::Add => set.extend(flags.iter().cloned()),
        FlagMode::Remove => {
            for f in flags {
                set.remove(f);
            }
        }
        FlagMode::Replace => set = flags.iter().cloned().collect(),
    }
    set.into_iter().collect()
}

impl MemoryMailboxes {
    fn acc(&self) -> MutexGuard<'_, Account> {
        lock(&self.account)
    }

    fn copy_inner(
        &self,
        mailbox: &MailboxId,
        uids: &[u32],
        dest: &str,
        expunge: bool,
    ) -> BackendResult<CopyOutcome> {
        let mut acc = self.acc();
        let dest_id = acc.id_of(dest)?;
        let src = acc.get(mailbox)?;
        let mut uids: Vec<u32> = uids.to_vec();
        uids.sort_unstable();
        uids.dedup();
        let msgs: Vec<(u32, MemMsg)> = uids
            .iter()
            .filter_map(|u| src.messages.get(u).map(|m| (*u, m.clone())))
            .collect();
        let dst = acc.get(&dest_id)?;
        let uidvalidity = dst.uidvalidity;
        let pairs: Vec<(u32, u32)> = msgs.into_iter().map(|(u, m)| (u, dst.add(m))).collect();
        if expunge {
            let src_uids: Vec<u32> = pairs.iter().map(|p| p.0).collect();
            acc.get(mailbox)?.expunge(&src_uids);
        }
        Ok(CopyOutcome { uidvalidity, pairs })
    }
}

impl Mailboxes for MemoryMailboxes {
    async fn list(&self) -> BackendResult<Vec<MailboxInfo>> {
        Ok(self
            .acc()
            .boxes
            .values()
            .map(|b| MailboxInfo {
                name: b.name.clone(),
                special_use: b.special_use,
                subscribed: b.subscribed,
            })
            .collect())
    }

    async fn create(&self, name: &str, special_use: Option<SpecialUse>) -> BackendResult<()> {
        self.acc().create(name, special_use)
    }

    async fn delete(&self, name: &str) -> BackendResult<()> {
        if name == "INBOX" {
            return Err(BackendError::NotAllowed("INBOX cannot be deleted".into()));
        }
        let mut acc = self.acc();
        let id = acc.id_of(name)?;
        if let Some(b) = acc.boxes.remove(&id) {
            // Sessions that selected it see every message go.
            for uid in b.messages.keys() {
                let _ = b.tx.send(one(Event::Expunged { uid: *uid }));
            }
        }
        Ok(())
    }

    async fn rename(&self, from: &str, to: &str) -> BackendResult<()> {
        validate_name(to).map_err(|e| BackendError::InvalidName(e.to_string()))?;
        if from == "INBOX" {
            return Err(BackendError::NotAllowed("INBOX cannot be renamed".into()));
        }
        let mut acc = self.acc();
        if acc.id_of(to).is_ok() {
            return Err(BackendError::AlreadyExists);
        }
        acc.named(from)?.name = to.to_owned();
        Ok(())
    }

    async fn subscribe(&self, name: &str, subscribed: bool) -> BackendResult<()> {
        self.acc().named(name)?.subscribed = subscribed;
        Ok(())
    }

    async fn status(&self, name: &str) -> BackendResult<MailboxStatus> {
        let mut acc = self.acc();
        let b = acc.named(name)?;
        let count = |f: &Flag| b.messages.values().filter(|m| m.flags.contains(f)).count() as u32;
        Ok(MailboxStatus {
            messages: b.messages.len() as u32,
            unseen: b.messages.len() as u32 - count(&Flag::Seen),
            deleted: count(&Flag::Deleted),
            size: b.messages.values().map(|m| m.raw.len() as u64).sum(),
            uidnext: b.uidnext,
            uidvalidity: b.uidvalidity,
            highest_modseq: b.modseq,
        })
    }

    async fn select(&self, name: &str) -> BackendResult<Selected> {
        let mut acc = self.acc();
        let id = acc.id_of(name)?;
        let b = acc.get(&id)?;
        let events = b.tx.subscribe();
        Ok(Selected {
            id,
            snapshot: b.snapshot(),
            events,
        })
    }

    async fn snapshot(&self, mailbox: &MailboxId) -> BackendResult<Snapshot> {
        Ok(self.acc().get(mailbox)?.snapshot())
    }

    async fn fetch_meta(
        &self,
        mailbox: &MailboxId,
        uids: &[u32],
    ) -> BackendResult<Vec<MessageMeta>> {
        let mut acc = self.acc();
        let b = acc.get(mailbox)?;
        Ok(uids
            .iter()
            .filter_map(|u| {
                b.messages.get(u).map(|m| MessageMeta {
                    uid: *u,
                    flags: m.flags.clone(),
                    internal_date_ms: m.date,
                    size: m.raw.len() as u32,
                    modseq: m.modseq,
                })
            })
            .collect())
    }

    async fn fetch_raw(&self, mailbox: &MailboxId, uid: u32) -> BackendResult<Option<Vec<u8>>> {
        let mut acc = self.acc();
        Ok(acc.get(mailbox)?.messages.get(&uid).map(|m| m.raw.to_vec()))
    }

    async fn fetch_summary(
        &self,
        mailbox: &MailboxId,
        uid: u32,
    ) -> BackendResult<Option<Arc<Summary>>> {
        let raw = {
            let mut acc = self.acc();
            acc.get(mailbox)?.messages.get(&uid).map(|m| m.raw.clone())
        };
        Ok(raw.map(|r| Arc::new(Summary::parse(&r))))
    }

    async fn append(
        &self,
        name: &str,
        flags: Vec<Flag>,
        internal_date_ms: i64,
        raw: Vec<u8>,
    ) -> BackendResult<(u32, u32)> {
        if raw.len() > MAX_MESSAGE {
            return Err(BackendError::TooLarge);
        }
        let mut acc = self.acc();
        let b = acc.named(name)?;
        let flags = apply(FlagMode::Replace, &[], &flags);
        let uid = b.add(MemMsg {
            raw: Arc::new(raw),
            flags,
            date: internal_date_ms,
            modseq: 0,
        });
        Ok((b.uidvalidity, uid))
    }

    async fn append_many(&self, name: &str, msgs: Vec<NewMail>) -> BackendResult<(u32, Vec<u32>)> {
        if msgs.iter().any(|m| m.raw.len() > MAX_MESSAGE) {
            return Err(BackendError::TooLarge);
        }
        let mut acc = self.acc();
        let b = acc.named(name)?;
        let mut uids = Vec::new();
        for m in msgs {
            let flags = apply(FlagMode::Replace, &[], &m.flags);
            uids.push(b.add(MemMsg {
                raw: Arc::new(m.raw),
                flags,
                date: m.internal_date_ms,
                modseq: 0,
            }));
        }
        Ok((b.uidvalidity, uids))
    }

    async fn store(
        &self,
        mailbox: &MailboxId,
        uids: &[u32],
        mode: FlagMode,
        flags: &[Flag],
        unchanged_since: Option<u64>,
    ) -> BackendResult<(StoreOutcome, StoreParts, Durable)> {
        let mut acc = self.acc();
        let b = acc.get(mailbox)?;
        let mut out = StoreOutcome::default();
        // Like the replica's batches: one event for the command's changes.
        let mut changed = Vec::new();
        for &uid in uids {
            let Some(m) = b.messages.get(&uid) else {
                continue;
            };
            if unchanged_since.is_some_and(|u| m.modseq > u) {
                out.modified.push(uid);
                continue;
            }
            let new = apply(mode, &m.flags, flags);
            if new != m.flags {
                b.modseq += 1;
                let modseq = b.modseq;
                if let Some(m) = b.messages.get_mut(&uid) {
                    m.flags = new;
                    m.modseq = modseq;
                }
                changed.push((uid, modseq));
            }
            if let Some(m) = b.messages.get(&uid) {
                out.updated.push(MessageState {
                    uid,
                    flags: m.flags.as_slice().into(),
                    modseq: m.modseq,
                });
            }
        }
        changed.sort_unstable();
        match changed[..] {
            [] => {}
            [(uid, modseq)] => {
                let _ = b.tx.send(one(Event::Flags { uid, modseq }));
            }
            _ => {
                let _ = b.tx.send(one(Event::FlagsMany(changed.into())));
            }
        }
        Ok((out, StoreParts::none(), Durable::now()))
    }

    async fn expunge(&self, mailbox: &MailboxId, uids: &[u32]) -> BackendResult<Vec<u32>> {
        Ok(self.acc().get(mailbox)?.expunge(uids))
    }

    async fn copy(
        &self,
        mailbox: &MailboxId,
        uids: &[u32],
        dest: &str,
    ) -> BackendResult<CopyOutcome> {
        self.copy_inner(mailbox, uids, dest, false)
    }

    async fn move_messages(
        &self,
        mailbox: &MailboxId,
        uids: &[u32],
        dest: &str,
    ) -> BackendResult<CopyOutcome> {
        self.copy_inner(mailbox, uids, dest, true)
    }

    async fn changed_since(
        &self,
        mailbox: &MailboxId,
        modseq: u64,
    ) -> BackendResult<(Vec<u32>, Vec<u32>)> {
        let mut acc = self.acc();
        let b = acc.get(mailbox)?;
        let changed = b
            .messages
            .iter()
            .filter(|(_, m)| m.modseq > modseq)
            .map(|(u, _)| *u)
            .collect();
        let mut vanished: Vec<u32> = b
            .vanished
            .iter()
            .filter(|(m, _)| *m > modseq)
            .map(|(_, u)| *u)
            .collect();
        vanished.sort_unstable();
        Ok((changed, vanished))
    }
}
