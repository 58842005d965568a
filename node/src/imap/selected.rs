//! A session's selected mailbox: the UIDs the client knows (their positions
//! are the sequence numbers), the events not announced yet, and what to tell
//! the client when RFC 3501 allows it (§7.4.1: no EXPUNGE during FETCH,
//! STORE or SEARCH by sequence number).

use super::backend::{Event, Events, Snapshot};
use aerogramme_proto::ids::MailboxId;
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::broadcast::{self, error::TryRecvError};

/// What to announce.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Updates {
    /// Expunged messages: (sequence number at the time, UID), in order.
    pub expunged: Vec<(u32, u32)>,
    /// New EXISTS count, if it changed.
    pub exists: Option<u32>,
    /// UIDs whose flags changed (fetch and send them).
    pub flags: Vec<u32>,
}

impl Updates {
    /// Whether there is nothing to say.
    pub fn is_empty(&self) -> bool {
        self.expunged.is_empty() && self.exists.is_none() && self.flags.is_empty()
    }
}

/// The selected mailbox of a session.
#[derive(Debug)]
pub struct SelectedBox {
    /// Mailbox id.
    pub id: MailboxId,
    /// Name as selected (UTF-8).
    pub name: String,
    /// EXAMINE.
    pub read_only: bool,
    /// UIDVALIDITY.
    pub uidvalidity: u32,
    /// Shared with the snapshot it came from until this session changes it.
    uids: Arc<Vec<u32>>,
    /// MODSEQ known to the client of each message of `uids` (same index).
    modseqs: Arc<Vec<u64>>,
    /// The MODSEQs of this session's own STORE answers since the events
    /// were last processed, ascending: a batch of flag events at one of
    /// them is the echo of that STORE (a MODSEQ names one op), every message
    /// of which the answers noted, so it is passed over without a walk.
    own: Vec<u64>,
    announced: usize,
    events: broadcast::Receiver<Events>,
    pending: VecDeque<Event>,
    resync: bool,
    closed: bool,
}

impl SelectedBox {
    /// A newly selected mailbox.
    pub fn new(
        id: MailboxId,
        name: String,
        read_only: bool,
        snapshot: Snapshot,
        events: broadcast::Receiver<Events>,
    ) -> Self {
        SelectedBox {
            id,
            name,
            read_only,
            uidvalidity: snapshot.uidvalidity,
            announced: snapshot.uids.len(),
            uids: snapshot.uids,
            modseqs: snapshot.modseqs,
            own: Vec::new(),
            events,
            pending: VecDeque::new(),
            resync: false,
            closed: false,
        }
    }

    /// UIDs in sequence order.
    pub fn uids(&self) -> &[u32] {
        &self.uids
    }

    /// Number of messages the client knows.
    pub fn exists(&self) -> u32 {
        self.uids.len() as u32
    }

    /// Sequence number of a UID.
    pub fn seq_of(&self, uid: u32) -> Option<u32> {
        self.uids.binary_search(&uid).ok().map(|i| i as u32 + 1)
    }

    /// Sequence number of a UID, tried first at sequence number `next`
    /// (a walk over UIDs in ascending order passes the previous answer):
    /// no search when the UIDs walked are consecutive messages.
    pub fn seq_near(&self, uid: u32, next: u32) -> Option<u32> {
        match self.uids.get(next as usize) {
            Some(&u) if u == uid => Some(next + 1),
            _ => self.seq_of(uid),
        }
    }

    /// Records a MODSEQ this session already reported (its own STORE), so
    /// the echo from the event stream is not reported again.
    pub fn note_modseq(&mut self, uid: u32, modseq: u64) {
        if let Ok(i) = self.uids.binary_search(&uid) {
            if modseq > self.modseqs[i] {
                Arc::make_mut(&mut self.modseqs)[i] = modseq;
            }
        }
    }

    /// [`SelectedBox::note_modseq`] of many messages, UIDs ascending (a
    /// STORE's answer): one walk over the session's UIDs; each message's
    /// sequence number (0 for a UID the session does not know) is given
    /// to `each` in turn.
    pub fn note_modseqs<T>(
        &mut self,
        changes: impl IntoIterator<Item = T>,
        uid_modseq: impl Fn(&T) -> (u32, u64),
        mut each: impl FnMut(u32, T),
    ) {
        let mut from = 0;
        let modseqs = Arc::make_mut(&mut self.modseqs);
        for c in changes {
            let (uid, modseq) = uid_modseq(&c);
            if self.uids.get(from).is_some_and(|&u| u > uid) {
                from = 0; // not ascending: search from the start
            }
            let i = position_from(&self.uids, from, uid);
            from = i;
            let seq = if self.uids.get(i) == Some(&uid) {
                modseqs[i] = modseqs[i].max(modseq);
                i as u32 + 1
            } else {
                0
            };
            if self.own.last() != Some(&modseq) {
                if let Err(at) = self.own.binary_search(&modseq) {
                    self.own.insert(at, modseq);
                }
            }
            each(seq, c);
        }
    }

