//! `aerogramme`: the node daemon and its command line.

mod cli;
mod commands;
mod password;

use clap::Parser;
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system's allocator: the node allocates and
/// frees message-sized buffers (decrypted chunks, whole messages) on one
/// thread and often frees them on another, where glibc's malloc spent a
/// fifth of a whole-mailbox FETCH's time sorting its bins.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // RUST_LOG overrides; by default the daemon reports what it does and
    // one-shot commands only warnings (their result goes to stdout).
    let default = match cli.command {
        cli::Command::Serve(_) | cli::Command::Dev(_) => "warn,aerogramme=info",
        _ => "warn",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .compact()
        .init();
    let result = match &cli.command {
        cli::Command::Dev(args) => return commands::dev(args),
        cli::Command::Init(args) => commands::init(args).map(|()| ExitCode::SUCCESS),
        cli::Command::Serve(args) => commands::serve(args).map(|()| ExitCode::SUCCESS),
        cli::Command::User(args) => commands::user(&args.command),
        cli::Command::Status(args) => commands::status(args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("aerogramme: {e:#}");
        ExitCode::FAILURE
    })
}
