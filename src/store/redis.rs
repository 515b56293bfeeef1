//! `RedisStore`: a `TokenStore` in Redis, shared by replicas on many machines.

use std::{convert::Infallible, fmt, sync::Arc, time::Duration};

use redis::{
    Client, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Script, Value,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use tokio::{sync::broadcast, task::JoinHandle};

use super::{StoreFuture, StoreKey, StoredPair, TokenStore};
use crate::{Error, error::Kind};

/// Writes the pair if the stored version is the expected one, and publishes the key. A value
/// that is not a JSON object with a numeric `version` counts as version 0, as absent does.
const COMPARE_AND_SET: &str = r"
local current = redis.call('GET', KEYS[1])
local version = 0
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and type(decoded) == 'table' and type(decoded.version) == 'number' then
    version = decoded.version
  end
end
if version ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
";

/// Deletes the lease only if `owner` still holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// A [`TokenStore`] in Redis (feature `redis`), so that replicas on any number of machines
/// share each subscriber's refresh chain.
///
/// Under `PREFIX:pair:HOST/REFERENCE` it keeps the [`StoredPair`] as JSON (both tokens in
/// it: give replicas a Redis that nobody else reads), under `PREFIX:lease:HOST/REFERENCE`
/// the refresh lease (`SET … NX PX ttl`, released by a Lua compare-and-delete), and it
/// publishes each written key on the channel `PREFIX:changes` (from the same Lua script as
/// the compare-and-set, so no write goes unannounced). The default prefix is
/// `signalwire-auth`.
///
/// Commands go through the `redis` crate's [`ConnectionManager`], which reconnects after a
/// failure; each call is bounded by a timeout (default 2 s) and fails with
/// [`Error::is_store`] past it. The change notifications come over a second connection
/// (RESP3), resubscribed after every reconnect and checked with a `PING` every second. The
/// store connects lazily: it can be made while Redis is down.
///
/// ```no_run
/// use signalwire_auth::{
///     CreateSubscriberToken, Credentials, RedisStore, Space, StoreKey, SubscriberRefresher,
///     TokenCache,
/// };
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), signalwire_auth::Error> {
/// let space = Space::new("example")?;
/// let reference = "alice@example.com";
/// let store = RedisStore::new("redis://127.0.0.1:6379/")?;
/// let refresher = SubscriberRefresher::new(space.clone(), Credentials::from_env()?)
///     .with_remint(CreateSubscriberToken::new(reference));
/// // The pair another replica stored, or a fresh one minted and stored for all of them.
/// let cache = TokenCache::from_store(refresher, store, StoreKey::new(&space, reference))
///     .start()
///     .await?;
/// # drop(cache);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    commands: ConnectionManager,
    prefix: Box<str>,
    timeout: Duration,
    compare_and_set: Script,
    release: Script,
    changes: broadcast::Sender<StoreKey>,
    listener: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Settings of a [`RedisStore`]; from [`RedisStore::builder`].
#[derive(Clone)]
#[must_use = "call .build() to get the store"]
pub struct RedisStoreBuilder {
    url: String,
    prefix: String,
    timeout: Duration,
}

impl RedisStore {
    /// A store at `url` (`redis://host:port/db`, `rediss://…` is not built in), with the
    /// default prefix and timeout. Must be called inside a Tokio runtime.
    pub fn new(url: &str) -> Result<Self, Error> {
        Self::builder(url).build()
    }

    /// A store with settings other than the defaults.
    pub fn builder(url: &str) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.to_owned(),
            prefix: "signalwire-auth".to_owned(),
            timeout: Duration::from_secs(2),
        }
    }

    fn pair_key(&self, key: &StoreKey) -> String {
        format!("{}:pair:{key}", self.inner.prefix)
    }

    fn lease_key(&self, key: &StoreKey) -> String {
        format!("{}:lease:{key}", self.inner.prefix)
    }

    /// Runs one command within the timeout.
    async fn run<T>(&self, call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, Error> {
        match tokio::time::timeout(self.inner.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(Error::store(error)),
            Err(_) => Err(Error::store(
                Error::new(Kind::Timeout)
                    .with_detail("redis did not answer within the store's timeout"),
            )),
        }
    }
}

impl RedisStoreBuilder {
    /// The prefix of every key and of the change channel (default `signalwire-auth`).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }

