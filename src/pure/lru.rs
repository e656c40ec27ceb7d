//! Byte-bounded least-recently-used maps keyed by block: the generic core
//! ([`ByteLru`]) shared by the per-shard memory cache ([`BlockCache`]) and the per-shard
//! disk cache. Pure data structures; the owning shard is their only user.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

/// Names one block of one content version of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockKey {
    pub file_id: u64,
    pub version: u64,
    pub index: u64,
}

/// A least-recently-used map bounded by the sum of the byte lengths its callers declare
/// for the values, not by their count: a memory cache holds `Bytes` (the length is the
/// buffer's), a disk cache holds a marker for a block on disk (the length is the block's).
///
/// Every operation that makes room returns what it removed, so a caller whose values
/// stand for something outside the map (a disk block, a have-bit) can release it.
pub struct ByteLru<V> {
    capacity_bytes: u64,
    used_bytes: u64,
    /// Monotonic use counter; u64 never wraps in practice (one tick per operation).
    tick: u64,
    /// Key → (value, its length in bytes, its last-use tick).
    map: HashMap<BlockKey, (V, u64, u64)>,
    /// Last-use tick → key; the first entry is the least recently used.
    order: BTreeMap<u64, BlockKey>,
}

impl<V> ByteLru<V> {
    pub fn new(capacity_bytes: u64) -> Self {
        ByteLru {
            capacity_bytes,
            used_bytes: 0,
            tick: 0,
            map: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }

    /// Sum of the declared lengths of the values held.
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The value for `key`, which becomes the most recently used.
    pub fn get(&mut self, key: &BlockKey) -> Option<&V> {
        // The order list and the map must stay in step: a panic here is not contained.
        let _critical = crate::panics::critical();
        self.tick += 1;
        let tick = self.tick;
        let (value, _, last) = self.map.get_mut(key)?;
        self.order.remove(last);
        *last = tick;
        self.order.insert(tick, *key);
        Some(value)
    }

    /// True when `key` is held; does not change the order.
    pub fn contains(&self, key: &BlockKey) -> bool {
        self.map.contains_key(key)
    }

    /// Inserts `value` as the most recently used, declaring it `len_bytes` long, and
    /// evicts least recently used entries until everything fits; returns them, oldest
    /// first.
    ///
    /// A value already held under `key` is replaced and dropped, not returned (call
    /// [`remove`](Self::remove) first to get it back): the returned list never holds
    /// an older value of `key`, so a caller releasing what it gets back never releases
    /// the entry it just inserted.
    ///
    /// A value longer than the whole capacity is not inserted: any value held under
    /// `key` is dropped as well, and the new one is returned as the only element. So
    /// after `insert`, `key` either holds `value` or is absent and returned.
    pub fn insert(&mut self, key: BlockKey, value: V, len_bytes: u64) -> Vec<(BlockKey, V)> {
        // The order list and the map must stay in step: a panic here is not contained.
        let _critical = crate::panics::critical();
        self.remove(&key);
        if len_bytes > self.capacity_bytes {
            return vec![(key, value)];
        }
        let evicted = self.evict_until(self.capacity_bytes - len_bytes);
        self.tick += 1;
        self.order.insert(self.tick, key);
        self.map.insert(key, (value, len_bytes, self.tick));
        self.used_bytes += len_bytes;
        evicted
    }

    /// Removes `key` and returns its value.
    pub fn remove(&mut self, key: &BlockKey) -> Option<V> {
        // The order list and the map must stay in step: a panic here is not contained.
        let _critical = crate::panics::critical();
        let (value, len, tick) = self.map.remove(key)?;
        self.order.remove(&tick);
        self.used_bytes -= len;
        Some(value)
    }

    /// Removes the least recently used entry and returns it with its declared length.
    pub fn pop_lru(&mut self) -> Option<(BlockKey, V, u64)> {
        let (_, key) = self.order.pop_first()?;
        // The order and the map hold the same keys: a key in one is always in the other.
        let (value, len, _) = self
            .map
            .remove(&key)
            .expect("LRU order and map out of step");
        self.used_bytes -= len;
        Some((key, value, len))
    }

    /// Changes the capacity; evicts (and returns, oldest first) what no longer fits.
    pub fn set_capacity(&mut self, capacity_bytes: u64) -> Vec<(BlockKey, V)> {
        self.capacity_bytes = capacity_bytes;
        self.evict_until(capacity_bytes)
    }

    /// Evicts least recently used entries until at most `target_bytes` are used.
    fn evict_until(&mut self, target_bytes: u64) -> Vec<(BlockKey, V)> {
        let mut evicted = Vec::new();
        while self.used_bytes > target_bytes {
            match self.pop_lru() {
                Some((key, value, _)) => evicted.push((key, value)),
                None => break,
            }
        }
        evicted
    }
}

/// The per-shard memory cache: a byte-bounded LRU of immutable block buffers, each
/// counted at its buffer's length.
pub struct BlockCache {
    lru: ByteLru<Bytes>,
}

impl BlockCache {
    pub fn new(capacity_bytes: u64) -> Self {
        BlockCache {
            lru: ByteLru::new(capacity_bytes),
        }
    }