    /// Whether flag events are the echo of this session's own STORE: all at
    /// one MODSEQ its answers noted.
    fn is_own_echo(&self, changes: &[(u32, u64)]) -> bool {
        let Some(&(_, m)) = changes.first() else {
            return false;
        };
        self.own.binary_search(&m).is_ok() && changes.iter().all(|c| c.1 == m)
    }

    /// Adds events this session knows of before the stream tells them (its
    /// own EXPUNGE, MOVE, APPEND, COPY).
    pub fn push(&mut self, ev: Event) {
        self.drain();
        self.pending.push_back(ev);
    }

    /// Whether the event stream ended (the mailbox went away).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether a snapshot is needed (the stream lagged).
    pub fn needs_resync(&self) -> bool {
        self.resync
    }

    /// Moves received events to the pending queue.
    pub fn drain(&mut self) {
        loop {
            match self.events.try_recv() {
                Ok(evs) => self.pending.extend(evs.iter().cloned()),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Lagged(_)) => self.resync = true,
                Err(TryRecvError::Closed) => {
                    self.closed = true;
                    break;
                }
            }
        }
    }

    /// Waits for the next event (for IDLE); never returns once the stream
    /// is closed.
    pub async fn wait(&mut self) {
        if self.closed {
            return std::future::pending().await;
        }
        match self.events.recv().await {
            Ok(evs) => self.pending.extend(evs.iter().cloned()),
            Err(broadcast::error::RecvError::Lagged(_)) => self.resync = true,
            Err(broadcast::error::RecvError::Closed) => self.closed = true,
        }
    }

    /// Whether something is waiting to be announced.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty() || self.resync
    }

    /// Replaces pending events by the difference between what the client
    /// knows and a fresh snapshot.
    pub fn resync_from(&mut self, snap: &Snapshot) {
        self.resync = false;
        self.pending.clear();
        // Both lists ascend: two merges (expunges first, as before).
        let (mine, theirs) = (&self.uids[..], &snap.uids[..]);
        let mut j = 0;
        for &uid in mine {
            while j < theirs.len() && theirs[j] < uid {
                j += 1;
            }
            if theirs.get(j) != Some(&uid) {
                self.pending.push_back(Event::Expunged { uid });
            }
        }
        let mut i = 0;
        for (&uid, &modseq) in theirs.iter().zip(snap.modseqs.iter()) {
            while i < mine.len() && mine[i] < uid {
                i += 1;
            }
            match (mine.get(i) == Some(&uid)).then(|| self.modseqs[i]) {
                None => {
                    self.pending.push_back(Event::Exists { uid });
                    self.pending.push_back(Event::Flags { uid, modseq });
                }
                Some(known) if modseq > known => {
                    self.pending.push_back(Event::Flags { uid, modseq })
                }
                _ => {}
            }
        }
    }

    /// The mailbox is gone: every message is expunged.
    pub fn expunge_all(&mut self) {
        self.resync = false;
        self.pending = self
            .uids
            .iter()
            .map(|&uid| Event::Expunged { uid })
            .collect();
    }

    /// Applies pending events; expunges stay pending when not `allowed`.
    pub fn process(&mut self, allow_expunge: bool) -> Updates {
        self.drain();
        let mut out = Updates::default();
        let mut keep = VecDeque::new();
        while let Some(ev) = self.pending.pop_front() {
            match ev {
                Event::Exists { uid } => {
                    if let Err(pos) = self.uids.binary_search(&uid) {
                        Arc::make_mut(&mut self.uids).insert(pos, uid);
                        Arc::make_mut(&mut self.modseqs).insert(pos, 0);
                    }
                }
                Event::Expunged { .. } if !allow_expunge => keep.push_back(ev),
                Event::Expunged { uid } => {
                    if let Ok(pos) = self.uids.binary_search(&uid) {
                        Arc::make_mut(&mut self.uids).remove(pos);
                        Arc::make_mut(&mut self.modseqs).remove(pos);
                        if pos < self.announced {
                            self.announced -= 1;
                            out.expunged.push((pos as u32 + 1, uid));
                        }
                    }
                }
                Event::Flags { uid, modseq } => {
                    if let Ok(i) = self.uids.binary_search(&uid) {
                        if modseq > self.modseqs[i] {
                            Arc::make_mut(&mut self.modseqs)[i] = modseq;
                            out.flags.push(uid);
                        }
                    }
                }
                Event::FlagsMany(changes) if self.is_own_echo(&changes) => {}
                Event::FlagsMany(changes) => {
                    // UIDs ascending: one walk over the session's UIDs.
                    let mut from = 0;
                    for &(uid, modseq) in changes.iter() {
                        let i = position_from(&self.uids, from, uid);
                        from = i;
                        if self.uids.get(i) == Some(&uid) && modseq > self.modseqs[i] {
                            Arc::make_mut(&mut self.modseqs)[i] = modseq;
                            out.flags.push(uid);
                        }
                    }
                }
            }
        }
        self.pending = keep;
        self.own.clear();
        if self.uids.len() != self.announced {
            self.announced = self.uids.len();
            out.exists = Some(self.announced as u32);
        }
        out.flags.sort_unstable();
        out.flags.dedup();
        out.flags.retain(|u| self.uids.binary_search(u).is_ok());
        out
    }

    /// Positions (0-based) named by a sequence set. By sequence number, a
    /// number beyond EXISTS (or any set in an empty mailbox) is an error; by
    /// UID, UIDs that do not exist are skipped.
    pub fn resolve(&self, set: &SequenceSet, uid: bool) -> Result<Vec<usize>, &'static str> {
        let mut out = Vec::new();
        if uid {
            let Some(&max) = self.uids.last() else {
                return Ok(out);
            };
            for (lo, hi) in ranges(set, max) {
                let a = self.uids.partition_point(|&u| u < lo);
                let b = self.uids.partition_point(|&u| u <= hi);
                out.extend(a..b);
            }
        } else {
            let n = self.uids.len() as u32;
            if n == 0 {
                return Err("No messages in the mailbox");
            }
            for (lo, hi) in ranges(set, n) {
                if hi > n {
                    return Err("Invalid message sequence number");
                }
                out.extend((lo - 1) as usize..hi as usize);
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Like [`SelectedBox::resolve`] but never an error (for SEARCH keys).
    pub fn resolve_lenient(&self, set: &SequenceSet, uid: bool) -> Vec<usize> {
        if uid {
            return self.resolve(set, true).unwrap_or_default();
        }
        let n = self.uids.len() as u32;
        let mut out = Vec::new();
        if n == 0 {
            return out;
        }
        for (lo, hi) in ranges(set, n) {
            let hi = hi.min(n);
            if lo <= hi {
                out.extend((lo - 1) as usize..hi as usize);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The first position at or after `from` whose UID is not below `uid`
/// (`uids` ascending): a galloping search, so that a walk over ascending
/// UIDs costs the logarithm of each step rather than of the mailbox. UIDs
/// strictly ascend, so the answer is at most `uid - uids[from]` positions
/// on: on dense UIDs one read finds it (a STORE's answers and events come
/// op by op, each op's UIDs a sparse ascending run).
fn position_from(uids: &[u32], from: usize, uid: u32) -> usize {
    let from = from.min(uids.len());
    let rest = &uids[from..];
    let Some(&first) = rest.first() else {
        return from;
    };
    if first >= uid {
        return from;
    }
    let d = ((uid - first) as usize).min(rest.len());
    if rest[d - 1] < uid {
        return from + d;
    }
    let rest = &rest[..d];
    let mut end = 1;
    while end < rest.len() && rest[end - 1] < uid {
        end *= 2;
    }
    // Every UID before `start` is below `uid` (the doubling went past it).
    let (start, end) = (if end > 1 { end / 2 } else { 0 }, end.min(rest.len()));
    from + start + rest[start..end].partition_point(|&u| u < uid)
}

/// Inclusive ranges of a set, `*` being `max`, each low ≤ high.
pub fn ranges(set: &SequenceSet, max: u32) -> Vec<(u32, u32)> {
    let v = |s: &SeqOrUid| match s {
        SeqOrUid::Value(n) => n.get(),
        SeqOrUid::Asterisk => max,
    };
    set.0
        .as_ref()
        .iter()
        .map(|s| match s {
            Sequence::Single(a) => (v(a), v(a)),
            Sequence::Range(a, b) => (v(a).min(v(b)), v(a).max(v(b))),
        })
        .collect()
}

/// A UID list as a sequence set (for VANISHED, MODIFIED), `None` if empty.
pub fn to_set(uids: &[u32]) -> Option<SequenceSet> {
    let mut v: Vec<u32> = uids.iter().copied().filter(|&u| u > 0).collect();
    v.sort_unstable();
    v.dedup();
    let mut seqs = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        let a = SeqOrUid::Value(std::num::NonZeroU32::new(v[i])?);
        let b = SeqOrUid::Value(std::num::NonZeroU32::new(v[j])?);
        seqs.push(if i == j {
            Sequence::Single(a)
        } else {
            Sequence::Range(a, b)
        });
        i = j + 1;
    }
    SequenceSet::try_from(seqs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(uids: &[u32]) -> Snapshot {
        Snapshot {
            uidvalidity: 1,
            uidnext: uids.last().map_or(1, |u| u + 1),
            highest_modseq: 10,
            uids: Arc::new(uids.to_vec()),
            modseqs: Arc::new(vec![1; uids.len()]),
            ..Default::default()
        }
    }

    fn sel(uids: &[u32]) -> (broadcast::Sender<Events>, SelectedBox) {
        let (tx, rx) = broadcast::channel(4);
        let s = SelectedBox::new(MailboxId([0; 16]), "INBOX".into(), false, snap(uids), rx);
        (tx, s)
    }

    #[test]
    fn events_and_sequence_numbers() {
        let (tx, mut s) = sel(&[3, 5, 9]);
        tx.send(Events::from([Event::Expunged { uid: 5 }])).unwrap();
        tx.send(Events::from([Event::Exists { uid: 10 }])).unwrap();
        tx.send(Events::from([Event::Flags { uid: 9, modseq: 4 }]))
            .unwrap();
        tx.send(Events::from([Event::Flags { uid: 9, modseq: 1 }]))
            .unwrap();
        // During FETCH: no expunge, but EXISTS and flags.
        let u = s.process(false);
        assert_eq!(u.expunged, vec![]);
        assert_eq!(u.exists, Some(4));
        assert_eq!(u.flags, vec![9]);
        assert_eq!(s.seq_of(5), Some(2));
        let u = s.process(true);
        assert_eq!(u.expunged, vec![(2, 5)]);
        assert_eq!(u.exists, None);
        assert_eq!(s.uids(), &[3, 9, 10]);
        // A message that came and went before being announced is not told.
        s.push(Event::Exists { uid: 11 });
        s.push(Event::Expunged { uid: 11 });
        assert!(s.process(true).is_empty());
        // Own STORE echo is not repeated.
        s.note_modseq(3, 7);
        tx.send(Events::from([Event::Flags { uid: 3, modseq: 7 }]))
            .unwrap();
        assert!(s.process(true).is_empty());
    }

    #[test]
    fn a_batch_is_its_events_in_order() {
        let (tx, mut s) = sel(&[3, 5, 9]);
        tx.send(Events::from([
            Event::Flags { uid: 3, modseq: 4 },
            Event::Exists { uid: 10 },
            Event::Flags { uid: 10, modseq: 4 },
            Event::Expunged { uid: 5 },
            Event::Flags { uid: 9, modseq: 4 },
        ]))
        .unwrap();
        let u = s.process(true);
        assert_eq!(u.expunged, vec![(2, 5)]);
        assert_eq!(u.exists, Some(3));
        assert_eq!(u.flags, vec![3, 9, 10]);
        assert_eq!(s.uids(), &[3, 9, 10]);
        assert!(!s.needs_resync());
    }

    #[test]
    fn a_flag_batch_is_its_changes() {
        let (tx, mut s) = sel(&[3, 5, 9, 12, 40]);
        s.note_modseq(12, 6);
        tx.send(Events::from([Event::FlagsMany(Arc::from(
            &[(1, 6), (3, 6), (9, 6), (12, 6), (40, 6), (41, 6)][..],
        ))]))
        .unwrap();
        let u = s.process(true);
        // 1 and 41 are unknown, 12 was this session's own change.
        assert_eq!(u.flags, vec![3, 9, 40]);
        // Told once.
        tx.send(Events::from([Event::FlagsMany(Arc::from(
            &[(3, 6), (5, 7)][..],
        ))]))
        .unwrap();
        assert_eq!(s.process(true).flags, vec![5]);
    }

    #[test]
    fn note_modseqs_walks_and_numbers() {
        let (tx, mut s) = sel(&[3, 5, 9, 12, 40]);
        let mut seen = Vec::new();
        let changes = [(3, 8), (9, 8), (10, 8), (40, 8), (5, 8)];
        s.note_modseqs(changes, |c| *c, |seq, c| seen.push((seq, c.0)));
        assert_eq!(seen, [(1, 3), (3, 9), (0, 10), (5, 40), (2, 5)]);
        // Another change (MODSEQ 7, 12 not noted at 7) is told; the echo of
        // the noted answers (MODSEQ 8) is passed over.
        tx.send(Events::from([
            Event::FlagsMany(Arc::from(&[(5, 7), (12, 7)][..])),
            Event::FlagsMany(Arc::from(&[(3, 8), (5, 8), (9, 8), (40, 8)][..])),
        ]))
        .unwrap();
        assert_eq!(s.process(true).flags, vec![12]);
        // Once processed, a batch at 8 is walked again (nothing new here).
        tx.send(Events::from([Event::FlagsMany(Arc::from(
            &[(3, 8), (12, 8)][..],
        ))]))
        .unwrap();
        assert_eq!(s.process(true).flags, vec![12]);
    }

    #[test]
    fn position_from_gallops() {
        let uids: Vec<u32> = (1..200).map(|u| u * 3).collect();
        for from in [0, 1, 5, 50, 198, 199, 300] {
            for uid in 0..620 {
                let want = from.min(uids.len()).max(uids.partition_point(|&u| u < uid));
                if uids[..from.min(uids.len())].iter().all(|&u| u < uid) {
                    assert_eq!(position_from(&uids, from, uid), want, "{from} {uid}");
                }
            }
        }
        assert_eq!(position_from(&[], 0, 5), 0);
        // Dense, with a jump, and sparse: against a plain search.
        let sets: [Vec<u32>; 3] = [
            (1..=300).collect(),
            (1..=100).chain(262_245..=262_400).collect(),
            (1..80).map(|u| u * u).collect(),
        ];
        for uids in sets {
            let max = *uids.last().unwrap() + 3;
            for from in (0..uids.len() + 2).step_by(7) {
                for uid in (0..max).step_by(13).chain([max, 262_300]) {
                    let want = from.min(uids.len()).max(uids.partition_point(|&u| u < uid));
                    if uids[..from.min(uids.len())].iter().all(|&u| u < uid) {
                        assert_eq!(position_from(&uids, from, uid), want, "{from} {uid}");
                    }
                }
            }
        }
    }

    #[test]
    fn lag_resyncs() {
        let (tx, mut s) = sel(&[1, 2]);
        for i in 0..10 {
            let _ = tx.send(Events::from([Event::Exists { uid: 3 + i }]));
        }
        s.drain();
        assert!(s.needs_resync());
        s.resync_from(&snap(&[2, 3, 4]));
        let u = s.process(true);
        assert_eq!(u.expunged, vec![(1, 1)]);
        assert_eq!(u.exists, Some(3));
        assert_eq!(s.uids(), &[2, 3, 4]);
    }

    #[test]
    fn resolves_sets() {
        let (_tx, s) = sel(&[3, 5, 9]);
        let set = |x: &str| SequenceSet::try_from(x).unwrap();
        assert_eq!(s.resolve(&set("1:*"), false), Ok(vec![0, 1, 2]));
        assert_eq!(s.resolve(&set("*:2"), false), Ok(vec![1, 2]));
        assert!(s.resolve(&set("4"), false).is_err());
        assert_eq!(s.resolve(&set("4:*"), true), Ok(vec![1, 2]));
        assert_eq!(s.resolve(&set("100:*"), true), Ok(vec![2]));
        assert_eq!(s.resolve(&set("1:4294967295"), true), Ok(vec![0, 1, 2]));
        assert_eq!(s.resolve(&set("6:8"), true), Ok(vec![]));
        assert_eq!(s.resolve_lenient(&set("2:10"), false), vec![1, 2]);
        let (_tx, e) = sel(&[]);
        assert!(e.resolve(&set("1:*"), false).is_err());
        assert_eq!(e.resolve(&set("1:*"), true), Ok(vec![]));
        let t = to_set(&[1, 2, 3, 7, 9, 10]).unwrap();
        assert_eq!(ranges(&t, 0), vec![(1, 3), (7, 7), (9, 10)]);
        assert!(to_set(&[]).is_none());
    }
}
