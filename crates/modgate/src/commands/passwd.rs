//! `modgate passwd USER [--groups a,b] [--cost N]`: prints one users-file line,
//! `USER:<bcrypt hash>[:group,group]`, for a password read from standard input (one line; never
//! from the command line, where other users could read it). The line is checked with the same
//! parser the gateway reads the users file with before it is printed.

use std::io::{BufRead, IsTerminal, Read};
use std::path::Path;

use anyhow::Context;
use modgate_identity::UserDb;

use super::{Exit, Outcome};

/// bcrypt's work factor when none is given: tens of milliseconds per check, which the gateway
/// pays once per user per five minutes (successful checks are cached).
pub const DEFAULT_COST: u32 = 10;

/// Longest standard input read (a password is one line).
const MAX_INPUT: u64 = 4096;

/// What to write (the command line of `modgate passwd`; the field comments are its help).
#[derive(clap::Args)]
pub struct Request {
    /// User name (no whitespace, ':' or leading '#').
    pub user: String,
    /// Groups, comma-separated (or repeat the flag).
    #[arg(long, value_delimiter = ',', value_name = "GROUP,...")]
    pub groups: Vec<String>,
    /// bcrypt cost (work factor, 4 to 16, as the users file accepts; each step doubles the time of a check).
    #[arg(long, default_value_t = DEFAULT_COST,
          value_parser = clap::value_parser!(u32).range(4..=16))]
    pub cost: u32,
}

/// Refuses a user name or group the users file (or a Basic credential) could not carry: the
/// file's fields are separated by `:` and groups by `,`; the parser trims fields, refuses
/// whitespace and control characters, and reads a line starting with `#` as a comment.
fn check_names(user: &str, groups: &[String]) -> anyhow::Result<()> {
    let bad = |what: &str, s: &str, why: &str| anyhow::anyhow!("{what} {s:?}: {why}");
    let common = |what: &str, s: &str| -> anyhow::Result<()> {
        if s.is_empty() {
            return Err(bad(what, s, "empty"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(what, s, "contains whitespace or a control character"));
        }
        if s.contains(':') {
            return Err(bad(
                what,
                s,
                "contains ':', the users file's field separator",
            ));
        }
        Ok(())
    };
    common("user name", user)?;
    if user.starts_with('#') {
        return Err(bad(
            "user name",
            user,
            "starts with '#', which makes the line a comment",
        ));
    }
    for g in groups {
        common("group", g)?;
        if g.contains(',') {
            return Err(bad("group", g, "contains ',', the groups separator"));
        }
    }
    Ok(())
}

/// The password: the first line of `input`, without its line ending. More lines, an empty
/// password, a control character or more than bcrypt's 72 bytes are refused.
fn password_from(input: &str) -> anyhow::Result<String> {
    let (first, rest) = input.split_once('\n').unwrap_or((input, ""));
    anyhow::ensure!(
        rest.trim().is_empty(),
        "standard input has more than one line; give the password alone on one line"
    );
    let pw = first.strip_suffix('\r').unwrap_or(first);
    anyhow::ensure!(!pw.is_empty(), "empty password (read from standard input)");
    anyhow::ensure!(
        !pw.chars().any(char::is_control),
        "the password contains a control character"
    );
    anyhow::ensure!(
        pw.len() <= 72,
        "the password is {} bytes; bcrypt uses only the first 72, so the rest would not count",
        pw.len()
    );
    Ok(pw.to_string())
}

/// Hashes the password and builds the users-file line, then reads it back with the gateway's
/// own parser: the line must name exactly this user with exactly these groups.
fn line_for(req: &Request, password: &str) -> anyhow::Result<String> {
    check_names(&req.user, &req.groups)?;
    let mut groups: Vec<&str> = Vec::new();
    for g in &req.groups {
        if !groups.contains(&g.as_str()) {
            groups.push(g);
        }
    }
    let hash = bcrypt::non_truncating_hash(password, req.cost).context("hashing the password")?;
    let line = if groups.is_empty() {
        format!("{}:{hash}", req.user)
    } else {
        format!("{}:{hash}:{}", req.user, groups.join(","))
    };
    let db = UserDb::parse(Path::new("<modgate passwd>"), &line)?;
    anyhow::ensure!(
        db.len() == 1
            && db.contains(&req.user)
            && db
                .groups(&req.user)
                .is_some_and(|g| g.iter().map(String::as_str).eq(groups.iter().copied())),
        "the users-file parser does not read the line back as user {:?} with groups {groups:?}",
        req.user
    );
    Ok(line)
}

/// Turns terminal echo off for as long as it lives (when standard input is a terminal).
struct EchoOff(Option<rustix::termios::Termios>);

impl EchoOff {
    fn new() -> EchoOff {
        use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(&stdin) else {
            return EchoOff(None);
        };
        let mut t = saved.clone();
        t.local_modes.remove(LocalModes::ECHO);
        if tcsetattr(&stdin, OptionalActions::Now, &t).is_err() {
            return EchoOff(None);
        }
        EchoOff(Some(saved))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                saved,
            );
        }
    }
}