    /// How long one command may take before it fails with [`Error::is_store`] (default 2 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Makes the store; it connects on first use. Fails with [`Error::is_invalid_input`] for
    /// a URL the `redis` crate cannot read, and [`Error::is_no_runtime`] outside a Tokio
    /// runtime (the change listener runs as a task).
    pub fn build(self) -> Result<RedisStore, Error> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::new(Kind::NoRuntime).with_source(e))?;
        let bad_url = |e: redis::RedisError| {
            Error::invalid_input("the redis url cannot be read").with_source(e)
        };
        let info = self.url.as_str().into_connection_info().map_err(bad_url)?;
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let listen_info = info.clone().set_redis_settings(resp3);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let (changes, _) = broadcast::channel(256);
        let commands = {
            let _enter = runtime.enter();
            ConnectionManager::new_lazy_with_config(
                Client::open(info).map_err(bad_url)?,
                config.clone(),
            )
            .map_err(bad_url)?
        };
        let channel = format!("{}:changes", self.prefix);
        let sender = changes.clone();
        let listen_config = config
            .set_push_sender(move |push: PushInfo| {
                forward(&sender, push);
                Ok::<(), Infallible>(())
            })
            .set_automatic_resubscription();
        let listener = {
            let _enter = runtime.enter();
            ConnectionManager::new_lazy_with_config(
                Client::open(listen_info).map_err(bad_url)?,
                listen_config,
            )
            .map_err(bad_url)?
        };
        let listener = runtime.spawn(listen(listener, channel));
        Ok(RedisStore {
            inner: Arc::new(Inner {
                commands,
                prefix: self.prefix.into(),
                timeout: self.timeout,
                compare_and_set: Script::new(COMPARE_AND_SET),
                release: Script::new(RELEASE),
                changes,
                listener,
            }),
        })
    }
}

/// A published key, to the cache's subscribers.
fn forward(sender: &broadcast::Sender<StoreKey>, push: PushInfo) {
    if push.kind != PushKind::Message {
        return;
    }
    let text = match push.data.get(1) {
        Some(Value::BulkString(bytes)) => std::str::from_utf8(bytes).ok(),
        Some(Value::SimpleString(text)) => Some(text.as_str()),
        _ => None,
    };
    if let Some(key) = text.and_then(StoreKey::parse) {
        // Nobody subscribed is no error.
        let _ = sender.send(key);
    }
}

/// Subscribes, then pings every second: a ping that fails makes the manager reconnect, and
/// it resubscribes on its own. Until the first subscription succeeds, it retries.
async fn listen(mut connection: ConnectionManager, channel: String) {
    let mut subscribed = false;
    loop {
        if !subscribed {
            match connection.subscribe(&channel).await {
                Ok(()) => subscribed = true,
                Err(error) => {
                    tracing::debug!(%error, "redis store: subscribing to changes failed; retrying");
                }
            }
        } else if let Err(error) = redis::cmd("PING")
            .query_async::<Value>(&mut connection)
            .await
        {
            tracing::debug!(%error, "redis store: change connection lost; reconnecting");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl TokenStore for RedisStore {
    fn load<'a>(&'a self, key: &'a StoreKey) -> StoreFuture<'a, Option<StoredPair>> {
        Box::pin(async move {
            let mut commands = self.inner.commands.clone();
            let name = self.pair_key(key);
            let json: Option<Vec<u8>> = self
                .run(redis::cmd("GET").arg(&name).query_async(&mut commands))
                .await?;
            json.map(|json| StoredPair::from_json(&json)).transpose()
        })
    }

    fn compare_and_set<'a>(
        &'a self,
        key: &'a StoreKey,
        expected_version: u64,
        pair: &'a StoredPair,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut commands = self.inner.commands.clone();
            let mut call = self.inner.compare_and_set.key(self.pair_key(key));
            call.arg(expected_version)
                .arg(pair.to_json())
                .arg(format!("{}:changes", self.inner.prefix))
                .arg(key.as_str());
            let written: i64 = self.run(call.invoke_async(&mut commands)).await?;
            Ok(written == 1)
        })
    }

    fn acquire_lease<'a>(
        &'a self,
        key: &'a StoreKey,
        owner: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut commands = self.inner.commands.clone();
            let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let set: Option<String> = self
                .run(
                    redis::cmd("SET")
                        .arg(self.lease_key(key))
                        .arg(owner)
                        .arg("NX")
                        .arg("PX")
                        .arg(millis)
                        .query_async(&mut commands),
                )
                .await?;
            Ok(set.is_some())
        })
    }

    fn release_lease<'a>(&'a self, key: &'a StoreKey, owner: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut commands = self.inner.commands.clone();
            let mut call = self.inner.release.key(self.lease_key(key));
            call.arg(owner);
            let deleted: i64 = self.run(call.invoke_async(&mut commands)).await?;
            Ok(deleted == 1)
        })
    }

    fn changes(&self) -> broadcast::Receiver<StoreKey> {
        self.inner.changes.subscribe()
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the URL: it may hold a password.
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
