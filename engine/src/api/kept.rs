//! Sessions kept after their generation ends, so the next request that starts with the same
//! tokens (a conversation's next turn, a shared system prompt) continues from their state
//! instead of running those tokens again: a small LRU keyed by the tokens each session holds.

use crate::runtime::session::SeqExperts;
use crate::runtime::Session;

/// The kept sessions, least recently used first.
#[derive(Debug)]
pub(crate) struct KeptSessions {
    capacity: usize,
    /// Whether a session can be cut back to a shorter prefix: attention caches can (positions
    /// past the cut are simply overwritten), a recurrent state (Gated DeltaNet) cannot.
    rewindable: bool,
    entries: Vec<(Vec<u32>, Session)>,
}

impl KeptSessions {
    pub fn new(capacity: usize, rewindable: bool) -> Self {
        Self { capacity, rewindable, entries: Vec::new() }
    }

    /// Keeps `session`, which holds exactly `tokens`; the least recently used goes if full.
    pub fn put(&mut self, tokens: Vec<u32>, session: Session) {
        if self.capacity == 0 || tokens.is_empty() || session.position() != tokens.len() {
            return;
        }
        self.entries.retain(|(t, _)| t != &tokens);
        self.entries.push((tokens, session));
        if self.entries.len() > self.capacity {
            self.entries.remove(0);
        }
    }

    /// How many of `prompt`'s tokens a kept session holding `tokens` can supply (at least one
    /// prompt token is left to run, whose logits start the answer).
    fn usable(&self, tokens: &[u32], prompt: &[u32]) -> usize {
        let common = tokens.iter().zip(prompt).take_while(|(a, b)| a == b).count();
        let most = prompt.len().saturating_sub(1);
        if self.rewindable {
            common.min(most)
        } else if common == tokens.len() && common <= most {
            common
        } else {
            0
        }
    }

    /// The kept session that supplies most of `prompt`, taken out and cut back to that prefix,
    /// with the number of tokens it supplies; None when none supplies any. Only a session run
    /// with the same expert knobs (`knobs`) supplies any: its state depends on them.
    pub fn take(&mut self, prompt: &[u32], knobs: SeqExperts) -> Option<(Session, usize)> {
        let (i, n) = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, (_, s))| s.expert_knobs() == knobs)
            .map(|(i, (t, _))| (i, self.usable(t, prompt)))
            .max_by_key(|&(i, n)| (n, i))?;
        if n == 0 {
            return None;
        }
        let (_, mut session) = self.entries.remove(i);
        // Compressed attention cuts back only to a window boundary: the last one before `n`.
        let n = session.rewind_point(n).filter(|&p| p > 0)?;
        session.rewind(n).then_some((session, n))
    }

    /// Sessions kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes their states hold.
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|(_, s)| s.kv_bytes()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_token(k: Option<usize>) -> SeqExperts {
        SeqExperts { per_token: k, min_weight: None }
    }

    fn held(n: usize) -> Session {
        let mut s = Session::default();
        s.set_position_for_tests(n);
        s
    }

    #[test]
    fn a_session_is_reused_only_at_its_expert_count() {
        let mut k = KeptSessions::new(2, true);
        k.put(vec![1, 2, 3], held(3).with_experts_per_token(Some(2)));
        assert!(k.take(&[1, 2, 3, 4], SeqExperts::default()).is_none());
        assert!(k.take(&[1, 2, 3, 4], per_token(Some(3))).is_none());
        let (s, n) = k.take(&[1, 2, 3, 4], per_token(Some(2))).unwrap();
        assert_eq!((n, s.experts_per_token()), (3, Some(2)));
    }

    #[test]
    fn the_longest_usable_prefix_wins_and_leaves_a_token_to_run() {
        let mut k = KeptSessions::new(2, true);
        k.put(vec![1, 2, 3], held(3));
        k.put(vec![1, 2, 9, 9], held(4));
        // Shares 3 with the first, 2 with the second.
        let (s, n) = k.take(&[1, 2, 3, 4], SeqExperts::default()).unwrap();
        assert_eq!((n, s.position()), (3, 3));
        assert_eq!(k.len(), 1);
        // The same prompt again: all but its last token, cut back.
        k.put(vec![1, 2, 9, 9], held(4));
        let (s, n) = k.take(&[1, 2, 9, 9], SeqExperts::default()).unwrap();
        assert_eq!((n, s.position()), (3, 3));
        assert!(k.take(&[7, 8], SeqExperts::default()).is_none());
        // A third entry pushes out the least recently used.
        let mut k = KeptSessions::new(2, true);
        k.put(vec![1], held(1));
        k.put(vec![2], held(1));
        k.put(vec![3], held(1));
        assert!(k.take(&[1, 5], SeqExperts::default()).is_none());
        assert!(k.take(&[2, 5], SeqExperts::default()).is_some());
        // Nothing is kept with capacity 0, nor a session whose position disagrees.
        let mut k = KeptSessions::new(0, true);
        k.put(vec![1], held(1));
        assert_eq!(k.len(), 0);
        let mut k = KeptSessions::new(1, true);
        k.put(vec![1, 2], held(1));
        assert_eq!(k.len(), 0);
    }

    #[test]
    fn a_recurrent_state_is_only_continued_never_cut_back() {
        let mut k = KeptSessions::new(4, false);
        k.put(vec![1, 2, 3], held(3));
        assert!(k.take(&[1, 2, 4, 5], SeqExperts::default()).is_none());
        assert!(k.take(&[1, 2, 3], SeqExperts::default()).is_none());
        let (s, n) = k.take(&[1, 2, 3, 4], SeqExperts::default()).unwrap();
        assert_eq!((n, s.position()), (3, 3));
    }
}
