//! The configuration file: the documented example, defaults, and errors
//! that name the key at fault.

use aerogramme::config::{Config, ConfigError, ConfigFile};
use std::collections::BTreeSet;
use std::path::Path;

/// The ```toml block of CONFIG.md's "Example with every key" section.
fn documented_example() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/CONFIG.md")).unwrap();
    let section = doc
        .split("## Example with every key")
        .nth(1)
        .expect("example section");
    let block = section.split("```toml\n").nth(1).expect("toml block");
    block.split("```").next().unwrap().to_string()
}

/// Dotted names of every leaf key of a TOML table.
fn leaf_keys(prefix: &str, table: &toml::Table, out: &mut BTreeSet<String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => leaf_keys(&key, t, out),
            _ => {
                out.insert(key);
            }
        }
    }
}

/// Every key the code knows: the default file with the optional keys set.
fn all_keys() -> BTreeSet<String> {
    let mut f = ConfigFile::default();
    f.tls.cert = Some("c".into());
    f.tls.key = Some("k".into());
    f.imap.tls_listen = Some("0.0.0.0:993".into());
    f.p2p.mdns = Some(false);
    let table: toml::Table = toml::from_str(&toml::to_string(&f).unwrap()).unwrap();
    let mut keys = BTreeSet::new();
    leaf_keys("", &table, &mut keys);
    keys
}

#[test]
fn documented_example_parses_and_names_every_key() {
    let text = documented_example();
    let file = ConfigFile::parse(&text).unwrap();
    let c = file.validate(Path::new("/var/lib/aerogramme")).unwrap();
    assert_eq!(c.name, "paris-1");
    assert_eq!(c.imap.to_string(), "0.0.0.0:143");
    assert_eq!(
        c.imap_tls.map(|a| a.to_string()).as_deref(),
        Some("0.0.0.0:993")
    );
    assert_eq!(c.lmtp_domains, ["example.org", "example.net"]);
    assert_eq!(c.join.len(), 2);
    assert_eq!(c.admin_socket, Path::new("/var/lib/aerogramme/admin.sock"));
    assert_eq!(c.argon2.parallelism, 2);
    assert_eq!(c.login.window.as_secs(), 300);

    let mut documented = BTreeSet::new();
    leaf_keys("", &toml::from_str(&text).unwrap(), &mut documented);
    assert_eq!(
        documented,
        all_keys(),
        "CONFIG.md's example and the code differ"
    );
    // And every key has a row in the reference table.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/CONFIG.md")).unwrap();
    for key in all_keys() {
        assert!(
            doc.contains(&format!("| `{key}` |")),
            "{key} has no row in CONFIG.md"
        );
    }
}

fn error_of(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("aerogramme.toml"), text).unwrap();
    match Config::load(dir.path()) {
        Ok(c) => panic!("accepted {text:?}: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_files_name_the_key() {
    let cases = [
        ("colour = \"blue\"", "colour"),
        ("[imap]\nport = 143", "port"),
        ("[accounts.argon2]\nrounds = 3", "rounds"),
        ("[imap]\nlisten = \"localhost\"", "imap.listen"),
        ("[imap]\ntls_listen = \"0.0.0.0:993\"", "imap.tls_listen"),
        (
            "[imap]\nallow_plaintext_auth = \"yes\"",
            "allow_plaintext_auth",
        ),
        ("[lmtp]\ndomains = [\"not a domain\"]", "lmtp.domains"),
        ("[lmtp]\nlisten = \"127.0.0.1:99999\"", "lmtp.listen"),
        ("[imap]\nlisten = 1143", "listen"),
        ("name = \"\"", "name"),
        ("name = \"a b\"", "name"),
        ("[tls]\ncert = \"c.pem\"", "tls.key"),
        ("[tls]\nkey = \"k.pem\"", "tls.cert"),
        ("[p2p]\nlisten = [\"/ip4/1.2.3.4/tcp/x\"]", "p2p.listen"),
        ("[p2p]\njoin = [\"192.0.2.1:4001\"]", "p2p.join"),
        ("[p2p]\nnetwork_key = \"\"", "p2p.network_key"),
        ("[admin]\nsocket = \"\"", "admin.socket"),
        (
            &format!("[admin]\nsocket = \"{}\"", "s".repeat(120)),
            "admin.socket",
        ),
        (
            "[accounts]\nkey_cache_secs = 100000",
            "accounts.key_cache_secs",
        ),
        ("[accounts]\nkey_cache_secs = -1", "key_cache_secs"),
        (
            "[accounts.argon2]\niterations = 0",
            "accounts.argon2.iterations",
        ),
        (
            "[accounts.argon2]\nmemory_kib = 4",
            "accounts.argon2.memory_kib",
        ),
        (
            "[accounts.argon2]\nparallelism = 0",
            "accounts.argon2.parallelism",
        ),
        (
            "[login]\nmax_failures_per_user = 0",
            "login.max_failures_per_user",
        ),
        (
            "[login]\nmax_failures_per_address = 0",
            "login.max_failures_per_address",
        ),
        (
            "[login]\nfailure_window_secs = 0",
            "login.failure_window_secs",
        ),
        ("name = ", "name"),
    ];
    for (text, key) in cases {
        let e = error_of(text);
        assert!(e.contains(key), "{text:?}: error {e:?} does not name {key}");
    }
}

#[test]
fn missing_file_says_to_init() {
    let dir = tempfile::tempdir().unwrap();
    let e = Config::load(dir.path()).unwrap_err();
    assert!(matches!(e, ConfigError::Missing { .. }));
    assert!(e.to_string().contains("aerogramme init"));
}

#[test]
fn defaults_follow_the_design() {
    let c = ConfigFile::parse("")
        .unwrap()
        .validate(Path::new("/d"))
        .unwrap();
    assert_eq!(c.imap.to_string(), "127.0.0.1:1143");
    assert_eq!(c.lmtp.to_string(), "127.0.0.1:1024");
    assert_eq!(c.p2p_listen[0].to_string(), "/ip4/0.0.0.0/tcp/4001");
    assert!(c.join.is_empty());
    assert_eq!(c.admin_socket, Path::new("/d/admin.sock"));
    assert_eq!(c.key_cache.as_secs(), 600);
    assert_eq!(
        (
            c.login.per_user,
            c.login.per_address,
            c.login.window.as_secs()
        ),
        (5, 20, 60)
    );
}
