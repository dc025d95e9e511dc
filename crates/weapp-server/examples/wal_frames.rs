//! How many pages a login writes on SQLite: WAL frames per login, by session key and batch size.
//!
//! Each commit appends every page it changed to the WAL (a frame: a 24-byte header and the
//! 4-KiB page, two `pwrite`s), the commit `fsync`s them, and a checkpoint later copies each
//! distinct page into the database file. Frames per login are what SQLite's share of a login
//! grows with. This program writes logins through the server's own SQLite store (the login
//! writer's transaction, the real schema), each login a new user as in `scripts/bench-login`,
//! into a database that already holds `USERS` users, and counts the WAL's frames:
//! - session keys as tokens of earlier releases had them (the SHA-256 of the token: a random
//!   place in the sessions index per login), and as tokens that carry their issue time have
//!   them (the index grows at its end);
//! - batches of 1, 13 (what 32 connections give in `scripts/bench-login`) and 26 logins per
//!   commit.
//!
//! ```sh
//! cargo run --release -p weapp-server --example wal_frames
//! ```

use weapp_server::store::LoginWrite;

const PAGE: u64 = 4096;
const FRAME: u64 = PAGE + 24;
/// Measured rounds per figure.
const ROUNDS: usize = 8;

fn login(n: usize, now: i64, timed: bool) -> LoginWrite {
    let mut key: [u8; 32] = rand::random();
    if timed {
        key[..6].copy_from_slice(&now.to_be_bytes()[2..]);
    }
    LoginWrite {
        appid: "wxframes00000001".into(),
        openid: format!("o{:08x}{n:019}", rand::random::<u32>()),
        unionid: None,
        session_key_enc: (0..60).map(|_| rand::random::<u8>()).collect(),
        key_id: "kcv0123456789abc".into(),
        token_hash: key.to_vec(),
        now,
        expires_at: now + 86_400_000,
    }
}

async fn frames_per_login(users: usize, batch: usize, timed: bool) -> f64 {
    let dir = std::env::temp_dir().join(format!(
        "weapp-wal-frames-{}-{users}-{batch}-{timed}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("frames.db");
    let store =
        weapp_server::store::connect(&format!("sqlite://{}", file.display()), &Default::default())
            .await
            .expect("store");
    let mut now = 1_790_000_000_000_i64;
    let mut n = 0;
    while n < users {
        let logins: Vec<_> = (0..500.min(users - n))
            .map(|i| login(n + i, now + i as i64, timed))
            .collect();
        store.record_logins(&logins).await.expect("fill");
        n += logins.len();
        now += logins.len() as i64;
    }
    // Rounds of: an empty WAL, then fewer frames than the automatic checkpoint's 1,000 — its
    // size then counts every frame written since.
    let wal = dir.join("frames.db-wal");
    let conn = rusqlite::Connection::open(&file).unwrap();
    let commits = (600 / (batch + 9)).max(1);
    let (mut frames, mut written) = (0, 0);
    for _ in 0..ROUNDS {
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        for _ in 0..commits {
            let logins: Vec<_> = (0..batch)
                .map(|i| login(n + i, now + i as i64, timed))
                .collect();
            store.record_logins(&logins).await.expect("login");
            n += batch;
            now += batch as i64;
            written += batch;
        }
        frames += std::fs::metadata(&wal).unwrap().len().saturating_sub(32) / FRAME;
    }
    drop(conn);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    frames as f64 / written as f64
}

#[tokio::main]
async fn main() {
    println!("| users in the database | logins per commit | WAL frames per login, random session key | time-prefixed session key |");
    println!("|---:|---:|---:|---:|");
    for users in [9_000, 60_000] {
        for batch in [1, 13, 26] {
            let random = frames_per_login(users, batch, false).await;
            let timed = frames_per_login(users, batch, true).await;
            println!("| {users} | {batch} | {random:.2} | {timed:.2} |");
        }
    }
}
