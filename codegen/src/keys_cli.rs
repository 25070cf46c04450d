//! `specgate keys`: create, list, revoke and rotate the API keys that the generated
//! gateway's `api-key-inbound` policy checks, in the keys file or in Redis.
//!
//! The store is chosen like the gateway chooses it, so the command edits what the gateway
//! reads: `--file PATH` or `--redis URL` when given, otherwise `API_KEYS_REDIS_URL` when set,
//! otherwise `API_KEYS_FILE`, otherwise `api-keys.json` (variables from the environment or
//! the `.env` file of the working directory). Prefer `API_KEYS_REDIS_URL` over `--redis`
//! when the URL holds a password: arguments are visible to other local users.
//!
//! Keys are printed once, alone on a line on stdout (so `KEY=$(specgate keys create ...)`
//! works); everything else goes to stderr. Stores keep only `sha256(key)`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use specgate_runtime::keys::{self, CreateKey, KeyStore, StoreConfig};

/// Options of `specgate keys`.
#[derive(Debug, Clone, Args)]
pub struct KeysArgs {
    /// The keys file [default: $API_KEYS_FILE, else api-keys.json; $API_KEYS_REDIS_URL wins when set].
    #[arg(long, global = true, value_name = "PATH", conflicts_with = "redis")]
    pub file: Option<PathBuf>,
    /// A Redis URL (redis://[user:password@]host:port[/db]) instead of the file.
    #[arg(long, global = true, value_name = "URL")]
    pub redis: Option<String>,
    /// The bucket (the policy's bucketName).
    #[arg(long, global = true, value_name = "NAME", default_value = keys::DEFAULT_BUCKET)]
    pub bucket: String,
    /// What to do.
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// The `specgate keys` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Make a key (creating the consumer when new) and print it once.
    ///
    /// Example: specgate keys create --consumer acme --metadata '{"plan":"gold"}' --tag partner --expires-in 90d
    Create {
        /// The consumer's name (request.user.sub).
        #[arg(long)]
        consumer: String,
        /// A JSON object for request.user.data (replaces the consumer's metadata).
        #[arg(long, value_name = "JSON")]
        metadata: Option<String>,
        /// A tag to add to the consumer (repeatable).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// Let the key expire after this long (30d, 12h, 15m, 45s, 2w, or combined: 1d12h).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expires_in: Option<Duration>,
    },
    /// Print the consumers with their key ids, tags and expiry (never keys or hashes).
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Delete one key of a consumer, or all of them.
    ///
    /// Example: specgate keys revoke --consumer acme --key-id zpka_abcdefgh
    Revoke {
        /// The consumer.
        #[arg(long)]
        consumer: String,
        /// The key's id as `list` shows it (without it: every key of the consumer).
        #[arg(long, value_name = "ID")]
        key_id: Option<String>,
    },
    /// Make a new key and let the consumer's current keys expire after a grace period.
    ///
    /// Example: specgate keys rotate --consumer acme --grace 7d
    Rotate {
        /// The consumer.
        #[arg(long)]
        consumer: String,
        /// How long the current keys keep working (0s: stop them now).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        grace: Duration,
        /// Let the new key expire after this long.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expires_in: Option<Duration>,
    },
}

/// Parses `30d`, `12h`, `15m`, `45s`, `2w` and sums like `1d12h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".to_owned());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(format!("`{s}`: unknown unit `{c}` (use s, m, h, d or w)")),
        };
        let n: u64 = digits.parse().map_err(|_| format!("`{s}`: a number must come before `{c}`"))?;
        digits.clear();
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(|| format!("`{s}` is too long"))?;
    }
    if !digits.is_empty() {
        return Err(format!("`{s}`: the last number has no unit (use s, m, h, d or w, as in 30d)"));
    }
    // Unix seconds are i64 in the stores.
    if total > i64::MAX as u64 / 2 {
        return Err(format!("`{s}` is too long"));
    }
    Ok(Duration::from_secs(total))
}

/// The store the command works on (see the module documentation).
pub fn store_config(args: &KeysArgs, env: &dyn Fn(&str) -> Option<String>) -> StoreConfig {
    match (&args.file, &args.redis) {
        (Some(f), _) => StoreConfig::File(f.clone()),
        (None, Some(r)) => StoreConfig::Redis(r.clone()),
        (None, None) => StoreConfig::from_lookup(env),
    }
}

