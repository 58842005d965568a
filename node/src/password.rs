//! Reading passwords: from standard input when it is not a terminal (one
//! per line), else from the terminal without echo.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, IsTerminal};
use zeroize::Zeroizing;

/// Where passwords come from.
pub struct PasswordSource {
    tty: bool,
    lines: Option<std::io::StdinLock<'static>>,
}

impl PasswordSource {
    pub fn new() -> Self {
        let stdin = std::io::stdin();
        let tty = stdin.is_terminal();
        Self {
            tty,
            lines: (!tty).then(|| stdin.lock()),
        }
    }

    /// One password: `prompt` on a terminal, the next line of standard
    /// input otherwise.
    pub fn read(&mut self, prompt: &str) -> Result<Zeroizing<String>> {
        match &mut self.lines {
            None => Ok(Zeroizing::new(
                rpassword::prompt_password(prompt).context("reading the password")?,
            )),
            Some(lines) => {
                let mut line = Zeroizing::new(String::new());
                let n = lines
                    .read_line(&mut line)
                    .context("reading the password from standard input")?;
                if n == 0 {
                    bail!(
                        "standard input ended before the password ({})",
                        prompt.trim_end_matches([':', ' '])
                    );
                }
                let trimmed = line.trim_end_matches(['\n', '\r']).len();
                line.truncate(trimmed);
                Ok(line)
            }
        }
    }

    /// A new password: asked twice on a terminal.
    pub fn read_new(&mut self, prompt: &str) -> Result<Zeroizing<String>> {
        let first = self.read(prompt)?;
        if self.tty {
            let again = self.read("Repeat the new password: ")?;
            if *again != *first {
                bail!("the two passwords differ");
            }
        }
        Ok(first)
    }
}
