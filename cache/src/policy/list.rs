//! A doubly linked list of keys with O(1) push, pop and removal by key: the FIFO queues of
//! S3-FIFO and SIEVE.

use std::collections::HashMap;

use crate::key::ExpertKey;

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Node<V> {
    key: ExpertKey,
    val: V,
    prev: u32,
    next: u32,
}

/// Keys in order from head (newest) to tail (oldest), each with a small value.
#[derive(Debug, Clone)]
pub(crate) struct KeyList<V> {
    nodes: Vec<Node<V>>,
    free: Vec<u32>,
    index: HashMap<ExpertKey, u32>,
    head: u32,
    tail: u32,
}

impl<V: Copy> Default for KeyList<V> {
    fn default() -> Self {
        Self { nodes: Vec::new(), free: Vec::new(), index: HashMap::new(), head: NIL, tail: NIL }
    }
}

impl<V: Copy> KeyList<V> {
    pub fn len(&self) -> usize {
        self.index.len()
    }
    pub fn contains(&self, key: &ExpertKey) -> bool {
        self.index.contains_key(key)
    }
    pub fn get_mut(&mut self, key: &ExpertKey) -> Option<&mut V> {
        let i = *self.index.get(key)?;
        Some(&mut self.nodes[i as usize].val)
    }
    /// Inserts at the head. The key must not be present.
    pub fn push_head(&mut self, key: ExpertKey, val: V) {
        debug_assert!(!self.contains(&key));
        let node = Node { key, val, prev: NIL, next: self.head };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        if self.head != NIL {
            self.nodes[self.head as usize].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
        self.index.insert(key, i);
    }
    pub fn remove(&mut self, key: &ExpertKey) -> Option<V> {
        let i = self.index.remove(key)?;
        let (prev, next, val) = {
            let n = &self.nodes[i as usize];
            (n.prev, n.next, n.val)
        };
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        } else {
            self.head = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        } else {
            self.tail = prev;
        }
        self.free.push(i);
        Some(val)
    }
    /// The oldest key.
    pub fn tail(&self) -> Option<ExpertKey> {
        (self.tail != NIL).then(|| self.nodes[self.tail as usize].key)
    }
    /// The key one step newer than `key`.
    pub fn newer(&self, key: &ExpertKey) -> Option<ExpertKey> {
        let i = *self.index.get(key)?;
        let p = self.nodes[i as usize].prev;
        (p != NIL).then(|| self.nodes[p as usize].key)
    }
    /// Keys from oldest to newest.
    #[cfg(test)]
    pub fn iter_from_tail(&self) -> impl Iterator<Item = (ExpertKey, V)> + '_ {
        let mut cur = self.tail;
        std::iter::from_fn(move || {
            if cur == NIL {
                return None;
            }
            let n = &self.nodes[cur as usize];
            cur = n.prev;
            Some((n.key, n.val))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_removal() {
        let mut l = KeyList::default();
        let k = |e| ExpertKey::new(0, e);
        for e in 0..5 {
            l.push_head(k(e), e);
        }
        assert_eq!(l.tail(), Some(k(0)));
        assert_eq!(l.remove(&k(2)), Some(2));
        assert_eq!(l.remove(&k(0)), Some(0));
        let order: Vec<u16> = l.iter_from_tail().map(|(_, v)| v).collect();
        assert_eq!(order, vec![1, 3, 4]);
        assert_eq!(l.newer(&k(1)), Some(k(3)));
        l.push_head(k(9), 9);
        assert_eq!(l.len(), 4);
        assert_eq!(l.tail(), Some(k(1)));
    }
}
