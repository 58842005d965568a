//! LIST and LSUB over the backend's flat list of names: wildcard matching
//! (`*`, `%`), parents that do not exist (shown `\Noselect` or
//! `\NonExistent`), `\HasChildren`/`\HasNoChildren`, special-use and
//! subscription attributes, LIST-EXTENDED selection.

use super::backend::MailboxInfo;
use super::listext::ListCommand;
use aerogramme_proto::mailbox::tree::DELIMITER;
use std::collections::{BTreeMap, BTreeSet};

/// One LIST response line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Full name (UTF-8).
    pub name: String,
    /// Attributes, e.g. `\HasChildren`.
    pub attrs: Vec<&'static str>,
    /// Whether the mailbox exists (STATUS may be asked of it).
    pub exists: bool,
    /// RFC 5258 CHILDINFO ("SUBSCRIBED"): with SUBSCRIBED RECURSIVEMATCH,
    /// a descendant is subscribed.
    pub childinfo_subscribed: bool,
}

/// Whether `name` matches an IMAP list pattern.
pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // dp[j]: pattern[..i] matches name[..j].
    let mut dp = vec![false; n.len() + 1];
    dp[0] = true;
    for &pc in &p {
        let mut next = vec![false; n.len() + 1];
        match pc {
            '*' | '%' => {
                let mut reach = false;
                for j in 0..=n.len() {
                    if dp[j] {
                        reach = true;
                    }
                    next[j] = reach;
                    if pc == '%' && j < n.len() && n[j] == DELIMITER {
                        reach = false;
                    }
                }
            }
            c => {
                for j in 0..n.len() {
                    next[j + 1] = dp[j] && n[j] == c;
                }
            }
        }
        dp = next;
    }
    dp[n.len()]
}

/// Reference and pattern as one pattern, INBOX in upper case.
pub fn canonical(reference: &str, pattern: &str) -> String {
    let joined = format!("{reference}{pattern}");
    let (first, rest) = match joined.split_once(DELIMITER) {
        Some((f, r)) => (f, Some(r)),
        None => (joined.as_str(), None),
    };
    if first.eq_ignore_ascii_case("INBOX") {
        match rest {
            Some(r) => format!("INBOX{DELIMITER}{r}"),
            None => "INBOX".into(),
        }
    } else {
        joined
    }
}

fn ancestors(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices(DELIMITER).map(move |(i, _)| &name[..i])
}

fn sorted(mut v: Vec<Entry>) -> Vec<Entry> {
    v.sort_by(|a, b| (a.name != "INBOX", &a.name).cmp(&(b.name != "INBOX", &b.name)));
    v
}

/// LIST (base or extended). `patterns` are canonical.
pub fn list(boxes: &[MailboxInfo], cmd: &ListCommand, patterns: &[String]) -> Vec<Entry> {
    let existing: BTreeMap<&str, &MailboxInfo> =
        boxes.iter().map(|b| (b.name.as_str(), b)).collect();
    let mut all: BTreeSet<&str> = existing.keys().copied().collect();
    for b in boxes {
        all.extend(ancestors(&b.name));
    }
    let has_children = |name: &str| {
        let prefix = format!("{name}{DELIMITER}");
        all.range::<str, _>((std::ops::Bound::Excluded(name), std::ops::Bound::Unbounded))
            .next()
            .is_some_and(|n| n.starts_with(&prefix))
    };
    let mut out = Vec::new();
    for &name in &all {
        if !patterns.iter().any(|p| matches(p, name)) {
            continue;
        }
        let info = existing.get(name);
        // RECURSIVEMATCH (RFC 5258 §3.1): a name that matches the pattern
        // is also returned when a descendant meets the selection, with the
        // CHILDINFO extended data item.
        let childinfo_subscribed = cmd.subscribed
            && cmd.recursive
            && boxes.iter().any(|b| {
                b.subscribed
                    && b.name.len() > name.len() + 1
                    && b.name.starts_with(name)
                    && b.name[name.len()..].starts_with(DELIMITER)
            });
        if cmd.subscribed && !info.is_some_and(|i| i.subscribed) && !childinfo_subscribed {
            continue;
        }
        if cmd.special_use_only && info.is_none_or(|i| i.special_use.is_none()) {
            continue;
        }
        let mut attrs = Vec::new();
        match info {
            None => attrs.push(if cmd.extended {
                "\\NonExistent"
            } else {
                "\\Noselect"
            }),
            Some(i) => {
                if let Some(u) = i.special_use {
                    attrs.push(u.attribute());
                }
                if i.subscribed && (cmd.subscribed || cmd.ret_subscribed) {
                    attrs.push("\\Subscribed");
                }
            }
        }
        attrs.push(if has_children(name) {
            "\\HasChildren"
        } else {
            "\\HasNoChildren"
        });
        out.push(Entry {
            name: name.to_owned(),
            attrs,
            exists: info.is_some(),
            childinfo_subscribed,
        });
    }
    sorted(out)
}

