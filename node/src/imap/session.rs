//! One IMAP connection: the read loop (framing, literal continuation
//! requests, IDLE, timeouts), authentication, state checks and dispatch. The
//! commands themselves are in [`super::cmd_mailbox`] and
//! [`super::cmd_message`]. Every response is built as an imap-types value
//! and encoded by imap-codec.

use super::backend::{AuthError, Backend, BackendError};
use super::conn::Conn;
use super::convert;
use super::framing::{tag_of, Discard, Frame, Framer, Limits};
use super::listext;
use super::rewrite::{self, ReturnOpts};
use super::selected::SelectedBox;
use super::server::Shared;
use imap_codec::decode::{CommandDecodeError, Decoder};
use imap_codec::encode::Encoder;
use imap_codec::imap_types::{
    auth::{AuthMechanism, AuthenticateData},
    command::{Command, CommandBody},
    core::{Tag, Vec1},
    extensions::{idle::IdleDone, utf8::Utf8Kind},
    response::{
        Capability, Code, CodeOther, CommandContinuationRequest, Data, Greeting, GreetingKind,
        Response, Status, StatusBody, StatusKind, Tagged,
    },
    IntoStatic,
};
use imap_codec::{AuthenticateDataCodec, CommandCodec, IdleDoneCodec, ResponseCodec};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The `BYE` a removed user's sessions get.
const ACCOUNT_GONE: &str = "Account removed";

/// Output buffered before it is sent in the middle of a long answer.
const FLUSH_AT: usize = 256 * 1024;

/// Output buffer capacity a connection keeps between commands.
const KEPT_OUTPUT: usize = 64 * 1024;

