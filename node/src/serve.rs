//! Running a node: the core, the LMTP and IMAP listeners, until told to
//! stop.

use crate::core::{Core, ImapBackend, LmtpBackend};
use crate::imap::{ImapConfig, ImapServer};
use crate::lmtp::backend::AddressMap;
use crate::lmtp::{LmtpConfig, LmtpServer};
use crate::node::{Node, Running};
use crate::p2p::{P2p, P2pConfig};
use anyhow::{Context, Result};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// Name of the LMTP unix socket in the data directory.
pub const LMTP_SOCKET: &str = "lmtp.sock";

/// The LMTP unix socket of a node.
pub fn lmtp_socket(node: &Node) -> PathBuf {
    node.config.dir.join(LMTP_SOCKET)
}

/// Serves `node` until `stop` completes, then lets sessions end and stops
/// the core (last checkpoint and flush).
pub async fn run(node: Arc<Node>, stop: impl Future<Output = ()> + Send) -> Result<()> {
    let (net_tx, net_rx) = tokio::sync::mpsc::unbounded_channel();
    let known: Vec<(libp2p::PeerId, Vec<libp2p::Multiaddr>)> =
        crate::core::load_members(node.store())
            .into_iter()
            .filter_map(|(_, m)| {
                let peer = libp2p::PeerId::from_bytes(&m.peer_id).ok()?;
                let addrs = m.addresses.iter().filter_map(|a| a.parse().ok()).collect();
                Some((peer, addrs))
            })
            .collect();
    let core = Core::start_with_network(
        node.replica,
        node.store().clone(),
        Some(net_tx),
        Some(node.accounts.clone()),
    )
    .context("starting the core")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let network_key = crate::identity::load_network_key(&node.config.network_key)
        .context("loading the network key")?;
    let users = node.store().users().context("listing users")?;
    let p2p = P2p::start(
        node.identity.keypair(),
        P2pConfig {
            listen: node.config.p2p_listen.clone(),
            join: node.config.join.clone(),
            known,
            network_key,
            allow: node.config.allow.clone(),
            quic: node.config.quic,
            mdns: node.config.mdns,
            kademlia: node.config.kademlia,
        },
        core.handle(),
        users,
        net_rx,
        stop_rx.clone(),
    )
    .await?;
    let _ = node.running.set(Running {
        core: core.handle(),
        p2p: p2p.handle(),
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let lmtp = Arc::new(LmtpServer::new(
        LmtpConfig::new(node.config.name.clone()),
        Arc::new(LmtpBackend::new(
            core.handle(),
            node.accounts.clone(),
            AddressMap::default(),
        )),
    ));
    let tcp = tokio::net::TcpListener::bind(node.config.lmtp)
        .await
        .with_context(|| format!("LMTP: cannot listen on {}", node.config.lmtp))?;
    let unix_path = lmtp_socket(&node);
    let unix = crate::lmtp::server::bind_unix(&unix_path)
        .with_context(|| format!("LMTP: cannot listen on {}", unix_path.display()))?;
    let mut tasks = tokio::task::JoinSet::new();
    {
        let (l, s) = (lmtp.clone(), stopped(stop_rx.clone()));
        tasks.spawn(async move { l.serve_tcp(tcp, s).await });
        let (l, s) = (lmtp.clone(), stopped(stop_rx.clone()));
        tasks.spawn(async move { l.serve_unix(unix, s).await });
    }

    let tls = match &node.config.tls {
        Some(t) => Some(
            crate::imap::tls_acceptor(&t.cert, &t.key).context("loading the TLS certificate")?,
        ),
        None => None,
    };
    let imap_backend = Arc::new(ImapBackend::new(core.handle(), node.clone()));
    let imap_config = ImapConfig {
        allow_plaintext_auth: node.config.allow_plaintext_auth,
        ..ImapConfig::default()
    };
    let mut imap_tasks = Vec::new();
    let plain = tokio::net::TcpListener::bind(node.config.imap)
        .await
        .with_context(|| format!("IMAP: cannot listen on {}", node.config.imap))?;
    imap_tasks.push(
        ImapServer::new(imap_backend.clone(), imap_config.clone(), tls.clone()).spawn(plain, false),
    );
    if let Some(addr) = node.config.imap_tls {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("IMAP: cannot listen on {addr}"))?;
        imap_tasks
            .push(ImapServer::new(imap_backend.clone(), imap_config, tls.clone()).spawn(l, true));
    }
    tracing::info!(
        imap = %node.config.imap,
        imap_tls = ?node.config.imap_tls,
        starttls = tls.is_some(),
        lmtp = %node.config.lmtp,
        lmtp_socket = %unix_path.display(),
        peer_id = %node.peer_id,
        p2p = ?p2p.handle().listen_addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "serving IMAP, LMTP and peers"
    );

    stop.await;
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    for t in imap_tasks {
        t.abort();
    }
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Err(e)) => tracing::warn!("listener: {e}"),
            Err(e) => tracing::warn!("listener task: {e}"),
            Ok(Ok(())) => {}
        }
    }
    let _ = std::fs::remove_file(&unix_path);
    p2p.join().await;
    tokio::task::spawn_blocking(move || core.stop())
        .await
        .context("stopping the core")?;
    Ok(())
}
