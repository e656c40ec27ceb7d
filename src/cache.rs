//! The per-shard memory cache of verified blocks: a byte-bounded least-recently-used
//! map. Pure data structure; the owning shard is its only user.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

/// Names one block of one content version of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockKey {
    pub file_id: u64,
    pub version: u64,
    pub index: u64,
}

/// Byte-bounded LRU of immutable block buffers.
pub struct BlockCache {
    capacity_bytes: u64,
    used_bytes: u64,
    tick: u64,
    map: HashMap<BlockKey, (Bytes, u64)>,
    /// Last-use tick → key; the first entry is the least recently used.
    order: BTreeMap<u64, BlockKey>,
}

impl BlockCache {
    pub fn new(capacity_bytes: u64) -> Self {
        BlockCache {
            capacity_bytes,
            used_bytes: 0,
            tick: 0,
            map: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    pub fn used_bytes(&self) -> u64 {
        self.used_bytes
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&mut self, key: &BlockKey) -> Option<Bytes> {
        self.tick += 1;
        let tick = self.tick;
        let (data, last) = self.map.get_mut(key)?;
        self.order.remove(last);
        *last = tick;
        self.order.insert(tick, *key);
        Some(data.clone())
    }

    /// Inserts a block, evicting the least recently used ones to stay within the
    /// capacity. A block larger than the whole capacity is not cached.
    pub fn insert(&mut self, key: BlockKey, data: Bytes) {
        let len = data.len() as u64;
        if len > self.capacity_bytes {
            return;
        }
        self.remove(&key);
        while self.used_bytes + len > self.capacity_bytes {
            let Some((_, victim)) = self.order.pop_first() else {
                break;
            };
            if let Some((d, _)) = self.map.remove(&victim) {
                self.used_bytes -= d.len() as u64;
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, key);
        self.map.insert(key, (data, self.tick));
        self.used_bytes += len;
    }

    pub fn remove(&mut self, key: &BlockKey) {
        if let Some((d, t)) = self.map.remove(key) {
            self.order.remove(&t);
            self.used_bytes -= d.len() as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(i: u64) -> BlockKey {
        BlockKey {
            file_id: 1,
            version: 2,
            index: i,
        }
    }

    #[test]
    fn evicts_least_recently_used_within_capacity() {
        let mut c = BlockCache::new(30);
        c.insert(k(1), Bytes::from(vec![1; 10]));
        c.insert(k(2), Bytes::from(vec![2; 10]));
        c.insert(k(3), Bytes::from(vec![3; 10]));
        assert!(c.get(&k(1)).is_some()); // 1 is now the most recent
        c.insert(k(4), Bytes::from(vec![4; 10]));
        assert!(c.get(&k(2)).is_none());
        assert!(c.get(&k(1)).is_some() && c.get(&k(3)).is_some() && c.get(&k(4)).is_some());
        assert_eq!(c.used_bytes(), 30);
        c.insert(k(9), Bytes::from(vec![0; 31]));
        assert!(c.get(&k(9)).is_none());
        c.insert(k(4), Bytes::from(vec![4; 5]));
        assert_eq!(c.used_bytes(), 25);
        c.remove(&k(4));
        assert_eq!((c.used_bytes(), c.len()), (20, 2));
    }
}
