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

/// mimalloc's `mi_option_purge_delay`: its place in `mi_option_e`
/// (mimalloc.h of the locked version); the bindings name no constant for it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long memory the node freed stays with it before it goes back to the
/// OS, in ms: jemalloc's default decay. mimalloc's own, 1 s, gave memory
/// back between two large commands (a SEARCH, then a STORE over 100k
/// messages), and the second faulted it in again with the kernel zeroing
/// every page; about a tenth of a steady `STORE 1:* +FLAGS`'s CPU.
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// Sets [`PURGE_DELAY_MS`], unless the operator set `MIMALLOC_PURGE_DELAY`.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options, which it reads atomically.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // mimalloc's default purge delay (1000 ms) is at that place: the
        // index names the option meant (an unset environment is assumed).
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: reads one of mimalloc's options.
            let before = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
            assert!(before == 1000 || before == PURGE_DELAY_MS, "{before}");
        }
        keep_freed_memory();
        // SAFETY: as above.
        let after = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert!(std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() || after == PURGE_DELAY_MS);
    }
}
