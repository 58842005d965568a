//! What each subcommand does.

use crate::cli::{DataArgs, DevArgs, InitArgs, UserCommand};
use crate::password::PasswordSource;
use aerogramme::admin::{self, ErrorKind, Request, Response};
use aerogramme::config::{Config, ConfigFile};
use aerogramme::identity::{self, NodeIdentity};
use aerogramme::node::{Node, NodeError};
use aerogramme::store::{OpenError, SledStore};
use anyhow::{bail, Context, Result};
use std::fs;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// How long the CLI waits for the node's answer (Argon2 may take a while).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Default network key file name in the data directory.
const NETWORK_KEY: &str = "network.key";

/// Where the banner of `dev` names the node's peer addresses (known once
/// it listens).
const PEERS: &str = "{peers}";

/// `aerogramme dev`: sets up (or reuses) the data directory with a demo
/// user, serves it, and prints how to connect.
pub fn dev(args: &DevArgs) -> ExitCode {
    let result = dev_setup(args).and_then(|config| {
        let banner = format!(
            "aerogramme dev: a node with a demo user, ready for a mail client\n\
             \x20 IMAP     : {imap} (host 127.0.0.1, port {iport}, no TLS: loopback only)\n\
             \x20 LMTP     : {lmtp} (and unix socket {sock})\n\
             \x20 user     : {user}\n\
             \x20 password : {password}\n\
             \x20 data     : {dir}\n\
             \x20 try      : curl -u {user}:{password} imap://{imap}/INBOX\n\
             \x20 peers    : {PEERS} (another node joins with --join and DIR/network.key)\n\
             Stop with Ctrl-C.",
            imap = config.imap,
            iport = config.imap.port(),
            lmtp = config.lmtp,
            sock = config.dir.join(aerogramme::serve::LMTP_SOCKET).display(),
            user = args.user,
            password = args.password,
            dir = args.data.display(),
            PEERS = PEERS,
        );
        serve_dir(&args.data, Some(banner))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aerogramme: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Creates or reuses the dev data directory and its demo user; returns the
/// configuration in force (an existing directory's file wins over the
/// command-line addresses).
fn dev_setup(args: &DevArgs) -> Result<Config> {
    let dir = &args.data;
    if Config::file_path(dir).exists() {
        tracing::info!("reusing data directory {}", dir.display());
        let config = Config::load(dir)?;
        if config.imap != args.imap || config.lmtp != args.lmtp {
            tracing::warn!(
                "{} sets IMAP {} and LMTP {}: it wins over --imap and --lmtp",
                Config::file_path(dir).display(),
                config.imap,
                config.lmtp
            );
        }
    } else {
        let mut file = ConfigFile {
            name: "dev".into(),
            ..ConfigFile::default()
        };
        file.imap.listen = args.imap.to_string();
        file.lmtp.listen = args.lmtp.to_string();
        // Peers on loopback only, on a free port.
        file.p2p.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
        let created = create_data_dir(dir, file, None)?;
        tracing::info!(peer_id = %created.peer_id, "created data directory {}", dir.display());
    }
    let request = Request::UserAdd {
        name: args.user.clone(),
        password: Zeroizing::new(args.password.clone()),
    };
    match run_admin(dir, request)? {
        Response::Done { .. } => tracing::info!("demo user {} created", args.user),
        Response::Error {
            kind: ErrorKind::Exists,
            ..
        } => tracing::info!("demo user {} exists; its password is unchanged", args.user),
        Response::Error { message, .. } => bail!("creating the demo user: {message}"),
        other => bail!("unexpected answer from the node: {other:?}"),
    }
    Ok(Config::load(dir)?)
}

/// What `create_data_dir` made.
struct Created {
    peer_id: String,
    replica: String,
    network_key: PathBuf,
    network_key_created: bool,
}

/// Creates a data directory: `file` (validated) as its configuration, the
/// node key, the network key (created if missing) and the store. The
/// configuration is written last, so a failed `init` can simply be re-run.
fn create_data_dir(
    dir: &Path,
    mut file: ConfigFile,
    network_key: Option<&Path>,
) -> Result<Created> {
    let config_path = Config::file_path(dir);
    if config_path.exists() {
        bail!(
            "{} already exists: this data directory is initialised",
            config_path.display()
        );
    }
    if let Some(path) = network_key {
        file.p2p.network_key = std::path::absolute(path)
            .with_context(|| format!("{}: cannot resolve", path.display()))?;
    } else {
        file.p2p.network_key = NETWORK_KEY.into();
    }
    let config = file.validate(dir)?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("{}: cannot create the data directory", dir.display()))?;
    let (identity, _) = NodeIdentity::load_or_create(dir)?;
    let (_, network_key_created) = identity::load_or_create_network_key(&config.network_key)?;
    drop(SledStore::open(Node::store_path(dir))?);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&config_path)
        .with_context(|| format!("{}: cannot create", config_path.display()))?;
    f.write_all(file.to_toml().as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("{}: cannot write", config_path.display()))?;
    Ok(Created {
        peer_id: identity.peer_id().to_string(),
        replica: identity.replica_id().to_string(),
        network_key: config.network_key,
        network_key_created,
    })
}

/// `aerogramme init`.
pub fn init(args: &InitArgs) -> Result<()> {
    let file = ConfigFile {
        name: args.name.clone(),
        imap: aerogramme::config::ImapSection {
            listen: args.imap.to_string(),
            ..Default::default()
        },
        lmtp: aerogramme::config::LmtpSection {
            listen: args.lmtp.to_string(),
            ..Default::default()
        },
        p2p: aerogramme::config::P2pSection {
            listen: args.p2p.iter().map(|a| a.to_string()).collect(),
            join: args.join.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        },
        ..ConfigFile::default()
    };
    let created = create_data_dir(&args.data, file, args.network_key.as_deref())?;
    println!("initialised {}", args.data.display());
    println!("peer id     : {}", created.peer_id);
    println!("replica id  : {}", created.replica);
    println!(
        "network key : {} ({})",
        created.network_key.display(),
        if created.network_key_created {
            "created; copy it to every node of the community"
        } else {
            "reused"
        }
    );
    Ok(())
}

/// `aerogramme serve`.
pub fn serve(args: &DataArgs) -> Result<()> {
    serve_dir(&args.data, None)
}

/// Runs the node of data directory `dir` until SIGINT or SIGTERM; `banner`
/// is printed once the listeners are up (for `dev`).
fn serve_dir(dir: &Path, banner: Option<String>) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("installing signal handlers")?;
    let node = Node::open(dir).map_err(|e| match e {
        NodeError::Store(OpenError::Locked { .. }) => {
            anyhow::anyhow!("{e} (is another `aerogramme serve` running on this directory?)")
        }
        e => e.into(),
    })?;
    identity::load_network_key(&node.config.network_key)?;
    let node = Arc::new(node);
    let socket = node.config.admin_socket.clone();
    let server = admin::AdminServer::start(&socket, node.clone())
        .with_context(|| format!("{}: cannot start the admin socket", socket.display()))?;
    let users = node.accounts.list().map(|l| l.len()).unwrap_or(0);
    tracing::info!(
        name = %node.config.name,
        peer_id = %node.peer_id,
        users,
        admin = %socket.display(),
        "starting"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let waiter = std::thread::spawn(move || {
        let signal = signals.forever().next();
        tracing::info!(?signal, "signal");
        let _ = stop_tx.send(());
    });
    let serving = node.clone();
    let result = runtime.block_on(aerogramme::serve::run(node.clone(), async move {
        if let Some(b) = banner {
            let peers: Vec<String> = serving
                .running
                .get()
                .map(|r| r.p2p.listen_addrs())
                .unwrap_or_default()
                .iter()
                .map(|a| format!("{a}/p2p/{}", serving.peer_id))
                .collect();
            println!("{}", b.replace(PEERS, &peers.join(" ")));
        }
        let _ = stop_rx.await;
    }));
    drop(waiter);
    server.stop();
    node.store().flush().context("flushing the store")?;
    result
}

/// Sends `request` to the running node, or runs it on the store directly
/// when no node answers on the admin socket.
fn run_admin(dir: &Path, request: Request) -> Result<Response> {
    let config = Config::load(dir)?;
    if let Some(mut client) = admin::connect(&config.admin_socket, ADMIN_TIMEOUT)? {
        tracing::debug!("sending the command to the running node");
        return Ok(client.request(&request)?);
    }
    let node = Node::open(dir).map_err(|e| match e {
        NodeError::Store(OpenError::Locked { .. }) => anyhow::anyhow!(
            "{e}, but no node answers on {}: is `aerogramme serve` starting or stopping? Retry in a moment",
            config.admin_socket.display()
        ),
        e => e.into(),
    })?;
    Ok(admin::handle(&node, request, false))
}

/// Prints a response; the exit status says whether it was a success.
fn report(response: Response) -> ExitCode {
    match response {
        Response::Pong { name } => println!("node {name} is running"),
        Response::Done { message } => println!("{message}"),
        Response::Users { users } => {
            for u in users {
                println!("{}\t{}", u.name, u.id);
            }
        }
        Response::Status(s) => {
            println!("node        : {}", s.name);
            println!(
                "running     : {}",
                if s.running {
                    "yes"
                } else {
                    "no (read from the store)"
                }
            );
            println!("peer id     : {}", s.peer_id);
            println!("replica id  : {}", s.replica_id);
            println!("users       : {}", s.users);
            if s.running {
                println!("ledgers     : {} owned here", s.ledgers_owned);
            }
            for a in &s.listen {
                println!("listening   : {a}");
            }
            if s.peers.is_empty() {
                println!("peers       : none");
            }
            for p in &s.peers {
                let rtt = p.rtt_us.map_or("-".to_string(), |us| {
                    format!("{:.2} ms", us as f64 / 1000.0)
                });
                println!(
                    "peer        : {} ({}) rtt {rtt}{}{}",
                    p.peer_id,
                    if p.connected {
                        "connected"
                    } else {
                        "disconnected"
                    },
                    if p.queued > 0 {
                        format!(", {} queued", p.queued)
                    } else {
                        String::new()
                    },
                    if p.addresses.is_empty() {
                        String::new()
                    } else {
                        format!(", at {}", p.addresses.join(" "))
                    },
                );
            }
            for l in &s.lag {
                println!(
                    "lag         : {} is {} ops ({} bytes) behind for {}",
                    l.peer_id, l.ops_behind, l.bytes_behind, l.user
                );
            }
        }
        Response::Error { message, .. } => {
            eprintln!("aerogramme: {message}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// `aerogramme user ...`.
pub fn user(command: &UserCommand) -> Result<ExitCode> {
    let mut pw = PasswordSource::new();
    let (dir, request) = match command {
        UserCommand::Add(a) => {
            let password = pw.read_new(&format!("Password for {}: ", a.name))?;
            (
                &a.data,
                Request::UserAdd {
                    name: a.name.clone(),
                    password,
                },
            )
        }
        UserCommand::Passwd(a) => {
            let old_password = pw.read(&format!("Current password of {}: ", a.name))?;
            let new_password = pw.read_new(&format!("New password for {}: ", a.name))?;
            (
                &a.data,
                Request::UserPasswd {
                    name: a.name.clone(),
                    old_password,
                    new_password,
                },
            )
        }
        UserCommand::Remove(a) => (
            &a.data,
            Request::UserRemove {
                name: a.name.clone(),
            },
        ),
        UserCommand::List(a) => (&a.data, Request::UserList),
        UserCommand::Check(a) => {
            let password = pw.read(&format!("Password of {}: ", a.name))?;
            (
                &a.data,
                Request::CheckPassword {
                    name: a.name.clone(),
                    password,
                },
            )
        }
    };
    Ok(report(run_admin(dir, request)?))
}

/// `aerogramme status`.
pub fn status(args: &DataArgs) -> Result<ExitCode> {
    Ok(report(run_admin(&args.data, Request::Status)?))
}