/// Runs `specgate keys` with variables from the environment and `.env`; errors go to stderr.
pub fn main(args: &KeysArgs) -> ExitCode {
    let env = specgate_runtime::env::Environment::load();
    let lookup = |name: &str| env.get(name);
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    match run(args, &lookup, &mut out, &mut err) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Opens the store and runs the command on a runtime of its own.
pub fn run(
    args: &KeysArgs,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), String> {
    let config = store_config(args, env);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async {
        // Opened inside the runtime: the Redis connection needs one.
        let store = KeyStore::open(&config, &args.bucket).map_err(|e| format!("{}: {e}", config.describe()))?;
        execute(&args.command, &store, out, err).await
    })
}

/// Runs one command against an open store.
pub async fn execute(command: &KeysCommand, store: &KeyStore, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), String> {
    let place = format!("bucket `{}` ({})", store.bucket(), store.config().describe());
    let io = |e: std::io::Error| e.to_string();
    match command {
        KeysCommand::Create { consumer, metadata, tags, expires_in } => {
            let metadata = match metadata {
                Some(text) => match serde_json::from_str::<Value>(text) {
                    Ok(Value::Object(m)) => Some(m),
                    Ok(_) => return Err("--metadata must be a JSON object".to_owned()),
                    Err(e) => return Err(format!("--metadata is not valid JSON: {e}")),
                },
                None => None,
            };
            let expires_at = expires_in.map(|d| keys::now_unix().saturating_add(secs(d)));
            let request = CreateKey { consumer: consumer.clone(), metadata, tags: tags.clone(), expires_at };
            let new = store.create_key(request).await.map_err(|e| e.to_string())?;
            writeln!(out, "{}", new.key).map_err(io)?;
            out.flush().map_err(io)?;
            writeln!(
                err,
                "created key {}… for {} consumer `{}` in {place}; {}. It is shown only this once.",
                new.id,
                if new.created_consumer { "new" } else { "existing" },
                new.consumer,
                expiry_text(new.expires_at),
            )
            .map_err(io)?;
        }
        KeysCommand::List { json } => {
            let consumers = store.list().await.map_err(|e| e.to_string())?;
            let now = keys::now_unix();
            if *json {
                let view: Vec<Value> = consumers
                    .iter()
                    .map(|c| {
                        let keys: Vec<Value> = c
                            .keys
                            .iter()
                            .map(|k| json!({"id": k.id, "createdAt": k.created_at, "expiresAt": k.expires_at, "expired": k.is_expired_at(now)}))
                            .collect();
                        json!({"name": c.name, "metadata": c.metadata, "tags": c.tags, "keys": keys})
                    })
                    .collect();
                let text = serde_json::to_string_pretty(&view).map_err(|e| e.to_string())?;
                writeln!(out, "{text}").map_err(io)?;
            } else if consumers.is_empty() {
                writeln!(err, "no consumers in {place}").map_err(io)?;
            } else {
                for c in &consumers {
                    let tags = if c.tags.is_empty() { String::new() } else { format!("  tags: {}", c.tags.join(", ")) };
                    let meta = if c.metadata.is_empty() { String::new() } else { format!("  metadata: {}", Value::Object(c.metadata.clone())) };
                    writeln!(out, "{}{tags}{meta}", c.name).map_err(io)?;
                    if c.keys.is_empty() {
                        writeln!(out, "  (no keys)").map_err(io)?;
                    }
                    for k in &c.keys {
                        let state = if k.is_expired_at(now) { "  (expired)" } else { "" };
                        writeln!(out, "  {}…  created {}  {}{state}", k.id, keys::rfc3339(k.created_at), expiry_text(k.expires_at))
                            .map_err(io)?;
                    }
                }
            }
        }
        KeysCommand::Revoke { consumer, key_id } => {
            let n = store.revoke(consumer, key_id.as_deref()).await.map_err(|e| e.to_string())?;
            writeln!(err, "revoked {n} key{} of consumer `{consumer}` in {place}", if n == 1 { "" } else { "s" }).map_err(io)?;
        }
        KeysCommand::Rotate { consumer, grace, expires_in } => {
            let expires_at = expires_in.map(|d| keys::now_unix().saturating_add(secs(d)));
            let rotated = store.rotate(consumer, *grace, expires_at).await.map_err(|e| e.to_string())?;
            writeln!(out, "{}", rotated.new_key.key).map_err(io)?;
            out.flush().map_err(io)?;
            writeln!(err, "created key {}… for consumer `{consumer}` in {place}; {}", rotated.new_key.id, expiry_text(rotated.new_key.expires_at))
                .map_err(io)?;
            for (id, until) in &rotated.retiring {
                writeln!(err, "  previous key {id}… expires {}", keys::rfc3339(*until)).map_err(io)?;
            }
        }
    }
    Ok(())
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn expiry_text(expires_at: Option<i64>) -> String {
    match expires_at {
        Some(t) => format!("expires {}", keys::rfc3339(t)),
        None => "never expires".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::process::{Child, Command, Stdio};

    use clap::Parser;
    use specgate_runtime::keys::{Outcome, format};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        keys: KeysArgs,
    }

    fn must<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    fn parse(args: &[&str]) -> Result<KeysArgs, String> {
        Cli::try_parse_from(std::iter::once("keys").chain(args.iter().copied())).map(|c| c.keys).map_err(|e| e.to_string())
    }

    /// Runs a command line against a store; returns (stdout, stderr).
    async fn cli(store: &KeyStore, args: &[&str]) -> Result<(String, String), String> {
        let parsed = parse(args)?;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        execute(&parsed.command, store, &mut out, &mut err).await?;
        Ok((String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&err).into_owned()))
    }

    fn temp_file(tag: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let dir = std::env::temp_dir().join(format!("specgate-cli-{tag}-{}-{nanos:x}", std::process::id()));
        must(std::fs::create_dir_all(&dir));
        dir.join("api-keys.json")
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1d12h"), Ok(Duration::from_secs(86_400 + 12 * 3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "30", "d", "3x", "99999999999999999999d", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn store_selection_follows_the_gateway() {
        let none = |_: &str| None;
        let redis_env = |k: &str| (k == "API_KEYS_REDIS_URL").then(|| "redis://r:6379".to_owned());
        let a = must(parse(&["list"]));
        assert_eq!(store_config(&a, &none), StoreConfig::File("api-keys.json".into()));
        assert_eq!(store_config(&a, &redis_env), StoreConfig::Redis("redis://r:6379".into()));
        let a = must(parse(&["list", "--file", "k.json"]));
        assert_eq!(store_config(&a, &redis_env), StoreConfig::File("k.json".into()));
        let a = must(parse(&["--redis", "redis://x", "list", "--bucket", "b"]));
        assert_eq!(store_config(&a, &none), StoreConfig::Redis("redis://x".into()));
        assert_eq!(a.bucket, "b");
        assert!(parse(&["list", "--file", "k.json", "--redis", "redis://x"]).is_err());
        assert!(parse(&["create"]).is_err());
        assert!(parse(&["rotate", "--consumer", "a"]).is_err());
        assert!(parse(&["create", "--consumer", "a", "--expires-in", "soon"]).is_err());
    }

    #[tokio::test]
    async fn file_round_trip() {
        let path = temp_file("file");
        let store = must(KeyStore::open(&StoreConfig::File(path.clone()), "default"));
        let (out, err) = must(cli(&store, &["create", "--consumer", "acme", "--metadata", r#"{"plan":"gold"}"#, "--tag", "partner", "--expires-in", "30d"]).await);
        let key = out.trim_end_matches('\n');
        assert!(format::looks_valid(key), "{out}");
        assert_eq!(out.lines().count(), 1);
        assert!(err.contains("new consumer `acme`") && err.contains("expires"), "{err}");
        assert!(!must(std::fs::read_to_string(&path)).contains(key));

        let (listing, _) = must(cli(&store, &["list"]).await);
        let id = must(format::display_id(key).ok_or("no id"));
        assert!(listing.contains("acme") && listing.contains("partner") && listing.contains(&id), "{listing}");
        assert!(!listing.contains(key) && !listing.contains(&keys::KeyHash::of(key).to_hex()));
        let (json_listing, _) = must(cli(&store, &["list", "--json"]).await);
        let v: Value = must(serde_json::from_str(&json_listing));
        assert_eq!(v[0]["keys"][0]["id"], id.as_str());
        assert!(v[0]["keys"][0].get("hash").is_none());

        assert!(cli(&store, &["create", "--consumer", "x", "--metadata", "[1]"]).await.is_err());
        let (rotated, err) = must(cli(&store, &["rotate", "--consumer", "acme", "--grace", "1h"]).await);
        let new_key = rotated.trim_end_matches('\n');
        assert!(format::looks_valid(new_key) && new_key != key);
        assert!(err.contains(&format!("previous key {id}")), "{err}");
        assert!(matches!(must(store.authenticate(key, Duration::ZERO).await), Outcome::Valid(_)));

        let (_, err) = must(cli(&store, &["revoke", "--consumer", "acme", "--key-id", &id]).await);
        assert!(err.contains("revoked 1 key "), "{err}");
        assert_eq!(must(store.authenticate(key, Duration::ZERO).await), Outcome::Unknown);
        assert!(matches!(must(store.authenticate(new_key, Duration::ZERO).await), Outcome::Valid(_)));
        assert!(cli(&store, &["revoke", "--consumer", "nobody"]).await.is_err());
    }

    #[test]
    fn run_opens_the_store_it_is_told_to() {
        let path = temp_file("run");
        let file = path.to_string_lossy().into_owned();
        let args = must(parse(&["--file", &file, "--bucket", "team", "create", "--consumer", "a"]));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        must(run(&args, &|_| None, &mut out, &mut err));
        let text = must(std::fs::read_to_string(&path));
        assert!(text.contains("\"team\""), "{text}");
        let args = must(parse(&["--redis", "not a url", "list"]));
        assert!(run(&args, &|_| None, &mut Vec::new(), &mut Vec::new()).is_err());
    }

    /// A throwaway `redis-server` on a free loopback port, stopped on drop.
    struct RedisServer {
        child: Child,
        url: String,
    }

    impl RedisServer {
        /// `None` (with a notice) only when the binary is not installed.
        fn start() -> Option<RedisServer> {
            let port = must(TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr())).port();
            let spawned = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let child = match spawned {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    eprintln!("NOTICE: redis-server is not installed; skipping the Redis test (CI installs it)");
                    return None;
                }
                Err(e) => panic!("cannot start redis-server: {e}"),
            };
            let server = RedisServer { child, url: format!("redis://127.0.0.1:{port}/") };
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(std::time::Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            Some(server)
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test]
    async fn redis_replicas_see_keys_and_revocations() {
        let Some(server) = RedisServer::start() else { return };
        let config = StoreConfig::Redis(server.url.clone());
        let admin = must(KeyStore::open(&config, "default"));
        // Two gateway replicas: separate stores, connections and caches.
        let one = must(KeyStore::open(&config, "default"));
        let two = must(KeyStore::open(&config, "default"));
        let ttl = Duration::from_secs(1);

        let (out, _) = must(cli(&admin, &["create", "--consumer", "acme", "--metadata", r#"{"plan":"gold"}"#, "--tag", "p"]).await);
        let key = out.trim_end_matches('\n').to_owned();
        for replica in [&one, &two] {
            let Outcome::Valid(id) = must(replica.authenticate(&key, ttl).await) else { panic!("replica refused a new key") };
            assert_eq!((id.consumer.as_str(), &id.metadata), ("acme", &json!({"plan": "gold"})));
        }
        // Another bucket on the same server sees nothing.
        let other = must(KeyStore::open(&config, "other"));
        assert_eq!(must(other.authenticate(&key, ttl).await), Outcome::Unknown);

        let (listing, _) = must(cli(&admin, &["list"]).await);
        assert!(listing.contains("acme") && !listing.contains(&key), "{listing}");

        must(cli(&admin, &["revoke", "--consumer", "acme"]).await);
        // Within the TTL a replica may still answer from its cache; after it, both refuse.
        tokio::time::sleep(ttl + Duration::from_millis(100)).await;
        for replica in [&one, &two] {
            assert_eq!(must(replica.authenticate(&key, ttl).await), Outcome::Unknown);
        }

        // Rotation through Redis: the old key keeps working for the grace period.
        let (out, _) = must(cli(&admin, &["create", "--consumer", "acme"]).await);
        let old = out.trim_end_matches('\n').to_owned();
        let (out, _) = must(cli(&admin, &["rotate", "--consumer", "acme", "--grace", "1h"]).await);
        let new = out.trim_end_matches('\n').to_owned();
        let Outcome::Valid(o) = must(one.authenticate(&old, Duration::ZERO).await) else { panic!("old key refused in grace") };
        assert!(o.expires_at.is_some());
        assert!(matches!(must(two.authenticate(&new, Duration::ZERO).await), Outcome::Valid(_)));
        // The old key's Redis entry carries a TTL, so it cleans itself up.
        let listed = must(admin.list().await);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].keys.len(), 2);

        // Redis going away: look-ups fail (the policy answers 503), nothing passes.
        drop(server);
        let unknown = must(format::generate());
        assert!(one.authenticate(&unknown, Duration::ZERO).await.is_err());
    }
}
