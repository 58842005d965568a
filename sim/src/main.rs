//! `aerogramme-sim`: the deterministic simulator (not implemented yet).

fn main() -> std::process::ExitCode {
    eprintln!("aerogramme-sim: the simulator is not implemented yet");
    std::process::ExitCode::from(2)
}