/// Reads standard input: one line from a terminal (prompted, not echoed), else all of it (up to
/// [`MAX_INPUT`] bytes).
fn read_input(user: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let mut text = String::new();
    if stdin.is_terminal() {
        eprint!("password for {user}: ");
        let echo = EchoOff::new();
        let read = stdin.lock().read_line(&mut text);
        drop(echo);
        eprintln!();
        read.context("reading the password from the terminal")?;
    } else {
        stdin
            .lock()
            .take(MAX_INPUT + 1)
            .read_to_string(&mut text)
            .context("reading the password from standard input")?;
        anyhow::ensure!(
            text.len() as u64 <= MAX_INPUT,
            "standard input is longer than {MAX_INPUT} bytes; give the password alone on one line"
        );
    }
    Ok(text)
}

/// `modgate passwd`.
pub fn passwd(req: &Request) -> Outcome {
    // Names first: a bad one is refused before a password is asked for.
    check_names(&req.user, &req.groups)?;
    let password = password_from(&read_input(&req.user)?)?;
    if password.chars().any(char::is_whitespace) {
        eprintln!(
            "modgate: warning: the password contains whitespace, which a .netrc file (where the \
             go command reads credentials) cannot hold"
        );
    }
    println!("{}", line_for(req, &password)?);
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    use modgate_identity::{Authenticator, Presented};

    fn req(user: &str, groups: &[String]) -> Request {
        Request {
            user: user.to_owned(),
            groups: groups.to_vec(),
            cost: 4,
        }
    }

    #[test]
    fn the_line_is_read_back_by_the_gateways_parser_and_the_password_verifies() {
        let groups = vec!["staff".to_string(), "ops".into(), "staff".into()];
        let line = line_for(&req("alice", &groups), "s3cret pass").expect("line");
        let parts: Vec<&str> = line.split(':').collect();
        assert_eq!(parts.len(), 3, "{line}");
        assert_eq!(parts[0], "alice");
        assert!(parts[1].starts_with("$2b$04$"), "{line}");
        assert_eq!(parts[2], "staff,ops");
        let db = UserDb::parse(Path::new("users"), &line).expect("parse");
        assert_eq!(
            db.groups("alice").expect("alice"),
            &["staff".to_string(), "ops".into()]
        );
        let auth = Authenticator::new(Some(db), None);
        let ok = auth
            .verify(&Presented::Basic {
                user: "alice".into(),
                password: "s3cret pass".into(),
            })
            .expect("accepted");
        assert_eq!(ok.name, "alice");
        assert!(auth
            .verify(&Presented::Basic {
                user: "alice".into(),
                password: "wrong".into(),
            })
            .is_err());
        // No groups: two fields.
        let line = line_for(&req("bob", &[]), "pw").expect("line");
        assert_eq!(line.split(':').count(), 2, "{line}");
    }

    #[test]
    fn names_the_file_cannot_carry_are_refused() {
        let g = |s: &str| vec![s.to_string()];
        for (user, groups, why) in [
            ("al:ice", vec![], "':'"),
            ("#alice", vec![], "comment"),
            ("al ice", vec![], "whitespace"),
            ("", vec![], "empty"),
            ("alice\t", vec![], "whitespace"),
            ("alice", g("a:b"), "':'"),
            ("alice", g("a b"), "whitespace"),
            ("alice", g(""), "empty"),
            ("alice", g("a,b"), "','"),
        ] {
            let e = check_names(user, &groups).expect_err(user).to_string();
            assert!(e.contains(why), "{user:?} {groups:?}: {e}");
        }
        check_names("alice@corp.example", &g("dev-ops")).expect("fine");
    }

    #[test]
    fn the_password_is_one_line() {
        assert_eq!(password_from("pw\n").expect("pw"), "pw");
        assert_eq!(password_from("pw\r\n").expect("pw"), "pw");
        assert_eq!(password_from("pw").expect("pw"), "pw");
        assert_eq!(password_from("pw\n\n").expect("pw"), "pw");
        assert!(password_from("pw\nmore\n").is_err());
        assert!(password_from("\n").is_err());
        assert!(password_from("").is_err());
        assert!(password_from("p\x07w\n").is_err());
        assert!(password_from(&"x".repeat(73)).is_err());
        assert!(password_from(&"x".repeat(72)).is_ok());
    }
}
