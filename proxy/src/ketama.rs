//! Ketama consistent hashing, point for point as twemproxy (`nc_ketama.c`) builds it, so a
//! key lands on the same shard behind sheave-proxy as behind nutcracker, and adding or
//! removing a shard moves only that shard's share of the keys.
//!
//! The continuum: each live server gets `floor(weight / total × 40 × live) × 4` points (160
//! for equal weights), four per MD5 digest of `"{name}-{i}"`, each point the little-endian
//! `u32` of four digest bytes; the points are sorted. A key is hashed (twemproxy's `hash:`,
//! `fnv1a_64` by default here, which twemproxy truncates to 32 bits) and goes to the first
//! point at or after its hash, wrapping around. A server's name is its `name` if it has one,
//! else `host:port` (twemproxy drops the port when it is 11211).
//!
//! ```
//! use sheave_proxy::ketama::{KeyHash, Ring};
//!
//! let ring = Ring::new(&[("127.0.0.1:6379", 1), ("127.0.0.1:6380", 1)], KeyHash::Fnv1a64, None);
//! let shard = ring.shard(b"user:42");
//! assert!(shard < 2);
//! assert_eq!(ring.shard(b"user:42"), shard); // the same key, the same shard
//! ```

use crate::md5::md5;

/// Points per server of weight 1 when all weights are equal (`KETAMA_POINTS_PER_SERVER`).
pub const POINTS_PER_SERVER: u32 = 160;

/// How a key is hashed onto the continuum (twemproxy's `hash:` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyHash {
    /// twemproxy's `fnv1a_64`: FNV-1a with the 64-bit constants, computed in 32 bits.
    Fnv1a64,
    /// twemproxy's `md5`: the first four digest bytes, little-endian.
    Md5,
}

impl KeyHash {
    /// The hash of `key`.
    pub fn hash(self, key: &[u8]) -> u32 {
        match self {
            KeyHash::Fnv1a64 => {
                // twemproxy casts the 64-bit offset basis and prime to uint32_t.
                let mut hash = 0xcbf2_9ce4_8422_2325u64 as u32;
                for &b in key {
                    hash ^= u32::from(b);
                    hash = hash.wrapping_mul(0x0000_0100_0000_01b3u64 as u32);
                }
                hash
            }
            KeyHash::Md5 => {
                let d = md5(key);
                u32::from_le_bytes([d[0], d[1], d[2], d[3]])
            }
        }
    }
}

/// A ketama continuum over the live servers: `(value, server index)` pairs sorted by value.
#[derive(Debug, Clone)]
pub struct Ring {
    points: Vec<(u32, usize)>,
    hash: KeyHash,
    /// twemproxy's `hash_tag`: when both bytes occur in a key, only what lies between them
    /// is hashed (`{user:1}.name` and `{user:1}.mail` then share a shard).
    tag: Option<[u8; 2]>,
}

impl Ring {
    /// The continuum of `servers` (name, weight), every one live.
    pub fn new(servers: &[(&str, u32)], hash: KeyHash, tag: Option<[u8; 2]>) -> Ring {
        Ring::with_live(servers, &vec![true; servers.len()], hash, tag)
    }

    /// The continuum of the servers whose `live` flag is set (twemproxy's
    /// `auto_eject_hosts` rebuilds it so); the indices stay those of `servers`.
    pub fn with_live(
        servers: &[(&str, u32)],
        live: &[bool],
        hash: KeyHash,
        tag: Option<[u8; 2]>,
    ) -> Ring {
        let nlive = live.iter().filter(|l| **l).count();
        let total: u32 = servers
            .iter()
            .zip(live)
            .filter(|(_, l)| **l)
            .map(|((_, w), _)| *w)
            .sum();
        let mut points = Vec::new();
        for (index, ((name, weight), _)) in servers
            .iter()
            .zip(live)
            .enumerate()
            .filter(|(_, (_, l))| **l)
        {
            // The same float arithmetic as twemproxy, in its order, so the counts agree.
            let pct = *weight as f32 / total as f32;
            let per_server = ((pct * POINTS_PER_SERVER as f32 / 4.0 * nlive as f32
                + 0.000_000_000_1)
                .floor() as u32)
                * 4;
            for pointer in 1..=per_server / 4 {
                let digest = md5(format!("{name}-{}", pointer - 1).as_bytes());
                for x in 0..4 {
                    let d = &digest[x * 4..x * 4 + 4];
                    points.push((u32::from_le_bytes([d[0], d[1], d[2], d[3]]), index));
                }
            }
        }
        points.sort_unstable();
        Ring { points, hash, tag }
    }