/// LSUB.
pub fn lsub(boxes: &[MailboxInfo], pattern: &str) -> Vec<Entry> {
    let subscribed: BTreeSet<&str> = boxes
        .iter()
        .filter(|b| b.subscribed)
        .map(|b| b.name.as_str())
        .collect();
    let mut out: BTreeMap<&str, Entry> = BTreeMap::new();
    for &name in &subscribed {
        if matches(pattern, name) {
            out.insert(
                name,
                Entry {
                    name: name.to_owned(),
                    attrs: Vec::new(),
                    exists: true,
                    childinfo_subscribed: false,
                },
            );
        } else {
            for a in ancestors(name) {
                if !subscribed.contains(a) && matches(pattern, a) {
                    out.entry(a).or_insert_with(|| Entry {
                        name: a.to_owned(),
                        attrs: vec!["\\Noselect"],
                        exists: false,
                        childinfo_subscribed: false,
                    });
                }
            }
        }
    }
    sorted(out.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aerogramme_proto::mailbox::SpecialUse;

    fn mb(name: &str, sub: bool, su: Option<SpecialUse>) -> MailboxInfo {
        MailboxInfo {
            name: name.into(),
            special_use: su,
            subscribed: sub,
        }
    }

    #[test]
    fn wildcards() {
        assert!(matches("*", "a/b/c"));
        assert!(matches("%", "a"));
        assert!(!matches("%", "a/b"));
        assert!(matches("a/%", "a/b"));
        assert!(!matches("a/%", "a/b/c"));
        assert!(matches("a/*", "a/b/c"));
        assert!(matches("*c", "a/b/c"));
        assert!(matches("%/%", "a/b"));
        assert!(!matches("a", "ab"));
        assert!(matches("", ""));
        assert!(!matches("%*%*%*%*%*%*%*%*%*x", &"a/".repeat(500)));
        assert_eq!(canonical("", "inbox/x"), "INBOX/x");
        assert_eq!(canonical("Arch", "ive/%"), "Archive/%");
    }

    #[test]
    fn listing() {
        let boxes = vec![
            mb("INBOX", true, None),
            mb("Sent", true, Some(SpecialUse::Sent)),
            mb("a/b/c", true, None),
            mb("a/x", false, None),
        ];
        let base = ListCommand::default();
        let names = |v: Vec<Entry>| {
            v.into_iter()
                .map(|e| format!("{} {:?}", e.name, e.attrs))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(list(&boxes, &base, &["%".into()])),
            vec![
                "INBOX [\"\\\\HasNoChildren\"]",
                "Sent [\"\\\\Sent\", \"\\\\HasNoChildren\"]",
                "a [\"\\\\Noselect\", \"\\\\HasChildren\"]",
            ]
        );
        assert_eq!(list(&boxes, &base, &["*".into()]).len(), 6);
        let sub = ListCommand {
            subscribed: true,
            extended: true,
            ..Default::default()
        };
        assert_eq!(
            names(list(&boxes, &sub, &["*".into()])),
            vec![
                "INBOX [\"\\\\Subscribed\", \"\\\\HasNoChildren\"]",
                "Sent [\"\\\\Sent\", \"\\\\Subscribed\", \"\\\\HasNoChildren\"]",
                "a/b/c [\"\\\\Subscribed\", \"\\\\HasNoChildren\"]",
            ]
        );
        let su = ListCommand {
            special_use_only: true,
            extended: true,
            ..Default::default()
        };
        assert_eq!(list(&boxes, &su, &["*".into()]).len(), 1);
        assert_eq!(
            names(lsub(&boxes, "%")),
            vec!["INBOX []", "Sent []", "a [\"\\\\Noselect\"]"]
        );
        assert_eq!(lsub(&boxes, "*").len(), 3);
    }

    #[test]
    fn recursivematch_childinfo() {
        let boxes = vec![
            mb("INBOX", true, None),
            mb("a", false, None),
            mb("a/b", false, None),
            mb("a/b/c", true, None),
            mb("d", true, None),
            mb("d/e", true, None),
            mb("f", false, None),
        ];
        let cmd = ListCommand {
            subscribed: true,
            recursive: true,
            extended: true,
            ..Default::default()
        };
        let got = |pattern: &str| {
            list(&boxes, &cmd, &[pattern.into()])
                .into_iter()
                .map(|e| (e.name, e.childinfo_subscribed))
                .collect::<Vec<_>>()
        };
        let own = |v: &[(&str, bool)]| {
            v.iter()
                .map(|(n, c)| (n.to_string(), *c))
                .collect::<Vec<_>>()
        };
        // "a" is returned for its subscribed grandchild; "f" is not.
        assert_eq!(got("%"), own(&[("INBOX", false), ("a", true), ("d", true)]));
        assert_eq!(
            got("*"),
            own(&[
                ("INBOX", false),
                ("a", true),
                ("a/b", true),
                ("a/b/c", false),
                ("d", true),
                ("d/e", false),
            ])
        );
        // Without RECURSIVEMATCH, only what is subscribed, and no CHILDINFO.
        let plain = ListCommand {
            recursive: false,
            ..cmd.clone()
        };
        let names: Vec<_> = list(&boxes, &plain, &["%".into()])
            .into_iter()
            .map(|e| (e.name, e.childinfo_subscribed))
            .collect();
        assert_eq!(names, own(&[("INBOX", false), ("d", false)]));
    }
}
