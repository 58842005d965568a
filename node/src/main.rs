//! `aerogramme`: the node daemon and its command line.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Dev(args) => dev(&args),
    }
}

/// `aerogramme dev`: until the IMAP server lands, say honestly what the
/// command will do and that it does not serve yet.
fn dev(args: &cli::DevArgs) -> ExitCode {
    println!("aerogramme dev — one node with a demo user, for a mail client");
    println!("  data directory : {}", args.data.display());
    println!("  IMAP           : {} (not yet served)", args.imap);
    println!("  LMTP           : {} (not yet served)", args.lmtp);
    println!("  demo user      : {} / {}", args.user, args.password);
    eprintln!(
        "aerogramme: not yet serving: this build has the protocol core only; \
         the IMAP and LMTP servers are not implemented yet"
    );
    ExitCode::from(2)
}