    /// How many points the continuum has.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether no server is live.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The part of `key` that is hashed: the text inside the hash tag when there is one.
    pub fn hashed_part<'k>(&self, key: &'k [u8]) -> &'k [u8] {
        if let Some([open, close]) = self.tag
            && let Some(start) = key.iter().position(|b| *b == open)
            && let Some(len) = key[start + 1..].iter().position(|b| *b == close)
            && len > 0
        {
            return &key[start + 1..start + 1 + len];
        }
        key
    }

    /// The index of the server `key` belongs to. With no server live, 0.
    pub fn shard(&self, key: &[u8]) -> usize {
        self.dispatch(self.hash.hash(self.hashed_part(key)))
    }

    /// The server of the first point at or after `hash`, wrapping around.
    pub fn dispatch(&self, hash: u32) -> usize {
        if self.points.is_empty() {
            return 0;
        }
        let at = self.points.partition_point(|(value, _)| *value < hash);
        self.points[if at == self.points.len() { 0 } else { at }].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_weights_give_160_points_per_server() {
        for n in 1..=7 {
            let names: Vec<String> = (0..n).map(|i| format!("10.0.0.{i}:6379")).collect();
            let servers: Vec<(&str, u32)> = names.iter().map(|n| (n.as_str(), 1)).collect();
            let ring = Ring::new(&servers, KeyHash::Fnv1a64, None);
            assert_eq!(ring.len(), 160 * n, "{n} servers");
        }
    }

    #[test]
    fn removing_a_server_moves_only_its_keys() {
        let servers = [("a:1", 1), ("b:1", 1), ("c:1", 1)];
        let all = Ring::new(&servers, KeyHash::Fnv1a64, None);
        let without_b = Ring::with_live(&servers, &[true, false, true], KeyHash::Fnv1a64, None);
        let mut moved = 0;
        for i in 0..3000 {
            let key = format!("key:{i}");
            let (before, after) = (all.shard(key.as_bytes()), without_b.shard(key.as_bytes()));
            if before != 1 {
                assert_eq!(before, after, "{key} moved though its server stayed");
            } else {
                assert_ne!(after, 1);
                moved += 1;
            }
        }
        // b held about a third of the keys.
        assert!((600..1400).contains(&moved), "{moved} keys moved");
    }

    #[test]
    fn a_hash_tag_hashes_only_the_tagged_part() {
        let ring = Ring::new(&[("a:1", 1), ("b:1", 1)], KeyHash::Fnv1a64, Some(*b"{}"));
        assert_eq!(ring.hashed_part(b"{user:1}.name"), b"user:1");
        assert_eq!(ring.hashed_part(b"plain"), b"plain");
        assert_eq!(ring.hashed_part(b"{}empty"), b"{}empty");
        for i in 0..50 {
            let (x, y) = (format!("{{u{i}}}.x"), format!("{{u{i}}}.y"));
            assert_eq!(ring.shard(x.as_bytes()), ring.shard(y.as_bytes()));
        }
    }

    #[test]
    fn keys_past_the_last_point_wrap_to_the_first() {
        let ring = Ring::new(&[("a:1", 1), ("b:1", 1)], KeyHash::Fnv1a64, None);
        assert_eq!(ring.dispatch(u32::MAX), ring.points[0].1);
        assert_eq!(ring.dispatch(0), ring.points[0].1);
    }
}