    pub fn used_bytes(&self) -> u64 {
        self.lru.used_bytes()
    }

    pub fn len(&self) -> usize {
        self.lru.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lru.is_empty()
    }

    /// A handle on the cached block (a pointer copy), which becomes the most recent.
    pub fn get(&mut self, key: &BlockKey) -> Option<Bytes> {
        self.lru.get(key).cloned()
    }

    /// Inserts a block, evicting the least recently used ones to stay within the
    /// capacity. A block larger than the whole capacity is not cached. Evicted buffers
    /// are simply dropped: other holders keep theirs alive.
    pub fn insert(&mut self, key: BlockKey, data: Bytes) {
        let len = data.len() as u64;
        drop(self.lru.insert(key, data, len));
    }

    pub fn remove(&mut self, key: &BlockKey) {
        self.lru.remove(key);
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

    fn keys(v: &[(BlockKey, u32)]) -> Vec<u64> {
        v.iter().map(|(k, _)| k.index).collect()
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
        assert!(!c.is_empty());
    }

    #[test]
    fn byte_lru_returns_what_it_evicts_oldest_first() {
        let mut l: ByteLru<u32> = ByteLru::new(100);
        assert!(l.insert(k(1), 10, 40).is_empty());
        assert!(l.insert(k(2), 20, 40).is_empty());
        assert!(l.insert(k(3), 30, 20).is_empty());
        assert_eq!(l.used_bytes(), 100);
        // Touch 1 so 2 is the oldest; contains() does not touch.
        assert_eq!(l.get(&k(1)), Some(&10));
        assert!(l.contains(&k(2)) && !l.contains(&k(7)));
        let ev = l.insert(k(4), 40, 50);
        assert_eq!(keys(&ev), vec![2, 3]);
        assert_eq!(ev[0].1, 20);
        assert_eq!((l.used_bytes(), l.len()), (90, 2));
        assert_eq!(l.pop_lru(), Some((k(1), 10, 40)));
        assert_eq!(l.remove(&k(4)), Some(40));
        assert!(l.is_empty() && l.used_bytes() == 0);
        assert_eq!(l.pop_lru(), None);
        assert_eq!(l.remove(&k(4)), None);
    }

    #[test]
    fn byte_lru_replacing_a_key_never_returns_it() {
        let mut l: ByteLru<u32> = ByteLru::new(100);
        l.insert(k(1), 1, 60);
        l.insert(k(2), 2, 40);
        // Replacing 1 with a longer value evicts 2, not the old value of 1.
        let ev = l.insert(k(1), 11, 70);
        assert_eq!(keys(&ev), vec![2]);
        assert_eq!(l.get(&k(1)), Some(&11));
        assert_eq!(l.used_bytes(), 70);
    }

    #[test]
    fn byte_lru_refuses_what_is_larger_than_the_capacity() {
        let mut l: ByteLru<u32> = ByteLru::new(100);
        l.insert(k(1), 1, 50);
        l.insert(k(2), 2, 50);
        let ev = l.insert(k(1), 9, 101);
        assert_eq!(ev, vec![(k(1), 9)]);
        assert!(!l.contains(&k(1)) && l.contains(&k(2)));
        assert_eq!(l.used_bytes(), 50);
        // A value of exactly the capacity fits, after evicting everything else.
        assert_eq!(keys(&l.insert(k(3), 3, 100)), vec![2]);
        // Zero-length values are counted but never force an eviction.
        assert!(l.insert(k(4), 4, 0).is_empty());
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn byte_lru_set_capacity_evicts_oldest_first() {
        let mut l: ByteLru<u32> = ByteLru::new(100);
        for i in 0..10 {
            l.insert(k(i), i as u32, 10);
        }
        l.get(&k(0));
        let ev = l.set_capacity(35);
        assert_eq!(keys(&ev), (1..8).collect::<Vec<_>>());
        assert_eq!((l.used_bytes(), l.len(), l.capacity_bytes()), (30, 3, 35));
        assert!(l.contains(&k(0)) && l.contains(&k(8)) && l.contains(&k(9)));
        assert!(l.set_capacity(1000).is_empty());
        assert_eq!(keys(&l.set_capacity(0)), vec![8, 9, 0]);
    }
}
