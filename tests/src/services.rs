//! Where the services are: the broker, Redis and MySQL of the test run
//! (from the environment `scripts/services.sh` writes, with local
//! defaults), unique names per test, and clean-up of what a test made.

use std::time::{SystemTime, UNIX_EPOCH};

use footprint_connectors::client::KafkaSettings;

/// The broker to test against.
pub fn brokers() -> String {
    match std::env::var("FOOTPRINT_BROKERS") {
        Ok(b) if !b.is_empty() => b,
        _ => panic!(
            "FOOTPRINT_BROKERS is not set: run the tests with scripts/test.sh, which starts a broker"
        ),
    }
}

/// The Redis to test against (`FOOTPRINT_REDIS_URL`, default local).
pub fn redis_url() -> String {
    std::env::var("FOOTPRINT_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The MySQL server to test against, without a database
/// (`FOOTPRINT_MYSQL_URL`, default local root).
pub fn mysql_url() -> String {
    std::env::var("FOOTPRINT_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
        .trim_end_matches('/')
        .to_owned()
}

/// The address in a store URL (`scheme://[user@]host:port[/…]`).
pub fn host_port(url: &str) -> std::net::SocketAddr {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let host_port = rest.split('/').next().unwrap_or(rest);
    std::net::ToSocketAddrs::to_socket_addrs(host_port)
        .ok()
        .and_then(|mut a| a.next())
        .expect("store address")
}

/// Drops a test database (best effort).
pub fn drop_database(name: &str) {
    use mysql::prelude::Queryable;
    if let Ok(mut c) = mysql::Conn::new(mysql::Opts::from_url(&mysql_url()).unwrap_or_default()) {
        let _ = c.query_drop(format!("DROP DATABASE IF EXISTS `{name}`"));
    }
}

/// Deletes every Redis key under a test prefix (best effort).
pub fn delete_redis_prefix(prefix: &str) {
    if let Ok(mut c) = redis::Client::open(redis_url()).and_then(|c| c.get_connection()) {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query(&mut c)
            .unwrap_or_default();
        for k in keys {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(k).query(&mut c);
        }
    }
}

/// Kafka settings for the test broker.
pub fn kafka() -> KafkaSettings {
    KafkaSettings::new(brokers())
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}-{}-{nanos}", std::process::id())
}