/// How a command ended.
pub(crate) enum Reply {
    /// Tagged OK.
    Ok(Option<Code<'static>>, String),
    /// Tagged NO.
    No(Option<Code<'static>>, String),
    /// Tagged BAD.
    Bad(String),
    /// No tagged response yet (AUTHENTICATE waiting for data, IDLE).
    Pending,
    /// Tagged OK sent by the handler; close the connection.
    Close,
    /// No tagged response: an untagged `BYE` with this text, then close.
    Bye(&'static str),
    /// Tagged OK sent by the handler; start TLS.
    StartTls,
}

impl Reply {
    pub(crate) fn ok(text: &str) -> Reply {
        Reply::Ok(None, text.to_owned())
    }
    pub(crate) fn no(text: &str) -> Reply {
        Reply::No(None, text.to_owned())
    }
    pub(crate) fn bad(text: &str) -> Reply {
        Reply::Bad(text.to_owned())
    }
}

/// A response code this version of imap-types has no variant for.
pub(crate) fn code(s: &'static str) -> Code<'static> {
    Code::Other(CodeOther::unvalidated(s.as_bytes()))
}

/// A backend failure as a tagged NO (or the session's end, for a removed
/// account).
pub(crate) fn backend_err(e: BackendError) -> Reply {
    let (c, text) = match &e {
        BackendError::AccountGone => return Reply::Bye(ACCOUNT_GONE),
        BackendError::NoSuchMailbox => (code("NONEXISTENT"), "No such mailbox".to_string()),
        BackendError::AlreadyExists => (code("ALREADYEXISTS"), "Mailbox already exists".into()),
        BackendError::InvalidName(m) => (code("CANNOT"), format!("Invalid name: {m}")),
        BackendError::NotAllowed(m) => (code("CANNOT"), m.clone()),
        BackendError::TooLarge => (Code::TooBig, "Message too large".into()),
        BackendError::UseAttr => (
            code("USEATTR"),
            "Special-use attribute not supported".into(),
        ),
        BackendError::Unavailable(m) => (code("UNAVAILABLE"), format!("Try again later: {m}")),
        BackendError::Internal(m) => (code("SERVERBUG"), format!("Internal error: {m}")),
    };
    Reply::No(Some(c), text)
}

enum Mode {
    Command,
    AuthPlain(Tag<'static>),
    Idle(Tag<'static>),
}

/// What the dispatcher does after a command.
enum After {
    Continue,
    Close,
    StartTls,
}

/// One connection's state.
pub(crate) struct Session<B: Backend> {
    pub(crate) shared: Arc<Shared<B>>,
    conn: Conn,
    framer: Framer,
    out: Vec<u8>,
    pub(crate) peer: SocketAddr,
    local: SocketAddr,
    pub(crate) user: Option<B::Mailboxes>,
    pub(crate) selected: Option<SelectedBox>,
    pub(crate) condstore: bool,
    pub(crate) qresync: bool,
    /// UTF8=ACCEPT enabled (RFC 6855): mailbox names in UTF-8.
    pub(crate) utf8: bool,
    /// The tag and RETURN options of the SEARCH being run (RFC 4731).
    pub(crate) esearch: Option<(String, ReturnOpts)>,
    /// IMAP4rev2 enabled (RFC 9051): no `\Recent`, ESEARCH answers, LIST
    /// and CLOSED at SELECT, UTF-8 mailbox names.
    pub(crate) rev2: bool,
    /// The last SEARCH result saved with `RETURN (SAVE)` (RFC 5182), as
    /// UIDs; `$` names it. Emptied by SELECT, EXAMINE, CLOSE and UNSELECT.
    pub(crate) saved: Vec<u32>,
    /// The command being run had its `$` replaced by [`rewrite::DOLLAR`].
    pub(crate) dollar: bool,
    /// The tag of the command being run.
    pub(crate) current_tag: String,
    mode: Mode,
    /// The user's account was removed: the session says `BYE` and ends.
    pub(crate) gone: bool,
}

impl<B: Backend> Session<B> {
    pub(crate) fn new(
        shared: Arc<Shared<B>>,
        conn: Conn,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Self {
        let c = &shared.config;
        let limits = Limits {
            max_line: c.max_line,
            max_literal: c.max_literal,
            max_command: c.max_literal as usize + c.max_line * 4,
        };
        Session {
            shared,
            conn,
            framer: Framer::new(limits),
            out: Vec::new(),
            peer,
            local,
            user: None,
            selected: None,
            condstore: false,
            qresync: false,
            utf8: false,
            esearch: None,
            rev2: false,
            saved: Vec::new(),
            dollar: false,
            current_tag: String::new(),
            mode: Mode::Command,
            gone: false,
        }
    }

    // ----- output ----------------------------------------------------------

    pub(crate) fn write(&mut self, r: &Response<'_>) {
        encode_into(&mut self.out, r);
    }

    /// Writes an untagged `BYE` (the connection closes after it).
    fn bye(&mut self, text: &str) {
        if let Ok(bye) = Status::bye(None, text) {
            self.write(&Response::Status(bye));
        }
    }

    /// Takes the output buffer, to be written to while the session is
    /// borrowed; give it back with [`Session::put_output`].
    pub(crate) fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Gives back the buffer [`Session::take_output`] took.
    pub(crate) fn put_output(&mut self, out: Vec<u8>) {
        self.out = out;
    }

    /// The output buffer, for responses written by hand.
    pub(crate) fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Bytes imap-codec cannot encode (ESEARCH, LIST extended data items).
    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    pub(crate) fn data(&mut self, d: Data<'_>) {
        self.write(&Response::Data(d));
    }

    pub(crate) fn untagged(&mut self, kind: StatusKind, code: Option<Code<'_>>, text: &str) {
        let body = StatusBody {
            kind,
            code,
            text: convert::text(text),
        };
        self.write(&Response::Status(Status::Untagged(body)));
    }

    fn tagged(&mut self, tag: Tag<'_>, kind: StatusKind, code: Option<Code<'_>>, text: &str) {
        let body = StatusBody {
            kind,
            code,
            text: convert::text(text),
        };
        self.write(&Response::Status(Status::Tagged(Tagged { tag, body })));
    }

    fn bad_untagged_or_tagged(&mut self, tag: Option<String>, code: Option<Code<'_>>, text: &str) {
        match tag.and_then(|t| Tag::try_from(t).ok()) {
            Some(t) => self.tagged(t, StatusKind::Bad, code, text),
            None => self.untagged(StatusKind::Bad, code, text),
        }
    }

    fn continuation(&mut self, text: &str) {
        let c = CommandContinuationRequest::basic(None, convert::text(text))
            .unwrap_or_else(|_| CommandContinuationRequest::base64(Vec::new()));
        self.write(&Response::CommandContinuationRequest(c));
    }

    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        self.send().await?;
        // An idle connection does not keep a long answer's buffer.
        if self.out.capacity() > KEPT_OUTPUT {
            self.out = Vec::new();
        }
        Ok(())
    }

    /// Writes the output; its buffer is kept for what follows.
    async fn send(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.conn.write_all(&self.out).await?;
            self.conn.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Sends the output when it grew large (long FETCH responses), keeping
    /// the buffer for the rest of the answer.
    pub(crate) async fn maybe_flush(&mut self) -> std::io::Result<()> {
        if self.out.len() > FLUSH_AT {
            self.send().await?;
        }
        Ok(())
    }

    // ----- capabilities ----------------------------------------------------

    pub(crate) fn plaintext_allowed(&self) -> bool {
        let c = &self.shared.config;
        self.conn.is_tls()
            || c.allow_plaintext_auth
            || (c.loopback_is_secure && self.local.ip().is_loopback())
    }

    pub(crate) fn capabilities(&self) -> Vec1<Capability<'static>> {
        let mut caps = vec![Capability::Imap4Rev1];
        caps.extend(Capability::try_from("IMAP4rev2").ok());
        if self.user.is_none() {
            if self.shared.tls.is_some() && !self.conn.is_tls() {
                caps.push(Capability::StartTls);
            }
            if self.plaintext_allowed() {
                caps.push(Capability::Auth(AuthMechanism::Plain));
            } else {
                caps.push(Capability::LoginDisabled);
            }
        }
        caps.extend([
            Capability::SaslIr,
            Capability::LiteralPlus,
            Capability::Id,
            Capability::Enable,
            Capability::Idle,
        ]);
        if self.user.is_some() {
            caps.extend([
                Capability::Namespace,
                Capability::Unselect,
                Capability::UidPlus,
                Capability::Move,
                Capability::CondStore,
                Capability::QResync,
                Capability::ListExtended,
                Capability::StatusSize,
                Capability::Within,
            ]);
            caps.push(Capability::Utf8(Utf8Kind::Accept));
            caps.push(Capability::Binary);
            for other in [
                "ESEARCH",
                "SEARCHRES",
                "MULTIAPPEND",
                "SPECIAL-USE",
                "CREATE-SPECIAL-USE",
                "LIST-STATUS",
                "CHILDREN",
            ] {
                if let Ok(c) = Capability::try_from(other) {
                    caps.push(c);
                }
            }
            if let Ok(c) =
                Capability::try_from(format!("APPENDLIMIT={}", self.shared.config.max_literal))
            {
                caps.push(c);
            }
        }
        Vec1::try_from(caps).unwrap_or_else(|_| Vec1::from(Capability::Imap4Rev1))
    }

    // ----- the loop --------------------------------------------------------

    /// Serves the connection until it ends.
    pub(crate) async fn run(mut self) {
        self.serve().await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.conn.shutdown()).await;
    }

    async fn serve(&mut self) {
        let greeting = Greeting {
            kind: GreetingKind::Ok,
            code: Some(Code::Capability(self.capabilities())),
            text: convert::text("Aerogramme IMAP ready"),
        };
        self.out.extend(
            imap_codec::GreetingCodec::default()
                .encode(&greeting)
                .dump(),
        );
        if self.flush().await.is_err() {
            return;
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            while let Some(frame) = self.framer.next_frame() {
                let after = self.on_frame(frame).await;
                if self.flush().await.is_err() {
                    return;
                }
                match after {
                    After::Continue => {}
                    After::Close => return,
                    After::StartTls => {
                        self.framer.clear_input();
                        let Some(acceptor) = self.shared.tls.clone() else {
                            return;
                        };
                        let conn = std::mem::replace(&mut self.conn, Conn::Closed);
                        match conn.upgrade(&acceptor).await {
                            Ok(c) => self.conn = c,
                            Err(_) => return,
                        }
                    }
                }
            }
            let idle = matches!(self.mode, Mode::Idle(_));
            let limit = if idle {
                self.shared.config.idle_command_timeout
            } else {
                self.shared.config.idle_timeout
            };
            let read = match (idle, self.selected.as_mut()) {
                (true, Some(sel)) => {
                    tokio::select! {
                        r = tokio::time::timeout(limit, self.conn.read(&mut buf)) => Some(r),
                        _ = sel.wait() => None,
                    }
                }
                _ => Some(tokio::time::timeout(limit, self.conn.read(&mut buf)).await),
            };
            match read {
                None => {
                    self.announce(true).await;
                    if self.gone {
                        self.bye(ACCOUNT_GONE);
                    }
                    if self.flush().await.is_err() || self.gone {
                        return;
                    }
                }
                Some(Err(_)) => {
                    self.bye("Autologout: idle for too long");
                    let _ = self.flush().await;
                    return;
                }
                Some(Ok(Ok(0))) | Some(Ok(Err(_))) => return,
                Some(Ok(Ok(n))) => self.framer.push(&buf[..n]),
            }
        }
    }

    async fn on_frame(&mut self, frame: Frame) -> After {
        match frame {
            Frame::Literal { sync, .. } => {
                let literal_found = |b: &[u8]| {
                    matches!(
                        CommandCodec::default().decode(b),
                        Err(CommandDecodeError::LiteralFound { .. })
                    )
                };
                let partial = self.framer.partial();
                let ok = matches!(self.mode, Mode::Command)
                    && (literal_found(partial)
                        || (self.utf8
                            && rewrite::append_utf8(partial).is_some_and(|b| literal_found(&b)))
                        || rewrite::dollar(partial).is_some_and(|b| literal_found(&b))
                        || rewrite::split_append(partial).is_some_and(|parts| {
                            parts.len() > 1 && parts.last().is_some_and(|b| literal_found(b))
                        }));
                if ok {
                    self.framer.accept();
                    if sync {
                        self.continuation("Ready for literal data");
                    }
                } else {
                    let tag = tag_of(self.framer.partial());
                    self.framer.reject();
                    if sync {
                        self.bad_untagged_or_tagged(tag, None, "Syntax error");
                    }
                }
                After::Continue
            }
            Frame::Discarded { tag, reason } => {
                if let Mode::AuthPlain(t) | Mode::Idle(t) =
                    std::mem::replace(&mut self.mode, Mode::Command)
                {
                    self.tagged(t, StatusKind::Bad, None, "Unexpected data");
                    return After::Continue;
                }
                match reason {
                    Discard::LineTooLong => self.bad_untagged_or_tagged(tag, None, "Line too long"),
                    Discard::LiteralTooLarge | Discard::CommandTooLong => {
                        self.bad_untagged_or_tagged(tag, Some(Code::TooBig), "Literal too large")
                    }
                    Discard::Rejected => self.bad_untagged_or_tagged(tag, None, "Syntax error"),
                }
                After::Continue
            }
            Frame::Complete(bytes) => match std::mem::replace(&mut self.mode, Mode::Command) {
                Mode::Command => self.command(&bytes).await,
                Mode::AuthPlain(tag) => {
                    let reply = match AuthenticateDataCodec::default().decode(&bytes) {
                        Ok((_, AuthenticateData::Continue(data))) => {
                            self.plain(data.declassify()).await
                        }
                        Ok((_, AuthenticateData::Cancel)) => Reply::bad("Authentication cancelled"),
                        Err(_) => Reply::bad("Invalid base64 data"),
                    };
                    self.finish(tag, reply, false).await
                }
                Mode::Idle(tag) => {
                    let reply = match IdleDoneCodec::default().decode(&bytes) {
                        Ok((_, IdleDone)) => Reply::ok("IDLE terminated"),
                        Err(_) => Reply::bad("Expected DONE"),
                    };
                    self.finish(tag, reply, true).await
                }
            },
        }
    }

    async fn command(&mut self, bytes: &[u8]) -> After {
        // SEARCHRES: `$` becomes a number imap-codec parses (see rewrite.rs).
        let replaced = rewrite::dollar(bytes);
        self.dollar = replaced.is_some();
        let after = self
            .command_inner(replaced.as_deref().unwrap_or(bytes))
            .await;
        self.dollar = false;
        after
    }

    async fn command_inner(&mut self, bytes: &[u8]) -> After {
        let cmd = match CommandCodec::default().decode(bytes) {
            Ok((b"", cmd)) => cmd.into_static(),
            _ => {
                let tag = tag_of(bytes);
                let Some(t) = tag.as_ref().and_then(|t| Tag::try_from(t.clone()).ok()) else {
                    self.untagged(StatusKind::Bad, None, "Syntax error");
                    return After::Continue;
                };
                if let Some(parsed) = rewrite::search_return(bytes) {
                    let reply = match parsed {
                        Ok((opts, plain)) => match CommandCodec::default().decode(&plain) {
                            Ok((b"", cmd)) if matches!(cmd.body, CommandBody::Search { .. }) => {
                                let cmd = cmd.into_static();
                                let uid = matches!(cmd.body, CommandBody::Search { uid: true, .. });
                                if opts.save && self.selected.is_none() {
                                    let r = Reply::bad("No mailbox selected");
                                    return self.finish(t, r, true).await;
                                }
                                self.esearch = Some((t.as_ref().to_owned(), opts));
                                let reply = self.dispatch(cmd).await;
                                self.esearch = None;
                                return self.finish(t, reply, uid).await;
                            }
                            _ => Reply::bad("Syntax error in search criteria"),
                        },
                        Err(e) => Reply::Bad(format!("Syntax error: {e}")),
                    };
                    if self.selected.is_some()
                        && bytes.windows(4).any(|w| w.eq_ignore_ascii_case(b"SAVE"))
                    {
                        // RFC 5182 §2.1: a failed SEARCH ... SAVE empties `$`.
                        self.saved.clear();
                    }
                    return self.finish(t, reply, true).await;
                }
                if let Some(parts) = rewrite::split_append(bytes).filter(|p| p.len() > 1) {
                    let reply = if self.user.is_some() {
                        self.multi_append(&parts).await
                    } else {
                        Reply::bad("Command not valid in this state")
                    };
                    return self.finish(t, reply, true).await;
                }
                if let Some(plain) = rewrite::append_utf8(bytes) {
                    let reply = match CommandCodec::default().decode(&plain) {
                        Ok((b"", cmd)) if self.utf8 && self.user.is_some() => {
                            self.dispatch(cmd.into_static()).await
                        }
                        Ok(_) if self.user.is_some() => {
                            Reply::bad("APPEND UTF8 needs ENABLE UTF8=ACCEPT first")
                        }
                        Ok(_) => Reply::bad("Command not valid in this state"),
                        Err(_) => Reply::bad("Syntax error"),
                    };
                    return self.finish(t, reply, true).await;
                }
                let reply = match listext::parse(bytes) {
                    Ok(ext) if self.user.is_some() => self.extended(ext).await,
                    Ok(_) => Reply::bad("Command not valid in this state"),
                    Err("unknown command") => Reply::bad("Syntax error"),
                    Err(e) => Reply::Bad(format!("Syntax error: {e}")),
                };
                return self.finish(t, reply, true).await;
            }
        };
        let allow_expunge = !matches!(
            cmd.body,
            CommandBody::Fetch { uid: false, .. }
                | CommandBody::Store { uid: false, .. }
                | CommandBody::Search { uid: false, .. }
        );
        let tag = cmd.tag.clone();
        let reply = self.dispatch(cmd).await;
        self.finish(tag, reply, allow_expunge).await
    }

    /// Writes the tagged response (after the updates RFC 3501 allows).
    async fn finish(&mut self, tag: Tag<'static>, reply: Reply, allow_expunge: bool) -> After {
        match reply {
            Reply::Pending => return After::Continue,
            Reply::Close => return After::Close,
            Reply::StartTls => return After::StartTls,
            Reply::Bye(text) => {
                self.bye(text);
                return After::Close;
            }
            _ => {}
        }
        self.announce(allow_expunge).await;
        if self.gone {
            self.bye(ACCOUNT_GONE);
            return After::Close;
        }
        match reply {
            Reply::Ok(c, t) => self.tagged(tag, StatusKind::Ok, c, &t),
            Reply::No(c, t) => self.tagged(tag, StatusKind::No, c, &t),
            Reply::Bad(t) => self.tagged(tag, StatusKind::Bad, None, &t),
            _ => {}
        }
        After::Continue
    }

    async fn dispatch(&mut self, cmd: Command<'static>) -> Reply {
        self.current_tag = cmd.tag.as_ref().to_owned();
        let authed = self.user.is_some();
        let selected = self.selected.is_some();
        let tag = cmd.tag;
        match cmd.body {
            CommandBody::Capability => {
                self.data(Data::Capability(self.capabilities()));
                Reply::ok("CAPABILITY completed")
            }
            CommandBody::Noop => Reply::ok("NOOP completed"),
            CommandBody::Logout => {
                self.bye("Logging out");
                self.tagged(tag, StatusKind::Ok, None, "LOGOUT completed");
                Reply::Close
            }
            CommandBody::Id { .. } => {
                use imap_codec::imap_types::core::{IString, NString};
                let params = vec![
                    (
                        IString::try_from("name").ok(),
                        NString::try_from("Aerogramme").ok(),
                    ),
                    (
                        IString::try_from("version").ok(),
                        NString::try_from(env!("CARGO_PKG_VERSION")).ok(),
                    ),
                ];
                let params = params
                    .into_iter()
                    .filter_map(|(k, v)| Some((k?, v?)))
                    .collect();
                self.data(Data::Id {
                    parameters: Some(params),
                });
                Reply::ok("ID completed")
            }
            CommandBody::StartTLS if !authed => {
                if self.shared.tls.is_none() || self.conn.is_tls() {
                    return Reply::bad("STARTTLS not available");
                }
                self.tagged(tag, StatusKind::Ok, None, "Begin TLS negotiation now");
                Reply::StartTls
            }
            CommandBody::Login { username, password } if !authed => {
                if !self.plaintext_allowed() {
                    return Reply::No(
                        Some(code("PRIVACYREQUIRED")),
                        "Plaintext login needs TLS".into(),
                    );
                }
                let user = String::from_utf8_lossy(username.as_ref()).into_owned();
                self.login(&user, password.declassify().as_ref()).await
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } if !authed => {
                if mechanism != AuthMechanism::Plain {
                    return Reply::no("Unsupported authentication mechanism");
                }
                if !self.plaintext_allowed() {
                    return Reply::No(
                        Some(code("PRIVACYREQUIRED")),
                        "Plaintext login needs TLS".into(),
                    );
                }
                match initial_response {
                    Some(ir) => self.plain(ir.declassify()).await,
                    None => {
                        self.write(&Response::CommandContinuationRequest(
                            CommandContinuationRequest::base64(Vec::new()),
                        ));
                        self.mode = Mode::AuthPlain(tag);
                        Reply::Pending
                    }
                }
            }
            CommandBody::StartTLS
            | CommandBody::Login { .. }
            | CommandBody::Authenticate { .. } => Reply::bad("Already authenticated"),
            _ if !authed => Reply::bad("Command not valid in this state: log in first"),
            CommandBody::Idle => {
                self.continuation("idling");
                self.announce(true).await;
                self.mode = Mode::Idle(tag);
                Reply::Pending
            }
            CommandBody::Select {
                mailbox,
                parameters,
            } => self.select(&mailbox, parameters, false).await,
            CommandBody::Examine {
                mailbox,
                parameters,
            } => self.select(&mailbox, parameters, true).await,
            CommandBody::Create { mailbox } => self.create(&mailbox, Vec::new()).await,
            CommandBody::Delete { mailbox } => self.delete(&mailbox).await,
            CommandBody::Rename { from, to } => self.rename(&from, &to).await,
            CommandBody::Subscribe { mailbox } => self.subscribe(&mailbox, true).await,
            CommandBody::Unsubscribe { mailbox } => self.subscribe(&mailbox, false).await,
            CommandBody::List {
                reference,
                mailbox_wildcard,
            } => {
                let cmd = listext::ListCommand {
                    reference: self.raw_mailbox(&reference),
                    patterns: vec![list_bytes(&mailbox_wildcard)],
                    ..Default::default()
                };
                self.list(cmd).await
            }
            CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } => {
                let pattern = list_bytes(&mailbox_wildcard);
                self.lsub(&self.raw_mailbox(&reference), &pattern).await
            }
            CommandBody::Status {
                mailbox,
                item_names,
            } => self.status(&mailbox, &item_names).await,
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } => self.append(&mailbox, &flags, date.as_ref(), message).await,
            CommandBody::Enable { capabilities } => self.enable(capabilities.into_inner()),
            CommandBody::Namespace => self.namespace(),
            _ if !selected => Reply::bad("Command not valid in this state: no mailbox selected"),
            CommandBody::Check => Reply::ok("CHECK completed"),
            CommandBody::Close => self.close(true).await,
            CommandBody::Unselect => self.close(false).await,
            CommandBody::Expunge => self.expunge(None).await,
            CommandBody::ExpungeUid { sequence_set } => self.expunge(Some(sequence_set)).await,
            CommandBody::Search {
                charset,
                criteria,
                uid,
            } => self.search(charset, criteria.into_inner(), uid).await,
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                modifiers,
            } => {
                self.fetch(sequence_set, macro_or_item_names, uid, modifiers)
                    .await
            }
            CommandBody::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                modifiers,
            } => {
                self.store(sequence_set, kind, response, &flags, uid, modifiers)
                    .await
            }
            CommandBody::Copy {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(sequence_set, &mailbox, uid, false).await,
            CommandBody::Move {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(sequence_set, &mailbox, uid, true).await,
            other => Reply::Bad(format!("{} is not supported", other.name())),
        }
    }

    async fn extended(&mut self, ext: listext::Extended) -> Reply {
        match ext {
            listext::Extended::List(l) => self.list(l).await,
            listext::Extended::Create { mailbox, uses } => self.create_raw(&mailbox, uses).await,
        }
    }

    // ----- authentication --------------------------------------------------

    async fn login(&mut self, user: &str, password: &[u8]) -> Reply {
        match self
            .shared
            .backend
            .authenticate(user, password, self.peer)
            .await
        {
            Ok(m) => {
                self.user = Some(m);
                Reply::Ok(
                    Some(Code::Capability(self.capabilities())),
                    "Logged in".into(),
                )
            }
            Err(AuthError::InvalidCredentials) => {
                tokio::time::sleep(self.shared.config.auth_failure_delay).await;
                Reply::No(
                    Some(code("AUTHENTICATIONFAILED")),
                    "Invalid credentials".into(),
                )
            }
            Err(AuthError::Unavailable(m)) => {
                Reply::No(Some(code("UNAVAILABLE")), format!("Try again later: {m}"))
            }
        }
    }

    async fn plain(&mut self, data: &[u8]) -> Reply {
        let mut parts = data.split(|&b| b == 0);
        let (Some(authz), Some(authc), Some(pw), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Reply::bad("Invalid PLAIN data");
        };
        if !authz.is_empty() && authz != authc {
            return Reply::No(
                Some(code("AUTHORIZATIONFAILED")),
                "Cannot act as another user".into(),
            );
        }
        let user = String::from_utf8_lossy(authc).into_owned();
        self.login(&user, pw).await
    }

    /// The backend handle (commands run only once logged in).
    pub(crate) fn mailboxes(&self) -> Result<&B::Mailboxes, Reply> {
        self.user
            .as_ref()
            .ok_or_else(|| Reply::bad("Not authenticated"))
    }
}

/// Appends the encoding of `r` to `out` (no intermediate concatenation).
pub(crate) fn encode_into(out: &mut Vec<u8>, r: &Response<'_>) {
    for f in ResponseCodec::default().encode(r) {
        match f {
            imap_codec::encode::Fragment::Line { data }
            | imap_codec::encode::Fragment::Literal { data, .. } => out.extend_from_slice(&data),
        }
    }
}

fn list_bytes(m: &imap_codec::imap_types::mailbox::ListMailbox<'_>) -> Vec<u8> {
    use imap_codec::imap_types::mailbox::ListMailbox;
    match m {
        ListMailbox::Token(t) => t.as_ref().to_vec(),
        ListMailbox::String(s) => s.as_ref().to_vec(),
    }
}
